//! `vishwam verify`: the traced, differentiated and compiled XLA program against the
//! independent Candle reference, on one batch: logits, loss, every gradient, and the
//! parameters after K optimizer steps of the real train step.

use crate::config::{ComputeDtype, Config};
use crate::engine::{Engine, HostArray, Input};
use crate::model::{self, param_specs};
use crate::reference::{
    self, compare, ComparisonRow, OptimizerStep, ReferenceDtype, ReferenceModel, ReferenceOptimizer,
};
use crate::train::{initial_state, train_forward_options, StepLayout, TrainError, Trainer};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vishwam_hlo::{DType, Graph, TensorType};
use vishwam_mesh::ShardingPlan;

/// Tolerances by what is compared, for the compute dtype of the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Logits and loss (max abs error / max |reference|).
    pub logits: f64,
    /// Gradients.
    pub grads: f64,
    /// Parameters after the optimizer steps (relative to the largest parameter).
    pub params: f64,
    /// Fraction of parameter elements allowed past `params`, each still bounded by a full
    /// sign flip of every update (2 x the summed learning rate): AdamW's first steps move an
    /// element by about `lr * sign(g)`, so an element whose gradient is at rounding-noise level
    /// can legitimately move the other way in another engine.
    pub param_outliers: f64,
}

impl Tolerances {
    /// f32: 1e-5 on logits, 1e-4 on gradients; bf16/f16 compute against the f32 reference at
    /// sizes set by 8 and 11 mantissa bits.
    ///
    /// f32 parameter outliers: 0.5%. How many elements flip depends on how far the two
    /// engines' gradients are apart, which XLA's CPU target and Candle's CPU kernels decide
    /// per machine: the SwiGLU matrices of tests/verify.rs's 2-layer models had up to 9 of
    /// 8192 (0.11%) where the bound was set (1e-3), 10 to 16 (0.2%) on an Intel Xeon under
    /// XLA's AVX target and on it and an AMD EPYC under SSE4.2. 0.5% is 2.5 times the worst
    /// seen; a wrong update (learning rate, moments, decay) moves most elements past `params`.
    pub fn for_compute(c: ComputeDtype) -> Tolerances {
        match c {
            ComputeDtype::F32 => Tolerances {
                logits: 1e-5,
                grads: 1e-4,
                params: 1e-4,
                param_outliers: 5e-3,
            },
            ComputeDtype::Bf16 => Tolerances {
                logits: 3e-2,
                grads: 8e-2,
                params: 5e-2,
                param_outliers: 5e-2,
            },
            ComputeDtype::F16 => Tolerances {
                logits: 5e-3,
                grads: 2e-2,
                params: 2e-2,
                param_outliers: 2e-2,
            },
        }
    }
}

impl Tolerances {
    /// The tolerances for `cfg`: [`Tolerances::for_compute`], widened to FP8 rounding when
    /// the block projections are FP8 (E4M3 operands: 2^-4 relative per element; E5M2
    /// gradients: 2^-3).
    pub fn for_config(cfg: &Config) -> Tolerances {
        let compute = Tolerances::for_compute(cfg.compute_dtype());
        if !cfg.optimization.use_fp8 {
            return compute;
        }
        Tolerances {
            logits: compute.logits.max(FP8_TOLERANCES.logits),
            grads: compute.grads.max(FP8_TOLERANCES.grads),
            params: compute.params.max(FP8_TOLERANCES.params),
            param_outliers: compute.param_outliers.max(FP8_TOLERANCES.param_outliers),
        }
    }
}

/// Bounds for FP8 block projections against the f32 reference. Measured on the 2-layer,
/// 32-wide models of tests/fp8_train.rs: logits 1e-2, gradients up to 0.19 (E5M2 gradients
/// and bf16 compute; 0.11 with E4M3 gradients), parameters after 2 AdamW steps within 0.1
/// except for up to 6% of elements whose near-zero gradients flipped sign.
const FP8_TOLERANCES: Tolerances = Tolerances {
    logits: 0.05,
    grads: 0.25,
    params: 0.1,
    param_outliers: 0.1,
};

/// The comparison of one batch.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// One row per compared tensor.
    pub rows: Vec<ComparisonRow>,
}

impl VerifyReport {
    /// True when every row passed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }
}

/// A seeded micro-batch for `plan`'s mesh (`training.batch_size` sequences per batch shard):
/// random tokens with the last quarter of the last row masked as padding.
pub fn random_batch(cfg: &Config, plan: &ShardingPlan, seed: u64) -> reference::Batch {
    let (b, t) = (
        crate::train::batch_geometry(cfg, plan).micro_batch(),
        cfg.seq_len(),
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v = cfg.model.vocab_size as i32;
    let tokens: Vec<i32> = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let targets: Vec<i32> = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let mut mask = vec![1f32; b * t];
    for m in &mut mask[b * t - t / 4..] {
        *m = 0.0;
    }
    reference::Batch::new(tokens, targets, mask, b, t).expect("consistent shapes")
}

fn flat(a: &HostArray) -> Vec<f32> {
    a.to_f32()
}

/// What to run besides logits, loss and gradients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VerifyOptions {
    /// Optimizer steps of the compiled train step to compare parameters after (0: none).
    pub steps: usize,
    /// Tokens per LM-head chunk in the loss (`None`: the trainer's automatic choice).
    pub loss_chunk: Option<usize>,
}

/// Runs the comparison. `params` are the weights both engines start from.
pub fn verify(
    cfg: &Config,
    engine: Engine,
    plan: ShardingPlan,
    params: &BTreeMap<String, HostArray>,
    batch: &reference::Batch,
    options: VerifyOptions,
) -> Result<VerifyReport, TrainError> {
    let steps = options.steps;
    if cfg.model.dropout_rate > 0.0 {
        return Err(TrainError::Other(
            "verify compares deterministic programs: set model.dropout_rate=0".into(),
        ));
    }
    if cfg.distillation.teacher_model.is_some() {
        return Err(TrainError::Other(
            "verify compares the plain train step: set distillation.teacher_model=null (the distillation loss has its own reference test)".into(),
        ));
    }
    if cfg.training.grad_accum_steps != 1 {
        return Err(TrainError::Other(
            "verify runs one micro-batch: set training.grad_accum_steps=1".into(),
        ));
    }
    let tol = Tolerances::for_config(cfg);
    let reference_err =
        |e: reference::ReferenceError| TrainError::Other(format!("Candle reference: {e}"));
    let candle = ReferenceModel::from_host_arrays(&cfg.model, params, ReferenceDtype::F32)
        .map_err(reference_err)?;
    let mut rows = Vec::new();

    // Logits, loss and gradients from one XLA program.
    let layout = StepLayout::new(cfg, &plan)?;
    let opts = train_forward_options(cfg, &plan);
    let g = Graph::named("verify");
    let p = layout.param_inputs(&g);
    let (b, t) = (batch.batch_size as i64, batch.seq_len as i64);
    let tokens = g.param("tokens", TensorType::new(DType::I32, &[b, t]));
    let targets = g.param("targets", TensorType::new(DType::I32, &[b, t]));
    let mask = g.param("mask", TensorType::new(DType::F32, &[b, t]));
    // The objective of the train step at one micro-batch (model::lm_pass): the mean masked
    // cross-entropy plus, for MoE models, model::moe_aux_term.
    let pass = model::lm_pass(&cfg.model, &opts, &p, &tokens, None)?;
    let logits = pass.logits().reshape(&[b, t, cfg.model.vocab_size as i64]);
    let ce = pass.ce_sum(&targets, &mask, options.loss_chunk);
    let loss = &ce / mask.sum_all().maximum(1.0);
    let objective = match pass.aux_term(&cfg.model) {
        Some(aux) => &loss + aux,
        None => loss.clone(),
    };
    let names: Vec<String> = layout.params.iter().map(|s| s.name.clone()).collect();
    let wrt: Vec<_> = names
        .iter()
        .map(|n| p.get(n).cloned())
        .collect::<Result<_, _>>()?;
    let grads = g.grad(&objective, &wrt)?;
    let mut outs = vec![("logits".to_string(), logits), ("loss".to_string(), loss)];
    outs.extend(
        names
            .iter()
            .zip(grads)
            .map(|(n, gr)| (format!("grad.{n}"), gr)),
    );
    let refs: Vec<(&str, &vishwam_hlo::Tensor)> =
        outs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut func = g.finish(&refs)?;
    for (name, slot) in layout.param_slots() {
        func.set_output_sharding(&format!("grad.{name}"), slot.spec.clone())?;
    }
    let hints = crate::train::PrecisionPolicy::from_config(cfg).compile_hints();
    let program = engine.compile_with(&func, hints)?;
    let arrays = layout.place_params(&engine, params)?;
    let replicated = vishwam_mesh::PartitionSpec::default();
    let host = |v: &[i32]| HostArray::from_slice(&[b, t], v).map_err(TrainError::Other);
    let tok = engine.put(&host(&batch.tokens)?, &replicated)?;
    let tgt = engine.put(&host(&batch.targets)?, &replicated)?;
    let msk = engine.put(
        &HostArray::from_slice(&[b, t], &batch.mask).map_err(TrainError::Other)?,
        &replicated,
    )?;
    let mut inputs: Vec<Input<'_>> = arrays.iter().map(Input::Keep).collect();
    inputs.extend([Input::Keep(&tok), Input::Keep(&tgt), Input::Keep(&msk)]);
    let out = program.run(inputs)?;

    let ref_logits = candle
        .logits(&batch.tokens, batch.batch_size, batch.seq_len)
        .map_err(reference_err)?;
    let ref_logits: Vec<f32> = ref_logits
        .flatten_all()
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let (ref_loss, ref_grads) = candle.loss_and_grads(batch).map_err(reference_err)?;
    let shape = |v: &[i64]| v.iter().map(|&d| d as usize).collect::<Vec<_>>();
    rows.push(compare(
        "logits",
        &[batch.batch_size, batch.seq_len, cfg.model.vocab_size],
        &flat(&engine.get(&out[0])?),
        &ref_logits,
        tol.logits,
    ));
    rows.push(compare(
        "loss",
        &[],
        &flat(&engine.get(&out[1])?),
        &[ref_loss as f32],
        tol.logits,
    ));
    let ref_grads = ref_grads.to_host().map_err(reference_err)?;
    for (i, name) in names.iter().enumerate() {
        let want = ref_grads.get(name).ok_or_else(|| {
            TrainError::Other(format!("the reference has no gradient for `{name}`"))
        })?;
        rows.push(compare(
            &format!("grad {name}"),
            &shape(&want.shape),
            &flat(&engine.get(&out[2 + i])?),
            &flat(want),
            tol.grads,
        ));
    }
    drop(arrays);

    // The parameters after K steps of the real compiled train step vs the reference AdamW.
    if steps > 0 {
        let mut trainer = Trainer::new(cfg, engine, plan)?;
        let mut state = initial_state(cfg, &trainer.layout);
        for (name, array) in params {
            state.insert(crate::train::state::param_leaf(name), array.clone());
        }
        trainer.load_state(&state)?;
        let hb = crate::train::HostBatch::from_rows(
            1,
            batch.seq_len,
            &batch.tokens,
            &batch.targets,
            &batch.mask,
        )?;
        for _ in 0..steps {
            trainer.step(&hb)?;
        }
        let mut optimizer =
            ReferenceOptimizer::new(&candle, &cfg.training).map_err(reference_err)?;
        for t in 1..=steps {
            let loads = candle
                .router_loads(&batch.tokens, batch.batch_size, batch.seq_len)
                .map_err(reference_err)?;
            let (_, grads) = candle.loss_and_grads(batch).map_err(reference_err)?;
            optimizer.step(&candle, &grads, t).map_err(reference_err)?;
            candle
                .apply_lossfree_update(&loads)
                .map_err(reference_err)?;
        }
        let got = trainer.params_to_host()?;
        let want = candle.parameters_to_host().map_err(reference_err)?;
        for spec in param_specs(&cfg.model) {
            let lr_sum = largest_update_sum(cfg, &spec, steps);
            let (g, w) = (&got[&spec.name], &want[&spec.name]);
            rows.push(compare_after_steps(
                &spec.name,
                steps,
                &shape(&w.shape),
                &flat(g),
                &flat(w),
                &tol,
                lr_sum,
            ));
        }
    }
    Ok(VerifyReport { rows })
}

/// The most `steps` updates can move one element of `spec`: AdamW moves it by at most about
/// the learning rate per step; Muon by its rate times the shape factor (the orthogonalised
/// matrix has no element above 1).
fn largest_update_sum(cfg: &Config, spec: &crate::model::ParamSpec, steps: usize) -> f64 {
    use crate::train::optim::muon;
    let muon_matrix =
        cfg.training.optimizer == crate::config::Optimizer::Muon && muon::uses_muon(spec);
    (1..=steps)
        .map(|t| {
            if muon_matrix {
                crate::train::lr_at(&muon::muon_schedule(&cfg.training), t)
                    * muon::shape_scale(&spec.shape)
            } else {
                crate::train::lr_at(&cfg.training, t)
            }
        })
        .sum()
}

/// A parameter after `steps` updates: within `tol.params` of the reference (relative to its
/// largest element) except for at most `tol.param_outliers` of the elements, each of which
/// must stay within a full sign flip of every update.
fn compare_after_steps(
    name: &str,
    steps: usize,
    shape: &[usize],
    got: &[f32],
    want: &[f32],
    tol: &Tolerances,
    lr_sum: f64,
) -> ComparisonRow {
    let mut row = compare(
        &format!("param {name} after {steps} steps"),
        shape,
        got,
        want,
        tol.params,
    );
    if row.pass || got.len() != want.len() || !got.iter().all(|x| x.is_finite()) {
        return row;
    }
    let scale = want
        .iter()
        .fold(0f64, |m, &x| m.max(x.abs() as f64))
        .max(f64::MIN_POSITIVE);
    let errors = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs());
    let (mut outliers, mut worst) = (0usize, 0f64);
    for e in errors {
        if e > tol.params * scale {
            outliers += 1;
        }
        worst = worst.max(e);
    }
    let allowed = (tol.param_outliers * got.len() as f64).ceil() as usize;
    row.pass = outliers <= allowed.max(1) && worst <= 2.0 * lr_sum * 1.01;
    row.name = format!(
        "{} ({outliers} of {} elements past tol)",
        row.name,
        got.len()
    );
    row
}
