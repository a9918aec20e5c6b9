//! AdamW of docs/model.md: global-norm clipping, bias-corrected moments, decoupled decay;
//! its per-parameter step is shared with [`super::ReferenceMuon`]'s AdamW parameters.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::error::{ReferenceError, Result};
use super::model::{Gradients, ReferenceModel};
use super::params::ParameterSpec;
use super::schedule::lr_at;
use crate::config::TrainingConfig;

/// AdamW state: first and second moments per parameter, in the model's dtype.
#[derive(Debug)]
pub struct ReferenceAdamW {
    training: TrainingConfig,
    first_moments: BTreeMap<String, Tensor>,
    second_moments: BTreeMap<String, Tensor>,
    steps_done: usize,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepUpdate {
    /// The step (from 1).
    pub t: usize,
    /// `lr(t)`.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 when not clipped).
    pub clip_scale: f64,
    /// Muon's rate at `t` under `training.optimizer = "muon"` (`lr` is then AdamW's).
    pub muon_lr: Option<f64>,
}

impl ReferenceAdamW {
    /// Zero moments for every parameter of `model`, hyperparameters from `training`.
    pub fn new(model: &ReferenceModel, training: &TrainingConfig) -> Result<ReferenceAdamW> {
        let zeros = || -> Result<BTreeMap<String, Tensor>> {
            model
                .parameters()
                .iter()
                .map(|(name, var)| Ok((name.clone(), var.as_tensor().zeros_like()?)))
                .collect()
        };
        Ok(ReferenceAdamW {
            training: training.clone(),
            first_moments: zeros()?,
            second_moments: zeros()?,
            steps_done: 0,
        })
    }

    /// The last step applied (0 before the first).
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// The first moment `m` of a parameter.
    pub fn first_moment(&self, name: &str) -> Option<&Tensor> {
        self.first_moments.get(name)
    }

    /// The second moment `v` of a parameter.
    pub fn second_moment(&self, name: &str) -> Option<&Tensor> {
        self.second_moments.get(name)
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
        let grad_norm = grads.global_norm()?;
        let clip_scale = clip_scale(grad_norm, c);
        for spec in model.specs() {
            let name = &spec.name;
            let grad = checked_gradient(grads, spec)?;
            let (m, v) = match (self.first_moments.get(name), self.second_moments.get(name)) {
                (Some(m), Some(v)) => (m, v),
                _ => return Err(ReferenceError::MissingGradient { name: name.clone() }),
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
            muon_lr: None,
        })
    }
}

/// The factor of docs/model.md's global-norm clipping: `min(1, max_grad_norm / (norm +
/// 1e-6))`, or 1 when `max_grad_norm` is 0.
pub(crate) fn clip_scale(grad_norm: f64, c: &TrainingConfig) -> f64 {
    if c.max_grad_norm > 0.0 {
        (c.max_grad_norm / (grad_norm + 1e-6)).min(1.0)
    } else {
        1.0
    }
}

/// The gradient of `spec`'s parameter, which must exist and have its shape.
pub(crate) fn checked_gradient<'a>(
    grads: &'a Gradients,
    spec: &ParameterSpec,
) -> Result<&'a Tensor> {
    let name = &spec.name;
    let grad = grads
        .get(name)
        .ok_or_else(|| ReferenceError::MissingGradient { name: name.clone() })?;
    if grad.dims() != spec.shape.as_slice() {
        return Err(ReferenceError::ShapeMismatch {
            name: format!("gradient of {name}"),
            expected: spec.shape.clone(),
            got: grad.dims().to_vec(),
        });
    }
    Ok(grad)
}

/// docs/model.md's AdamW step `t` for one parameter of `model`, with its (unclipped)
/// gradient and moments `(m, v)`: sets the parameter and returns the new moments.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw_parameter(
    model: &ReferenceModel,
    spec: &ParameterSpec,
    grad: &Tensor,
    (m, v): (&Tensor, &Tensor),
    clip_scale: f64,
    lr: f64,
    t: usize,
    c: &TrainingConfig,
) -> Result<(Tensor, Tensor)> {
    let (b1, b2) = (c.adam_beta1, c.adam_beta2);
    let bias1 = 1.0 - b1.powi(t as i32);
    let bias2 = 1.0 - b2.powi(t as i32);
    let theta = model.parameters()[&spec.name].as_tensor();
    let g = grad.affine(clip_scale, 0.0)?;
    let m = (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
    let v = (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
    let m_hat = (&m / bias1)?;
    let v_hat = (&v / bias2)?;
    let mut update = m_hat.div(&(v_hat.sqrt()? + c.adam_eps)?)?;
    if spec.decay {
        update = (update + theta.affine(c.weight_decay, 0.0)?)?;
    }
    let new_theta = (theta - update.affine(lr, 0.0)?)?;
    model.parameters()[&spec.name].set(&new_theta)?;
    Ok((m, v))
}
