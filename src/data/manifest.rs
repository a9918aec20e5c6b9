//! The manifest of a prepared dataset (`manifest.json`): what was tokenized, how, and checksums.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::write_file_atomic;
use super::error::{DataError, Result};
use super::reader::SourceStats;

/// File name of the manifest inside a dataset directory; written last, so its presence marks
/// a complete dataset.
pub const MANIFEST_FILE: &str = "manifest.json";

/// File name of the tokenizer a prepared dataset ships (the one that made its tokens).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Whether `dir` is a prepared dataset: a directory whose `manifest.json` is a JSON object
/// with the `format_version` and `tokenizer_hash` that `vishwam data prepare` and `merge` write
/// (any version: reading a dataset of another version is then a clear error, not text).
pub fn is_prepared_dataset(dir: &Path) -> bool {
    let path = dir.join(MANIFEST_FILE);
    if !path.is_file() {
        return false;
    }
    let Ok(bytes) = std::fs::read(&path) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("format_version").is_some() && v.get("tokenizer_hash").is_some())
}
/// Version of the on-disk layout (shard headers, index, manifest fields).
pub const FORMAT_VERSION: u32 = 1;

/// How token ids are stored in shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// Two bytes per token: vocabularies of at most 65536 ids.
    U16,
    /// Four bytes per token.
    U32,
}

impl TokenDtype {
    /// The narrowest dtype holding every id below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    /// Bytes per stored token.
    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

/// One shard: a tokens file, its document index and (for merged datasets) document origins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Tokens file name, relative to the dataset directory.
    pub tokens_file: String,
    /// Index file name (document start offsets), relative to the dataset directory.
    pub index_file: String,
    /// Origin file name (component id per document), only in merged datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_file: Option<String>,
    /// Documents in the shard.
    pub documents: u64,
    /// Tokens in the shard.
    pub tokens: u64,
    /// Hex sha256 of the tokens file.
    pub tokens_sha256: String,
    /// Hex sha256 of the index file.
    pub index_sha256: String,
    /// Hex sha256 of the origin file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_sha256: Option<String>,
}

/// Where the documents came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Human-readable description of the sources.
    pub description: String,
    /// Fingerprint of the sources (spec, file paths, sizes, times) or of the merge inputs.
    pub fingerprint: String,
    /// What reading the sources counted (absent for merged datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<SourceStats>,
}

/// One input of a merged dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The input dataset's directory.
    pub path: PathBuf,
    /// Requested share of the merged tokens.
    pub weight: f64,
    /// Tokens of the input dataset.
    pub input_tokens: u64,
    /// Documents taken from it (repeats counted).
    pub documents: u64,
    /// Tokens taken from it (repeats counted).
    pub tokens: u64,
}

/// How a merged dataset was mixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// "weighted", "equal" or "proportional".
    pub strategy: String,
    /// Seed of the document draw.
    pub seed: u64,
    /// The inputs, in component-id order.
    pub components: Vec<ComponentRecord>,
}

/// Contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Hash of the tokenizer that produced the tokens ([`super::TextTokenizer::hash`]).
    pub tokenizer_hash: String,
    /// Where that tokenizer came from.
    pub tokenizer_origin: String,
    /// The tokenizer's vocabulary size; every stored id is below it.
    pub vocab_size: usize,
    /// Stored token width.
    pub dtype: TokenDtype,
    /// Documents in the dataset.
    pub documents: u64,
    /// Tokens in the dataset (no separators; EOS is added when windows are cut).
    pub tokens: u64,
    /// The shards in order.
    pub shards: Vec<ShardEntry>,
    /// Where the text came from.
    pub source: SourceRecord,
    /// Present for datasets made by merging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRecord>,
}

impl Manifest {
    /// Reads `dir/manifest.json`, checking its format version.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Err(DataError::Manifest {
                path,
                message: "not found: this directory is not a prepared dataset (or preparing it \
                          was interrupted); run `vishwam data prepare`"
                    .into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| DataError::io("reading", &path, e))?;
        let version: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| DataError::Manifest {
                path: path.clone(),
                message: format!("not valid JSON: {e}"),
            })?;
        let found = version.get("format_version").and_then(|v| v.as_u64());
        if found != Some(u64::from(FORMAT_VERSION)) {
            return Err(DataError::Manifest {
                path,
                message: format!(
                    "format version {found:?}, but this vishwam reads version {FORMAT_VERSION}; \
                     prepare the dataset again with this version"
                ),
            });
        }
        serde_json::from_value(version).map_err(|e| DataError::Manifest {
            path,
            message: format!("unexpected contents: {e}"),
        })
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| DataError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_file_atomic(&path, &json)
    }
}
