//! The one error type of this crate.

use vishwam_mesh::MeshError;

/// What went wrong while tracing, checking, differentiating or printing a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HloError {
    /// An operation was given operands whose shapes or dtypes it cannot accept.
    #[error("{op}: {detail}")]
    Shape {
        /// The operation, e.g. `dot_general`.
        op: String,
        /// What was wrong, naming the operand types involved.
        detail: String,
    },
    /// A tensor from one graph was used in another.
    #[error("{op}: operand belongs to a different graph; tensors cannot be shared between graphs (pass them in as parameters or loop carries)")]
    GraphMismatch {
        /// The operation that received the foreign tensor.
        op: String,
    },
    /// A graph failed validation.
    #[error("invalid graph `{func}`{}: {detail}", eqn.map(|i| format!(" at equation {i}")).unwrap_or_default())]
    Check {
        /// Name of the function being checked.
        func: String,
        /// Index of the offending equation, when one is to blame.
        eqn: Option<usize>,
        /// What is inconsistent.
        detail: String,
    },
    /// A cotangent had to flow through a primitive that has no gradient rule.
    #[error("cannot differentiate through `{prim}`: {detail}")]
    NotDifferentiable {
        /// Name of the primitive.
        prim: String,
        /// Why, and what to do instead.
        detail: String,
    },
    /// An autodiff request was malformed (wrong cotangent types, non-scalar loss, ...).
    #[error("autodiff: {detail}")]
    Grad {
        /// What was wrong and what was expected.
        detail: String,
    },
    /// A name (parameter, output, map key) was not found.
    #[error("no {kind} named `{name}`; available: [{available}]")]
    UnknownName {
        /// What kind of name: `parameter`, `output`, `tensor`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        available: String,
    },
    /// The printed module would be invalid (e.g. a sharding without a mesh).
    #[error("printing StableHLO: {detail}")]
    Print {
        /// What prevents printing.
        detail: String,
    },
    /// A sharding does not fit the mesh.
    #[error("sharding of `{name}`: {source}")]
    Sharding {
        /// The parameter, output or value whose sharding is invalid.
        name: String,
        /// The mesh error.
        source: MeshError,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, HloError>;

/// Builds a [`HloError::Shape`] error.
pub(crate) fn shape_err(op: &str, detail: impl Into<String>) -> HloError {
    HloError::Shape {
        op: op.to_string(),
        detail: detail.into(),
    }
}
