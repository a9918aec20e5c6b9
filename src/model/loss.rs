//! Cross-entropy of the LM head without materialising all logits.
//!
//! The head is applied to `chunk` tokens at a time. The backward pass recomputes each chunk's
//! logits instead of keeping them (a custom VJP), so the largest loss temporary is
//! `[chunk, V]` in f32 rather than `[B·T, V]`.

use vishwam_hlo::{nn, DType, Graph, Tensor};

/// Sum over tokens of `mask * (logsumexp(h W) - (h W)[target])`, in f32.
/// `h: [N, H]` (compute dtype), `w: [H, V]`, `targets: i32 [N]`, `mask: f32 [N]`.
pub fn masked_ce_sum(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: usize,
) -> Tensor {
    let n = h.shape()[0];
    let chunk = (1..=(chunk.max(1) as i64).min(n.max(1)))
        .rev()
        .find(|c| n % c == 0)
        .unwrap_or(1);
    let g = h.graph().clone();
    let out = g.custom_vjp(
        "chunked_cross_entropy",
        &[h.clone(), w.clone(), targets.clone(), mask.clone()],
        |_g, xs| vec![forward(&xs[0], &xs[1], &xs[2], &xs[3], chunk)],
        |g, xs, _outs, cts| backward(g, &xs[0], &xs[1], &xs[2], &xs[3], &cts[0], chunk),
    );
    out[0].clone()
}

/// A chunk size that keeps one chunk's f32 logits under about 256 MiB.
pub fn default_chunk(tokens: usize, vocab: usize) -> usize {
    let budget = (64usize << 20) / vocab.max(1);
    budget.clamp(1, tokens.max(1))
}

fn chunk_logits(h: &Tensor, w: &Tensor, i: i64, c: i64) -> Tensor {
    h.slice_axis(0, i * c, (i + 1) * c).matmul_to_f32(w)
}

fn forward(h: &Tensor, w: &Tensor, targets: &Tensor, mask: &Tensor, c: i64) -> Tensor {
    let v = w.shape()[1];
    let mut total: Option<Tensor> = None;
    for i in 0..h.shape()[0] / c {
        let logits = chunk_logits(h, w, i, c);
        let t = targets.slice_axis(0, i * c, (i + 1) * c);
        let m = mask.slice_axis(0, i * c, (i + 1) * c);
        let picked = (&logits * t.one_hot(v, DType::F32)).sum(&[-1], false);
        let ce = nn::logsumexp(&logits, &[-1], false) - picked;
        let part = (ce * m).sum_all();
        total = Some(match total {
            Some(acc) => acc + part,
            None => part,
        });
    }
    total.expect("at least one chunk")
}

fn backward(
    g: &Graph,
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    ct: &Tensor,
    c: i64,
) -> Vec<Tensor> {
    let v = w.shape()[1];
    let mut dh = Vec::new();
    let mut dw: Option<Tensor> = None;
    for i in 0..h.shape()[0] / c {
        let hc = h.slice_axis(0, i * c, (i + 1) * c);
        let logits = chunk_logits(h, w, i, c);
        let t = targets.slice_axis(0, i * c, (i + 1) * c);
        let m = mask.slice_axis(0, i * c, (i + 1) * c);
        let weight = (m * ct).expand_dims(-1);
        let d_logits = (nn::softmax(&logits, -1) - t.one_hot(v, DType::F32)) * weight; // [c, V]
        let d_logits = d_logits.cast(h.dtype());
        dh.push(d_logits.matmul(&w.transpose(&[1, 0])));
        // dW = h_c^T dlogits with compute-dtype operands and an f32 result (f32 accumulation).
        let part = hc.transpose(&[1, 0]).matmul_to_f32(&d_logits);
        dw = Some(match dw {
            Some(acc) => acc + part,
            None => part,
        });
    }
    let dh = match dh.split_first() {
        Some((first, rest)) if !rest.is_empty() => first.concat(rest, 0),
        Some((first, _)) => first.clone(),
        None => unreachable!("at least one chunk"),
    };
    let dw = dw.expect("at least one chunk").cast(w.dtype());
    vec![dh, dw, targets.clone(), g.zeros(mask.ty())]
}

trait MatmulF32 {
    fn matmul_to_f32(&self, w: &Tensor) -> Tensor;
}

impl MatmulF32 for Tensor {
    /// `[N, H] @ [H, V]` with an f32 result whatever the operand dtype.
    fn matmul_to_f32(&self, w: &Tensor) -> Tensor {
        self.dot_general_to(
            w,
            vishwam_hlo::DotDims {
                lhs_batch: vec![],
                rhs_batch: vec![],
                lhs_contract: vec![1],
                rhs_contract: vec![0],
            },
            DType::F32,
        )
    }
}
