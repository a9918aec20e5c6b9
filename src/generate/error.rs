//! The error type of generation and evaluation.

use crate::engine::EngineError;

/// What can stop loading a model, generating or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// No checkpoint where the user pointed.
    #[error("no checkpoint at {path}: {detail}")]
    CheckpointNotFound {
        /// The directory given.
        path: String,
        /// What was looked for.
        detail: String,
    },
    /// The checkpoint could not be read or does not fit the model its config describes.
    #[error(transparent)]
    Checkpoint(Box<crate::train::TrainError>),
    /// The configuration stored in (or given with) the checkpoint is not valid.
    #[error(transparent)]
    Config(Box<crate::config::ConfigError>),
    /// A parameter is missing from the checkpoint or has the wrong shape.
    #[error("checkpoint parameter `{name}`: {detail}")]
    Parameter {
        /// The parameter's name (without the `params.` prefix).
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A prompt does not fit the model.
    #[error("prompt {row}: {detail}")]
    Prompt {
        /// Which prompt (0-based).
        row: usize,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A sampling or evaluation option is out of range.
    #[error("{option} = {value}: expected {expected}")]
    Option {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        expected: String,
    },
    /// The model asks for something generation cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// From the engine (runtime, compilation, transfers).
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// From tracing a program.
    #[error(transparent)]
    Hlo(Box<vishwam_hlo::HloError>),
    /// From the runtime.
    #[error(transparent)]
    Runtime(Box<crate::runtime::RuntimeError>),
    /// Reading or tokenising text failed.
    #[error("{0}")]
    Text(String),
    /// A host array did not hold what was expected.
    #[error("{0}")]
    HostArray(String),
}

macro_rules! boxed_from {
    ($($variant:ident($source:ty)),* $(,)?) => {$(
        impl From<$source> for GenerateError {
            fn from(e: $source) -> Self {
                GenerateError::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Checkpoint(crate::train::TrainError),
    Config(crate::config::ConfigError),
    Engine(EngineError),
    Hlo(vishwam_hlo::HloError),
    Runtime(crate::runtime::RuntimeError),
);
