//! The runtime's error type and the PJRT status codes.

use std::path::PathBuf;

/// A PJRT status code (absl status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PjrtCode {
    /// The operation was cancelled.
    Cancelled,
    /// Unknown error.
    Unknown,
    /// The caller passed an invalid argument (e.g. malformed MLIR).
    InvalidArgument,
    /// A deadline passed.
    DeadlineExceeded,
    /// Something was not found.
    NotFound,
    /// Something already exists.
    AlreadyExists,
    /// Permission denied.
    PermissionDenied,
    /// Out of memory or another resource.
    ResourceExhausted,
    /// The system is not in a state required for the operation (e.g. a deleted buffer).
    FailedPrecondition,
    /// Aborted.
    Aborted,
    /// Out of range.
    OutOfRange,
    /// Not implemented by this plugin.
    Unimplemented,
    /// Internal error of the plugin.
    Internal,
    /// Unavailable.
    Unavailable,
    /// Data loss.
    DataLoss,
    /// Unauthenticated.
    Unauthenticated,
    /// A code this binding does not know.
    Other(i32),
}

impl PjrtCode {
    /// Maps the C enum value.
    pub fn from_raw(code: i32) -> PjrtCode {
        use PjrtCode::*;
        match code {
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            other => Other(other),
        }
    }
}

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A PJRT call returned an error.
    #[error("PJRT {function} failed ({code:?}): {message}")]
    Pjrt {
        function: &'static str,
        code: PjrtCode,
        message: String,
    },
    /// The plugin file could not be found.
    #[error("PJRT plugin for platform `{platform}` not found: {detail}")]
    PluginNotFound { platform: String, detail: String },
    /// The plugin could not be loaded.
    #[error("cannot load PJRT plugin {path}: {detail}")]
    PluginLoad { path: PathBuf, detail: String },
    /// Installing the plugin failed.
    #[error("cannot install the PJRT plugin for `{platform}`: {detail}")]
    PluginInstall { platform: String, detail: String },
    /// The plugin speaks an incompatible PJRT C API.
    #[error("PJRT plugin {path} speaks C API {major}.{minor}; vishwam needs major version {expected_major} and minor >= {min_minor}. Install the plugin vishwam was built for (jax 0.11.x generation) or pass --plugin PATH")]
    IncompatibleApi {
        path: PathBuf,
        major: i32,
        minor: i32,
        expected_major: i32,
        min_minor: i32,
    },
    /// The plugin's function table lacks an entry.
    #[error("PJRT function {function} is not available in this plugin (its API table is too old)")]
    MissingFunction { function: &'static str },
    /// A device attribute vishwam reads has a type other than the one PJRT documents.
    #[error(
        "device {device} reports attribute `{attribute}` as {value}, not the documented type \
             (`coords`: an int64 list, `core_on_chip`: an int64)"
    )]
    BadDeviceAttribute {
        /// Position of the device in the client's list.
        device: usize,
        /// The attribute's name.
        attribute: &'static str,
        /// What the device reported.
        value: String,
    },
    /// Host data does not match the declared shape and element type.
    #[error(
        "host data for a {element_type:?}{dims:?} buffer must be {expected} bytes, got {actual}"
    )]
    HostSize {
        element_type: super::ElementType,
        dims: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    /// The plugin reported an element type vishwam does not handle.
    #[error("unsupported PJRT element type code {0}")]
    UnsupportedElementType(i32),
    /// Arguments passed to execute do not fit the executable.
    #[error("execute: {0}")]
    Execute(String),
    /// A buffer that was donated or deleted was used again.
    #[error("buffer was donated to a previous execution or deleted; it cannot be used again")]
    BufferDeleted,
    /// I/O while caching, installing or reading files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// Any other runtime-level error.
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }

    /// The PJRT status code, when this error came from the plugin.
    pub fn pjrt_code(&self) -> Option<PjrtCode> {
        match self {
            RuntimeError::Pjrt { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
