//! The programs a trainer runs beside its step: evaluation loss and accuracy, greedy
//! continuation, and the
//! MoE and distillation metrics of the last step, downloaded on request.

use super::distill::DistillMetrics;
use super::eval::{build_eval_step, build_next_token};
use super::layout::train_forward_options;
use super::moe_state::MoeMetrics;
use super::trainer::{compile_hints, HostBatch, Trainer};
use super::TrainError;
use crate::engine::{HostArray, Input};

/// Mean loss, perplexity and token accuracy over some tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean masked cross-entropy (nats per token).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Fraction of the tokens whose most likely next token (argmax of the logits) is the
    /// target: `correct / tokens`.
    pub accuracy: f64,
    /// Tokens evaluated (the sum of the loss mask).
    pub tokens: f64,
    /// Tokens predicted correctly (the mask summed over the positions where argmax == target).
    pub correct: f64,
}

impl EvalResult {
    /// The result of summed cross-entropy, token count and correct count over some batches.
    pub fn from_sums(loss_sum: f64, tokens: f64, correct: f64) -> EvalResult {
        let loss = loss_sum / tokens.max(1.0);
        EvalResult {
            loss,
            perplexity: loss.exp(),
            accuracy: correct / tokens.max(1.0),
            tokens,
            correct,
        }
    }
}

impl Trainer {
    /// The MoE metrics of the newest step whose metrics were read (utilisation, dropped
    /// fraction, aux loss, bias norm); `None` for a dense model or before the first step.
    pub fn moe_metrics(&self) -> Option<MoeMetrics> {
        self.last_metrics.as_ref()?.moe.clone()
    }

    /// The distillation metrics of the newest step whose metrics were read (label CE, KL,
    /// intermediate distance); `None` without a teacher or before the first step.
    pub fn distill_metrics(&self) -> Option<DistillMetrics> {
        self.last_metrics.as_ref()?.distill
    }

    /// Mean loss, perplexity and token accuracy over micro-batches of `[micro_batch, seq_len]`
    /// (each a [`HostBatch`] with `accum == 1`), with dropout off.
    pub fn evaluate(&mut self, batches: &[HostBatch]) -> Result<EvalResult, TrainError> {
        if self.eval_program.is_none() {
            let opts = train_forward_options(&self.config, &self.plan);
            let func = build_eval_step(&self.config, &self.layout, &opts)?;
            self.eval_program = Some(
                self.engine
                    .compile_with(&func, compile_hints(&self.config))?,
            );
        }
        let program = self.eval_program.as_ref().expect("compiled above");
        let spec = &program.params[self.layout.param_count()].spec;
        let (mut loss_sum, mut tokens, mut correct) = (0f64, 0f64, 0f64);
        for batch in batches {
            let reshape = |a: &HostArray| HostArray {
                shape: a.shape[1..].to_vec(),
                ..a.clone()
            };
            if batch.tokens.shape.first() != Some(&1) {
                return Err(TrainError::Other(
                    "evaluation batches must hold one micro-batch".into(),
                ));
            }
            let put = |a: &HostArray| self.put_rows(&reshape(a), spec, 0);
            let (t, y, m) = (put(&batch.tokens)?, put(&batch.targets)?, put(&batch.mask)?);
            let mut inputs: Vec<Input<'_>> = self.param_arrays().iter().map(Input::Keep).collect();
            inputs.extend([Input::Keep(&t), Input::Keep(&y), Input::Keep(&m)]);
            let out = program.run(inputs)?;
            let sums = self.engine.get_all(&out[..3])?;
            let scalar = |a: &HostArray| -> Result<f64, TrainError> {
                Ok(a.to_vec::<f32>().map_err(TrainError::Other)?[0] as f64)
            };
            loss_sum += scalar(&sums[0])?;
            tokens += scalar(&sums[1])?;
            correct += scalar(&sums[2])?;
        }
        Ok(EvalResult::from_sums(loss_sum, tokens, correct))
    }

    /// Greedy continuation of `prompt` by `count` tokens, recomputing the window each step
    /// (the KV-cache generator lives in `generate`).
    pub fn greedy(&mut self, prompt: &[i32], count: usize) -> Result<Vec<i32>, TrainError> {
        if self.next_token_program.is_none() {
            let opts = train_forward_options(&self.config, &self.plan);
            let func = build_next_token(&self.config, &self.layout, &opts)?;
            self.next_token_program = Some(
                self.engine
                    .compile_with(&func, compile_hints(&self.config))?,
            );
        }
        let program = self.next_token_program.as_ref().expect("compiled above");
        let window = self.layout.seq_len;
        let mut seq: Vec<i32> = prompt.to_vec();
        if seq.is_empty() {
            return Err(TrainError::Other(
                "greedy decoding needs a prompt of at least one token".into(),
            ));
        }
        let replicated = vishwam_mesh::PartitionSpec::default();
        for _ in 0..count {
            let start = seq.len().saturating_sub(window);
            let ctx = &seq[start..];
            let mut padded = ctx.to_vec();
            padded.resize(window, 0);
            let tokens = self.engine.put(
                &HostArray::from_slice(&[1, window as i64], &padded).map_err(TrainError::Other)?,
                &replicated,
            )?;
            let length = self
                .engine
                .put(&HostArray::scalar(ctx.len() as i32), &replicated)?;
            let mut inputs: Vec<Input<'_>> = self.param_arrays().iter().map(Input::Keep).collect();
            inputs.extend([Input::Keep(&tokens), Input::Keep(&length)]);
            let out = program.run(inputs)?;
            seq.push(
                self.engine
                    .get(&out[0])?
                    .to_vec::<i32>()
                    .map_err(TrainError::Other)?[0],
            );
        }
        Ok(seq[prompt.len()..].to_vec())
    }
}
