//! The job's store as the PJRT plugin sees it (through the client's `kv_*` callbacks).

use super::{DistributedError, StoreClient};
use crate::runtime::{KeyValueError, KeyValueStore, PjrtCode};
use std::sync::Arc;
use std::time::Duration;

/// The plugin's keys live under this prefix, apart from vishwam's own (`vishwam/...`).
pub const PLUGIN_KEY_PREFIX: &[u8] = b"pjrt/";

/// The job's store for a plugin: keys prefixed with [`PLUGIN_KEY_PREFIX`].
#[derive(Debug, Clone)]
pub struct PluginStore {
    client: Arc<StoreClient>,
}

impl PluginStore {
    /// The plugin's view of `client`'s store.
    pub fn new(client: Arc<StoreClient>) -> PluginStore {
        PluginStore { client }
    }
}

fn prefixed(key: &[u8]) -> Vec<u8> {
    [PLUGIN_KEY_PREFIX, key].concat()
}

fn to_plugin(e: DistributedError) -> KeyValueError {
    let code = match &e {
        DistributedError::Timeout { .. } => PjrtCode::DeadlineExceeded,
        DistributedError::NotFound { .. } => PjrtCode::NotFound,
        DistributedError::JobFailed(_) => PjrtCode::Aborted,
        DistributedError::Connection { .. } => PjrtCode::Unavailable,
        DistributedError::Spec(_) => PjrtCode::InvalidArgument,
    };
    KeyValueError {
        code,
        message: e.to_string(),
    }
}

/// Every exchange is logged (keys and sizes only), so a run's log shows what the plugin
/// shared: e.g. the CUDA plugin's `local_topology/cuda/<node>` and `global_topology/cuda`.
impl KeyValueStore for PluginStore {
    fn get(&self, key: &[u8], timeout: Duration) -> Result<Vec<u8>, KeyValueError> {
        let value = self
            .client
            .get(&prefixed(key), timeout)
            .map_err(to_plugin)?;
        tracing::info!(
            "PJRT plugin got {} ({} bytes) from the job's store",
            key.escape_ascii(),
            value.len()
        );
        Ok(value)
    }

    fn try_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyValueError> {
        self.client.try_get(&prefixed(key)).map_err(to_plugin)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KeyValueError> {
        self.client.put(&prefixed(key), value).map_err(to_plugin)?;
        tracing::info!(
            "PJRT plugin put {} ({} bytes) into the job's store",
            key.escape_ascii(),
            value.len()
        );
        Ok(())
    }
}
