//! Optimisers as gradient transformations (the optax shape): each has
//! `init(params) -> state` and `update(updates, state, params) -> (updates, state)`, and a
//! chain of them is one. AdamW is `clip -> scale_by_adam -> add_decayed_weights ->
//! scale_by_schedule`; Muon ([`muon`]) orthogonalises the momentum of the block matrices and
//! leaves the rest to the same AdamW chain ([`Partition`]).
//!
//! Updates are descent directions: [`apply_updates`] subtracts them from the parameters.
//! Everything here is traced into the train step.

mod adamw;
mod chain;
mod state;

pub use adamw::{AddDecayedWeights, ClipByGlobalNorm, ScaleByAdam, ScaleBySchedule};
pub use chain::{Chain, Partition};
pub use state::OptState;

use super::state::StateSlot;
use crate::config::TrainingConfig;
use crate::model::ParamSpec;
use std::collections::BTreeMap;
use vishwam_hlo::{Result, Tensor, TensorMap};

/// What every transformation of one step may read.
pub struct UpdateContext {
    /// The step being taken, from 1 (f32 scalar).
    pub t: Tensor,
    /// The global norm of the (unclipped) gradients (f32 scalar).
    pub grad_norm: Tensor,
}

/// One stage of an optimiser.
pub trait GradientTransformation {
    /// The state this stage keeps for `params` (each parameter's slot: type and sharding).
    fn init(&self, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot>;

    /// The transformed `updates` (one per parameter of `params`) and this stage's new state
    /// (only its own kinds of `state`).
    fn update(
        &self,
        updates: TensorMap,
        state: &OptState<Tensor>,
        params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)>;
}

/// `params - updates`, parameter by parameter.
pub fn apply_updates(params: &TensorMap, updates: &TensorMap) -> Result<TensorMap> {
    params
        .iter()
        .map(|(name, p)| Ok((name.to_string(), p - updates.get(name)?)))
        .collect()
}

/// The optimiser `training` asks for, over the trained parameters `params`.
pub fn from_config(training: &TrainingConfig, params: &[ParamSpec]) -> Chain {
    let adamw = |names: Vec<String>| -> Vec<Box<dyn GradientTransformation>> {
        let decayed = params
            .iter()
            .filter(|p| p.decay && names.contains(&p.name))
            .map(|p| p.name.clone())
            .collect();
        vec![
            Box::new(ScaleByAdam::from_config(training)),
            Box::new(AddDecayedWeights {
                rate: training.weight_decay,
                params: decayed,
            }),
            Box::new(ScaleBySchedule {
                training: training.clone(),
                peak: training.learning_rate,
            }),
        ]
    };
    let mut stages: Vec<Box<dyn GradientTransformation>> = Vec::new();
    if training.max_grad_norm > 0.0 {
        stages.push(Box::new(ClipByGlobalNorm {
            max_norm: training.max_grad_norm,
        }));
    }
    let all: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    stages.extend(adamw(all));
    Chain { stages }
}
