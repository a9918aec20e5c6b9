//! Distillation losses: the label cross-entropy and the teacher-student KL divergence of the
//! LM heads, computed together without materialising either model's logits, and the
//! distances between matched hidden states.
//!
//! Like [`super::masked_ce_sum`], the heads are applied to `chunk` tokens at a time and the
//! backward pass recomputes each chunk's logits (a custom VJP), so the largest temporaries are
//! two `[chunk, V]` f32 logits (student and teacher) rather than two `[B·T, V]`. The forward
//! pass keeps only three log-sum-exps per token for the backward pass, which turns them into
//! softmaxes with one exponential each. The teacher receives no cotangent: its inputs get
//! zeros, which nothing reads.

use crate::config::IntermediateLoss;
use vishwam_hlo::{nn, DType, DotDims, Graph, Tensor};

/// The largest chunk size `<= chunk` that divides `n` (at least 1).
fn dividing_chunk(n: i64, chunk: usize) -> i64 {
    (1..=(chunk.max(1) as i64).min(n.max(1)))
        .rev()
        .find(|c| n % c == 0)
        .unwrap_or(1)
}

/// `[N, H] @ [H, V]` with an f32 result whatever the operand dtype.
fn matmul_f32(x: &Tensor, w: &Tensor) -> Tensor {
    x.dot_general_to(
        w,
        DotDims {
            lhs_batch: vec![],
            rhs_batch: vec![],
            lhs_contract: vec![1],
            rhs_contract: vec![0],
        },
        DType::F32,
    )
}

/// The two LM heads of a distillation step.
pub struct DistillHeads<'a> {
    /// Student final hidden states `[N, Hs]` (its compute dtype).
    pub student_hidden: &'a Tensor,
    /// Student head `[Hs, V]` (its compute dtype).
    pub student_head: &'a Tensor,
    /// Teacher final hidden states `[N, Ht]` (the teacher's compute dtype).
    pub teacher_hidden: &'a Tensor,
    /// Teacher head `[Ht, V]` (the teacher's compute dtype).
    pub teacher_head: &'a Tensor,
}

/// `(ce_sum, kl_sum)` in f32: the sums over tokens of
/// `mask * (logsumexp(zs) - zs[target])` and of
/// `mask * KL(softmax(zt / T) || softmax(zs / T))`, where `zs` and `zt` are the student's and
/// the teacher's logits. `targets: i32 [N]`, `mask: f32 [N]`; gradients flow to the student
/// only.
pub fn masked_ce_kl_sums(
    heads: &DistillHeads<'_>,
    targets: &Tensor,
    mask: &Tensor,
    temperature: f64,
    chunk: usize,
) -> (Tensor, Tensor) {
    let n = heads.student_hidden.shape()[0];
    let c = dividing_chunk(n, chunk);
    let g = heads.student_hidden.graph().clone();
    let inputs = [
        heads.student_hidden.clone(),
        heads.student_head.clone(),
        heads.teacher_hidden.clone(),
        heads.teacher_head.clone(),
        targets.clone(),
        mask.clone(),
    ];
    let out = g.custom_vjp(
        "chunked_distillation",
        &inputs,
        |_g, xs| forward(xs, temperature, c),
        |g, xs, outs, cts| backward(g, xs, outs, &cts[..2], temperature, c),
    );
    (out[0].clone(), out[1].clone())
}

/// One chunk's student and teacher logits, f32 `[c, V]` each.
fn chunk_logits(xs: &[Tensor], i: i64, c: i64) -> (Tensor, Tensor) {
    let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
    (
        matmul_f32(&rows(&xs[0]), &xs[1]),
        matmul_f32(&rows(&xs[2]), &xs[3]),
    )
}

/// `z / T`, `exp(z / T - max)`, its sum and `logsumexp(z / T)` over the last axis
/// (`[c, V]`, `[c, V]`, `[c, 1]`, `[c, 1]`): one exponential per element.
fn tempered(z: &Tensor, temperature: f64) -> (Tensor, Tensor, Tensor, Tensor) {
    let scaled = if temperature == 1.0 {
        z.clone()
    } else {
        z / temperature
    };
    let max = scaled.max(&[-1], true).stop_gradient();
    let e = (&scaled - &max).exp();
    let sum = e.sum(&[-1], true);
    let lse = sum.log() + max;
    (scaled, e, sum, lse)
}

fn concat(parts: &[Tensor]) -> Tensor {
    match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => first.concat(rest, 0),
        Some((first, _)) => first.clone(),
        None => unreachable!("at least one chunk"),
    }
}

/// `[ce_sum, kl_sum, lse_s, lse_t, lse]`: the two sums and, kept for the backward pass,
/// `logsumexp(zs / T)`, `logsumexp(zt / T)` and `logsumexp(zs)` per token (`[N]` each).
fn forward(xs: &[Tensor], temperature: f64, c: i64) -> Vec<Tensor> {
    let (targets, mask) = (&xs[4], &xs[5]);
    let v = xs[1].shape()[1];
    let (mut ce_sum, mut kl_sum): (Option<Tensor>, Option<Tensor>) = (None, None);
    let add = |acc: &mut Option<Tensor>, part: Tensor| {
        *acc = Some(match acc.take() {
            Some(a) => a + part,
            None => part,
        });
    };
    let mut lses: [Vec<Tensor>; 3] = Default::default();
    for i in 0..xs[0].shape()[0] / c {
        let (zs, zt) = chunk_logits(xs, i, c);
        let t = targets.slice_axis(0, i * c, (i + 1) * c);
        let m = mask.slice_axis(0, i * c, (i + 1) * c);
        let (zs_t, _, _, lse_s) = tempered(&zs, temperature);
        let (zt_t, et, st, lse_t) = tempered(&zt, temperature);
        // KL = sum_v p_t (log p_t - log p_s) = sum_v p_t (zt - zs) / T - lse_t + lse_s.
        let kl = (et * (zt_t - zs_t)).sum(&[-1], true) / st - &lse_t + &lse_s;
        let lse = if temperature == 1.0 {
            lse_s.clone()
        } else {
            nn::logsumexp(&zs, &[-1], true)
        };
        let picked = (&zs * t.one_hot(v, DType::F32)).sum(&[-1], true);
        let ce = &lse - picked;
        add(&mut ce_sum, (ce.reshape(&[c]) * &m).sum_all());
        add(&mut kl_sum, (kl.reshape(&[c]) * m).sum_all());
        for (all, x) in lses.iter_mut().zip([lse_s, lse_t, lse]) {
            all.push(x.reshape(&[c]));
        }
    }
    let mut out = vec![
        ce_sum.expect("at least one chunk"),
        kl_sum.expect("at least one chunk"),
    ];
    out.extend(lses.iter().map(|parts| concat(parts)));
    out
}

/// `d zs = mask * (ct_ce * (softmax(zs) - onehot) + ct_kl * (softmax(zs/T) - softmax(zt/T)) / T)`,
/// with the softmaxes from the forward's log-sum-exps; then the student's hidden states and
/// head through the matmul; zeros for the rest.
fn backward(
    g: &Graph,
    xs: &[Tensor],
    outs: &[Tensor],
    cts: &[Tensor],
    temperature: f64,
    c: i64,
) -> Vec<Tensor> {
    // The barrier orders the recomputation after the forward pass (the cotangents exist only
    // then), so XLA cannot merge it with the forward's logits and keep those alive.
    let mut through = xs[..4].to_vec();
    through.extend(cts.iter().cloned());
    let barred = g.optimization_barrier(&through);
    let (hs, ws, ct_ce, ct_kl) = (&barred[0], &barred[1], &barred[4], &barred[5]);
    let (targets, mask) = (&xs[4], &xs[5]);
    let v = ws.shape()[1];
    let scale = |z: Tensor| {
        if temperature == 1.0 {
            z
        } else {
            z / temperature
        }
    };
    let mut dh = Vec::new();
    let mut dw: Option<Tensor> = None;
    for i in 0..hs.shape()[0] / c {
        let (zs, zt) = chunk_logits(&barred[..4], i, c);
        let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
        let lse = |k: usize| rows(&outs[k]).expand_dims(-1);
        let ps_t = (scale(zs.clone()) - lse(2)).exp();
        let pt = (scale(zt) - lse(3)).exp();
        let onehot = rows(targets).one_hot(v, DType::F32);
        let m = rows(mask).expand_dims(-1);
        let (a, b) = (&m * ct_ce, m * ct_kl / temperature);
        // Each [c, V] term appears once so that XLA fuses the whole sum into one pass.
        let d_logits = if temperature == 1.0 {
            (&a + &b) * ps_t - b * pt - a * onehot
        } else {
            let softmax = (&zs - lse(4)).exp();
            &a * (softmax - onehot) + b * (ps_t - pt)
        };
        let d_logits = d_logits.cast(hs.dtype());
        dh.push(d_logits.matmul(&ws.transpose(&[1, 0])));
        let part = matmul_f32(&rows(hs).transpose(&[1, 0]), &d_logits);
        dw = Some(match dw {
            Some(acc) => acc + part,
            None => part,
        });
    }
    let dw = dw.expect("at least one chunk").cast(ws.dtype());
    vec![
        concat(&dh),
        dw,
        g.zeros(xs[2].ty()),
        g.zeros(xs[3].ty()),
        targets.clone(),
        g.zeros(mask.ty()),
    ]
}

/// `sum over tokens of mask * d(student, teacher)` in f32, for hidden states `[N, H]` of the
/// same width: `d` is the mean squared difference over the hidden axis (`Mse`) or
/// `1 - cos(student, teacher)` with `cos = s·t / (|s| |t| + 1e-8)` (`Cosine`).
pub fn masked_hidden_distance_sum(
    student: &Tensor,
    teacher: &Tensor,
    mask: &Tensor,
    kind: IntermediateLoss,
) -> Tensor {
    let (s, t) = (student.cast(DType::F32), teacher.cast(DType::F32));
    let distance = match kind {
        IntermediateLoss::Mse => (&s - &t).square().mean(&[-1], false),
        IntermediateLoss::Cosine => {
            let dot = (&s * &t).sum(&[-1], false);
            let norms = s.square().sum(&[-1], false).sqrt() * t.square().sum(&[-1], false).sqrt();
            (dot / (norms + 1e-8)) * -1.0 + 1.0
        }
    };
    (distance * mask).sum_all()
}

#[cfg(test)]
mod tests {
    use super::dividing_chunk;

    #[test]
    fn chunks_divide_the_token_count() {
        assert_eq!(dividing_chunk(12, 5), 4);
        assert_eq!(dividing_chunk(12, 100), 12);
        assert_eq!(dividing_chunk(7, 3), 1);
        assert_eq!(dividing_chunk(8, 0), 1);
    }
}
