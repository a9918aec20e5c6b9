//! Device meshes with named axes, partition specs, logical-axis rules and Shardy text.
//!
//! A [`Mesh`] is an ordered list of named axes with sizes, laid over a list of device ids in
//! row-major order. A [`PartitionSpec`] says, for each dimension of an array, which mesh axes
//! split it. Both print as Shardy (`sdy`) MLIR text for the StableHLO printer.

mod error;
mod mesh;
mod spec;

pub use error::MeshError;
pub use mesh::{Mesh, MeshAxis};
pub use spec::{DimSharding, PartitionSpec};
