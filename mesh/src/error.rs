//! The one error type of this crate.

/// What went wrong while building a mesh or a partition spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeshError {
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
}
