//! Shape rules of slicing, concatenation and padding.

use crate::error::{shape_err, Result};
use crate::infer::{arity, check_indices, first};
use crate::TensorType;

/// Result type of `slice`.
pub(crate) fn slice(
    op: &str,
    inputs: &[&TensorType],
    start: &[i64],
    limit: &[i64],
    stride: &[i64],
) -> Result<TensorType> {
    arity(op, inputs, 1)?;
    let x = inputs[0];
    let r = x.rank();
    if start.len() != r || limit.len() != r || stride.len() != r {
        return Err(shape_err(
            op,
            format!("{x} needs {r} starts, limits and strides"),
        ));
    }
    let mut shape = Vec::with_capacity(r);
    for d in 0..r {
        if start[d] < 0 || start[d] > limit[d] || limit[d] > x.shape[d] || stride[d] < 1 {
            return Err(shape_err(
                op,
                format!(
                    "dim {d} of {x}: start {} limit {} stride {} out of range",
                    start[d], limit[d], stride[d]
                ),
            ));
        }
        shape.push((limit[d] - start[d] + stride[d] - 1) / stride[d]);
    }
    Ok(TensorType {
        dtype: x.dtype,
        shape,
    })
}

/// Result type of `dynamic_slice`.
pub(crate) fn dynamic_slice(op: &str, inputs: &[&TensorType], sizes: &[i64]) -> Result<TensorType> {
    let x = first(op, inputs)?;
    arity(op, inputs, 1 + x.rank())?;
    check_indices(op, &inputs[1..])?;
    if sizes.len() != x.rank() || sizes.iter().zip(&x.shape).any(|(&s, &d)| s < 0 || s > d) {
        return Err(shape_err(
            op,
            format!("slice sizes {sizes:?} do not fit {x}"),
        ));
    }
    Ok(TensorType::new(x.dtype, sizes))
}

/// Result type of `dynamic_update_slice`.
pub(crate) fn dynamic_update_slice(op: &str, inputs: &[&TensorType]) -> Result<TensorType> {
    let x = first(op, inputs)?;
    arity(op, inputs, 2 + x.rank())?;
    let u = inputs[1];
    check_indices(op, &inputs[2..])?;
    if u.dtype != x.dtype
        || u.rank() != x.rank()
        || u.shape.iter().zip(&x.shape).any(|(&s, &d)| s > d)
    {
        return Err(shape_err(
            op,
            format!("update {u} does not fit in operand {x}"),
        ));
    }
    Ok(x.clone())
}

/// Result type of `concatenate`.
pub(crate) fn concatenate(op: &str, inputs: &[&TensorType], dim: usize) -> Result<TensorType> {
    let x = first(op, inputs)?;
    if dim >= x.rank() {
        return Err(shape_err(
            op,
            format!("dimension {dim} is not a dimension of {x}"),
        ));
    }
    let mut shape = x.shape.clone();
    shape[dim] = 0;
    for t in inputs {
        let same_rest =
            t.rank() == x.rank() && (0..x.rank()).all(|d| d == dim || t.shape[d] == x.shape[d]);
        if t.dtype != x.dtype || !same_rest {
            return Err(shape_err(
                op,
                format!("{x} and {t} differ outside dimension {dim}"),
            ));
        }
        shape[dim] += t.shape[dim];
    }
    Ok(TensorType {
        dtype: x.dtype,
        shape,
    })
}

/// Result type of `pad`.
pub(crate) fn pad(
    op: &str,
    inputs: &[&TensorType],
    low: &[i64],
    high: &[i64],
    interior: &[i64],
) -> Result<TensorType> {
    arity(op, inputs, 2)?;
    let (x, v) = (inputs[0], inputs[1]);
    let r = x.rank();
    if v.rank() != 0 || v.dtype != x.dtype {
        return Err(shape_err(
            op,
            format!("padding value {v} must be a scalar of {}", x.dtype),
        ));
    }
    if low.len() != r || high.len() != r || interior.len() != r {
        return Err(shape_err(
            op,
            format!("{x} needs {r} low, high and interior paddings"),
        ));
    }
    let mut shape = Vec::with_capacity(r);
    for d in 0..r {
        let n = x.shape[d];
        let size = low[d] + high[d] + n + (n - 1).max(0) * interior[d];
        if interior[d] < 0 || size < 0 {
            return Err(shape_err(
                op,
                format!(
                    "dim {d} of {x}: padding ({}, {}, {}) gives size {size}",
                    low[d], high[d], interior[d]
                ),
            ));
        }
        shape.push(size);
    }
    Ok(TensorType {
        dtype: x.dtype,
        shape,
    })
}
