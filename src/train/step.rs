//! The train step as one traced function: the objective's gradients summed over the
//! micro-batches ([`super::accumulate`]), unscaled and measured, the optimiser's update
//! ([`super::optim`]), and the step's metrics. Every array of the [`TrainState`] is donated,
//! so the update happens in place on the devices.

use super::accumulate::{accumulate, Accumulated, TeacherInputs};
use super::distill::DistillContext;
use super::fp8::Fp8Step;
use super::layout::{train_forward_options, StepLayout};
use super::metrics_ring::{self, RingLayout};
use super::moe_state::{self, MOE_METRICS};
use super::optim::{self, apply_updates, GradientTransformation, UpdateContext};
use super::schedule::lr_traced;
use super::state::{LossScaleState, TrainState};
use super::trainer::StepMetrics;
use crate::config::Config;
use std::collections::BTreeMap;
use vishwam_hlo::{tree_struct, DType, Func, Graph, Result, Tensor, TensorMap, Tree};
use vishwam_mesh::{PartitionSpec, ShardingPlan};

/// Good steps before the f16 dynamic loss scale doubles.
const SCALE_GROWTH_INTERVAL: f64 = 2000.0;

/// The step's metrics: f32 scalars, pushed into the metrics ring as one row in
/// [`StepMetrics::NAMES`] order.
struct Metrics {
    /// Mean objective per real token.
    loss: Tensor,
    /// Global norm of the gradients before clipping.
    grad_norm: Tensor,
    /// The learning rate of the step (AdamW's; Muon's follows the same schedule).
    lr: Tensor,
    /// Tokens that counted.
    tokens: Tensor,
    /// Fraction of those tokens whose target is the model's most likely token.
    accuracy: Tensor,
    /// 1 when the update was skipped (a non-finite loss or gradient).
    skipped: Tensor,
    /// Elements clipped to the FP8 range in the forward pass (0 without FP8).
    fp8_saturated_forward: Tensor,
    /// Gradient elements clipped to the FP8 range (0 without FP8).
    fp8_saturated_backward: Tensor,
}
tree_struct!(Metrics {
    loss,
    grad_norm,
    lr,
    tokens,
    accuracy,
    skipped,
    fp8_saturated_forward,
    fp8_saturated_backward,
});

/// Everything the step returns: the next state (named like the inputs it replaces) and the
/// metrics ring with this step's metrics pushed ([`metrics_ring`]).
struct StepOutputs {
    state: TrainState<Tensor>,
    metrics_ring: Tensor,
}
tree_struct!(StepOutputs {
    state => "",
    metrics_ring,
});

/// Traces the whole train step for `cfg`.
pub fn build_train_step(cfg: &Config, plan: &ShardingPlan, layout: &StepLayout) -> Result<Func> {
    trace_train_step(cfg, plan, layout, "train_step", true, None)
}

/// Traces the train step of a student distilled from the teacher `distill` describes: the
/// teacher's parameters follow the batch as inputs `teacher.<name>` (not donated), and
/// the distillation metrics are in the metrics ring.
pub fn build_distill_step(
    cfg: &Config,
    plan: &ShardingPlan,
    layout: &StepLayout,
    distill: &DistillContext,
) -> Result<Func> {
    trace_train_step(cfg, plan, layout, "train_step", true, Some(distill))
}

/// `new` where `ok` (an `i1` scalar) holds, else `old`, leaf by leaf.
fn keep_unless_skipped(ok: &Tensor, new: TensorMap, old: &TensorMap) -> Result<TensorMap> {
    new.into_iter()
        .map(|(name, t)| Ok((name.clone(), ok.select(&t, old.get(&name)?))))
        .collect()
}

fn as_map(m: &std::collections::BTreeMap<String, Tensor>) -> TensorMap {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The global L2 norm of `grads` (summed in name order).
fn global_norm(grads: &TensorMap) -> Tensor {
    grads
        .values()
        .map(|g| g.square().sum_all())
        .reduce(|a, b| a + b)
        .expect("at least one parameter")
        .sqrt()
}

/// The dynamic loss scale after a step: doubled after [`SCALE_GROWTH_INTERVAL`] good steps,
/// halved (down to 1) after a non-finite one.
fn next_loss_scale(s: &LossScaleState<Tensor>, ok: &Tensor) -> LossScaleState<Tensor> {
    let (scale, good) = (&s.scale, &s.good_steps);
    let good1 = good + 1i64;
    let grow = good1.cast(DType::F32).ge(SCALE_GROWTH_INTERVAL);
    LossScaleState {
        scale: ok.select(
            grow.select(&(scale * 2.0), scale),
            (scale * 0.5).maximum(1.0),
        ),
        good_steps: ok.select(grow.select(good1.zeros_like(), &good1), good.zeros_like()),
    }
}

/// The train step named `name`; with `fp8_history` false, delayed-scaling FP8 tensors are
/// scaled by their own amax instead of their history (the first step, see [`super::fp8`]);
/// with `distill`, the student learns from that teacher ([`build_distill_step`]).
pub(super) fn trace_train_step(
    cfg: &Config,
    plan: &ShardingPlan,
    layout: &StepLayout,
    name: &str,
    fp8_history: bool,
    distill: Option<&DistillContext>,
) -> Result<Func> {
    let g = Graph::named(name);
    let opts = train_forward_options(cfg, plan);
    let state: TrainState<Tensor> = layout
        .state
        .as_ref()
        .map(|name, slot| g.param_sharded(name, slot.ty.clone(), slot.spec.clone()));
    let ring_layout = RingLayout::of(cfg, distill, layout.state.loss_scale.is_some());
    let ring = g.param_sharded(
        metrics_ring::RING_NAME,
        ring_layout.ring_type(),
        PartitionSpec::replicated(),
    );
    let batch = |name: &str, dtype| {
        g.param_sharded(name, layout.batch_type(dtype), layout.batch_spec.clone())
    };
    let (tokens, targets, mask) = (
        batch("tokens", DType::I32),
        batch("targets", DType::I32),
        batch("mask", DType::F32),
    );
    let teacher = distill.map(|d| TeacherInputs {
        context: d,
        params: d.teacher_inputs(&g),
    });

    // The objective's weights: the CE (or distillation objective) per real token, times the
    // loss scale with f16; the MoE auxiliary term per micro-batch.
    let total_tokens = mask.sum_all();
    let denom = total_tokens.maximum(1.0);
    let loss_scale = state.loss_scale.as_ref().map(|s| s.scale.clone());
    let unit = denom.ones_like();
    let scale = loss_scale.as_ref().unwrap_or(&unit);
    let weights = [scale / &denom, scale / layout.accum as f64];

    // Gradients of the objective, summed over the micro-batches.
    let mut model_params = as_map(&state.params);
    model_params.extend(as_map(&state.router_bias));
    let fp8_scaling = match &layout.fp8 {
        Some(f) if fp8_history => f.scaling_inputs(&state.fp8_history),
        _ => TensorMap::new(),
    };
    let Accumulated {
        loss: loss_sum,
        correct,
        grads,
        rng,
        moe: moe_stats,
        fp8: fp8_stats,
        distill: distill_sums,
    } = accumulate(
        cfg,
        &opts,
        layout,
        &model_params,
        &fp8_scaling,
        [&tokens, &targets, &mask],
        &weights,
        state.rng.clone(),
        teacher.as_ref(),
    )?;
    let grads: TensorMap = match &loss_scale {
        Some(s) => grads.into_iter().map(|(n, g)| (n, g / s)).collect(),
        None => grads,
    };
    let loss = &loss_sum / &denom;
    let grad_norm = global_norm(&grads);
    let finite = |x: &Tensor| x.abs().lt(f64::INFINITY);
    let ok = finite(&grad_norm).and(finite(&loss));

    // The optimiser's update, applied only when the loss and the gradients are finite.
    let next_step = &state.step + 1i64;
    let t = next_step.cast(DType::F32);
    let params = as_map(&state.params);
    let optimizer = optim::from_config(cfg, &layout.trained_params(), &layout.state.params);
    let ctx = UpdateContext {
        t: t.clone(),
        grad_norm: grad_norm.clone(),
    };
    let (updates, opt) = optimizer.update(grads, &state.opt, &params, &ctx)?;
    let new_params = keep_unless_skipped(&ok, apply_updates(&params, &updates)?, &params)?;
    let router_bias =
        moe_state::updated_router_biases(&cfg.model, &state.router_bias, moe_stats.as_ref())?;
    let next = TrainState {
        params: new_params.into_iter().collect(),
        router_bias: keep_unless_skipped(&ok, as_map(&router_bias), &as_map(&state.router_bias))?
            .into_iter()
            .collect(),
        opt: opt.where_or(&ok, &state.opt)?,
        step: ok.select(&next_step, &state.step),
        rng,
        loss_scale: state.loss_scale.as_ref().map(|s| next_loss_scale(s, &ok)),
        fp8_history: match &layout.fp8 {
            Some(f) => f.next_histories(&state.fp8_history, &fp8_stats, &ok),
            None => Vec::new(),
        },
    };

    // Metrics.
    let (fp8_saturated_forward, fp8_saturated_backward) = Fp8Step::saturation(&g, &fp8_stats);
    let metrics = Metrics {
        loss,
        grad_norm,
        lr: lr_traced(&cfg.training, &t),
        accuracy: correct / &denom,
        tokens: total_tokens,
        skipped: ok.not().cast(DType::F32),
        fp8_saturated_forward,
        fp8_saturated_backward,
    };
    // The ring's row: the metrics, then the distillation and MoE metrics and the loss scale
    // where the step has them (the order `RingLayout::row` reads).
    let named: BTreeMap<String, Tensor> = metrics.flatten().into_iter().collect();
    let mut row: Vec<Tensor> = StepMetrics::NAMES
        .iter()
        .map(|n| named[*n].clone())
        .collect();
    row.extend(distill_sums.iter().flatten().map(|sum| sum / &denom));
    if let Some(stats) = &moe_stats {
        let pairs = layout.micro_batch * layout.seq_len * cfg.model.experts_per_token;
        let moe = moe_state::metric_outputs(&cfg.model, stats, layout.accum, pairs, &router_bias);
        row.extend(MOE_METRICS.iter().filter_map(|n| moe.get(n).ok().cloned()));
    }
    row.extend(next.loss_scale.as_ref().map(|s| s.scale.clone()));
    let metrics_ring = ring_layout.push(&ring, &row)?;
    let mut func = g.finish_tree(&StepOutputs {
        state: next,
        metrics_ring,
    })?;
    let mut slots = Vec::new();
    layout
        .state
        .visit(|name, slot| slots.push((name, slot.spec.clone())));
    slots.push((
        metrics_ring::RING_NAME.to_string(),
        PartitionSpec::replicated(),
    ));
    for (name, spec) in slots {
        func.set_output_sharding(&name, spec)?;
        func.donate(&name, &name)?;
    }
    Ok(func)
}
