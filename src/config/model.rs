//! Section `model`: the transformer's shape, RoPE, initialisation and Mixture-of-Experts keys.

use serde::Serialize;
use serde_json::Value;

use super::checks::Checks;
use super::error::{show, ConfigIssue};
use super::reader::{config_enum, ObjectReader};

config_enum! {
    /// How RoPE frequencies are stretched for contexts longer than training.
    pub enum RopeScalingType {
        /// Position interpolation: positions are divided by `factor`.
        #[default]
        Linear => "linear",
        /// NTK-aware scaling: `rope_theta` is multiplied by `factor^(d/(d-2))`.
        Ntk => "ntk",
    }
}

config_enum! {
    /// The activation of the MLP's gate branch (the gated product is `act(x W_gate) * x W_up`).
    pub enum MlpActivation {
        /// SiLU: SwiGLU, as Llama, Mistral and Qwen2.
        #[default]
        Silu => "silu",
        /// GELU with the tanh approximation: GeGLU, as Gemma (`gelu_pytorch_tanh`).
        GeluTanh => "gelu_tanh",
    }
}

/// `model.rope_scaling`: `{"type": "linear" | "ntk", "factor": f}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RopeScaling {
    /// The scaling method.
    #[serde(rename = "type")]
    pub kind: RopeScalingType,
    /// Context stretch factor, >= 1 (1 leaves RoPE unchanged).
    pub factor: f64,
}

/// Section `model`: a Llama-style decoder (RMSNorm, RoPE attention with GQA, SwiGLU MLP), with
/// Gemma's switches (`activation`, `norm_offset`, `scale_embeddings`) and Gemma 2's
/// (`post_norms`, the two soft-caps, `query_pre_attn_scalar`, the sliding window).
///
/// Initialisation (`init_std`): every weight matrix (embedding, q/k/v, MLP gate and up, untied
/// LM head) is drawn from N(0, init_std^2); the two residual output projections of each block
/// (attention out and MLP down) from N(0, (init_std / sqrt(2 * num_layers))^2), as in GPT-2;
/// RMSNorm gains start at 1; there are no biases. MoE routers use N(0, init_std^2) too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// Vocabulary size; must match the tokenizer. Default 8192 (a byte-level BPE trained on
    /// the built-in corpus: large enough for English words, small enough for a CPU model).
    pub vocab_size: usize,
    /// Width of the residual stream. Default 256.
    pub hidden_dim: usize,
    /// Number of transformer blocks. Default 4.
    pub num_layers: usize,
    /// Query heads per block. Default 8.
    pub num_heads: usize,
    /// Key/value heads (GQA; 1 = MQA). Default null = `num_heads` (plain multi-head).
    pub num_kv_heads: Option<usize>,
    /// Per-head width; must be even (RoPE). Default null = `hidden_dim / num_heads`.
    pub head_dim: Option<usize>,
    /// SwiGLU hidden width. Default null = 8/3 x hidden_dim rounded up to a multiple of 256.
    pub mlp_dim: Option<usize>,
    /// Longest sequence the model supports (RoPE tables, attention). Default 256.
    pub max_seq_len: usize,
    /// Dropout on attention and MLP outputs during training, in [0, 1). Default 0.
    pub dropout_rate: f64,
    /// RoPE base frequency, > 0. Default 10000.
    pub rope_theta: f64,
    /// Optional RoPE context scaling. Default null (none).
    pub rope_scaling: Option<RopeScaling>,
    /// Share the token embedding with the LM head. Default true.
    pub tie_embeddings: bool,
    /// The MLP's gate activation (MoE experts included): `silu` (SwiGLU, Llama) or
    /// `gelu_tanh` (GeGLU, Gemma). Default `silu`.
    pub activation: MlpActivation,
    /// RMSNorm multiplies the normalised input by `norm_offset + gain`: 0 (Llama: the gain)
    /// or 1 (Gemma: `1 + gain`, gains starting at 0). Default 0.
    pub norm_offset: f64,
    /// Multiply the token embeddings by sqrt(hidden_dim), rounded to the compute dtype, before
    /// the first block (Gemma; the LM head is not scaled). Default false.
    pub scale_embeddings: bool,
    /// RMSNorm the attention output and the FFN output of every block before their residual
    /// adds (Gemma 2's `post_attention_layernorm` and `post_feedforward_layernorm`, parameters
    /// `attn_post_norm.scale` and `mlp_post_norm.scale`). Default false.
    pub post_norms: bool,
    /// Soft-cap of the attention scores: `cap * tanh(s / cap)` after scaling, before the
    /// mask (Gemma 2: 50). Default null (none).
    pub attn_logit_softcapping: Option<f64>,
    /// Soft-cap of the LM head's logits: `cap * tanh(z / cap)` wherever logits are read (the
    /// loss, evaluation, generation, both models of distillation; Gemma 2: 30). Default null.
    pub final_logit_softcapping: Option<f64>,
    /// Queries are scaled by `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`
    /// (Gemma 2). Default null (the head dim).
    pub query_pre_attn_scalar: Option<f64>,
    /// Local attention: a query at position p sees keys at positions p - window < k <= p, in
    /// the blocks that `sliding_window_pattern` makes local. Default null (every block global).
    pub sliding_window: Option<usize>,
    /// Which blocks use `sliding_window`: 0 = every block; N >= 2 = all but every N-th,
    /// i.e. block i (0-based) is global when (i + 1) % N == 0 (Gemma 2: 2, local then global).
    /// Default 0; no effect without `sliding_window`.
    pub sliding_window_pattern: usize,
    /// RMSNorm epsilon, > 0. Default 1e-5.
    pub norm_eps: f64,
    /// Standard deviation of the weight initialisation (see the type's docs), > 0. Default 0.02.
    pub init_std: f64,
    /// Replace the MLP of some blocks with a Mixture-of-Experts layer. Default false; the other
    /// MoE keys have no effect while it is false.
    pub use_moe: bool,
    /// Routed experts per MoE layer, >= 1. Default 8.
    pub num_experts: usize,
    /// Experts each token is sent to (top-k), 1..=num_experts. Default 2.
    pub experts_per_token: usize,
    /// Block i (0-based) is MoE when (i + 1) % moe_layer_frequency == 0: 1 = every block,
    /// 2 = every second block. Default 1.
    pub moe_layer_frequency: usize,
    /// Absolute (token, choice) slots per expert per routing group (one sequence); excludes
    /// `capacity_factor`. Default null.
    pub expert_capacity: Option<usize>,
    /// Capacity = ceil(factor x seq_len x k / num_experts) per sequence; null = 1.25 unless
    /// `expert_capacity` is given. Default null.
    pub capacity_factor: Option<f64>,
    /// Std of the Gaussian noise added to router logits in training (noisy top-k), >= 0. Default 0.
    pub router_noise: f64,
    /// Weight of the load-balancing auxiliary loss, >= 0. Default 0.01.
    pub aux_loss_coef: f64,
    /// DeepSeek-V3 loss-free balancing: a per-expert routing bias updated outside the gradient.
    /// Default false.
    pub use_lossfreebalance: bool,
    /// Step size of the loss-free bias update, > 0. Default 0.001.
    pub lossfree_update_rate: f64,
    /// Always-on experts added to the routed ones. Default 0.
    pub num_shared_experts: usize,
    /// SwiGLU hidden width of each expert. Default null = the dense MLP width.
    pub expert_dim: Option<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 8192,
            hidden_dim: 256,
            num_layers: 4,
            num_heads: 8,
            num_kv_heads: None,
            head_dim: None,
            mlp_dim: None,
            max_seq_len: 128,
            dropout_rate: 0.0,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_embeddings: true,
            activation: MlpActivation::Silu,
            norm_offset: 0.0,
            scale_embeddings: false,
            post_norms: false,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            query_pre_attn_scalar: None,
            sliding_window: None,
            sliding_window_pattern: 0,
            norm_eps: 1e-5,
            init_std: 0.02,
            use_moe: false,
            num_experts: 8,
            experts_per_token: 2,
            moe_layer_frequency: 1,
            expert_capacity: None,
            capacity_factor: None,
            router_noise: 0.0,
            aux_loss_coef: 0.01,
            use_lossfreebalance: false,
            lossfree_update_rate: 0.001,
            num_shared_experts: 0,
            expert_dim: None,
        }
    }
}

/// The capacity factor used when neither `expert_capacity` nor `capacity_factor` is given.
pub const DEFAULT_CAPACITY_FACTOR: f64 = 1.25;

const POSITIVE: &str = "a positive integer";

impl ModelConfig {
    /// Key/value heads: `num_kv_heads`, or `num_heads` when not given.
    pub fn kv_heads(&self) -> usize {
        self.num_kv_heads.unwrap_or(self.num_heads)
    }

    /// Per-head width: `head_dim`, or `hidden_dim / num_heads` when not given.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_dim / self.num_heads.max(1))
    }

    /// SwiGLU width: `mlp_dim`, or 8/3 x hidden_dim rounded up to a multiple of 256.
    pub fn mlp_dim(&self) -> usize {
        self.mlp_dim
            .unwrap_or_else(|| (8 * self.hidden_dim).div_ceil(3).div_ceil(256) * 256)
    }

    /// sqrt(hidden_dim), the factor the token embeddings are multiplied by (before rounding
    /// to the compute dtype), when `scale_embeddings`.
    pub fn embedding_scale(&self) -> Option<f64> {
        self.scale_embeddings
            .then(|| (self.hidden_dim as f64).sqrt())
    }

    /// The attention window of block `layer` (0-based): `sliding_window` where
    /// `sliding_window_pattern` makes the block local, else `None` (causal over everything).
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window?;
        let global = self.sliding_window_pattern >= 2
            && (layer + 1).is_multiple_of(self.sliding_window_pattern);
        (!global).then_some(window)
    }

    /// The factor queries are scaled by before `q . k`: `query_pre_attn_scalar^-0.5`, or
    /// `head_dim^-0.5`.
    pub fn attention_scale(&self) -> f64 {
        let scalar = self.query_pre_attn_scalar.unwrap_or(self.head_dim() as f64);
        1.0 / scalar.sqrt()
    }

    /// Expert SwiGLU width: `expert_dim`, or [`Self::mlp_dim`].
    pub fn expert_dim(&self) -> usize {
        self.expert_dim.unwrap_or_else(|| self.mlp_dim())
    }

    /// Whether block `layer` (0-based) is a Mixture-of-Experts block.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.use_moe && (layer + 1).is_multiple_of(self.moe_layer_frequency.max(1))
    }

    /// Tokens each expert accepts when `tokens` tokens are routed together.
    pub fn expert_capacity_for(&self, tokens: usize) -> usize {
        match self.expert_capacity {
            Some(capacity) => capacity,
            None => {
                let factor = self.capacity_factor.unwrap_or(DEFAULT_CAPACITY_FACTOR);
                let routed =
                    (tokens * self.experts_per_token) as f64 / self.num_experts.max(1) as f64;
                (factor * routed).ceil() as usize
            }
        }
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.integer("vocab_size", &mut self.vocab_size, POSITIVE);
        r.integer("hidden_dim", &mut self.hidden_dim, POSITIVE);
        r.integer("num_layers", &mut self.num_layers, POSITIVE);
        r.integer("num_heads", &mut self.num_heads, POSITIVE);
        r.opt_integer("num_kv_heads", &mut self.num_kv_heads, POSITIVE);
        r.opt_integer("head_dim", &mut self.head_dim, POSITIVE);
        r.opt_integer("mlp_dim", &mut self.mlp_dim, POSITIVE);
        r.integer("max_seq_len", &mut self.max_seq_len, POSITIVE);
        r.number("dropout_rate", &mut self.dropout_rate);
        r.number("rope_theta", &mut self.rope_theta);
        r.custom("rope_scaling", &mut self.rope_scaling, read_rope_scaling);
        r.flag("tie_embeddings", &mut self.tie_embeddings);
        r.choice("activation", &mut self.activation);
        r.number("norm_offset", &mut self.norm_offset);
        r.flag("scale_embeddings", &mut self.scale_embeddings);
        r.flag("post_norms", &mut self.post_norms);
        r.opt_number("attn_logit_softcapping", &mut self.attn_logit_softcapping);
        r.opt_number("final_logit_softcapping", &mut self.final_logit_softcapping);
        r.opt_number("query_pre_attn_scalar", &mut self.query_pre_attn_scalar);
        r.opt_integer("sliding_window", &mut self.sliding_window, POSITIVE);
        r.integer(
            "sliding_window_pattern",
            &mut self.sliding_window_pattern,
            "0 (every block local) or an integer >= 2 (every N-th block global)",
        );
        r.number("norm_eps", &mut self.norm_eps);
        r.number("init_std", &mut self.init_std);
        r.flag("use_moe", &mut self.use_moe);
        r.integer("num_experts", &mut self.num_experts, POSITIVE);
        r.integer("experts_per_token", &mut self.experts_per_token, POSITIVE);
        r.integer(
            "moe_layer_frequency",
            &mut self.moe_layer_frequency,
            POSITIVE,
        );
        r.opt_integer("expert_capacity", &mut self.expert_capacity, POSITIVE);
        r.opt_number("capacity_factor", &mut self.capacity_factor);
        r.number("router_noise", &mut self.router_noise);
        r.number("aux_loss_coef", &mut self.aux_loss_coef);
        r.flag("use_lossfreebalance", &mut self.use_lossfreebalance);
        r.number("lossfree_update_rate", &mut self.lossfree_update_rate);
        r.integer(
            "num_shared_experts",
            &mut self.num_shared_experts,
            "a non-negative integer",
        );
        r.opt_integer("expert_dim", &mut self.expert_dim, POSITIVE);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        c.positive("model.vocab_size", self.vocab_size);
        c.positive("model.hidden_dim", self.hidden_dim);
        c.positive("model.num_layers", self.num_layers);
        c.positive("model.num_heads", self.num_heads);
        c.positive("model.max_seq_len", self.max_seq_len);
        if let Some(kv) = self.num_kv_heads {
            c.positive("model.num_kv_heads", kv);
            if kv >= 1 && !self.num_heads.is_multiple_of(kv) {
                c.fail(
                    "model.num_kv_heads",
                    format!(
                        "a divisor of model.num_heads ({}) so that query heads group evenly over key/value heads",
                        self.num_heads
                    ),
                    kv,
                );
            }
        }
        match self.head_dim {
            Some(head_dim) => {
                c.positive("model.head_dim", head_dim);
                c.ensure(
                    head_dim.is_multiple_of(2),
                    "model.head_dim",
                    "even (RoPE rotates pairs of dimensions)",
                    head_dim,
                );
            }
            None if self.num_heads >= 1 => {
                if !self.hidden_dim.is_multiple_of(self.num_heads) {
                    c.fail(
                        "model.hidden_dim",
                        format!(
                            "divisible by model.num_heads ({}) when model.head_dim is not given; \
                             set model.head_dim explicitly or change one of them",
                            self.num_heads
                        ),
                        self.hidden_dim,
                    );
                } else if !self.head_dim().is_multiple_of(2) {
                    c.fail(
                        "model.head_dim",
                        "even (RoPE rotates pairs of dimensions); it defaults to \
                         model.hidden_dim / model.num_heads, so set it or change those",
                        format!("{} (derived)", self.head_dim()),
                    );
                }
            }
            None => {}
        }
        if let Some(mlp_dim) = self.mlp_dim {
            c.positive("model.mlp_dim", mlp_dim);
        }
        c.in_half_open("model.dropout_rate", self.dropout_rate, 0.0, 1.0);
        c.positive_number("model.rope_theta", self.rope_theta);
        if let Some(scaling) = self.rope_scaling {
            c.ensure(
                scaling.factor >= 1.0,
                "model.rope_scaling.factor",
                "a number >= 1",
                scaling.factor,
            );
        }
        c.positive_number("model.norm_eps", self.norm_eps);
        c.ensure(
            self.norm_offset == 0.0 || self.norm_offset == 1.0,
            "model.norm_offset",
            "0 (RMSNorm scales by its gain, Llama) or 1 (by 1 + gain, Gemma)",
            self.norm_offset,
        );
        c.positive_number("model.init_std", self.init_std);
        self.validate_gemma2(c);
        self.validate_moe(c);
    }

    fn validate_gemma2(&self, c: &mut Checks) {
        for (key, cap) in [
            ("model.attn_logit_softcapping", self.attn_logit_softcapping),
            (
                "model.final_logit_softcapping",
                self.final_logit_softcapping,
            ),
            ("model.query_pre_attn_scalar", self.query_pre_attn_scalar),
        ] {
            if let Some(value) = cap {
                c.ensure(
                    value.is_finite() && value > 0.0,
                    key,
                    "null or a positive number",
                    value,
                );
            }
        }
        if let Some(window) = self.sliding_window {
            c.positive("model.sliding_window", window);
        }
        c.ensure(
            self.sliding_window_pattern != 1,
            "model.sliding_window_pattern",
            "0 (every block local) or an integer >= 2 (every N-th block global); 1 would make \
             every block global: set model.sliding_window to null instead",
            self.sliding_window_pattern,
        );
    }

    fn validate_moe(&self, c: &mut Checks) {
        c.positive("model.num_experts", self.num_experts);
        c.positive("model.experts_per_token", self.experts_per_token);
        c.ensure(
            self.experts_per_token <= self.num_experts,
            "model.experts_per_token",
            format!("at most model.num_experts ({})", self.num_experts),
            self.experts_per_token,
        );
        c.positive("model.moe_layer_frequency", self.moe_layer_frequency);
        if self.use_moe {
            c.ensure(
                self.moe_layer_frequency <= self.num_layers,
                "model.moe_layer_frequency",
                format!(
                    "at most model.num_layers ({}), or no block would be MoE",
                    self.num_layers
                ),
                self.moe_layer_frequency,
            );
        }
        if let Some(capacity) = self.expert_capacity {
            c.positive("model.expert_capacity", capacity);
        }
        if let Some(factor) = self.capacity_factor {
            c.positive_number("model.capacity_factor", factor);
        }
        if let (Some(capacity), Some(factor)) = (self.expert_capacity, self.capacity_factor) {
            c.conflict(
                "model.expert_capacity",
                capacity,
                "model.capacity_factor",
                factor,
                "give an absolute capacity or a factor, not both",
            );
        }
        c.non_negative_number("model.router_noise", self.router_noise);
        c.non_negative_number("model.aux_loss_coef", self.aux_loss_coef);
        c.positive_number("model.lossfree_update_rate", self.lossfree_update_rate);
        if let Some(expert_dim) = self.expert_dim {
            c.positive("model.expert_dim", expert_dim);
        }
    }
}

fn read_rope_scaling(
    value: &Value,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Option<RopeScaling>> {
    const EXPECTED: &str = "null or an object {\"type\": \"linear\" | \"ntk\", \"factor\": number}";
    let map = match value {
        Value::Null => return Some(None),
        Value::Object(map) => map,
        _ => {
            issues.push(ConfigIssue::Invalid {
                key: path.to_string(),
                expected: EXPECTED.into(),
                got: show(value),
            });
            return None;
        }
    };
    let before = issues.len();
    let mut scaling = RopeScaling {
        kind: RopeScalingType::Linear,
        factor: 1.0,
    };
    let mut r = ObjectReader::new(path, map, issues);
    r.require("type", "one of \"linear\", \"ntk\"");
    r.choice("type", &mut scaling.kind);
    r.require("factor", "a number >= 1");
    r.number("factor", &mut scaling.factor);
    r.finish();
    (issues.len() == before).then_some(Some(scaling))
}
