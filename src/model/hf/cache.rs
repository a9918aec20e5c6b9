//! Model names resolved offline in the local Hugging Face hub cache, the directory that
//! `huggingface-cli download` (and transformers, and `hf download`) fill.
//!
//! Layout (huggingface_hub's, unchanged since 2022):
//!
//! ```text
//! <hub>/models--ORG--NAME/refs/main               the commit hash `main` pointed at
//! <hub>/models--ORG--NAME/snapshots/<hash>/...    the files of that commit (often symlinks
//! <hub>/models--ORG--NAME/blobs/<sha>             into blobs/, followed when read)
//! ```
//!
//! `<hub>` is, as huggingface_hub decides it: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`
//! (its older name), else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`. A model is named by its id (`google/gemma-7b`) or by the part
//! after the slash (`gemma-7b`) when exactly one cached repository has that name. Nothing is
//! downloaded: a name that is not cached is an error that says where vishwam looked and how to
//! download it. `distillation.teacher_model`, `vishwam train --init-from` and
//! `vishwam import --hf` all resolve through [`local_dir`].

use std::path::{Path, PathBuf};

/// The hub cache directory and which setting chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    /// The directory holding `models--ORG--NAME` folders.
    pub dir: PathBuf,
    /// Where it came from (`HF_HUB_CACHE`, `HF_HOME`, ..., or the default).
    pub origin: String,
}

impl HubCache {
    /// The hub cache of this process's environment.
    pub fn from_env() -> Option<HubCache> {
        HubCache::from_vars(|key| std::env::var_os(key).map(PathBuf::from))
    }

    /// The hub cache as the variables `var` returns decide it (empty values count as unset);
    /// `None` only when none is set and `HOME` is unknown.
    pub fn from_vars(var: impl Fn(&str) -> Option<PathBuf>) -> Option<HubCache> {
        let var = |key: &str| var(key).filter(|v| !v.as_os_str().is_empty());
        let found = |dir: PathBuf, origin: String| Some(HubCache { dir, origin });
        for key in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
            if let Some(dir) = var(key) {
                return found(dir, key.to_string());
            }
        }
        if let Some(home) = var("HF_HOME") {
            return found(home.join("hub"), "HF_HOME (its hub/)".into());
        }
        if let Some(xdg) = var("XDG_CACHE_HOME") {
            return found(
                xdg.join("huggingface").join("hub"),
                "XDG_CACHE_HOME (its huggingface/hub/)".into(),
            );
        }
        let home = var("HOME")?;
        found(
            home.join(".cache").join("huggingface").join("hub"),
            "the default ~/.cache/huggingface/hub (HF_HUB_CACHE and HF_HOME are unset)".into(),
        )
    }
}

impl std::fmt::Display for HubCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (from {})", self.dir.display(), self.origin)
    }
}

/// Why a model name did not resolve to a cached snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No directory by that path and no cached repository by that name.
    #[error("`{name}` is neither a directory nor a model in the local Hugging Face cache; looked for {looked}. vishwam downloads nothing: fetch it with `huggingface-cli download {download}` (or `hf download {download}`), or set HF_HUB_CACHE to the cache that holds it", looked = looked.join(", "))]
    NotCached {
        /// The name as given.
        name: String,
        /// Every place vishwam looked: the path itself and the cache folders (with the
        /// setting that chose the cache).
        looked: Vec<String>,
        /// The id to download (`ORG/NAME` when the name was short).
        download: String,
    },
    /// No HOME and no cache variable: there is no cache to look in.
    #[error("`{name}` is not a directory, and there is no Hugging Face cache to look it up in: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME or HOME is set")]
    NoCache {
        /// The name as given.
        name: String,
    },
    /// A short name that several cached repositories share.
    #[error("`{name}` matches {} cached models in {cache}: {}; name one by its full id", candidates.len(), candidates.join(", "))]
    Ambiguous {
        /// The short name as given.
        name: String,
        /// The cache searched.
        cache: HubCache,
        /// The full ids that match.
        candidates: Vec<String>,
    },
    /// The repository folder is there but no snapshot is usable.
    #[error("{repo}: {detail}; download it again with `huggingface-cli download {id}`")]
    NoSnapshot {
        /// The `models--ORG--NAME` folder.
        repo: PathBuf,
        /// The model id.
        id: String,
        /// What is missing.
        detail: String,
    },
}

/// Whether `text` reads as a Hugging Face model id: `NAME` or `ORG/NAME`, each part of
/// letters, digits, `-`, `_` and `.`, neither starting with `.` nor holding `--` or `..`
/// (huggingface_hub refuses those in ids).
pub fn is_model_id(text: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("--")
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match text.split_once('/') {
        Some((org, name)) => part_ok(org) && part_ok(name),
        None => part_ok(text),
    }
}

/// The directory `spec` names: itself when it exists or cannot be a model id, else the
/// snapshot of the cached model of that id or short name ([`resolve`]).
pub fn local_dir(spec: &Path) -> Result<PathBuf, CacheError> {
    let text = spec.to_str().filter(|t| is_model_id(t));
    match text {
        Some(name) if !spec.exists() => {
            let cache = HubCache::from_env().ok_or_else(|| CacheError::NoCache {
                name: name.to_string(),
            })?;
            resolve(name, &cache).map_err(|e| match e {
                CacheError::NotCached {
                    name,
                    mut looked,
                    download,
                } => {
                    let dir = std::path::absolute(spec).unwrap_or(spec.to_path_buf());
                    looked.insert(0, format!("the directory {}", dir.display()));
                    CacheError::NotCached {
                        name,
                        looked,
                        download,
                    }
                }
                other => other,
            })
        }
        _ => Ok(spec.to_path_buf()),
    }
}

/// The folder name huggingface_hub gives the model `id`.
fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The ids of every cached model whose name (after the slash) is `short`.
fn ids_named(cache: &Path, short: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|folder| {
            let id = folder.strip_prefix("models--")?;
            let name = id.split_once("--").map_or(id, |(_, name)| name);
            (name == short).then(|| id.replacen("--", "/", 1))
        })
        .collect();
    ids.sort();
    ids
}

/// The snapshot directory of the model `name` (an id or a unique short name) in `cache`.
pub fn resolve(name: &str, cache: &HubCache) -> Result<PathBuf, CacheError> {
    let id = if name.contains('/') {
        name.to_string()
    } else {
        let mut ids = ids_named(&cache.dir, name);
        match ids.len() {
            0 => {
                return Err(CacheError::NotCached {
                    name: name.to_string(),
                    looked: vec![format!(
                        "{} (the hub cache, from {})",
                        cache.dir.join(format!("models--*--{name}")).display(),
                        cache.origin
                    )],
                    download: format!("ORG/{name} (its full id, e.g. google/gemma-7b)"),
                })
            }
            1 => ids.remove(0),
            _ => {
                return Err(CacheError::Ambiguous {
                    name: name.to_string(),
                    cache: cache.clone(),
                    candidates: ids,
                })
            }
        }
    };
    let repo = cache.dir.join(repo_folder(&id));
    if !repo.is_dir() {
        return Err(CacheError::NotCached {
            name: name.to_string(),
            looked: vec![format!(
                "{} (the hub cache, from {})",
                repo.display(),
                cache.origin
            )],
            download: id,
        });
    }
    snapshot(&repo, &id)
}

/// The snapshot `refs/main` names, or the only snapshot when there is no `refs/main` (a
/// download of one pinned commit).
fn snapshot(repo: &Path, id: &str) -> Result<PathBuf, CacheError> {
    let fail = |detail: String| CacheError::NoSnapshot {
        repo: repo.to_path_buf(),
        id: id.to_string(),
        detail,
    };
    let snapshots = repo.join("snapshots");
    let dir = match std::fs::read_to_string(repo.join("refs").join("main")) {
        Ok(hash) => {
            let hash = hash.trim();
            let dir = snapshots.join(hash);
            if hash.is_empty() || !dir.is_dir() {
                return Err(fail(format!(
                    "refs/main names the commit `{hash}`, but snapshots/{hash} is missing"
                )));
            }
            dir
        }
        Err(_) => {
            let mut all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .into_iter()
                .flatten()
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_dir())
                .collect();
            all.sort();
            match all.len() {
                1 => all.remove(0),
                0 => return Err(fail("no refs/main and no snapshot".into())),
                _ => {
                    let names: Vec<String> = all
                        .iter()
                        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                        .collect();
                    return Err(fail(format!(
                        "no refs/main and {} snapshots ({}): name the snapshot directory you mean",
                        names.len(),
                        names.join(", ")
                    )));
                }
            }
        }
    };
    if !dir.join("config.json").is_file() {
        return Err(fail(format!(
            "snapshot {} has no config.json (an interrupted download?)",
            dir.display()
        )));
    }
    Ok(dir)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
