//! The language-modelling objective, traced in one place for every program that needs it:
//! the train step, evaluation, generation's scoring and `vishwam verify`.
//!
//! [`lm_pass`] runs the forward pass over a `[B, T]` batch and keeps what the objective's
//! terms read: the final hidden states flattened to `[B·T, H]`, the LM head in the compute
//! dtype, the residual stream after each block (intermediate-layer distillation) and the
//! routing statistics of the MoE blocks. [`LmPass::ce_sum`] is the masked cross-entropy sum
//! through the chunked head ([`super::masked_ce_sum`]; [`LmPass::ce_and_correct_sums`] adds
//! the count of correct predictions from the same pass), and [`moe_aux_term`] the MoE
//! load-balancing term `aux_loss_coef * mean over MoE blocks of aux`. The train step's
//! objective is `ce_sum * w_ce + moe_aux_term * w_aux` (weights from the loss normalisation,
//! the loss scale and the accumulation; a distillation step puts its objective, fed from the
//! same pass, in place of `ce_sum`); verify differentiates `ce_sum / tokens +
//! moe_aux_term`, the same objective at one micro-batch; evaluation and scoring report the
//! cross-entropy alone, as training logs it.

use super::forward::{head_weight, hidden_states_with_layers, ForwardOptions, RngStream};
use super::fp8::Fp8Formats;
use super::loss::{default_chunk, masked_ce_and_correct_sums_capped, RowStats};
use super::moe::MoeStats;
use crate::config::ModelConfig;
use vishwam_hlo::{DType, Result, Tensor, TensorMap, TensorType};

/// The forward pass of one `[B, T]` batch, as the objective's terms read it.
pub struct LmPass {
    /// Final hidden states (after the final norm), `[B·T, H]` in the compute dtype.
    pub hidden: Tensor,
    /// The LM head `[H, V]` (`lm_head`, or the embedding transposed when tied) in the compute
    /// dtype.
    pub head: Tensor,
    /// The residual stream `[B, T, H]` after each block, in block order.
    pub layers: Vec<Tensor>,
    /// The routing statistics of each MoE block, in block order (empty for a dense model).
    pub moe: Vec<MoeStats>,
    /// Positions `0..T` (i32 `[T]`) the pass ran at.
    pub positions: Tensor,
    /// The head's FP8 formats, from the forward options.
    head_fp8: Option<Fp8Formats>,
    /// How the loss finds its row statistics, from the forward options.
    row_stats: RowStats,
    /// Tokens per loss chunk when a caller gives none, from the forward options.
    loss_chunk: Option<usize>,
    /// `final_logit_softcapping`, applied to every logit the pass's terms read.
    softcap: Option<f64>,
}

/// The forward pass of `tokens: i32 [B, T]` at positions `0..T` with `opts`. `params` holds
/// the model's parameters (and, with FP8, each layer's FP8 inputs); `rng` drives dropout and
/// router noise where `opts` and the config ask for them (`None` in evaluation).
pub fn lm_pass(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    rng: Option<&mut RngStream>,
) -> Result<LmPass> {
    let (b, t) = (tokens.shape()[0], tokens.shape()[1]);
    let positions = tokens.graph().iota(&TensorType::new(DType::I32, &[t]), 0);
    let out = hidden_states_with_layers(cfg, opts, params, tokens, &positions, rng)?;
    let head = head_weight(cfg, params)?.cast(opts.compute);
    let hidden = out.hidden.reshape(&[b * t, cfg.hidden_dim as i64]);
    Ok(LmPass {
        hidden,
        head,
        layers: out.layers,
        moe: out.moe,
        positions,
        head_fp8: opts.head_fp8,
        row_stats: opts.row_stats,
        loss_chunk: opts.loss_chunk,
        softcap: cfg.final_logit_softcapping,
    })
}

impl LmPass {
    /// Sum over the real tokens of the cross-entropy of the head's logits against `targets`,
    /// for `targets: i32` and `mask: f32` (1 for real targets, 0 for padding) of `[B, T]` or
    /// `[B·T]`, the head applied `chunk` tokens at a time (when `None`, the forward options'
    /// `loss_chunk`, else [`default_chunk`]).
    pub fn ce_sum(&self, targets: &Tensor, mask: &Tensor, chunk: Option<usize>) -> Tensor {
        self.ce_and_correct_sums(targets, mask, chunk).0
    }

    /// [`LmPass::ce_sum`] and, from the same pass over the logits, the numerator of token
    /// accuracy: the sum of `mask` over the tokens whose target is the head's most likely
    /// token (its logit equal to the row's maximum; exact ties count as correct). The count
    /// has no gradient.
    pub fn ce_and_correct_sums(
        &self,
        targets: &Tensor,
        mask: &Tensor,
        chunk: Option<usize>,
    ) -> (Tensor, Tensor) {
        let (n, vocab) = (self.hidden.shape()[0], self.head.shape()[1]);
        let chunk = chunk
            .or(self.loss_chunk)
            .unwrap_or_else(|| default_chunk(n as usize, vocab as usize));
        masked_ce_and_correct_sums_capped(
            &self.hidden,
            &self.head,
            &targets.reshape(&[n]),
            &mask.reshape(&[n]),
            chunk,
            self.head_fp8,
            self.row_stats,
            self.softcap,
        )
    }

    /// The logits `[B·T, V]` in f32 (soft-capped with `final_logit_softcapping`),
    /// materialised (for comparisons on small batches).
    pub fn logits(&self) -> Tensor {
        let logits = self.hidden.matmul(&self.head).cast(DType::F32);
        super::loss::softcap_with_slope(logits, self.softcap).0
    }

    /// [`moe_aux_term`] of this pass's MoE blocks.
    pub fn aux_term(&self, cfg: &ModelConfig) -> Option<Tensor> {
        moe_aux_term(cfg, &self.moe)
    }
}

/// The MoE auxiliary term of the objective, `aux_loss_coef * mean over the MoE blocks of
/// each block's aux loss` (f32 scalar); `None` when the coefficient is 0 or there are no MoE
/// blocks. Every objective adds it through this function: `verify` as it is, the train step
/// weighted by `1 / accum` per micro-batch (times the f16 loss scale), so that accumulation
/// averages it over the micro-batches.
pub fn moe_aux_term(cfg: &ModelConfig, moe: &[MoeStats]) -> Option<Tensor> {
    (cfg.aux_loss_coef > 0.0).then_some(())?;
    let (first, rest) = moe.split_first()?;
    let first = first.aux_loss.reshape(&[1]);
    let per_block = if rest.is_empty() {
        first
    } else {
        let rest: Vec<Tensor> = rest.iter().map(|s| s.aux_loss.reshape(&[1])).collect();
        first.concat(&rest, 0)
    };
    Some(per_block.mean_all() * cfg.aux_loss_coef)
}
