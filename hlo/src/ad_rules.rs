//! One gradient (transpose) rule per primitive: given the cotangents of an equation's
//! results, the cotangents of its operands. `None` is a symbolic zero.

use crate::custom_vjp::custom_vjp_backward;
use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::ir::{BinaryOp, DotDims, GatherDims, Prim, ReduceKind, ScatterDims, UnaryOp};
use crate::remat::remat_backward;
use crate::Tensor;

type Cts = Vec<Option<Tensor>>;

/// Cotangents of the operands `ins` of `prim` (results `outs`, result cotangents `cts`);
/// only operands marked `active` need one.
pub(crate) fn vjp_rule(
    g: &Graph,
    prim: &Prim,
    ins: &[Tensor],
    outs: &[Tensor],
    cts: &[Option<Tensor>],
    active: &[bool],
) -> Result<Cts> {
    let none = || vec![None; ins.len()];
    let Some(ct) = cts.iter().flatten().next().cloned() else {
        return Ok(none());
    };
    Ok(match prim {
        Prim::Constant { .. } | Prim::Iota { .. } => none(),
        Prim::Convert { .. } => {
            let x = &ins[0];
            vec![x.dtype().is_float().then(|| ct.cast(x.dtype()))]
        }
        Prim::BitcastConvert { .. } => {
            return Err(not_differentiable(prim, "bit reinterpretation has no derivative"))
        }
        Prim::Unary(op) => vec![unary_rule(*op, &ins[0], &outs[0], &ct)],
        Prim::Binary(op) => binary_rule(*op, &ins[0], &ins[1], &outs[0], &ct, active),
        Prim::Compare { .. } | Prim::Argmax { .. } | Prim::RngBitGenerator { .. } => none(),
        Prim::Select => {
            let p = &ins[0];
            vec![
                None,
                active[1].then(|| p.select(&ct, 0.0)),
                active[2].then(|| p.select(0.0, &ct)),
            ]
        }
        Prim::DotGeneral { dims, .. } => dot_general_rule(dims, &ins[0], &ins[1], &ct, active),
        Prim::Reshape { .. } => vec![Some(ct.reshape(ins[0].shape()))],
        Prim::Transpose { perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(ct.transpose(&inverse))]
        }
        Prim::BroadcastInDim { shape, dims } => {
            let x = &ins[0];
            let summed: Vec<usize> = (0..shape.len())
                .filter(|d| match dims.iter().position(|e| e == d) {
                    None => true,
                    Some(i) => x.shape()[i] == 1 && shape[*d] != 1,
                })
                .collect();
            vec![Some(ct.reduce_dims(ReduceKind::Sum, summed).reshape(x.shape()))]
        }
        Prim::Slice { start, stride, .. } => {
            let x = &ins[0];
            let interior: Vec<i64> = stride.iter().map(|s| s - 1).collect();
            let high: Vec<i64> = (0..x.rank())
                .map(|d| {
                    let n = ct.shape()[d];
                    x.shape()[d] - start[d] - n - (n - 1).max(0) * interior[d]
                })
                .collect();
            vec![Some(ct.pad(0.0, start, &high, &interior))]
        }
        Prim::DynamicSlice { .. } => {
            let mut out = none();
            out[0] = Some(ins[0].zeros_like().dynamic_update_slice(&ct, &ins[1..]));
            out
        }
        Prim::DynamicUpdateSlice => {
            let (update, starts) = (&ins[1], &ins[2..]);
            let mut out = none();
            out[0] = active[0].then(|| ct.dynamic_update_slice(&update.zeros_like(), starts));
            out[1] = active[1].then(|| ct.dynamic_slice(starts, update.shape()));
            out
        }
        Prim::Concatenate { dim } => {
            let mut offset = 0;
            ins.iter()
                .zip(active)
                .map(|(x, &act)| {
                    let start = offset;
                    offset += x.shape()[*dim];
                    act.then(|| ct.slice_axis(*dim as isize, start, offset))
                })
                .collect()
        }
        Prim::Pad { low, high, interior } => {
            let x = &ins[0];
            let neg = |v: &[i64]| v.iter().map(|a| -a).collect::<Vec<i64>>();
            let zeros = vec![0; x.rank()];
            let unpadded = ct.pad(0.0, &neg(low), &neg(high), &zeros);
            let strides: Vec<i64> = interior.iter().map(|i| i + 1).collect();
            let operand_ct = unpadded.slice(&zeros, unpadded.shape(), &strides);
            let value_ct = active[1].then(|| ct.sum_all() - operand_ct.sum_all());
            vec![Some(operand_ct), value_ct]
        }
        Prim::Reduce { kind, dims } => vec![Some(reduce_rule(*kind, dims, &ins[0], &outs[0], &ct))],
        Prim::Gather { dims, .. } => {
            let sdims = ScatterDims {
                update_window_dims: dims.offset_dims.clone(),
                inserted_window_dims: dims.collapsed_slice_dims.clone(),
                scatter_dims_to_operand_dims: dims.start_index_map.clone(),
                index_vector_dim: dims.index_vector_dim,
            };
            vec![Some(ins[0].zeros_like().scatter_add(&ins[1], &ct, sdims)), None]
        }
        Prim::ScatterAdd { dims, .. } => {
            let (operand, indices, updates) = (&ins[0], &ins[1], &ins[2]);
            let mut window = dims.update_window_dims.iter();
            let slice_sizes: Vec<i64> = (0..operand.rank())
                .map(|d| {
                    if dims.inserted_window_dims.contains(&d) {
                        1
                    } else {
                        window.next().map_or(1, |&u| updates.shape()[u])
                    }
                })
                .collect();
            let gdims = GatherDims {
                offset_dims: dims.update_window_dims.clone(),
                collapsed_slice_dims: dims.inserted_window_dims.clone(),
                start_index_map: dims.scatter_dims_to_operand_dims.clone(),
                index_vector_dim: dims.index_vector_dim,
            };
            vec![
                active[0].then(|| ct.clone()),
                None,
                active[2].then(|| ct.gather(indices, gdims, &slice_sizes)),
            ]
        }
        Prim::ShardingConstraint { spec } => vec![Some(ct.sharding_constraint(spec.clone()))],
        Prim::OptimizationBarrier => cts.to_vec(),
        Prim::StopGradient => none(),
        Prim::While { .. } => {
            return Err(not_differentiable(
                prim,
                "reverse mode through a loop is not supported; unroll it while tracing (a Rust loop) and use remat to save memory",
            ))
        }
        Prim::ReduceWith { .. } => {
            return Err(not_differentiable(
                prim,
                "a traced combiner has no gradient rule; use it inside Graph::custom_vjp or under stop_gradient",
            ))
        }
        Prim::CustomCall(spec) => {
            return Err(not_differentiable(
                prim,
                &format!("target `{}` has no gradient rule; wrap the call in Graph::custom_vjp with a backward rule", spec.target),
            ))
        }
        Prim::ManualComputation { .. } => {
            return Err(not_differentiable(
                prim,
                "a result replicated over a manual axis would need a cross-device sum of its cotangent; wrap the computation in Graph::custom_vjp with a backward manual computation",
            ))
        }
        Prim::Remat { body, .. } => remat_backward(g, body, ins, cts, active)?,
        Prim::CustomVjp { bwd, .. } => custom_vjp_backward(g, bwd, ins, outs, cts)?,
    })
}

fn not_differentiable(prim: &Prim, detail: &str) -> HloError {
    HloError::NotDifferentiable {
        prim: prim.name().to_string(),
        detail: detail.to_string(),
    }
}

fn unary_rule(op: UnaryOp, x: &Tensor, y: &Tensor, ct: &Tensor) -> Option<Tensor> {
    Some(match op {
        UnaryOp::Neg => -ct,
        UnaryOp::Abs => ct * x.sign(),
        UnaryOp::Sign | UnaryOp::Not => return None,
        UnaryOp::Exp => ct * y,
        UnaryOp::Log => ct / x,
        UnaryOp::Log1p => ct / (x + 1.0),
        UnaryOp::Tanh => ct * (1.0 - y * y),
        UnaryOp::Logistic => ct * (y * (1.0 - y)),
        UnaryOp::Sqrt => ct / (y * 2.0),
        UnaryOp::Rsqrt => ct * (y / x) * -0.5,
        UnaryOp::Sin => ct * x.cos(),
        UnaryOp::Cos => -(ct * x.sin()),
        UnaryOp::Erf => ct * (x * x).neg().exp() * std::f64::consts::FRAC_2_SQRT_PI,
    })
}

fn binary_rule(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    ct: &Tensor,
    active: &[bool],
) -> Cts {
    let (da, db) = (active[0], active[1]);
    match op {
        BinaryOp::Add => vec![da.then(|| ct.clone()), db.then(|| ct.clone())],
        BinaryOp::Sub => vec![da.then(|| ct.clone()), db.then(|| -ct)],
        BinaryOp::Mul => vec![da.then(|| ct * b), db.then(|| ct * a)],
        BinaryOp::Div => vec![da.then(|| ct / b), db.then(|| -(ct * y) / b)],
        BinaryOp::Max | BinaryOp::Min => {
            // Ties split the cotangent evenly, as in JAX.
            let (wins_a, wins_b) = if op == BinaryOp::Max {
                (a.gt(b), a.lt(b))
            } else {
                (a.lt(b), a.gt(b))
            };
            let tie = a.eq(b);
            let half = ct * 0.5;
            vec![
                da.then(|| wins_a.select(ct, tie.select(&half, 0.0))),
                db.then(|| wins_b.select(ct, tie.select(&half, 0.0))),
            ]
        }
        BinaryOp::Pow => vec![
            da.then(|| ct * b.eq(0.0).select(0.0, b * a.pow(b - 1.0))),
            db.then(|| ct * y * a.eq(0.0).select(1.0, a).log()),
        ],
        BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor
        | BinaryOp::ShiftLeft
        | BinaryOp::ShiftRightLogical => vec![None, None],
    }
}

fn reduce_rule(kind: ReduceKind, dims: &[usize], x: &Tensor, y: &Tensor, ct: &Tensor) -> Tensor {
    let kept: Vec<usize> = (0..x.rank()).filter(|d| !dims.contains(d)).collect();
    let spread = |t: &Tensor| t.broadcast_in_dim(x.shape(), &kept);
    match kind {
        ReduceKind::Sum => spread(ct),
        ReduceKind::Max | ReduceKind::Min => {
            // The cotangent goes to the extreme elements, split evenly among ties.
            let mask = x.eq(spread(y)).select(x.ones_like(), 0.0);
            let count = mask.reduce_dims(ReduceKind::Sum, dims.to_vec());
            spread(&(ct / count)) * mask
        }
    }
}

/// Cotangents of both operands of `dot_general`, computed in the cotangent's dtype and
/// converted back to each operand's dtype.
fn dot_general_rule(
    dims: &DotDims,
    lhs: &Tensor,
    rhs: &Tensor,
    ct: &Tensor,
    active: &[bool],
) -> Cts {
    let nb = dims.lhs_batch.len();
    let free = |rank: usize, batch: &[usize], contract: &[usize]| -> Vec<usize> {
        (0..rank)
            .filter(|d| !batch.contains(d) && !contract.contains(d))
            .collect()
    };
    let lhs_free = free(lhs.rank(), &dims.lhs_batch, &dims.lhs_contract);
    let rhs_free = free(rhs.rank(), &dims.rhs_batch, &dims.rhs_contract);
    let (nlf, nrf) = (lhs_free.len(), rhs_free.len());
    let batch: Vec<usize> = (0..nb).collect();
    // Contract the cotangent with `other` over `other`'s free dims; the product has the
    // batch dims, this operand's free dims, then this operand's contracting dims in the
    // order of `other`'s (sorted) contracting dims. Transpose that into the operand's layout.
    let one_side = |x: &Tensor,
                    other: &Tensor,
                    ct_other_free: Vec<usize>,
                    other_free: &[usize],
                    x_batch: &[usize],
                    x_free: &[usize],
                    x_contract: &[usize],
                    other_batch: &[usize],
                    other_contract: &[usize]| {
        let d = DotDims {
            lhs_batch: batch.clone(),
            rhs_batch: other_batch.to_vec(),
            lhs_contract: ct_other_free,
            rhs_contract: other_free.to_vec(),
        };
        let product = ct.dot_general(&other.cast(ct.dtype()), d);
        let mut sorted = other_contract.to_vec();
        sorted.sort_unstable();
        let origin: Vec<usize> = x_batch
            .iter()
            .chain(x_free)
            .copied()
            .chain(sorted.iter().filter_map(|c| {
                other_contract
                    .iter()
                    .position(|o| o == c)
                    .map(|k| x_contract[k])
            }))
            .collect();
        let perm: Vec<usize> = (0..x.rank())
            .map(|k| origin.iter().position(|&o| o == k).unwrap_or(k))
            .collect();
        product.transpose(&perm).cast(x.dtype())
    };
    vec![
        active[0].then(|| {
            let ct_rhs_free: Vec<usize> = (nb + nlf..nb + nlf + nrf).collect();
            one_side(
                lhs,
                rhs,
                ct_rhs_free,
                &rhs_free,
                &dims.lhs_batch,
                &lhs_free,
                &dims.lhs_contract,
                &dims.rhs_batch,
                &dims.rhs_contract,
            )
        }),
        active[1].then(|| {
            let ct_lhs_free: Vec<usize> = (nb..nb + nlf).collect();
            one_side(
                rhs,
                lhs,
                ct_lhs_free,
                &lhs_free,
                &dims.rhs_batch,
                &rhs_free,
                &dims.rhs_contract,
                &dims.lhs_batch,
                &dims.lhs_contract,
            )
        }),
    ]
}
