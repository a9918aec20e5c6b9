//! Device strategies (`tpu.device_strategy`): the default mesh of each and its preset rules.
//!
//! | strategy          | default mesh            | batch (activations)     | parameters                                  |
//! |-------------------|-------------------------|-------------------------|---------------------------------------------|
//! | `data_parallel`   | `data=-1`               | `data`, `expert`        | replicated; `embed -> data` if shard_weights |
//! | `fsdp`            | `fsdp=-1`               | `data`, `fsdp`, `expert`| `embed -> fsdp` (or `data` if no fsdp axis) |
//! | `tensor_parallel` | `model=-1`              | `data`, `expert`        | Megatron: heads, kv_heads, mlp, vocab -> `model`; `embed -> data` if shard_weights |
//! | `hybrid`          | `data=-1 x model=M`     | `data`, `fsdp`, `expert`| Megatron on `model`; `embed -> fsdp` (or `data`) if shard_weights |
//!
//! Megatron strategies split activations' heads, kv_heads, mlp and vocab over `model` too.
//! Parameter presets turn on the largest-dimension fallback: a parameter without a divisible
//! `embed` dimension puts the embed axis on its largest divisible dimension (see
//! [`crate::LogicalRules`]). Everywhere, `expert -> expert`. `M` is the largest divisor of the device count that is at
//! most its square root (8 devices: `data=4 x model=2`; 16: `4 x 4`; 2: `2 x 1`).
//!
//! `optimization.shard_weights` means "split parameters (and with them optimizer state) over
//! the weight-sharding axis" (ZeRO-3 / FSDP): [`DeviceStrategy::weight_axis`]. It never
//! removes the Megatron splits of `model` or the `expert` splits, which are how those
//! strategies compute, not a memory option. `fsdp` with `shard_weights = false` is a
//! contradiction and is rejected by [`crate::ShardingPlan::build`].

use std::fmt;
use std::str::FromStr;

use crate::{LogicalAxis, LogicalRules, Mesh, MeshError};

/// Mesh axis name for pure data parallelism.
pub const DATA: &str = "data";
/// Mesh axis name for fully-sharded data parallelism (batch and parameters split).
pub const FSDP: &str = "fsdp";
/// Mesh axis name for tensor (Megatron) parallelism.
pub const MODEL: &str = "model";
/// Mesh axis name for expert parallelism.
pub const EXPERT: &str = "expert";

/// How a program is spread over devices (`tpu.device_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStrategy {
    /// Full parameters on every device, batch split over `data`.
    DataParallel,
    /// Batch and parameters split (ZeRO-3): parameters gathered per layer when used.
    Fsdp,
    /// Megatron-style column/row splits of attention, MLP and vocabulary over `model`.
    TensorParallel,
    /// Data (and optionally fsdp) parallelism combined with Megatron splits over `model`.
    Hybrid,
}

impl DeviceStrategy {
    /// Every strategy, in documentation order.
    pub const ALL: [DeviceStrategy; 4] = [
        DeviceStrategy::DataParallel,
        DeviceStrategy::Fsdp,
        DeviceStrategy::TensorParallel,
        DeviceStrategy::Hybrid,
    ];

    /// The name users write in `tpu.device_strategy`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStrategy::DataParallel => "data_parallel",
            DeviceStrategy::Fsdp => "fsdp",
            DeviceStrategy::TensorParallel => "tensor_parallel",
            DeviceStrategy::Hybrid => "hybrid",
        }
    }

    /// The mesh used when `tpu.mesh_shape` is empty, for `num_devices` devices.
    pub fn default_mesh_shape(self, num_devices: usize) -> Vec<(String, i64)> {
        match self {
            DeviceStrategy::DataParallel => vec![(DATA.into(), -1)],
            DeviceStrategy::Fsdp => vec![(FSDP.into(), -1)],
            DeviceStrategy::TensorParallel => vec![(MODEL.into(), -1)],
            DeviceStrategy::Hybrid => {
                vec![
                    (DATA.into(), -1),
                    (MODEL.into(), hybrid_model_size(num_devices) as i64),
                ]
            }
        }
    }

    /// Whether the strategy splits attention, MLP and vocabulary over `model` (Megatron).
    pub fn splits_model(self) -> bool {
        matches!(
            self,
            DeviceStrategy::TensorParallel | DeviceStrategy::Hybrid
        )
    }

    /// The mesh axes that split the batch of activations, major first.
    pub fn batch_axes(self) -> &'static [&'static str] {
        match self {
            DeviceStrategy::DataParallel | DeviceStrategy::TensorParallel => &[DATA, EXPERT],
            DeviceStrategy::Fsdp | DeviceStrategy::Hybrid => &[DATA, FSDP, EXPERT],
        }
    }

    /// The mesh axis parameters are split over when weights are sharded on `mesh`:
    /// `fsdp` for `fsdp`/`hybrid` when the mesh has an axis of that name, else `data`.
    pub fn weight_axis(self, mesh: &Mesh) -> &'static str {
        match self {
            DeviceStrategy::Fsdp | DeviceStrategy::Hybrid if mesh.axis_size(FSDP).is_some() => FSDP,
            _ => DATA,
        }
    }

    /// The preset parameter rules of this strategy on `mesh`.
    pub fn parameter_rules(self, shard_weights: bool, mesh: &Mesh) -> LogicalRules {
        let mut rules = LogicalRules::unsharded();
        if self.splits_model() {
            for axis in [
                LogicalAxis::Heads,
                LogicalAxis::KvHeads,
                LogicalAxis::Mlp,
                LogicalAxis::Vocab,
            ] {
                rules.set(axis, &[MODEL]);
            }
        }
        rules.set(LogicalAxis::Expert, &[EXPERT]);
        if shard_weights {
            rules.set(LogicalAxis::Embed, &[self.weight_axis(mesh)]);
        }
        rules.set_largest_dim_fallback(true);
        rules
    }

    /// The preset activation rules of this strategy.
    pub fn activation_rules(self) -> LogicalRules {
        let mut rules = LogicalRules::unsharded();
        rules.set(LogicalAxis::Batch, self.batch_axes());
        if self.splits_model() {
            for axis in [
                LogicalAxis::Heads,
                LogicalAxis::KvHeads,
                LogicalAxis::Mlp,
                LogicalAxis::Vocab,
            ] {
                rules.set(axis, &[MODEL]);
            }
        }
        rules.set(LogicalAxis::Expert, &[EXPERT]);
        rules
    }
}

/// `model` size of the default hybrid mesh: the largest divisor of `n` not above `sqrt(n)`.
fn hybrid_model_size(n: usize) -> usize {
    (1..=n.max(1))
        .take_while(|d| d * d <= n)
        .filter(|d| n.is_multiple_of(*d))
        .last()
        .unwrap_or(1)
}

impl fmt::Display for DeviceStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceStrategy {
    type Err = MeshError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        DeviceStrategy::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| MeshError::UnknownStrategy {
                name: name.to_string(),
                valid: DeviceStrategy::ALL.map(|s| s.as_str()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_lists_valid() {
        for s in DeviceStrategy::ALL {
            assert_eq!(s.as_str().parse::<DeviceStrategy>().unwrap(), s);
        }
        assert_eq!(
            "zero3".parse::<DeviceStrategy>().unwrap_err().to_string(),
            "unknown device_strategy `zero3`; valid strategies are: data_parallel, fsdp, \
             tensor_parallel, hybrid"
        );
    }

    #[test]
    fn hybrid_default_splits_devices_near_square() {
        let sizes: Vec<usize> = [1, 2, 3, 4, 6, 8, 12, 16, 32]
            .map(hybrid_model_size)
            .to_vec();
        assert_eq!(sizes, vec![1, 1, 1, 2, 2, 2, 3, 4, 4]);
        assert_eq!(
            DeviceStrategy::Hybrid.default_mesh_shape(8),
            vec![("data".to_string(), -1), ("model".to_string(), 2)]
        );
    }

    #[test]
    fn weight_axis_prefers_fsdp_when_present() {
        let data_only = Mesh::new(&[("data", 4)], 4).unwrap();
        let with_fsdp = Mesh::new(&[("data", 2), ("fsdp", 2)], 4).unwrap();
        assert_eq!(DeviceStrategy::Fsdp.weight_axis(&data_only), "data");
        assert_eq!(DeviceStrategy::Fsdp.weight_axis(&with_fsdp), "fsdp");
        assert_eq!(DeviceStrategy::Hybrid.weight_axis(&with_fsdp), "fsdp");
        assert_eq!(DeviceStrategy::DataParallel.weight_axis(&with_fsdp), "data");
        assert_eq!(
            DeviceStrategy::TensorParallel.weight_axis(&with_fsdp),
            "data"
        );
    }
}
