//! The one place that joins hlo, mesh and runtime: compile traced functions on a mesh and
//! move sharded arrays between the host and the devices.
//!
//! In a multi-process job ([`Engine::for_job`]) every process compiles the same program
//! over the whole mesh, but holds, uploads and passes to the program only the shards of the
//! mesh positions on its own devices ([`MeshPlacement`]); it reads back replicated arrays and
//! arrays whose every distinct shard it holds, and downloads the distinct shards it owns for
//! sharded checkpoints ([`Engine::owned_shards`]).

mod host;
mod placement;
mod program;
mod sharded;

pub use host::HostArray;
pub use placement::MeshPlacement;
pub use program::{element_type, CompileHints, Input, Program, Slot};
pub use sharded::ShardedArray;

use crate::runtime::{Client, CompileCache, GlobalDevice, RuntimeError};
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
    /// A read of an array some of whose distinct shards lie only on other processes' devices.
    #[error(
        "process {process} cannot read this {shape:?} array split as {spec}: its distinct \
         shard {shard} lies only at mesh positions {positions:?}, on the devices of processes \
         {owners:?}; a process reads only replicated arrays and arrays whose every distinct \
         shard it holds (read the others through their owners, as sharded checkpoints do)"
    )]
    NotLocal {
        /// This process.
        process: usize,
        /// The array's global shape.
        shape: Vec<i64>,
        /// Its sharding, printed.
        spec: String,
        /// The distinct shard this process lacks.
        shard: usize,
        /// The mesh positions holding it.
        positions: Vec<usize>,
        /// Their processes.
        owners: Vec<usize>,
    },
}

/// A client, the mesh laid over its devices (this process's part of it), and a compile cache.
pub struct Engine {
    /// The PJRT client.
    pub client: Client,
    /// The device mesh; its device ids are indices into the client's devices (single process)
    /// or into the job's global device list ([`Engine::for_job`]).
    pub mesh: Mesh,
    /// The compile cache.
    pub cache: CompileCache,
    /// The mesh positions this process drives.
    placement: MeshPlacement,
}

impl Engine {
    /// Joins a client and a mesh, checking that the mesh's devices exist; this process drives
    /// every position.
    pub fn new(client: Client, mesh: Mesh, cache: CompileCache) -> Result<Engine, EngineError> {
        let ids: Vec<i32> = client
            .devices()
            .iter()
            .enumerate()
            .map(|(i, d)| d.id().unwrap_or(i as i32))
            .collect();
        let placement = MeshPlacement::single(&mesh, &ids)?;
        Ok(Engine {
            client,
            mesh,
            cache,
            placement,
        })
    }

    /// This process's engine in a multi-process job of `num_processes` whose global device
    /// list is `job` (the mesh's device ids index it): arrays hold buffers only for the mesh
    /// positions on this process's devices, and programs run with one argument list per
    /// addressable device.
    pub fn for_job(
        client: Client,
        mesh: Mesh,
        cache: CompileCache,
        job: &[GlobalDevice],
        num_processes: usize,
    ) -> Result<Engine, EngineError> {
        let process = usize::try_from(client.process_index()?).unwrap_or(usize::MAX);
        let ids = client
            .devices()
            .iter()
            .map(|d| d.id())
            .collect::<Result<Vec<i32>, _>>()?;
        let placement = MeshPlacement::of_job(&mesh, job, num_processes, process, &ids)?;
        Ok(Engine {
            client,
            mesh,
            cache,
            placement,
        })
    }

    /// The mesh positions this process drives.
    pub fn placement(&self) -> &MeshPlacement {
        &self.placement
    }
}
