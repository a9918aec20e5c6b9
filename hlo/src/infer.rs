//! Shape and dtype rules: the result types of every primitive, or an error that names the
//! operation and the offending operand types.

use crate::error::{shape_err, Result};
use crate::infer_index::{infer_dot_general, infer_gather, infer_scatter_add};
use crate::infer_shape::{concatenate, dynamic_slice, dynamic_update_slice, pad, slice};
use crate::ir::{BinaryOp, CompareKind, Func, Prim, ReduceKind, RngAlgorithm, UnaryOp};
use crate::literal::Literal;
use crate::{DType, TensorType};

/// Result types of `prim` applied to operands of types `inputs`.
pub fn infer(prim: &Prim, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
    let op = prim.name();
    let one = |t: TensorType| Ok(vec![t]);
    match prim {
        Prim::Constant { ty, value } => {
            arity(op, inputs, 0)?;
            let (len, want) = match value {
                Literal::Splat(b) => (b.len(), ty.dtype.size_bytes()),
                Literal::Dense(b) => (b.len(), ty.size_bytes()),
            };
            if len != want {
                return Err(shape_err(
                    op,
                    format!("{ty} needs {want} bytes of data, got {len}"),
                ));
            }
            check_dims(op, ty)?;
            one(ty.clone())
        }
        Prim::Iota { ty, dim } => {
            arity(op, inputs, 0)?;
            check_dims(op, ty)?;
            if *dim >= ty.rank() || ty.dtype.is_bool() {
                return Err(shape_err(
                    op,
                    format!("dimension {dim} is not a dimension of {ty}"),
                ));
            }
            one(ty.clone())
        }
        Prim::Convert { to } => {
            arity(op, inputs, 1)?;
            one(inputs[0].with_dtype(*to))
        }
        Prim::BitcastConvert { to } => {
            arity(op, inputs, 1)?;
            let from = inputs[0].dtype;
            if from.size_bytes() != to.size_bytes() || from.is_bool() || to.is_bool() {
                return Err(shape_err(
                    op,
                    format!(
                        "cannot reinterpret {} as {to}: element widths differ",
                        inputs[0]
                    ),
                ));
            }
            one(inputs[0].with_dtype(*to))
        }
        Prim::Unary(u) => {
            arity(op, inputs, 1)?;
            let d = inputs[0].dtype;
            let ok = match u {
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => {
                    d.is_float() || (d.is_integer() && !d.is_unsigned())
                }
                UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Log1p
                | UnaryOp::Tanh
                | UnaryOp::Logistic
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Sin
                | UnaryOp::Cos
                | UnaryOp::Erf => d.is_float(),
                UnaryOp::Not => d.is_integer() || d.is_bool(),
            };
            if !ok {
                return Err(shape_err(
                    op,
                    format!("unsupported operand type {}", inputs[0]),
                ));
            }
            one(inputs[0].clone())
        }
        Prim::Binary(b) => {
            arity(op, inputs, 2)?;
            same_types(op, inputs[0], inputs[1])?;
            let d = inputs[0].dtype;
            let ok = match b {
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min => !d.is_bool(),
                BinaryOp::Pow => d.is_float(),
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => d.is_integer() || d.is_bool(),
                BinaryOp::ShiftLeft | BinaryOp::ShiftRightLogical => d.is_integer(),
            };
            if !ok {
                return Err(shape_err(
                    op,
                    format!("unsupported operand type {}", inputs[0]),
                ));
            }
            one(inputs[0].clone())
        }
        Prim::Compare { kind, .. } => {
            arity(op, inputs, 2)?;
            same_types(op, inputs[0], inputs[1])?;
            let d = inputs[0].dtype;
            let ok = match kind {
                CompareKind::Float | CompareKind::TotalOrder => d.is_float(),
                CompareKind::Signed => d.is_integer() && !d.is_unsigned(),
                CompareKind::Unsigned => d.is_unsigned() || d.is_bool(),
            };
            if !ok {
                return Err(shape_err(
                    op,
                    format!("{kind:?} comparison of {}", inputs[0]),
                ));
            }
            one(inputs[0].with_dtype(DType::I1))
        }
        Prim::Select => {
            arity(op, inputs, 3)?;
            let (p, a, b) = (inputs[0], inputs[1], inputs[2]);
            same_types(op, a, b)?;
            if p.dtype != DType::I1 || p.shape != a.shape {
                return Err(shape_err(
                    op,
                    format!("predicate {p} must be i1 of the operands' shape {a}"),
                ));
            }
            one(a.clone())
        }
        Prim::DotGeneral { dims, out_dtype } => {
            arity(op, inputs, 2)?;
            one(infer_dot_general(inputs[0], inputs[1], dims, *out_dtype)?)
        }
        Prim::Reshape { shape } => {
            arity(op, inputs, 1)?;
            let out = TensorType::new(inputs[0].dtype, shape);
            check_dims(op, &out)?;
            if out.num_elements() != inputs[0].num_elements() {
                return Err(shape_err(
                    op,
                    format!(
                        "cannot reshape {} ({} elements) to {out} ({} elements)",
                        inputs[0],
                        inputs[0].num_elements(),
                        out.num_elements()
                    ),
                ));
            }
            one(out)
        }
        Prim::Transpose { perm } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            if !is_permutation(perm, x.rank()) {
                return Err(shape_err(
                    op,
                    format!("{perm:?} is not a permutation of the dims of {x}"),
                ));
            }
            one(TensorType {
                dtype: x.dtype,
                shape: perm.iter().map(|&p| x.shape[p]).collect(),
            })
        }
        Prim::BroadcastInDim { shape, dims } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            let out = TensorType::new(x.dtype, shape);
            check_dims(op, &out)?;
            let bad =
                |why: String| shape_err(op, format!("{x} to {out} with dims {dims:?}: {why}"));
            if dims.len() != x.rank() {
                return Err(bad(format!(
                    "need one dim per operand dimension ({})",
                    x.rank()
                )));
            }
            if dims.windows(2).any(|w| w[0] >= w[1]) || dims.iter().any(|&d| d >= out.rank()) {
                return Err(bad(
                    "dims must be strictly increasing and within the result rank".into(),
                ));
            }
            for (i, &d) in dims.iter().enumerate() {
                if x.shape[i] != 1 && x.shape[i] != shape[d] {
                    return Err(bad(format!(
                        "operand dim {i} (size {}) cannot broadcast to result dim {d} (size {})",
                        x.shape[i], shape[d]
                    )));
                }
            }
            one(out)
        }
        Prim::Slice {
            start,
            limit,
            stride,
        } => one(slice(op, inputs, start, limit, stride)?),
        Prim::DynamicSlice { sizes } => one(dynamic_slice(op, inputs, sizes)?),
        Prim::DynamicUpdateSlice => one(dynamic_update_slice(op, inputs)?),
        Prim::Concatenate { dim } => one(concatenate(op, inputs, *dim)?),
        Prim::Pad {
            low,
            high,
            interior,
        } => one(pad(op, inputs, low, high, interior)?),
        Prim::Reduce { kind, dims } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            reduced_dims(op, x, dims)?;
            let ok = match kind {
                ReduceKind::Sum => !x.dtype.is_bool(),
                ReduceKind::Max | ReduceKind::Min => true,
            };
            if !ok {
                return Err(shape_err(op, format!("cannot sum {x}")));
            }
            one(remove_dims(x, dims))
        }
        Prim::ReduceWith { dims, body } => reduce_with(op, inputs, dims, body),
        Prim::Argmax { dim, index_dtype } => {
            arity(op, inputs, 1)?;
            let x = inputs[0];
            if *dim >= x.rank() || x.dtype.is_bool() || !index_dtype.is_integer() {
                return Err(shape_err(
                    op,
                    format!("argmax over dim {dim} of {x} as {index_dtype} is not possible"),
                ));
            }
            one(remove_dims(x, &[*dim]).with_dtype(*index_dtype))
        }
        Prim::Gather {
            dims, slice_sizes, ..
        } => {
            arity(op, inputs, 2)?;
            one(infer_gather(inputs[0], inputs[1], dims, slice_sizes)?)
        }
        Prim::ScatterAdd { dims, .. } => {
            arity(op, inputs, 3)?;
            one(infer_scatter_add(inputs[0], inputs[1], inputs[2], dims)?)
        }
        Prim::RngBitGenerator { algorithm, ty } => {
            arity(op, inputs, 1)?;
            let s = inputs[0];
            let sizes: &[i64] = match algorithm {
                RngAlgorithm::ThreeFry => &[2],
                RngAlgorithm::Philox | RngAlgorithm::Default => &[2, 3],
            };
            if s.dtype != DType::U64 || s.rank() != 1 || !sizes.contains(&s.shape[0]) {
                return Err(shape_err(
                    op,
                    format!("state {s} must be u64 with {sizes:?} elements for {algorithm:?}"),
                ));
            }
            if !ty.dtype.is_integer() {
                return Err(shape_err(
                    op,
                    format!("random bits must be integers, not {ty}"),
                ));
            }
            check_dims(op, ty)?;
            Ok(vec![s.clone(), ty.clone()])
        }
        Prim::ShardingConstraint { spec } => {
            arity(op, inputs, 1)?;
            if spec.dims.len() > inputs[0].rank() {
                return Err(shape_err(
                    op,
                    format!(
                        "spec has {} entries but the operand is {}",
                        spec.dims.len(),
                        inputs[0]
                    ),
                ));
            }
            one(inputs[0].clone())
        }
        Prim::OptimizationBarrier => Ok(inputs.iter().map(|t| (*t).clone()).collect()),
        Prim::StopGradient => {
            arity(op, inputs, 1)?;
            one(inputs[0].clone())
        }
        Prim::While { cond, body } => {
            expect_params(op, "condition", cond, inputs)?;
            expect_params(op, "body", body, inputs)?;
            let c = output_types(cond);
            if c.len() != 1 || c[0] != TensorType::scalar(DType::I1) {
                return Err(shape_err(
                    op,
                    format!("condition must return one i1 scalar, got {}", list(&c)),
                ));
            }
            let b = output_types(body);
            let want: Vec<TensorType> = inputs.iter().map(|t| (*t).clone()).collect();
            if b != want {
                return Err(shape_err(
                    op,
                    format!(
                        "body returns ({}) but the carry is ({})",
                        list(&b),
                        list(&want)
                    ),
                ));
            }
            Ok(want)
        }
        Prim::CustomCall(spec) => {
            let target = &spec.target;
            if !(1..=3).contains(&spec.api_version) {
                return Err(shape_err(
                    op,
                    format!("`{target}`: api_version {} is not supported (1 to 3, with a string backend_config)", spec.api_version),
                ));
            }
            for t in &spec.result_types {
                check_dims(op, t)?;
            }
            for (what, layouts, types) in [
                ("operand", &spec.operand_layouts, inputs.to_vec()),
                (
                    "result",
                    &spec.result_layouts,
                    spec.result_types.iter().collect(),
                ),
            ] {
                let fits = layouts.is_empty()
                    || (layouts.len() == types.len()
                        && layouts
                            .iter()
                            .zip(&types)
                            .all(|(l, t)| is_permutation(l, t.rank())));
                if !fits {
                    return Err(shape_err(
                        op,
                        format!("`{target}`: {what} layouts {layouts:?} must be one permutation of the dims per {what} ({})", list(&types.into_iter().cloned().collect::<Vec<_>>())),
                    ));
                }
            }
            Ok(spec.result_types.clone())
        }
        Prim::ManualComputation { manual, body, .. } => {
            crate::manual::infer_manual(manual, body, inputs)
        }
        Prim::Remat { body, .. } => {
            expect_params(op, "body", body, inputs)?;
            Ok(output_types(body))
        }
        Prim::CustomVjp { fwd, bwd, .. } => {
            expect_params(op, "forward", fwd, inputs)?;
            let outs = output_types(fwd);
            let want: Vec<TensorType> = inputs
                .iter()
                .map(|t| (*t).clone())
                .chain(outs.iter().cloned())
                .chain(outs.iter().cloned())
                .collect();
            let bwd_params: Vec<TensorType> = bwd.params.iter().map(|p| p.ty.clone()).collect();
            if bwd_params != want {
                return Err(shape_err(
                    op,
                    format!(
                        "backward rule takes ({}) but needs (inputs, outputs, cotangents) = ({})",
                        list(&bwd_params),
                        list(&want)
                    ),
                ));
            }
            let float_inputs: Vec<TensorType> = inputs
                .iter()
                .filter(|t| t.dtype.is_float())
                .map(|t| (*t).clone())
                .collect();
            let cts = output_types(bwd);
            if cts != float_inputs {
                return Err(shape_err(
                    op,
                    format!(
                        "backward rule returns ({}) but the float inputs are ({})",
                        list(&cts),
                        list(&float_inputs)
                    ),
                ));
            }
            Ok(outs)
        }
    }
}

/// Types of a function's outputs, in order.
pub fn output_types(f: &Func) -> Vec<TensorType> {
    f.outputs
        .iter()
        .map(|o| f.value_type(o.value).clone())
        .collect()
}

/// Comma-separated short forms of types, for messages.
pub(crate) fn list<T: std::fmt::Display>(types: &[T]) -> String {
    types
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` operands of one shape and `n` scalar initial values of their dtypes, combined by a
/// body from `2n` scalars to `n`: the results are the operands' shape without `dims`.
fn reduce_with(
    op: &str,
    inputs: &[&TensorType],
    dims: &[usize],
    body: &Func,
) -> Result<Vec<TensorType>> {
    let n = inputs.len() / 2;
    if n == 0 || !inputs.len().is_multiple_of(2) {
        return Err(shape_err(
            op,
            format!(
                "expects n operands and n initial values, got {} inputs",
                inputs.len()
            ),
        ));
    }
    let (operands, inits) = inputs.split_at(n);
    let x = operands[0];
    if operands.iter().any(|t| t.shape != x.shape) {
        return Err(shape_err(
            op,
            format!("operands must share a shape, got ({})", list(operands)),
        ));
    }
    reduced_dims(op, x, dims)?;
    let scalars: Vec<TensorType> = operands
        .iter()
        .map(|t| TensorType::scalar(t.dtype))
        .collect();
    if inits.iter().zip(&scalars).any(|(i, s)| *i != s) {
        return Err(shape_err(
            op,
            format!(
                "initial values must be scalars of the operands' dtypes ({}), got ({})",
                list(&scalars),
                list(inits)
            ),
        ));
    }
    let params: Vec<&TensorType> = scalars.iter().chain(&scalars).collect();
    expect_params(op, "the combiner", body, &params)?;
    let outs = output_types(body);
    if outs != scalars {
        return Err(shape_err(
            op,
            format!(
                "the combiner returns ({}) but the accumulators are ({})",
                list(&outs),
                list(&scalars)
            ),
        ));
    }
    Ok(operands.iter().map(|t| remove_dims(t, dims)).collect())
}

/// Checks that a reduction's `dims` are sorted, distinct dims of `x`.
fn reduced_dims(op: &str, x: &TensorType, dims: &[usize]) -> Result<()> {
    if dims.windows(2).any(|w| w[0] >= w[1]) || dims.iter().any(|&d| d >= x.rank()) {
        return Err(shape_err(
            op,
            format!("dims {dims:?} must be sorted, distinct dims of {x}"),
        ));
    }
    Ok(())
}

fn expect_params(op: &str, what: &str, f: &Func, inputs: &[&TensorType]) -> Result<()> {
    let have: Vec<TensorType> = f.params.iter().map(|p| p.ty.clone()).collect();
    let want: Vec<TensorType> = inputs.iter().map(|t| (*t).clone()).collect();
    if have != want {
        return Err(shape_err(
            op,
            format!(
                "{what} takes ({}) but is given ({})",
                list(&have),
                list(&want)
            ),
        ));
    }
    Ok(())
}

pub(crate) fn arity(op: &str, inputs: &[&TensorType], n: usize) -> Result<()> {
    if inputs.len() != n {
        return Err(shape_err(
            op,
            format!("expects {n} operands, got {}", inputs.len()),
        ));
    }
    Ok(())
}

pub(crate) fn first<'a>(op: &str, inputs: &[&'a TensorType]) -> Result<&'a TensorType> {
    inputs
        .first()
        .copied()
        .ok_or_else(|| shape_err(op, "expects at least one operand"))
}

fn same_types(op: &str, a: &TensorType, b: &TensorType) -> Result<()> {
    if a != b {
        return Err(shape_err(op, format!("operand types differ: {a} vs {b}")));
    }
    Ok(())
}

pub(crate) fn check_dims(op: &str, t: &TensorType) -> Result<()> {
    if t.shape.iter().any(|&d| d < 0) {
        return Err(shape_err(op, format!("negative dimension in {t}")));
    }
    Ok(())
}

pub(crate) fn check_indices(op: &str, idx: &[&TensorType]) -> Result<()> {
    for t in idx {
        if t.rank() != 0 || !t.dtype.is_integer() || t.dtype != idx[0].dtype {
            return Err(shape_err(
                op,
                format!("start indices must be integer scalars of one type, got {t}"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn is_permutation(perm: &[usize], rank: usize) -> bool {
    let mut seen = vec![false; rank];
    perm.len() == rank
        && perm
            .iter()
            .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true))
}

/// The type with the listed (valid) dims removed.
pub(crate) fn remove_dims(x: &TensorType, dims: &[usize]) -> TensorType {
    let shape = x
        .shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !dims.contains(i))
        .map(|(_, &d)| d);
    TensorType {
        dtype: x.dtype,
        shape: shape.collect(),
    }
}
