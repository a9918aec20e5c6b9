//! Model weights on disk, with the architecture they were trained with: a vishwam checkpoint
//! directory, a run directory (its newest checkpoint) or a Hugging Face Llama directory.
//! `--init-from` ([`super::InitWeights`]) and a distillation teacher
//! ([`super::distill::Teacher`]) both read their weights here and phrase the errors for their
//! own command.

use super::{checkpoint, TrainError};
use crate::config::{Config, ModelConfig};
use crate::engine::HostArray;
use crate::model::{hf, param_specs};
use crate::runtime::ElementType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where weights were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A vishwam checkpoint directory, written at this step.
    Checkpoint {
        /// The `step_NNNNNNNN` directory.
        dir: PathBuf,
        /// Its optimizer step.
        step: u64,
    },
    /// A Hugging Face Llama directory.
    HuggingFace {
        /// The directory.
        dir: PathBuf,
    },
}

impl WeightsSource {
    /// The directory the weights were read from.
    pub fn dir(&self) -> &Path {
        match self {
            WeightsSource::Checkpoint { dir, .. } | WeightsSource::HuggingFace { dir } => dir,
        }
    }
}

impl std::fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsSource::Checkpoint { dir, step } => {
                write!(f, "vishwam checkpoint {} (step {step})", dir.display())
            }
            WeightsSource::HuggingFace { dir } => {
                write!(f, "Hugging Face directory {}", dir.display())
            }
        }
    }
}

/// Everything a weights directory holds: every parameter it stores (by vishwam name, the
/// model's and any others), the architecture, and the tokenizer.json beside it, if any.
#[derive(Debug)]
pub struct StoredWeights {
    /// Where they were read from.
    pub source: WeightsSource,
    /// The architecture they were trained with.
    pub model: ModelConfig,
    /// Every stored parameter, by vishwam name.
    pub params: BTreeMap<String, HostArray>,
    /// The tokenizer.json that came with them, if any.
    pub tokenizer: Option<PathBuf>,
}

/// Why [`read`] found no weights; the caller words the error for its command.
#[derive(Debug)]
pub enum WeightsError {
    /// The path does not exist.
    Missing,
    /// The path is not a directory.
    NotADirectory,
    /// The directory holds neither a vishwam checkpoint nor a Hugging Face model.
    NoWeights,
    /// A checkpoint that does not load.
    Checkpoint(Box<TrainError>),
    /// A Hugging Face directory that does not import.
    Hf(Box<hf::HfError>),
    /// A model name not found in the local Hugging Face cache (or found broken there).
    Cache(Box<hf::cache::CacheError>),
    /// A checkpoint whose manifest config does not load.
    Config {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong with its config.
        detail: String,
    },
}

/// The checkpoint `path` names: itself, or the newest under `path/checkpoints` or `path`.
fn find_checkpoint(path: &Path) -> Option<PathBuf> {
    if path.join("manifest.json").is_file() {
        return Some(path.to_path_buf());
    }
    checkpoint::latest(&path.join("checkpoints")).or_else(|| checkpoint::latest(path))
}

fn is_hf_directory(dir: &Path) -> bool {
    let has_weights = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    has_weights && dir.join("config.json").is_file()
}

/// Reads the weights at `path`: a checkpoint directory (`.../checkpoints/step_N`), a run
/// directory (its newest checkpoint), an HF Llama directory (config.json + *.safetensors), or,
/// when no such path exists, a model id or short name in the local Hugging Face cache
/// ([`hf::cache::local_dir`]).
pub fn read(path: &Path) -> Result<StoredWeights, WeightsError> {
    let local = hf::cache::local_dir(path).map_err(|e| WeightsError::Cache(Box::new(e)))?;
    if local != path {
        return read_hf(&local);
    }
    if !path.exists() {
        return Err(WeightsError::Missing);
    }
    if !path.is_dir() {
        return Err(WeightsError::NotADirectory);
    }
    if let Some(dir) = find_checkpoint(path) {
        let ck = checkpoint::load(&dir).map_err(|e| WeightsError::Checkpoint(Box::new(e)))?;
        let model = Config::from_json_str(&ck.manifest.config.to_string())
            .map_err(|e| WeightsError::Config {
                dir: dir.clone(),
                detail: format!("the config in its manifest does not load: {e}"),
            })?
            .model;
        let params = super::state::params_of(&ck.state);
        // `<run>/checkpoints/step_N` -> `<run>/tokenizer.json`, as `vishwam train` writes it.
        let tokenizer = dir
            .parent()
            .and_then(Path::parent)
            .map(|run| run.join("tokenizer.json"))
            .filter(|p| p.is_file());
        let source = WeightsSource::Checkpoint {
            dir,
            step: ck.manifest.step,
        };
        return Ok(StoredWeights {
            source,
            model,
            params,
            tokenizer,
        });
    }
    if is_hf_directory(path) {
        return read_hf(path);
    }
    Err(WeightsError::NoWeights)
}

/// Reads the HF directory `dir` (a snapshot of the hub cache included).
fn read_hf(dir: &Path) -> Result<StoredWeights, WeightsError> {
    let (model, params) = hf::import(dir).map_err(|e| WeightsError::Hf(Box::new(e)))?;
    Ok(StoredWeights {
        source: WeightsSource::HuggingFace {
            dir: dir.to_path_buf(),
        },
        model,
        params,
        tokenizer: Some(dir.join("tokenizer.json")).filter(|p| p.is_file()),
    })
}

/// Splits `params` into every parameter of `model` (each must be there as f32 with its
/// shape, else the error says which) and the names of the others (e.g. a distilled run's
/// projections).
pub fn model_params(
    model: &ModelConfig,
    mut params: BTreeMap<String, HostArray>,
) -> Result<(BTreeMap<String, HostArray>, Vec<String>), String> {
    let mut kept = BTreeMap::new();
    for spec in param_specs(model) {
        let array = params
            .remove(&spec.name)
            .ok_or_else(|| format!("lacks `{}`, a parameter of its own model", spec.name))?;
        if array.element_type != ElementType::F32 || array.shape != spec.shape {
            return Err(format!(
                "`{}` is {}{:?}; its model config needs f32{:?}",
                spec.name,
                array.element_type.mlir_name(),
                array.shape,
                spec.shape
            ));
        }
        kept.insert(spec.name, array);
    }
    Ok((kept, params.into_keys().collect()))
}
