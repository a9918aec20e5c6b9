//! Muon (MomentUm Orthogonalized by Newton-Schulz) as Blueberry-LLM uses it: the traced
//! pieces of one Muon update, for the optimiser transformation of the train step.
//!
//! Sources followed (read, not copied): Keller Jordan's `muon.py` (`zeropower_via_newtonschulz5`,
//! `muon_update`) and Blueberry-LLM's `optimizers/muon.py` (`Muon`, `MuonWithWarmup`) and
//! `optimizers/factory.py` (which parameters take Muon). Per matrix, at step t (from 1):
//!
//! ```text
//! mu  = 0.85 + (muon_momentum - 0.85) * min(1, (t - 1) / momentum_warmup_steps)
//! B'  = mu B + (1 - mu) g                  # buf.lerp_(g, 1 - mu)
//! N   = mu B' + (1 - mu) g                 # Nesterov: g.lerp_(buf, mu)
//! Δθ  = lr_muon(t) * sqrt(max(1, fan_out / fan_in)) * NS(N)       # θ -= Δθ, no weight decay
//! ```
//!
//! The momentum warmup is `MuonWithWarmup`'s (and modded-nanogpt's, whose momentum goes
//! linearly from 0.85 to 0.95 over its first 300 steps): the zero-based step count s = t - 1
//! interpolates from 0.85 at s = 0 to the target at s = warmup. `lr_muon` is the run's
//! schedule (warmup, then cosine/linear/constant) with `training.muon_lr` as its peak, so
//! both rates follow one schedule as multipliers of their peaks. Muon matrices get no weight
//! decay, as in Blueberry (its Muon group has `weight_decay` 0).
//!
//! **Layout.** PyTorch stores a Linear weight as `[out, in]` and scales by
//! `max(1, rows / cols)^0.5`; vishwam stores matrices as `[in, out]` (used as `x.matmul(&w)`),
//! so [`shape_scale`] takes `max(1, cols / rows)^0.5`: the same `max(1, fan_out / fan_in)`.
//! Orthogonalisation does not care about the layout (NS of Gᵀ is NS(G)ᵀ).
//!
//! **Sharding.** NS multiplies whole matrices (X Xᵀ contracts a full row), so under fsdp,
//! ZeRO-3 or tensor parallelism the Nesterov momentum N is gathered before it:
//! [`newton_schulz_sharded`] (called by [`muon_update`] with the parameter's own spec, the
//! one its logical axes map to) puts `sharding_constraint(PartitionSpec::replicated())` on N
//! before [`newton_schulz`] and constrains the result back to the parameter's spec, so the
//! parameter, its momentum buffer and the update stay sharded like the parameter (tests/muon
//! checks fsdp, tensor parallelism and both against one device). Cost per matrix per step:
//! one all-gather of N (the matrix's f32 bytes, less the device's own shard, received by
//! every device; under plain data parallelism nothing, as the matrix is already whole), then
//! the NS flops ([`newton_schulz_flops`]) repeated on every device; the slice back is free
//! (each device keeps its own part). A cheaper scheme (each device orthogonalises a
//! different subset of matrices, then all-gathers the results, as Keller Jordan's distributed
//! `Muon` does) needs per-matrix device assignment that SPMD partitioning does not express;
//! it is not done here.
//!
//! For the 124M model of `configs/gpu_h100.json` (768 wide, 12 layers, 4 KV heads, SwiGLU
//! 2048; 16 x 1024 tokens per step) five NS iterations cost 1.387e12 flops per step, 14.1% of
//! the step's 6 x 100.1M parameters x 16,384 tokens = 9.84e12 (a share that falls as the
//! tokens per step grow: NS does not depend on the batch); pinned by a unit test below.

use crate::config::{ComputeDtype, TrainingConfig};
use crate::model::ParamSpec;
use crate::train::lr_traced;
use vishwam_hlo::{DType, PartitionSpec, Tensor};
use vishwam_mesh::LogicalAxis as L;

/// The quintic Newton-Schulz coefficients (a, b, c) of Keller Jordan's Muon: each iteration
/// maps a singular value s to a s + b s³ + c s⁵.
pub const NS_COEFFICIENTS: [f64; 3] = [3.4445, -4.7750, 2.0315];

/// Added to the Frobenius norm before dividing by it (PyTorch's Muon uses the same 1e-7).
pub const NS_EPSILON: f64 = 1e-7;

/// Muon's momentum at step 1 when it warms up (Blueberry's `initial_momentum`).
pub const INITIAL_MOMENTUM: f64 = 0.85;

/// The hyperparameters of the Muon update, from `training` and the run's compute dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonSettings {
    /// Momentum after the warmup (`training.muon_momentum`).
    pub momentum: f64,
    /// Steps of the momentum warmup (`training.momentum_warmup_steps`); 0 = none.
    pub momentum_warmup_steps: usize,
    /// Newton-Schulz iterations (`training.ns_steps`).
    pub ns_steps: usize,
    /// Element type the Newton-Schulz iterations run in (see [`ns_dtype`]).
    pub ns_dtype: DType,
}

impl MuonSettings {
    /// The settings of `training` for a run computing in `compute`.
    pub fn new(training: &TrainingConfig, compute: ComputeDtype) -> MuonSettings {
        MuonSettings {
            momentum: training.muon_momentum,
            momentum_warmup_steps: training.momentum_warmup_steps,
            ns_steps: training.ns_steps,
            ns_dtype: ns_dtype(compute),
        }
    }

    /// [`momentum_at`] on the host, for step `t` (from 1).
    pub fn momentum_at_step(&self, t: usize) -> f64 {
        if self.momentum_warmup_steps == 0 {
            return self.momentum;
        }
        let frac = (t.saturating_sub(1) as f64 / self.momentum_warmup_steps as f64).min(1.0);
        INITIAL_MOMENTUM + (self.momentum - INITIAL_MOMENTUM) * frac
    }
}

/// The dtype Newton-Schulz runs in for a run computing in `compute`: bf16 for bf16 (as
/// PyTorch's Muon), f32 for f32, and f16 for f16. f16 is safe here because the matrix is
/// normalised in f32 first ([`newton_schulz`]): the iterate's singular values stay below
/// about 1.2, so every entry of X, X Xᵀ and its square lies well inside f16's range, and f16
/// carries 3 more mantissa bits than bf16 (Blueberry's DeepSeek variant runs NS in half).
pub fn ns_dtype(compute: ComputeDtype) -> DType {
    match compute {
        ComputeDtype::F32 => DType::F32,
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => DType::F16,
    }
}

/// Whether Muon trains this parameter (the rest take AdamW), decided by structure: a
/// trainable matrix between the model width and an inner width (heads, KV heads or the MLP),
/// alone (`[in, out]`) or stacked per expert (`[experts, in, out]`, one matrix per expert).
///
/// So Muon gets the attention and MLP projections, the shared experts and each routed
/// expert's matrices; AdamW gets the embedding and an untied head (a vocabulary axis), norms
/// and biases (rank 1), routers (`[embed, expert]`: the expert axis is an output, not a
/// stack), buffers such as the router bias (not trainable), and distillation projections
/// `distill.proj.*` (`[embed, embed]`: they map the student's width to the teacher's for an
/// auxiliary loss and are not part of a block, so they stay with AdamW as before).
pub fn uses_muon(spec: &ParamSpec) -> bool {
    if !spec.trainable || spec.shape.len() != spec.logical.len() {
        return false;
    }
    match spec.logical.as_slice() {
        [rows, cols] | [L::Expert, rows, cols] => is_block_matrix(*rows, *cols),
        _ => false,
    }
}

/// One side the model width, the other an inner width of a block.
fn is_block_matrix(rows: L, cols: L) -> bool {
    let inner = |axis: L| matches!(axis, L::Heads | L::KvHeads | L::Mlp);
    (rows == L::Embed && inner(cols)) || (inner(rows) && cols == L::Embed)
}

/// Muon's per-matrix rate factor `sqrt(max(1, fan_out / fan_in))` for a vishwam `[.., in,
/// out]` shape: `sqrt(max(1, cols / rows))` of the last two dims (1 below rank 2).
pub fn shape_scale(shape: &[i64]) -> f64 {
    match shape {
        [.., rows, cols] if *rows > 0 => (*cols as f64 / *rows as f64).max(1.0).sqrt(),
        _ => 1.0,
    }
}

/// The approximate orthogonalisation of `g` (U Vᵀ-like, singular values near 1) by `steps`
/// quintic Newton-Schulz iterations in `dtype`; the result is f32 with `g`'s shape. A rank-3
/// (or higher) `g` is a stack of matrices, each orthogonalised on its own (batched matmuls
/// over the leading axes). The Frobenius normalisation runs in f32 before the cast to
/// `dtype`; a wide iterate is kept (a tall matrix is transposed first) so that X Xᵀ is the
/// smaller Gram matrix. A `g` of rank below 2 records a shape error in its graph.
pub fn newton_schulz(g: &Tensor, steps: usize, dtype: DType) -> Tensor {
    let g32 = g.cast(DType::F32);
    let tall = match g.shape() {
        [.., rows, cols] => rows > cols,
        // swap_axes records the error: NS needs a matrix.
        _ => return g32.swap_axes(-2, -1),
    };
    let norm = g32.square().sum(&[-2, -1], true).sqrt();
    let x = (&g32 / (norm + NS_EPSILON)).cast(dtype);
    let mut x = if tall { x.swap_axes(-2, -1) } else { x };
    let [a, b, c] = NS_COEFFICIENTS;
    for _ in 0..steps {
        let gram = x.matmul(&x.swap_axes(-2, -1)); // [.., m, m], m = min(rows, cols)
        let poly = &gram * b + gram.matmul(&gram) * c;
        x = &x * a + poly.matmul(&x);
    }
    let x = if tall { x.swap_axes(-2, -1) } else { x };
    x.cast(DType::F32)
}

/// [`newton_schulz`] of a value sharded as `spec` (the parameter's sharding): gathered whole
/// (replicated) first, orthogonalised on every device, and constrained back to `spec`. With
/// a replicated `spec` (plain data parallelism) it is [`newton_schulz`] itself.
pub fn newton_schulz_sharded(
    g: &Tensor,
    steps: usize,
    dtype: DType,
    spec: &PartitionSpec,
) -> Tensor {
    if spec.is_replicated() {
        return newton_schulz(g, steps, dtype);
    }
    let whole = g.sharding_constraint(PartitionSpec::replicated());
    newton_schulz(&whole, steps, dtype).sharding_constraint(spec.clone())
}

/// Muon's momentum at step `step` (an f32 scalar, the new step t from 1): linear from
/// [`INITIAL_MOMENTUM`] at t = 1 to `momentum` at t = `momentum_warmup_steps + 1`, constant
/// after (constant from the start without warmup). An f32 scalar.
pub fn momentum_at(step: &Tensor, settings: &MuonSettings) -> Tensor {
    let target = settings.momentum;
    if settings.momentum_warmup_steps == 0 {
        return step.graph().full(target, step.ty());
    }
    let frac = ((step - 1.0) / settings.momentum_warmup_steps as f64)
        .maximum(0.0)
        .minimum(1.0);
    frac * (target - INITIAL_MOMENTUM) + INITIAL_MOMENTUM
}

/// Muon's learning rate at `step` (an f32 scalar from 1): the run's schedule
/// ([`lr_traced`]) with `training.muon_lr` as its peak.
pub fn muon_lr_traced(training: &TrainingConfig, step: &Tensor) -> Tensor {
    lr_traced(&muon_schedule(training), step)
}

/// `training` with `muon_lr` as the schedule's peak: [`crate::train::lr_at`] of it is Muon's
/// rate on the host.
pub fn muon_schedule(training: &TrainingConfig) -> TrainingConfig {
    TrainingConfig {
        learning_rate: training.muon_lr,
        ..training.clone()
    }
}

/// What one Muon step gives for one matrix.
#[derive(Debug, Clone)]
pub struct MuonUpdate {
    /// What to subtract from the parameter (f32, the parameter's shape).
    pub update: Tensor,
    /// The new momentum buffer (f32, the parameter's shape).
    pub momentum: Tensor,
}

/// One Muon step for one matrix (or expert stack): `grad` (already clipped), the momentum
/// `buffer` (zeros at the start), Muon's rate `lr` (an f32 scalar, e.g. [`muon_lr_traced`]),
/// `step` (the new step t, an f32 scalar from 1) and the parameter's sharding `spec`
/// (replicated when it is whole on every device). The update includes the rate and
/// [`shape_scale`]; the caller subtracts it (no weight decay).
pub fn muon_update(
    grad: &Tensor,
    buffer: &Tensor,
    lr: &Tensor,
    step: &Tensor,
    settings: &MuonSettings,
    spec: &PartitionSpec,
) -> MuonUpdate {
    let mu = momentum_at(step, settings);
    let keep = 1.0 - &mu;
    let momentum = buffer * &mu + grad * &keep;
    let nesterov = grad * &keep + &momentum * &mu;
    let orthogonal = newton_schulz_sharded(&nesterov, settings.ns_steps, settings.ns_dtype, spec);
    let update = orthogonal * (lr * shape_scale(grad.shape()));
    MuonUpdate { update, momentum }
}

/// Multiply-add flops of `steps` Newton-Schulz iterations on a matrix (or stack) of `shape`:
/// per matrix and iteration, X Xᵀ (2 m² n), A A (2 m³) and B X (2 m² n) with m = min(rows,
/// cols), n = max(rows, cols); the elementwise work is left out.
pub fn newton_schulz_flops(shape: &[i64], steps: usize) -> f64 {
    let [lead @ .., rows, cols] = shape else {
        return 0.0;
    };
    let (m, n) = ((*rows).min(*cols) as f64, (*rows).max(*cols) as f64);
    let matrices: f64 = lead.iter().map(|&d| d as f64).product();
    matrices * steps as f64 * (4.0 * m * m * n + 2.0 * m * m * m)
}

#[cfg(test)]
mod tests;
