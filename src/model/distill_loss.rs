//! Distillation losses: the label cross-entropy and the teacher-student KL divergence of the
//! LM heads, computed together without materialising either model's logits, and the
//! distances between matched hidden states.
//!
//! The heads are applied to `chunk` tokens at a time, so the largest temporaries are two
//! `[chunk, V]` logits (the student's in f32, the teacher's in its compute dtype) rather than
//! two `[B·T, V]`. Each chunk's softmax statistics come from one pass over both models'
//! logits where [`RowStats::Online`] is chosen (GPUs), or two passes. The forward pass
//! also computes the objective's gradient for the student (a custom VJP whose backward pass
//! only scales it), so neither head runs twice. The teacher receives no cotangent: its inputs
//! get zeros, which nothing reads.

use super::loss::{
    accumulate, concat_rows, correct_rows, dividing_chunk, lowest_f32, matmul_f32, online_add,
    online_max, sequence_chunks, softcap_with_slope, target_logits, RowStats,
};
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

/// `[objective, ce_sum, kl_sum, correct]` in f32: `ce_sum` and `kl_sum` are the sums over
/// tokens of `mask * (logsumexp(zs) - zs[target])` and of
/// `mask * KL(softmax(zt / T) || softmax(zs / T))`, where `zs` and `zt` are the student's and
/// the teacher's logits, `objective = weights[0] * ce_sum + weights[1] * kl_sum`, and
/// `correct` the sum of `mask` over the tokens whose target is the student's most likely
/// token (as [`super::LmPass::ce_and_correct_sums`] counts them).
/// `targets: i32 [N]` (rows with targets outside `[0, V)` must be masked out), `mask: f32
/// [N]`; `stats` picks one or two passes for each row's softmax statistics.
///
/// Gradients flow through `objective` only (the other sums are for reporting), and to
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
    stats: RowStats,
) -> [Tensor; 4] {
    let no_caps = [None, None];
    masked_ce_kl_sums_capped(
        heads,
        no_caps,
        targets,
        mask,
        temperature,
        weights,
        chunk,
        stats,
    )
}

/// [`masked_ce_kl_sums`] with the student's and the teacher's logits soft-capped by
/// `softcaps[0]` and `softcaps[1]` (each model's `final_logit_softcapping`: `cap * tanh(z /
/// cap)`), the student's gradient taken through its cap.
#[allow(clippy::too_many_arguments)]
pub fn masked_ce_kl_sums_capped(
    heads: &DistillHeads<'_>,
    softcaps: [Option<f64>; 2],
    targets: &Tensor,
    mask: &Tensor,
    temperature: f64,
    weights: [f64; 2],
    chunk: usize,
    stats: RowStats,
) -> [Tensor; 4] {
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
        |_g, xs| forward(xs, temperature, weights, c, stats, softcaps),
        |g, xs, outs, cts| backward(g, xs, outs, &cts[0]),
    );
    [
        out[0].clone(),
        out[1].clone(),
        out[2].clone(),
        out[5].clone(),
    ]
}

/// One chunk's student and teacher logits, `[c, V]` each, as f32. The student's leave the
/// matmul in f32 (they are differentiated); the teacher's in the teacher's compute dtype
/// like the rest of its forward pass (bf16 under mixed precision), which halves the bytes
/// that the loss's passes read for them.
fn chunk_logits(xs: &[Tensor], i: i64, c: i64) -> (Tensor, Tensor) {
    let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
    (
        matmul_f32(&rows(&xs[0]), &xs[1]),
        rows(&xs[2]).matmul(&xs[3]).cast(DType::F32),
    )
}

/// `exp(d / T)` raised back to `exp(d)`: for a small integer T (2 is the default) a few
/// multiplies instead of an exponential per logit.
fn untempered(tempered_exp: &Tensor, d: impl FnOnce() -> Tensor, temperature: f64) -> Tensor {
    if temperature.fract() == 0.0 && (1.0..=4.0).contains(&temperature) {
        (1..temperature as usize).fold(tempered_exp.clone(), |acc, _| acc * tempered_exp)
    } else {
        d().exp()
    }
}

/// One chunk's per-row statistics, `[c, 1]` f32 each.
struct ChunkStats {
    /// max zs.
    max_s: Tensor,
    /// max zt.
    max_t: Tensor,
    /// sum exp((zs - max_s) / T).
    sum_s_t: Tensor,
    /// sum exp(zs - max_s) (the same tensor when T = 1).
    sum_s: Tensor,
    /// sum exp((zt - max_t) / T).
    sum_t: Tensor,
    /// sum exp((zt - max_t) / T) (zt - zs).
    cross: Tensor,
}

/// One chunk's exponentials below the row maxima, `[c, V]` f32 each: built once and read by
/// both the two-pass sums and the gradient.
struct ChunkExps {
    /// exp((zs - max_s) / T).
    es_t: Tensor,
    /// exp(zs - max_s) (from `es_t` by multiplying for a small integer T).
    es: Tensor,
    /// exp((zt - max_t) / T).
    et: Tensor,
}

impl ChunkExps {
    fn new(zs: &Tensor, zt: &Tensor, max_s: &Tensor, max_t: &Tensor, temperature: f64) -> Self {
        let tempered = |d: Tensor| {
            if temperature == 1.0 {
                d
            } else {
                d * (1.0 / temperature)
            }
        };
        let ds = zs - max_s;
        let es_t = tempered(ds.clone()).exp();
        ChunkExps {
            es: if temperature == 1.0 {
                es_t.clone()
            } else {
                untempered(&es_t, || ds, temperature)
            },
            et: tempered(zt - max_t).exp(),
            es_t,
        }
    }
}

impl ChunkStats {
    /// A pass for the maxima, then one for the sums. One max per row serves both
    /// temperatures (max(z / T) = max(z) / T for T > 0); the sums read only zs, zt and the
    /// maxima, so XLA computes them in one pass (sibling reductions), and the exponentials
    /// are the gradient's.
    fn two_pass(zs: &Tensor, zt: &Tensor, temperature: f64) -> (ChunkStats, ChunkExps) {
        let max_s = zs.max(&[-1], true).stop_gradient();
        let max_t = zt.max(&[-1], true).stop_gradient();
        let e = ChunkExps::new(zs, zt, &max_s, &max_t, temperature);
        let sum = |x: &Tensor| x.sum(&[-1], true);
        let sum_s_t = sum(&e.es_t);
        let stats = ChunkStats {
            sum_s: if temperature == 1.0 {
                sum_s_t.clone()
            } else {
                sum(&e.es)
            },
            sum_s_t,
            sum_t: sum(&e.et),
            cross: sum(&(&e.et * (zt - zs))),
            max_s,
            max_t,
        };
        (stats, e)
    }

    /// Everything in one pass over zs and zt (a variadic reduction carrying both maxima): the
    /// sums are rescaled whenever a maximum grows, with the exponential that the element
    /// costs anyway.
    fn online(zs: &Tensor, zt: &Tensor, temperature: f64) -> ChunkStats {
        let inv_t = 1.0 / temperature;
        let g = zs.graph().clone();
        let ones = g.scalar(1.0, DType::F32).broadcast_to(zs.shape());
        let (zero, lowest) = (g.scalar(0.0, DType::F32), lowest_f32(&g));
        let separate = temperature != 1.0;
        // Operands: max_s, sum_s_t, [sum_s], max_t, sum_t, cross.
        let mut operands = vec![zs.clone(), ones.clone()];
        let mut inits = vec![lowest.clone(), zero.clone()];
        if separate {
            operands.push(ones.clone());
            inits.push(zero.clone());
        }
        operands.extend([zt.clone(), ones, zt - zs]);
        inits.extend([lowest, zero.clone(), zero]);
        let k = usize::from(separate);
        let r = g.reduce_with(&operands, &inits, &[-1], |_, a, b| {
            let tempered = |gap: &Tensor| (gap * inv_t).exp();
            let (max_s, s_wins, gap_s) = online_max(&a[0], &b[0]);
            let f_s = tempered(&gap_s);
            let mut out = vec![max_s, online_add(&s_wins, &a[1], &b[1], &f_s)];
            if separate {
                let f1 = untempered(&f_s, || gap_s, temperature);
                out.push(online_add(&s_wins, &a[2], &b[2], &f1));
            }
            let (max_t, t_wins, gap_t) = online_max(&a[2 + k], &b[2 + k]);
            let f_t = tempered(&gap_t);
            out.push(max_t);
            out.push(online_add(&t_wins, &a[3 + k], &b[3 + k], &f_t));
            out.push(online_add(&t_wins, &a[4 + k], &b[4 + k], &f_t));
            out
        });
        let col = |i: usize| r[i].expand_dims(-1);
        ChunkStats {
            max_s: col(0).stop_gradient(),
            sum_s_t: col(1),
            sum_s: col(1 + k),
            max_t: col(2 + k).stop_gradient(),
            sum_t: col(3 + k),
            cross: col(4 + k),
        }
    }
}

/// `[objective, ce_sum, kl_sum, d hs, d ws]`: the sums, and the objective's gradients with
/// respect to the student's hidden states (`[N, Hs]`, their dtype) and head (`[Hs, V]`, f32),
/// kept for the backward pass.
fn forward(
    xs: &[Tensor],
    temperature: f64,
    weights: [f64; 2],
    c: i64,
    stats: RowStats,
    softcaps: [Option<f64>; 2],
) -> Vec<Tensor> {
    let (hs, ws) = (&xs[0], &xs[1]);
    let v = ws.shape()[1];
    let inv_t = 1.0 / temperature;
    let (mut ce_sum, mut kl_sum, mut correct, mut dw) = (None, None, None, None);
    let mut dh = Vec::new();
    // Chunk i + 1 reads its rows (hidden states, targets, mask) through a barrier with chunk
    // i's head gradient.
    let mut xs = xs.to_vec();
    let g = hs.graph().clone();
    for i in 0..hs.shape()[0] / c {
        let [mut h_student, mut h_teacher, mut targets, mut mask] =
            [0, 2, 4, 5].map(|k| xs[k].clone());
        sequence_chunks(
            &g,
            &mut [&mut h_student, &mut h_teacher, &mut targets, &mut mask],
            &mut dw,
        );
        (xs[0], xs[2], xs[4], xs[5]) = (h_student, h_teacher, targets, mask);
        let (hs, targets, mask) = (&xs[0], &xs[4], &xs[5]);
        let (zs, zt) = chunk_logits(&xs, i, c);
        let (zs, slope_s) = softcap_with_slope(zs, softcaps[0]);
        let (zt, _) = softcap_with_slope(zt, softcaps[1]);
        let rows = |x: &Tensor| x.slice_axis(0, i * c, (i + 1) * c);
        let m = rows(mask).expand_dims(-1);
        let chunk_targets = rows(targets);
        let onehot = chunk_targets.one_hot(v, DType::F32);
        // The gradient's exponentials: shared with the sums after two passes (CPUs, where exp
        // is dear); after one pass, recomputed in the gradient's own pass (GPUs).
        let (st, e) = match stats {
            RowStats::TwoPass => ChunkStats::two_pass(&zs, &zt, temperature),
            RowStats::Online => {
                let st = ChunkStats::online(&zs, &zt, temperature);
                let e = ChunkExps::new(&zs, &zt, &st.max_s, &st.max_t, temperature);
                (st, e)
            }
        };
        let lse_s = st.sum_s_t.log() + &st.max_s * inv_t;
        let lse_t = st.sum_t.log() + &st.max_t * inv_t;
        // KL = sum_v p_t (log p_t - log p_s) = sum_v p_t (zt - zs) / T - lse_t + lse_s.
        let kl = st.cross * inv_t / &st.sum_t - &lse_t + &lse_s;
        let lse = st.sum_s.log() + &st.max_s;
        // After two passes the target logit joins the sums' pass; after one, it is gathered.
        let picked = match stats {
            RowStats::TwoPass => (&zs * &onehot).sum(&[-1], true),
            RowStats::Online => target_logits(&zs, &chunk_targets),
        };
        accumulate(&mut correct, correct_rows(&picked, &st.max_s, &m));
        let ce = &lse - picked;
        accumulate(&mut ce_sum, (ce * &m).sum_all());
        accumulate(&mut kl_sum, (kl * &m).sum_all());
        // d objective / d zs = mask * (w_ce (softmax(zs) - onehot)
        //                              + w_kl (softmax(zs / T) - softmax(zt / T)) / T).
        let (a, b) = (&m * weights[0], m * (weights[1] * inv_t));
        let pt = e.et * (1.0 / st.sum_t);
        let ps_t = e.es_t * (1.0 / st.sum_s_t);
        // Each [c, V] term appears once so that XLA fuses the whole sum into one pass.
        let d_logits = if temperature == 1.0 {
            (&a + &b) * ps_t - b * pt - a * onehot
        } else {
            let softmax = e.es * (1.0 / st.sum_s);
            &a * (softmax - onehot) + b * (ps_t - pt)
        };
        let d_logits = match slope_s {
            Some(slope) => d_logits * slope,
            None => d_logits,
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
        correct.expect("at least one chunk"),
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
