//! On-disk compile cache: serialized executables keyed by what determines them.
//!
//! The key is a SHA-256 over the MLIR text, the serialized compile options, the plugin's
//! path, size and modification time, its PJRT API version and its reported attributes
//! (XLA and StableHLO versions), the client's platform and device count, and the
//! `XLA_FLAGS` environment variable (which the plugin reads too). An entry
//! is a small header (magic, format version, payload length, payload SHA-256) followed by
//! the serialized executable. Entries are written atomically (temporary file + rename). A
//! corrupt, truncated or undeserializable entry is never trusted: it is recompiled and
//! overwritten.

use super::{Client, CompileOptions, LoadedExecutable, Result, RuntimeError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VSHWMXC\0";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// How a cached compile was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache; XLA compilation skipped.
    Hit,
    /// Not in the cache; compiled and stored.
    Miss,
    /// An entry existed but was corrupt or would not load; recompiled and replaced.
    Replaced,
    /// Caching is disabled; compiled.
    Disabled,
}

/// A directory of serialized executables.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache {
            dir: Some(dir.into()),
        }
    }

    /// The default cache, `$VISHWAM_HOME/compile/`.
    pub fn default_dir() -> CompileCache {
        CompileCache::new(super::vishwam_home().join("compile"))
    }

    /// A cache that never stores or loads anything.
    pub fn disabled() -> CompileCache {
        CompileCache { dir: None }
    }

    /// The cache directory, if enabled.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cache key (hex SHA-256) of a compilation on `client`, with this process's
    /// `XLA_FLAGS`.
    pub fn key(client: &Client, mlir: &str, options: &CompileOptions) -> Result<String> {
        let flags = std::env::var_os("XLA_FLAGS").unwrap_or_default();
        Self::key_for_flags(client, mlir, options, &flags)
    }

    /// The cache key of a compilation on `client` for the `XLA_FLAGS` value `xla_flags`
    /// (empty when unset).
    pub fn key_for_flags(
        client: &Client,
        mlir: &str,
        options: &CompileOptions,
        xla_flags: &std::ffi::OsStr,
    ) -> Result<String> {
        let api = client.api();
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(mlir.as_bytes());
        field(&options.to_proto_bytes());
        field(api.path().to_string_lossy().as_bytes());
        let meta = std::fs::metadata(api.path())
            .map_err(|e| RuntimeError::io(format!("reading {}", api.path().display()), e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        field(format!("{}:{:?}", meta.len(), mtime).as_bytes());
        field(format!("{:?}", api.version()).as_bytes());
        field(format!("{:?}", api.attributes()?).as_bytes());
        field(client.platform_name()?.as_bytes());
        field(client.platform_version()?.as_bytes());
        field(&(client.num_devices() as u64).to_le_bytes());
        // The plugin also reads XLA_FLAGS, which can change what it compiles.
        field(xla_flags.as_encoded_bytes());
        Ok(hex::encode(h.finalize()))
    }

    /// Compiles through the cache.
    pub fn compile(
        &self,
        client: &Client,
        mlir: &str,
        options: &CompileOptions,
    ) -> Result<(LoadedExecutable, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((client.compile(mlir, options)?, CacheOutcome::Disabled));
        };
        let key = Self::key(client, mlir, options)?;
        let path = dir.join(format!("{key}.xla"));
        let mut outcome = CacheOutcome::Miss;
        if path.exists() {
            match read_entry(&path).and_then(|bytes| client.deserialize_executable(&bytes)) {
                Ok(exe) => return Ok((exe, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(
                        "compile cache entry {} is unusable ({e}); recompiling",
                        path.display()
                    );
                    outcome = CacheOutcome::Replaced;
                }
            }
        }
        let exe = client.compile(mlir, options)?;
        match exe.serialize() {
            Ok(bytes) => {
                if let Err(e) = write_entry(dir, &path, &bytes) {
                    tracing::warn!(
                        "could not store compile cache entry {}: {e}",
                        path.display()
                    );
                }
            }
            Err(e) => tracing::warn!("plugin cannot serialize executables ({e}); not caching"),
        }
        Ok((exe, outcome))
    }
}

fn read_entry(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path)
        .map_err(|e| RuntimeError::io(format!("reading {}", path.display()), e))?;
    let corrupt =
        |why: &str| RuntimeError::Other(format!("corrupt cache entry {}: {why}", path.display()));
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let len = u64::from_le_bytes(data[12..20].try_into().unwrap_or_default()) as usize;
    let payload = &data[HEADER_LEN..];
    if payload.len() != len {
        return Err(corrupt(&format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        )));
    }
    if Sha256::digest(payload).as_slice() != &data[20..52] {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload.to_vec())
}

fn write_entry(dir: &Path, path: &Path, payload: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
    let mut data = Vec::with_capacity(HEADER_LEN + payload.len());
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    data.extend_from_slice(&Sha256::digest(payload));
    data.extend_from_slice(payload);
    let tmp = path.with_extension(format!(
        "tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, &data)
        .map_err(|e| RuntimeError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| RuntimeError::io(format!("renaming {}", tmp.display()), e))
}
