//! Generation with an on-device KV cache, and perplexity evaluation of a checkpoint.
//!
//! [`LoadedModel::open`] reads a checkpoint (the config from its manifest, the parameters
//! converted to the compute dtype) onto one device. [`LoadedModel::generate_streaming`]
//! then runs two compiled programs:
//!
//! - **prefill** writes the keys and values of the prompts into the cache, `chunk_size`
//!   tokens (`sequence.chunk_size`) per call;
//! - **decode** reads each row's current token from a token history, writes its keys and
//!   values, computes the logits, picks the next token on the device (greedy argmax, or
//!   temperature / top-k / top-p and an inverse-CDF draw from a `rng_bit_generator` stream
//!   whose `u64[2]` state is an argument) and writes it into the history.
//!
//! The cache (per layer `[B, KV, L, D]`, see [`crate::model::KvCacheShape`]), the token
//! history (`[B, L + 1]`), the slot counter and the random state are device arrays donated
//! from call to call, so every decode step touches the same buffers; the only transfer is the
//! history coming back every few steps (for streaming and the stop test).
//! Prompts of different lengths are **left-padded** to the longest: each row's padding slots
//! are masked out of attention and its positions count from its own first token, so a row
//! decodes as it would alone. The first new token comes from the decode step fed with the
//! last prompt token, so sampling lives in one program. With `memory.kv_cache_fp8` the cache
//! is f8E4M3FN with one f32 scale per (row, slot, KV head) (see [`crate::model`]'s `decode`).
//!
//! [`LoadedModel::evaluate`] reports mean loss and perplexity over a token stream.

mod error;
mod loaded;
mod options;
mod perplexity;
mod programs;
mod sampling;
mod session;
mod text;

pub use error::GenerateError;
pub use loaded::{find_checkpoint, open_engine, LoadedModel, RuntimeSelection, LATEST_CHECKPOINT};
pub use options::SamplingOptions;
pub use perplexity::{EvalWindows, EVAL_BATCH};
pub use programs::{build_decode, build_eval, build_init_cache, build_prefill, DecodeMode};
pub use sampling::{keep_mask, sample, Bisection, SamplingParams};
pub use session::{rng_state, BatchLayout, GenerationTimings};
pub use text::{
    document_stream, encode, eos_id, find_tokenizer, read_documents, TextStream, TOKENIZER_FILE,
};
