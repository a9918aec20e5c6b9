//! Text in and out: the run's tokenizer, EOS, evaluation streams from text or files, and a
//! decoder that turns tokens into text as they arrive.

use super::GenerateError;
use crate::config::Config;
use crate::data::sources::InvalidUtf8;
use crate::data::{reader, BrownFetcher, SourceSpec, TextTokenizer};
use std::path::{Path, PathBuf};

/// The file `vishwam train` saves the run's tokenizer as, in its output directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The tokenizer of the run that wrote `checkpoint_dir`: `tokenizer.json` in the checkpoint
/// directory or above it (`<output_dir>/checkpoints/step_N` → `<output_dir>/tokenizer.json`),
/// else the config's `data.tokenizer` (a path, or a name such as `o200k_base` that
/// [`TextTokenizer::load`] takes).
pub fn find_tokenizer(checkpoint_dir: &Path, config: &Config) -> Result<PathBuf, GenerateError> {
    let mut looked = Vec::new();
    for dir in checkpoint_dir.ancestors().take(3) {
        let candidate = dir.join(TOKENIZER_FILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    if let Some(path) = &config.data.tokenizer {
        let named = crate::data::tiktoken::NAMED_TOKENIZERS.contains(&path.as_str());
        if named || Path::new(path).is_file() {
            return Ok(PathBuf::from(path));
        }
        looked.push(path.clone());
    }
    Err(GenerateError::CheckpointNotFound {
        path: checkpoint_dir.display().to_string(),
        detail: format!(
            "no tokenizer found (looked for {}); pass --tokenizer PATH (or a name: o200k_base)",
            looked.join(", ")
        ),
    })
}

/// The EOS id: `sequence.eos_token_id`, else the tokenizer's conventional end token.
pub fn eos_id(config: &Config, tokenizer: &TextTokenizer) -> Option<i32> {
    config
        .sequence
        .eos_token_id
        .or_else(|| tokenizer.conventional_special_ids().map(|s| s.eos))
        .map(|id| id as i32)
}

fn data_error(e: crate::data::DataError) -> GenerateError {
    GenerateError::Text(e.to_string())
}

/// `text` as token ids.
pub fn encode(tokenizer: &TextTokenizer, text: &str) -> Result<Vec<i32>, GenerateError> {
    let ids = tokenizer.encode(text).map_err(data_error)?;
    Ok(ids.into_iter().map(|t| t as i32).collect())
}

/// Documents framed as training frames them (`tokens eos`), joined into one stream.
pub fn document_stream(
    tokenizer: &TextTokenizer,
    documents: impl IntoIterator<Item = String>,
    eos: Option<i32>,
) -> Result<Vec<i32>, GenerateError> {
    let mut stream = Vec::new();
    for doc in documents {
        stream.extend(encode(tokenizer, &doc)?);
        stream.extend(eos);
    }
    Ok(stream)
}

/// The documents of files, directories or globs (`.jsonl`/`.ndjson`: the `text_field` of
/// each record; `.csv`: its `text_field` column, one document per row; other files: one
/// document each), with bytes that are not UTF-8 handled as `invalid_utf8` says.
pub fn read_documents(
    paths: &[String],
    text_field: &str,
    invalid_utf8: InvalidUtf8,
) -> Result<Vec<String>, GenerateError> {
    let spec = SourceSpec {
        text_field: text_field.to_string(),
        invalid_utf8,
        ..SourceSpec::from_paths(paths.iter().cloned())
    };
    let resolved = spec.resolve(&BrownFetcher::default()).map_err(data_error)?;
    reader::documents(&resolved)
        .collect::<Result<Vec<String>, _>>()
        .map_err(data_error)
}

/// Turns tokens into text as they arrive. Byte-level tokens may end inside a UTF-8
/// character; text is held back until the character is complete.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    shown: String,
}

impl<'a> TextStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a TextTokenizer) -> TextStream<'a> {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            shown: String::new(),
        }
    }

    /// Adds a token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: i32) -> Result<String, GenerateError> {
        self.ids.push(id as u32);
        let text = self.tokenizer.decode(&self.ids, true).map_err(data_error)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = match text.strip_prefix(self.shown.as_str()) {
            Some(rest) => rest.to_string(),
            // Decoding changed earlier text (rare with merges across tokens): show it whole.
            None => format!("\n{text}"),
        };
        self.shown = text;
        Ok(new)
    }

    /// All the text so far, incomplete characters included.
    pub fn text(&self) -> Result<String, GenerateError> {
        self.tokenizer.decode(&self.ids, true).map_err(data_error)
    }
}
