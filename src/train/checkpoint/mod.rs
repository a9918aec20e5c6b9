//! Checkpoints: the train state in safetensors plus a JSON manifest.
//!
//! A checkpoint is a directory `step_00000123/` holding the state (every state array:
//! parameters, AdamW moments, step, random state, loss scale) and `manifest.json` (format
//! name and version, step, the resolved config, the data loader's position, every array's
//! dtype and shape, and checksums). It is written into a temporary directory and renamed into
//! place, so a crash never leaves a half-written checkpoint under a real name. Loading checks
//! the format, the version, the checksums, and every tensor's dtype and shape against what the
//! current run expects; the arrays are then placed by the current mesh's shardings, whatever
//! mesh (and however many processes) wrote them.
//!
//! Two layouts, told apart by the manifest's `version`:
//!
//! - Version 1 ([`VERSION`], one process: [`save`]): `state.safetensors` holds every array
//!   whole, and `state_sha256` is its SHA-256.
//! - Version 2 ([`sharded::SHARDED_VERSION`], any number of processes: [`sharded::save_sharded`]):
//!   one file per process, `state.process-00001-of-00004.safetensors`, holding the distinct
//!   shards that process owns (a replicated array, or a replicated shard, is written once, by
//!   the owner the caller chose). A shard's tensor is named `ARRAY@START` (`params.w@0,64`:
//!   the index of its first element in each dimension). The manifest's `state_sha256` is
//!   empty; `files` gives for each process its file's name, length, SHA-256 and shards (array, tensor
//!   name, start, shape); `tensors` still gives every array's global dtype and shape. Process
//!   0 writes the manifest and renames the directory only after every process has written
//!   its file and the shards of every array are checked to cover it exactly once, so the
//!   checkpoint is complete or absent. [`load`] verifies every file's checksum, every shard
//!   against the manifest and the coverage again, and assembles each array whole, so resume,
//!   export, verify, inspect and generate read both layouts alike. A build that knows only
//!   version 1 refuses version 2 with its version error.

use super::TrainError;
use crate::config::BatchGeometry;
use crate::engine::HostArray;
use crate::runtime::ElementType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` field of every manifest.
pub const FORMAT: &str = "vishwam-checkpoint";
/// The manifest version of single-file checkpoints ([`save`]); sharded ones are
/// [`sharded::SHARDED_VERSION`]. This build reads both.
pub const VERSION: u32 = 1;
const STATE_FILE: &str = "state.safetensors";
const MANIFEST_FILE: &str = "manifest.json";

/// One tensor's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Element type name (`f32`, `i32`, `ui64`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<i64>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// Optimizer steps applied.
    pub step: u64,
    /// The resolved configuration of the run.
    pub config: serde_json::Value,
    /// The data loader's position (opaque to the checkpoint).
    pub data_position: serde_json::Value,
    /// Every tensor in the state file.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// SHA-256 of `state.safetensors`, hex (version 1). Empty in version 2, whose `files`
    /// carry one per file; written all the same, so that a build that reads only version 1
    /// parses the manifest and refuses it by its version.
    pub state_sha256: String,
    /// Sequences per optimizer step of the run that wrote it (`batch.global_batch()`); absent
    /// in manifests written before it was recorded, and in imported weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_batch: Option<usize>,
    /// How `global_batch` was made: per-shard batch x batch shards x micro-batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchGeometry>,
    /// The state files of a sharded checkpoint (version 2), one per process in process order;
    /// empty, and absent from the file, in version 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<sharded::StateFile>,
}

/// A checkpoint read back from disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The state arrays by name.
    pub state: BTreeMap<String, HostArray>,
}

fn err(path: &Path, detail: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn st_dtype(t: ElementType) -> Result<safetensors::Dtype, String> {
    use safetensors::Dtype as D;
    Ok(match t {
        ElementType::F32 => D::F32,
        ElementType::F64 => D::F64,
        ElementType::BF16 => D::BF16,
        ElementType::F16 => D::F16,
        ElementType::S32 => D::I32,
        ElementType::S64 => D::I64,
        ElementType::U32 => D::U32,
        ElementType::U64 => D::U64,
        ElementType::U8 => D::U8,
        ElementType::S8 => D::I8,
        ElementType::Pred => D::BOOL,
        ElementType::F8E4M3FN => D::F8_E4M3,
        ElementType::F8E5M2 => D::F8_E5M2,
    })
}

fn element_type(d: safetensors::Dtype) -> Option<ElementType> {
    ElementType::ALL
        .into_iter()
        .find(|t| st_dtype(*t).ok() == Some(d))
}

/// The directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step_{step:08}")
}

/// Writes a checkpoint of `state` at `step` under `root` and keeps only the newest `keep`; the
/// manifest records no batch (see [`save_with_batch`]).
pub fn save(
    root: &Path,
    step: u64,
    state: &BTreeMap<String, HostArray>,
    config: serde_json::Value,
    data_position: serde_json::Value,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    save_with_batch(root, step, state, config, data_position, None, keep)
}

/// [`save`], recording the batch of each optimizer step of the run in the manifest.
pub fn save_with_batch(
    root: &Path,
    step: u64,
    state: &BTreeMap<String, HostArray>,
    config: serde_json::Value,
    data_position: serde_json::Value,
    batch: Option<BatchGeometry>,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(root)
        .map_err(|e| TrainError::io(format!("creating {}", root.display()), e))?;
    let tmp = root.join(format!(
        ".{}.tmp-{}",
        step_dir_name(step),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| TrainError::io(format!("creating {}", tmp.display()), e))?;

    let mut views = Vec::with_capacity(state.len());
    let mut tensors = BTreeMap::new();
    for (name, array) in state {
        let dtype = st_dtype(array.element_type).map_err(|d| err(&tmp, d))?;
        let shape: Vec<usize> = array.shape.iter().map(|&d| d as usize).collect();
        let view = safetensors::tensor::TensorView::new(dtype, shape, &array.data)
            .map_err(|e| err(&tmp, format!("{name}: {e}")))?;
        views.push((name.clone(), view));
        tensors.insert(
            name.clone(),
            TensorEntry {
                dtype: array.element_type.mlir_name().into(),
                shape: array.shape.clone(),
            },
        );
    }
    let bytes = safetensors::serialize(views, &None).map_err(|e| err(&tmp, e.to_string()))?;
    let state_path = tmp.join(STATE_FILE);
    write_synced(&state_path, &bytes)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        step,
        config,
        data_position,
        tensors,
        state_sha256: hex::encode(Sha256::digest(&bytes)),
        global_batch: batch.map(|b| b.global_batch()),
        batch,
        files: Vec::new(),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| err(&tmp, e.to_string()))?;
    write_synced(&tmp.join(MANIFEST_FILE), text.as_bytes())?;
    write::publish(&tmp, root, step, keep)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)
        .map_err(|e| TrainError::io(format!("creating {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| TrainError::io(format!("writing {}", path.display()), e))
}

/// Checkpoint directories under `root`, oldest first, with their steps.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step_")?.parse::<u64>().ok()?;
            e.path()
                .join(MANIFEST_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The newest checkpoint directory under `root`, if any.
pub fn latest(root: &Path) -> Option<PathBuf> {
    list(root).pop().map(|(_, p)| p)
}

fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list(root);
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(dir)
            .map_err(|e| TrainError::io(format!("removing old checkpoint {}", dir.display()), e))?;
    }
    Ok(())
}

/// The block length every config written before `training.batch_size` became per shard
/// stored as `optimization.block_size` (its default then, when it only sized the blocks of
/// `memory.attention_memory_efficient` and did not switch blocked attention on).
pub const OLDER_DEFAULT_BLOCK_SIZE: u64 = 128;

/// Rewrites the config of a manifest written before the batch was recorded (no
/// `global_batch` key: before `training.batch_size` became per shard) to mean today what it
/// meant then: `optimization.block_size` = 128 with `memory.attention_memory_efficient` null
/// was the default, not a request for blocked attention, so it becomes null. Everything else
/// is kept; `training.batch_size` (the global batch then) is checked when resuming
/// (`run::check_batch`).
pub fn migrate_older_config(config: &mut serde_json::Value) {
    let unset = |key: &str| {
        config
            .get("memory")
            .and_then(|m| m.get(key))
            .is_none_or(serde_json::Value::is_null)
    };
    let efficient_unset =
        unset("attention_memory_efficient") && unset("use_memory_efficient_attention");
    let block = config
        .get("optimization")
        .and_then(|o| o.get("block_size"))
        .and_then(serde_json::Value::as_u64);
    if efficient_unset && block == Some(OLDER_DEFAULT_BLOCK_SIZE) {
        config["optimization"]["block_size"] = serde_json::Value::Null;
    }
}

/// Reads and validates a checkpoint directory. A manifest written before the batch was
/// recorded has its config brought up to date ([`migrate_older_config`]).
pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        err(dir, format!("cannot read {MANIFEST_FILE} ({e}); is this a vishwam checkpoint directory (step_NNNNNNNN)?"))
    })?;
    let mut manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| err(dir, format!("{MANIFEST_FILE} is not a valid manifest: {e}")))?;
    if manifest.global_batch.is_none() {
        migrate_older_config(&mut manifest.config);
    }
    if manifest.format != FORMAT {
        return Err(err(
            dir,
            format!("format is `{}`, expected `{FORMAT}`", manifest.format),
        ));
    }
    let state = match manifest.version {
        VERSION => read_single_file_state(dir, &manifest)?,
        sharded::SHARDED_VERSION => assemble::read_sharded_state(dir, &manifest)?,
        other => {
            return Err(err(
                dir,
                format!(
                    "written by checkpoint format version {other}, this vishwam reads versions \
                     {VERSION} and {}; use the vishwam release that wrote it",
                    sharded::SHARDED_VERSION
                ),
            ))
        }
    };
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        manifest,
        state,
    })
}

/// Reads `state.safetensors` of a version-1 checkpoint.
fn read_single_file_state(
    dir: &Path,
    manifest: &Manifest,
) -> Result<BTreeMap<String, HostArray>, TrainError> {
    if manifest.state_sha256.is_empty() || !manifest.files.is_empty() {
        return Err(err(
            dir,
            format!("a version-{VERSION} manifest needs `state_sha256` and no `files`"),
        ));
    }
    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path)
        .map_err(|e| err(dir, format!("cannot read {STATE_FILE}: {e}")))?;
    let sum = hex::encode(Sha256::digest(&bytes));
    if sum != manifest.state_sha256 {
        return Err(err(
            dir,
            format!(
                "{STATE_FILE} is corrupt: SHA-256 {sum}, manifest says {}",
                manifest.state_sha256
            ),
        ));
    }
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(dir, format!("{STATE_FILE}: {e}")))?;
    let mut state = BTreeMap::new();
    for (name, entry) in &manifest.tensors {
        let view = tensors.tensor(name).map_err(|_| {
            err(
                dir,
                format!("{STATE_FILE} lacks `{name}` listed in the manifest"),
            )
        })?;
        let element_type = element_type(view.dtype()).ok_or_else(|| {
            err(
                dir,
                format!("`{name}` has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if element_type.mlir_name() != entry.dtype || shape != entry.shape {
            return Err(err(
                dir,
                format!(
                    "`{name}` is {}{shape:?} in the file but {}{:?} in the manifest",
                    element_type.mlir_name(),
                    entry.dtype,
                    entry.shape
                ),
            ));
        }
        state.insert(
            name.clone(),
            HostArray {
                element_type,
                shape,
                data: view.data().to_vec(),
            },
        );
    }
    Ok(state)
}

mod assemble;
mod jobs;
pub mod sharded;
mod write;

pub use jobs::{SingleProcess, CHECKPOINT_WAIT};

#[cfg(test)]
mod tests;
