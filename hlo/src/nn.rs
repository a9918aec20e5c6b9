//! Neural-network functions composed from primitives (no gradient rules of their own).
//!
//! MoE routing's top-k is [`top_k`]: `k` rounds of argmax, each masking the winner out, so
//! it needs no sort primitive; values are taken with a one-hot product and therefore carry
//! gradients to the selected logits.

use crate::ir::ReduceKind;
use crate::{DType, Tensor, TensorType};

/// Softmax along `axis` (max-subtracted for stability).
pub fn softmax(x: &Tensor, axis: isize) -> Tensor {
    let e = (x - x.max(&[axis], true).stop_gradient()).exp();
    &e / e.sum(&[axis], true)
}

/// Log-softmax along `axis`.
pub fn log_softmax(x: &Tensor, axis: isize) -> Tensor {
    let shifted = x - x.max(&[axis], true).stop_gradient();
    &shifted - shifted.exp().sum(&[axis], true).log()
}

/// `log(sum(exp(x)))` along `axes`, computed stably; `keepdims` as in [`Tensor::sum`].
pub fn logsumexp(x: &Tensor, axes: &[isize], keepdims: bool) -> Tensor {
    let m = x.max(axes, true).stop_gradient();
    let out = (x - &m).exp().sum(axes, true).log() + m;
    if keepdims {
        out
    } else {
        let Some(dims) = x.axes("logsumexp", axes) else {
            return out;
        };
        let shape: Vec<i64> = (0..x.rank())
            .filter(|d| !dims.contains(d))
            .map(|d| x.shape()[d])
            .collect();
        out.reshape(&shape)
    }
}

/// SiLU (swish): `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Tensor {
    x * x.sigmoid()
}

/// GELU: exact (`0.5 x (1 + erf(x / sqrt 2))`) or the tanh approximation.
pub fn gelu(x: &Tensor, approximate: bool) -> Tensor {
    if approximate {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let inner = (x + x * x * x * 0.044715) * c;
        x * 0.5 * (inner.tanh() + 1.0)
    } else {
        x * 0.5 * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0)
    }
}

/// The dtype to compute normalisation statistics in: f32 for narrow floats.
fn stats_dtype(d: DType) -> DType {
    match d {
        DType::BF16 | DType::F16 | DType::F8E4M3FN | DType::F8E5M2 => DType::F32,
        other => other,
    }
}

/// RMSNorm over the last axis: `x / sqrt(mean(x^2) + eps) * weight`, with statistics in f32
/// for narrow float inputs; the result has `x`'s dtype.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let xf = x.cast(stats_dtype(x.dtype()));
    let normed = &xf * (xf.square().mean(&[-1], true) + eps).rsqrt();
    normed.cast(x.dtype()) * weight.cast(x.dtype())
}

/// Rotary position embedding (rotate-half convention) of `x: [.., T, H, D]` at integer
/// `positions` broadcastable to `[.., T]`, with frequencies `theta^(-2i/D)`.
pub fn rope(x: &Tensor, positions: &Tensor, theta: f64) -> Tensor {
    let d = x.shape().last().copied().unwrap_or(0);
    let half = d / 2;
    let g = x.graph();
    let ct = stats_dtype(x.dtype());
    let i = g.iota(&TensorType::new(ct, &[half]), 0);
    let inv_freq = (i * (-2.0 * theta.ln() / d as f64)).exp();
    let pos = positions.cast(ct).expand_dims(-1).expand_dims(-1);
    let angles = pos * inv_freq;
    let (cos, sin) = (angles.cos().cast(x.dtype()), angles.sin().cast(x.dtype()));
    let x1 = x.slice_axis(-1, 0, half);
    let x2 = x.slice_axis(-1, half, d);
    let r1 = &x1 * &cos - &x2 * &sin;
    let r2 = &x2 * &cos + &x1 * &sin;
    r1.concat(&[r2], -1)
}

/// Per-example softmax cross-entropy of `logits: [.., V]` against integer `labels: [..]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    let v = logits.shape().last().copied().unwrap_or(0);
    let onehot = labels.one_hot(v, logits.dtype());
    logsumexp(logits, &[-1], false) - (logits * onehot).sum(&[-1], false)
}

/// The `k` largest entries along the last axis and their `i32` indices, largest first.
/// The values carry gradients to the selected entries.
pub fn top_k(x: &Tensor, k: usize) -> (Tensor, Tensor) {
    let n = x.shape().last().copied().unwrap_or(0);
    let lowest = x.graph().full(f64::NEG_INFINITY, x.ty());
    let mut remaining = x.stop_gradient();
    let (mut values, mut indices) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for _ in 0..k {
        let idx = remaining.argmax(-1, DType::I32);
        let onehot = idx.one_hot(n, x.dtype());
        values.push((x * &onehot).reduce(ReduceKind::Sum, &[-1], true));
        remaining = onehot.gt(0.0).select(&lowest, &remaining);
        indices.push(idx.expand_dims(-1));
    }
    match (values.split_first(), indices.split_first()) {
        (Some((v0, vs)), Some((i0, is))) => (v0.concat(vs, -1), i0.concat(is, -1)),
        _ => (
            x.slice_axis(-1, 0, 0),
            x.slice_axis(-1, 0, 0).cast(DType::I32),
        ),
    }
}

/// Uniform floats in `[0, 1)` of `dtype` from random `u32` bits (23 mantissa bits).
pub fn uniform_from_bits(bits: &Tensor, dtype: DType) -> Tensor {
    let mantissa = bits.shift_right_logical(9).or(0x3f80_0000);
    (mantissa.bitcast(DType::F32) - 1.0).cast(dtype)
}

/// Inverted dropout: zero each element with probability `rate` (decided by random `u32`
/// `bits` of `x`'s shape) and scale the rest by `1 / (1 - rate)`.
pub fn dropout(x: &Tensor, rate: f64, bits: &Tensor) -> Tensor {
    if rate <= 0.0 {
        return x.clone();
    }
    let keep = uniform_from_bits(bits, DType::F32).ge(rate);
    keep.select(x * (1.0 / (1.0 - rate)), 0.0)
}
