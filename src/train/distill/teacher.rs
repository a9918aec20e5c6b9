//! The teacher of a distillation run, read from disk: a vishwam checkpoint (or the run
//! directory holding it, whose newest checkpoint is used) or a Hugging Face
//! Llama-architecture directory.

use super::DistillError;
use crate::config::{Config, ModelConfig};
use crate::data::TextTokenizer;
use crate::engine::HostArray;
use crate::model::{hf, param_specs};
use crate::runtime::ElementType;
use crate::train::checkpoint;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a teacher came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeacherSource {
    /// A vishwam checkpoint directory, at this step.
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
    /// Parameters handed over in memory (tests, benchmarks).
    Memory,
}

impl std::fmt::Display for TeacherSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TeacherSource::Checkpoint { dir, step } => {
                write!(f, "vishwam checkpoint {} (step {step})", dir.display())
            }
            TeacherSource::HuggingFace { dir } => {
                write!(f, "Hugging Face directory {}", dir.display())
            }
            TeacherSource::Memory => write!(f, "parameters in memory"),
        }
    }
}

/// A teacher model: its architecture and its f32 parameters, by the names of docs/model.md.
#[derive(Debug, Clone)]
pub struct Teacher {
    /// Where it was read from.
    pub source: TeacherSource,
    /// Its architecture.
    pub model: ModelConfig,
    /// Its parameters (f32), exactly those of `param_specs(&model)`.
    pub params: BTreeMap<String, HostArray>,
    /// The tokenizer.json that came with it, if any.
    pub tokenizer: Option<PathBuf>,
}

fn invalid(path: &Path, detail: impl Into<String>) -> DistillError {
    DistillError::InvalidTeacher {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The checkpoint directory `dir` names: itself, or the newest checkpoint under
/// `dir/checkpoints` or `dir`.
fn find_checkpoint(dir: &Path) -> Option<PathBuf> {
    if dir.join("manifest.json").is_file() {
        return Some(dir.to_path_buf());
    }
    checkpoint::latest(&dir.join("checkpoints")).or_else(|| checkpoint::latest(dir))
}

fn is_hf_directory(dir: &Path) -> bool {
    let has_weights = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"));
    has_weights && dir.join("config.json").is_file()
}

impl Teacher {
    /// Reads the teacher at `path`: a checkpoint directory (`.../checkpoints/step_N`), a run
    /// directory (its newest checkpoint), or an HF Llama directory (config.json +
    /// *.safetensors).
    pub fn load(path: &Path) -> Result<Teacher, DistillError> {
        let not_found = |detail: &str| DistillError::TeacherNotFound {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        };
        if !path.exists() {
            return Err(not_found("no such directory; train a teacher with `vishwam train` and name its logging.output_dir, or name a Hugging Face Llama directory"));
        }
        if !path.is_dir() {
            return Err(not_found("not a directory"));
        }
        if let Some(dir) = find_checkpoint(path) {
            return Teacher::from_checkpoint(&dir);
        }
        if is_hf_directory(path) {
            let (model, params) = hf::import(path).map_err(|e| invalid(path, e.to_string()))?;
            let tokenizer = Some(path.join("tokenizer.json")).filter(|p| p.is_file());
            return Teacher::new(
                TeacherSource::HuggingFace {
                    dir: path.to_path_buf(),
                },
                model,
                params,
                tokenizer,
            );
        }
        Err(not_found("holds neither a vishwam checkpoint (manifest.json, or step_NNNNNNNN directories directly or under checkpoints/) nor a Hugging Face model (config.json and *.safetensors)"))
    }

    fn from_checkpoint(dir: &Path) -> Result<Teacher, DistillError> {
        let ck = checkpoint::load(dir).map_err(|e| invalid(dir, e.to_string()))?;
        let config = Config::from_json_str(&ck.manifest.config.to_string())
            .map_err(|e| invalid(dir, format!("the checkpoint's config: {e}")))?;
        let params = ck
            .state
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("params.")?.to_string(), v)))
            .collect();
        // `<run>/checkpoints/step_N` -> `<run>/tokenizer.json`, as `vishwam train` writes it.
        let tokenizer = dir
            .parent()
            .and_then(Path::parent)
            .map(|run| run.join("tokenizer.json"))
            .filter(|p| p.is_file());
        Teacher::new(
            TeacherSource::Checkpoint {
                dir: dir.to_path_buf(),
                step: ck.manifest.step,
            },
            config.model,
            params,
            tokenizer,
        )
    }

    /// A teacher from parameters by name; every parameter of `model` must be there as f32
    /// with its shape (others, such as a distilled model's projections, are dropped).
    pub fn new(
        source: TeacherSource,
        model: ModelConfig,
        mut params: BTreeMap<String, HostArray>,
        tokenizer: Option<PathBuf>,
    ) -> Result<Teacher, DistillError> {
        let path = match &source {
            TeacherSource::Checkpoint { dir, .. } | TeacherSource::HuggingFace { dir } => {
                dir.clone()
            }
            TeacherSource::Memory => PathBuf::from("(memory)"),
        };
        let mut kept = BTreeMap::new();
        for spec in param_specs(&model) {
            let array = params.remove(&spec.name).ok_or_else(|| {
                invalid(
                    &path,
                    format!(
                        "lacks the parameter `{}` of its own model config",
                        spec.name
                    ),
                )
            })?;
            if array.element_type != ElementType::F32 || array.shape != spec.shape {
                return Err(invalid(
                    &path,
                    format!(
                        "`{}` is {}{:?}, its model config needs f32{:?}",
                        spec.name,
                        array.element_type.mlir_name(),
                        array.shape,
                        spec.shape
                    ),
                ));
            }
            kept.insert(spec.name, array);
        }
        Ok(Teacher {
            source,
            model,
            params: kept,
            tokenizer,
        })
    }

    /// Checks that the teacher can teach the student of `student`: the same vocabulary size
    /// and a context at least as long as the training windows.
    pub fn check_student(&self, student: &Config) -> Result<(), DistillError> {
        if self.model.vocab_size != student.model.vocab_size {
            return Err(DistillError::VocabMismatch {
                teacher: self.model.vocab_size,
                student: student.model.vocab_size,
            });
        }
        if student.seq_len() > self.model.max_seq_len {
            return Err(DistillError::SequenceTooLong {
                seq_len: student.seq_len(),
                teacher_max: self.model.max_seq_len,
            });
        }
        Ok(())
    }

    /// Checks that the student reads text with the teacher's tokenizer (when the teacher came
    /// with one; without one the caller can only trust the matching vocabulary size).
    pub fn check_tokenizer(&self, student: &TextTokenizer) -> Result<(), DistillError> {
        let Some(path) = &self.tokenizer else {
            return Ok(());
        };
        let teacher = TextTokenizer::from_file(path)
            .map_err(|e| invalid(path, format!("its tokenizer: {e}")))?;
        if teacher.hash() != student.hash() {
            return Err(DistillError::TokenizerMismatch {
                teacher: path.clone(),
            });
        }
        Ok(())
    }

    /// Parameters of the teacher (embeddings included).
    pub fn num_parameters(&self) -> usize {
        crate::model::param_counts(&self.model).0
    }
}
