//! Data pipeline: tokenizers, sources, token shards, packing, merging, background loading.
//!
//! The path from text to a host batch:
//! [`SourceSpec`] (files, directories, globs, JSONL, CSV, `brown`; every byte checked by
//! [`text_check`]: binary files and, by default, invalid UTF-8 are errors) → [`TextTokenizer`]
//! (trained byte-level BPE, any HF `tokenizer.json`, or tiktoken's `o200k_base` by name,
//! [`tiktoken`]) → [`ensure_prepared`] (token shards, index, manifest and the tokenizer's
//! `tokenizer.json` in a cache directory, rebuilt when stale) → optionally [`merge`]
//! (weighted / equal / proportional mixing) → [`DataLoader`] (packed, random-chunk or
//! document-aware windows, deterministic order, exact resume) → [`Batch`]. A prepared dataset
//! directory ([`manifest::is_prepared_dataset`]) is a training input on its own and never a
//! text source.

pub mod atomic;
pub mod batch;
pub mod bench;
pub mod brown;
mod csv_source;
pub mod dataset;
pub mod error;
pub mod fast_bpe;
pub mod loader;
pub mod manifest;
pub mod merge;
pub mod permutation;
pub mod prepare;
pub mod process_slice;
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
