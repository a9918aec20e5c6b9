//! Causal grouped-query attention, composed from primitives: the plain form, which builds
//! the [T, S] score matrix, and a blocked form that never does (see `blocked.rs`).
//! [`AttentionSpec`] holds what a block's attention computes beyond plain causal softmax
//! attention: the score scale, Gemma 2's soft-cap and a sliding window.

use crate::config::ModelConfig;
use vishwam_hlo::{nn, DType, DotDims, Tensor};

/// How one block's attention scores are formed and masked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    /// The factor on `q . k` (`head_dim^-0.5`, or `query_pre_attn_scalar^-0.5`).
    pub scale: f64,
    /// Scaled scores become `cap * tanh(s / cap)` before the mask (`attn_logit_softcapping`).
    pub softcap: Option<f64>,
    /// Sliding window: query position `p` sees keys `p - window < k <= p`; `None` sees every
    /// earlier key.
    pub window: Option<usize>,
}

impl AttentionSpec {
    /// Plain causal attention with scale `head_dim^-0.5`.
    pub fn causal(head_dim: i64) -> AttentionSpec {
        AttentionSpec {
            scale: 1.0 / (head_dim as f64).sqrt(),
            softcap: None,
            window: None,
        }
    }

    /// The attention of block `layer` of `cfg`.
    pub fn for_layer(cfg: &ModelConfig, layer: usize) -> AttentionSpec {
        AttentionSpec {
            scale: cfg.attention_scale(),
            softcap: cfg.attn_logit_softcapping,
            window: cfg.layer_window(layer),
        }
    }

    /// `scores` (f32, already multiplied by [`Self::scale`]) soft-capped when asked.
    pub fn cap(&self, scores: Tensor) -> Tensor {
        match self.softcap {
            Some(cap) => (scores * (1.0 / cap)).tanh() * cap,
            None => scores,
        }
    }
}

/// The value masked scores take: low enough that `exp` underflows to exactly zero, finite so a
/// fully masked row cannot produce NaN.
pub const MASKED: f64 = -1e30;

/// `q: [B,T,NH,D]`, `k`, `v: [B,S,KV,D]`; query `t` may attend key `s` when
/// `k_pos[s] <= q_pos[t]` (positions: i32 `[T]` and `[S]`). Returns `[B,T,NH,D]`.
/// Scores and softmax are f32; the result has `q`'s dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, q_pos: &Tensor, k_pos: &Tensor) -> Tensor {
    let spec = AttentionSpec::causal(q.shape()[3]);
    attention_with(q, k, v, q_pos, k_pos, &spec)
}

/// [`attention`] with the scale, soft-cap and window of `spec` (a key is visible when
/// `k_pos <= q_pos` and, with a window, `q_pos - k_pos < window`).
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q_pos: &Tensor,
    k_pos: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    let (b, t, nh, d) = dims4(q);
    let kv = k.shape()[2];
    let groups = nh / kv.max(1);
    let q5 = q.reshape(&[b, t, kv, groups, d]);
    // s[b, kv, t, g, s]
    let scores = q5.dot_general_to(
        k,
        DotDims {
            lhs_batch: vec![0, 2],
            rhs_batch: vec![0, 2],
            lhs_contract: vec![4],
            rhs_contract: vec![3],
        },
        DType::F32,
    ) * spec.scale;
    let scores = spec.cap(scores);
    let allowed = window_mask(q_pos, k_pos, spec.window); // [T, S]
    let allowed = allowed.broadcast_in_dim(scores.shape(), &[2, 4]);
    let scores = allowed.select(&scores, MASKED);
    let probs = nn::softmax(&scores, -1).cast(q.dtype());
    // o[b, kv, t, g, d]
    let out = probs.dot_general(
        v,
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 2],
            lhs_contract: vec![4],
            rhs_contract: vec![1],
        },
    );
    out.transpose(&[0, 2, 1, 3, 4]).reshape(&[b, t, nh, d])
}

/// `[T, S]` predicate: key position <= query position.
pub fn causal_mask(q_pos: &Tensor, k_pos: &Tensor) -> Tensor {
    let (t, s) = (q_pos.shape()[0], k_pos.shape()[0]);
    let qb = q_pos.broadcast_in_dim(&[t, s], &[0]);
    let kb = k_pos.broadcast_in_dim(&[t, s], &[1]);
    kb.le(&qb)
}

/// `[T, S]` predicate: [`causal_mask`] and, with a window, `q_pos - k_pos < window`.
pub fn window_mask(q_pos: &Tensor, k_pos: &Tensor, window: Option<usize>) -> Tensor {
    let causal = causal_mask(q_pos, k_pos);
    match window {
        None => causal,
        Some(w) => {
            let (t, s) = (q_pos.shape()[0], k_pos.shape()[0]);
            let qb = q_pos.broadcast_in_dim(&[t, s], &[0]);
            let kb = k_pos.broadcast_in_dim(&[t, s], &[1]);
            causal.and((qb - kb).lt(w as i64))
        }
    }
}

fn dims4(x: &Tensor) -> (i64, i64, i64, i64) {
    let s = x.shape();
    (s[0], s[1], s[2], s[3])
}
