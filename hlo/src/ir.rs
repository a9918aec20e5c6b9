//! The IR: values, a closed set of primitives, equations and functions.
//!
//! A [`Func`] is a list of typed parameters, a flat list of equations in definition order
//! (SSA: every value is defined once, before use) and named outputs. Value ids index
//! [`Func::types`]. Sub-functions (loop bodies, remat regions, custom-vjp rules) are
//! shared [`Arc<Func>`]s inside the primitive that uses them.

pub use crate::attrs::{
    BinaryOp, CompareDir, CompareKind, CustomCallSpec, DotDims, GatherDims, ReduceKind,
    RngAlgorithm, ScatterDims, UnaryOp,
};
use crate::literal::Literal;
use crate::manual::ManualAxes;
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

/// A primitive operation with its static parameters. The set is closed: adding one means
/// a variant here plus its shape rule (`infer`), gradient rule (`ad_rules`) and printer.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// A constant (no inputs).
    Constant {
        /// Its type.
        ty: TensorType,
        /// Its data.
        value: Literal,
    },
    /// Values `0, 1, ...` along one dimension (no inputs).
    Iota {
        /// The result type.
        ty: TensorType,
        /// The dimension that counts.
        dim: usize,
    },
    /// Elementwise numeric conversion.
    Convert {
        /// The result dtype.
        to: DType,
    },
    /// Reinterpret the bits as another dtype of the same width.
    BitcastConvert {
        /// The result dtype.
        to: DType,
    },
    /// Elementwise unary operation.
    Unary(UnaryOp),
    /// Elementwise binary operation on operands of the same type.
    Binary(BinaryOp),
    /// Elementwise comparison; result `i1`.
    Compare {
        /// Which comparison.
        dir: CompareDir,
        /// How operands are interpreted (must fit their dtype).
        kind: CompareKind,
    },
    /// `select(pred, on_true, on_false)`, all of the same shape.
    Select,
    /// Generalised matrix product.
    DotGeneral {
        /// Batch and contracting dimensions.
        dims: DotDims,
        /// The result dtype (e.g. f32 for bf16 operands).
        out_dtype: DType,
    },
    /// Same elements, new shape.
    Reshape {
        /// The result shape.
        shape: Vec<i64>,
    },
    /// Permute dimensions.
    Transpose {
        /// Result dim `i` is operand dim `perm[i]`.
        perm: Vec<usize>,
    },
    /// Broadcast into a larger shape.
    BroadcastInDim {
        /// The result shape.
        shape: Vec<i64>,
        /// Operand dim `i` becomes result dim `dims[i]` (strictly increasing).
        dims: Vec<usize>,
    },
    /// Static strided slice.
    Slice {
        /// First index per dimension.
        start: Vec<i64>,
        /// One past the last index per dimension.
        limit: Vec<i64>,
        /// Step per dimension (at least 1).
        stride: Vec<i64>,
    },
    /// Slice at run-time start indices (inputs: operand, one integer scalar per dim).
    DynamicSlice {
        /// The slice shape.
        sizes: Vec<i64>,
    },
    /// Overwrite a block at run-time start indices (inputs: operand, update, one scalar per dim).
    DynamicUpdateSlice,
    /// Join operands along a dimension.
    Concatenate {
        /// The dimension joined along.
        dim: usize,
    },
    /// Pad with a scalar (inputs: operand, padding value).
    Pad {
        /// Padding before each dimension (negative crops).
        low: Vec<i64>,
        /// Padding after each dimension (negative crops).
        high: Vec<i64>,
        /// Padding between the elements of each dimension.
        interior: Vec<i64>,
    },
    /// Reduction over some dimensions.
    Reduce {
        /// The combining function.
        kind: ReduceKind,
        /// The reduced dimensions (sorted, distinct).
        dims: Vec<usize>,
    },
    /// Reduction of several operands together by a traced combiner (inputs: the `n`
    /// operands, all of one shape, then `n` scalar initial values; `n` results). The body maps
    /// `n` accumulators and `n` elements to `n` accumulators; it must be associative and
    /// commutative, since the backend combines partial results in any order.
    ReduceWith {
        /// The reduced dimensions (sorted, distinct).
        dims: Vec<usize>,
        /// The combiner: `2n` scalar parameters (accumulators, then elements), `n` outputs.
        body: Arc<Func>,
    },
    /// Index of the maximum along a dimension (the first on ties; NaN counts as maximum).
    Argmax {
        /// The dimension searched (removed from the result).
        dim: usize,
        /// The integer dtype of the result.
        index_dtype: DType,
    },
    /// StableHLO gather (inputs: operand, start indices).
    Gather {
        /// Dimension numbers.
        dims: GatherDims,
        /// The slice taken at each index, per operand dimension.
        slice_sizes: Vec<i64>,
        /// Promise that the indices are sorted.
        indices_are_sorted: bool,
    },
    /// StableHLO scatter with addition (inputs: operand, indices, updates).
    ScatterAdd {
        /// Dimension numbers.
        dims: ScatterDims,
        /// Promise that the indices are sorted.
        indices_are_sorted: bool,
        /// Promise that no index repeats.
        unique_indices: bool,
    },
    /// Random bits (input: state; outputs: new state, bits).
    RngBitGenerator {
        /// The generator.
        algorithm: RngAlgorithm,
        /// The type of the bits.
        ty: TensorType,
    },
    /// Shardy sharding constraint on the mesh of the printed module.
    ShardingConstraint {
        /// How the value is split.
        spec: PartitionSpec,
    },
    /// Identity on all operands that the compiler may not look through or move code across.
    OptimizationBarrier,
    /// Identity whose gradient is zero; prints as nothing.
    StopGradient,
    /// Loop over a carry (the inputs); not differentiable.
    While {
        /// Maps the carry to an `i1` scalar: continue while true.
        cond: Arc<Func>,
        /// Maps the carry to the next carry.
        body: Arc<Func>,
    },
    /// A call of an external kernel; not differentiable (wrap it in a custom vjp).
    CustomCall(Box<CustomCallSpec>),
    /// A rematerialised region: inlined in the forward pass and recomputed from its inputs
    /// (behind an optimization barrier) in the backward pass.
    Remat {
        /// A label for messages.
        name: String,
        /// The region, from the inputs to the outputs.
        body: Arc<Func>,
    },
    /// A region run once per device on its local shards (`sdy.manual_computation`, see
    /// `manual.rs`); not differentiable (wrap it in a custom vjp).
    ManualComputation {
        /// A label for messages.
        name: String,
        /// The manual axes and the operand and result specs.
        manual: Box<ManualAxes>,
        /// The region, from the local operands to the local results.
        body: Arc<Func>,
    },
    /// A region with its own backward rule.
    CustomVjp {
        /// A label for messages.
        name: String,
        /// Computes the outputs from the inputs.
        fwd: Arc<Func>,
        /// Maps (inputs, outputs, output cotangents) to the cotangents of the float inputs.
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
            Prim::ReduceWith { .. } => "reduce_with",
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
            Prim::ManualComputation { .. } => "manual_computation",
        }
    }

    /// Number of results, known without the operand types.
    pub fn num_outputs(&self, num_inputs: usize) -> usize {
        match self {
            Prim::OptimizationBarrier => num_inputs,
            Prim::RngBitGenerator { .. } => 2,
            Prim::While { body, .. } => body.outputs.len(),
            Prim::ReduceWith { body, .. } => body.outputs.len(),
            Prim::CustomCall(spec) => spec.result_types.len(),
            Prim::Remat { body, .. } => body.outputs.len(),
            Prim::CustomVjp { fwd, .. } => fwd.outputs.len(),
            Prim::ManualComputation { body, .. } => body.outputs.len(),
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
