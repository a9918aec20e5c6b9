//! Token selection inside the decode program: temperature, top-k, top-p, and the draw.
//!
//! There is no sort primitive, and none is needed. Top-k keeps the tokens whose probability
//! is at least the k-th largest; top-p keeps those at least as likely as the least likely
//! member of the smallest top set whose mass reaches `top_p`. Both thresholds are "the
//! largest `t` such that the count (or mass) of probabilities `>= t` reaches a target", and
//! that statistic only changes at the probabilities themselves, so `t` is one of them.
//! Non-negative f32 values order like their bit patterns read as integers, so a bisection on
//! the bit patterns finds `t` exactly in 32 rounds of one `[B, V]` compare-and-sum
//! each, as a `while` loop or unrolled when tracing ([`Bisection`]; a filter that is off is not
//! in the program).
//! Tokens tied with the threshold are all kept. Top-p is applied after top-k on the
//! renormalised distribution, as Hugging Face's warpers do.
//!
//! The draw is by inverse CDF: one uniform `u` per row from `rng_bit_generator`, and the
//! smallest token index `i` whose cumulative kept mass `C(i)` reaches `u · C(V - 1)`, found
//! by bisection on `i` (`ceil(log2 V) + 1` rounds of a masked sum). A token of zero kept mass
//! never satisfies that first, so filtered tokens are never drawn; token `i` is drawn with
//! probability `q_i / sum(q)`. (A Gumbel-max draw needs `V` random numbers and two
//! logarithms per row and measured 5x slower on the CPU.)

use crate::config::Platform;
use crate::model::RngStream;
use vishwam_hlo::{nn, DType, Tensor, TensorType};

/// How the sampling bisections are traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bisection {
    /// As `while` loops of a fixed trip count: the smaller program. Faster on CPUs (batch 8,
    /// default model: 7.8-8.4 ms per sampled decode step against 9.2-9.3 unrolled).
    Loop,
    /// Unrolled when tracing: no loop control between the rounds. Faster on GPUs (H100, batch
    /// 8, 124M: 0.77-0.79 ms per sampled decode step against 2.05-2.13 as loops); TPUs are
    /// unmeasured and assumed to behave like GPUs.
    Unrolled,
}

impl Bisection {
    /// The faster choice on `platform`. The trainer and the generator pass the platform of
    /// their engine's client (`train::pin_platform`, `train::engine_platform`), never "auto";
    /// should "auto" arrive all the same, it gets the choice that is fast on the CPU and
    /// correct everywhere.
    pub fn for_platform(platform: Platform) -> Bisection {
        match platform {
            Platform::Cpu | Platform::Auto => Bisection::Loop,
            Platform::Cuda | Platform::Tpu => Bisection::Unrolled,
        }
    }
}

/// Rounds that always suffice: the bisection interval starts below 2^31.
const BISECTION_ROUNDS: i64 = 32;

/// Sampling parameters as traced scalars. A filter that is `None` is not traced at all.
pub struct SamplingParams {
    /// f32 `[]`, > 0.
    pub temperature: Tensor,
    /// i32 `[]`: keep the `k` likeliest tokens (`k <= 0` or `k >= V` keeps all).
    pub top_k: Option<Tensor>,
    /// f32 `[]`: top-p (`>= 1` keeps all).
    pub top_p: Option<Tensor>,
    /// How the bisections are traced.
    pub bisection: Bisection,
}

/// `rounds` rounds of `step(lo, hi, inputs) -> (lo, hi)`, traced as `bisection` says;
/// `inputs` are read by every round and never change. `step` must read tensors only through
/// its arguments: as a loop it is traced into a region of its own, which cannot see the
/// enclosing graph's tensors (the tests trace both forms, so a capture fails there).
fn bisect(
    bisection: Bisection,
    rounds: i64,
    (lo, hi): (Tensor, Tensor),
    inputs: &[Tensor],
    step: impl Fn(&Tensor, &Tensor, &[Tensor]) -> (Tensor, Tensor),
) -> (Tensor, Tensor) {
    match bisection {
        Bisection::Unrolled => (0..rounds).fold((lo, hi), |(lo, hi), _| step(&lo, &hi, inputs)),
        Bisection::Loop => {
            let g = lo.graph().clone();
            let mut init = vec![g.scalar_i64(0, DType::I32), lo, hi];
            init.extend(inputs.iter().cloned());
            let out = g.while_loop(
                &init,
                move |_, c| c[0].lt(rounds),
                |_, c| {
                    let (lo, hi) = step(&c[1], &c[2], &c[3..]);
                    let mut next = vec![&c[0] + 1i64, lo, hi];
                    next.extend(c[3..].iter().cloned());
                    next
                },
            );
            (out[1].clone(), out[2].clone())
        }
    }
}

#[derive(Clone, Copy)]
enum Statistic {
    Count,
    Mass,
}

/// Per row, the largest `t >= 0` whose statistic over `probs >= t` reaches `target: f32 [B]`
/// (which must hold at `t = 0`). `probs: f32 [B, V]`, non-negative.
fn threshold(probs: &Tensor, stat: Statistic, target: &Tensor, bisection: Bisection) -> Tensor {
    let g = probs.graph().clone();
    let b = probs.shape()[0];
    let lo = g.zeros(&TensorType::new(DType::I32, &[b]));
    let hi = probs.max(&[-1], false).bitcast(DType::I32) + 1i64;
    // Invariant: the statistic reaches the target at lo and not at hi.
    let inputs = [probs.clone(), target.clone()];
    let (lo, _) = bisect(
        bisection,
        BISECTION_ROUNDS,
        (lo, hi),
        &inputs,
        |lo, hi, c| {
            let (p, target) = (&c[0], &c[1]);
            let mid = lo + (hi - lo).shift_right_logical(1i64);
            let t = mid.bitcast(DType::F32).expand_dims(-1);
            let selected = p.ge(&t);
            let value = match stat {
                Statistic::Count => selected.select(p.ones_like(), 0.0),
                Statistic::Mass => selected.select(p, 0.0),
            }
            .sum(&[-1], false);
            let ok = value.ge(target);
            (ok.select(&mid, lo), ok.select(hi, &mid))
        },
    );
    lo.bitcast(DType::F32)
}

/// Boolean `[B, V]`: the tokens that top-k and then top-p keep, given probabilities
/// `probs: f32 [B, V]` (already tempered); `None` when neither filter is given.
/// `top_k: i32 []`, `top_p: f32 []` as in [`SamplingParams`].
pub fn keep_mask(
    probs: &Tensor,
    top_k: Option<&Tensor>,
    top_p: Option<&Tensor>,
    bisection: Bisection,
) -> Option<Tensor> {
    let g = probs.graph().clone();
    let (b, v) = (probs.shape()[0], probs.shape()[1]);
    let t_k = top_k.map(|k| {
        let all = g.scalar_i64(v, DType::I32);
        let k = k.le(0i64).or(k.ge(v)).select(&all, k);
        let target = k.cast(DType::F32).broadcast_in_dim(&[b], &[]);
        threshold(probs, Statistic::Count, &target, bisection)
    });
    let t_p = top_p.map(|p| {
        let mass = match &t_k {
            Some(t) => probs.ge(t.expand_dims(-1)).select(probs, 0.0),
            None => probs.clone(),
        }
        .sum(&[-1], false);
        let target = mass * p.minimum(1.0).broadcast_in_dim(&[b], &[]);
        threshold(probs, Statistic::Mass, &target, bisection)
    });
    let t = match (t_k, t_p) {
        (Some(k), Some(p)) => k.maximum(&p),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return None,
    };
    Some(probs.ge(t.expand_dims(-1)))
}

/// Samples one token per row from `logits: f32 [B, V]` with temperature, top-k and top-p,
/// advancing `rng`. Returns i32 `[B]`.
pub fn sample(logits: &Tensor, params: &SamplingParams, rng: &mut RngStream) -> Tensor {
    let g = logits.graph().clone();
    let (b, v) = (logits.shape()[0], logits.shape()[1]);
    let probs = nn::softmax(&(logits / &params.temperature), -1);
    let kept = match keep_mask(
        &probs,
        params.top_k.as_ref(),
        params.top_p.as_ref(),
        params.bisection,
    ) {
        Some(keep) => keep.select(&probs, 0.0),
        None => probs,
    };
    // u in (0, 1): 24 random bits, centred in their interval.
    let bits = rng.bits(&[b]);
    let u = (bits.shift_right_logical(8i64).cast(DType::F32) + 0.5) * (1.0 / 16_777_216.0);
    let target = kept.sum(&[-1], false) * u;
    let index = g.iota(&TensorType::new(DType::I32, &[b, v]), 1);
    let rounds = (v.max(2) as f64).log2().ceil() as i64 + 1;
    let lo = g.full_i64(-1, &TensorType::new(DType::I32, &[b]));
    let hi = g.full_i64(v - 1, &TensorType::new(DType::I32, &[b]));
    // Invariant: C(lo) < target <= C(hi), with C(-1) = 0.
    let inputs = [kept, target, index];
    let (_, hi) = bisect(params.bisection, rounds, (lo, hi), &inputs, |lo, hi, c| {
        let (kept, target, index) = (&c[0], &c[1], &c[2]);
        let mid = lo + (hi - lo).shift_right_logical(1i64);
        let upto = index.le(mid.expand_dims(-1)).select(kept, 0.0);
        let reached = upto.sum(&[-1], false).ge(target);
        (reached.select(lo, &mid), reached.select(&mid, hi))
    });
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_trace_loops_and_accelerators_unroll() {
        assert_eq!(Bisection::for_platform(Platform::Cpu), Bisection::Loop);
        assert_eq!(Bisection::for_platform(Platform::Cuda), Bisection::Unrolled);
        assert_eq!(Bisection::for_platform(Platform::Tpu), Bisection::Unrolled);
    }
}
