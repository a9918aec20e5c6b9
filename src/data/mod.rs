//! Data pipeline: tokenizers, sources, token shards, packing, merging, background loading.
//!
//! The path from text to a host batch:
//! [`SourceSpec`] (files, directories, globs, JSONL, `brown`) → [`TextTokenizer`]
//! (trained byte-level BPE or any HF `tokenizer.json`) → [`ensure_prepared`] (token shards,
//! index and manifest in a cache directory, rebuilt when stale) → optionally [`merge`]
//! (weighted / equal / proportional mixing) → [`DataLoader`] (packed, random-chunk or
//! document-aware windows, deterministic order, exact resume) → [`Batch`].

mod atomic;
pub mod batch;
pub mod bench;
pub mod brown;
pub mod dataset;
pub mod error;
pub mod fast_bpe;
pub mod loader;
pub mod manifest;
pub mod merge;
pub mod permutation;
pub mod prepare;
pub mod reader;
pub mod shards;
pub mod sources;
pub mod special_tokens;
pub mod text_check;
pub mod tiktoken;
pub mod tokenizer;
pub mod verify;

#[cfg(test)]
mod test_support;

pub use batch::Batch;
pub use brown::BrownFetcher;
pub use dataset::{DatasetKind, Split, TokenDataset, WindowOptions};
pub use error::{DataError, Result};
pub use loader::{DataLoader, LoaderOptions, LoaderState};
pub use manifest::{Manifest, TokenDtype};
pub use merge::{merge, MergeOptions, MergeStrategy};
pub use prepare::{ensure_prepared, prepare, PrepareOptions, PreparedDataset};
pub use sources::{SourceSpec, TextDocuments};
pub use tokenizer::{SpecialTokenIds, TextTokenizer, TrainOptions};
pub use verify::{verify, VerifyReport};
