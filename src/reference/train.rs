//! A Candle training loop, for comparing throughput with the XLA path.

use std::time::Instant;

use super::error::Result;
use super::model::ReferenceModel;
use super::muon::OptimizerStep;
use super::Batch;

/// Timing and numbers of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Optimizer step (from 1).
    pub step: usize,
    /// Loss before the update.
    pub loss: f64,
    /// Learning rate applied.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the batch.
    pub tokens: usize,
    /// Wall time of forward, backward and update.
    pub seconds: f64,
}

impl StepStats {
    /// Tokens per second of this step.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }
}

/// Runs up to `steps` optimizer steps (fewer if `batches` ends), continuing from the
/// optimizer's last step; `optimizer` is AdamW, Muon or the [`super::ReferenceOptimizer`]
/// a config names.
pub fn train_steps(
    model: &ReferenceModel,
    optimizer: &mut impl OptimizerStep,
    batches: impl IntoIterator<Item = Batch>,
    steps: usize,
) -> Result<Vec<StepStats>> {
    let mut stats = Vec::with_capacity(steps);
    for batch in batches.into_iter().take(steps) {
        let start = Instant::now();
        let (loss, grads) = model.loss_and_grads(&batch)?;
        let update = optimizer.step(model, &grads, optimizer.steps_done() + 1)?;
        stats.push(StepStats {
            step: update.t,
            loss,
            lr: update.lr,
            grad_norm: update.grad_norm,
            tokens: batch.num_tokens(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(stats)
}
