//! AdamW of docs/model.md: global-norm clipping, bias-corrected moments, decoupled decay.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::error::{ReferenceError, Result};
use super::model::{Gradients, ReferenceModel};
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
        let (b1, b2) = (c.adam_beta1, c.adam_beta2);
        let lr = lr_at(t, c);
        let grad_norm = grads.global_norm()?;
        let clip_scale = if c.max_grad_norm > 0.0 {
            (c.max_grad_norm / (grad_norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let bias1 = 1.0 - b1.powi(t as i32);
        let bias2 = 1.0 - b2.powi(t as i32);
        for spec in model.specs() {
            let name = &spec.name;
            let missing = || ReferenceError::MissingGradient { name: name.clone() };
            let grad = grads.get(name).ok_or_else(missing)?;
            let (m, v) = match (self.first_moments.get(name), self.second_moments.get(name)) {
                (Some(m), Some(v)) => (m, v),
                _ => return Err(missing()),
            };
            if grad.dims() != spec.shape.as_slice() {
                return Err(ReferenceError::ShapeMismatch {
                    name: format!("gradient of {name}"),
                    expected: spec.shape.clone(),
                    got: grad.dims().to_vec(),
                });
            }
            let theta = model.parameters()[name].as_tensor();
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
            model.parameters()[name].set(&new_theta)?;
            self.first_moments.insert(name.clone(), m);
            self.second_moments.insert(name.clone(), v);
        }
        self.steps_done = t;
        Ok(StepUpdate {
            t,
            lr,
            grad_norm,
            clip_scale,
        })
    }
}
