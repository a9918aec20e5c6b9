//! Cross-entropy of the LM head without materialising all logits.
//!
//! The head is applied to `chunk` tokens at a time, so the largest loss temporary is
//! `[chunk, V]` in f32 rather than `[B·T, V]`. The forward pass also takes the gradient of the
//! sum through the head while each chunk's logits are at hand (as fused linear cross-entropy
//! kernels do); the backward pass (a custom VJP) only scales it by the incoming cotangent, so
//! the head is never applied twice. Where nothing differentiates the loss (evaluation), XLA
//! drops the unused gradients.
//!
//! With an FP8 head ([`Fp8Formats`]) the three head matmuls (logits, `d h`, `d W`) take FP8
//! operands: `h` and `W` in the forward format, each with a current-scaling power-of-two scale
//! from its own amax, and the logits' gradient `softmax - onehot` in E5M2 whatever the
//! gradient format (E4M3's scale of 2^8 would flush every probability below about 4e-6, most
//! of a large vocabulary's tail, to zero; E5M2's 2^15 keeps them down to about 5e-10). That
//! gradient lies in `[-1, 1]` (times the 0/1 mask), so its scale is that constant, and nothing
//! saturates: the head needs no statistics.

use super::fp8::{abs_max, dequantise, quantise, scale_for, Fp8Formats, Fp8Type};
use crate::config::Platform;
use vishwam_hlo::{DType, DotDims, GatherDims, Graph, Tensor, TensorType};

/// How the chunked losses find each row's softmax statistics (the maximum logit and the sum
/// of exponentials below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStats {
    /// One pass over the logits for the maxima, then one for the sums: the fewest operations.
    /// Best where the loss is compute-bound (CPUs).
    TwoPass,
    /// One pass that carries each row's running maximum and sum together, rescaling the sum
    /// when the maximum grows ("online softmax"): one read of every chunk's logits fewer for
    /// the same number of exponentials. Best where the loss is bandwidth-bound (GPUs, TPUs).
    Online,
}

impl RowStats {
    /// The faster choice on `platform`. The trainer and the generator pass the platform of
    /// their engine's client (`train::pin_platform`, `train::engine_platform`), never "auto";
    /// should "auto" arrive all the same, it gets the choice that is fast on the CPU and
    /// correct everywhere.
    pub fn for_platform(platform: Platform) -> RowStats {
        match platform {
            Platform::Cpu | Platform::Auto => RowStats::TwoPass,
            Platform::Cuda | Platform::Tpu => RowStats::Online,
        }
    }
}

/// The lowest finite f32: the starting maximum of an online reduction (a finite value, so
/// that combining two empty partial results rescales by `exp(0)` rather than `exp(NaN)`).
pub(super) fn lowest_f32(g: &Graph) -> Tensor {
    g.scalar(f32::MIN as f64, DType::F32)
}

/// Combines the maxima of two partial results of an online softmax: returns the larger, a
/// flag that is true where `a`'s won, and `smaller - larger` (at most 0), from which the
/// caller scales the losing side's sums (`exp` of it, tempered as needed).
pub(super) fn online_max(a_max: &Tensor, b_max: &Tensor) -> (Tensor, Tensor, Tensor) {
    let a_wins = a_max.ge(b_max);
    let (big, small) = (a_max.maximum(b_max), a_max.minimum(b_max));
    let gap = small - &big;
    (big, a_wins, gap)
}

/// `a_sum + b_sum` with the losing side's sum scaled by `factor` (see [`online_max`]).
pub(super) fn online_add(a_wins: &Tensor, a: &Tensor, b: &Tensor, factor: &Tensor) -> Tensor {
    a_wins.select(&(a + b * factor), &(b + a * factor))
}

/// `logits[i, targets[i]]` as `[c, 1]`, for `logits: [c, V]` and integer `targets: [c]`: one
/// gathered element per row, which keeps the one-hot product out of the one-pass reduction.
/// Out-of-range targets are clamped (their rows must be masked out).
pub(super) fn target_logits(logits: &Tensor, targets: &Tensor) -> Tensor {
    let c = logits.shape()[0];
    let rows = logits
        .graph()
        .iota(&TensorType::new(targets.dtype(), &[c, 1]), 0);
    let index = rows.concat(&[targets.expand_dims(-1)], 1);
    let dims = GatherDims {
        offset_dims: vec![],
        collapsed_slice_dims: vec![0, 1],
        start_index_map: vec![0, 1],
        index_vector_dim: 1,
    };
    logits.gather(&index, dims, &[1, 1]).expand_dims(-1)
}

/// Per-row `(max, sum exp(z - max), z[target])` of `logits: [c, V]` f32, each `[c, 1]`
/// (`onehot` and `targets` are the chunk's targets in both forms).
fn ce_row_stats(
    logits: &Tensor,
    onehot: &Tensor,
    targets: &Tensor,
    stats: RowStats,
) -> [Tensor; 3] {
    match stats {
        // The target logit joins the sums' pass (free there; a separate gather measured no
        // faster on the CPU).
        RowStats::TwoPass => {
            let max = logits.max(&[-1], true).stop_gradient();
            let sum = (logits - &max).exp().sum(&[-1], true);
            [max, sum, (logits * onehot).sum(&[-1], true)]
        }
        RowStats::Online => {
            let g = logits.graph().clone();
            let ones = g.scalar(1.0, DType::F32).broadcast_to(logits.shape());
            let r = g.reduce_with(
                &[logits.clone(), ones],
                &[lowest_f32(&g), g.scalar(0.0, DType::F32)],
                &[-1],
                |_, a, b| {
                    let (max, a_wins, gap) = online_max(&a[0], &b[0]);
                    vec![max, online_add(&a_wins, &a[1], &b[1], &gap.exp())]
                },
            );
            [
                r[0].expand_dims(-1).stop_gradient(),
                r[1].expand_dims(-1),
                target_logits(logits, targets),
            ]
        }
    }
}

/// f32 `logits` soft-capped (`cap * tanh(z / cap)`) and the cap's derivative `1 - tanh²`, by
/// which a gradient with respect to the capped logits becomes one with respect to `z`;
/// unchanged and `None` without a cap.
pub(super) fn softcap_with_slope(logits: Tensor, cap: Option<f64>) -> (Tensor, Option<Tensor>) {
    match cap {
        Some(cap) => {
            let t = (logits * (1.0 / cap)).tanh();
            let slope = 1.0 - &t * &t;
            (t * cap, Some(slope))
        }
        None => (logits, None),
    }
}

/// Sum over tokens of `mask * (logsumexp(h W) - (h W)[target])`, in f32.
/// `h: [N, H]` (compute dtype), `w: [H, V]`, `targets: i32 [N]`, `mask: f32 [N]`; with
/// `fp8`, the head's matmuls take FP8 operands (see the module docs), and `mask` must lie in
/// `[0, 1]` (the gradient's constant scale assumes it). `stats` picks one or two passes for
/// each row's softmax statistics. Targets outside `[0, V)` are clamped when the target logit
/// is read, so their rows must be masked out.
pub fn masked_ce_sum(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: usize,
    fp8: Option<Fp8Formats>,
    stats: RowStats,
) -> Tensor {
    masked_ce_and_correct_sums(h, w, targets, mask, chunk, fp8, stats).0
}

/// [`masked_ce_sum`] and, from the same pass over the logits, the count of correctly
/// predicted tokens: the sum of `mask` over the rows whose target logit is the row's maximum
/// (exactly equal, so a tie with another token counts as correct). Both f32 scalars; the
/// count has no gradient. It reads the maximum and the target logit that the cross-entropy
/// computes anyway, so it costs one comparison per row.
pub fn masked_ce_and_correct_sums(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: usize,
    fp8: Option<Fp8Formats>,
    stats: RowStats,
) -> (Tensor, Tensor) {
    masked_ce_and_correct_sums_capped(h, w, targets, mask, chunk, fp8, stats, None)
}

/// [`masked_ce_and_correct_sums`] of the logits soft-capped by `softcap`
/// (`final_logit_softcapping`: `cap * tanh(z / cap)`), the gradient taken through the cap.
#[allow(clippy::too_many_arguments)]
pub(super) fn masked_ce_and_correct_sums_capped(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: usize,
    fp8: Option<Fp8Formats>,
    stats: RowStats,
    softcap: Option<f64>,
) -> (Tensor, Tensor) {
    let chunk = dividing_chunk(h.shape()[0], chunk);
    let g = h.graph().clone();
    let out = g.custom_vjp(
        "chunked_cross_entropy",
        &[h.clone(), w.clone(), targets.clone(), mask.clone()],
        move |g, xs| forward(g, xs, chunk, fp8, stats, softcap),
        |g, xs, outs, cts| {
            let (h, w) = (&xs[0], &xs[1]);
            vec![
                // The cotangent scales in f32 (it is 1/tokens, or loss scale/tokens for f16).
                (outs[1].cast(DType::F32) * &cts[0]).cast(h.dtype()),
                (&outs[2] * &cts[0]).cast(w.dtype()),
                xs[2].clone(),
                g.zeros(xs[3].ty()),
            ]
        },
    );
    (out[0].clone(), out[3].clone())
}

/// A chunk size that keeps one chunk's f32 logits under about 256 MiB.
pub fn default_chunk(tokens: usize, vocab: usize) -> usize {
    chunk_within(64 << 20, tokens, vocab)
}

/// The chunk size for `platform` (`memory.loss_chunk_tokens` null): [`default_chunk`] on the
/// CPU; on GPUs and TPUs one chunk's f32 logits may take about 1 GiB. Each chunk adds its
/// `[H, V]` f32 head-gradient product to a running sum, a pass over the head's gradient that
/// XLA does not fold into the GEMM; on one H100 (124M model, vocabulary 32000, 16384 tokens)
/// 2 chunks instead of 8 took the step from 31.0 to 30.4 ms for 1 GiB more memory (see
/// docs/performance.md).
pub fn default_chunk_on(platform: Platform, tokens: usize, vocab: usize) -> usize {
    match platform {
        Platform::Cpu | Platform::Auto => default_chunk(tokens, vocab),
        Platform::Cuda | Platform::Tpu => chunk_within(256 << 20, tokens, vocab),
    }
}

/// The most tokens (at least 1, at most `tokens`) whose `[chunk, vocab]` logits fit in
/// `elements`.
fn chunk_within(elements: usize, tokens: usize, vocab: usize) -> usize {
    (elements / vocab.max(1)).clamp(1, tokens.max(1))
}

/// `x` rounded to `ty` with a current-scaling per-tensor scale, in `x`'s dtype: the operand
/// form XLA turns into an FP8 GEMM input.
fn fp8_operand(x: &Tensor, ty: Fp8Type) -> Tensor {
    let scale = scale_for(&abs_max(x), ty);
    dequantise(&quantise(x, &scale, ty), &scale, x.dtype())
}

/// `d` (f32, every element in `[-1, 1]`) rounded to E5M2 with the constant scale that keeps 1
/// in range, in `to`.
fn fp8_unit_gradient(g: &Graph, d: &Tensor, to: DType) -> Tensor {
    let ty = Fp8Type::E5M2;
    let scale = g.scalar(ty.unit_scale(), DType::F32);
    dequantise(&quantise(d, &scale, ty), &scale, to)
}

/// `[ce_sum, d h, d w, correct]` for `xs = [h, w, targets, mask]`: the masked CE sum, its
/// gradients with respect to `h` (`[N, H]`, `h`'s dtype) and `w` (`[H, V]`, f32), and the
/// masked count of rows whose target logit is the maximum.
fn forward(
    g: &Graph,
    xs: &[Tensor],
    c: i64,
    fp8: Option<Fp8Formats>,
    stats: RowStats,
    softcap: Option<f64>,
) -> Vec<Tensor> {
    let (h, w, targets, mask) = (&xs[0], &xs[1], &xs[2], &xs[3]);
    let (h, w) = match fp8 {
        Some(f) => (fp8_operand(h, f.forward), fp8_operand(w, f.forward)),
        None => (h.clone(), w.clone()),
    };
    let v = w.shape()[1];
    let (mut total, mut correct): (Option<Tensor>, Option<Tensor>) = (None, None);
    let mut dh = Vec::new();
    let mut dw: Option<Tensor> = None;
    let (mut h, mut targets, mut mask) = (h, targets.clone(), mask.clone());
    for i in 0..h.shape()[0] / c {
        sequence_chunks(g, &mut [&mut h, &mut targets, &mut mask], &mut dw);
        let hc = h.slice_axis(0, i * c, (i + 1) * c);
        let (logits, slope) = softcap_with_slope(matmul_f32(&hc, &w), softcap);
        let chunk_targets = targets.slice_axis(0, i * c, (i + 1) * c);
        let onehot = chunk_targets.one_hot(v, DType::F32);
        let m = mask.slice_axis(0, i * c, (i + 1) * c).expand_dims(-1);
        let [max, sum, picked] = ce_row_stats(&logits, &onehot, &chunk_targets, stats);
        accumulate(&mut correct, correct_rows(&picked, &max, &m));
        let lse = sum.log() + max;
        let ce = &lse - picked;
        accumulate(&mut total, (ce * &m).sum_all());
        let d_logits = ((logits - lse).exp() - onehot) * m; // [c, V]
                                                            // Through the cap: still in [-1, 1], as the FP8 gradient's constant scale assumes.
        let d_logits = match slope {
            Some(slope) => d_logits * slope,
            None => d_logits,
        };
        let d_logits = match fp8 {
            Some(_) => fp8_unit_gradient(g, &d_logits, h.dtype()),
            None => d_logits.cast(h.dtype()),
        };
        dh.push(d_logits.matmul(&w.transpose(&[1, 0])));
        // dW = h_c^T dlogits with compute-dtype operands and an f32 result (f32 accumulation).
        accumulate(&mut dw, matmul_f32(&hc.transpose(&[1, 0]), &d_logits));
    }
    vec![
        total.expect("at least one chunk"),
        concat_rows(&dh),
        dw.expect("at least one chunk"),
        correct.expect("at least one chunk"),
    ]
}

/// `sum(mask)` over the rows whose target logit `picked` equals the row maximum `max` (both
/// `[c, 1]` f32, the maximum taken over the same logits): the correct predictions of a chunk.
pub(super) fn correct_rows(picked: &Tensor, max: &Tensor, mask: &Tensor) -> Tensor {
    picked.ge(max).select(mask, 0.0).sum_all()
}

/// The largest chunk size `<= chunk` that divides `n` (at least 1).
pub(super) fn dividing_chunk(n: i64, chunk: usize) -> i64 {
    (1..=(chunk.max(1) as i64).min(n.max(1)))
        .rev()
        .find(|c| n % c == 0)
        .unwrap_or(1)
}

/// `[N, H] @ [H, V]` with an f32 result whatever the operand dtype (f32 accumulation).
pub(super) fn matmul_f32(x: &Tensor, w: &Tensor) -> Tensor {
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

/// Per-chunk results joined along the token axis.
pub(super) fn concat_rows(parts: &[Tensor]) -> Tensor {
    match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => first.concat(rest, 0),
        Some((first, _)) => first.clone(),
        None => unreachable!("at least one chunk"),
    }
}

/// Makes the next chunk wait for the previous one: `inputs` (the rows the chunks slice: hidden
/// states, targets, mask) pass through an optimization barrier together with the running head
/// gradient `dw`, so no chunk's `[c, V]` logits or one-hot targets can be computed before the
/// previous chunk's gradient is. Without it XLA's
/// CPU scheduler started every chunk's head matmul at once and kept all their logits alive:
/// at a 256K vocabulary the compiled temporaries of the train step grew by 2 GiB per 1024
/// tokens (the distillation step's by 4 GiB), the memory of unchunked logits. An identity:
/// the values are unchanged.
pub(super) fn sequence_chunks(g: &Graph, inputs: &mut [&mut Tensor], dw: &mut Option<Tensor>) {
    let Some(acc) = dw.as_ref() else {
        return;
    };
    let mut values: Vec<Tensor> = inputs.iter().map(|t| (**t).clone()).collect();
    values.push(acc.clone());
    let mut out = g.optimization_barrier(&values);
    *dw = out.pop();
    for (slot, value) in inputs.iter_mut().zip(out) {
        **slot = value;
    }
}

/// Adds `part` to a running sum over chunks.
pub(super) fn accumulate(acc: &mut Option<Tensor>, part: Tensor) {
    *acc = Some(match acc.take() {
        Some(a) => a + part,
        None => part,
    });
}
