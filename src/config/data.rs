//! Sections `data` (source, tokenizer, loader), `datasets` (mixtures) and `sequence`.

use serde::ser::Serializer;
use serde::Serialize;
use serde_json::Value;

use super::checks::Checks;
use super::error::{show, ConfigIssue};
use super::reader::{config_enum, ObjectReader};

config_enum! {
    /// How source files are read.
    pub enum DataFormat {
        /// Plain text; each file is one document.
        #[default]
        Text => "text",
        /// One JSON object per line; the document is the `text_field` string.
        Jsonl => "jsonl",
        /// CSV with a header row; each row's `text_field` column is one document.
        Csv => "csv",
    }
}

config_enum! {
    /// What happens to source bytes that are not valid UTF-8.
    pub enum InvalidUtf8Policy {
        /// An error naming the file and the byte offset.
        #[default]
        Error => "error",
        /// Each invalid sequence becomes U+FFFD (counted and warned about per file).
        Replace => "replace",
    }
}

config_enum! {
    /// How token streams are cut into training windows.
    pub enum DatasetType {
        /// Documents joined with EOS and cut into consecutive windows.
        #[default]
        Packed => "packed",
        /// Windows at random offsets of the joined stream.
        RandomChunk => "random_chunk",
        /// No window crosses a document boundary; the rest is padding (masked).
        Document => "document",
    }
}

config_enum! {
    /// How several datasets are mixed.
    pub enum MergeStrategy {
        /// Sampled with the given `weights` (normalised).
        Weighted => "weighted",
        /// Each dataset equally often.
        Equal => "equal",
        /// Each dataset in proportion to its token count.
        #[default]
        Proportional => "proportional",
    }
}

/// Where the training text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The built-in Brown corpus (fetched on first use).
    Brown,
    /// Files, directories and globs.
    Paths(Vec<String>),
}

impl Serialize for DataSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DataSource::Brown => serializer.serialize_str("brown"),
            DataSource::Paths(paths) => paths.serialize(serializer),
        }
    }
}

/// Section `data`: one source of text, its tokenizer and the background loader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataConfig {
    /// "brown", or a path / glob / directory, or a list of them. Default null = "brown", unless
    /// `datasets.paths` is given (then the mixture is the training data and this must be null).
    /// A directory with a prepared-dataset manifest (`vishwam data prepare` / `merge`) is a
    /// dataset: its shards are trained on as they are.
    pub source: Option<DataSource>,
    /// File format of the source: "text", "jsonl" or "csv". Default "text".
    pub format: DataFormat,
    /// JSONL field or CSV column holding the document text. Default "text".
    pub text_field: String,
    /// Source bytes that are not valid UTF-8: "error" or "replace". Default "error".
    pub invalid_utf8: InvalidUtf8Policy,
    /// HF `tokenizer.json` path or "o200k_base" (tiktoken's encoding); null = the tokenizer a
    /// prepared dataset ships, else the built-in byte-level BPE trained on the source with
    /// `model.vocab_size` entries. Default null.
    pub tokenizer: Option<String>,
    /// How windows are cut. Default "packed".
    pub dataset_type: DatasetType,
    /// Fraction of documents held out for validation, in [0, 1). Default 0.05.
    pub val_fraction: f64,
    /// Token-shard cache directory; null = `$VISHWAM_HOME/datasets/cache`. Default null.
    pub cache_dir: Option<String>,
    /// Ready host batches buffered by the loader, >= 1. Default 8.
    pub queue_size: usize,
    /// Loader threads, >= 1. Default 2.
    pub num_workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: None,
            format: DataFormat::Text,
            text_field: "text".to_string(),
            invalid_utf8: InvalidUtf8Policy::Error,
            tokenizer: None,
            dataset_type: DatasetType::Packed,
            val_fraction: 0.05,
            cache_dir: None,
            queue_size: 8,
            num_workers: 2,
        }
    }
}

impl DataConfig {
    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.custom("source", &mut self.source, read_source);
        r.choice("format", &mut self.format);
        r.text("text_field", &mut self.text_field);
        r.choice("invalid_utf8", &mut self.invalid_utf8);
        r.opt_text("tokenizer", &mut self.tokenizer);
        r.choice("dataset_type", &mut self.dataset_type);
        r.number("val_fraction", &mut self.val_fraction);
        r.opt_text("cache_dir", &mut self.cache_dir);
        r.integer("queue_size", &mut self.queue_size, "a positive integer");
        r.integer("num_workers", &mut self.num_workers, "a positive integer");
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        if let Some(DataSource::Paths(paths)) = &self.source {
            for (i, path) in paths.iter().enumerate() {
                c.non_empty(&format!("data.source[{i}]"), path);
            }
        }
        if self.source == Some(DataSource::Brown) && self.format != DataFormat::Text {
            c.conflict(
                "data.source",
                "\"brown\"",
                "data.format",
                format!("\"{}\"", self.format),
                "the built-in Brown corpus is plain text; use format \"text\" or point source at JSONL or CSV files",
            );
        }
        c.non_empty("data.text_field", &self.text_field);
        if let Some(tokenizer) = &self.tokenizer {
            c.non_empty("data.tokenizer", tokenizer);
        }
        c.in_half_open("data.val_fraction", self.val_fraction, 0.0, 1.0);
        if let Some(dir) = &self.cache_dir {
            c.non_empty("data.cache_dir", dir);
        }
        c.positive("data.queue_size", self.queue_size);
        c.positive("data.num_workers", self.num_workers);
    }
}

fn read_source(
    value: &Value,
    path: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Option<DataSource>> {
    let parsed = match value {
        Value::Null => Some(None),
        Value::String(s) if s == "brown" => Some(Some(DataSource::Brown)),
        Value::String(s) => Some(Some(DataSource::Paths(vec![s.clone()]))),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().filter(|s| *s != "brown").map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .map(|paths| Some(DataSource::Paths(paths))),
        _ => None,
    };
    if parsed.is_none() {
        issues.push(ConfigIssue::Invalid {
            key: path.to_string(),
            expected: "null, \"brown\", or a path / glob / directory, or a non-empty list of them \
                       (\"brown\" cannot be part of a list)"
                .into(),
            got: show(value),
        });
    }
    parsed
}

/// Section `datasets`: a mixture of several datasets, used instead of `data.source`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DatasetsConfig {
    /// Dataset paths (prepared token-shard directories or sources as in `data.source`).
    /// Default [] (no mixture).
    pub paths: Vec<String>,
    /// One positive weight per path (normalised to sum 1). Default null.
    pub weights: Option<Vec<f64>>,
    /// Mixing rule; null = "weighted" when `weights` is given, else "proportional". Default null.
    pub merge_strategy: Option<MergeStrategy>,
}

impl DatasetsConfig {
    /// The mixing rule in effect.
    pub fn strategy(&self) -> MergeStrategy {
        match (self.merge_strategy, &self.weights) {
            (Some(strategy), _) => strategy,
            (None, Some(_)) => MergeStrategy::Weighted,
            (None, None) => MergeStrategy::Proportional,
        }
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.custom("paths", &mut self.paths, |value, path, issues| {
            let paths = value.as_array().and_then(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
            });
            if paths.is_none() {
                issues.push(ConfigIssue::Invalid {
                    key: path.to_string(),
                    expected: "a list of path strings".into(),
                    got: show(value),
                });
            }
            paths
        });
        r.custom("weights", &mut self.weights, |value, path, issues| {
            let weights = match value {
                Value::Null => Some(None),
                Value::Array(items) => items
                    .iter()
                    .map(Value::as_f64)
                    .collect::<Option<Vec<f64>>>()
                    .map(Some),
                _ => None,
            };
            if weights.is_none() {
                issues.push(ConfigIssue::Invalid {
                    key: path.to_string(),
                    expected: "null or a list of numbers".into(),
                    got: show(value),
                });
            }
            weights
        });
        r.opt_choice("merge_strategy", &mut self.merge_strategy);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        for (i, path) in self.paths.iter().enumerate() {
            c.non_empty(&format!("datasets.paths[{i}]"), path);
        }
        if let Some(weights) = &self.weights {
            c.ensure(
                weights.len() == self.paths.len(),
                "datasets.weights",
                format!(
                    "one weight per entry of datasets.paths ({})",
                    self.paths.len()
                ),
                format!("{} weights", weights.len()),
            );
            for (i, &w) in weights.iter().enumerate() {
                c.ensure(
                    w.is_finite() && w > 0.0,
                    &format!("datasets.weights[{i}]"),
                    "a number > 0",
                    w,
                );
            }
        }
        match (self.merge_strategy, &self.weights) {
            (Some(MergeStrategy::Weighted), None) if !self.paths.is_empty() => c.fail(
                "datasets.weights",
                "a list of one weight per path when datasets.merge_strategy is \"weighted\"",
                "null",
            ),
            (Some(strategy @ (MergeStrategy::Equal | MergeStrategy::Proportional)), Some(weights)) => c.conflict(
                "datasets.merge_strategy",
                format!("\"{strategy}\""),
                "datasets.weights",
                show(&serde_json::json!(weights)),
                "weights are used only by \"weighted\" merging; remove them or set merge_strategy to \"weighted\"",
            ),
            _ => {}
        }
    }
}

/// Section `sequence`: lengths and special token ids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceConfig {
    /// Tokens per training/eval window and the generation length limit, <= model.max_seq_len.
    /// Default null = model.max_seq_len.
    pub max_length: Option<usize>,
    /// Tokens generated before EOS may end generation, <= max_length. Default 0.
    pub min_length: usize,
    /// Padding id (masked out of the loss); null = the tokenizer's. Default null.
    pub pad_token_id: Option<u32>,
    /// End-of-document id; null = the tokenizer's. Default null.
    pub eos_token_id: Option<u32>,
    /// Beginning-of-document id; null = the tokenizer's (or none). Default null.
    pub bos_token_id: Option<u32>,
    /// Prompt tokens per prefill chunk in generation, >= 1. Default 256.
    pub chunk_size: usize,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            max_length: None,
            min_length: 0,
            pad_token_id: None,
            eos_token_id: None,
            bos_token_id: None,
            chunk_size: 256,
        }
    }
}

impl SequenceConfig {
    /// Tokens per window: `max_length`, or the model's `max_seq_len`.
    pub fn max_length_or(&self, max_seq_len: usize) -> usize {
        self.max_length.unwrap_or(max_seq_len)
    }

    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        const ID: &str = "a token id (a non-negative integer below 2^32)";
        r.opt_integer("max_length", &mut self.max_length, "a positive integer");
        r.integer("min_length", &mut self.min_length, "a non-negative integer");
        r.opt_integer("pad_token_id", &mut self.pad_token_id, ID);
        r.opt_integer("eos_token_id", &mut self.eos_token_id, ID);
        r.opt_integer("bos_token_id", &mut self.bos_token_id, ID);
        r.integer("chunk_size", &mut self.chunk_size, "a positive integer");
    }

    pub(crate) fn validate(&self, max_seq_len: usize, vocab_size: usize, c: &mut Checks) {
        if let Some(max_length) = self.max_length {
            c.positive("sequence.max_length", max_length);
            c.ensure(
                max_length <= max_seq_len,
                "sequence.max_length",
                format!("at most model.max_seq_len ({max_seq_len})"),
                max_length,
            );
        }
        let max_length = self.max_length_or(max_seq_len);
        c.ensure(
            self.min_length <= max_length,
            "sequence.min_length",
            format!("at most the sequence length ({max_length})"),
            self.min_length,
        );
        for (key, id) in [
            ("sequence.pad_token_id", self.pad_token_id),
            ("sequence.eos_token_id", self.eos_token_id),
            ("sequence.bos_token_id", self.bos_token_id),
        ] {
            if let Some(id) = id {
                c.ensure(
                    (id as usize) < vocab_size,
                    key,
                    format!("below model.vocab_size ({vocab_size})"),
                    id,
                );
            }
        }
        c.positive("sequence.chunk_size", self.chunk_size);
    }
}
