//! Mean loss, perplexity and token accuracy of a loaded model over a token stream.
//!
//! The stream is cut into non-overlapping windows of `seq_len + 1` tokens that share their
//! edge token: window `i` feeds `tokens[i·T .. i·T + T]` and predicts
//! `tokens[i·T + 1 .. i·T + T + 1]`, so every token after the first is predicted exactly once,
//! with the context of its own window only (as the training eval sees its batches). The last
//! window is padded and its padding masked out. The loss is the training eval's: the mean
//! cross-entropy (nats) over predicted tokens; perplexity is its exponential; accuracy is the
//! fraction of predicted tokens whose most likely token (argmax of the logits) is the target.

use super::loaded::{LoadedModel, ProgramKey};
use super::GenerateError;
use crate::engine::{HostArray, Input};
use crate::train::EvalResult;

/// Rows evaluated per program call at most.
pub const EVAL_BATCH: usize = 8;

/// Evaluation windows, row-major `[rows, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalWindows {
    /// Tokens per window.
    pub seq_len: usize,
    /// Input tokens.
    pub tokens: Vec<i32>,
    /// Next-token targets.
    pub targets: Vec<i32>,
    /// 1 where the target is real, 0 for padding.
    pub mask: Vec<f32>,
}

impl EvalWindows {
    /// Cuts `stream` into windows of `seq_len` predictions (see the module docs).
    pub fn new(stream: &[i32], seq_len: usize) -> EvalWindows {
        let seq_len = seq_len.max(1);
        let predictions = stream.len().saturating_sub(1);
        let rows = predictions.div_ceil(seq_len);
        let mut w = EvalWindows {
            seq_len,
            tokens: vec![0; rows * seq_len],
            targets: vec![0; rows * seq_len],
            mask: vec![0.0; rows * seq_len],
        };
        for i in 0..predictions {
            w.tokens[i] = stream[i];
            w.targets[i] = stream[i + 1];
            w.mask[i] = 1.0;
        }
        w
    }

    /// Number of windows.
    pub fn rows(&self) -> usize {
        self.tokens.len() / self.seq_len
    }
}

impl LoadedModel {
    /// Mean loss, perplexity and token accuracy of `stream` in windows of the config's sequence length
    /// (`sequence.max_length`, else `model.max_seq_len`).
    pub fn evaluate(&mut self, stream: &[i32]) -> Result<EvalResult, GenerateError> {
        let seq_len = self.config().seq_len();
        self.evaluate_windows(&EvalWindows::new(stream, seq_len))
    }

    /// Mean loss, perplexity and token accuracy over `windows`, [`EVAL_BATCH`] rows per call.
    pub fn evaluate_windows(&mut self, windows: &EvalWindows) -> Result<EvalResult, GenerateError> {
        let model = &self.config().model;
        let (vocab, context) = (model.vocab_size, model.max_seq_len);
        let bad = |value: String, expected: String| GenerateError::Option {
            option: "evaluation text",
            value,
            expected,
        };
        if windows.mask.iter().all(|&m| m == 0.0) {
            return Err(bad(
                "no predicted tokens".into(),
                "at least 2 tokens after tokenisation".into(),
            ));
        }
        if windows.seq_len > context {
            return Err(bad(
                format!("windows of {} tokens", windows.seq_len),
                format!("windows of at most model.max_seq_len ({context})"),
            ));
        }
        for &t in windows.tokens.iter().chain(&windows.targets) {
            if t < 0 || t as usize >= vocab {
                return Err(bad(format!("token id {t}"), format!("ids in [0, {vocab})")));
            }
        }
        let (rows, t) = (windows.rows(), windows.seq_len);
        let batch = rows.min(EVAL_BATCH);
        let key = ProgramKey::Eval(batch, t);
        self.ensure_program(key)?;
        let (mut loss_sum, mut tokens, mut correct) = (0f64, 0f64, 0f64);
        for first in (0..rows).step_by(batch) {
            let (lo, hi) = (first * t, ((first + batch).min(rows)) * t);
            let padded = |v: &[i32]| {
                let mut out = v[lo..hi].to_vec();
                out.resize(batch * t, 0);
                out
            };
            let mut mask = windows.mask[lo..hi].to_vec();
            mask.resize(batch * t, 0.0);
            let shape = [batch as i64, t as i64];
            let arrays = [
                HostArray::from_slice(&shape, &padded(&windows.tokens)),
                HostArray::from_slice(&shape, &padded(&windows.targets)),
                HostArray::from_slice(&shape, &mask),
            ];
            let mut device = Vec::new();
            for a in arrays {
                device.push(self.put(&a.map_err(GenerateError::HostArray)?)?);
            }
            let mut inputs = self.param_inputs();
            inputs.extend(device.iter().map(Input::Keep));
            let out = self.program(&key).run(inputs)?;
            let sums = self.engine().get_all(&out[..3])?;
            let scalar = |i: usize| -> Result<f64, GenerateError> {
                let v = sums[i].to_vec::<f32>();
                Ok(v.map_err(GenerateError::HostArray)?[0] as f64)
            };
            loss_sum += scalar(0)?;
            tokens += scalar(1)?;
            correct += scalar(2)?;
        }
        Ok(EvalResult::from_sums(loss_sum, tokens, correct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_predict_every_token_after_the_first_once() {
        let stream: Vec<i32> = (10..21).collect(); // 11 tokens, 10 predictions
        let w = EvalWindows::new(&stream, 4);
        assert_eq!(w.rows(), 3);
        assert_eq!(&w.tokens[..4], &[10, 11, 12, 13]);
        assert_eq!(&w.targets[4..8], &[15, 16, 17, 18]);
        assert_eq!(&w.targets[8..10], &[19, 20]);
        assert_eq!(w.mask.iter().sum::<f32>(), 10.0);
        assert_eq!(&w.mask[10..], &[0.0, 0.0]);
        assert_eq!(EvalWindows::new(&[5], 4).rows(), 0);
    }
}
