//! A multi-process job's [`Session`] as the [`CheckpointJob`] of a sharded save.

use super::sharded::CheckpointJob;
use super::TrainError;
use crate::distributed::{DistributedError, Session};
use std::time::Duration;

/// How long a process waits for the others during a sharded save: long enough for the
/// slowest process to write its shards of a large model. A process that is killed, exits or
/// stops sending heartbeats fails the job in the store at once (or after
/// `--heartbeat-timeout`), which ends every wait with that reason; this bounds only a process
/// that is alive but stuck elsewhere.
pub const CHECKPOINT_WAIT: Duration = Duration::from_secs(30 * 60);

fn job_error(e: DistributedError) -> TrainError {
    TrainError::Other(e.to_string())
}

impl CheckpointJob for Session {
    fn process_id(&self) -> usize {
        Session::process_id(self)
    }

    fn num_processes(&self) -> usize {
        Session::num_processes(self)
    }

    fn barrier(&self, name: &str) -> Result<(), TrainError> {
        Session::barrier(self, name, CHECKPOINT_WAIT).map_err(job_error)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), TrainError> {
        self.store().put(key.as_bytes(), value).map_err(job_error)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TrainError> {
        self.store()
            .get(key.as_bytes(), CHECKPOINT_WAIT)
            .map_err(job_error)
    }

    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, TrainError> {
        self.store().try_get(key.as_bytes()).map_err(job_error)
    }
}
