//! Static attributes of primitives: op kinds, comparison modes and dimension numbers.

use crate::{DType, TensorType};

/// Elementwise operations of one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// -1, 0 or 1 by the sign of `x`.
    Sign,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `log(1 + x)`.
    Log1p,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Logistic,
    /// Square root.
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// The error function (printed as `chlo.erf`).
    Erf,
    /// Logical or bitwise not (booleans and integers).
    Not,
}

/// Elementwise operations of two operands of the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// Elementwise maximum.
    Max,
    /// Elementwise minimum.
    Min,
    /// `a ^ b` (floats).
    Pow,
    /// Logical or bitwise and.
    And,
    /// Logical or bitwise or.
    Or,
    /// Logical or bitwise exclusive or.
    Xor,
    /// Integer shift left.
    ShiftLeft,
    /// Integer logical shift right (zero fill).
    ShiftRightLogical,
}

/// Comparison direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareDir {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// How a comparison interprets its operands; must fit their dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareKind {
    /// IEEE float comparison (NaN compares unequal).
    Float,
    /// Total order on floats (NaNs ordered).
    TotalOrder,
    /// Signed integers.
    Signed,
    /// Unsigned integers and booleans.
    Unsigned,
}

impl CompareKind {
    /// The natural comparison kind for a dtype.
    pub fn for_dtype(dtype: DType) -> CompareKind {
        if dtype.is_float() {
            CompareKind::Float
        } else if dtype.is_unsigned() || dtype.is_bool() {
            CompareKind::Unsigned
        } else {
            CompareKind::Signed
        }
    }
}

/// The combining function of a reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum (init 0).
    Sum,
    /// Maximum (init -inf or the smallest integer).
    Max,
    /// Minimum (init +inf or the largest integer).
    Min,
}

/// The algorithm of `rng_bit_generator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RngAlgorithm {
    /// The backend's default.
    Default,
    /// Threefry (state `u64[2]`).
    ThreeFry,
    /// Philox (state `u64[2]` or `u64[3]`).
    Philox,
}

/// Dimension numbers of `dot_general`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DotDims {
    /// Batch dimensions of the left operand.
    pub lhs_batch: Vec<usize>,
    /// Batch dimensions of the right operand, paired with `lhs_batch`.
    pub rhs_batch: Vec<usize>,
    /// Contracting dimensions of the left operand.
    pub lhs_contract: Vec<usize>,
    /// Contracting dimensions of the right operand, paired with `lhs_contract`.
    pub rhs_contract: Vec<usize>,
}

/// Dimension numbers of `gather` (StableHLO semantics, without batching dims).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GatherDims {
    /// Result dimensions that hold the slice (window) dimensions.
    pub offset_dims: Vec<usize>,
    /// Operand dimensions whose slice size is 1 and that are dropped from the result.
    pub collapsed_slice_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub start_index_map: Vec<usize>,
    /// Dimension of the indices that holds the index vectors (may equal their rank).
    pub index_vector_dim: usize,
}

/// Dimension numbers of `scatter` (StableHLO semantics, without batching dims).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ScatterDims {
    /// Update dimensions that are window dimensions.
    pub update_window_dims: Vec<usize>,
    /// Operand dimensions of size-1 windows that the updates do not carry.
    pub inserted_window_dims: Vec<usize>,
    /// Operand dimension addressed by each component of an index vector.
    pub scatter_dims_to_operand_dims: Vec<usize>,
    /// Dimension of the indices that holds the index vectors (may equal their rank).
    pub index_vector_dim: usize,
}

/// Static description of a `stablehlo.custom_call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomCallSpec {
    /// The registered target, e.g. `__cudnn$fmhaSoftmax`.
    pub target: String,
    /// Opaque configuration string passed to the target (often JSON).
    pub backend_config: String,
    /// True when the call has effects beyond its results (never removed or merged).
    pub has_side_effect: bool,
    /// The custom-call API version: 1 to 3 (string `backend_config`; 2 is the status-returning
    /// form cuDNN kernels use). The typed-FFI version 4 is rejected.
    pub api_version: u32,
    /// The result types.
    pub result_types: Vec<TensorType>,
    /// Physical layout (minor-to-major dims) of each operand; empty for XLA's default.
    pub operand_layouts: Vec<Vec<usize>>,
    /// Physical layout (minor-to-major dims) of each result; empty for XLA's default.
    pub result_layouts: Vec<Vec<usize>>,
}

impl CustomCallSpec {
    /// A call of `target` returning `result_types`: API version 2, empty config, no side
    /// effects, default layouts.
    pub fn new(target: &str, result_types: Vec<TensorType>) -> CustomCallSpec {
        CustomCallSpec {
            target: target.to_string(),
            backend_config: String::new(),
            has_side_effect: false,
            api_version: 2,
            result_types,
            operand_layouts: Vec::new(),
            result_layouts: Vec::new(),
        }
    }
}
