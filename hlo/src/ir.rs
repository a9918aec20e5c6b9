//! The IR: values, a closed set of primitives, equations and functions.
//!
//! A [`Func`] is a list of typed parameters, a flat list of equations in definition order
//! (SSA: every value is defined once, before use) and named outputs. Value ids index
//! [`Func::types`]. Sub-functions (loop bodies, remat regions, custom-vjp rules) are
//! shared [`Arc<Func>`]s inside the primitive that uses them.

use crate::literal::Literal;
use crate::{DType, TensorType};
use std::sync::Arc;
use vishwam_mesh::PartitionSpec;

/// Identifies one value of a function; indexes [`Func::types`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The id as an index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

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
    /// The custom-call API version (2: status-returning, 4: typed FFI).
    pub api_version: u32,
    /// The result types.
    pub result_types: Vec<TensorType>,
}

/// A primitive operation with its static parameters. The set is closed: adding one means
/// a variant here plus its shape rule (`infer`), gradient rule (`ad_rules`) and printer.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// A constant of type `ty` (no inputs).
    Constant { ty: TensorType, value: Literal },
    /// Values `0, 1, ...` along `dim` of `ty` (no inputs).
    Iota { ty: TensorType, dim: usize },
    /// Elementwise numeric conversion to `to`.
    Convert { to: DType },
    /// Reinterpret the bits as `to` (same width).
    BitcastConvert { to: DType },
    /// Elementwise unary operation.
    Unary(UnaryOp),
    /// Elementwise binary operation on operands of the same type.
    Binary(BinaryOp),
    /// Elementwise comparison; result `i1`.
    Compare { dir: CompareDir, kind: CompareKind },
    /// `select(pred, on_true, on_false)`, all of the same shape.
    Select,
    /// Generalised matrix product; the result has dtype `out_dtype`.
    DotGeneral { dims: DotDims, out_dtype: DType },
    /// Same elements, new shape.
    Reshape { shape: Vec<i64> },
    /// Permute dimensions: result dim `i` is operand dim `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Broadcast: operand dim `i` becomes result dim `dims[i]` (strictly increasing).
    BroadcastInDim { shape: Vec<i64>, dims: Vec<usize> },
    /// Static strided slice.
    Slice {
        start: Vec<i64>,
        limit: Vec<i64>,
        stride: Vec<i64>,
    },
    /// Slice of `sizes` at dynamic start indices (inputs: operand, one scalar per dim).
    DynamicSlice { sizes: Vec<i64> },
    /// Overwrite a block at dynamic start indices (inputs: operand, update, one scalar per dim).
    DynamicUpdateSlice,
    /// Join operands along `dim`.
    Concatenate { dim: usize },
    /// Pad with a scalar (inputs: operand, padding value); negative low/high crop.
    Pad {
        low: Vec<i64>,
        high: Vec<i64>,
        interior: Vec<i64>,
    },
    /// Reduce over `dims` (sorted, distinct).
    Reduce { kind: ReduceKind, dims: Vec<usize> },
    /// Index of the maximum along `dim` (first on ties, NaN wins), as `index_dtype`.
    Argmax { dim: usize, index_dtype: DType },
    /// StableHLO gather (inputs: operand, start indices).
    Gather {
        dims: GatherDims,
        slice_sizes: Vec<i64>,
        indices_are_sorted: bool,
    },
    /// StableHLO scatter with addition (inputs: operand, indices, updates).
    ScatterAdd {
        dims: ScatterDims,
        indices_are_sorted: bool,
        unique_indices: bool,
    },
    /// Random bits (input: state; outputs: new state, bits of type `ty`).
    RngBitGenerator {
        algorithm: RngAlgorithm,
        ty: TensorType,
    },
    /// Shardy sharding constraint on the mesh of the printed module.
    ShardingConstraint { spec: PartitionSpec },
    /// Identity on all operands that the compiler may not look through or move code across.
    OptimizationBarrier,
    /// Identity whose gradient is zero; prints as nothing.
    StopGradient,
    /// Loop: `cond` maps the carry to an `i1` scalar, `body` maps the carry to a new carry.
    While { cond: Arc<Func>, body: Arc<Func> },
    /// A call of an external kernel; not differentiable (wrap it in a custom vjp).
    CustomCall(Box<CustomCallSpec>),
    /// A rematerialised region: `body` is inlined in the forward pass and recomputed from
    /// its inputs (behind an optimization barrier) in the backward pass.
    Remat { name: String, body: Arc<Func> },
    /// A region with its own backward rule: `fwd` computes the outputs from the inputs;
    /// `bwd` maps (inputs, outputs, output cotangents) to the cotangents of the float inputs.
    CustomVjp {
        name: String,
        fwd: Arc<Func>,
        bwd: Arc<Func>,
    },
}

impl Prim {
    /// The primitive's name, as used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Prim::Constant { .. } => "constant",
            Prim::Iota { .. } => "iota",
            Prim::Convert { .. } => "convert",
            Prim::BitcastConvert { .. } => "bitcast_convert",
            Prim::Unary(op) => match op {
                UnaryOp::Neg => "negate",
                UnaryOp::Abs => "abs",
                UnaryOp::Sign => "sign",
                UnaryOp::Exp => "exponential",
                UnaryOp::Log => "log",
                UnaryOp::Log1p => "log_plus_one",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Logistic => "logistic",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Rsqrt => "rsqrt",
                UnaryOp::Sin => "sine",
                UnaryOp::Cos => "cosine",
                UnaryOp::Erf => "erf",
                UnaryOp::Not => "not",
            },
            Prim::Binary(op) => match op {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "subtract",
                BinaryOp::Mul => "multiply",
                BinaryOp::Div => "divide",
                BinaryOp::Max => "maximum",
                BinaryOp::Min => "minimum",
                BinaryOp::Pow => "power",
                BinaryOp::And => "and",
                BinaryOp::Or => "or",
                BinaryOp::Xor => "xor",
                BinaryOp::ShiftLeft => "shift_left",
                BinaryOp::ShiftRightLogical => "shift_right_logical",
            },
            Prim::Compare { .. } => "compare",
            Prim::Select => "select",
            Prim::DotGeneral { .. } => "dot_general",
            Prim::Reshape { .. } => "reshape",
            Prim::Transpose { .. } => "transpose",
            Prim::BroadcastInDim { .. } => "broadcast_in_dim",
            Prim::Slice { .. } => "slice",
            Prim::DynamicSlice { .. } => "dynamic_slice",
            Prim::DynamicUpdateSlice => "dynamic_update_slice",
            Prim::Concatenate { .. } => "concatenate",
            Prim::Pad { .. } => "pad",
            Prim::Reduce { .. } => "reduce",
            Prim::Argmax { .. } => "argmax",
            Prim::Gather { .. } => "gather",
            Prim::ScatterAdd { .. } => "scatter_add",
            Prim::RngBitGenerator { .. } => "rng_bit_generator",
            Prim::ShardingConstraint { .. } => "sharding_constraint",
            Prim::OptimizationBarrier => "optimization_barrier",
            Prim::StopGradient => "stop_gradient",
            Prim::While { .. } => "while",
            Prim::CustomCall(_) => "custom_call",
            Prim::Remat { .. } => "remat",
            Prim::CustomVjp { .. } => "custom_vjp",
        }
    }

    /// Number of results, known without the operand types.
    pub fn num_outputs(&self, num_inputs: usize) -> usize {
        match self {
            Prim::OptimizationBarrier => num_inputs,
            Prim::RngBitGenerator { .. } => 2,
            Prim::While { body, .. } => body.outputs.len(),
            Prim::CustomCall(spec) => spec.result_types.len(),
            Prim::Remat { body, .. } => body.outputs.len(),
            Prim::CustomVjp { fwd, .. } => fwd.outputs.len(),
            Prim::Constant { .. }
            | Prim::Iota { .. }
            | Prim::Convert { .. }
            | Prim::BitcastConvert { .. }
            | Prim::Unary(_)
            | Prim::Binary(_)
            | Prim::Compare { .. }
            | Prim::Select
            | Prim::DotGeneral { .. }
            | Prim::Reshape { .. }
            | Prim::Transpose { .. }
            | Prim::BroadcastInDim { .. }
            | Prim::Slice { .. }
            | Prim::DynamicSlice { .. }
            | Prim::DynamicUpdateSlice
            | Prim::Concatenate { .. }
            | Prim::Pad { .. }
            | Prim::Reduce { .. }
            | Prim::Argmax { .. }
            | Prim::Gather { .. }
            | Prim::ScatterAdd { .. }
            | Prim::ShardingConstraint { .. }
            | Prim::StopGradient => 1,
        }
    }

    /// True when the equation must be kept even if its results are unused.
    pub fn has_side_effect(&self) -> bool {
        matches!(self, Prim::CustomCall(spec) if spec.has_side_effect)
    }
}

/// One equation: `outputs = prim(inputs)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Eqn {
    /// The primitive and its static parameters.
    pub prim: Prim,
    /// Operand values.
    pub inputs: Vec<ValueId>,
    /// Result values (defined here).
    pub outputs: Vec<ValueId>,
}

/// A function parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name, e.g. `layers.3.attn.wq`.
    pub name: String,
    /// The value it defines.
    pub value: ValueId,
    /// Its type.
    pub ty: TensorType,
    /// How it is split over the mesh, if at all.
    pub sharding: Option<PartitionSpec>,
    /// Index of the output that may reuse (alias) this argument's buffer.
    pub donate_to: Option<usize>,
}

/// A named function result.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Name, e.g. `loss` or `grad.layers.0.mlp.w1`.
    pub name: String,
    /// The value returned.
    pub value: ValueId,
    /// How it is split over the mesh, if at all.
    pub sharding: Option<PartitionSpec>,
}

/// A traced function.
#[derive(Debug, Clone, PartialEq)]
pub struct Func {
    /// Name (the module name when printed).
    pub name: String,
    /// Parameters in argument order.
    pub params: Vec<Param>,
    /// Equations in definition order.
    pub eqns: Vec<Eqn>,
    /// Type of every value id.
    pub types: Vec<TensorType>,
    /// Results in order.
    pub outputs: Vec<Output>,
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

impl Func {
    /// Type of a value.
    pub fn value_type(&self, id: ValueId) -> &TensorType {
        &self.types[id.index()]
    }

    /// Index of the parameter called `name`.
    pub fn param_index(&self, name: &str) -> crate::Result<usize> {
        self.params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| crate::HloError::UnknownName {
                kind: "parameter",
                name: name.to_string(),
                available: names(self.params.iter().map(|p| p.name.as_str())),
            })
    }

    /// Index of the output called `name`.
    pub fn output_index(&self, name: &str) -> crate::Result<usize> {
        self.outputs
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| crate::HloError::UnknownName {
                kind: "output",
                name: name.to_string(),
                available: names(self.outputs.iter().map(|o| o.name.as_str())),
            })
    }

    /// Lets output `output` reuse the buffer of parameter `param` (they must have one type).
    pub fn donate(&mut self, param: &str, output: &str) -> crate::Result<()> {
        let p = self.param_index(param)?;
        let o = self.output_index(output)?;
        let out_ty = self.value_type(self.outputs[o].value);
        if &self.params[p].ty != out_ty {
            return Err(crate::HloError::Check {
                func: self.name.clone(),
                eqn: None,
                detail: format!(
                    "parameter `{param}` of type {} cannot be donated to output `{output}` of type {out_ty}",
                    self.params[p].ty
                ),
            });
        }
        if let Some(other) = self.params.iter().find(|q| q.donate_to == Some(o)) {
            return Err(crate::HloError::Check {
                func: self.name.clone(),
                eqn: None,
                detail: format!(
                    "output `{output}` already aliases parameter `{}`",
                    other.name
                ),
            });
        }
        self.params[p].donate_to = Some(o);
        Ok(())
    }

    /// Sets the sharding of parameter `name`.
    pub fn set_param_sharding(&mut self, name: &str, spec: PartitionSpec) -> crate::Result<()> {
        let p = self.param_index(name)?;
        self.params[p].sharding = Some(spec);
        Ok(())
    }

    /// Sets the sharding of output `name`.
    pub fn set_output_sharding(&mut self, name: &str, spec: PartitionSpec) -> crate::Result<()> {
        let o = self.output_index(name)?;
        self.outputs[o].sharding = Some(spec);
        Ok(())
    }
}
