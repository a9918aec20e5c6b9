//! Checkpoints of a multi-process run: every process writes the distinct shards it owns, and
//! process 0 commits the manifest last, so that a checkpoint is complete or absent.
//!
//! The layout (manifest version [`SHARDED_VERSION`]) is described in the module doc of
//! [`super`]. The commit protocol, over the job's key-value store (keys under
//! `vishwam/checkpoint/step_NNNNNNNN/attempt-K/`, K counting the saves of one step in one
//! job, so that a step saved twice never reads the first save's keys):
//!
//! 1. Process 0 clears and creates the temporary directory `.step_NNNNNNNN.tmp-job` under
//!    the root (one name every process derives from the step; a killed save leaves it behind
//!    and the next save of the step clears it) and puts `open` (or the reason it could not).
//! 2. Every process waits for `open`, checks that it sees the directory, writes its file
//!    `state.process-RRRRR-of-NNNNN.safetensors` there, fsyncs it, and puts `process/R`: the
//!    file's name, length, SHA-256 and shards (or the reason it could not write it).
//! 3. Process 0 reads every `process/R`, checks that every file is in the directory with its
//!    length (the root must be on a filesystem every process sees), that the processes agree
//!    on each array's dtype and shape and that each array's shards cover it exactly once,
//!    writes `manifest.json`, renames the directory to `step_NNNNNNNN`, prunes to the newest
//!    `keep`, and puts `outcome` (the directory, or why it did not commit).
//! 4. Every process waits for `outcome`, then all meet at barrier `done`: each returns only
//!    after the commit, and every one returns an error when it failed.
//!
//! A process killed before step 3 ends fails the job in the store (its connection drops, or
//! its heartbeats stop), which ends every other process's wait with that reason; nothing is
//! renamed, so no directory appears under the real name.

use super::write::{commit, prepare_tmp, write_own_file, ManifestHeader, Published};
use super::{err, step_dir_name, TrainError};
use crate::config::BatchGeometry;
use crate::runtime::ElementType;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest version of sharded checkpoints (one state file per process); version
/// [`super::VERSION`] is the single-file layout.
pub const SHARDED_VERSION: u32 = 2;

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
/// [`crate::distributed::Session`], and for one process without a store by
/// [`super::SingleProcess`]).
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
    /// Reads `key` if some process has put it, without waiting.
    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, TrainError>;
}

/// One state file of a sharded checkpoint, as `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// The file's name in the checkpoint directory ([`state_file_name`]).
    pub file: String,
    /// The process that wrote it.
    pub process: usize,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The shards it holds.
    pub shards: Vec<ShardEntry>,
}

/// One shard in a state file: a box of one state array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The state array it belongs to (a key of the manifest's `tensors`).
    pub array: String,
    /// The tensor's name in the safetensors file ([`shard_tensor_name`]).
    pub tensor: String,
    /// Index of its first element in each dimension of the array.
    pub start: Vec<i64>,
    /// Its shape.
    pub shape: Vec<i64>,
}

/// The state file process `process` of `num_processes` writes.
pub fn state_file_name(process: usize, num_processes: usize) -> String {
    format!("state.process-{process:05}-of-{num_processes:05}.safetensors")
}

/// The name of the shard of `array` starting at `start` in a state file, e.g. `params.w@0,64`.
pub fn shard_tensor_name(array: &str, start: &[i64]) -> String {
    let start: Vec<String> = start.iter().map(i64::to_string).collect();
    format!("{array}@{}", start.join(","))
}

/// The temporary directory every process of a job writes the checkpoint of `step` into.
pub fn job_tmp_dir_name(step: u64) -> String {
    format!(".{}.tmp-job", step_dir_name(step))
}

/// Keys and barrier names of one save.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of this process's next save of `step`: the first attempt whose marker this
    /// process has not put yet (every process saves the same steps in the same order).
    pub(super) fn next_attempt(step: u64, job: &dyn CheckpointJob) -> Result<Keys, TrainError> {
        let me = job.process_id();
        for attempt in 0u64.. {
            let keys = Keys {
                prefix: format!(
                    "vishwam/checkpoint/{}/attempt-{attempt}",
                    step_dir_name(step)
                ),
            };
            let marker = keys.key(&format!("started/{me}"));
            if job.try_get(&marker)?.is_none() {
                job.put(&marker, b"")?;
                return Ok(keys);
            }
        }
        unreachable!("a u64 counter of saves")
    }

    pub(super) fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// Encodes `Ok(text)` / `Err(reason)` for the store.
fn encode_result(result: &Result<String, String>) -> Vec<u8> {
    serde_json::to_vec(result).expect("strings serialize")
}

fn decode_result(key: &str, bytes: &[u8]) -> Result<Result<String, String>, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("the store's value of {key} is not a result ({e})"))
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
    let (me, n) = (job.process_id(), job.num_processes());
    let tmp = root.join(job_tmp_dir_name(step));
    let final_dir = root.join(step_dir_name(step));
    let not_committed = |reason: String| err(&final_dir, format!("not committed: {reason}"));
    if n == 0 || me >= n {
        return Err(not_committed(format!(
            "process {me} of {n} processes is not a process of the job"
        )));
    }
    let not_committed = &not_committed;
    let in_job =
        |what: String| move |e: TrainError| not_committed(format!("{what}: {}", reason(&e)));
    let keys =
        Keys::next_attempt(step, job).map_err(in_job(format!("process {me} starting the save")))?;

    // 1. Process 0 prepares the temporary directory.
    let open_key = keys.key("open");
    if me == 0 {
        let opened = prepare_tmp(root, &tmp).map_err(|e| reason(&e));
        job.put(
            &open_key,
            &encode_result(&opened.clone().map(|()| String::new())),
        )
        .map_err(in_job("process 0 announcing the directory".into()))?;
        opened.map_err(not_committed)?;
    } else {
        let opened = job.get(&open_key).map_err(in_job(format!(
            "process {me} waiting for process 0 to create {}",
            tmp.display()
        )))?;
        decode_result(&open_key, &opened)
            .map_err(not_committed)?
            .map_err(|e| {
                not_committed(format!("process 0 could not prepare the directory: {e}"))
            })?;
    }

    // 2. Every process writes its file and publishes it.
    let published = match write_own_file(&tmp, me, n, shards) {
        Ok((file, arrays)) => Published::Written { file, arrays },
        Err(e) => Published::Failed(reason(&e)),
    };
    let own_failure = match &published {
        Published::Failed(reason) => {
            Some(format!("process {me} could not write its file: {reason}"))
        }
        Published::Written { .. } => None,
    };
    job.put(
        &keys.key(&format!("process/{me}")),
        &serde_json::to_vec(&published).expect("entries serialize"),
    )
    .map_err(in_job(format!("process {me} publishing its file")))?;

    // 3. Process 0 commits.
    let outcome_key = keys.key("outcome");
    let outcome = if me == 0 {
        let header = ManifestHeader {
            step,
            config,
            data_position,
            batch,
        };
        let outcome = commit(root, &tmp, n, &keys, job, header, keep)
            .map(|dir| dir.display().to_string())
            .map_err(|e| reason(&e));
        if let Err(e) = job.put(&outcome_key, &encode_result(&outcome)) {
            return Err(match outcome {
                Err(reason) => not_committed(reason),
                Ok(dir) => err(
                    &final_dir,
                    format!(
                        "committed as {dir}, but the others could not be told: {}",
                        reason(&e)
                    ),
                ),
            });
        }
        outcome
    } else {
        let bytes = job.get(&outcome_key).map_err(in_job(format!(
            "process {me} waiting for process 0 to commit"
        )))?;
        decode_result(&outcome_key, &bytes).map_err(not_committed)?
    };

    // 4. Every process returns after the commit.
    job.barrier(&keys.key("done"))
        .map_err(in_job(format!("process {me} after the commit")))?;
    // Nobody reads this process's entry any more: empty it, so that the store (which keeps
    // every key for the job's lifetime) does not grow by every save's shard lists. A failure
    // here is the job's, and is reported by its next request; the checkpoint stands.
    let _ = job.put(&keys.key(&format!("process/{me}")), b"");
    match (own_failure, outcome) {
        (Some(own), _) => Err(not_committed(own)),
        (None, Err(reason)) => Err(not_committed(reason)),
        (None, Ok(_)) => Ok(final_dir),
    }
}

/// The reason in an error, without the path a [`TrainError::Checkpoint`] puts before it.
fn reason(e: &TrainError) -> String {
    match e {
        TrainError::Checkpoint { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}
