//! FP8 in the train step: the delayed-scaling amax histories in the train state, the
//! statistics probes of each micro-batch, and the saturation metrics.
//!
//! Each layer has [`FP8_ROW_COUNT`] rows of FP8 statistics (`crate::model::FP8_ROWS`: 4
//! projection inputs, 7 weights, 7 output gradients; projections merged into one GEMM share
//! their weight's and their gradient's scale, see `crate::model::projection`). With the delayed recipe the state holds, per
//! layer, `fp8.layers.{i}.amax_history: f32[R, amax_history_len]`, newest step first
//! (replicated, donated, checkpointed like every slot). A step scales each tensor by the
//! largest amax of its row, uses the same scales for all its micro-batches, takes the largest
//! amax over the micro-batches, and rolls it into the history when the update is applied (a
//! skipped step leaves it as it was). Scales that do not depend on the tensor itself let XLA
//! quantise inside the producing fusion. While the histories are empty (a fresh run) the
//! trainer runs [`build_fp8_bootstrap_step`] instead: the same step with every tensor scaled
//! by its own amax, which fills the histories. With the current recipe there is no state:
//! every tensor is always scaled by its own amax.
//!
//! Statistics leave the model as the gradients of zero probes (`crate::model::fp8`): per
//! layer an `f32[R, 2]` of `[amax, saturated count]` per row.

use super::distill::DistillContext;
use super::layout::StepLayout;
use super::precision::{Fp8Policy, Fp8Scaling};
use super::state::{amax_history_name, SlotInit, StateSlot};
use super::step::trace_train_step;
use crate::config::Config;
use crate::engine::HostArray;
use crate::model::{
    fp8_amax_name, fp8_probe_name, fp8_stats_type, FP8_FORWARD_ROWS, FP8_ROW_COUNT,
};
use std::collections::BTreeMap;
use vishwam_hlo::{DType, Func, Graph, PartitionSpec, Result, Tensor, TensorMap, TensorType};
use vishwam_mesh::ShardingPlan;

/// The train step for the first step of a delayed-scaling FP8 run, while the amax histories
/// are empty: each FP8 tensor is scaled by its own amax; the state and outputs are those of
/// [`super::build_train_step`] (or the distillation step of `distill`), which takes over once
/// the histories hold a step.
pub fn build_fp8_bootstrap_step(
    cfg: &Config,
    plan: &ShardingPlan,
    layout: &StepLayout,
    distill: Option<&DistillContext>,
) -> Result<Func> {
    trace_train_step(
        cfg,
        plan,
        layout,
        "train_step_fp8_bootstrap",
        false,
        distill,
    )
}

/// The FP8 part of a train step for a model of `layers` layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Step {
    /// Formats and scaling.
    pub policy: Fp8Policy,
    /// Layers of the model.
    pub layers: usize,
}

impl Fp8Step {
    /// The steps of history kept, or `None` with current scaling.
    pub fn history_len(&self) -> Option<usize> {
        match self.policy.scaling {
            Fp8Scaling::Delayed { history_len } => Some(history_len),
            Fp8Scaling::Current => None,
        }
    }

    fn history_type(&self, len: usize) -> TensorType {
        TensorType::new(DType::F32, &[FP8_ROW_COUNT as i64, len as i64])
    }

    /// The state's amax histories (delayed scaling: one per layer, all zero at step 0;
    /// current scaling: none).
    pub fn history_slots(&self) -> Vec<StateSlot> {
        let Some(len) = self.history_len() else {
            return Vec::new();
        };
        (0..self.layers)
            .map(|_| StateSlot {
                ty: self.history_type(len),
                spec: PartitionSpec::default(),
                init: SlotInit::Zeros,
            })
            .collect()
    }

    /// True when `state` (host arrays by slot name) has delayed-scaling histories that are
    /// all zero, so the next step must be a bootstrap step.
    pub fn needs_bootstrap(&self, state: &BTreeMap<String, HostArray>) -> bool {
        self.history_len().is_some()
            && (0..self.layers).all(|i| {
                state
                    .get(&amax_history_name(i))
                    .is_some_and(|h| h.data.iter().all(|&b| b == 0))
            })
    }

    /// The model's scaling inputs from the amax `histories` of the state: per layer the
    /// largest amax of each row's history (`fp8.layers.{i}.amax`); none with current scaling.
    pub fn scaling_inputs(&self, histories: &[Tensor]) -> TensorMap {
        histories
            .iter()
            .enumerate()
            .map(|(i, history)| (fp8_amax_name(i), history.max(&[1], false)))
            .collect()
    }

    /// Zero statistics probes for one micro-batch in layer order, with the names the model
    /// reads them by.
    pub fn probes(&self, g: &Graph) -> Vec<(String, Tensor)> {
        (0..self.layers)
            .map(|i| (fp8_probe_name(i), g.zeros(&fp8_stats_type())))
            .collect()
    }

    /// Zero statistics, one per layer, to accumulate micro-batches into.
    pub fn zero_stats(&self, g: &Graph) -> Vec<Tensor> {
        (0..self.layers)
            .map(|_| g.zeros(&fp8_stats_type()))
            .collect()
    }

    /// The amax histories after the step: each with this step's amax in front and the oldest
    /// dropped; unchanged where `applied` (an `i1` scalar) is false.
    pub fn next_histories(
        &self,
        histories: &[Tensor],
        stats: &[Tensor],
        applied: &Tensor,
    ) -> Vec<Tensor> {
        let Some(len) = self.history_len() else {
            return Vec::new();
        };
        histories
            .iter()
            .zip(stats)
            .map(|(history, layer_stats)| {
                let amax = layer_stats.slice_axis(1, 0, 1);
                // A non-finite amax (an overflowing step) must not poison later scales.
                let amax = amax.lt(f64::INFINITY).select(&amax, 0.0);
                let rolled = if len == 1 {
                    amax
                } else {
                    amax.concat(&[history.slice_axis(1, 0, len as i64 - 1)], 1)
                };
                applied.select(&rolled, history)
            })
            .collect()
    }

    /// Elements clipped to the FP8 range in the step, summed over layers: (forward operands,
    /// backward gradients), f32 scalars of `g`.
    pub fn saturation(g: &Graph, stats: &[Tensor]) -> (Tensor, Tensor) {
        let sum = |lo: usize, hi: usize| {
            stats.iter().fold(g.scalar(0.0, DType::F32), |acc, s| {
                acc + s.slice(&[lo as i64, 1], &[hi as i64, 2], &[1, 1]).sum_all()
            })
        };
        (
            sum(0, FP8_FORWARD_ROWS),
            sum(FP8_FORWARD_ROWS, FP8_ROW_COUNT),
        )
    }
}

/// Combines the statistics of two micro-batches: the larger amax and the summed counts.
pub fn combine_stats(a: &Tensor, b: &Tensor) -> Tensor {
    let amax = a.slice_axis(1, 0, 1).maximum(b.slice_axis(1, 0, 1));
    let saturated = a.slice_axis(1, 1, 2) + b.slice_axis(1, 1, 2);
    amax.concat(&[saturated], 1)
}
