//! Memory-efficient causal attention: blocks of queries and keys with an online softmax in the
//! forward pass and block-wise recomputation in the backward pass (the flash-attention
//! algorithm, composed from XLA primitives). Neither pass materialises the `[T, T]` scores:
//! the largest attention temporary is one `[bs, bs]` block per (batch, head).
//!
//! Assumes self-attention over positions `0..T` (training and evaluation). The block size is
//! the largest divisor of `T` that is at most the requested size. With a sliding window
//! ([`AttentionSpec::window`]) the pairs of blocks that lie wholly outside the window are
//! skipped in both passes, and only blocks the window's edge crosses are masked.

use super::attention::{AttentionSpec, MASKED};
use vishwam_hlo::{DType, DotDims, Graph, Tensor};

fn dims(lb: &[usize], rb: &[usize], lc: &[usize], rc: &[usize]) -> DotDims {
    DotDims {
        lhs_batch: lb.to_vec(),
        rhs_batch: rb.to_vec(),
        lhs_contract: lc.to_vec(),
        rhs_contract: rc.to_vec(),
    }
}

/// `q: [B,T,NH,D]`, `k`, `v: [B,T,KV,D]` -> `[B,T,NH,D]`, causal, in blocks of about `block`.
pub fn blocked_attention(q: &Tensor, k: &Tensor, v: &Tensor, block: usize) -> Tensor {
    let spec = AttentionSpec::causal(q.shape()[3]);
    blocked_attention_with(q, k, v, block, &spec)
}

/// [`blocked_attention`] with the scale, soft-cap and window of `spec`.
pub fn blocked_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    block: usize,
    spec: &AttentionSpec,
) -> Tensor {
    let spec = *spec;
    let t = q.shape()[1];
    let bs = (1..=block.max(1) as i64)
        .rev()
        .find(|b| t % b == 0)
        .unwrap_or(1);
    let g = q.graph().clone();
    let outs = g.custom_vjp(
        "blocked_attention",
        &[q.clone(), k.clone(), v.clone()],
        move |g, xs| forward(g, &xs[0], &xs[1], &xs[2], bs, &spec),
        move |g, xs, outs, cts| {
            let io = [&xs[0], &xs[1], &xs[2], &outs[0], &outs[1], &cts[0]];
            backward(g, io, bs, &spec)
        },
    );
    outs[0].clone()
}

struct Shapes {
    b: i64,
    t: i64,
    kv: i64,
    groups: i64,
    d: i64,
    nh: i64,
}

fn shapes(q: &Tensor, k: &Tensor) -> Shapes {
    let (b, t, nh, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let kv = k.shape()[2];
    Shapes {
        b,
        t,
        kv,
        groups: nh / kv.max(1),
        d,
        nh,
    }
}

/// Which key blocks query block `i` reads, and how: `(j, mask)` for each visited `j <= i`,
/// where `mask` (`[bs, bs]`, query by key) is `None` when every pair of the two blocks is
/// visible. Blocks wholly before the window are left out.
fn visited_blocks(g: &Graph, i: i64, bs: i64, window: Option<usize>) -> Vec<(i64, Option<Tensor>)> {
    let w = window.map_or(i64::MAX, |w| w as i64);
    (0..=i)
        .filter_map(|j| {
            // Query positions i*bs + a, key positions j*bs + b: q - k = (i - j)*bs + a - b.
            let offset = (i - j) * bs;
            let (min_gap, max_gap) = (offset - (bs - 1), offset + (bs - 1));
            if min_gap >= w {
                return None;
            }
            let needs_mask = min_gap < 0 || max_gap >= w;
            Some((j, needs_mask.then(|| block_mask(g, bs, offset, w))))
        })
        .collect()
}

/// `[bs, bs]` predicate: `0 <= offset + a - b < window` for query row `a`, key column `b`.
fn block_mask(g: &Graph, bs: i64, offset: i64, window: i64) -> Tensor {
    let ty = vishwam_hlo::TensorType::new(DType::I32, &[bs, bs]);
    let gap = g.iota(&ty, 0) - g.iota(&ty, 1) + offset;
    let causal = gap.ge(0i64);
    match window {
        i64::MAX => causal,
        w => causal.and(gap.lt(w)),
    }
}

/// Scaled (and soft-capped) f32 scores of query block `qi: [B,bs,KV,G,D]` against key block
/// `kj: [B,bs,KV,D]`: `[B,KV,bs,G,bs]`, masked where `mask` says; with a soft-cap also the
/// cap's derivative `1 - tanh²` for the backward pass.
fn block_scores(
    qi: &Tensor,
    kj: &Tensor,
    spec: &AttentionSpec,
    mask: Option<&Tensor>,
) -> (Tensor, Option<Tensor>) {
    let s = qi.dot_general_to(kj, dims(&[0, 2], &[0, 2], &[4], &[3]), DType::F32) * spec.scale;
    let (s, slope) = match spec.softcap {
        Some(cap) => {
            let t = (s * (1.0 / cap)).tanh();
            let slope = 1.0 - &t * &t;
            (t * cap, Some(slope))
        }
        None => (s, None),
    };
    let s = match mask {
        Some(mask) => mask.broadcast_in_dim(s.shape(), &[2, 4]).select(&s, MASKED),
        None => s,
    };
    (s, slope)
}

/// Returns `[out: [B,T,NH,D], lse: f32 [B,KV,T,G]]`.
fn forward(
    g: &Graph,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bs: i64,
    spec: &AttentionSpec,
) -> Vec<Tensor> {
    let sh = shapes(q, k);
    let q5 = q.reshape(&[sh.b, sh.t, sh.kv, sh.groups, sh.d]);
    let nb = sh.t / bs;
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for i in 0..nb {
        let qi = q5.slice_axis(1, i * bs, (i + 1) * bs);
        let mut m: Option<Tensor> = None;
        let mut l: Option<Tensor> = None;
        let mut acc: Option<Tensor> = None;
        for (j, mask) in visited_blocks(g, i, bs, spec.window) {
            let kj = k.slice_axis(1, j * bs, (j + 1) * bs);
            let vj = v.slice_axis(1, j * bs, (j + 1) * bs);
            let (s, _) = block_scores(&qi, &kj, spec, mask.as_ref());
            let block_max = s.max(&[-1], true);
            let m_new = match &m {
                Some(m) => m.maximum(&block_max),
                None => block_max,
            };
            let p = (&s - &m_new).exp();
            let pv = p.cast(v.dtype()).dot_general_to(
                &vj,
                dims(&[0, 1], &[0, 2], &[4], &[1]),
                DType::F32,
            );
            let row = p.sum(&[-1], true);
            (l, acc) = match (&m, l, acc) {
                (Some(m_old), Some(l), Some(acc)) => {
                    let c = (m_old - &m_new).exp();
                    (Some(&l * &c + row), Some(&acc * &c + pv))
                }
                _ => (Some(row), Some(pv)),
            };
            m = Some(m_new);
        }
        let (m, l, acc) = (
            m.expect("block 0 exists"),
            l.expect("set"),
            acc.expect("set"),
        );
        outs.push((&acc / &l).transpose(&[0, 2, 1, 3, 4]));
        lses.push((l.log() + m).reshape(&[sh.b, sh.kv, bs, sh.groups]));
    }
    let out = concat(&outs, 1)
        .reshape(&[sh.b, sh.t, sh.nh, sh.d])
        .cast(q.dtype());
    let lse = concat(&lses, 2);
    vec![out, lse]
}

/// `[dq, dk, dv]` from `[q, k, v, out, lse, d_out]`.
fn backward(g: &Graph, io: [&Tensor; 6], bs: i64, spec: &AttentionSpec) -> Vec<Tensor> {
    let [q, k, v, out, lse, d_out] = io;
    let sh = shapes(q, k);
    let scale = spec.scale;
    let five = [sh.b, sh.t, sh.kv, sh.groups, sh.d];
    let q5 = q.reshape(&five);
    let do5 = d_out.reshape(&five).cast(DType::F32);
    // delta[b, t, kv, g] = sum_d dO * O
    let delta = (&do5 * out.reshape(&five).cast(DType::F32))
        .sum(&[-1], false)
        .transpose(&[0, 2, 1, 3]);
    let nb = sh.t / bs;
    let mut dq: Vec<Option<Tensor>> = vec![None; nb as usize];
    let mut dk: Vec<Option<Tensor>> = vec![None; nb as usize];
    let mut dv: Vec<Option<Tensor>> = vec![None; nb as usize];
    let add = |slot: &mut Option<Tensor>, x: Tensor| {
        *slot = Some(match slot.take() {
            Some(a) => a + x,
            None => x,
        })
    };
    for i in 0..nb {
        let rows = |x: &Tensor, axis: isize| x.slice_axis(axis, i * bs, (i + 1) * bs);
        let qi = rows(&q5, 1);
        let doi = rows(&do5, 1);
        let lse_i = rows(lse, 2).expand_dims(-1);
        let delta_i = rows(&delta, 2).expand_dims(-1);
        for (j, mask) in visited_blocks(g, i, bs, spec.window) {
            let kj = k.slice_axis(1, j * bs, (j + 1) * bs);
            let vj = v.slice_axis(1, j * bs, (j + 1) * bs);
            let (s, slope) = block_scores(&qi, &kj, spec, mask.as_ref());
            let p = (&s - &lse_i).exp(); // [B,KV,bq,G,bk]
                                         // dV_j += P^T dO_i : [B,KV,bk,D] -> [B,bk,KV,D]
            let dv_j = p
                .dot_general(&doi, dims(&[0, 1], &[0, 2], &[2, 3], &[1, 3]))
                .transpose(&[0, 2, 1, 3]);
            add(&mut dv[j as usize], dv_j);
            let dp = doi.dot_general(&vj.cast(DType::F32), dims(&[0, 2], &[0, 2], &[4], &[3]));
            let ds = &p * (dp - &delta_i);
            // Through the soft-cap: d(cap tanh(s / cap)) / ds = 1 - tanh².
            let ds = match slope {
                Some(slope) => ds * slope,
                None => ds,
            };
            // dQ_i += dS K_j : [B,KV,bq,G,D]
            let dq_i =
                ds.dot_general(&kj.cast(DType::F32), dims(&[0, 1], &[0, 2], &[4], &[1])) * scale;
            add(&mut dq[i as usize], dq_i);
            // dK_j += dS^T Q_i : [B,KV,bk,D] -> [B,bk,KV,D]
            let dk_j = ds
                .dot_general(
                    &qi.cast(DType::F32),
                    dims(&[0, 1], &[0, 2], &[2, 3], &[1, 3]),
                )
                .transpose(&[0, 2, 1, 3])
                * scale;
            add(&mut dk[j as usize], dk_j);
        }
    }
    let collect = |v: Vec<Option<Tensor>>| -> Vec<Tensor> {
        v.into_iter()
            .map(|x| x.expect("every block is visited"))
            .collect()
    };
    let dq: Vec<Tensor> = collect(dq)
        .into_iter()
        .map(|x| x.transpose(&[0, 2, 1, 3, 4]))
        .collect();
    let dq = concat(&dq, 1)
        .reshape(&[sh.b, sh.t, sh.nh, sh.d])
        .cast(q.dtype());
    let dk = concat(&collect(dk), 1).cast(k.dtype());
    let dv = concat(&collect(dv), 1).cast(v.dtype());
    vec![dq, dk, dv]
}

fn concat(parts: &[Tensor], axis: isize) -> Tensor {
    match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => first.concat(rest, axis),
        Some((first, _)) => first.clone(),
        None => unreachable!("at least one block"),
    }
}
