//! Shape rules of the primitives with dimension numbers: dot_general, gather, scatter.

use crate::error::{shape_err, Result};
use crate::ir::{DotDims, GatherDims, ScatterDims};
use crate::{DType, TensorType};

fn distinct_in_range(dims: &[usize], rank: usize) -> bool {
    let mut seen = vec![false; rank];
    dims.iter()
        .all(|&d| d < rank && !std::mem::replace(&mut seen[d], true))
}

fn sorted_distinct(dims: &[usize]) -> bool {
    dims.windows(2).all(|w| w[0] < w[1])
}

/// Result type of `dot_general`: batch dims, then lhs free dims, then rhs free dims.
pub fn infer_dot_general(
    lhs: &TensorType,
    rhs: &TensorType,
    dims: &DotDims,
    out_dtype: DType,
) -> Result<TensorType> {
    let op = "dot_general";
    let kinds_ok = (lhs.dtype.is_float() && rhs.dtype.is_float() && out_dtype.is_float())
        || (lhs.dtype.is_integer() && rhs.dtype.is_integer() && out_dtype.is_integer());
    if !kinds_ok {
        return Err(shape_err(
            op,
            format!("cannot multiply lhs {lhs} by rhs {rhs} into {out_dtype}"),
        ));
    }
    if dims.lhs_batch.len() != dims.rhs_batch.len()
        || dims.lhs_contract.len() != dims.rhs_contract.len()
    {
        return Err(shape_err(
            op,
            format!("unpaired dimension numbers {dims:?} for lhs {lhs} and rhs {rhs}"),
        ));
    }
    let lhs_dims: Vec<usize> = dims
        .lhs_batch
        .iter()
        .chain(&dims.lhs_contract)
        .copied()
        .collect();
    let rhs_dims: Vec<usize> = dims
        .rhs_batch
        .iter()
        .chain(&dims.rhs_contract)
        .copied()
        .collect();
    if !distinct_in_range(&lhs_dims, lhs.rank()) || !distinct_in_range(&rhs_dims, rhs.rank()) {
        return Err(shape_err(
            op,
            format!(
                "dimension numbers {dims:?} repeat or exceed the dims of lhs {lhs} or rhs {rhs}"
            ),
        ));
    }
    for (what, l, r) in [
        ("batch", &dims.lhs_batch, &dims.rhs_batch),
        ("contracting", &dims.lhs_contract, &dims.rhs_contract),
    ] {
        for (&a, &b) in l.iter().zip(r) {
            if lhs.shape[a] != rhs.shape[b] {
                return Err(shape_err(
                    op,
                    format!(
                        "lhs {lhs} {what} dim {a} (size {}) does not match rhs {rhs} dim {b} (size {})",
                        lhs.shape[a], rhs.shape[b]
                    ),
                ));
            }
        }
    }
    let mut shape: Vec<i64> = dims.lhs_batch.iter().map(|&d| lhs.shape[d]).collect();
    shape.extend(
        (0..lhs.rank())
            .filter(|d| !lhs_dims.contains(d))
            .map(|d| lhs.shape[d]),
    );
    shape.extend(
        (0..rhs.rank())
            .filter(|d| !rhs_dims.contains(d))
            .map(|d| rhs.shape[d]),
    );
    Ok(TensorType {
        dtype: out_dtype,
        shape,
    })
}

/// The batch shape of an index array: its dims except `index_vector_dim`, and the length
/// of its index vectors.
fn index_batch(op: &str, indices: &TensorType, index_vector_dim: usize) -> Result<(Vec<i64>, i64)> {
    if !indices.dtype.is_integer() {
        return Err(shape_err(op, format!("indices {indices} must be integers")));
    }
    if index_vector_dim > indices.rank() {
        return Err(shape_err(
            op,
            format!("index_vector_dim {index_vector_dim} exceeds the rank of indices {indices}"),
        ));
    }
    let mut batch = indices.shape.clone();
    let len = if index_vector_dim == indices.rank() {
        1
    } else {
        batch.remove(index_vector_dim)
    };
    Ok((batch, len))
}

/// Result type of StableHLO `gather` (no batching dims).
pub fn infer_gather(
    operand: &TensorType,
    indices: &TensorType,
    dims: &GatherDims,
    slice_sizes: &[i64],
) -> Result<TensorType> {
    let op = "gather";
    let bad = |why: String| shape_err(op, format!("operand {operand}, indices {indices}: {why}"));
    let (batch, vec_len) = index_batch(op, indices, dims.index_vector_dim)?;
    if dims.start_index_map.len() as i64 != vec_len
        || !distinct_in_range(&dims.start_index_map, operand.rank())
    {
        return Err(bad(format!(
            "start_index_map {:?} must name {vec_len} distinct operand dims",
            dims.start_index_map
        )));
    }
    if slice_sizes.len() != operand.rank()
        || slice_sizes
            .iter()
            .zip(&operand.shape)
            .any(|(&s, &d)| s < 0 || s > d)
    {
        return Err(bad(format!(
            "slice sizes {slice_sizes:?} do not fit the operand"
        )));
    }
    if !sorted_distinct(&dims.collapsed_slice_dims)
        || !distinct_in_range(&dims.collapsed_slice_dims, operand.rank())
        || dims
            .collapsed_slice_dims
            .iter()
            .any(|&d| slice_sizes[d] > 1)
    {
        return Err(bad(format!(
            "collapsed_slice_dims {:?} must be sorted operand dims with slice size <= 1",
            dims.collapsed_slice_dims
        )));
    }
    let offsets: Vec<i64> = (0..operand.rank())
        .filter(|d| !dims.collapsed_slice_dims.contains(d))
        .map(|d| slice_sizes[d])
        .collect();
    let rank = batch.len() + offsets.len();
    if dims.offset_dims.len() != offsets.len()
        || !sorted_distinct(&dims.offset_dims)
        || dims.offset_dims.iter().any(|&d| d >= rank)
    {
        return Err(bad(format!(
            "offset_dims {:?} must be {} sorted dims of the rank-{rank} result",
            dims.offset_dims,
            offsets.len()
        )));
    }
    let (mut b, mut o) = (batch.into_iter(), offsets.into_iter());
    let shape = (0..rank)
        .map(|d| {
            if dims.offset_dims.contains(&d) {
                o.next()
            } else {
                b.next()
            }
        })
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| bad("inconsistent dimension numbers".into()))?;
    Ok(TensorType {
        dtype: operand.dtype,
        shape,
    })
}

/// Result type of StableHLO `scatter` with addition (no batching dims): the operand type.
pub fn infer_scatter_add(
    operand: &TensorType,
    indices: &TensorType,
    updates: &TensorType,
    dims: &ScatterDims,
) -> Result<TensorType> {
    let op = "scatter_add";
    let bad = |why: String| {
        shape_err(
            op,
            format!("operand {operand}, indices {indices}, updates {updates}: {why}"),
        )
    };
    if updates.dtype != operand.dtype || operand.dtype.is_bool() {
        return Err(bad("updates must have the operand's numeric dtype".into()));
    }
    let (batch, vec_len) = index_batch(op, indices, dims.index_vector_dim)?;
    if dims.scatter_dims_to_operand_dims.len() as i64 != vec_len
        || !distinct_in_range(&dims.scatter_dims_to_operand_dims, operand.rank())
    {
        return Err(bad(format!(
            "scatter_dims_to_operand_dims {:?} must name {vec_len} distinct operand dims",
            dims.scatter_dims_to_operand_dims
        )));
    }
    if !sorted_distinct(&dims.update_window_dims)
        || !distinct_in_range(&dims.update_window_dims, updates.rank())
        || !sorted_distinct(&dims.inserted_window_dims)
        || !distinct_in_range(&dims.inserted_window_dims, operand.rank())
        || dims.update_window_dims.len() + dims.inserted_window_dims.len() != operand.rank()
    {
        return Err(bad(format!(
            "update_window_dims {:?} and inserted_window_dims {:?} must together cover the operand dims",
            dims.update_window_dims, dims.inserted_window_dims
        )));
    }
    let scatter_sizes: Vec<i64> = (0..updates.rank())
        .filter(|d| !dims.update_window_dims.contains(d))
        .map(|d| updates.shape[d])
        .collect();
    if scatter_sizes != batch {
        return Err(bad(format!(
            "update scatter dims {scatter_sizes:?} must equal the index batch dims {batch:?}"
        )));
    }
    let window_operand_dims =
        (0..operand.rank()).filter(|d| !dims.inserted_window_dims.contains(d));
    for (&u, o) in dims.update_window_dims.iter().zip(window_operand_dims) {
        if updates.shape[u] > operand.shape[o] {
            return Err(bad(format!(
                "update window dim {u} (size {}) exceeds operand dim {o} (size {})",
                updates.shape[u], operand.shape[o]
            )));
        }
    }
    Ok(operand.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(d: DType, s: &[i64]) -> TensorType {
        TensorType::new(d, s)
    }

    #[test]
    fn dot_general_orders_batch_then_free_dims() {
        let dims = DotDims {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contract: vec![2],
            rhs_contract: vec![1],
        };
        let out = infer_dot_general(
            &t(DType::F32, &[2, 3, 4]),
            &t(DType::F32, &[2, 4, 5]),
            &dims,
            DType::F32,
        )
        .unwrap();
        assert_eq!(out, t(DType::F32, &[2, 3, 5]));
    }

    #[test]
    fn dot_general_mismatch_names_both_shapes() {
        let dims = DotDims {
            lhs_contract: vec![1],
            rhs_contract: vec![0],
            ..Default::default()
        };
        let err = infer_dot_general(
            &t(DType::F32, &[8, 4]),
            &t(DType::F32, &[5, 6]),
            &dims,
            DType::F32,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dot_general: lhs f32[8,4] contracting dim 1 (size 4) does not match rhs f32[5,6] dim 0 (size 5)"
        );
    }

    #[test]
    fn embedding_gather_and_its_scatter() {
        let dims = GatherDims {
            offset_dims: vec![2],
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: 2,
        };
        let table = t(DType::F32, &[10, 4]);
        let ids = t(DType::I32, &[2, 3]);
        let out = infer_gather(&table, &ids, &dims, &[1, 4]).unwrap();
        assert_eq!(out, t(DType::F32, &[2, 3, 4]));
        let sdims = ScatterDims {
            update_window_dims: vec![2],
            inserted_window_dims: vec![0],
            scatter_dims_to_operand_dims: vec![0],
            index_vector_dim: 2,
        };
        assert_eq!(
            infer_scatter_add(&table, &ids, &out, &sdims).unwrap(),
            table
        );
        let err = infer_scatter_add(&table, &ids, &t(DType::F32, &[3, 2, 4]), &sdims).unwrap_err();
        assert!(err.to_string().contains("index batch dims [2, 3]"), "{err}");
    }
}
