//! The transformer forward pass (docs/model.md), traced into a graph.

use super::attention::attention;
use super::blocked::blocked_attention;
use super::fp8::Fp8Formats;
use super::projection::{fp8_layer_inputs, BlockProjections, Projection};
use crate::config::{ModelConfig, RopeScalingType};
use vishwam_hlo::{
    nn, DType, Graph, PartitionSpec, Result, RngAlgorithm, Tensor, TensorMap, TensorType,
};

/// How attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// Scores for every (query, key) pair at once.
    Full,
    /// Blocks of this many queries and keys with an online softmax; no [T, S] scores.
    Blocked(usize),
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
    /// FP8 attention and MLP projections in these formats (the embedding and the LM head
    /// stay in `compute`); `None` for plain matmuls in `compute`.
    pub fp8: Option<Fp8Formats>,
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
            fp8: None,
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

/// Names of one block's parameters, in the order the block function takes them.
const BLOCK_PARAMS: [&str; 9] = [
    "attn_norm.scale",
    "attn.wq",
    "attn.wk",
    "attn.wv",
    "attn.wo",
    "mlp_norm.scale",
    "mlp.w_gate",
    "mlp.w_up",
    "mlp.w_down",
];

/// The final hidden states `[B, T, H]` (after the final norm) for `tokens: i32 [B, T]` at
/// `positions: i32 [T]`. `rng` is required when `opts.dropout > 0`. With `opts.fp8`, `params`
/// may also hold each layer's FP8 inputs (`fp8.layers.{i}.amax` / `.probe`, see
/// [`super::projection`]).
pub fn hidden_states(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
    rng: Option<&mut RngStream>,
) -> Result<Tensor> {
    let g = tokens.graph().clone();
    let embed = params.get("embed.tokens")?;
    let mut h = embed.cast(opts.compute).take(tokens, 0);
    let mut rng = rng;
    for i in 0..cfg.num_layers {
        let mut inputs: Vec<Tensor> = vec![h.clone(), positions.clone()];
        for n in BLOCK_PARAMS {
            inputs.push(params.get(&format!("layers.{i}.{n}"))?.clone());
        }
        if opts.fp8.is_some() {
            inputs.extend(fp8_layer_inputs(&g, params, i));
        }
        let n_block = inputs.len() - 2;
        let dropout_on = opts.dropout > 0.0;
        if dropout_on {
            if let Some(r) = rng.as_deref() {
                inputs.push(r.state.clone());
            }
        }
        let block = |g: &Graph, xs: &[Tensor]| -> Vec<Tensor> {
            let mut stream = (dropout_on && xs.len() > 2 + n_block).then(|| RngStream {
                state: xs[2 + n_block].clone(),
            });
            let p = &xs[2..2 + n_block];
            let out = block_forward(cfg, opts, g, &xs[0], &xs[1], p, stream.as_mut());
            let mut outs = vec![out];
            if let Some(s) = stream {
                outs.push(s.state);
            }
            outs
        };
        let outs = if opts.remat {
            g.remat(&format!("layers.{i}"), &inputs, block)
        } else {
            block(&g, &inputs)
        };
        h = outs[0].clone();
        if let (Some(r), Some(state)) = (rng.as_deref_mut(), outs.get(1)) {
            r.state = state.clone();
        }
        if let Some(spec) = &opts.residual_spec {
            h = h.sharding_constraint(spec.clone());
        }
    }
    Ok(nn::rms_norm(
        &h,
        params.get("final_norm.scale")?,
        cfg.norm_eps,
    ))
}

/// The weight of the LM head `[H, V]`: `lm_head`, or the embedding transposed when tied.
pub fn head_weight(cfg: &ModelConfig, params: &TensorMap) -> Result<Tensor> {
    Ok(if cfg.tie_embeddings {
        params.get("embed.tokens")?.transpose(&[1, 0])
    } else {
        params.get("lm_head")?.clone()
    })
}

/// Logits `[B, T, V]` in f32 (materialised: for evaluation of small batches and tests).
pub fn logits(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    positions: &Tensor,
) -> Result<Tensor> {
    let h = hidden_states(cfg, opts, params, tokens, positions, None)?;
    let w = head_weight(cfg, params)?.cast(opts.compute);
    Ok(h.matmul(&w).cast(DType::F32))
}

/// One block: attention then MLP, each pre-normed and residual.
fn block_forward(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    _g: &Graph,
    h: &Tensor,
    positions: &Tensor,
    p: &[Tensor],
    mut rng: Option<&mut RngStream>,
) -> Tensor {
    let c = opts.compute;
    let (b, t) = (h.shape()[0], h.shape()[1]);
    let (nh, kv, d) = (
        cfg.num_heads as i64,
        cfg.kv_heads() as i64,
        cfg.head_dim() as i64,
    );
    let proj = BlockProjections::new(c, opts.fp8, &p[BLOCK_PARAMS.len()..]);

    let x = nn::rms_norm(h, &p[0], cfg.norm_eps);
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
    let o = match opts.attention {
        AttentionKind::Full => attention(&q, &k, &v, positions, positions),
        AttentionKind::Blocked(block) => blocked_attention(&q, &k, &v, block),
    };
    let heads = o.reshape(&[b, t, nh * d]);
    let attn_out = proj.apply(&heads, &[(Projection::Output, &p[4])]).remove(0);
    let h = h + &dropout(&attn_out, opts.dropout, rng.as_deref_mut());

    let x = nn::rms_norm(&h, &p[5], cfg.norm_eps);
    let gate_up = proj.apply(&x, &[(Projection::Gate, &p[6]), (Projection::Up, &p[7])]);
    let gated = nn::silu(&gate_up[0]) * &gate_up[1];
    let mlp_out = proj.apply(&gated, &[(Projection::Down, &p[8])]).remove(0);
    &h + &dropout(&mlp_out, opts.dropout, rng)
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
