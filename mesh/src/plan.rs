//! From the user's parallelism settings to a mesh and the two rule tables.
//!
//! [`ShardingPlan::build`] is the one entry point the engine calls: it derives the mesh
//! (`tpu.mesh_shape`, or the strategy's default when empty), checks it against the devices of
//! the platform, takes the strategy's preset rules, applies the user's overrides and rejects
//! combinations that make no sense:
//! - `fsdp` with `shard_weights = false` (a contradiction);
//! - a mesh axis larger than 1 that no rule uses (its devices would only repeat work), e.g.
//!   `model=2` under `data_parallel`;
//! - an override naming a mesh axis the mesh lacks (a typo would otherwise do nothing).
//!
//! Allowed but reported as [`PlanWarning`]s, for the caller to log: `tensor_parallel` or
//! `hybrid` without a `model` axis larger than 1 (the run is plain data parallel), and
//! `shard_weights = true` when the weight-sharding axis has size 1 and nothing else splits
//! parameters. Neither is reported on a single device.

use std::fmt;

use crate::error::DeviceNeed;
use crate::rules::check_no_repeats;
use crate::strategy::MODEL;
use crate::{
    DeviceStrategy, LogicalAxis, LogicalRules, Mesh, MeshError, PhysicalDevices, Resolution,
    RuleOverride, RuleTarget, Topology,
};

/// The user's parallelism settings as plain values (`tpu.*`, `optimization.shard_weights`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// `tpu.mesh_shape` in order; one size may be `-1`. Empty: the strategy's default mesh.
    pub mesh_shape: Vec<(String, i64)>,
    /// `tpu.device_strategy`.
    pub strategy: DeviceStrategy,
    /// `optimization.shard_weights`: split parameters over the strategy's weight axis.
    pub shard_weights: bool,
    /// Device ids in mesh order; `None` uses every device of the platform in id order. Given,
    /// it may name a subset of the devices.
    pub device_order: Option<Vec<usize>>,
    /// Rule overrides, applied in order on top of the strategy's presets.
    pub rule_overrides: Vec<RuleOverride>,
    /// The physical topology of the devices (`tpu.tpu_topology`): when given, it must hold
    /// exactly the mesh's devices, and it orders them ([`Topology::device_order`], or
    /// [`PhysicalDevices::device_order`] when `physical_devices` is given).
    /// Excludes `device_order`.
    pub topology: Option<Topology>,
    /// Where the devices sit, when they report it (TPUs); with `topology`, the topology is
    /// checked against it and the devices are ordered by their coordinates
    /// ([`PhysicalDevices::device_order`]). `None`: device `i` sits at index `i` of the
    /// topology, x fastest (the CPU plugin's virtual devices report no coordinates).
    pub physical_devices: Option<PhysicalDevices>,
}

impl MeshSettings {
    /// Settings with the strategy's default mesh, no explicit device order and no overrides.
    pub fn new(strategy: DeviceStrategy, shard_weights: bool) -> MeshSettings {
        MeshSettings {
            mesh_shape: Vec::new(),
            strategy,
            shard_weights,
            device_order: None,
            rule_overrides: Vec::new(),
            topology: None,
            physical_devices: None,
        }
    }
}

/// Something allowed but probably not what the user meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanWarning {
    /// A Megatron strategy on a mesh whose `model` axis is missing or of size 1.
    NoModelAxis {
        /// The strategy (`tensor_parallel` or `hybrid`).
        strategy: DeviceStrategy,
        /// The mesh, as `data=4 x model=1`.
        mesh: String,
    },
    /// `shard_weights` is on but nothing splits parameters on this mesh.
    WeightsNotSharded {
        /// The strategy.
        strategy: DeviceStrategy,
        /// The axis the strategy splits parameters over on this mesh.
        axis: String,
        /// The mesh, as `data=4 x fsdp=1`.
        mesh: String,
    },
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanWarning::NoModelAxis { strategy, mesh } => write!(
                f,
                "device_strategy {strategy} splits attention, MLP and vocabulary over mesh axis \
                 `model`, but mesh {mesh} has no `model` axis larger than 1: nothing is split \
                 Megatron-style and the run is data parallel"
            ),
            PlanWarning::WeightsNotSharded {
                strategy,
                axis,
                mesh,
            } => write!(
                f,
                "optimization.shard_weights is true, but mesh {mesh} has no `{axis}` axis larger \
                 than 1 for device_strategy {strategy} to split parameters over: every device \
                 keeps whole parameters"
            ),
        }
    }
}

/// A mesh plus the parameter and activation rules that place arrays on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardingPlan {
    /// The device mesh.
    pub mesh: Mesh,
    /// The strategy the rules come from.
    pub strategy: DeviceStrategy,
    /// Whether parameters are split over the weight axis.
    pub shard_weights: bool,
    /// Rules for parameters (and optimizer state, which follows its parameter).
    pub parameters: LogicalRules,
    /// Rules for activations, inputs and sharding constraints.
    pub activations: LogicalRules,
    /// Allowed oddities for the caller to log.
    pub warnings: Vec<PlanWarning>,
}

impl ShardingPlan {
    /// Builds the mesh and rules for `settings` on `available_devices` devices of `platform`.
    pub fn build(
        settings: &MeshSettings,
        platform: &str,
        available_devices: usize,
    ) -> Result<ShardingPlan, MeshError> {
        let strategy = settings.strategy;
        if strategy == DeviceStrategy::Fsdp && !settings.shard_weights {
            return Err(MeshError::FsdpWithoutShardWeights);
        }
        let mesh = build_mesh(settings, platform, available_devices)?;
        let mut parameters = strategy.parameter_rules(settings.shard_weights, &mesh);
        let mut activations = strategy.activation_rules();
        let mesh_axis_names = || {
            mesh.axes()
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
        };
        for o in &settings.rule_overrides {
            check_no_repeats(o.logical, &o.mesh_axes)?;
            if let Some(axis) = o.mesh_axes.iter().find(|a| mesh.axis_size(a).is_none()) {
                return Err(MeshError::UnknownRuleAxis {
                    logical: o.logical,
                    axis: axis.clone(),
                    mesh: mesh.to_string(),
                    axes: mesh_axis_names().join(", "),
                });
            }
        }
        parameters.apply_overrides(&settings.rule_overrides, RuleTarget::Parameters)?;
        activations.apply_overrides(&settings.rule_overrides, RuleTarget::Activations)?;
        for axis in mesh.axes() {
            if axis.size > 1
                && !parameters.uses_mesh_axis(&axis.name)
                && !activations.uses_mesh_axis(&axis.name)
            {
                return Err(MeshError::UnusedMeshAxis {
                    axis: axis.name.clone(),
                    size: axis.size,
                    strategy,
                });
            }
        }
        let warnings = plan_warnings(settings, &mesh, &parameters);
        Ok(ShardingPlan {
            mesh,
            strategy,
            shard_weights: settings.shard_weights,
            parameters,
            activations,
            warnings,
        })
    }

    /// How many ways a batch is split: the product of the sizes of the mesh axes that the
    /// activation rule for `batch` names (1 when the batch is replicated).
    pub fn batch_shards(&self) -> usize {
        self.activations
            .mesh_axes(LogicalAxis::Batch)
            .iter()
            .map(|axis| self.mesh.axis_size(axis).unwrap_or(1))
            .product()
    }

    /// The spec of a parameter (or its optimizer state) named by `logical`, with notes.
    pub fn parameter_spec(
        &self,
        logical: &[LogicalAxis],
        shape: &[i64],
    ) -> Result<Resolution, MeshError> {
        self.parameters
            .spec_for_explained(logical, shape, &self.mesh)
    }

    /// The spec of an activation or input named by `logical`, with notes.
    pub fn activation_spec(
        &self,
        logical: &[LogicalAxis],
        shape: &[i64],
    ) -> Result<Resolution, MeshError> {
        self.activations
            .spec_for_explained(logical, shape, &self.mesh)
    }
}

impl fmt::Display for ShardingPlan {
    /// Three lines for the log: mesh and devices, parameter rules, activation rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "mesh {} over devices {:?}; device_strategy {}; shard_weights {}",
            self.mesh,
            self.mesh.device_ids(),
            self.strategy,
            self.shard_weights
        )?;
        writeln!(f, "parameters: {}", self.parameters)?;
        write!(f, "activations: {}", self.activations)
    }
}

/// Builds the mesh of `settings` and checks it against the devices of `platform`.
pub fn build_mesh(
    settings: &MeshSettings,
    platform: &str,
    available_devices: usize,
) -> Result<Mesh, MeshError> {
    let device_count = settings
        .device_order
        .as_ref()
        .map_or(available_devices, Vec::len);
    let shape = if settings.mesh_shape.is_empty() {
        settings.strategy.default_mesh_shape(device_count)
    } else {
        settings.mesh_shape.clone()
    };
    let axes: Vec<(&str, i64)> = shape.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let need = |err: &MeshError| match err {
        MeshError::DeviceCount { mesh, needed, .. } => {
            Some((mesh.clone(), DeviceNeed::Exactly(*needed)))
        }
        MeshError::DeviceMultiple {
            mesh, multiple_of, ..
        } => Some((mesh.clone(), DeviceNeed::MultipleOf(*multiple_of))),
        _ => None,
    };
    // A mesh larger than the platform's devices: say how many the platform has and what to do.
    let too_few_devices = |e: MeshError| match need(&e) {
        Some((mesh, needed)) => MeshError::PlatformDeviceCount {
            hint: device_hint(platform, needed, available_devices),
            mesh,
            needed,
            platform: platform.to_string(),
            available: available_devices,
        },
        None => e,
    };
    if let Some(topology) = &settings.topology {
        if settings.device_order.is_some() {
            return Err(MeshError::TopologyWithDeviceOrder);
        }
        if topology.num_devices() != available_devices {
            return Err(MeshError::TopologyDeviceCount {
                topology: topology.to_string(),
                topology_devices: topology.num_devices(),
                devices: available_devices,
            });
        }
        let unordered = Mesh::new(&axes, available_devices).map_err(too_few_devices)?;
        let sizes: Vec<(&str, usize)> = unordered
            .axes()
            .iter()
            .map(|a| (a.name.as_str(), a.size))
            .collect();
        let order = match &settings.physical_devices {
            Some(physical) => physical.device_order(topology, &sizes)?,
            None => topology.device_order(&sizes)?,
        };
        let resolved: Vec<(&str, i64)> = sizes.iter().map(|&(n, s)| (n, s as i64)).collect();
        return Mesh::with_device_ids(&resolved, order);
    }
    match &settings.device_order {
        Some(order) => {
            if let Some(&device) = order.iter().find(|&&d| d >= available_devices) {
                return Err(MeshError::DeviceOutOfRange {
                    device,
                    platform: platform.to_string(),
                    available: available_devices,
                });
            }
            Mesh::with_device_ids(&axes, order.clone()).map_err(|e| match need(&e) {
                Some((mesh, needed)) => MeshError::DeviceOrderCount {
                    mesh,
                    needed,
                    listed: order.len(),
                },
                None => e,
            })
        }
        None => Mesh::new(&axes, available_devices).map_err(too_few_devices),
    }
}

/// What to do when a mesh does not fit: on `cpu` the device count is a flag (`--devices`);
/// on accelerators it is the hardware, so the mesh is what changes.
fn device_hint(platform: &str, needed: DeviceNeed, available: usize) -> String {
    let cpu = platform.eq_ignore_ascii_case("cpu");
    match (cpu, needed) {
        (true, DeviceNeed::Exactly(n)) => format!("pass --devices {n} or change tpu.mesh_shape"),
        (true, DeviceNeed::MultipleOf(k)) => {
            let n = available.div_ceil(k).max(1) * k;
            format!("pass --devices {n} or change tpu.mesh_shape")
        }
        (false, DeviceNeed::Exactly(n)) => format!(
            "change tpu.mesh_shape to fit {available} devices (one size may be -1) or run where \
             {n} {platform} devices are visible"
        ),
        (false, DeviceNeed::MultipleOf(_)) => format!(
            "change tpu.mesh_shape so that its fixed sizes divide {available}, or run where \
             {needed} are visible"
        ),
    }
}

/// The warnings of [`PlanWarning`], none on a single device.
fn plan_warnings(
    settings: &MeshSettings,
    mesh: &Mesh,
    parameters: &LogicalRules,
) -> Vec<PlanWarning> {
    let mut warnings = Vec::new();
    if mesh.num_devices() <= 1 {
        return warnings;
    }
    let strategy = settings.strategy;
    let model_splits = mesh.axis_size(MODEL).is_some_and(|s| s > 1);
    if strategy.splits_model() && !model_splits {
        warnings.push(PlanWarning::NoModelAxis {
            strategy,
            mesh: mesh.to_string(),
        });
    }
    let splits_parameters = parameters.entries().any(|(_, axes)| {
        axes.iter()
            .any(|a| mesh.axis_size(a).is_some_and(|s| s > 1))
    });
    if settings.shard_weights && !splits_parameters {
        warnings.push(PlanWarning::WeightsNotSharded {
            strategy,
            axis: strategy.weight_axis(mesh).to_string(),
            mesh: mesh.to_string(),
        });
    }
    warnings
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
