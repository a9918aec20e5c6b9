//! What a generation call may choose: lengths, temperature, top-k, top-p, greedy, seed, EOS.

use super::GenerateError;
use crate::config::Config;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// At most this many new tokens per prompt (generation also stops when a row's prompt plus
    /// its new tokens fill `model.max_seq_len`). At least 1.
    pub max_length: usize,
    /// EOS is suppressed until this many new tokens exist; at most `max_length`.
    pub min_length: usize,
    /// Logits are divided by this before top-k/top-p and sampling; > 0. `0.0` means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns the filter off.
    pub top_k: usize,
    /// Then keep the smallest set of most likely tokens whose probability (renormalised after
    /// top-k) reaches `top_p`; in (0, 1], 1 turns the filter off.
    pub top_p: f32,
    /// Pick the most likely token (argmax of the logits) instead of sampling.
    pub greedy: bool,
    /// Seed of the on-device random stream: the same seed, prompts and options give the same
    /// tokens.
    pub seed: u64,
    /// A row stops after producing this token (which is kept in its output); `None` never
    /// stops early.
    pub eos_token_id: Option<i32>,
}

impl Default for SamplingOptions {
    /// 64 new tokens, temperature 1, no filters, seed 0, no EOS.
    fn default() -> Self {
        SamplingOptions {
            max_length: 64,
            min_length: 0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            greedy: false,
            seed: 0,
            eos_token_id: None,
        }
    }
}

impl SamplingOptions {
    /// The defaults with the config's `sequence` section: `max_length` (or `model.max_seq_len`)
    /// as the new-token budget, `min_length` and `eos_token_id`.
    pub fn from_config(cfg: &Config) -> SamplingOptions {
        SamplingOptions {
            max_length: cfg.seq_len(),
            min_length: cfg.sequence.min_length,
            eos_token_id: cfg.sequence.eos_token_id.map(|id| id as i32),
            ..SamplingOptions::default()
        }
    }

    /// True when tokens are picked by argmax (`greedy`, or temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.greedy || self.temperature == 0.0
    }

    /// Checks every option against `vocab_size`.
    pub fn validate(&self, vocab_size: usize) -> Result<(), GenerateError> {
        let bad = |option, value: String, expected: &str| {
            Err(GenerateError::Option {
                option,
                value,
                expected: expected.to_string(),
            })
        };
        if self.max_length == 0 {
            return bad("max_length", "0".into(), "at least 1 new token");
        }
        if self.min_length > self.max_length {
            return bad(
                "min_length",
                self.min_length.to_string(),
                &format!("at most max_length ({})", self.max_length),
            );
        }
        let positive = self.temperature.is_finite() && self.temperature > 0.0;
        if !(self.is_greedy() || positive) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "a finite number > 0 (or 0 / --greedy for argmax decoding)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p.to_string(), "a number in (0, 1]");
        }
        if let Some(eos) = self.eos_token_id {
            if eos < 0 || eos as usize >= vocab_size {
                return bad(
                    "eos_token_id",
                    eos.to_string(),
                    &format!("a token id below the vocabulary size {vocab_size}"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_options_are_named() {
        let ok = SamplingOptions::default();
        assert!(ok.validate(10).is_ok());
        let cases = [
            (
                SamplingOptions {
                    top_p: 0.0,
                    ..ok.clone()
                },
                "top_p",
            ),
            (
                SamplingOptions {
                    temperature: -1.0,
                    ..ok.clone()
                },
                "temperature",
            ),
            (
                SamplingOptions {
                    min_length: 65,
                    ..ok.clone()
                },
                "min_length",
            ),
            (
                SamplingOptions {
                    eos_token_id: Some(10),
                    ..ok.clone()
                },
                "eos_token_id",
            ),
            (
                SamplingOptions {
                    max_length: 0,
                    ..ok.clone()
                },
                "max_length",
            ),
        ];
        for (opts, name) in cases {
            let err = opts.validate(10).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        }
        let greedy = SamplingOptions {
            temperature: 0.0,
            ..ok
        };
        assert!(greedy.is_greedy() && greedy.validate(10).is_ok());
    }
}
