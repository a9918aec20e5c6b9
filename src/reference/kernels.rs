//! Two fused CPU kernels as Candle custom ops, each with its backward: the causal softmax of
//! attention and the softmax cross-entropy of the loss. Composed from Candle's elementwise
//! ops, these two take a dozen single-threaded passes over the largest tensors of a step
//! ([B, NH, T, T] scores and [B*T, V] logits); fused, they take one or two passes, row-parallel.

use std::ops::{Add, AddAssign, Div, Mul, Sub};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::error::Result;

/// The float types the kernels run on.
trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
}

macro_rules! real {
    ($($t:ty),*) => {$(
        impl Real for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn exp(self) -> Self { <$t>::exp(self) }
            fn ln(self) -> Self { <$t>::ln(self) }
        }
    )*};
}
real!(f32, f64);

fn row_max<T: Real>(row: &[T]) -> T {
    row.iter()
        .fold(T::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `max + ln(sum(exp(row - max)))`.
fn log_sum_exp<T: Real>(row: &[T]) -> T {
    let max = row_max(row);
    let mut sum = T::ZERO;
    for &v in row {
        sum += (v - max).exp();
    }
    max + sum.ln()
}

/// `$body` on the f32 or f64 data of one storage (bound to `$x`) or of two storages of the same
/// type (`$x`, `$y`), its `Vec` wrapped in that storage type; any other type is an error
/// naming the op.
macro_rules! per_float {
    ($op:expr, $s:expr, |$x:ident| $body:expr) => {
        match $s {
            CpuStorage::F32($x) => CpuStorage::F32($body),
            CpuStorage::F64($x) => CpuStorage::F64($body),
            other => bail!("{}: expects f32 or f64, got {:?}", $op, other.dtype()),
        }
    };
    ($op:expr, ($s1:expr, $s2:expr), |$x:ident, $y:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => CpuStorage::F32($body),
            (CpuStorage::F64($x), CpuStorage::F64($y)) => CpuStorage::F64($body),
            _ => bail!("{}: expects two f32 or two f64 tensors", $op),
        }
    };
}

/// The contiguous elements of a layout, or an error naming the op.
fn contiguous<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: expects a contiguous input"),
    }
}

/// Causal softmax over the last axis of `[..., T, T]` (query i, key j): keys j > i get 0, and
/// with a window W keys j <= i - W too.
struct CausalSoftmax {
    window: Option<usize>,
}

fn causal_softmax_rows<T: Real>(x: &[T], t: usize, window: Option<usize>) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(t)
        .zip(x.par_chunks(t))
        .enumerate()
        .for_each(|(row, (out, x))| {
            let i = row % t;
            let first = window.map_or(0, |w| (i + 1).saturating_sub(w)); // keys first..=i
            let (out, x) = (&mut out[first..=i], &x[first..=i]);
            let max = row_max(x);
            let mut sum = T::ZERO;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - max).exp();
                sum += *o;
            }
            for o in out.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.dims();
        let t = dims[dims.len() - 1];
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            bail!("causal-softmax: expects [..., T, T] scores, got {dims:?}");
        }
        let name = self.name();
        let out = per_float!(name, storage, |x| causal_softmax_rows(
            contiguous(x, layout, name)?,
            t,
            self.window
        ));
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// `dx = p * (g - sum(g * p))` per row, from probabilities p and the output gradient g.
struct SoftmaxGrad;

fn softmax_grad_rows<T: Real>(p: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; p.len()];
    out.par_chunks_mut(n)
        .zip(p.par_chunks(n).zip(g.par_chunks(n)))
        .for_each(|(out, (p, g))| {
            let mut dot = T::ZERO;
            for (&p, &g) in p.iter().zip(g) {
                dot += p * g;
            }
            for ((o, &p), &g) in out.iter_mut().zip(p).zip(g) {
                *o = p * (g - dot);
            }
        });
    out
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = l1.dims()[l1.dims().len() - 1];
        let name = self.name();
        let out = per_float!(name, (s1, s2), |p, g| softmax_grad_rows(
            contiguous(p, l1, name)?,
            contiguous(g, l2, name)?,
            n
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// `ce[r] = logsumexp(logits[r, :]) - logits[r, target[r]]` for logits `[N, V]`, targets `[N]`.
struct SoftmaxCrossEntropy;

fn cross_entropy_rows<T: Real>(x: &[T], targets: &[u32], v: usize) -> Vec<T> {
    x.par_chunks(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| log_sum_exp(row) - row[t as usize])
        .collect()
}

/// Shape checks shared by the cross-entropy kernels: `[N, V]` logits, `N` targets below V.
fn check_cross_entropy(l1: &Layout, targets: &[u32]) -> candle_core::Result<(usize, usize)> {
    let (n, v) = match l1.dims() {
        &[n, v] => (n, v),
        dims => bail!("softmax-cross-entropy: expects [N, V] logits, got {dims:?}"),
    };
    if targets.len() != n || targets.iter().any(|&t| t as usize >= v) {
        bail!("softmax-cross-entropy: expects {n} targets in [0, {v})");
    }
    Ok((n, v))
}

impl CustomOp2 for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        "softmax-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let CpuStorage::U32(targets) = s2 else {
            bail!("softmax-cross-entropy: expects u32 targets");
        };
        let targets = contiguous(targets, l2, name)?;
        let (n, v) = check_cross_entropy(l1, targets)?;
        let out = per_float!(name, s1, |x| cross_entropy_rows(
            contiguous(x, l1, name)?,
            targets,
            v
        ));
        Ok((out, Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _ce: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        Ok((
            Some(logits.apply_op3_no_bwd(targets, &grad, &SoftmaxCrossEntropyGrad)?),
            None,
        ))
    }
}

/// `dlogits[r, j] = g[r] * (softmax(logits[r])[j] - [j == target[r]])`.
struct SoftmaxCrossEntropyGrad;

fn cross_entropy_grad_rows<T: Real>(x: &[T], targets: &[u32], g: &[T], v: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(v)
        .zip(x.par_chunks(v).zip(targets.par_iter().zip(g.par_iter())))
        .for_each(|(out, (row, (&t, &g)))| {
            let lse = log_sum_exp(row);
            for (o, &x) in out.iter_mut().zip(row) {
                *o = g * (x - lse).exp();
            }
            out[t as usize] = out[t as usize] - g;
        });
    out
}

impl CustomOp3 for SoftmaxCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "softmax-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let CpuStorage::U32(targets) = s2 else {
            bail!("{name}: expects u32 targets");
        };
        let targets = contiguous(targets, l2, name)?;
        let (n, v) = check_cross_entropy(l1, targets)?;
        if l3.dims() != [n] {
            bail!("{name}: expects a [{n}] gradient, got {:?}", l3.dims());
        }
        let out = per_float!(name, (s1, s3), |x, g| cross_entropy_grad_rows(
            contiguous(x, l1, name)?,
            targets,
            contiguous(g, l3, name)?,
            v
        ));
        Ok((out, l1.shape().clone()))
    }
}

/// Softmax over the last axis of attention scores `[..., T, T]` with keys j > query i
/// masked out (docs/model.md: `s = -inf where j > i; p = softmax_j(s)`).
pub fn causal_softmax(scores: &Tensor) -> Result<Tensor> {
    windowed_causal_softmax(scores, None)
}

/// [`causal_softmax`] that also masks keys `j <= i - window` (a sliding window: query i sees
/// keys `i - window < j <= i`).
pub fn windowed_causal_softmax(scores: &Tensor, window: Option<usize>) -> Result<Tensor> {
    Ok(scores.contiguous()?.apply_op1(CausalSoftmax { window })?)
}

/// Per-row cross-entropy `logsumexp(logits[r]) - logits[r, targets[r]]` of logits `[N, V]`
/// and u32 targets `[N]`, returning `[N]`.
pub fn softmax_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, SoftmaxCrossEntropy)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_var(shape: &[usize], seed: u64) -> Var {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
        Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-13 * w.abs().max(1.0),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Forward and gradient equal Candle's composed ops (-inf mask, max, exp, sum, div).
    #[test]
    fn causal_softmax_matches_the_composed_ops() {
        let (b, t) = (3, 5);
        let x = random_var(&[b, t, t], 1);
        let weights = random_var(&[b, t, t], 2);
        let fused = causal_softmax(x.as_tensor()).unwrap();
        let mask: Vec<f64> = (0..t * t)
            .map(|k| {
                if k % t > k / t {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        let s = x.as_tensor().broadcast_add(&mask).unwrap();
        let e = s
            .broadcast_sub(&s.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        let composed = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        assert_close(&values(&fused), &values(&composed), "probabilities");
        let grad = |p: &Tensor| {
            let loss = p.mul(weights.as_tensor()).unwrap().sum_all().unwrap();
            values(loss.backward().unwrap().get(x.as_tensor()).unwrap())
        };
        assert_close(&grad(&fused), &grad(&composed), "gradient");
    }

    /// Forward and gradient equal Candle's composed logsumexp minus gather.
    #[test]
    fn softmax_cross_entropy_matches_the_composed_ops() {
        let (n, v) = (6, 11);
        let x = random_var(&[n, v], 3);
        let targets = Tensor::from_vec(vec![0u32, 10, 3, 3, 7, 1], n, &Device::Cpu).unwrap();
        let weights = random_var(&[n], 4);
        let fused = softmax_cross_entropy(x.as_tensor(), &targets).unwrap();
        let lx = x.as_tensor();
        let max = lx.max_keepdim(1).unwrap();
        let lse = (lx
            .broadcast_sub(&max)
            .unwrap()
            .exp()
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .log()
            .unwrap()
            + max)
            .unwrap();
        let picked = lx.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap();
        let composed = (lse - picked).unwrap().squeeze(1).unwrap();
        assert_close(&values(&fused), &values(&composed), "cross-entropy");
        let grad = |ce: &Tensor| {
            let loss = ce.mul(weights.as_tensor()).unwrap().sum_all().unwrap();
            values(loss.backward().unwrap().get(lx).unwrap())
        };
        assert_close(&grad(&fused), &grad(&composed), "gradient");
        // f32 runs the same kernels.
        let f32_ce = softmax_cross_entropy(&lx.to_dtype(DType::F32).unwrap(), &targets).unwrap();
        assert_eq!(f32_ce.dtype(), DType::F32);
        let bad = Tensor::from_vec(vec![0u32, 11, 3, 3, 7, 1], n, &Device::Cpu).unwrap();
        assert!(softmax_cross_entropy(lx, &bad).is_err());
    }
}
