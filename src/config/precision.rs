//! Sections `memory` (remat, attention, KV cache) and `optimization` (precision, FP8, pjit).

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;

use super::checks::Checks;
use super::error::ConfigIssue;
use super::reader::{config_enum, ObjectReader};

config_enum! {
    /// How FP8 scales are chosen.
    pub enum Fp8Recipe {
        /// Scales from the amax history of previous steps (kept in the train state).
        #[default]
        Delayed => "delayed",
        /// Scales from the current tensor's amax, computed in the step.
        Current => "current",
    }
}

config_enum! {
    /// FP8 element formats.
    pub enum Fp8Format {
        /// E4M3 for activations and weights, E5M2 for gradients.
        #[default]
        Hybrid => "hybrid",
        /// E4M3 everywhere.
        E4m3 => "e4m3",
    }
}

config_enum! {
    /// Which implementation computes attention in training.
    pub enum AttentionBackend {
        /// cuDNN flash attention where it can run (see [`cudnn_attention_blockers`]), per
        /// shard on a sharded mesh (`model/sharded_attention.rs`), else "xla".
        #[default]
        Auto => "auto",
        /// Attention composed from XLA primitives: full scores, or blocked when
        /// `attention_memory_efficient` is set.
        Xla => "xla",
        /// cuDNN flash attention (the CUDA plugin only; anything that prevents it is an error).
        Cudnn => "cudnn",
        /// "xla" run per device on its batch and head shards in a Shardy manual computation,
        /// as "cudnn" runs on a sharded mesh (its backward recomputes the forward); the same as
        /// "xla" on one device. The CPU twin of sharded cuDNN attention.
        XlaPerShard => "xla_per_shard",
    }
}

/// Largest head dim sent to cuDNN flash attention: every CUDA GPU the plugin supports takes
/// 128 (Hopper and later would take 256).
pub const CUDNN_MAX_HEAD_DIM: usize = 128;

/// A setting that keeps cuDNN flash attention from running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudnnAttentionBlocker {
    /// Full path of the key.
    pub key: &'static str,
    /// Its value, as JSON text.
    pub value: String,
    /// Why cuDNN cannot run with it and what to change.
    pub rule: String,
}

/// Element type of the forward and backward matmuls (master weights stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    /// Full f32.
    F32,
    /// bf16 compute (`tpu.use_bfloat16` or `optimization.mixed_precision`).
    Bf16,
    /// f16 compute with a dynamic loss scale (`optimization.use_dynamic_scale`).
    F16,
}

/// Section `memory`: rematerialisation, blocked attention, the KV cache format.
///
/// `attention_memory_efficient` and `use_memory_efficient_attention` are two spellings of
/// one switch (different communities use each); either may be given, both must agree, and
/// after loading both hold the same value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryConfig {
    /// Recompute each block's activations in the backward pass. Default false.
    pub gradient_checkpointing: bool,
    /// Blocked attention over `optimization.block_size` without a T x T score matrix.
    /// Default null (= false, unless `optimization.block_size` is given).
    pub attention_memory_efficient: Option<bool>,
    /// Alias of `attention_memory_efficient`. Default null (= false).
    pub use_memory_efficient_attention: Option<bool>,
    /// Store the generation KV cache in f8E4M3 with a per-head scale. Default false.
    pub kv_cache_fp8: bool,
    /// Attention implementation in training: "auto", "xla" or "cudnn". Default "auto".
    pub attention_backend: AttentionBackend,
    /// Tokens the LM head and the cross-entropy process at a time: one chunk's f32 logits are
    /// `[chunk, vocab]`, so a larger chunk costs memory and saves passes over the head's
    /// weight gradient. Default null: the platform's choice (`model::default_chunk_on`; in
    /// distillation `model::default_chunk`).
    pub loss_chunk_tokens: Option<usize>,
}

impl MemoryConfig {
    /// Whether attention runs blocked (either alias set to true).
    pub fn memory_efficient_attention(&self) -> bool {
        self.attention_memory_efficient
            .or(self.use_memory_efficient_attention)
            .unwrap_or(false)
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.flag("gradient_checkpointing", &mut self.gradient_checkpointing);
        r.opt_flag(
            "attention_memory_efficient",
            &mut self.attention_memory_efficient,
        );
        r.opt_flag(
            "use_memory_efficient_attention",
            &mut self.use_memory_efficient_attention,
        );
        r.flag("kv_cache_fp8", &mut self.kv_cache_fp8);
        r.choice("attention_backend", &mut self.attention_backend);
        r.opt_integer(
            "loss_chunk_tokens",
            &mut self.loss_chunk_tokens,
            "a positive integer",
        );
        // One alias given: both hold it, so the saved config reads the same to every community.
        match (
            self.attention_memory_efficient,
            self.use_memory_efficient_attention,
        ) {
            (Some(a), None) => self.use_memory_efficient_attention = Some(a),
            (None, Some(b)) => self.attention_memory_efficient = Some(b),
            _ => {}
        }
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        if let Some(n) = self.loss_chunk_tokens {
            c.positive("memory.loss_chunk_tokens", n);
        }
        if let (Some(a), Some(b)) = (
            self.attention_memory_efficient,
            self.use_memory_efficient_attention,
        ) {
            if a != b {
                c.issues.push(ConfigIssue::Conflict {
                    key: "memory.attention_memory_efficient".into(),
                    value: a.to_string(),
                    other: "memory.use_memory_efficient_attention".into(),
                    other_value: b.to_string(),
                    rule: "the two keys are aliases of one switch and must agree; give only one"
                        .into(),
                });
            }
        }
    }
}

impl Serialize for MemoryConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("MemoryConfig", 6)?;
        s.serialize_field("gradient_checkpointing", &self.gradient_checkpointing)?;
        s.serialize_field(
            "attention_memory_efficient",
            &self.attention_memory_efficient,
        )?;
        s.serialize_field(
            "use_memory_efficient_attention",
            &self.use_memory_efficient_attention,
        )?;
        s.serialize_field("kv_cache_fp8", &self.kv_cache_fp8)?;
        s.serialize_field("attention_backend", &self.attention_backend)?;
        s.serialize_field("loss_chunk_tokens", &self.loss_chunk_tokens)?;
        s.end()
    }
}

/// Block length of blocked attention when `optimization.block_size` is null.
pub const DEFAULT_ATTENTION_BLOCK: usize = 128;

/// The block length of blocked attention, when attention runs blocked: with
/// `memory.attention_memory_efficient` or an explicit `optimization.block_size`.
pub(crate) fn attention_block(
    memory: &MemoryConfig,
    optimization: &OptimizationConfig,
) -> Option<usize> {
    (memory.memory_efficient_attention() || optimization.block_size.is_some())
        .then(|| optimization.block_size.unwrap_or(DEFAULT_ATTENTION_BLOCK))
}

/// An explicit `block_size` against an explicit `attention_memory_efficient = false`.
pub(crate) fn validate_attention_block(
    memory: &MemoryConfig,
    optimization: &OptimizationConfig,
    c: &mut Checks,
) {
    let explicitly_off = memory
        .attention_memory_efficient
        .or(memory.use_memory_efficient_attention)
        == Some(false);
    if let (Some(block), true) = (optimization.block_size, explicitly_off) {
        c.conflict(
            "optimization.block_size",
            block,
            "memory.attention_memory_efficient",
            false,
            "block_size is the block length of blocked (memory-efficient) attention, which is \
             switched off; remove block_size (null), or set attention_memory_efficient to true",
        );
    }
}

/// Section `optimization`: precision policy, FP8, attention blocks, weight sharding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizationConfig {
    /// FP8 matmuls for the attention projections and MLP. Default false.
    pub use_fp8: bool,
    /// FP8 scaling recipe. Default "delayed".
    pub fp8_recipe: Fp8Recipe,
    /// Steps of amax history for delayed scaling, >= 1. Default 16.
    pub amax_history_len: usize,
    /// FP8 formats. Default "hybrid".
    pub fp8_format: Fp8Format,
    /// The LM head's matmuls in FP8 too (with `use_fp8`; current scaling). Default false.
    pub fp8_head: bool,
    /// Compile each step as one SPMD program over the mesh (pjit semantics). Must be true:
    /// vishwam has no other execution mode. Default true.
    pub use_pjit: bool,
    /// Block length of blocked (memory-efficient) attention, >= 1. Giving it turns blocked
    /// attention on (as `memory.attention_memory_efficient` does; an explicit false there
    /// contradicts it), and keeps the composed attention where "auto" would take cuDNN, which
    /// picks its own blocks. Default null = [`DEFAULT_ATTENTION_BLOCK`] when
    /// `attention_memory_efficient` is set.
    pub block_size: Option<usize>,
    /// Dynamic loss scaling: the loss is multiplied by a scale (initially 65536) before the
    /// backward pass and the gradients divided by it after; a step whose gradients are not
    /// finite is skipped and halves the scale, 2000 good steps in a row double it. Without
    /// `tpu.use_bfloat16` it also selects f16 compute (which needs the scale); with
    /// `use_bfloat16` the compute stays bf16 and the scale guards the low-precision (bf16,
    /// FP8) gradients, a non-finite step being skipped instead of stopping the run. FP8's own
    /// per-tensor scaling (`fp8_recipe`) is separate and unchanged. Default false.
    pub use_dynamic_scale: bool,
    /// Low-precision compute over f32 master weights: bf16, or f16 with `use_dynamic_scale`
    /// (bf16 again when `tpu.use_bfloat16` is also set). Default false.
    pub mixed_precision: bool,
    /// Shard parameters and optimizer state over the data axes as well (ZeRO-3) under the
    /// data-parallel and hybrid strategies. Default false.
    pub shard_weights: bool,
}

impl Default for OptimizationConfig {
    fn default() -> Self {
        OptimizationConfig {
            use_fp8: false,
            fp8_recipe: Fp8Recipe::Delayed,
            amax_history_len: 16,
            fp8_format: Fp8Format::Hybrid,
            fp8_head: false,
            use_pjit: true,
            block_size: None,
            use_dynamic_scale: false,
            mixed_precision: false,
            shard_weights: false,
        }
    }
}

impl OptimizationConfig {
    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.flag("use_fp8", &mut self.use_fp8);
        r.choice("fp8_recipe", &mut self.fp8_recipe);
        r.integer(
            "amax_history_len",
            &mut self.amax_history_len,
            "a positive integer",
        );
        r.choice("fp8_format", &mut self.fp8_format);
        r.flag("fp8_head", &mut self.fp8_head);
        r.flag("use_pjit", &mut self.use_pjit);
        r.opt_integer("block_size", &mut self.block_size, "a positive integer");
        r.flag("use_dynamic_scale", &mut self.use_dynamic_scale);
        r.flag("mixed_precision", &mut self.mixed_precision);
        r.flag("shard_weights", &mut self.shard_weights);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        c.positive("optimization.amax_history_len", self.amax_history_len);
        if self.fp8_head && !self.use_fp8 {
            c.conflict(
                "optimization.fp8_head",
                true,
                "optimization.use_fp8",
                false,
                "an FP8 LM head needs FP8 training; set use_fp8 to true, or fp8_head to false",
            );
        }
        if let Some(block) = self.block_size {
            c.positive("optimization.block_size", block);
        }
        c.ensure(
            self.use_pjit,
            "optimization.use_pjit",
            "true: vishwam always compiles the step as one SPMD program over the device mesh \
             (what pjit does); remove the key or set it to true",
            self.use_pjit,
        );
    }
}

/// Compute dtype from the precision keys: bf16 with `use_bfloat16`, else f16 with
/// `use_dynamic_scale`, else bf16 with `mixed_precision`, else f32.
pub(crate) fn compute_dtype(use_bfloat16: bool, optimization: &OptimizationConfig) -> ComputeDtype {
    if use_bfloat16 {
        ComputeDtype::Bf16
    } else if optimization.use_dynamic_scale {
        ComputeDtype::F16
    } else if optimization.mixed_precision {
        ComputeDtype::Bf16
    } else {
        ComputeDtype::F32
    }
}

/// The settings of `config` that keep cuDNN flash attention from running (empty when it can):
/// the platform must be CUDA, compute bf16 or f16, and the head dim a multiple of 8 up to
/// [`CUDNN_MAX_HEAD_DIM`] (the rules of jax's `fused_attention_stablehlo.py`), and the scores
/// must not be soft-capped (the kernels cannot).
pub(crate) fn cudnn_attention_blockers(config: &super::Config) -> Vec<CudnnAttentionBlocker> {
    let mut found = Vec::new();
    let platform = config.runtime.platform;
    if platform != super::Platform::Cuda {
        found.push(CudnnAttentionBlocker {
            key: "runtime.platform",
            value: format!("\"{platform}\""),
            rule: "cuDNN flash attention needs the XLA CUDA plugin; set runtime.platform to \
                   \"cuda\", or memory.attention_backend to \"auto\" or \"xla\""
                .into(),
        });
    }
    if config.compute_dtype() == ComputeDtype::F32 {
        found.push(CudnnAttentionBlocker {
            key: "optimization.mixed_precision",
            value: "false".into(),
            rule: "cuDNN flash attention computes in bf16 or f16, and this config computes in \
                   f32; set optimization.mixed_precision (bf16) or optimization.use_dynamic_scale \
                   (f16) to true, or memory.attention_backend to \"xla\""
                .into(),
        });
    }
    if let Some(block) = config.optimization.block_size {
        found.push(CudnnAttentionBlocker {
            key: "optimization.block_size",
            value: block.to_string(),
            rule: "cuDNN flash attention picks its own blocks, and an explicit block_size asks \
                   for blocked XLA attention of that length; set block_size to null, or \
                   memory.attention_backend to \"xla\""
                .into(),
        });
    }
    if let Some(cap) = config.model.attn_logit_softcapping {
        found.push(CudnnAttentionBlocker {
            key: "model.attn_logit_softcapping",
            value: cap.to_string(),
            rule: "cuDNN flash attention cannot soft-cap attention scores (its sliding window \
                   and scale it can); set model.attn_logit_softcapping to null, or \
                   memory.attention_backend to \"auto\" or \"xla\" for composed attention"
                .into(),
        });
    }
    let head_dim = config.model.head_dim();
    if !head_dim.is_multiple_of(8) || head_dim > CUDNN_MAX_HEAD_DIM {
        found.push(CudnnAttentionBlocker {
            key: "model.head_dim",
            value: head_dim.to_string(),
            rule: format!(
                "cuDNN flash attention takes a head dim that is a multiple of 8 and at most \
                 {CUDNN_MAX_HEAD_DIM}; change model.head_dim (or hidden_dim / num_heads), or set \
                 memory.attention_backend to \"xla\""
            ),
        });
    }
    found
}

/// `memory.attention_backend` = "cudnn" must be able to run. While `runtime.platform` is
/// "auto" the platform is not known yet (auto may pick CUDA), so only the other rules are
/// checked; once the platform is resolved (`train::open_engine`) the config is validated
/// again with it.
pub(crate) fn validate_attention_backend(config: &super::Config, c: &mut Checks) {
    if config.memory.attention_backend != AttentionBackend::Cudnn {
        return;
    }
    let platform_unresolved = config.runtime.platform == super::Platform::Auto;
    for blocker in cudnn_attention_blockers(config) {
        if platform_unresolved && blocker.key == "runtime.platform" {
            continue;
        }
        c.conflict(
            "memory.attention_backend",
            "\"cudnn\"",
            blocker.key,
            blocker.value,
            blocker.rule,
        );
    }
}
