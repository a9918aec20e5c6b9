//! An independent Candle (CPU) implementation of the model in docs/model.md (dense and MoE
//! blocks): forward, loss,
//! gradients by Candle's backprop, the distillation objective (KL to a teacher, hidden-state
//! distances), AdamW or Muon + AdamW with the LR schedule and global-norm clipping, a
//! training driver for benchmarks, and the comparison rows `vishwam verify` prints.
//!
//! It shares nothing with `src/model` or the hlo crate but the configuration types, so the
//! traced, differentiated and compiled XLA program can be checked against it.

mod attention;
mod compare;
mod distill;
mod error;
mod kernels;
mod layers;
mod model;
mod moe;
mod muon;
mod optimizer;
mod params;
mod rope;
mod schedule;
mod train;

#[cfg(test)]
mod tests;

pub use attention::{causal_attention, layer_attention};
pub use compare::{compare, format_table, ComparisonRow};
pub use distill::{distillation_loss_and_grads, DistillLosses, ReferenceDistillation};
pub use error::{ReferenceError, Result};
pub use kernels::{causal_softmax, softmax_cross_entropy, windowed_causal_softmax};
pub use model::{Gradients, ReferenceModel};
pub use muon::{
    is_muon_parameter, muon_momentum_at, newton_schulz, OptimizerStep, ReferenceMuon,
    ReferenceOptimizer,
};
pub use optimizer::{ReferenceAdamW, StepUpdate};
pub use params::{parameter_specs, random_parameters, Init, ParameterSpec};
pub use rope::{scaled_theta_and_position_divisor, RopeTables};
pub use schedule::lr_at;
pub use train::{train_steps, StepStats};

/// Floating-point type the reference computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReferenceDtype {
    /// f32: the dtype compared against XLA.
    #[default]
    F32,
    /// f64: for finite-difference gradient checks.
    F64,
}

impl ReferenceDtype {
    /// The Candle dtype.
    pub fn candle(self) -> candle_core::DType {
        match self {
            ReferenceDtype::F32 => candle_core::DType::F32,
            ReferenceDtype::F64 => candle_core::DType::F64,
        }
    }
}

/// One batch: token ids, next-token targets and the loss mask, each `[batch_size, seq_len]`
/// row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Input token ids.
    pub tokens: Vec<i32>,
    /// Target ids; entries whose mask is 0 may hold anything (e.g. a padding id of -1).
    pub targets: Vec<i32>,
    /// 1 for real targets, 0 for padding (any finite value >= 0 weights the position).
    pub mask: Vec<f32>,
    /// Sequences.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
}

impl Batch {
    /// Checks that each buffer holds `batch_size * seq_len` elements.
    pub fn new(
        tokens: Vec<i32>,
        targets: Vec<i32>,
        mask: Vec<f32>,
        batch_size: usize,
        seq_len: usize,
    ) -> Result<Batch> {
        let expected = batch_size * seq_len;
        for (what, got) in [
            ("tokens", tokens.len()),
            ("targets", targets.len()),
            ("mask", mask.len()),
        ] {
            if got != expected {
                return Err(ReferenceError::BatchShape {
                    what,
                    expected,
                    got,
                });
            }
        }
        Ok(Batch {
            tokens,
            targets,
            mask,
            batch_size,
            seq_len,
        })
    }

    /// Tokens in the batch (`batch_size * seq_len`).
    pub fn num_tokens(&self) -> usize {
        self.batch_size * self.seq_len
    }
}
