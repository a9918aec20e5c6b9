#![warn(missing_docs)]
//! Device meshes with named axes, partition specs, logical-axis rules and Shardy text.
//!
//! A [`Mesh`] is an ordered list of named axes with sizes, laid over a list of device ids in
//! row-major order. A [`PartitionSpec`] says, for each dimension of an array, which mesh axes
//! split it. Both print as Shardy (`sdy`) MLIR text for the StableHLO printer.
//!
//! Intent is kept apart from the physical mesh (as in zml and MaxText): model code names the
//! dimensions of its arrays with [`LogicalAxis`]es, a strategy ([`DeviceStrategy`]) gives
//! preset [`LogicalRules`] from logical to mesh axes, users override entries, and
//! [`ShardingPlan::build`] joins the user's settings, the rules and the devices present.
//! [`ShardLayout`] gives the geometry of the result (each device's slice) and moves bytes:
//! scatter, gather and [`reshard`] between any two layouts.
//!
//! A physical [`Topology`] (`tpu.tpu_topology`) orders the devices over the mesh as JAX's
//! `mesh_utils.create_device_mesh` does: by the coordinates the devices report
//! ([`PhysicalDevices`], TPUs), or, for devices that report none (the CPU plugin's virtual
//! devices), by their index in the device list, x fastest.

mod error;
mod layout;
mod logical;
mod memory;
mod mesh;
mod physical;
mod plan;
mod rules;
mod sdy;
mod spec;
mod strategy;
mod topology;

pub use error::{DeviceNeed, MeshError};
pub use layout::{for_each_run, reshard, DimSlice, ShardLayout};
pub use logical::LogicalAxis;
pub use memory::{bytes_per_device, replication_factor, total_bytes_per_device};
pub use mesh::{Mesh, MeshAxis};
pub use physical::{DevicePosition, PhysicalDevices};
pub use plan::{build_mesh, MeshSettings, PlanWarning, ShardingPlan};
pub use rules::{LogicalRules, Resolution, ResolutionNote, RuleOverride, RuleTarget};
pub use sdy::{sdy_sharding_per_value, SdySharding};
pub use spec::{DimSharding, PartitionSpec};
pub use strategy::{DeviceStrategy, DATA, EXPERT, FSDP, MODEL};
pub use topology::Topology;
