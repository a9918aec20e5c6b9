//! Checkpoints of a multi-process run: every process writes the distinct shards it owns, and
//! process 0 commits the manifest last, so that a checkpoint is complete or absent.
//!
//! (Contract for the two branches that build multi-process runs; the format, the writer and
//! the reader are being written on the `mp-ckpt` branch.)

use super::TrainError;
use crate::config::BatchGeometry;
use crate::runtime::ElementType;
use std::path::{Path, PathBuf};

/// One distinct shard of one state array, as the process that owns it holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalShard {
    /// The state array's name (as in [`super::Checkpoint::state`]).
    pub name: String,
    /// Element type.
    pub element_type: ElementType,
    /// Shape of the whole array.
    pub global_shape: Vec<i64>,
    /// Index of the shard's first element in each dimension of the whole array.
    pub start: Vec<i64>,
    /// Shape of the shard.
    pub shape: Vec<i64>,
    /// The shard's elements, row-major, little-endian.
    pub data: Vec<u8>,
}

/// What a sharded save needs from the job it runs in (implemented for
/// [`crate::distributed::Session`]; tests may implement it over threads).
pub trait CheckpointJob {
    /// This process's index.
    fn process_id(&self) -> usize;
    /// Processes in the job.
    fn num_processes(&self) -> usize;
    /// Waits until every process reached barrier `name` (each name is used once per job).
    fn barrier(&self, name: &str) -> Result<(), TrainError>;
    /// Stores `value` under `key` for the others to read.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), TrainError>;
    /// Reads `key`, waiting until some process has put it.
    fn get(&self, key: &str) -> Result<Vec<u8>, TrainError>;
}

/// Writes this process's `shards` of the checkpoint at `step` under `root`; process 0 commits
/// the manifest once every process has written its file, and prunes to the newest `keep`.
/// Every process returns the committed directory.
#[allow(clippy::too_many_arguments)]
pub fn save_sharded(
    root: &Path,
    step: u64,
    shards: &[LocalShard],
    config: serde_json::Value,
    data_position: serde_json::Value,
    batch: Option<BatchGeometry>,
    keep: usize,
    job: &dyn CheckpointJob,
) -> Result<PathBuf, TrainError> {
    let _ = (
        step,
        shards,
        config,
        data_position,
        batch,
        keep,
        job.process_id(),
    );
    Err(TrainError::Checkpoint {
        path: root.display().to_string(),
        detail: "sharded checkpoints are not written by this build yet".into(),
    })
}
