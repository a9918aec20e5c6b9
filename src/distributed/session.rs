//! Joining a multi-process job: process 0 serves the store, every process connects to it,
//! sends heartbeats, and meets the others at a first barrier.

use super::store_client::{FailureHook, Membership};
use super::{PluginStore, ProcessSpec, Result, StoreClient, StoreServer};
use crate::runtime::ProcessPlacement;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a process sends a heartbeat.
const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

/// This process's membership of a running multi-process job.
pub struct Session {
    spec: ProcessSpec,
    server: Option<StoreServer>,
    store: Arc<StoreClient>,
    membership: Option<Membership>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("spec", &self.spec).finish()
    }
}

impl Session {
    /// Joins the job `spec` describes: process 0 starts the store first; every process
    /// connects (retrying until the join timeout), then all wait for each other. While the
    /// session lives, a failure of the job (another process killed, hung or failing) is
    /// passed to `on_failure` from a background thread.
    pub fn join(spec: &ProcessSpec, on_failure: FailureHook) -> Result<Session> {
        let server = match spec.process_id {
            0 => Some(StoreServer::start(
                &spec.listen_address(),
                spec.num_processes,
                spec.heartbeat_timeout,
            )?),
            _ => None,
        };
        let address = match &server {
            // Process 0 reaches its own store through loopback on the port it bound.
            Some(s) => format!("127.0.0.1:{}", s.address().port()),
            None => spec.coordinator.clone(),
        };
        let store = Arc::new(StoreClient::new(&address));
        let deadline = Instant::now() + spec.join_timeout;
        let membership = Membership::join(
            &store,
            spec.process_id,
            spec.num_processes,
            deadline,
            HEARTBEAT_PERIOD,
            on_failure,
        )?;
        tracing::info!(
            "process {} of {}: joined the store at {}; waiting for the others",
            spec.process_id,
            spec.num_processes,
            spec.coordinator
        );
        let session = Session {
            spec: spec.clone(),
            server,
            store,
            membership: Some(membership),
        };
        session.barrier("vishwam/join", spec.join_timeout)?;
        Ok(session)
    }

    /// This process's index.
    pub fn process_id(&self) -> usize {
        self.spec.process_id
    }

    /// Processes in the job.
    pub fn num_processes(&self) -> usize {
        self.spec.num_processes
    }

    /// The job's description.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The job's key-value store.
    pub fn store(&self) -> &Arc<StoreClient> {
        &self.store
    }

    /// This process's placement for `PJRT_Client_Create`: its index, the job's size and the
    /// store (keys under [`super::PLUGIN_KEY_PREFIX`]); the `visible_devices` (CUDA) and
    /// further create options of `flags`.
    pub fn placement(&self, flags: &super::ProcessFlags) -> ProcessPlacement {
        ProcessPlacement {
            process_id: self.spec.process_id,
            num_processes: self.spec.num_processes,
            store: Arc::new(PluginStore::new(self.store.clone())),
            visible_devices: flags.visible_devices.clone(),
            extra_options: flags.client_options.clone(),
        }
    }

    /// Waits until every process reached barrier `name` (each name is used once).
    pub fn barrier(&self, name: &str, timeout: Duration) -> Result<()> {
        self.store.barrier(name, self.spec.process_id, timeout)
    }

    /// Tells the others that this process failed (they stop with `message`).
    pub fn fail(&self, message: &str) -> Result<()> {
        self.store.fail(self.spec.process_id, message)
    }

    /// Leaves the job after this process failed: tells the others `message` (they stop);
    /// process 0 keeps serving the store until they have left (at most `linger`), so that
    /// they read the reason rather than a lost connection.
    pub fn abort(mut self, message: &str, linger: Duration) {
        // Heartbeats stop first: this process knows why it fails, and its failure hook must
        // not end it (with a lost connection as the reason) before it has said so.
        self.membership.take();
        let _ = self.store.fail(self.spec.process_id, message);
        if let Some(mut server) = self.server.take() {
            server.wait_others_left(self.spec.process_id, linger);
            server.stop();
        }
    }

    /// Leaves the job cleanly: says this process is done; process 0 then serves the store
    /// until every process is done (or the join timeout passes) and stops it.
    pub fn finish(mut self) -> Result<()> {
        if let Some(mut membership) = self.membership.take() {
            membership.done(&self.store)?;
        }
        if let Some(mut server) = self.server.take() {
            let waited = server.wait_all_done(self.spec.join_timeout);
            server.stop();
            waited?;
        }
        Ok(())
    }
}
