//! The train step as one traced function: forward, chunked loss, backward, gradient
//! accumulation, global-norm clipping, the LR schedule and AdamW, with every piece of state
//! donated so the update happens in place on the devices.

use super::distill::{DistillContext, MicroBatch, StudentPass, DISTILL_METRICS};
use super::fp8::{combine_stats, Fp8Step};
use super::moe_state::{self, MoeStepStats};
use super::precision::{LossScaling, PrecisionPolicy};
use super::schedule::lr_traced;
use crate::config::Config;
use crate::model::{self, ForwardOptions, ParamSpec, RngStream};
use std::sync::Arc;
use vishwam_hlo::{DType, Func, Graph, PartitionSpec, Result, Tensor, TensorMap, TensorType};
use vishwam_mesh::{LogicalAxis as L, ShardingPlan};

/// Initial dynamic loss scale for f16 compute, and the number of good steps before it doubles.
pub const INITIAL_LOSS_SCALE: f64 = 65536.0;
const SCALE_GROWTH_INTERVAL: f64 = 2000.0;

/// One piece of the train state: its name, type and sharding.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSlot {
    /// Name (`params.<p>`, `opt.m.<p>`, `opt.v.<p>`, `step`, `rng`, `loss_scale`, `good_steps`,
    /// `fp8.layers.<i>.amax_history`); buffers such as the MoE router bias have a `params.`
    /// slot but no optimizer state.
    pub name: String,
    /// Type.
    pub ty: TensorType,
    /// Sharding over the mesh.
    pub spec: PartitionSpec,
}

/// The shape of one training step: what the state holds and how a batch is laid out.
#[derive(Debug, Clone)]
pub struct StepLayout {
    /// The trained parameters: the model's, and any the objective adds (`distill.proj.*`).
    pub params: Vec<ParamSpec>,
    /// The train state, in argument order (a prefix of the function's arguments).
    pub state: Vec<StateSlot>,
    /// Micro-batches per step.
    pub accum: usize,
    /// Sequences per micro-batch.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Sharding of a batch array `[accum, micro_batch, seq_len]`.
    pub batch_spec: PartitionSpec,
    /// Whether the f16 dynamic loss scale is part of the state.
    pub dynamic_scale: bool,
    /// FP8 projections, if on (with delayed scaling, their histories end the state).
    pub fp8: Option<Fp8Step>,
}

/// Names of the metrics the step returns after the state, in order; a distillation step adds
/// [`DISTILL_METRICS`] after them, then MoE models add [`moe_state::MOE_METRICS`]. The FP8 counts are the elements clipped to the FP8
/// range in the step (0 without FP8).
pub const METRICS: [&str; 7] = [
    "loss",
    "grad_norm",
    "lr",
    "tokens",
    "skipped",
    "fp8_saturated_forward",
    "fp8_saturated_backward",
];

/// The forward options the config asks for in training.
pub fn train_forward_options(cfg: &Config, plan: &ShardingPlan) -> ForwardOptions {
    let policy = PrecisionPolicy::from_config(cfg);
    let (b, t, h) = (
        super::batch_geometry(cfg, plan).micro_batch() as i64,
        cfg.seq_len() as i64,
        cfg.model.hidden_dim as i64,
    );
    let residual = plan
        .activation_spec(&[L::Batch, L::Length, L::Embed], &[b, t, h])
        .ok()
        .map(|r| r.spec);
    ForwardOptions {
        compute: policy.compute,
        remat: cfg.memory.gradient_checkpointing,
        attention: super::attention_choice::attention_kind(cfg, plan),
        dropout: cfg.model.dropout_rate,
        residual_spec: residual.filter(|s| !s.is_replicated()),
        moe_sharding: cfg.model.use_moe.then(|| Arc::new(plan.clone())),
        fp8: policy.fp8().map(|p| p.formats),
        head_fp8: policy.lm_head_fp8,
        merge_fp8_projections: projection_outputs_unsplit(cfg, plan),
        row_stats: model::RowStats::for_platform(cfg.runtime.platform),
    }
}

/// Whether the plan leaves the output dimension of the projections that share an input
/// (`wq`/`wk`/`wv`, `w_gate`/`w_up`) whole, so that they can run as one FP8 GEMM on their
/// concatenated weights. Tensor parallelism splits it, and a concatenation across its shards
/// would cost the partitioner a reshuffle of the weights and the output in every step.
fn projection_outputs_unsplit(cfg: &Config, plan: &ShardingPlan) -> bool {
    use model::Projection;
    let shares_input = |p: &Projection| {
        Projection::ALL
            .iter()
            .any(|q| q != p && q.input() == p.input())
    };
    let grouped: Vec<String> = Projection::ALL
        .iter()
        .filter(|p| shares_input(p))
        .map(|p| format!("layers.0.{}", p.param()))
        .collect();
    model::param_specs(&cfg.model)
        .iter()
        .filter(|p| grouped.contains(&p.name))
        .all(|p| match plan.parameter_spec(&p.logical, &p.shape) {
            Ok(r) => r.spec.dims.get(1).is_none_or(|d| {
                d.axes
                    .iter()
                    .all(|a| plan.mesh.axis_size(a).unwrap_or(1) == 1)
            }),
            Err(_) => false,
        })
}

impl StepLayout {
    /// The layout for `cfg` on `plan`'s mesh.
    pub fn new(cfg: &Config, plan: &ShardingPlan) -> Result<StepLayout> {
        StepLayout::with_params(cfg, plan, model::param_specs(&cfg.model))
    }

    /// The layout of a step that trains `params`: the model's, and any the objective adds
    /// (distillation projections).
    pub fn with_params(
        cfg: &Config,
        plan: &ShardingPlan,
        params: Vec<ParamSpec>,
    ) -> Result<StepLayout> {
        let mut state = Vec::new();
        let spec_of = |p: &ParamSpec| -> Result<PartitionSpec> {
            let r = plan.parameter_spec(&p.logical, &p.shape).map_err(|e| {
                vishwam_hlo::HloError::Shape {
                    op: format!("sharding of {}", p.name),
                    detail: e.to_string(),
                }
            })?;
            for note in &r.notes {
                tracing::debug!("{}: {note}", p.name);
            }
            Ok(r.spec)
        };
        for prefix in ["params.", "opt.m.", "opt.v."] {
            for p in params.iter().filter(|p| prefix == "params." || p.trainable) {
                state.push(StateSlot {
                    name: format!("{prefix}{}", p.name),
                    ty: TensorType::new(DType::F32, &p.shape),
                    spec: spec_of(p)?,
                });
            }
        }
        let scalar = |name: &str, dtype| StateSlot {
            name: name.into(),
            ty: TensorType::new(dtype, &[]),
            spec: PartitionSpec::default(),
        };
        state.push(scalar("step", DType::I32));
        state.push(StateSlot {
            name: "rng".into(),
            ty: TensorType::new(DType::U64, &[2]),
            spec: PartitionSpec::default(),
        });
        let policy = PrecisionPolicy::from_config(cfg);
        let dynamic_scale = matches!(policy.loss_scaling, LossScaling::Dynamic { .. });
        if dynamic_scale {
            state.push(scalar("loss_scale", DType::F32));
            state.push(scalar("good_steps", DType::I32));
        }
        let fp8 = policy.fp8().map(|policy| Fp8Step {
            policy,
            layers: cfg.model.num_layers,
        });
        state.extend(fp8.iter().flat_map(Fp8Step::state_slots));
        let batch = super::batch_geometry(cfg, plan);
        let (accum, micro_batch, seq_len) =
            (batch.grad_accum_steps, batch.micro_batch(), cfg.seq_len());
        let micro = plan
            .activation_spec(
                &[L::Batch, L::Length],
                &[micro_batch as i64, seq_len as i64],
            )
            .map_err(|e| vishwam_hlo::HloError::Shape {
                op: "batch sharding".into(),
                detail: e.to_string(),
            })?
            .spec;
        let mut dims = vec![Default::default()];
        dims.extend(micro.dims.iter().cloned());
        Ok(StepLayout {
            params,
            state,
            accum,
            micro_batch,
            seq_len,
            batch_spec: PartitionSpec { dims },
            dynamic_scale,
            fp8,
        })
    }

    /// Type of a batch array.
    pub fn batch_type(&self, dtype: DType) -> TensorType {
        TensorType::new(
            dtype,
            &[
                self.accum as i64,
                self.micro_batch as i64,
                self.seq_len as i64,
            ],
        )
    }
}

/// Traces the whole train step for `cfg`.
pub fn build_train_step(cfg: &Config, plan: &ShardingPlan, layout: &StepLayout) -> Result<Func> {
    trace_train_step(cfg, plan, layout, "train_step", true, None)
}

/// Traces the train step of a student distilled from the teacher `distill` describes: the
/// teacher's parameters follow the batch as inputs `teacher.<name>` (not donated), and
/// [`DISTILL_METRICS`] follow [`METRICS`] among the outputs.
pub fn build_distill_step(
    cfg: &Config,
    plan: &ShardingPlan,
    layout: &StepLayout,
    distill: &DistillContext,
) -> Result<Func> {
    trace_train_step(cfg, plan, layout, "train_step", true, Some(distill))
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
    let mut state = TensorMap::new();
    for slot in &layout.state {
        state.insert(
            slot.name.clone(),
            g.param_sharded(&slot.name, slot.ty.clone(), slot.spec.clone()),
        );
    }
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

    let params: TensorMap = layout
        .params
        .iter()
        .map(|p| {
            Ok((
                p.name.clone(),
                state.get(&format!("params.{}", p.name))?.clone(),
            ))
        })
        .collect::<Result<_>>()?;
    let total_tokens = mask.sum_all();
    let denom = total_tokens.maximum(1.0);
    let loss_scale = if layout.dynamic_scale {
        Some(state.get("loss_scale")?.clone())
    } else {
        None
    };
    let grad_weight = match &loss_scale {
        Some(s) => s / &denom,
        None => denom.ones_like() / &denom,
    };

    let aux_weight = match &loss_scale {
        Some(s) => s / layout.accum as f64,
        None => denom.ones_like() / layout.accum as f64,
    };
    let rng = state.get("rng")?.clone();
    let fp8_scaling = match &layout.fp8 {
        Some(f) if fp8_history => f.scaling_inputs(&state)?,
        _ => TensorMap::new(),
    };
    let Accumulated {
        loss: loss_sum,
        grads,
        rng,
        moe: moe_stats,
        fp8: fp8_stats,
        distill: distill_sums,
    } = accumulate(
        cfg,
        &opts,
        layout,
        &params,
        &fp8_scaling,
        [&tokens, &targets, &mask],
        &[grad_weight, aux_weight],
        rng,
        teacher.as_ref(),
    )?;
    let mut grads = grads;
    if let Some(scale) = &loss_scale {
        grads = grads
            .iter()
            .map(|(n, g)| (n.to_string(), g / scale))
            .collect();
    }
    let loss = &loss_sum / &denom;

    let norm_sq = grads
        .values()
        .map(|g| g.square().sum_all())
        .reduce(|a, b| a + b)
        .expect("at least one parameter");
    let grad_norm = norm_sq.sqrt();
    let finite = |x: &Tensor| x.abs().lt(f64::INFINITY);
    let ok = finite(&grad_norm).and(finite(&loss));

    let tc = &cfg.training;
    let step = state.get("step")?;
    let next_step = step + 1i64;
    let t = next_step.cast(DType::F32);
    let lr = lr_traced(tc, &t);
    let clip = if tc.max_grad_norm > 0.0 {
        Some((tc.max_grad_norm / (&grad_norm + 1e-6)).minimum(1.0))
    } else {
        None
    };
    let (b1, b2) = (tc.adam_beta1, tc.adam_beta2);
    let bc1 = t.graph().full(b1, t.ty()).pow(&t) * -1.0 + 1.0;
    let bc2 = t.graph().full(b2, t.ty()).pow(&t) * -1.0 + 1.0;

    let mut outputs: Vec<(String, Tensor)> = Vec::new();
    let mut new_m = Vec::new();
    let mut new_v = Vec::new();
    let mut new_biases = Vec::new();
    for p in &layout.params {
        let theta = params.get(&p.name)?;
        if !p.trainable {
            let updated = moe_state::buffer_update(&cfg.model, &p.name, theta, moe_stats.as_ref())?;
            new_biases.push(updated.clone());
            outputs.push((format!("params.{}", p.name), ok.select(&updated, theta)));
            continue;
        }
        let mut gr = grads.get(&p.name)?.clone();
        if let Some(c) = &clip {
            gr = gr * c;
        }
        let m = state.get(&format!("opt.m.{}", p.name))?;
        let v = state.get(&format!("opt.v.{}", p.name))?;
        let m1 = m * b1 + &gr * (1.0 - b1);
        let v1 = v * b2 + gr.square() * (1.0 - b2);
        let update = (&m1 / &bc1) / ((&v1 / &bc2).sqrt() + tc.adam_eps);
        let update = if p.decay && tc.weight_decay > 0.0 {
            update + theta * tc.weight_decay
        } else {
            update
        };
        let theta1 = theta - update * &lr;
        outputs.push((format!("params.{}", p.name), ok.select(&theta1, theta)));
        new_m.push((format!("opt.m.{}", p.name), ok.select(&m1, m)));
        new_v.push((format!("opt.v.{}", p.name), ok.select(&v1, v)));
    }
    outputs.extend(new_m);
    outputs.extend(new_v);
    outputs.push(("step".into(), ok.select(&next_step, step)));
    outputs.push(("rng".into(), rng));
    if let Some(scale) = &loss_scale {
        let good = state.get("good_steps")?;
        let good1 = good + 1i64;
        let grow = good1.cast(DType::F32).ge(SCALE_GROWTH_INTERVAL);
        let new_scale = ok.select(
            grow.select(&(scale * 2.0), scale),
            (scale * 0.5).maximum(1.0),
        );
        let new_good = ok.select(grow.select(good1.zeros_like(), &good1), good.zeros_like());
        outputs.push(("loss_scale".into(), new_scale));
        outputs.push(("good_steps".into(), new_good));
    }
    if let Some(f) = &layout.fp8 {
        outputs.extend(f.next_state(&state, &fp8_stats, &ok)?);
    }
    let skipped = ok.not().cast(DType::F32);
    let (saturated_forward, saturated_backward) = Fp8Step::saturation(&g, &fp8_stats);
    let metrics = [
        loss,
        grad_norm,
        lr,
        total_tokens,
        skipped,
        saturated_forward,
        saturated_backward,
    ];
    for (name, value) in METRICS.iter().zip(metrics) {
        outputs.push((name.to_string(), value));
    }
    for (name, sum) in DISTILL_METRICS.iter().zip(distill_sums.iter().flatten()) {
        outputs.push((name.to_string(), sum / &denom));
    }
    if let Some(stats) = &moe_stats {
        let pairs = layout.micro_batch * layout.seq_len * cfg.model.experts_per_token;
        outputs.extend(moe_state::metric_outputs(
            stats,
            layout.accum,
            pairs,
            &new_biases,
        ));
    }
    let refs: Vec<(&str, &Tensor)> = outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut func = g.finish(&refs)?;
    for slot in &layout.state {
        func.set_output_sharding(&slot.name, slot.spec.clone())?;
        func.donate(&slot.name, &slot.name)?;
    }
    Ok(func)
}

/// What a step's micro-batches add up to.
struct Accumulated {
    /// The summed objective over real tokens: the CE, or the distillation objective.
    loss: Tensor,
    /// The weighted gradients of the trainable parameters.
    grads: TensorMap,
    /// The advanced random state.
    rng: Tensor,
    /// For MoE models, the routing statistics.
    moe: Option<MoeStepStats>,
    /// The FP8 statistics per layer (none without FP8).
    fp8: Vec<Tensor>,
    /// When distilling, the sums of [`DISTILL_METRICS`].
    distill: Option<[Tensor; 3]>,
}

/// The teacher's side of a distillation step: its context and its parameter inputs.
struct TeacherInputs<'a> {
    context: &'a DistillContext,
    params: TensorMap,
}

/// Loss sum and weighted gradients over the micro-batches (a `while` loop when there are
/// several), the advanced random state, the routing and the FP8 statistics, and with a
/// `teacher` the distillation sums. `batch` is tokens, targets and mask; `weights` are the
/// CE (or distillation objective) and aux-loss weights.
#[allow(clippy::too_many_arguments)]
fn accumulate(
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
    let [tokens, targets, mask] = batch;
    let names: Vec<String> = layout
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.name.clone())
        .collect();
    let all_names: Vec<String> = layout.params.iter().map(|p| p.name.clone()).collect();
    let micro = |i: &Tensor, x: &Tensor| -> Tensor {
        let zero = i.zeros_like();
        x.dynamic_slice(
            &[i.clone(), zero.clone(), zero],
            &[1, layout.micro_batch as i64, layout.seq_len as i64],
        )
        .reshape(&[layout.micro_batch as i64, layout.seq_len as i64])
    };
    if layout.accum == 1 {
        let i = tokens.graph().scalar_i64(0, DType::I32);
        return micro_step(
            cfg,
            opts,
            layout,
            &names,
            params,
            fp8_scaling,
            [&micro(&i, tokens), &micro(&i, targets), &micro(&i, mask)],
            weights,
            rng,
            teacher.map(|t| (t.context, &t.params)),
        );
    }
    // Carry: [i, loss, grads..., params (all)..., rng, tokens, targets, mask, grad_weight,
    // aux_weight, FP8 scaling inputs..., teacher params..., distillation sums (3)...,
    // MoE statistics..., FP8 statistics...].
    let g = tokens.graph().clone();
    let (n, n_all) = (names.len(), all_names.len());
    let teacher_names: Vec<String> = teacher
        .map(|t| t.context.slots.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    let mut init = vec![g.scalar_i64(0, DType::I32), g.scalar(0.0, DType::F32)];
    for name in &names {
        init.push(params.get(name)?.zeros_like());
    }
    for name in &all_names {
        init.push(params.get(name)?.clone());
    }
    init.extend([
        rng,
        tokens.clone(),
        targets.clone(),
        mask.clone(),
        weights[0].clone(),
        weights[1].clone(),
    ]);
    let scaling_names: Vec<String> = fp8_scaling.keys().map(str::to_string).collect();
    init.extend(fp8_scaling.values().cloned());
    if let Some(t) = teacher {
        for name in &teacher_names {
            init.push(t.params.get(name)?.clone());
        }
        init.extend((0..DISTILL_METRICS.len()).map(|_| g.scalar(0.0, DType::F32)));
    }
    let moe_zeros = MoeStepStats::zeros(&g, &cfg.model);
    let moe_init: Vec<Tensor> = moe_zeros.iter().flat_map(MoeStepStats::to_vec).collect();
    let base = 2 + n + n_all;
    let scaling_base = base + 6;
    let teacher_base = scaling_base + scaling_names.len();
    let sums_base = teacher_base + teacher_names.len();
    let moe_base = sums_base + teacher.map_or(0, |_| DISTILL_METRICS.len());
    let fp8_base = moe_base + moe_init.len();
    init.extend(moe_init);
    init.extend(layout.fp8.iter().flat_map(|f| f.zero_stats(&g)));
    let accum = layout.accum as i64;
    let error = std::cell::RefCell::new(None);
    let out = g.while_loop(
        &init,
        |_g, xs| xs[0].lt(accum),
        |_g, xs| {
            let i = &xs[0];
            let p: TensorMap = all_names
                .iter()
                .cloned()
                .zip(xs[2 + n..2 + n + n_all].iter().cloned())
                .collect();
            let (rng, tok, tgt, msk) = (&xs[base], &xs[base + 1], &xs[base + 2], &xs[base + 3]);
            let w = [xs[base + 4].clone(), xs[base + 5].clone()];
            let scaling: TensorMap = scaling_names
                .iter()
                .cloned()
                .zip(xs[scaling_base..teacher_base].iter().cloned())
                .collect();
            let teacher_params: TensorMap = teacher_names
                .iter()
                .cloned()
                .zip(xs[teacher_base..sums_base].iter().cloned())
                .collect();
            let result = micro_step(
                cfg,
                opts,
                layout,
                &names,
                &p,
                &scaling,
                [&micro(i, tok), &micro(i, tgt), &micro(i, msk)],
                &w,
                rng.clone(),
                teacher.map(|t| (t.context, &teacher_params)),
            );
            match result {
                Ok(step) => {
                    let mut next = vec![i + 1i64, &xs[1] + step.loss];
                    for (k, name) in names.iter().enumerate() {
                        let g = step.grads.get(name).expect("a gradient per parameter");
                        next.push(&xs[2 + k] + g);
                    }
                    next.extend(xs[2 + n..base].iter().cloned());
                    next.push(step.rng);
                    next.extend(xs[base + 1..sums_base].iter().cloned());
                    if let Some(sums) = step.distill {
                        for (k, sum) in sums.iter().enumerate() {
                            next.push(&xs[sums_base + k] + sum);
                        }
                    }
                    if let Some(moe) = step.moe {
                        let sum = MoeStepStats::from_slice(&xs[moe_base..fp8_base]).add(&moe);
                        next.extend(sum.to_vec());
                    }
                    for (k, s) in step.fp8.iter().enumerate() {
                        next.push(combine_stats(&xs[fp8_base + k], s));
                    }
                    next
                }
                Err(e) => {
                    *error.borrow_mut() = Some(e);
                    xs.to_vec()
                }
            }
        },
    );
    if let Some(e) = error.into_inner() {
        return Err(e);
    }
    let grads: TensorMap = names
        .iter()
        .cloned()
        .zip(out[2..2 + n].iter().cloned())
        .collect();
    let moe = moe_zeros.map(|_| MoeStepStats::from_slice(&out[moe_base..fp8_base]));
    let distill = teacher.map(|_| std::array::from_fn(|k| out[sums_base + k].clone()));
    Ok(Accumulated {
        loss: out[1].clone(),
        grads,
        rng: out[base].clone(),
        moe,
        fp8: out[fp8_base..].to_vec(),
        distill,
    })
}

/// One micro-batch of the model's objective ([`model::lm_pass`]): the masked CE sum (or, with
/// a teacher, the distillation objective's sum) and the gradients of `weights[0]` times it
/// (plus, for MoE models, `weights[1]` times [`model::moe_aux_term`]) with respect to
/// `names`, and the FP8 statistics per layer (the gradients of zero probes).
#[allow(clippy::too_many_arguments)]
fn micro_step(
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
    let (loss, distill) = match teacher {
        None => (pass.ce_sum(targets, mask, None), None),
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
        grads,
        rng: stream.state,
        moe,
        fp8,
        distill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(sets: &[&str], devices: usize) -> bool {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load(None, &sets).unwrap();
        let plan = super::super::sharding_plan(&cfg, "cpu", devices).unwrap();
        projection_outputs_unsplit(&cfg, &plan)
    }

    #[test]
    fn projections_merge_unless_tensor_parallelism_splits_their_outputs() {
        assert!(merged(&[], 1));
        let fsdp = [
            "tpu.device_strategy=\"fsdp\"",
            "tpu.mesh_shape={\"fsdp\": 4}",
            "optimization.shard_weights=true",
        ];
        assert!(merged(&fsdp, 4));
        let hybrid = [
            "tpu.device_strategy=\"hybrid\"",
            "tpu.mesh_shape={\"data\": 2, \"model\": 2}",
        ];
        assert!(!merged(&hybrid, 4));
        let one_wide_model = [
            "tpu.device_strategy=\"hybrid\"",
            "tpu.mesh_shape={\"data\": 4, \"model\": 1}",
        ];
        assert!(merged(&one_wide_model, 4));
    }

    #[test]
    fn the_loss_takes_one_pass_for_its_row_statistics_on_gpus_and_tpus_and_two_on_cpus() {
        let stats = |platform: &str| {
            let sets = vec![format!("runtime.platform=\"{platform}\"")];
            let cfg = Config::load(None, &sets).unwrap();
            let plan = super::super::sharding_plan(&cfg, platform, 1).unwrap();
            train_forward_options(&cfg, &plan).row_stats
        };
        assert_eq!(stats("cpu"), model::RowStats::TwoPass);
        assert_eq!(stats("cuda"), model::RowStats::Online);
        assert_eq!(stats("tpu"), model::RowStats::Online);
    }
}
