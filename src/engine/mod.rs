//! The one place that joins hlo, mesh and runtime: compile traced functions on a mesh and
//! move sharded arrays between the host and the devices.

mod host;
mod program;
mod sharded;

pub use host::HostArray;
pub use program::{element_type, CompileHints, Input, Program, Slot};
pub use sharded::ShardedArray;

use crate::runtime::{Client, CompileCache, RuntimeError};
use vishwam_mesh::{Mesh, MeshError};

/// What can go wrong joining a program, a mesh and a runtime.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// From the PJRT runtime.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// From the mesh (bad spec, indivisible shape, ...).
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// From tracing or printing a program.
    #[error(transparent)]
    Hlo(#[from] vishwam_hlo::HloError),
    /// Shapes or counts that do not fit.
    #[error("{0}")]
    Shape(String),
}

/// A client, the mesh laid over its devices, and a compile cache.
pub struct Engine {
    /// The PJRT client.
    pub client: Client,
    /// The device mesh; its device ids are indices into the client's devices.
    pub mesh: Mesh,
    /// The compile cache.
    pub cache: CompileCache,
}

impl Engine {
    /// Joins a client and a mesh, checking that the mesh's devices exist.
    pub fn new(client: Client, mesh: Mesh, cache: CompileCache) -> Result<Engine, EngineError> {
        if let Some(&bad) = mesh
            .device_ids()
            .iter()
            .find(|&&d| d >= client.num_devices())
        {
            return Err(EngineError::Shape(format!(
                "mesh {mesh} uses device {bad}, but the client has {} devices",
                client.num_devices()
            )));
        }
        Ok(Engine {
            client,
            mesh,
            cache,
        })
    }
}
