//! Cross-entropy of the LM head without materialising all logits.
//!
//! The head is applied to `chunk` tokens at a time, so the largest loss temporary is
//! `[chunk, V]` in f32 rather than `[B·T, V]`. The forward pass also takes the gradient of the
//! sum through the head while each chunk's logits are at hand (as fused linear cross-entropy
//! kernels do); the backward pass (a custom VJP) only scales it by the incoming cotangent, so
//! the head is never applied twice. Where nothing differentiates the loss (evaluation), XLA
//! drops the unused gradients.

use vishwam_hlo::{DType, DotDims, Tensor};

/// Sum over tokens of `mask * (logsumexp(h W) - (h W)[target])`, in f32.
/// `h: [N, H]` (compute dtype), `w: [H, V]`, `targets: i32 [N]`, `mask: f32 [N]`.
pub fn masked_ce_sum(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: usize,
) -> Tensor {
    let chunk = dividing_chunk(h.shape()[0], chunk);
    let g = h.graph().clone();
    let out = g.custom_vjp(
        "chunked_cross_entropy",
        &[h.clone(), w.clone(), targets.clone(), mask.clone()],
        |_g, xs| forward(&xs[0], &xs[1], &xs[2], &xs[3], chunk),
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
    out[0].clone()
}

/// A chunk size that keeps one chunk's f32 logits under about 256 MiB.
pub fn default_chunk(tokens: usize, vocab: usize) -> usize {
    let budget = (64usize << 20) / vocab.max(1);
    budget.clamp(1, tokens.max(1))
}

/// `[ce_sum, d h, d w]`: the masked CE sum and its gradients with respect to `h` (`[N, H]`,
/// `h`'s dtype) and `w` (`[H, V]`, f32).
fn forward(h: &Tensor, w: &Tensor, targets: &Tensor, mask: &Tensor, c: i64) -> Vec<Tensor> {
    let v = w.shape()[1];
    let mut total: Option<Tensor> = None;
    let mut dh = Vec::new();
    let mut dw: Option<Tensor> = None;
    for i in 0..h.shape()[0] / c {
        let hc = h.slice_axis(0, i * c, (i + 1) * c);
        let logits = matmul_f32(&hc, w);
        let onehot = targets
            .slice_axis(0, i * c, (i + 1) * c)
            .one_hot(v, DType::F32);
        let m = mask.slice_axis(0, i * c, (i + 1) * c).expand_dims(-1);
        let max = logits.max(&[-1], true).stop_gradient();
        let lse = (&logits - &max).exp().sum(&[-1], true).log() + max;
        let ce = &lse - (&logits * &onehot).sum(&[-1], true);
        accumulate(&mut total, (ce * &m).sum_all());
        let d_logits = ((logits - lse).exp() - onehot) * m; // [c, V]
        let d_logits = d_logits.cast(h.dtype());
        dh.push(d_logits.matmul(&w.transpose(&[1, 0])));
        // dW = h_c^T dlogits with compute-dtype operands and an f32 result (f32 accumulation).
        accumulate(&mut dw, matmul_f32(&hc.transpose(&[1, 0]), &d_logits));
    }
    vec![
        total.expect("at least one chunk"),
        concat_rows(&dh),
        dw.expect("at least one chunk"),
    ]
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

/// Adds `part` to a running sum over chunks.
pub(super) fn accumulate(acc: &mut Option<Tensor>, part: Tensor) {
    *acc = Some(match acc.take() {
        Some(a) => a + part,
        None => part,
    });
}
