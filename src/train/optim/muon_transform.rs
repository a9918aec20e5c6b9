//! Muon as a transformation: momentum with Nesterov, Newton-Schulz orthogonalisation of each
//! matrix, Muon's shape factor and learning rate ([`super::muon::muon_update`]).

use super::muon::{muon_lr_traced, muon_update, MuonSettings};
use super::{GradientTransformation, OptState, UpdateContext};
use crate::config::{ComputeDtype, TrainingConfig};
use crate::train::state::StateSlot;
use std::collections::BTreeMap;
use vishwam_hlo::{PartitionSpec, Result, Tensor, TensorMap};

/// The Muon update of the block matrices, including its learning rate (no weight decay);
/// state: the momentum buffer of every matrix (`opt.momentum.<p>`, f32, sharded like it).
pub struct ScaleByMuon {
    /// Momentum, its warmup, the Newton-Schulz steps and their dtype.
    pub settings: MuonSettings,
    /// The schedule, with `muon_lr` as its peak.
    pub training: TrainingConfig,
    /// Each matrix's sharding: Newton-Schulz gathers the whole matrix and splits the result
    /// back this way.
    pub specs: BTreeMap<String, PartitionSpec>,
}

impl ScaleByMuon {
    /// Muon for a run of `training` computing in `compute`, over matrices sharded as `specs`.
    pub fn new(
        training: &TrainingConfig,
        compute: ComputeDtype,
        specs: BTreeMap<String, PartitionSpec>,
    ) -> ScaleByMuon {
        ScaleByMuon {
            settings: MuonSettings::new(training, compute),
            training: training.clone(),
            specs,
        }
    }
}

/// The state kind of the momentum buffers.
const MOMENTUM: &str = "momentum";

impl GradientTransformation for ScaleByMuon {
    fn init(&self, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
        let buffers = params
            .iter()
            .map(|(n, s)| (n.clone(), s.zeros_like()))
            .collect();
        OptState::of_kind(MOMENTUM, buffers)
    }

    fn update(
        &self,
        updates: TensorMap,
        state: &OptState<Tensor>,
        _params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let lr = muon_lr_traced(&self.training, &ctx.t);
        let (mut out, mut buffers) = (TensorMap::new(), BTreeMap::new());
        for (name, g) in updates {
            let spec = self.specs.get(&name).cloned().unwrap_or_default();
            let buffer = state.get(MOMENTUM, &name)?;
            let step = muon_update(&g, buffer, &lr, &ctx.t, &self.settings, &spec);
            out.insert(name.clone(), step.update);
            buffers.insert(name, step.momentum);
        }
        Ok((out, OptState::of_kind(MOMENTUM, buffers)))
    }
}
