//! FP8 quantisation with per-tensor power-of-two scales, straight-through gradients and
//! statistics that leave the step as gradients.
//!
//! A tensor `x` is quantised as `q = fp8(clamp(x * s, -max, max))` and used as the
//! dequantised `convert(q) * (1 / s)` in the compute dtype, right before a `dot_general`:
//! the pattern XLA rewrites into cuBLASLt FP8 GEMMs on Hopper and emulates (upcasts)
//! elsewhere. `s = 2^floor(log2(max / amax))`, the largest power of two that maps `amax`
//! inside the format's range, so scaling is exact and the only error is the FP8 rounding; it
//! leaves a margin of less than 2x above `amax` (the `delayed` recipe's amax may lag the
//! tensor). `amax` is the scaling amax handed in (delayed scaling: the max of a history, so
//! the quantisation does not wait for a reduction over the tensor and XLA can fuse it into
//! the producer) or, when none is given (current scaling), the tensor's own `max |x|`.
//!
//! Operands go through [`quantise_operand`] (weights updated in place through
//! [`quantise_weight`], which also orders the statistics' read of the weight before its use),
//! whose backward passes the cotangent straight through (the gradient of the rounding is taken
//! as 1). Matmul outputs go through
//! [`quantise_gradient`], the identity forward whose backward quantises the incoming
//! gradient (E5M2 in the hybrid format): the backward matmuls `dx = dy @ w^T` and
//! `dw = x^T @ dy` then both run on FP8 operands with their dequantisation scales.
//!
//! Both take a `probe`, an `f32[2]` input that the forward ignores: its cotangent is
//! `[amax, saturated]`, the tensor's `max |x|` and the count of elements whose `|x| * s`
//! exceeded the format's maximum and were clipped. Differentiating the step with respect to
//! zero probes therefore returns every FP8 tensor's statistics, also from inside remat regions
//! and the backward pass, without extra outputs.

use vishwam_hlo::{DType, Graph, ReduceKind, Tensor};

/// An 8-bit floating-point element format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Type {
    /// 4 exponent bits, 3 mantissa bits, no infinities (`f8E4M3FN`): max 448.
    E4M3,
    /// 5 exponent bits, 2 mantissa bits (`f8E5M2`): max 57344.
    E5M2,
}

impl Fp8Type {
    /// The hlo element type.
    pub fn dtype(self) -> DType {
        match self {
            Fp8Type::E4M3 => DType::F8E4M3FN,
            Fp8Type::E5M2 => DType::F8E5M2,
        }
    }

    /// The largest finite value.
    pub fn max(self) -> f64 {
        match self {
            Fp8Type::E4M3 => 448.0,
            Fp8Type::E5M2 => 57344.0,
        }
    }

    /// The scale of a tensor whose amax is 1: the largest power of two `<= max`.
    pub fn unit_scale(self) -> f64 {
        2f64.powi(self.max().log2().floor() as i32)
    }
}

/// The FP8 formats of the block projections (and of an FP8 LM head): forward operands and
/// backward gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp8Formats {
    /// Activations and weights in the forward pass.
    pub forward: Fp8Type,
    /// Output gradients in the backward pass.
    pub backward: Fp8Type,
}

impl Fp8Formats {
    /// E4M3 forward, E5M2 gradients (`optimization.fp8_format` = "hybrid").
    pub const HYBRID: Fp8Formats = Fp8Formats {
        forward: Fp8Type::E4M3,
        backward: Fp8Type::E5M2,
    };
    /// E4M3 everywhere (`optimization.fp8_format` = "e4m3").
    pub const E4M3: Fp8Formats = Fp8Formats {
        forward: Fp8Type::E4M3,
        backward: Fp8Type::E4M3,
    };
}

/// Scales are kept within `[2^-SCALE_EXPONENT_LIMIT, 2^SCALE_EXPONENT_LIMIT]`.
const SCALE_EXPONENT_LIMIT: i32 = 100;
/// The exponent bits of an f32.
const F32_EXPONENT_MASK: i64 = 0x7F80_0000;

/// `max |x|` over all elements, as an f32 scalar.
pub fn abs_max(x: &Tensor) -> Tensor {
    let axes: Vec<isize> = (0..x.rank() as isize).collect();
    x.abs()
        .reduce(ReduceKind::Max, &axes, false)
        .cast(DType::F32)
}

/// The quantisation scale for `amax` (f32 scalar): `2^floor(log2(max / amax))`, or 1 when
/// `amax` is 0, infinite or NaN.
pub fn scale_for(amax: &Tensor, ty: Fp8Type) -> Tensor {
    let limit = 2f64.powi(SCALE_EXPONENT_LIMIT);
    let ratio = (ty.max() / amax).minimum(limit).maximum(1.0 / limit);
    // Keeping only the exponent bits rounds a positive normal f32 down to a power of two.
    let pow2 = ratio
        .bitcast(DType::I32)
        .and(F32_EXPONENT_MASK)
        .bitcast(DType::F32);
    let usable = amax.gt(0.0).and(amax.lt(f64::INFINITY));
    usable.select(&pow2, 1.0)
}

/// The number of elements of `x` that `scale` pushes past `ty`'s range (f32 scalar): the
/// elements [`quantise`] clips.
pub fn clipped(x: &Tensor, scale: &Tensor, ty: Fp8Type) -> Tensor {
    let axes: Vec<isize> = (0..x.rank() as isize).collect();
    (x.cast(DType::F32) * scale)
        .abs()
        .gt(ty.max())
        .cast(DType::F32)
        .sum(&axes, false)
}

/// A region's statistics of `x`: `(amax, scale, clipped)`, the scale from `scaling_amax`
/// (delayed scaling) when given, else from the amax itself (current scaling).
///
/// With delayed scaling the scale does not depend on `x`, so the amax and the clip count are
/// one reduction of two operands, and XLA's GPU backend fuses it with the quantisation: one
/// kernel reads `x` once for the amax, the count and the FP8 tensor. As two reductions they
/// took two passes, and the one that also wrote the FP8 tensor ran at about a tenth of HBM
/// bandwidth (docs/performance.md, finding 7). With current scaling the count needs the
/// scale, so it is a second reduction.
fn scaled_statistics(
    x: &Tensor,
    scaling_amax: Option<&Tensor>,
    ty: Fp8Type,
) -> (Tensor, Tensor, Tensor) {
    let Some(delayed) = scaling_amax else {
        let amax = abs_max(x);
        let scale = scale_for(&amax, ty);
        let clipped = clipped(x, &scale, ty);
        return (amax, scale, clipped);
    };
    let scale = scale_for(delayed, ty);
    let g = x.graph().clone();
    let magnitude = x.cast(DType::F32).abs();
    let clipped_each = (&magnitude * &scale).gt(ty.max()).cast(DType::F32);
    let zero = g.scalar(0.0, DType::F32);
    let axes: Vec<isize> = (0..x.rank() as isize).collect();
    let mut out = g.reduce_with(
        &[magnitude, clipped_each],
        &[zero.clone(), zero],
        &axes,
        |_, acc, el| vec![acc[0].maximum(&el[0]), &acc[1] + &el[1]],
    );
    let clipped = out.pop().expect("two results");
    let amax = out.pop().expect("two results");
    (amax, scale, clipped)
}

/// `fp8(clamp(x * scale))`.
pub fn quantise(x: &Tensor, scale: &Tensor, ty: Fp8Type) -> Tensor {
    let max = ty.max();
    let q = (x.cast(DType::F32) * scale)
        .maximum(-max)
        .minimum(max)
        .cast(ty.dtype());
    // XLA's float-conversion simplification may treat `convert(convert(x, f8), bf16)` as
    // excess precision and drop the f8 round trip, which also hides the FP8 operand from the
    // GEMM rewriter. A barrier keeps the f8 tensor a real value.
    let g = q.graph().clone();
    g.optimization_barrier(&[q]).remove(0)
}

/// `convert(q) * (1 / scale)` in `to`: the form XLA fuses into an FP8 GEMM's operand.
pub fn dequantise(q: &Tensor, scale: &Tensor, to: DType) -> Tensor {
    q.cast(to) * (1.0 / scale).cast(to)
}

fn stats(amax: &Tensor, saturated: &Tensor) -> Tensor {
    amax.reshape(&[1]).concat(&[saturated.reshape(&[1])], 0)
}

/// Custom-vjp inputs `[x, probe]`, plus the delayed-scaling amax when there is one.
fn region_inputs(x: &Tensor, probe: &Tensor, scaling_amax: Option<&Tensor>) -> Vec<Tensor> {
    let mut inputs = vec![x.clone(), probe.clone()];
    inputs.extend(scaling_amax.cloned());
    inputs
}

/// `x` rounded to `ty` with a per-tensor scale and dequantised to `to` (forward), with the
/// cotangent passed straight through (backward). The scale comes from `scaling_amax` (f32
/// scalar, delayed scaling) when given, else from `x`'s own amax (current scaling). The
/// cotangent of `probe` (f32[2]) is `[amax, saturated]`.
pub fn quantise_operand(
    x: &Tensor,
    scaling_amax: Option<&Tensor>,
    probe: &Tensor,
    ty: Fp8Type,
    to: DType,
) -> Tensor {
    quantise_region(x, scaling_amax, probe, ty, to, false)
}

/// [`quantise_operand`] for a weight that the step updates in place (a donated parameter).
/// Its statistics read the weight but feed nothing until the backward pass is done; here they
/// are tied to the quantised weight, so they come before every use of it and thus before the
/// optimizer's update. Otherwise XLA keeps the old value alive for them with a copy of the
/// weight in every step (measured at 1B on an H100: 160 weight copies per step).
pub fn quantise_weight(
    w: &Tensor,
    scaling_amax: Option<&Tensor>,
    probe: &Tensor,
    ty: Fp8Type,
    to: DType,
) -> Tensor {
    quantise_region(w, scaling_amax, probe, ty, to, true)
}

fn quantise_region(
    x: &Tensor,
    scaling_amax: Option<&Tensor>,
    probe: &Tensor,
    ty: Fp8Type,
    to: DType,
    tie_statistics: bool,
) -> Tensor {
    let g = x.graph().clone();
    let out = g.custom_vjp(
        "fp8_operand",
        &region_inputs(x, probe, scaling_amax),
        move |g: &Graph, xs: &[Tensor]| {
            let (amax, scale, saturated) = scaled_statistics(&xs[0], xs.get(2), ty);
            let q = quantise(&xs[0], &scale, ty);
            let mut values = vec![q, amax, saturated];
            if tie_statistics {
                values = g.optimization_barrier(&values);
            }
            let [q, amax, saturated] = &values[..] else {
                unreachable!("a barrier returns its three operands")
            };
            vec![dequantise(q, &scale, to), stats(amax, saturated)]
        },
        |_: &Graph, xs: &[Tensor], outs: &[Tensor], cts: &[Tensor]| {
            let mut cotangents = vec![cts[0].cast(xs[0].dtype()), outs[1].clone()];
            cotangents.extend(xs.get(2).map(Tensor::zeros_like));
            cotangents
        },
    );
    out[0].clone()
}

/// The identity on `y` (forward) whose backward rounds the incoming gradient to `ty` with a
/// per-tensor scale and dequantises it to `y`'s dtype. `scaling_amax` and `probe` as in
/// [`quantise_operand`], for the gradient.
pub fn quantise_gradient(
    y: &Tensor,
    scaling_amax: Option<&Tensor>,
    probe: &Tensor,
    ty: Fp8Type,
) -> Tensor {
    let g = y.graph().clone();
    let out = g.custom_vjp(
        "fp8_gradient",
        &region_inputs(y, probe, scaling_amax),
        |_: &Graph, xs: &[Tensor]| vec![xs[0].clone()],
        move |_: &Graph, xs: &[Tensor], _: &[Tensor], cts: &[Tensor]| {
            let dy = &cts[0];
            let (amax, scale, saturated) = scaled_statistics(dy, xs.get(2), ty);
            let q = quantise(dy, &scale, ty);
            let mut cotangents = vec![dequantise(&q, &scale, dy.dtype()), stats(&amax, &saturated)];
            cotangents.extend(xs.get(2).map(Tensor::zeros_like));
            cotangents
        },
    );
    out[0].clone()
}
