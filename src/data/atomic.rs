//! Atomic file and directory replacement: write to a temporary sibling, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = parent_dir(path);
    std::fs::create_dir_all(&parent).map_err(|e| DataError::io("creating", &parent, e))?;
    let mut temp = readable_by_all(&mut tempfile::Builder::new(), 0o644)
        .tempfile_in(&parent)
        .map_err(|e| DataError::io("creating a temporary file in", &parent, e))?;
    temp.write_all(bytes)
        .and_then(|_| temp.as_file().sync_all())
        .map_err(|e| DataError::io("writing", temp.path().to_path_buf(), e))?;
    temp.persist(path)
        .map_err(|e| DataError::io("renaming into", path, e.error))?;
    Ok(())
}

/// Holds an exclusive lock for `target` until the returned file is dropped, so that one
/// process at a time (and one thread: the lock is per open file) checks and builds `target`;
/// the others wait and then find it ready.
///
/// The lock file lies under `$VISHWAM_HOME/locks/`, named by a hash of `target`'s canonical
/// path ([`lock_path`]), so nothing is left beside the user's directories and two spellings
/// of one path (`data_cache`, `./data_cache/`) take the same lock.
pub fn lock_beside(target: &Path) -> Result<std::fs::File> {
    let path = lock_path(target)?;
    let dir = parent_dir(&path);
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io("creating", &dir, e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DataError::io("opening", &path, e))?;
    file.lock()
        .map_err(|e| DataError::io("locking", &path, e))?;
    Ok(file)
}

/// The lock file of `target`: `$VISHWAM_HOME/locks/NAME-HASH.lock`, where HASH is a sha256 of
/// the canonical path of `target` (its parent directory is created to canonicalise it).
pub fn lock_path(target: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let parent = parent_dir(target);
    std::fs::create_dir_all(&parent).map_err(|e| DataError::io("creating", &parent, e))?;
    let parent = std::fs::canonicalize(&parent)
        .map_err(|e| DataError::io("resolving the path of", &parent, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let canonical = parent.join(&name);
    let hash = hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()));
    Ok(crate::paths::vishwam_home()
        .join("locks")
        .join(format!("{name}-{}.lock", &hash[..16])))
}

/// A fresh temporary directory next to `target`, to be moved there by [`replace_dir`].
pub fn temp_dir_beside(target: &Path) -> Result<tempfile::TempDir> {
    let parent = parent_dir(target);
    std::fs::create_dir_all(&parent).map_err(|e| DataError::io("creating", &parent, e))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    readable_by_all(&mut tempfile::Builder::new(), 0o755)
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(|e| DataError::io("creating a temporary directory in", &parent, e))
}

/// Moves the finished directory `staged` to `target`, replacing what was there.
///
/// The old directory is first renamed aside and removed only after the new one is in place,
/// so an interruption leaves either the old or the new complete directory at `target`.
pub fn replace_dir(staged: tempfile::TempDir, target: &Path) -> Result<()> {
    let staged = staged.keep();
    let mut aside: Option<PathBuf> = None;
    if target.exists() {
        let old = parent_dir(target).join(format!(
            ".{}.old-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| DataError::io("removing", &old, e))?;
        }
        std::fs::rename(target, &old).map_err(|e| DataError::io("moving aside", target, e))?;
        aside = Some(old);
    }
    std::fs::rename(&staged, target).map_err(|e| DataError::io("renaming into", target, e))?;
    if let Some(old) = aside {
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io("removing", &old, e))?;
    }
    Ok(())
}

/// Gives files made by `builder` the usual `mode` instead of tempfile's owner-only default.
fn readable_by_all<'a, 'b>(
    builder: &'b mut tempfile::Builder<'a, 'a>,
    mode: u32,
) -> &'b mut tempfile::Builder<'a, 'a> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        builder
    }
}

/// Checks that `target` may be replaced by a new dataset: it is missing, empty, or holds only
/// a dataset's files (a manifest, its tokenizer, shards, leftovers of an interrupted write).
pub fn check_replaceable_dataset_dir(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    let not_dataset = || DataError::NotADatasetDir {
        path: target.to_path_buf(),
    };
    if !target.is_dir() {
        return Err(not_dataset());
    }
    let entries = std::fs::read_dir(target).map_err(|e| DataError::io("listing", target, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io("listing", target, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dataset_file = name == super::manifest::MANIFEST_FILE
            || name == super::manifest::TOKENIZER_FILE
            || (name.starts_with("shard-")
                && [".tokens", ".index", ".origin"]
                    .iter()
                    .any(|ext| name.ends_with(ext)))
            || name.starts_with(".tmp");
        if !dataset_file {
            return Err(not_dataset());
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
