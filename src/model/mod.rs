//! The Llama-style transformer (docs/model.md), written with the hlo tracing API.
//!
//! `params` lists the parameters with their logical axes and initialisation; `forward` traces
//! the blocks; `attention` and `blocked` are the two composed attention forms and
//! `cudnn_attention` the fused CUDA kernels; `sharded_attention` runs either per device on
//! its batch and head shards in a Shardy manual computation; `moe` and `moe_routing` are the
//! Mixture-of-Experts feed-forward; `loss` is the chunked cross-entropy and `distill_loss`
//! the chunked teacher-student KL with hidden-state distances; `objective` assembles the
//! training objective (forward pass, head, masked cross-entropy, MoE aux term) once, for
//! training, evaluation, generation's scoring and `verify`; `projection` routes the block
//! matmuls through plain or FP8 (`fp8`) matmuls; `decode` is the forward pass over a KV cache
//! for generation. The model never touches the runtime.

mod attention;
mod blocked;
pub mod cudnn_attention;
mod decode;
mod distill_loss;
mod forward;
pub mod fp8;
pub mod hf;
mod loss;
mod moe;
mod moe_routing;
mod objective;
mod params;
mod projection;
pub mod sharded_attention;

pub use attention::{attention, attention_with, causal_mask, window_mask, AttentionSpec};
pub use blocked::{blocked_attention, blocked_attention_with};
pub use cudnn_attention::{cudnn_attention, cudnn_attention_with};
pub use decode::{
    cached_attention, cached_attention_with, hidden_states_cached, quantize_fp8, KvCacheFormat,
    KvCacheShape, LayerCache, FP8_E4M3_MAX,
};
pub use distill_loss::{
    masked_ce_kl_sums, masked_ce_kl_sums_capped, masked_hidden_distance_sum, DistillHeads,
};
pub use forward::{
    embed, head_weight, hidden_states, hidden_states_with_layers, hidden_states_with_moe, logits,
    softcap_logits, AttentionKind, ForwardOptions, ForwardOutputs, RngStream,
};
pub use fp8::{Fp8Formats, Fp8Type};
pub use loss::{default_chunk, default_chunk_on, masked_ce_sum, RowStats};
pub use moe::{
    capacity as moe_capacity, moe_ffn, param_names as moe_param_names, MoeParams, MoeStats,
};
pub use moe_routing::{combine, dispatch, exclusive_cumsum, gather_rows, route, Routing};
pub use objective::{lm_pass, moe_aux_term, LmPass};
pub use params::{init_param, init_params, param_counts, param_specs, Init, ParamSpec};
pub use projection::{
    fp8_amax_name, fp8_probe_name, fp8_stats_type, Projection, ProjectionInput, FP8_FORWARD_ROWS,
    FP8_ROWS, FP8_ROW_COUNT,
};
pub use sharded_attention::{per_shard_attention, AttentionShards, PerShardAttention};
