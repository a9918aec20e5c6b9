//! Distillation losses: the label cross-entropy and the teacher-student KL divergence of the
//! LM heads, computed together without materialising either model's logits, and the
//! distances between matched hidden states.
//!
//! The heads are applied to `chunk` tokens at a time, so the largest temporaries are two
//! `[chunk, V]` f32 logits (student and teacher) rather than two `[B·T, V]`. The forward pass
//! also computes the objective's gradient for the student (a custom VJP whose backward pass
//! only scales it), so neither head runs twice. The teacher receives no cotangent: its inputs
//! get zeros, which nothing reads.

use super::loss::{accumulate, concat_rows, dividing_chunk, matmul_f32};
use crate::config::IntermediateLoss;
use vishwam_hlo::{DType, Graph, Tensor};

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

/// `(objective, ce_sum, kl_sum)` in f32: `ce_sum` and `kl_sum` are the sums over tokens of
/// `mask * (logsumexp(zs) - zs[target])` and of
/// `mask * KL(softmax(zt / T) || softmax(zs / T))`, where `zs` and `zt` are the student's and
/// the teacher's logits, and `objective = weights[0] * ce_sum + weights[1] * kl_sum`.
/// `targets: i32 [N]`, `mask: f32 [N]`.
///
/// Gradients flow through `objective` only (`ce_sum` and `kl_sum` are for reporting), and to
/// the student only. Because the weights are known when tracing, the forward pass computes
/// the objective's gradient with respect to each chunk's student logits while those logits
/// are at hand, and takes it through the head right away (as fused linear cross-entropy
/// kernels do): the backward pass only scales the result by the incoming cotangent, and
/// neither model's head is applied a second time.
pub fn masked_ce_kl_sums(
    heads: &DistillHeads<'_>,
    targets: &Tensor,
    mask: &Tensor,
    temperature: f64,
    weights: [f64; 2],
    chunk: usize,
) -> (Tensor, Tensor, Tensor) {
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
        |_g, xs| forward(xs, temperature, weights, c),
        |g, xs, outs, cts| backward(g, xs, outs, &cts[0]),
    );
    (out[0].clone(), out[1].clone(), out[2].clone())
}

/// One chunk's student and teacher logits, f32 `[c, V]` each.
fn chunk_logits(xs: &[Tensor], i: i64, c: i64) -> (Tensor, Tensor) {
    let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
    (
        matmul_f32(&rows(&xs[0]), &xs[1]),
        matmul_f32(&rows(&xs[2]), &xs[3]),
    )
}

/// `[objective, ce_sum, kl_sum, d hs, d ws]`: the sums, and the objective's gradients with
/// respect to the student's hidden states (`[N, Hs]`, their dtype) and head (`[Hs, V]`, f32),
/// kept for the backward pass.
fn forward(xs: &[Tensor], temperature: f64, weights: [f64; 2], c: i64) -> Vec<Tensor> {
    let (hs, ws, targets, mask) = (&xs[0], &xs[1], &xs[4], &xs[5]);
    let v = ws.shape()[1];
    let inv_t = 1.0 / temperature;
    let tempered = |d: Tensor| if temperature == 1.0 { d } else { d * inv_t };
    let (mut ce_sum, mut kl_sum, mut dw) = (None, None, None);
    let mut dh = Vec::new();
    for i in 0..hs.shape()[0] / c {
        let (zs, zt) = chunk_logits(xs, i, c);
        let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
        let m = rows(mask).expand_dims(-1);
        let onehot = rows(targets).one_hot(v, DType::F32);
        // One max per row serves both temperatures (max(z / T) = max(z) / T for T > 0), and
        // the sums below read only zs, zt and the maxima: XLA computes them in one pass over
        // the chunk's logits (sibling reductions) after the pass for the maxima.
        let max_s = zs.max(&[-1], true).stop_gradient();
        let max_t = zt.max(&[-1], true).stop_gradient();
        let ds = &zs - &max_s;
        // The exponentials serve both the sums and the gradient below: XLA recomputes them in
        // each consumer where exp is cheap (GPUs) and keeps them where it is not (CPUs).
        let es_t = tempered(ds.clone()).exp();
        let et = tempered(&zt - &max_t).exp();
        let sum_s_t = es_t.sum(&[-1], true);
        let sum_t = et.sum(&[-1], true);
        let lse_s = sum_s_t.log() + &max_s * inv_t;
        let lse_t = sum_t.log() + &max_t * inv_t;
        // KL = sum_v p_t (log p_t - log p_s) = sum_v p_t (zt - zs) / T - lse_t + lse_s.
        let cross = (&et * (&zt - &zs)).sum(&[-1], true);
        let kl = cross * inv_t / &sum_t - &lse_t + &lse_s;
        // exp(ds) = exp(ds / T)^T: for a small integer T (2 is the default) a few multiplies
        // replace an exponential per logit.
        let es = if temperature.fract() == 0.0 && (1.0..=4.0).contains(&temperature) {
            (1..temperature as usize).fold(es_t.clone(), |acc, _| acc * &es_t)
        } else {
            ds.exp()
        };
        let sum_s = es.sum(&[-1], true);
        let lse = sum_s.log() + &max_s;
        let ce = &lse - (&zs * &onehot).sum(&[-1], true);
        accumulate(&mut ce_sum, (ce * &m).sum_all());
        accumulate(&mut kl_sum, (kl * &m).sum_all());
        // d objective / d zs = mask * (w_ce (softmax(zs) - onehot)
        //                              + w_kl (softmax(zs / T) - softmax(zt / T)) / T).
        let (a, b) = (&m * weights[0], m * (weights[1] * inv_t));
        let pt = et * (1.0 / sum_t);
        let ps_t = es_t * (1.0 / sum_s_t);
        // Each [c, V] term appears once so that XLA fuses the whole sum into one pass.
        let d_logits = if temperature == 1.0 {
            (&a + &b) * ps_t - b * pt - a * onehot
        } else {
            let softmax = es * (1.0 / sum_s);
            &a * (softmax - onehot) + b * (ps_t - pt)
        };
        let d_logits = d_logits.cast(hs.dtype());
        dh.push(d_logits.matmul(&ws.transpose(&[1, 0])));
        accumulate(&mut dw, matmul_f32(&rows(hs).transpose(&[1, 0]), &d_logits));
    }
    let (ce_sum, kl_sum) = (
        ce_sum.expect("at least one chunk"),
        kl_sum.expect("at least one chunk"),
    );
    vec![
        &ce_sum * weights[0] + &kl_sum * weights[1],
        ce_sum,
        kl_sum,
        concat_rows(&dh),
        dw.expect("at least one chunk"),
    ]
}

/// The student's gradients from the forward pass, scaled by the objective's cotangent `ct`;
/// zeros for the rest (the sums' own cotangents are ignored: they are reported, not
/// optimised).
fn backward(g: &Graph, xs: &[Tensor], outs: &[Tensor], ct: &Tensor) -> Vec<Tensor> {
    let (hs, ws) = (&xs[0], &xs[1]);
    vec![
        // The cotangent scales in f32 (it is 1/tokens, or loss scale/tokens for f16).
        (outs[3].cast(DType::F32) * ct).cast(hs.dtype()),
        (&outs[4] * ct).cast(ws.dtype()),
        g.zeros(xs[2].ty()),
        g.zeros(xs[3].ty()),
        xs[4].clone(),
        g.zeros(xs[5].ty()),
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
