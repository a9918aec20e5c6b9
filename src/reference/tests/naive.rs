//! docs/model.md written as plain f64 loops: the hand computation the Candle graph must match.

use std::collections::BTreeMap;

use super::super::Batch;
use crate::config::{ModelConfig, RopeScalingType};

type Params = BTreeMap<String, Vec<f64>>;

/// x [n, k] @ w [k, m].
fn matmul(x: &[f64], n: usize, k: usize, w: &[f64], m: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * m];
    for r in 0..n {
        for c in 0..m {
            y[r * m + c] = (0..k).map(|i| x[r * k + i] * w[i * m + c]).sum();
        }
    }
    y
}

fn rms_norm(x: &[f64], scale: &[f64], eps: f64) -> Vec<f64> {
    let h = scale.len();
    x.chunks(h)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / h as f64;
            let r = 1.0 / (ms + eps).sqrt();
            row.iter().zip(scale).map(move |(v, s)| v * r * s)
        })
        .collect()
}

/// Rotates one head vector at position `t`.
fn rope(x: &mut [f64], t: usize, c: &ModelConfig) {
    let d = x.len();
    let (mut theta, mut pos) = (c.rope_theta, t as f64);
    match c.rope_scaling {
        Some(s) if s.kind == RopeScalingType::Linear => pos /= s.factor,
        Some(s) => theta *= s.factor.powf(d as f64 / (d as f64 - 2.0)),
        None => {}
    }
    let original = x.to_vec();
    for j in 0..d / 2 {
        let angle = pos * theta.powf(-2.0 * j as f64 / d as f64);
        let (sin, cos) = angle.sin_cos();
        x[j] = original[j] * cos - original[j + d / 2] * sin;
        x[j + d / 2] = original[j + d / 2] * cos + original[j] * sin;
    }
}

/// Logits [B*T, V].
pub(super) fn logits(c: &ModelConfig, p: &Params, tokens: &[i32], b: usize, t: usize) -> Vec<f64> {
    let (h, v, f) = (c.hidden_dim, c.vocab_size, c.mlp_dim());
    let (nh, kv, d) = (c.num_heads, c.kv_heads(), c.head_dim());
    let n = b * t;
    let embed = &p["embed.tokens"];
    let mut x: Vec<f64> = tokens
        .iter()
        .flat_map(|&tok| embed[tok as usize * h..(tok as usize + 1) * h].to_vec())
        .collect();
    for l in 0..c.num_layers {
        let w = |s: &str| &p[&format!("layers.{l}.{s}")];
        let a = rms_norm(&x, w("attn_norm.scale"), c.norm_eps);
        let mut q = matmul(&a, n, h, w("attn.wq"), nh * d);
        let mut k = matmul(&a, n, h, w("attn.wk"), kv * d);
        let vv = matmul(&a, n, h, w("attn.wv"), kv * d);
        for row in 0..n {
            for head in 0..nh {
                rope(
                    &mut q[(row * nh + head) * d..(row * nh + head + 1) * d],
                    row % t,
                    c,
                );
            }
            for head in 0..kv {
                rope(
                    &mut k[(row * kv + head) * d..(row * kv + head + 1) * d],
                    row % t,
                    c,
                );
            }
        }
        let g = nh / kv;
        let mut o = vec![0.0; n * nh * d];
        for bb in 0..b {
            for head in 0..nh {
                for i in 0..t {
                    let qi = &q[((bb * t + i) * nh + head) * d..][..d];
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[((bb * t + j) * kv + head / g) * d..][..d];
                            qi.iter().zip(kj).map(|(x, y)| x * y).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                    for (j, sj) in s.iter().enumerate() {
                        let pj = (sj - max).exp() / z;
                        let vj = &vv[((bb * t + j) * kv + head / g) * d..][..d];
                        for dd in 0..d {
                            o[((bb * t + i) * nh + head) * d + dd] += pj * vj[dd];
                        }
                    }
                }
            }
        }
        let proj = matmul(&o, n, nh * d, w("attn.wo"), h);
        x.iter_mut().zip(proj).for_each(|(x, y)| *x += y);
        let a = rms_norm(&x, w("mlp_norm.scale"), c.norm_eps);
        let gate = matmul(&a, n, h, w("mlp.w_gate"), f);
        let up = matmul(&a, n, h, w("mlp.w_up"), f);
        let hidden: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let down = matmul(&hidden, n, f, w("mlp.w_down"), h);
        x.iter_mut().zip(down).for_each(|(x, y)| *x += y);
    }
    let x = rms_norm(&x, &p["final_norm.scale"], c.norm_eps);
    if c.tie_embeddings {
        let transposed: Vec<f64> = (0..h)
            .flat_map(|i| (0..v).map(move |r| embed[r * h + i]))
            .collect();
        matmul(&x, n, h, &transposed, v)
    } else {
        matmul(&x, n, h, &p["lm_head"], v)
    }
}

/// Per-position cross-entropy [B*T] from logits.
pub(super) fn cross_entropy(logits: &[f64], targets: &[i32], v: usize) -> Vec<f64> {
    logits
        .chunks(v)
        .zip(targets)
        .map(|(row, &target)| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[target.max(0) as usize]
        })
        .collect()
}

/// `sum(ce * mask) / max(sum(mask), 1)`.
pub(super) fn loss(c: &ModelConfig, p: &Params, batch: &Batch) -> f64 {
    let logits = logits(c, p, &batch.tokens, batch.batch_size, batch.seq_len);
    let ce = cross_entropy(&logits, &batch.targets, c.vocab_size);
    let total: f64 = ce
        .iter()
        .zip(&batch.mask)
        .map(|(ce, &m)| ce * m as f64)
        .sum();
    total / batch.mask.iter().map(|&m| m as f64).sum::<f64>().max(1.0)
}
