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
pub mod muon;
mod muon_transform;
mod state;

pub use adamw::{AddDecayedWeights, ClipByGlobalNorm, ScaleByAdam, ScaleBySchedule};
pub use chain::{Chain, Partition};
pub use muon_transform::ScaleByMuon;
pub use state::OptState;

use super::state::StateSlot;
use crate::config::{Config, Optimizer};
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
    /// The state this stage keeps for `params` (each parameter's slot: type and sharding);
    /// none unless the stage says otherwise.
    fn init(&self, _params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
        OptState::default()
    }

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

/// A zero-initialised array of `kind` for each of `params`, typed and sharded like it (a
/// moment or momentum buffer).
pub fn zeros_of_kind(kind: &str, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
    let zeros = params
        .iter()
        .map(|(n, s)| (n.clone(), s.zeros_like()))
        .collect();
    OptState::of_kind(kind, zeros)
}

/// `params - updates`, parameter by parameter.
pub fn apply_updates(params: &TensorMap, updates: &TensorMap) -> Result<TensorMap> {
    params
        .iter()
        .map(|(name, p)| Ok((name.to_string(), p - updates.get(name)?)))
        .collect()
}

/// The optimiser `cfg.training` asks for, over the trained parameters `params` whose state
/// slots (types and shardings) are `slots`.
pub fn from_config(
    cfg: &Config,
    params: &[ParamSpec],
    slots: &BTreeMap<String, StateSlot>,
) -> Chain {
    let training = &cfg.training;
    let adamw = |names: &[String]| -> Chain {
        let decayed = params
            .iter()
            .filter(|p| p.decay && names.contains(&p.name))
            .map(|p| p.name.clone())
            .collect();
        Chain {
            stages: vec![
                Box::new(ScaleByAdam::from_config(training)),
                Box::new(AddDecayedWeights {
                    rate: training.weight_decay,
                    params: decayed,
                }),
                Box::new(ScaleBySchedule {
                    training: training.clone(),
                    peak: training.learning_rate,
                }),
            ],
        }
    };
    let mut stages: Vec<Box<dyn GradientTransformation>> = Vec::new();
    if training.max_grad_norm > 0.0 {
        stages.push(Box::new(ClipByGlobalNorm {
            max_norm: training.max_grad_norm,
        }));
    }
    match training.optimizer {
        Optimizer::AdamW => {
            let all: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
            stages.extend(adamw(&all).stages);
        }
        Optimizer::Muon => {
            let (matrices, rest): (Vec<&ParamSpec>, Vec<&ParamSpec>) =
                params.iter().partition(|p| muon::uses_muon(p));
            let names =
                |ps: &[&ParamSpec]| -> Vec<String> { ps.iter().map(|p| p.name.clone()).collect() };
            let (matrices, rest) = (names(&matrices), names(&rest));
            let specs = matrices
                .iter()
                .filter_map(|n| Some((n.clone(), slots.get(n)?.spec.clone())))
                .collect();
            let muon = ScaleByMuon::new(training, cfg.compute_dtype(), specs);
            stages.push(Box::new(Partition {
                groups: vec![
                    (
                        matrices,
                        Chain {
                            stages: vec![Box::new(muon)],
                        },
                    ),
                    (rest.clone(), adamw(&rest)),
                ],
            }));
        }
    }
    Chain { stages }
}
