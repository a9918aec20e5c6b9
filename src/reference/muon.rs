//! Muon + AdamW of docs/model.md (`training.optimizer = "muon"`), in the reference's dtype
//! (f32 when compared with XLA): Newton-Schulz orthogonalised Nesterov momentum for the
//! blocks' weight matrices, AdamW for every other parameter, one global-norm clip over all
//! gradients first, and one schedule whose peak is `muon_lr` for Muon and `learning_rate`
//! for AdamW. Written from docs/model.md, apart from the XLA path's `train::optim::muon`.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use super::error::{ReferenceError, Result};
use super::model::{Gradients, ReferenceModel};
use super::optimizer::{adamw_parameter, checked_gradient, clip_scale, StepUpdate};
use super::params::ParameterSpec;
use super::schedule::lr_at;
use crate::config::TrainingConfig;

/// The block matrices docs/model.md gives to Muon, by their name inside `layers.{i}.`.
const MUON_MATRICES: [&str; 13] = [
    "attn.wq",
    "attn.wk",
    "attn.wv",
    "attn.wo",
    "mlp.w_gate",
    "mlp.w_up",
    "mlp.w_down",
    "moe.w_gate",
    "moe.w_up",
    "moe.w_down",
    "moe.shared.w_gate",
    "moe.shared.w_up",
    "moe.shared.w_down",
];

/// Whether docs/model.md trains this parameter with Muon (a block's attention, MLP or
/// expert matrix); every other parameter takes AdamW.
pub fn is_muon_parameter(spec: &ParameterSpec) -> bool {
    spec.name
        .strip_prefix("layers.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(layer, local)| {
            layer.parse::<usize>().is_ok() && MUON_MATRICES.contains(&local)
        })
}

/// Muon's momentum at step `t` (from 1): linear from 0.85 to `muon_momentum` over
/// `momentum_warmup_steps` (`muon_momentum` throughout without warmup).
pub fn muon_momentum_at(t: usize, c: &TrainingConfig) -> f64 {
    if c.momentum_warmup_steps == 0 {
        return c.muon_momentum;
    }
    let frac = ((t.max(1) - 1) as f64 / c.momentum_warmup_steps as f64).min(1.0);
    (1.0 - frac) * 0.85 + frac * c.muon_momentum
}

/// `steps` quintic Newton-Schulz iterations on a matrix `[rows, cols]`, or on each matrix of
/// a stack `[n, rows, cols]`, in `g`'s dtype (docs/model.md).
pub fn newton_schulz(g: &Tensor, steps: usize) -> Result<Tensor> {
    match g.rank() {
        2 => newton_schulz_matrix(g, steps),
        3 => {
            let each = (0..g.dim(0)?)
                .map(|i| newton_schulz_matrix(&g.get(i)?, steps))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::stack(&each, 0)?)
        }
        _ => Err(ReferenceError::Unsupported {
            feature: "Newton-Schulz of a tensor that is neither a matrix nor a stack of them",
            hint: "only rank-2 and rank-3 parameters take Muon",
        }),
    }
}

fn newton_schulz_matrix(g: &Tensor, steps: usize) -> Result<Tensor> {
    let (a, b, c) = (3.4445, -4.7750, 2.0315);
    let (rows, cols) = g.dims2()?;
    let norm = g
        .sqr()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .sqrt();
    let mut x = g.affine(1.0 / (norm + 1e-7), 0.0)?;
    if rows > cols {
        x = x.t()?.contiguous()?;
    }
    for _ in 0..steps {
        let gram = x.matmul(&x.t()?.contiguous()?)?;
        let poly = (gram.affine(b, 0.0)? + gram.matmul(&gram)?.affine(c, 0.0)?)?;
        x = (x.affine(a, 0.0)? + poly.matmul(&x)?)?;
    }
    if rows > cols {
        x = x.t()?.contiguous()?;
    }
    Ok(x)
}

/// Muon + AdamW state: a momentum buffer per Muon matrix, AdamW moments for the rest.
#[derive(Debug)]
pub struct ReferenceMuon {
    training: TrainingConfig,
    momentum: BTreeMap<String, Tensor>,
    first_moments: BTreeMap<String, Tensor>,
    second_moments: BTreeMap<String, Tensor>,
    steps_done: usize,
}

impl ReferenceMuon {
    /// Zero state for every parameter of `model`, hyperparameters from `training` (its
    /// `optimizer` key is not consulted: this is Muon).
    pub fn new(model: &ReferenceModel, training: &TrainingConfig) -> Result<ReferenceMuon> {
        let mut state = ReferenceMuon {
            training: training.clone(),
            momentum: BTreeMap::new(),
            first_moments: BTreeMap::new(),
            second_moments: BTreeMap::new(),
            steps_done: 0,
        };
        for spec in model.specs() {
            let zeros = model.parameters()[&spec.name].as_tensor().zeros_like()?;
            if is_muon_parameter(spec) {
                state.momentum.insert(spec.name.clone(), zeros);
            } else {
                state.first_moments.insert(spec.name.clone(), zeros.clone());
                state.second_moments.insert(spec.name.clone(), zeros);
            }
        }
        Ok(state)
    }

    /// The last step applied (0 before the first).
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// The momentum buffer of a Muon matrix (None for AdamW parameters).
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.momentum.get(name)
    }

    /// The AdamW moments `(m, v)` of a parameter outside Muon.
    pub fn adam_moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        Some((
            self.first_moments.get(name)?,
            self.second_moments.get(name)?,
        ))
    }

    /// Applies step `t` (from 1) with `grads` to the parameters of `model`.
    pub fn step(
        &mut self,
        model: &ReferenceModel,
        grads: &Gradients,
        t: usize,
    ) -> Result<StepUpdate> {
        if t == 0 {
            return Err(ReferenceError::InvalidStep { t });
        }
        let c = &self.training;
        let lr = lr_at(t, c);
        let muon_lr = lr_at(
            t,
            &TrainingConfig {
                learning_rate: c.muon_lr,
                ..c.clone()
            },
        );
        let mu = muon_momentum_at(t, c);
        let grad_norm = grads.global_norm()?;
        let clip_scale = clip_scale(grad_norm, c);
        for spec in model.specs() {
            let name = &spec.name;
            let grad = checked_gradient(grads, spec)?;
            let missing = || ReferenceError::MissingGradient { name: name.clone() };
            if let Some(buffer) = self.momentum.get(name) {
                let g = grad.affine(clip_scale, 0.0)?;
                let buffer = (buffer.affine(mu, 0.0)? + g.affine(1.0 - mu, 0.0)?)?;
                let nesterov = (g.affine(1.0 - mu, 0.0)? + buffer.affine(mu, 0.0)?)?;
                let orthogonal = newton_schulz(&nesterov, c.ns_steps)?;
                let (rows, cols) = (
                    spec.shape[spec.shape.len() - 2],
                    spec.shape[spec.shape.len() - 1],
                );
                let scale = (cols as f64 / rows as f64).max(1.0).sqrt();
                let theta = model.parameters()[name].as_tensor();
                let new_theta = (theta - orthogonal.affine(muon_lr * scale, 0.0)?)?;
                model.parameters()[name].set(&new_theta)?;
                self.momentum.insert(name.clone(), buffer);
                continue;
            }
            let (m, v) = match (self.first_moments.get(name), self.second_moments.get(name)) {
                (Some(m), Some(v)) => (m, v),
                _ => return Err(missing()),
            };
            let (m, v) = adamw_parameter(model, spec, grad, (m, v), clip_scale, lr, t, c)?;
            self.first_moments.insert(name.clone(), m);
            self.second_moments.insert(name.clone(), v);
        }
        self.steps_done = t;
        Ok(StepUpdate {
            t,
            lr,
            grad_norm,
            clip_scale,
            muon_lr: Some(muon_lr),
        })
    }
}

/// An optimiser the reference training driver can step: [`super::ReferenceAdamW`],
/// [`ReferenceMuon`] or [`ReferenceOptimizer`].
pub trait OptimizerStep {
    /// Applies step `t` (from 1) with `grads` to the parameters of `model`.
    fn step(&mut self, model: &ReferenceModel, grads: &Gradients, t: usize) -> Result<StepUpdate>;
    /// The last step applied (0 before the first).
    fn steps_done(&self) -> usize;
}

impl OptimizerStep for super::ReferenceAdamW {
    fn step(&mut self, model: &ReferenceModel, grads: &Gradients, t: usize) -> Result<StepUpdate> {
        super::ReferenceAdamW::step(self, model, grads, t)
    }
    fn steps_done(&self) -> usize {
        super::ReferenceAdamW::steps_done(self)
    }
}

impl OptimizerStep for ReferenceMuon {
    fn step(&mut self, model: &ReferenceModel, grads: &Gradients, t: usize) -> Result<StepUpdate> {
        ReferenceMuon::step(self, model, grads, t)
    }
    fn steps_done(&self) -> usize {
        ReferenceMuon::steps_done(self)
    }
}

/// The optimiser `training.optimizer` names.
#[derive(Debug)]
pub enum ReferenceOptimizer {
    /// `"adamw"`.
    AdamW(super::ReferenceAdamW),
    /// `"muon"`.
    Muon(ReferenceMuon),
}

impl ReferenceOptimizer {
    /// Zero state of the optimiser `training.optimizer` names, for `model`.
    pub fn new(model: &ReferenceModel, training: &TrainingConfig) -> Result<ReferenceOptimizer> {
        Ok(match training.optimizer {
            crate::config::Optimizer::AdamW => {
                ReferenceOptimizer::AdamW(super::ReferenceAdamW::new(model, training)?)
            }
            crate::config::Optimizer::Muon => {
                ReferenceOptimizer::Muon(ReferenceMuon::new(model, training)?)
            }
        })
    }
}

impl OptimizerStep for ReferenceOptimizer {
    fn step(&mut self, model: &ReferenceModel, grads: &Gradients, t: usize) -> Result<StepUpdate> {
        match self {
            ReferenceOptimizer::AdamW(o) => o.step(model, grads, t),
            ReferenceOptimizer::Muon(o) => o.step(model, grads, t),
        }
    }
    fn steps_done(&self) -> usize {
        match self {
            ReferenceOptimizer::AdamW(o) => o.steps_done(),
            ReferenceOptimizer::Muon(o) => o.steps_done(),
        }
    }
}
