//! Tokenizers: train byte-level BPE, load any HF `tokenizer.json`, check special ids and sizes.
//!
//! A tokenizer trained here has exactly three special tokens at ids 0, 1 and 2: by default
//! `<pad>` = 0, `<bos>` = 1, `<eos>` = 2 (see [`SpecialTokenIds::default`]), in the order a
//! config asks for otherwise ([`SpecialTokenIds::placed`]), then the 256 byte symbols, then
//! the learned merges. Decoding the encoding of any text gives the text
//! back byte for byte (no prefix space is added, nothing is normalized).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use super::atomic::write_file_atomic;
use super::error::{DataError, Result};
use super::fast_bpe::ByteLevelBpe;
pub use super::special_tokens::SpecialTokenIds;

/// Text of the padding token of tokenizers trained by vishwam (id 0).
pub const PAD_TOKEN: &str = "<pad>";
/// Text of the beginning-of-sequence token of tokenizers trained by vishwam (id 1).
pub const BOS_TOKEN: &str = "<bos>";
/// Text of the end-of-sequence token of tokenizers trained by vishwam (id 2).
pub const EOS_TOKEN: &str = "<eos>";

/// Smallest trainable vocabulary: the three special tokens plus the 256 byte symbols.
pub const MIN_TRAINED_VOCAB: usize = 3 + 256;

/// Options of [`TextTokenizer::train_byte_level_bpe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Total vocabulary size, special tokens and the 256 byte symbols included.
    pub vocab_size: usize,
    /// A pair must occur at least this often to be merged.
    pub min_frequency: u64,
    /// Show the library's progress bars.
    pub show_progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            vocab_size: 32_768,
            min_frequency: 2,
            show_progress: false,
        }
    }
}

/// An HF tokenizer with its stable hash; every id it produces is below [`Self::vocab_size`].
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    hash: String,
    id_bound: usize,
    origin: String,
    fast_path: Option<Arc<ByteLevelBpe>>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.id_bound)
            .field("hash", &self.hash)
            .field("fast_path", &self.fast_path.is_some())
            .finish()
    }
}

impl TextTokenizer {
    /// Loads an HF `tokenizer.json` (any model type). Truncation and padding stored in the
    /// file are switched off, so no text is ever cut or padded behind the pipeline's back.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(DataError::MissingPath { path: path.into() });
        }
        let json = std::fs::read_to_string(path).map_err(|e| DataError::io("reading", path, e))?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// A tokenizer by name (`o200k_base`, see [`super::tiktoken::NAMED_TOKENIZERS`]) or the
    /// HF `tokenizer.json` at that path: the value of `data.tokenizer` and `--tokenizer`.
    pub fn load(name_or_path: &str) -> Result<Self> {
        match super::tiktoken::named_tokenizer(name_or_path) {
            Some(named) => named,
            None => Self::from_file(Path::new(name_or_path)),
        }
    }

    /// Parses the text of a `tokenizer.json`; `origin` names it in messages.
    pub fn from_json(json: &str, origin: &str) -> Result<Self> {
        let context = || format!("loading {origin}");
        let mut inner: Tokenizer = json
            .parse()
            .map_err(|e| DataError::tokenizer(context(), e))?;
        if inner.get_truncation().is_some() {
            tracing::info!("{origin}: switched off the truncation stored in the tokenizer");
        }
        if inner.get_padding().is_some() {
            tracing::info!("{origin}: switched off the padding stored in the tokenizer");
        }
        inner
            .with_truncation(None)
            .map_err(|e| DataError::tokenizer(context(), e))?;
        inner.with_padding(None);
        // Text is text: a document holding `<|endoftext|>` or `<eos>` is encoded as those
        // characters, never as the special token (tiktoken's `encode_ordinary`). The flag is
        // not part of the saved JSON, so the hash is unchanged.
        inner.set_encode_special_tokens(true);
        let canonical_source = inner
            .to_string(false)
            .map_err(|e| DataError::tokenizer(context(), e))?;
        let hash = canonical_json_hash(&canonical_source)
            .map_err(|e| DataError::tokenizer(context(), e))?;
        let id_bound = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let fast_path = ByteLevelBpe::for_tokenizer(&inner, &hash).map(Arc::new);
        Ok(TextTokenizer {
            inner,
            hash,
            id_bound,
            origin: origin.to_string(),
            fast_path,
        })
    }

    /// Trains byte-level BPE on `documents` with `<pad>`, `<bos>`, `<eos>` at ids 0, 1, 2.
    ///
    /// The documents are streamed (word counts are kept, not the text). The first error of
    /// the iterator stops training and is returned.
    pub fn train_byte_level_bpe<I>(documents: I, options: &TrainOptions) -> Result<Self>
    where
        I: Iterator<Item = Result<String>> + Send,
    {
        Self::train_byte_level_bpe_with_specials(documents, options, &SpecialTokenIds::default())
    }

    /// [`Self::train_byte_level_bpe`] with `<pad>`, `<bos>` and `<eos>` at the ids of
    /// `specials`, which must be 0, 1 and 2 in some order ([`SpecialTokenIds::placed`]).
    pub fn train_byte_level_bpe_with_specials<I>(
        documents: I,
        options: &TrainOptions,
        specials: &SpecialTokenIds,
    ) -> Result<Self>
    where
        I: Iterator<Item = Result<String>> + Send,
    {
        let in_id_order = specials.trained_order()?;
        if options.vocab_size < MIN_TRAINED_VOCAB {
            return Err(DataError::InvalidOption {
                name: "vocab_size",
                value: options.vocab_size.to_string(),
                expected: format!(
                    "at least {MIN_TRAINED_VOCAB} (3 special tokens + 256 byte symbols)"
                ),
            });
        }
        let added = in_id_order
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(options.vocab_size)
            .min_frequency(options.min_frequency)
            .show_progress(options.show_progress)
            .special_tokens(added)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let byte_level = ByteLevel::new(false, true, true);
        let mut builder_output = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(|e| DataError::tokenizer("building the BPE trainer", e))?;

        let first_error: Mutex<Option<DataError>> = Mutex::new(None);
        let texts = documents.map_while(|doc| match doc {
            Ok(text) => Some(text),
            Err(e) => {
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(e);
                }
                None
            }
        });
        builder_output
            .train(&mut trainer, texts)
            .map_err(|e| DataError::tokenizer("training byte-level BPE", e))?;
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        let json = builder_output
            .to_string(false)
            .map_err(|e| DataError::tokenizer("serializing the trained tokenizer", e))?;
        let trained = Self::from_json(&json, "trained byte-level BPE")?;
        trained.check_special_ids(specials)?;
        Ok(trained)
    }

    /// Writes the tokenizer as an HF `tokenizer.json` (pretty JSON, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| DataError::tokenizer(format!("saving {}", path.display()), e))?;
        write_file_atomic(path, json.as_bytes())
    }

    /// One past the largest token id (added tokens included); the smallest valid vocab_size.
    pub fn vocab_size(&self) -> usize {
        self.id_bound
    }

    /// Hex sha256 of the tokenizer's canonical JSON (sorted keys): stable across saves.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Where the tokenizer came from (a path, or "trained byte-level BPE").
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The wrapped HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, without any special token added, and with special tokens'
    /// texts (`<eos>`, `<|endoftext|>`) in `text` encoded as ordinary text, never as their ids.
    ///
    /// Plain byte-level BPE tokenizers take a lean path with the same ids
    /// ([`super::fast_bpe`]); any other tokenizer goes through the `tokenizers` pipeline.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(fast) = &self.fast_path {
            let mut ids = Vec::with_capacity(text.len() / 3);
            if fast
                .encode_into(&self.inner, text, &mut ids)
                .map_err(|e| DataError::tokenizer("encoding", e))?
            {
                return Ok(ids);
            }
        }
        self.encode_with_library(text)
    }

    /// Token ids of `text` through the full `tokenizers` pipeline (no fast path).
    pub fn encode_with_library(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| DataError::tokenizer("encoding", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Whether [`Self::encode`] uses the byte-level BPE fast path.
    pub fn has_fast_path(&self) -> bool {
        self.fast_path.is_some()
    }

    /// Token ids of each text, encoded in parallel on the current rayon pool.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.par_iter().map(|text| self.encode(text)).collect()
    }

    /// Text of `ids`; with `skip_special_tokens` the special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| DataError::tokenizer("decoding", e))
    }

    /// Checks that a model vocabulary of `model_vocab` rows can embed every token id.
    ///
    /// A larger `model_vocab` (padded, e.g. to a multiple of 128) is fine; a smaller one is not.
    pub fn check_model_vocab(&self, model_vocab: usize) -> Result<()> {
        if model_vocab < self.id_bound {
            return Err(DataError::VocabTooSmall {
                model_vocab,
                tokenizer_vocab: self.id_bound,
            });
        }
        Ok(())
    }
}

/// Hex sha256 of `json` re-printed canonically: objects with sorted keys, no whitespace.
pub fn canonical_json_hash(json: &str) -> std::result::Result<String, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let mut canonical = String::with_capacity(json.len());
    write_canonical(&value, &mut canonical)?;
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

fn write_canonical(
    value: &serde_json::Value,
    out: &mut String,
) -> std::result::Result<(), serde_json::Error> {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key)?);
                out.push(':');
                write_canonical(&map[key.as_str()], out)?;
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{random_text, trained};
    use rand::SeedableRng;

    #[test]
    fn special_token_texts_in_a_document_are_text() {
        let tokenizer = trained(400);
        let hash_before = tokenizer.hash().to_string();
        let text = "one <eos> two <bos><pad> three";
        for ids in [
            tokenizer.encode(text).unwrap(),
            tokenizer.encode_with_library(text).unwrap(),
        ] {
            assert!(ids.iter().all(|&id| id > 2), "{ids:?}");
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        }
        // Saved and loaded again: the same hash and the same behaviour.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tokenizer.save(&path).unwrap();
        let loaded = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.hash(), hash_before);
        assert!(loaded.encode(text).unwrap().iter().all(|&id| id > 2));
    }

    #[test]
    fn trained_tokenizer_has_fixed_special_ids_and_round_trips() {
        let tokenizer = trained(400);
        assert_eq!(tokenizer.vocab_size(), 400);
        assert!(tokenizer.has_fast_path());
        assert_eq!(
            tokenizer.special_tokens(),
            vec![
                ("<pad>".to_string(), 0),
                ("<bos>".to_string(), 1),
                ("<eos>".to_string(), 2)
            ]
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        let text = format!("{}  Ünïcode ✓ tabs\tand\r\n{{}}", random_text(&mut rng, 50));
        let ids = tokenizer.encode(&text).unwrap();
        assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
        assert!(
            ids.iter().all(|&id| id > 2),
            "no special token in plain text"
        );
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        assert_eq!(tokenizer.encode_with_library(&text).unwrap(), ids);
        let batch = tokenizer.encode_batch(&[text.as_str(), "kalo mi"]).unwrap();
        assert_eq!(batch[0], ids);
    }

    #[test]
    fn save_load_keeps_hash_and_ids() {
        let tokenizer = trained(300);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tokenizer.save(&path).unwrap();
        let loaded = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.hash(), tokenizer.hash());
        assert_eq!(loaded.vocab_size(), 300);
        let text = "kalo miter, sovel!";
        assert_eq!(
            loaded.encode(text).unwrap(),
            tokenizer.encode(text).unwrap()
        );
        let other = trained(320);
        assert_ne!(other.hash(), tokenizer.hash());
    }

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace() {
        let a = canonical_json_hash(r#"{"b": [1, {"y": 2, "x": 1}], "a": "s"}"#).unwrap();
        let b = canonical_json_hash(r#"{"a":"s","b":[1,{"x":1,"y":2}]}"#).unwrap();
        let c = canonical_json_hash(r#"{"a":"s","b":[{"x":1,"y":2},1]}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn loads_other_hf_tokenizers_without_truncating() {
        let json = r#"{
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 0},
            "padding": null,
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "</s>": 1, "hello": 2, "world": 3, "[UNK]": 4}, "unk_token": "[UNK]"}
        }"#;
        let tokenizer = TextTokenizer::from_json(json, "word-level test").unwrap();
        assert!(!tokenizer.has_fast_path());
        assert_eq!(tokenizer.vocab_size(), 5);
        assert_eq!(
            tokenizer.encode("Hello WORLD there").unwrap(),
            vec![2, 3, 4]
        );
        let ids = tokenizer.conventional_special_ids().unwrap();
        assert_eq!(
            ids,
            SpecialTokenIds {
                pad: 0,
                bos: 1,
                eos: 1
            }
        );
        tokenizer.check_special_ids(&ids).unwrap();
    }

    #[test]
    fn model_vocab_may_be_padded_but_not_smaller() {
        let tokenizer = trained(300);
        tokenizer.check_model_vocab(300).unwrap();
        tokenizer.check_model_vocab(384).unwrap();
        let err = tokenizer.check_model_vocab(299).unwrap_err();
        assert!(matches!(
            err,
            DataError::VocabTooSmall {
                model_vocab: 299,
                tokenizer_vocab: 300
            }
        ));
    }

    #[test]
    fn too_small_vocab_and_bad_files_are_errors() {
        let options = TrainOptions {
            vocab_size: 100,
            ..Default::default()
        };
        let err = TextTokenizer::train_byte_level_bpe(std::iter::empty(), &options).unwrap_err();
        assert!(matches!(err, DataError::InvalidOption { .. }));
        let dir = tempfile::tempdir().unwrap();
        let missing = TextTokenizer::from_file(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, DataError::MissingPath { .. }));
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"model\": 3}").unwrap();
        let err = TextTokenizer::from_file(&garbage).unwrap_err();
        assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
    }
}
