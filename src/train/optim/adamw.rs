//! The stages of AdamW (docs/model.md): global-norm clipping, Adam's bias-corrected moments,
//! decoupled weight decay and the learning-rate schedule.

use super::{zeros_of_kind, GradientTransformation, OptState, UpdateContext};
use crate::config::TrainingConfig;
use crate::train::schedule::lr_traced;
use crate::train::state::StateSlot;
use std::collections::BTreeMap;
use vishwam_hlo::{Result, Tensor, TensorMap};

/// Scales every update by `min(1, max_norm / (global norm + 1e-6))`; no state.
pub struct ClipByGlobalNorm {
    /// The largest global norm let through.
    pub max_norm: f64,
}

impl GradientTransformation for ClipByGlobalNorm {
    fn update(
        &self,
        updates: TensorMap,
        _state: &OptState<Tensor>,
        _params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let clip = (self.max_norm / (&ctx.grad_norm + 1e-6)).minimum(1.0);
        let clipped = updates.into_iter().map(|(n, u)| (n, u * &clip)).collect();
        Ok((clipped, OptState::default()))
    }
}

/// Adam's direction `m_hat / (sqrt(v_hat) + eps)` from bias-corrected moments; state: the
/// moments `m` and `v` of every parameter (f32, sharded like it).
pub struct ScaleByAdam {
    /// Decay of the first moment.
    pub b1: f64,
    /// Decay of the second moment.
    pub b2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
}

impl ScaleByAdam {
    /// `adam_beta1`, `adam_beta2` and `adam_eps` of `training`.
    pub fn from_config(training: &TrainingConfig) -> ScaleByAdam {
        ScaleByAdam {
            b1: training.adam_beta1,
            b2: training.adam_beta2,
            eps: training.adam_eps,
        }
    }
}

/// `1 - beta^t`.
fn bias_correction(beta: f64, t: &Tensor) -> Tensor {
    t.graph().full(beta, t.ty()).pow(t) * -1.0 + 1.0
}

impl GradientTransformation for ScaleByAdam {
    fn init(&self, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
        let mut state = zeros_of_kind("m", params);
        state.merge(zeros_of_kind("v", params));
        state
    }

    fn update(
        &self,
        updates: TensorMap,
        state: &OptState<Tensor>,
        _params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let (b1, b2) = (self.b1, self.b2);
        let (bc1, bc2) = (bias_correction(b1, &ctx.t), bias_correction(b2, &ctx.t));
        let (mut out, mut m_new, mut v_new) = (TensorMap::new(), BTreeMap::new(), BTreeMap::new());
        for (name, g) in updates {
            let m1 = state.get("m", &name)? * b1 + &g * (1.0 - b1);
            let v1 = state.get("v", &name)? * b2 + g.square() * (1.0 - b2);
            out.insert(
                name.clone(),
                (&m1 / &bc1) / ((&v1 / &bc2).sqrt() + self.eps),
            );
            m_new.insert(name.clone(), m1);
            v_new.insert(name, v1);
        }
        let mut next = OptState::of_kind("m", m_new);
        next.merge(OptState::of_kind("v", v_new));
        Ok((out, next))
    }
}

/// Decoupled weight decay: adds `rate * param` to the updates of `params`; no state.
pub struct AddDecayedWeights {
    /// The decay rate (`training.weight_decay`).
    pub rate: f64,
    /// The parameters it applies to (matrices other than the embedding).
    pub params: Vec<String>,
}

impl GradientTransformation for AddDecayedWeights {
    fn update(
        &self,
        updates: TensorMap,
        _state: &OptState<Tensor>,
        params: &TensorMap,
        _ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let out = updates
            .into_iter()
            .map(|(name, u)| {
                if self.rate > 0.0 && self.params.contains(&name) {
                    Ok((name.clone(), u + params.get(&name)? * self.rate))
                } else {
                    Ok((name, u))
                }
            })
            .collect::<Result<_>>()?;
        Ok((out, OptState::default()))
    }
}

/// Multiplies the updates by the learning rate of step `t`: the run's schedule (warmup,
/// then cosine, linear or constant) scaled to peak at `peak`; no state.
pub struct ScaleBySchedule {
    /// The schedule's settings.
    pub training: TrainingConfig,
    /// Its peak learning rate.
    pub peak: f64,
}

impl ScaleBySchedule {
    /// The learning rate of step `t` (f32 scalar).
    pub fn lr(&self, t: &Tensor) -> Tensor {
        let cfg = TrainingConfig {
            learning_rate: self.peak,
            ..self.training.clone()
        };
        lr_traced(&cfg, t)
    }
}

impl GradientTransformation for ScaleBySchedule {
    fn update(
        &self,
        updates: TensorMap,
        _state: &OptState<Tensor>,
        _params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let lr = self.lr(&ctx.t);
        let out = updates.into_iter().map(|(n, u)| (n, u * &lr)).collect();
        Ok((out, OptState::default()))
    }
}
