//! The one error type of this crate.

use std::fmt;

use crate::{DeviceStrategy, LogicalAxis};

/// How many devices a mesh needs: an exact count, or a multiple when one axis is `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNeed {
    /// Exactly this many devices.
    Exactly(usize),
    /// Any positive multiple of this many devices.
    MultipleOf(usize),
}

impl fmt::Display for DeviceNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceNeed::Exactly(n) => write!(f, "{n} devices"),
            DeviceNeed::MultipleOf(n) => write!(f, "a multiple of {n} devices"),
        }
    }
}

/// What went wrong while building a mesh, a partition spec, rules or shards. Each variant's
/// fields are the values its message names.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeshError {
    /// `tpu.tpu_topology` is not sizes joined by `x`.
    #[error(
        "topology {topology:?} is not one to three positive sizes joined by `x`, such as \"2x2x2\""
    )]
    BadTopology { topology: String },
    /// The topology holds another number of devices than the mesh.
    #[error("topology {topology} holds {topology_devices} devices, but the mesh spans {devices}")]
    TopologyDeviceCount {
        topology: String,
        topology_devices: usize,
        devices: usize,
    },
    /// A mesh axis is no product of whole unassigned physical axes.
    #[error("mesh axis `{axis}` of size {size} is not a product of whole axes of topology \
             {topology} left over by the later mesh axes (as with JAX's create_device_mesh, physical \
             axes are not split); change tpu.mesh_shape or tpu.tpu_topology")]
    TopologyAxis {
        axis: String,
        size: usize,
        topology: String,
    },
    /// `tpu.tpu_topology` differs from the physical mesh the devices' coordinates form.
    #[error(
        "tpu.tpu_topology {topology} does not match the devices: {reported}, a {shape} \
         physical mesh; set tpu.tpu_topology to \"{shape}\" (or null)"
    )]
    TopologyMismatch {
        topology: String,
        reported: String,
        shape: String,
    },
    /// The coordinates the devices report do not form a physical mesh.
    #[error("the coordinates of the {kind} devices do not form a physical mesh: {reason}")]
    DeviceCoordinates { kind: String, reason: String },
    /// Both a topology and an explicit device order were given.
    #[error("a physical topology orders the devices itself; give it or an explicit device order, not both")]
    TopologyWithDeviceOrder,
    /// Two axes share a name.
    #[error("mesh axis `{axis}` appears twice")]
    DuplicateAxis { axis: String },
    /// An axis size is zero or negative (other than the single -1 placeholder).
    #[error("mesh axis `{axis}` has size {size}; sizes must be >= 1, or -1 for one axis to be filled from the device count")]
    BadAxisSize { axis: String, size: i64 },
    /// More than one axis asked to be filled from the device count.
    #[error("only one mesh axis may be -1; `{first}` and `{second}` both are")]
    TwoFills { first: String, second: String },
    /// The axis sizes do not multiply to the number of devices.
    #[error("mesh {mesh} needs {needed} devices; {available} are available")]
    DeviceCount {
        mesh: String,
        needed: usize,
        available: usize,
    },
    /// The fixed axis sizes do not divide the number of devices, so the -1 cannot be filled.
    #[error("mesh {mesh} needs a multiple of {multiple_of} devices; {available} are available")]
    DeviceMultiple {
        mesh: String,
        multiple_of: usize,
        available: usize,
    },
    /// The mesh does not fit the devices of the platform (built from the user's config).
    #[error("mesh {mesh} needs {needed}; platform {platform} has {available}: {hint}")]
    PlatformDeviceCount {
        mesh: String,
        needed: DeviceNeed,
        platform: String,
        available: usize,
        hint: String,
    },
    /// The mesh does not fit the explicit device order.
    #[error("mesh {mesh} needs {needed}; the device order lists {listed}: list that many device ids or change tpu.mesh_shape")]
    DeviceOrderCount {
        mesh: String,
        needed: DeviceNeed,
        listed: usize,
    },
    /// An explicit device order names a device the platform does not have.
    #[error("the device order names device {device}, but platform {platform} has {available} devices (ids 0 to {available} - 1)")]
    DeviceOutOfRange {
        device: usize,
        platform: String,
        available: usize,
    },
    /// An explicit device order names one device twice.
    #[error("device id {device} appears twice in the device order")]
    DuplicateDevice { device: usize },
    /// A spec names an axis the mesh does not have.
    #[error("partition spec names mesh axis `{axis}`, but the mesh has only [{axes}]")]
    UnknownAxis { axis: String, axes: String },
    /// A spec uses the same mesh axis on two dimensions.
    #[error("mesh axis `{axis}` shards more than one dimension of the same array")]
    AxisReused { axis: String },
    /// A spec has more entries than the array has dimensions.
    #[error("partition spec has {spec_rank} entries but the array has rank {rank}")]
    RankMismatch { spec_rank: usize, rank: usize },
    /// An array dimension does not divide evenly over its mesh axes.
    #[error("dimension {dim} of size {size} does not divide over mesh axes [{axes}] of total size {shards}")]
    Indivisible {
        dim: usize,
        size: i64,
        axes: String,
        shards: usize,
    },
    /// An array dimension is negative.
    #[error("dimension {dim} has negative size {size}; shapes must be static and >= 0")]
    NegativeDimension { dim: usize, size: i64 },
    /// A logical axis name is not one of the known ones.
    #[error("unknown logical axis `{name}`; valid logical axes are: {valid}")]
    UnknownLogicalAxis { name: String, valid: String },
    /// A device strategy name is not one of the known ones.
    #[error("unknown device_strategy `{name}`; valid strategies are: {valid}")]
    UnknownStrategy { name: String, valid: String },
    /// A rule override key has an unknown table prefix.
    #[error("rule override key `{key}` is not `<logical>`, `parameters.<logical>` or `activations.<logical>`")]
    BadRuleKey { key: String },
    /// One rule names the same mesh axis twice.
    #[error("the rule for logical axis {logical} names mesh axis `{axis}` twice")]
    RepeatedRuleAxis { logical: LogicalAxis, axis: String },
    /// A rule override names a mesh axis the mesh does not have.
    #[error("the rule override for logical axis {logical} names mesh axis `{axis}`, but mesh {mesh} has only [{axes}]")]
    UnknownRuleAxis {
        logical: LogicalAxis,
        axis: String,
        mesh: String,
        axes: String,
    },
    /// The number of logical names differs from the array's rank.
    #[error("logical axes [{logical}] name {count} dimensions but the array has rank {rank}")]
    LogicalRankMismatch {
        logical: String,
        count: usize,
        rank: usize,
    },
    /// `fsdp` was asked for with parameter sharding switched off.
    #[error("device_strategy fsdp shards parameters by definition, but optimization.shard_weights is false: set shard_weights to true, or use device_strategy data_parallel to keep whole parameters on every device")]
    FsdpWithoutShardWeights,
    /// A mesh axis larger than 1 that no rule uses: its devices would repeat the same work.
    #[error("mesh axis `{axis}`={size} is used by no rule of device_strategy {strategy}, so its {size} groups of devices would repeat the same work: set {axis}=1 in tpu.mesh_shape, choose a device_strategy that uses it, or map a logical axis to it with a rule override")]
    UnusedMeshAxis {
        axis: String,
        size: usize,
        strategy: DeviceStrategy,
    },
    /// Element size zero.
    #[error("element size must be at least 1 byte")]
    ZeroElementSize,
    /// A byte buffer has the wrong length for its shape and element size.
    #[error(
        "{what} holds {got} bytes; shape [{shape}] of {elem_size}-byte elements needs {expected}"
    )]
    ByteLength {
        what: String,
        shape: String,
        elem_size: usize,
        expected: usize,
        got: usize,
    },
    /// The number of shards differs from the number of devices of the layout.
    #[error("got {got} shards for a layout over {expected} devices")]
    ShardCount { expected: usize, got: usize },
    /// Two devices that should hold identical replicas hold different bytes.
    #[error("devices at mesh positions {first} and {other} should hold identical replicas of shard {shard} but differ")]
    ReplicaMismatch {
        shard: usize,
        first: usize,
        other: usize,
    },
    /// Resharding between layouts of different global shapes.
    #[error("cannot reshard an array of shape [{from}] into a layout of shape [{to}]")]
    ReshardShape { from: String, to: String },
    /// An array's byte size does not fit in memory addresses.
    #[error("an array of shape [{shape}] with {elem_size}-byte elements is too large to address")]
    SizeOverflow { shape: String, elem_size: usize },
    /// A Shardy open dimension lies past the array's rank.
    #[error("open dimension {dim} is out of range for an array of rank {rank}")]
    OpenDimOutOfRange { dim: usize, rank: usize },
    /// An axis is marked explicitly replicated but also shards a dimension.
    #[error("mesh axis `{axis}` cannot be both replicated and sharding a dimension")]
    ReplicatedAxisInUse { axis: String },
}
