//! Multi-process runs: one process per host (or per GPU), joined through a small key-value
//! store that process 0 serves over TCP.
//!
//! The store implements what the PJRT plugins' key-value callbacks need (blocking get with a
//! timeout, try-get, put) plus what vishwam itself needs to run several processes as one job:
//! a barrier, failure detection (a process whose connection drops, or whose heartbeats stop,
//! fails the whole job, so that nobody hangs) and a clean shutdown once every process has
//! finished. [`ProcessSpec`] says who this process is (from flags or the usual environment
//! variables); [`Session`] joins the job.

mod error;
mod plugin_store;
mod session;
mod spec;
mod store;
mod store_client;
mod wire;

pub use error::{DistributedError, Result};
pub use plugin_store::{PluginStore, PLUGIN_KEY_PREFIX};
pub use session::Session;
pub use spec::{ProcessFlags, ProcessSpec};
pub use store::StoreServer;
pub use store_client::{FailureHook, StoreClient};
