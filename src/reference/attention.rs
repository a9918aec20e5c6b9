//! Causal softmax attention with grouped key/value heads (MHA, GQA, MQA), with Gemma 2's
//! score scale, soft-cap and sliding window.

use candle_core::Tensor;

use super::error::Result;
use super::kernels::windowed_causal_softmax;
use crate::config::ModelConfig;

/// Attention of `q [B,T,NH,D]` over `k, v [B,T,KV,D]` (rotary already applied), causal,
/// query head n reading key/value head n / (NH / KV). Returns `[B*T, NH*D]`.
///
/// The g = NH / KV query heads that share a key/value head are stacked along the query
/// axis, so each key/value head is one batched matmul `[g*T, D] x [D, T]` with no copies
/// of k or v.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    attention_scores_to_output(q, k, v, scale, None, None)
}

/// The attention of block `layer` of `config`: scores `q . k * attention_scale`, soft-capped
/// `cap * tanh(s / cap)` with `attn_logit_softcapping`, and a sliding window where
/// `layer_window` gives one (query i sees keys `i - window < j <= i`).
pub fn layer_attention(
    config: &ModelConfig,
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    attention_scores_to_output(
        q,
        k,
        v,
        config.attention_scale(),
        config.attn_logit_softcapping,
        config.layer_window(layer),
    )
}

fn attention_scores_to_output(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    softcap: Option<f64>,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, t, nh, d) = q.dims4()?;
    let kv = k.dim(2)?;
    let g = nh / kv;
    // [B,T,KV,g,D] -> [B,KV,g,T,D] -> [B*KV, g*T, D]
    let q = q
        .reshape((b, t, kv, g, d))?
        .permute((0, 2, 3, 1, 4))?
        .contiguous()?
        .reshape((b * kv, g * t, d))?;
    // [B,T,KV,D] -> [B,KV,T,D] -> [B*KV, T, D]
    let heads_first = |x: &Tensor| -> Result<Tensor> {
        Ok(x.transpose(1, 2)?.contiguous()?.reshape((b * kv, t, d))?)
    };
    let (k, v) = (heads_first(k)?, heads_first(v)?);
    let scores = (q.matmul(&k.t()?)? * scale)?; // [B*KV, g*T, T]
    let scores = match softcap {
        Some(cap) => ((scores / cap)?.tanh()? * cap)?,
        None => scores,
    };
    let probs = windowed_causal_softmax(&scores.reshape((b * kv, g, t, t))?, window)?.reshape((
        b * kv,
        g * t,
        t,
    ))?;
    let out = probs.matmul(&v)?; // [B*KV, g*T, D]

    // [B,KV,g,T,D] -> [B,T,KV,g,D] -> [B*T, NH*D]
    Ok(out
        .reshape((b, kv, g, t, d))?
        .permute((0, 3, 1, 2, 4))?
        .contiguous()?
        .reshape((b * t, nh * d))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(shape: (usize, usize, usize, usize), rng: &mut ChaCha8Rng) -> (Vec<f64>, Tensor) {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let values: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let tensor = Tensor::from_vec(values.clone(), shape, &Device::Cpu).unwrap();
        (values, tensor)
    }

    /// The batched grouped formulation equals the per-head loops of docs/model.md.
    #[test]
    fn grouped_attention_matches_the_per_head_loops() {
        let (b, t, nh, kv, d) = (2, 5, 6, 2, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (qv, q) = random((b, t, nh, d), &mut rng);
        let (kv_, k) = random((b, t, kv, d), &mut rng);
        let (vv, v) = random((b, t, kv, d), &mut rng);
        let got: Vec<f64> = causal_attention(&q, &k, &v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let g = nh / kv;
        let qi = |bb: usize, i: usize, n: usize, dd: usize| qv[((bb * t + i) * nh + n) * d + dd];
        let ki = |bb: usize, j: usize, n: usize, dd: usize| kv_[((bb * t + j) * kv + n) * d + dd];
        let vi = |bb: usize, j: usize, n: usize, dd: usize| vv[((bb * t + j) * kv + n) * d + dd];
        for bb in 0..b {
            for n in 0..nh {
                for i in 0..t {
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..d)
                                .map(|dd| qi(bb, i, n, dd) * ki(bb, j, n / g, dd))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                    for dd in 0..d {
                        let want: f64 = (0..=i)
                            .map(|j| (s[j] - max).exp() / z * vi(bb, j, n / g, dd))
                            .sum();
                        let at = ((bb * t + i) * nh + n) * d + dd;
                        assert!((got[at] - want).abs() < 1e-12, "b{bb} n{n} i{i} d{dd}");
                    }
                }
            }
        }
    }
}
