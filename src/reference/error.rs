//! What can go wrong in the Candle reference.

use crate::runtime::ElementType;

/// Errors of the Candle reference model, optimizer and comparison tools.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A Candle tensor operation failed (a bug in the reference or an exhausted allocator).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The configuration asks for something the reference does not implement.
    #[error("the Candle reference does not support {feature}: {hint}")]
    Unsupported {
        /// The configuration key or feature.
        feature: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The model configuration is inconsistent (the reference checks what it relies on).
    #[error("invalid model configuration: {key} must be {expected}, got {got}")]
    InvalidConfig {
        /// The key path, e.g. `model.num_kv_heads`.
        key: &'static str,
        /// The rule.
        expected: String,
        /// The offending value.
        got: String,
    },
    /// A parameter required by docs/model.md is not in the given set.
    #[error("parameter `{name}` is missing (expected shape {expected:?}); the set must hold exactly the parameters of docs/model.md")]
    MissingParameter {
        /// The parameter name.
        name: String,
        /// Its shape under the configuration.
        expected: Vec<usize>,
    },
    /// The given set holds a parameter the configuration does not have.
    #[error("parameter `{name}` is not part of this model (tie_embeddings and num_layers decide which names exist)")]
    UnexpectedParameter {
        /// The parameter name.
        name: String,
    },
    /// A parameter or gradient has the wrong shape.
    #[error("`{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// Shape under the configuration.
        expected: Vec<usize>,
        /// Shape given.
        got: Vec<usize>,
    },
    /// A host array of an element type the reference cannot load.
    #[error(
        "`{name}` holds {element_type:?}; the reference loads f32, f64, bf16 and f16 parameters"
    )]
    UnsupportedElementType {
        /// The array name.
        name: String,
        /// Its element type.
        element_type: ElementType,
    },
    /// A host array whose bytes do not match its shape and type.
    #[error("`{name}` is malformed: {reason}")]
    MalformedArray {
        /// The array name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A batch whose buffers do not match its declared shape.
    #[error("batch {what} has {got} elements, expected {expected} (batch_size x seq_len)")]
    BatchShape {
        /// Which buffer (tokens, targets, mask).
        what: &'static str,
        /// batch_size x seq_len.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A sequence longer than the model supports, or an empty batch.
    #[error("batch of {batch_size} x {seq_len} tokens is not allowed: {reason}")]
    BatchSize {
        /// Sequences in the batch.
        batch_size: usize,
        /// Tokens per sequence.
        seq_len: usize,
        /// The rule broken.
        reason: String,
    },
    /// A token id or (unmasked) target outside the vocabulary.
    #[error(
        "{what} at flat position {position} is {id}, outside the vocabulary [0, {vocab_size})"
    )]
    TokenOutOfRange {
        /// `token` or `target`.
        what: &'static str,
        /// Row-major index into the batch.
        position: usize,
        /// The offending id.
        id: i64,
        /// `model.vocab_size`.
        vocab_size: usize,
    },
    /// A loss-mask value that is not a finite number >= 0.
    #[error("mask at flat position {position} is {value}; mask values must be finite and >= 0 (1 = real target, 0 = padding)")]
    InvalidMask {
        /// Row-major index into the batch.
        position: usize,
        /// The offending value.
        value: f32,
    },
    /// The gradients passed to the optimizer lack a parameter.
    #[error("no gradient for parameter `{name}`; pass the gradients of the same model")]
    MissingGradient {
        /// The parameter name.
        name: String,
    },
    /// The optimizer was asked for step 0 (steps count from 1).
    #[error(
        "optimizer step {t} is invalid: steps count from 1 (bias correction divides by 1 - beta^t)"
    )]
    InvalidStep {
        /// The step given.
        t: usize,
    },
    /// Reading or writing a safetensors file failed.
    #[error("safetensors file {path}: {source}")]
    Safetensors {
        /// The file.
        path: std::path::PathBuf,
        /// Candle's error.
        source: candle_core::Error,
    },
}

/// Result of the Candle reference.
pub type Result<T, E = ReferenceError> = std::result::Result<T, E>;
