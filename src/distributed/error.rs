//! Errors of multi-process runs.

/// What can go wrong joining or running a multi-process job.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// The flags and environment variables do not describe one process of one job.
    #[error("multi-process setup: {0}")]
    Spec(String),
    /// A blocking get or a barrier ran out of time.
    #[error("key-value store: {what} timed out after {timeout_ms} ms")]
    Timeout {
        /// The operation, e.g. `get "local_topology/cuda/1"`.
        what: String,
        /// The timeout it was given.
        timeout_ms: u64,
    },
    /// `try_get` of a key that does not exist.
    #[error("key-value store: no key {key:?}")]
    NotFound {
        /// The key, shown with escapes.
        key: String,
    },
    /// Another process of the job failed (its connection dropped, its heartbeats stopped, or
    /// it reported an error), so the job cannot go on.
    #[error("multi-process job failed: {0}")]
    JobFailed(String),
    /// The store's connection failed or it sent something this build does not understand.
    #[error("key-value store at {address}: {detail}")]
    Connection {
        /// The coordinator address.
        address: String,
        /// What happened.
        detail: String,
    },
}

/// Result of the distributed module.
pub type Result<T, E = DistributedError> = std::result::Result<T, E>;
