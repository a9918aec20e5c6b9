//! One micro-batch of the train step: the model's objective ([`model::lm_pass`], or the
//! distillation objective over the same pass) and its gradients with respect to the trained
//! parameters and the FP8 statistics probes.

use super::accumulate::Accumulated;
use super::distill::{DistillContext, MicroBatch, StudentPass};
use super::layout::StepLayout;
use super::moe_state::MoeStepStats;
use crate::config::Config;
use crate::model::{self, ForwardOptions, RngStream};
use vishwam_hlo::{Result, Tensor, TensorMap};

/// One micro-batch of the model's objective ([`model::lm_pass`]): the masked CE sum (or, with
/// a teacher, the distillation objective's sum), the count of correctly predicted tokens, and
/// the gradients of `weights[0]` times it
/// (plus, for MoE models, `weights[1]` times [`model::moe_aux_term`]) with respect to
/// `names`, and the FP8 statistics per layer (the gradients of zero probes).
#[allow(clippy::too_many_arguments)]
pub(super) fn micro_step(
    cfg: &Config,
    opts: &ForwardOptions,
    layout: &StepLayout,
    names: &[String],
    params: &TensorMap,
    fp8_scaling: &TensorMap,
    batch: [&Tensor; 3],
    weights: &[Tensor; 2],
    rng: Tensor,
    teacher: Option<(&DistillContext, &TensorMap)>,
) -> Result<Accumulated> {
    let [tokens, targets, mask] = batch;
    let g = tokens.graph().clone();
    let mut stream = RngStream { state: rng };
    let probes = match &layout.fp8 {
        Some(f) => f.probes(&g),
        None => Vec::new(),
    };
    let mut model_inputs = params.clone();
    model_inputs.extend(fp8_scaling.clone());
    for (name, probe) in &probes {
        model_inputs.insert(name.clone(), probe.clone());
    }
    let pass = model::lm_pass(&cfg.model, opts, &model_inputs, tokens, Some(&mut stream))?;
    let (loss, correct, distill) = match teacher {
        None => {
            let (ce, correct) = pass.ce_and_correct_sums(targets, mask, None);
            (ce, correct, None)
        }
        Some((context, teacher_params)) => {
            let student = StudentPass {
                hidden: &pass.hidden,
                head: &pass.head,
                layers: &pass.layers,
                params,
            };
            let batch = MicroBatch {
                tokens,
                targets,
                mask,
                positions: &pass.positions,
            };
            let terms = context.terms(&student, teacher_params, &batch)?;
            (
                terms.objective,
                terms.correct,
                Some([terms.ce, terms.kl, terms.intermediate]),
            )
        }
    };
    let mut wrt: Vec<Tensor> = names
        .iter()
        .map(|n| params.get(n).cloned())
        .collect::<Result<_>>()?;
    wrt.extend(probes.into_iter().map(|(_, probe)| probe));
    let moe = MoeStepStats::stack(&pass.moe);
    let mut objective = &loss * &weights[0];
    if let Some(aux) = pass.aux_term(&cfg.model) {
        objective = objective + aux * &weights[1];
    }
    let mut grads = g.grad(&objective, &wrt)?;
    let fp8 = grads.split_off(names.len());
    let grads = names.iter().cloned().zip(grads).collect();
    Ok(Accumulated {
        loss,
        correct,
        grads,
        rng: stream.state,
        moe,
        fp8,
        distill,
    })
}
