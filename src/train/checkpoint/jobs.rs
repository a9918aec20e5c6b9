//! The jobs a sharded save runs in: a multi-process job's [`Session`], and one process alone.

use super::sharded::CheckpointJob;
use super::TrainError;
use crate::distributed::{DistributedError, Session};
use std::collections::HashMap;
use std::sync::Mutex;
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

/// A job of one process without a store (a single-process run writing the sharded layout):
/// barriers pass at once and the values live in this process.
#[derive(Debug, Default)]
pub struct SingleProcess {
    values: Mutex<HashMap<String, Vec<u8>>>,
}

impl CheckpointJob for SingleProcess {
    fn process_id(&self) -> usize {
        0
    }

    fn num_processes(&self) -> usize {
        1
    }

    fn barrier(&self, _name: &str) -> Result<(), TrainError> {
        Ok(())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), TrainError> {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, TrainError> {
        // No other process can put it later: waiting would never end.
        self.try_get(key)?
            .ok_or_else(|| TrainError::Other(format!("single-process job: no value under {key:?}")))
    }

    fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, TrainError> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        Ok(values.get(key).cloned())
    }
}
