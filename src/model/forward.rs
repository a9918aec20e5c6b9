//! The transformer forward pass (docs/model.md), traced into a graph.

use super::attention::{attention_with, AttentionSpec};
use super::blocked::blocked_attention_with;
use super::cudnn_attention::cudnn_attention_with;
use super::fp8::Fp8Formats;
use super::loss::RowStats;
use super::moe::{self, MoeParams, MoeStats};
use super::projection::{fp8_layer_inputs, BlockProjections, Projection};
use super::sharded_attention::{per_shard_attention, PerShardAttention};
use crate::config::{MlpActivation, ModelConfig, RopeScalingType};
use std::sync::Arc;
use vishwam_hlo::{
    nn, tree_struct, DType, Graph, PartitionSpec, Result, RngAlgorithm, Tensor, TensorMap,
    TensorType,
};
use vishwam_mesh::ShardingPlan;

/// How attention is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttentionKind {
    /// Scores for every (query, key) pair at once.
    Full,
    /// Blocks of this many queries and keys with an online softmax; no [T, S] scores.
    Blocked(usize),
    /// cuDNN's fused flash-attention kernels (the CUDA plugin only; bf16/f16).
    Cudnn,
    /// One of the above run per device on its batch and head shards, in a Shardy manual
    /// computation (see `sharded_attention.rs`).
    PerShard(Arc<PerShardAttention>),
}

/// Choices that change how the forward pass is traced, not what it computes.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Dtype of matmuls and activations (parameters are f32 masters, cast at use).
    pub compute: DType,
    /// Recompute each block in the backward pass instead of storing its activations.
    pub remat: bool,
    /// How attention is computed.
    pub attention: AttentionKind,
    /// Dropout rate; 0 disables dropout (always 0 in eval and generation).
    pub dropout: f64,
    /// Sharding constraint for the residual stream `[B, T, H]`, if any.
    pub residual_spec: Option<PartitionSpec>,
    /// The plan whose activation rules constrain MoE router logits and dispatch buffers
    /// (expert parallelism); `None` adds no constraints.
    pub moe_sharding: Option<Arc<ShardingPlan>>,
    /// FP8 attention and MLP projections in these formats (the embedding and MoE experts stay
    /// in `compute`, and the LM head unless `head_fp8`); `None` for plain matmuls in
    /// `compute`.
    pub fp8: Option<Fp8Formats>,
    /// The LM head's matmuls in FP8 in these formats (see [`super::masked_ce_sum`]: the
    /// chunked loss only; [`logits`] and greedy decoding keep the head in `compute`); `None`
    /// for `compute`.
    pub head_fp8: Option<Fp8Formats>,
    /// Run the projections that share an input (`wq`/`wk`/`wv`, `w_gate`/`w_up`) as one GEMM
    /// on their concatenated weights, FP8 or not (off when tensor parallelism splits their
    /// outputs).
    pub merge_projections: bool,
    /// How the chunked loss finds each row's softmax statistics.
    pub row_stats: RowStats,
    /// Tokens the chunked loss applies the head to at a time; `None` for
    /// [`super::default_chunk`].
    pub loss_chunk: Option<usize>,
}

impl ForwardOptions {
    /// f32, no remat, full attention, no dropout.
    pub fn eval() -> ForwardOptions {
        ForwardOptions {
            compute: DType::F32,
            remat: false,
            attention: AttentionKind::Full,
            dropout: 0.0,
            residual_spec: None,
            moe_sharding: None,
            fp8: None,
            head_fp8: None,
            merge_projections: true,
            row_stats: RowStats::TwoPass,
            loss_chunk: None,
        }
    }
}

/// A random-bit stream threaded through the graph (rng_bit_generator state `u64[2]`).
#[derive(Clone)]
pub struct RngStream {
    /// The current state.
    pub state: Tensor,
}

impl RngStream {
    /// `u32` random bits of `shape`, advancing the state.
    pub fn bits(&mut self, shape: &[i64]) -> Tensor {
        let g = self.state.graph().clone();
        let (state, bits) = g.rng_bit_generator(
            &self.state,
            RngAlgorithm::ThreeFry,
            &TensorType::new(DType::U32, shape),
        );
        self.state = state;
        bits
    }
}

/// Names of one block's attention parameters and FFN norm, in the order the block takes them;
/// the FFN's own parameters follow ([`MLP_PARAMS`] or [`moe::param_names`]).
const ATTN_PARAMS: [&str; 6] = [
    "attn_norm.scale",
    "attn.wq",
    "attn.wk",
    "attn.wv",
    "attn.wo",
    "mlp_norm.scale",
];

/// Names of a dense block's MLP parameters.
const MLP_PARAMS: [&str; 3] = ["mlp.w_gate", "mlp.w_up", "mlp.w_down"];

/// Names of the norms of the attention and FFN outputs (`model.post_norms`), which follow the
/// FFN's parameters.
pub(crate) const POST_NORM_PARAMS: [&str; 2] = ["attn_post_norm.scale", "mlp_post_norm.scale"];

/// Names of block `i`'s parameters (after `layers.{i}.`), in the order the block takes them.
pub(crate) fn block_param_names(cfg: &ModelConfig, i: usize) -> Vec<&'static str> {
    let ffn = if cfg.is_moe_layer(i) {
        moe::param_names(cfg)
    } else {
        MLP_PARAMS.to_vec()
    };
    let post: &[&str] = if cfg.post_norms {
        &POST_NORM_PARAMS
    } else {
        &[]
    };
    ATTN_PARAMS
        .iter()
        .copied()
        .chain(ffn)
        .chain(post.iter().copied())
        .collect()
}

/// The final hidden states `[B, T, H]` (after the final norm) for `tokens: i32 [B, T]` at
/// `positions: i32 [T]`. `rng` is required when `opts.dropout > 0`; given, it also drives
/// MoE router noise. With `opts.fp8`, `params` may also hold each layer's FP8 inputs
/// (`fp8.layers.{i}.amax` / `.probe`, see [`super::projection`]).
pub fn hidden_states(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
    rng: Option<&mut RngStream>,
) -> Result<Tensor> {
    Ok(hidden_states_with_moe(cfg, opts, params, tokens, positions, rng)?.0)
}

/// [`hidden_states`] and the routing statistics of each MoE block, in block order.
pub fn hidden_states_with_moe(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
    rng: Option<&mut RngStream>,
) -> Result<(Tensor, Vec<MoeStats>)> {
    let out = hidden_states_with_layers(cfg, opts, params, tokens, positions, rng)?;
    Ok((out.hidden, out.moe))
}

/// What a forward pass yields besides the logits.
pub struct ForwardOutputs {
    /// The final hidden states `[B, T, H]` (after the final norm).
    pub hidden: Tensor,
    /// The residual stream `[B, T, H]` after each block, in block order (before the final norm).
    pub layers: Vec<Tensor>,
    /// The routing statistics of each MoE block, in block order.
    pub moe: Vec<MoeStats>,
}

/// What a block reads: the residual stream, the positions, its parameters (then its FP8
/// inputs) and, when it draws random numbers, the random state.
struct BlockInputs {
    h: Tensor,
    positions: Tensor,
    params: Vec<Tensor>,
    rng: Option<Tensor>,
}
tree_struct!(BlockInputs {
    h,
    positions,
    params,
    rng
});

/// What a block returns: the residual stream, the advanced random state and, for MoE blocks,
/// the routing statistics.
struct BlockOutputs {
    h: Tensor,
    rng: Option<Tensor>,
    moe: Option<MoeStats>,
}
tree_struct!(BlockOutputs { h, rng, moe });

/// [`hidden_states_with_moe`] plus the residual stream after every block (for
/// intermediate-layer distillation).
pub fn hidden_states_with_layers(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
    rng: Option<&mut RngStream>,
) -> Result<ForwardOutputs> {
    let g = tokens.graph().clone();
    let mut h = embed(cfg, opts.compute, params.get("embed.tokens")?, tokens);
    let mut rng = rng;
    let mut stats = Vec::new();
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let is_moe = cfg.is_moe_layer(i);
        let mut block_params = Vec::new();
        for n in block_param_names(cfg, i) {
            block_params.push(params.get(&format!("layers.{i}.{n}"))?.clone());
        }
        if opts.fp8.is_some() {
            block_params.extend(fp8_layer_inputs(&g, params, i));
        }
        let uses_rng = opts.dropout > 0.0 || (is_moe && cfg.router_noise > 0.0);
        let inputs = BlockInputs {
            h: h.clone(),
            positions: positions.clone(),
            params: block_params,
            rng: rng.as_deref().filter(|_| uses_rng).map(|r| r.state.clone()),
        };
        let block = |_g: &Graph, x: &BlockInputs| -> Result<BlockOutputs> {
            let mut stream = x.rng.clone().map(|state| RngStream { state });
            let (out, moe) = block_forward(
                cfg,
                opts,
                i,
                &x.h,
                &x.positions,
                &x.params,
                is_moe,
                stream.as_mut(),
            );
            Ok(BlockOutputs {
                h: out,
                rng: stream.map(|s| s.state),
                moe,
            })
        };
        let out = if opts.remat {
            g.remat_tree(&format!("layers.{i}"), &inputs, block)?
        } else {
            block(&g, &inputs)?
        };
        h = out.h;
        if let (Some(r), Some(state)) = (rng.as_deref_mut(), out.rng) {
            r.state = state;
        }
        stats.extend(out.moe);
        if let Some(spec) = &opts.residual_spec {
            h = h.sharding_constraint(spec.clone());
        }
        layers.push(h.clone());
    }
    let hidden = rms_norm(cfg, &h, params.get("final_norm.scale")?);
    Ok(ForwardOutputs {
        hidden,
        layers,
        moe: stats,
    })
}

/// The weight of the LM head `[H, V]`: `lm_head`, or the embedding transposed when tied.
pub fn head_weight(cfg: &ModelConfig, params: &TensorMap) -> Result<Tensor> {
    Ok(if cfg.tie_embeddings {
        params.get("embed.tokens")?.transpose(&[1, 0])
    } else {
        params.get("lm_head")?.clone()
    })
}

/// Logits `[B, T, V]` in f32 (materialised: for evaluation of small batches and tests),
/// soft-capped with `final_logit_softcapping`.
pub fn logits(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
) -> Result<Tensor> {
    let h = hidden_states(cfg, opts, params, tokens, positions, None)?;
    let w = head_weight(cfg, params)?.cast(opts.compute);
    Ok(softcap_logits(cfg, h.matmul(&w).cast(DType::F32)))
}

/// f32 `logits` as the model reads them: `cap * tanh(z / cap)` with
/// `final_logit_softcapping`, else unchanged.
pub fn softcap_logits(cfg: &ModelConfig, logits: Tensor) -> Tensor {
    match cfg.final_logit_softcapping {
        Some(cap) => (logits * (1.0 / cap)).tanh() * cap,
        None => logits,
    }
}

/// One block: attention then the FFN (dense gated MLP or MoE), each pre-normed and residual.
/// A soft-capped block under [`AttentionKind::Cudnn`] composes its attention (the kernels
/// cannot soft-cap; the config's cuDNN blockers keep training runs from choosing them then).
#[allow(clippy::too_many_arguments)]
fn block_forward(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    layer: usize,
    h: &Tensor,
    positions: &Tensor,
    p: &[Tensor],
    is_moe: bool,
    rng: Option<&mut RngStream>,
) -> (Tensor, Option<MoeStats>) {
    let spec = AttentionSpec::for_layer(cfg, layer);
    let attend = |q: &Tensor, k: &Tensor, v: &Tensor| match &opts.attention {
        AttentionKind::Cudnn if spec.softcap.is_none() => cudnn_attention_with(q, k, v, &spec),
        AttentionKind::Full | AttentionKind::Cudnn => {
            attention_with(q, k, v, positions, positions, &spec)
        }
        AttentionKind::Blocked(block) => blocked_attention_with(q, k, v, *block, &spec),
        AttentionKind::PerShard(p) => per_shard_attention(p, q, k, v, positions, &spec),
    };
    block_with_attention(cfg, opts, h, positions, p, is_moe, attend, rng)
}

/// One block whose attention is `attend(q, k, v)` (after RoPE at `positions`, which are
/// `[T]` or per row `[B, T]`); the KV-cache decoder passes its own. `p` holds the tensors of
/// [`block_param_names`], then (with `opts.fp8`) the layer's FP8 inputs; an MoE block also
/// returns its routing statistics (its routing groups are the rows of `h`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_with_attention(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    h: &Tensor,
    positions: &Tensor,
    p: &[Tensor],
    is_moe: bool,
    attend: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Tensor,
    mut rng: Option<&mut RngStream>,
) -> (Tensor, Option<MoeStats>) {
    let c = opts.compute;
    let (b, t) = (h.shape()[0], h.shape()[1]);
    let (nh, kv, d) = (
        cfg.num_heads as i64,
        cfg.kv_heads() as i64,
        cfg.head_dim() as i64,
    );
    let ffn_end = ATTN_PARAMS.len()
        + if is_moe {
            moe::param_names(cfg).len()
        } else {
            MLP_PARAMS.len()
        };
    let post_norms = cfg.post_norms.then(|| (&p[ffn_end], &p[ffn_end + 1]));
    let named = ffn_end + if cfg.post_norms { 2 } else { 0 };
    let proj = BlockProjections::new(
        c,
        opts.fp8,
        p.get(named..).unwrap_or_default(),
        opts.merge_projections,
    );

    let x = rms_norm(cfg, h, &p[0]);
    let qkv = [
        (Projection::Query, &p[1]),
        (Projection::Key, &p[2]),
        (Projection::Value, &p[3]),
    ];
    let qkv = proj.apply(&x, &qkv);
    let q = qkv[0].reshape(&[b, t, nh, d]);
    let k = qkv[1].reshape(&[b, t, kv, d]);
    let v = qkv[2].reshape(&[b, t, kv, d]);
    let (q, k) = (rope(cfg, &q, positions), rope(cfg, &k, positions));
    let o = attend(&q, &k, &v);
    let heads = o.reshape(&[b, t, nh * d]);
    let mut attn_out = proj.apply(&heads, &[(Projection::Output, &p[4])]).remove(0);
    if let Some((attn_post, _)) = post_norms {
        attn_out = rms_norm(cfg, &attn_out, attn_post);
    }
    let h = h + &dropout(&attn_out, opts.dropout, rng.as_deref_mut());

    let x = rms_norm(cfg, &h, &p[5]);
    let (ffn_out, stats) = if is_moe {
        let params = MoeParams::from_slice(cfg, &p[6..ffn_end]);
        let (y, stats) = moe::moe_ffn(cfg, opts, &x, &params, rng.as_deref_mut());
        (y, Some(stats))
    } else {
        let gate_up = proj.apply(&x, &[(Projection::Gate, &p[6]), (Projection::Up, &p[7])]);
        let gated = gate_activation(cfg, &gate_up[0]) * &gate_up[1];
        (
            proj.apply(&gated, &[(Projection::Down, &p[8])]).remove(0),
            None,
        )
    };
    let ffn_out = match post_norms {
        Some((_, mlp_post)) => rms_norm(cfg, &ffn_out, mlp_post),
        None => ffn_out,
    };
    (&h + &dropout(&ffn_out, opts.dropout, rng), stats)
}

/// The rows of the embedding `table` for `tokens`, in `compute`, times sqrt(hidden_dim) with
/// `scale_embeddings` (the factor a constant of `compute`: rounded to it, as Gemma does).
///
/// The rows are taken from the table in its own dtype and then cast, not the other way round:
/// the values are the same, but the gradient, a scatter-add of every position's row into the
/// table, then sums in the table's dtype (f32 master weights) instead of in `compute`. A
/// frequent token's row collects thousands of additions per batch; in bf16 they lose most of
/// their bits, and on a GPU bf16 atomics serialise behind compare-and-swap loops.
pub fn embed(cfg: &ModelConfig, compute: DType, table: &Tensor, tokens: &Tensor) -> Tensor {
    let rows = table.take(tokens, 0).cast(compute);
    match cfg.embedding_scale() {
        Some(scale) => rows * scale,
        None => rows,
    }
}

/// RMSNorm scaling by `norm_offset + gain` (the offset added to the f32 gain).
pub(crate) fn rms_norm(cfg: &ModelConfig, x: &Tensor, gain: &Tensor) -> Tensor {
    if cfg.norm_offset == 0.0 {
        nn::rms_norm(x, gain, cfg.norm_eps)
    } else {
        nn::rms_norm(x, &(gain + cfg.norm_offset), cfg.norm_eps)
    }
}

/// The MLP gate's activation (`model.activation`).
pub(crate) fn gate_activation(cfg: &ModelConfig, x: &Tensor) -> Tensor {
    match cfg.activation {
        MlpActivation::Silu => nn::silu(x),
        MlpActivation::GeluTanh => nn::gelu(x, true),
    }
}

fn dropout(x: &Tensor, rate: f64, rng: Option<&mut RngStream>) -> Tensor {
    match rng {
        Some(r) if rate > 0.0 => {
            let bits = r.bits(x.shape());
            nn::dropout(x, rate, &bits)
        }
        _ => x.clone(),
    }
}

/// RoPE with the configured theta and scaling.
fn rope(cfg: &ModelConfig, x: &Tensor, positions: &Tensor) -> Tensor {
    let d = cfg.head_dim() as f64;
    match &cfg.rope_scaling {
        None => nn::rope(x, positions, cfg.rope_theta),
        Some(s) => match s.kind {
            RopeScalingType::Linear => {
                nn::rope(x, &(positions.cast(DType::F32) / s.factor), cfg.rope_theta)
            }
            RopeScalingType::Ntk => {
                nn::rope(x, positions, cfg.rope_theta * s.factor.powf(d / (d - 2.0)))
            }
        },
    }
}
