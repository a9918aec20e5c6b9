//! The Llama-style transformer (docs/model.md), written with the hlo tracing API.
//!
//! `params` lists the parameters with their logical axes and initialisation; `forward` traces
//! the blocks; `attention` and `blocked` are the two attention forms; `loss` is the chunked
//! cross-entropy; `projection` routes the block matmuls through plain or FP8 (`fp8`)
//! matmuls. The model never touches the runtime.

mod attention;
mod blocked;
mod forward;
pub mod fp8;
mod loss;
mod params;
mod projection;

pub use attention::{attention, causal_mask};
pub use blocked::blocked_attention;
pub use forward::{head_weight, hidden_states, logits, AttentionKind, ForwardOptions, RngStream};
pub use fp8::{Fp8Formats, Fp8Type};
pub use loss::{default_chunk, masked_ce_sum};
pub use params::{init_params, param_counts, param_specs, Init, ParamSpec};
pub use projection::{
    fp8_amax_name, fp8_probe_name, fp8_stats_type, Projection, ProjectionInput, FP8_FORWARD_ROWS,
    FP8_ROWS, FP8_ROW_COUNT,
};
