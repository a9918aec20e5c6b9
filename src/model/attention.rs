//! Causal grouped-query attention, composed from primitives: the plain form, which builds
//! the [T, S] score matrix, and a blocked form that never does (see `blocked.rs`).

use vishwam_hlo::{nn, DType, DotDims, Tensor};

/// The value masked scores take: low enough that `exp` underflows to exactly zero, finite so a
/// fully masked row cannot produce NaN.
pub const MASKED: f64 = -1e30;

/// `q: [B,T,NH,D]`, `k`, `v: [B,S,KV,D]`; query `t` may attend key `s` when
/// `k_pos[s] <= q_pos[t]` (positions: i32 `[T]` and `[S]`). Returns `[B,T,NH,D]`.
/// Scores and softmax are f32; the result has `q`'s dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, q_pos: &Tensor, k_pos: &Tensor) -> Tensor {
    let (b, t, nh, d) = dims4(q);
    let kv = k.shape()[2];
    let groups = nh / kv.max(1);
    let q5 = q.reshape(&[b, t, kv, groups, d]);
    // s[b, kv, t, g, s]
    let scores = q5.dot_general_to(
        k,
        DotDims {
            lhs_batch: vec![0, 2],
            rhs_batch: vec![0, 2],
            lhs_contract: vec![4],
            rhs_contract: vec![3],
        },
        DType::F32,
    ) * (1.0 / (d as f64).sqrt());
    let allowed = causal_mask(q_pos, k_pos); // [T, S]
    let allowed = allowed.broadcast_in_dim(scores.shape(), &[2, 4]);
    let scores = allowed.select(&scores, MASKED);
    let probs = nn::softmax(&scores, -1).cast(q.dtype());
    // o[b, kv, t, g, d]
    let out = probs.dot_general(
        v,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 2],
            lhs_contract: vec![4],
            rhs_contract: vec![1],
        },
    );
    out.transpose(&[0, 2, 1, 3, 4]).reshape(&[b, t, nh, d])
}

/// `[T, S]` predicate: key position <= query position.
pub fn causal_mask(q_pos: &Tensor, k_pos: &Tensor) -> Tensor {
    let (t, s) = (q_pos.shape()[0], k_pos.shape()[0]);
    let qb = q_pos.broadcast_in_dim(&[t, s], &[0]);
    let kb = k_pos.broadcast_in_dim(&[t, s], &[1]);
    kb.le(&qb)
}

fn dims4(x: &Tensor) -> (i64, i64, i64, i64) {
    let s = x.shape();
    (s[0], s[1], s[2], s[3])
}
