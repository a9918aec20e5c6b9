//! Gradient accumulation: the objective's sum and weighted gradients over the micro-batches of
//! one step, as a `while` loop whose carry is a tree (or one pass when there is one
//! micro-batch).

use super::distill::DistillContext;
use super::fp8::combine_stats;
use super::layout::StepLayout;
use super::micro_step::micro_step;
use super::moe_state::MoeStepStats;
use crate::config::Config;
use crate::model::ForwardOptions;
use vishwam_hlo::{tree_struct, DType, Result, Tensor, TensorMap};

/// What a step's micro-batches add up to.
pub(super) struct Accumulated {
    /// The summed objective over real tokens: the CE, or the distillation objective.
    pub loss: Tensor,
    /// The real tokens whose target is the model's most likely token.
    pub correct: Tensor,
    /// The weighted gradients of the trainable parameters.
    pub grads: TensorMap,
    /// The advanced random state.
    pub rng: Tensor,
    /// For MoE models, the routing statistics.
    pub moe: Option<MoeStepStats>,
    /// The FP8 statistics per layer (none without FP8).
    pub fp8: Vec<Tensor>,
    /// When distilling, the sums of the distillation metrics (`super::distill::DISTILL_METRICS`).
    pub distill: Option<[Tensor; 3]>,
}
tree_struct!(Accumulated {
    loss,
    correct,
    grads,
    rng,
    moe,
    fp8,
    distill
});

impl Accumulated {
    /// The running sums after one more micro-batch `step` (whose random state replaces
    /// this one's).
    fn add(&self, step: Accumulated) -> Result<Accumulated> {
        let grads = self
            .grads
            .iter()
            .map(|(name, sum)| Ok((name.to_string(), sum + step.grads.get(name)?)))
            .collect::<Result<_>>()?;
        let moe = match (&self.moe, &step.moe) {
            (Some(sum), Some(m)) => Some(sum.add(m)),
            _ => self.moe.clone(),
        };
        let distill = match (&self.distill, &step.distill) {
            (Some(sum), Some(d)) => Some(std::array::from_fn(|k| &sum[k] + &d[k])),
            _ => self.distill.clone(),
        };
        Ok(Accumulated {
            loss: &self.loss + step.loss,
            correct: &self.correct + step.correct,
            grads,
            rng: step.rng,
            moe,
            fp8: self
                .fp8
                .iter()
                .zip(&step.fp8)
                .map(|(sum, s)| combine_stats(sum, s))
                .collect(),
            distill,
        })
    }
}

/// The teacher's side of a distillation step: its context and its parameter inputs.
pub(super) struct TeacherInputs<'a> {
    /// How the teacher is run and compared.
    pub context: &'a DistillContext,
    /// Its parameters, as inputs of the step.
    pub params: TensorMap,
}

/// What every micro-batch reads: the step's inputs, carried through the loop unchanged.
#[derive(Clone)]
struct LoopInputs {
    params: TensorMap,
    fp8_scaling: TensorMap,
    batch: [Tensor; 3],
    weights: [Tensor; 2],
    teacher: TensorMap,
}
tree_struct!(LoopInputs {
    params,
    fp8_scaling,
    batch,
    weights,
    teacher
});

/// The loop's carry: the micro-batch index, the running sums and the inputs.
struct Carry {
    i: Tensor,
    sums: Accumulated,
    inputs: LoopInputs,
}
tree_struct!(Carry { i, sums, inputs });

/// Micro-batch `i` of a `[accum, micro_batch, seq_len]` batch array.
fn micro(layout: &StepLayout, i: &Tensor, x: &Tensor) -> Tensor {
    let zero = i.zeros_like();
    x.dynamic_slice(
        &[i.clone(), zero.clone(), zero],
        &[1, layout.micro_batch as i64, layout.seq_len as i64],
    )
    .reshape(&[layout.micro_batch as i64, layout.seq_len as i64])
}

/// Loss sum and weighted gradients over the micro-batches, the advanced random state, the
/// routing and the FP8 statistics, and with a `teacher` the distillation sums. `batch` is
/// tokens, targets and mask; `weights` are the CE (or distillation objective) and aux-loss
/// weights.
#[allow(clippy::too_many_arguments)]
pub(super) fn accumulate(
    cfg: &Config,
    opts: &ForwardOptions,
    layout: &StepLayout,
    params: &TensorMap,
    fp8_scaling: &TensorMap,
    batch: [&Tensor; 3],
    weights: &[Tensor; 2],
    rng: Tensor,
    teacher: Option<&TeacherInputs<'_>>,
) -> Result<Accumulated> {
    let names: Vec<String> = layout
        .trained_params()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let g = batch[0].graph().clone();
    let one_micro_batch = |i: &Tensor, inputs: &LoopInputs, rng: Tensor| {
        let [tokens, targets, mask] = &inputs.batch;
        micro_step(
            cfg,
            opts,
            layout,
            &names,
            &inputs.params,
            &inputs.fp8_scaling,
            [
                &micro(layout, i, tokens),
                &micro(layout, i, targets),
                &micro(layout, i, mask),
            ],
            &inputs.weights,
            rng,
            teacher.map(|t| (t.context, &inputs.teacher)),
        )
    };
    let inputs = LoopInputs {
        params: params.clone(),
        fp8_scaling: fp8_scaling.clone(),
        batch: batch.map(Tensor::clone),
        weights: weights.clone(),
        teacher: teacher.map(|t| t.params.clone()).unwrap_or_default(),
    };
    if layout.accum == 1 {
        return one_micro_batch(&g.scalar_i64(0, DType::I32), &inputs, rng);
    }
    let zeros = Accumulated {
        loss: g.scalar(0.0, DType::F32),
        correct: g.scalar(0.0, DType::F32),
        grads: names
            .iter()
            .map(|n| Ok((n.clone(), params.get(n)?.zeros_like())))
            .collect::<Result<_>>()?,
        rng,
        moe: MoeStepStats::zeros(&g, &cfg.model),
        fp8: layout.fp8.iter().flat_map(|f| f.zero_stats(&g)).collect(),
        distill: teacher.map(|_| std::array::from_fn(|_| g.scalar(0.0, DType::F32))),
    };
    let init = Carry {
        i: g.scalar_i64(0, DType::I32),
        sums: zeros,
        inputs,
    };
    let accum = layout.accum as i64;
    let out = g.while_tree(
        &init,
        |_, c| Ok(c.i.lt(accum)),
        |_, c| {
            let step = one_micro_batch(&c.i, &c.inputs, c.sums.rng.clone())?;
            Ok(Carry {
                i: &c.i + 1i64,
                sums: c.sums.add(step)?,
                inputs: c.inputs.clone(),
            })
        },
    )?;
    Ok(out.sums)
}
