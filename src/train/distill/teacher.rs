//! The teacher of a distillation run, read from disk: a vishwam checkpoint (or the run
//! directory holding it, whose newest checkpoint is used) or a Hugging Face
//! Llama-architecture directory.

use super::DistillError;
use crate::config::{Config, ModelConfig};
use crate::data::TextTokenizer;
use crate::engine::HostArray;
use crate::train::weights::{self, WeightsError, WeightsSource};
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

impl From<WeightsSource> for TeacherSource {
    fn from(source: WeightsSource) -> Self {
        match source {
            WeightsSource::Checkpoint { dir, step } => TeacherSource::Checkpoint { dir, step },
            WeightsSource::HuggingFace { dir } => TeacherSource::HuggingFace { dir },
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

impl Teacher {
    /// Reads the teacher at `path` ([`weights::read`]): a checkpoint directory
    /// (`.../checkpoints/step_N`), a run directory (its newest checkpoint), an HF Llama
    /// directory (config.json + *.safetensors), or a model id or short name in the local
    /// Hugging Face cache.
    pub fn load(path: &Path) -> Result<Teacher, DistillError> {
        let not_found = |detail: &str| DistillError::TeacherNotFound {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        };
        let stored = weights::read(path).map_err(|e| match e {
            WeightsError::Missing => not_found("no such directory; train a teacher with `vishwam train` and name its logging.output_dir, or name a Hugging Face Llama directory or a model id in the local Hugging Face cache (google/gemma-7b)"),
            WeightsError::NotADirectory => not_found("not a directory"),
            WeightsError::NoWeights => not_found("holds neither a vishwam checkpoint (manifest.json, or step_NNNNNNNN directories directly or under checkpoints/) nor a Hugging Face model (config.json and *.safetensors)"),
            WeightsError::Checkpoint(e) => invalid(path, e.to_string()),
            WeightsError::Hf(e) => invalid(path, e.to_string()),
            WeightsError::Cache(e) => DistillError::TeacherNotFound {
                path: path.to_path_buf(),
                detail: e.to_string(),
            },
            WeightsError::Config { dir, detail } => invalid(&dir, detail),
        })?;
        Teacher::new(
            stored.source.into(),
            stored.model,
            stored.params,
            stored.tokenizer,
        )
    }

    /// A teacher from parameters by name; every parameter of `model` must be there as f32
    /// with its shape (others, such as a distilled model's projections, are dropped).
    pub fn new(
        source: TeacherSource,
        model: ModelConfig,
        params: BTreeMap<String, HostArray>,
        tokenizer: Option<PathBuf>,
    ) -> Result<Teacher, DistillError> {
        let path = match &source {
            TeacherSource::Checkpoint { dir, .. } | TeacherSource::HuggingFace { dir } => {
                dir.clone()
            }
            TeacherSource::Memory => PathBuf::from("(memory)"),
        };
        let (params, _others) =
            weights::model_params(&model, params).map_err(|detail| invalid(&path, detail))?;
        Ok(Teacher {
            source,
            model,
            params,
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
