//! The file work of a sharded save: process 0's temporary directory, each process's state
//! file, and process 0's checks and commit.

use super::assemble::check_files_cover;
use super::sharded::SHARDED_VERSION;
use super::sharded::{shard_tensor_name, state_file_name, Keys, ShardEntry, StateFile};
use super::sharded::{CheckpointJob, LocalShard};
use super::{err, st_dtype, write_synced, Manifest, TensorEntry, FORMAT, MANIFEST_FILE};
use super::{prune, step_dir_name, TrainError};
use crate::config::BatchGeometry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one process publishes after writing its file.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Published {
    /// Its file and the dtype and shape of every array it holds shards of.
    Written {
        file: StateFile,
        arrays: BTreeMap<String, TensorEntry>,
    },
    /// Why it wrote nothing.
    Failed(String),
}

/// Clears and creates the job's temporary directory (process 0).
pub(super) fn prepare_tmp(root: &Path, tmp: &Path) -> Result<(), TrainError> {
    std::fs::create_dir_all(root)
        .map_err(|e| TrainError::io(format!("creating {}", root.display()), e))?;
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| {
            TrainError::io(
                format!("clearing {} left by an earlier save", tmp.display()),
                e,
            )
        })?;
    }
    std::fs::create_dir_all(tmp)
        .map_err(|e| TrainError::io(format!("creating {}", tmp.display()), e))
}

/// Checks this process's shards, writes them into its state file in `tmp` and fsyncs it.
pub(super) fn write_own_file(
    tmp: &Path,
    me: usize,
    n: usize,
    shards: &[LocalShard],
) -> Result<(StateFile, BTreeMap<String, TensorEntry>), TrainError> {
    if !tmp.is_dir() {
        return Err(err(
            tmp,
            format!(
                "process {me} does not see {}, which process 0 created: the checkpoint \
                 directory must be on a filesystem every process sees",
                tmp.display()
            ),
        ));
    }
    let name = state_file_name(me, n);
    let path = tmp.join(&name);
    let mut arrays: BTreeMap<String, TensorEntry> = BTreeMap::new();
    let mut entries = Vec::with_capacity(shards.len());
    let mut views = Vec::with_capacity(shards.len());
    for shard in shards {
        check_local_shard(shard).map_err(|d| err(&path, d))?;
        let entry = TensorEntry {
            dtype: shard.element_type.mlir_name().into(),
            shape: shard.global_shape.clone(),
        };
        if let Some(other) = arrays.get(&shard.name).filter(|e| **e != entry) {
            return Err(err(
                &path,
                format!(
                    "`{}` is given as {}{:?} and as {}{:?}",
                    shard.name, other.dtype, other.shape, entry.dtype, entry.shape
                ),
            ));
        }
        arrays.insert(shard.name.clone(), entry);
        let tensor = shard_tensor_name(&shard.name, &shard.start);
        let dtype = st_dtype(shard.element_type).map_err(|d| err(&path, d))?;
        let shape: Vec<usize> = shard.shape.iter().map(|&d| d as usize).collect();
        let view = safetensors::tensor::TensorView::new(dtype, shape, &shard.data)
            .map_err(|e| err(&path, format!("{tensor}: {e}")))?;
        views.push((tensor.clone(), view));
        entries.push(ShardEntry {
            array: shard.name.clone(),
            tensor,
            start: shard.start.clone(),
            shape: shard.shape.clone(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = entries.iter().find(|e| !seen.insert(e.tensor.as_str())) {
        return Err(err(
            &path,
            format!(
                "the shard of `{}` at {:?} is given twice",
                twice.array, twice.start
            ),
        ));
    }
    let bytes = safetensors::serialize(views, &None).map_err(|e| err(&path, e.to_string()))?;
    write_synced(&path, &bytes)?;
    let file = StateFile {
        file: name,
        process: me,
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        shards: entries,
    };
    Ok((file, arrays))
}

/// A shard's own consistency: rank, bounds and byte length.
fn check_local_shard(s: &LocalShard) -> Result<(), String> {
    let rank = s.global_shape.len();
    if s.name.is_empty() {
        return Err("a shard has an empty array name".into());
    }
    if s.start.len() != rank || s.shape.len() != rank {
        return Err(format!(
            "the shard of `{}` has start {:?} and shape {:?} for an array of rank {rank} {:?}",
            s.name, s.start, s.shape, s.global_shape
        ));
    }
    let inside = (0..rank).all(|d| {
        s.global_shape[d] >= 0
            && s.start[d] >= 0
            && s.shape[d] >= 0
            && s.start[d] + s.shape[d] <= s.global_shape[d]
    });
    if !inside {
        return Err(format!(
            "the shard of `{}` at {:?} of shape {:?} lies outside the array's shape {:?}",
            s.name, s.start, s.shape, s.global_shape
        ));
    }
    let expected = s.shape.iter().product::<i64>() as usize * s.element_type.size_in_bytes();
    if s.data.len() != expected {
        return Err(format!(
            "the shard of `{}` at {:?} ({}{:?}) has {} bytes, expected {expected}",
            s.name,
            s.start,
            s.element_type.mlir_name(),
            s.shape,
            s.data.len()
        ));
    }
    Ok(())
}

/// The manifest fields process 0 records as they are.
pub(super) struct ManifestHeader {
    pub step: u64,
    pub config: serde_json::Value,
    pub data_position: serde_json::Value,
    pub batch: Option<BatchGeometry>,
}

/// Process 0: gathers every process's file, checks them, writes the manifest and renames the
/// directory into place.
pub(super) fn commit(
    root: &Path,
    tmp: &Path,
    n: usize,
    keys: &Keys,
    job: &dyn CheckpointJob,
    header: ManifestHeader,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let mut files = Vec::with_capacity(n);
    let mut tensors: BTreeMap<String, (TensorEntry, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for r in 0..n {
        let key = keys.key(&format!("process/{r}"));
        let bytes = job.get(&key).map_err(|e| {
            err(
                tmp,
                format!("process 0 waiting for process {r}'s file: {e}"),
            )
        })?;
        let published: Published = serde_json::from_slice(&bytes).map_err(|e| {
            err(
                tmp,
                format!("the store's value of {key} is not a file entry ({e})"),
            )
        })?;
        let (file, arrays) = match published {
            Published::Written { file, arrays } => (file, arrays),
            Published::Failed(reason) => {
                failures.push(format!("process {r} could not write its file: {reason}"));
                continue;
            }
        };
        if file.process != r || file.file != state_file_name(r, n) {
            return Err(err(
                tmp,
                format!(
                    "process {r} published file {} of process {}",
                    file.file, file.process
                ),
            ));
        }
        let on_disk = std::fs::metadata(tmp.join(&file.file)).map(|m| m.len());
        if on_disk.as_ref().ok() != Some(&file.bytes) {
            let seen = match on_disk {
                Ok(len) => format!("{len} bytes"),
                Err(e) => format!("nothing ({e})"),
            };
            return Err(err(
                tmp,
                format!(
                    "process {r} wrote {} ({} bytes) but process 0 sees {seen} in {}: the \
                     checkpoint directory must be on a filesystem every process sees",
                    file.file,
                    file.bytes,
                    tmp.display()
                ),
            ));
        }
        for (array, entry) in arrays {
            match tensors.get(&array) {
                Some((first, by)) if *first != entry => {
                    return Err(err(
                        tmp,
                        format!(
                            "process {by} says `{array}` is {}{:?}, process {r} says {}{:?}",
                            first.dtype, first.shape, entry.dtype, entry.shape
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    tensors.insert(array, (entry, r));
                }
            }
        }
        files.push(file);
    }
    if !failures.is_empty() {
        return Err(err(tmp, failures.join("; ")));
    }
    let tensors: BTreeMap<String, TensorEntry> =
        tensors.into_iter().map(|(k, (e, _))| (k, e)).collect();
    check_files_cover(&tensors, &files).map_err(|d| err(tmp, d))?;

    let manifest = Manifest {
        format: FORMAT.into(),
        version: SHARDED_VERSION,
        step: header.step,
        config: header.config,
        data_position: header.data_position,
        tensors,
        state_sha256: String::new(),
        global_batch: header.batch.map(|b| b.global_batch()),
        batch: header.batch,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| err(tmp, e.to_string()))?;
    write_synced(&tmp.join(MANIFEST_FILE), text.as_bytes())?;
    publish(tmp, root, header.step, keep)
}

/// Puts a checkpoint written in full into `tmp` (its manifest last) in place as the
/// checkpoint of `step` under `root`, replacing one of the same step, and prunes to the newest
/// `keep`. The directory's entries are synced before the rename and the rename after it, so a
/// crash leaves either no checkpoint of that step or a whole one.
pub(super) fn publish(
    tmp: &Path,
    root: &Path,
    step: u64,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    sync_dir(tmp)?;
    let final_dir = root.join(step_dir_name(step));
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .map_err(|e| TrainError::io(format!("replacing {}", final_dir.display()), e))?;
    }
    std::fs::rename(tmp, &final_dir)
        .map_err(|e| TrainError::io(format!("renaming {} into place", tmp.display()), e))?;
    sync_dir(root)?;
    prune(root, keep)?;
    Ok(final_dir)
}

/// Makes a directory's entries (created files, a rename) durable.
fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TrainError::io(format!("syncing {}", dir.display()), e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
