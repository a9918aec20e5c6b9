//! The training error type.

use crate::engine::EngineError;

/// What can stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// From the engine (runtime, mesh, compilation).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// From tracing the step.
    #[error(transparent)]
    Hlo(#[from] vishwam_hlo::HloError),
    /// From building the mesh or the sharding plan.
    #[error(transparent)]
    Mesh(#[from] vishwam_mesh::MeshError),
    /// From the runtime.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: String, detail: String },
    /// File I/O.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// `--init-from` weights that cannot be read or do not fit the run.
    #[error("--init-from {}: {detail}", path.display())]
    InitFrom {
        path: std::path::PathBuf,
        detail: String,
    },
    /// A Hugging Face directory that cannot be read.
    #[error(transparent)]
    Hf(#[from] crate::model::hf::HfError),
    /// A teacher that cannot be loaded or does not fit the student.
    #[error(transparent)]
    Distill(#[from] super::distill::DistillError),
    /// The platform or its devices do not fit the config.
    #[error(transparent)]
    Setup(#[from] super::setup::SetupError),
    /// The loss or gradient became NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    /// Anything else, with a message that says what to do.
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TrainError::Io {
            context: context.into(),
            source,
        }
    }
}
