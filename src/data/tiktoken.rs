//! tiktoken's `o200k_base` encoding (Blues-01's tokenizer) as an HF tokenizer.
//!
//! The ranks come from the `tiktoken-rs` crate, which bundles OpenAI's `o200k_base.tiktoken`
//! file (nothing is downloaded). They are converted the way transformers converts tiktoken
//! files: the vocabulary is each token's bytes in GPT-2's byte-to-character map at its rank,
//! and every split of a token into two tokens is a merge, ordered by the rank of the merged
//! token, so BPE merges the lowest-ranked pair first exactly as tiktoken does; a piece that
//! is a token as a whole is taken as it is (`ignore_merges`), as tiktoken does. Pieces are cut
//! by tiktoken's own regular expression. The tests compare the ids with `tiktoken-rs`.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::error::{DataError, Result};
use super::fast_bpe::byte_level_chars;
use super::tokenizer::TextTokenizer;

/// The name of tiktoken's `o200k_base` encoding (config `data.tokenizer = "o200k_base"`).
pub const O200K_BASE: &str = "o200k_base";

/// Tokenizers available by name instead of a `tokenizer.json` path.
pub const NAMED_TOKENIZERS: &[&str] = &[O200K_BASE];

/// `<|endoftext|>` in `o200k_base`: its end-of-text token (vishwam's pad, bos and eos).
pub const O200K_ENDOFTEXT: u32 = 199_999;

/// `<|endofprompt|>` in `o200k_base`.
pub const O200K_ENDOFPROMPT: u32 = 200_018;

/// One past the largest id of `o200k_base`: the smallest `model.vocab_size` that embeds it.
pub const O200K_VOCAB: usize = 200_019;

/// The tokenizer registered under `name`, if any ([`NAMED_TOKENIZERS`]).
pub fn named_tokenizer(name: &str) -> Option<Result<TextTokenizer>> {
    (name == O200K_BASE).then(o200k_base)
}

/// tiktoken's `o200k_base` (built once per process; about a second).
pub fn o200k_base() -> Result<TextTokenizer> {
    static BUILT: OnceLock<std::result::Result<TextTokenizer, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let json = o200k_base_json().map_err(|e| e.to_string())?;
            TextTokenizer::from_json(&json, O200K_BASE).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| DataError::Tokenizer {
            context: format!("building {O200K_BASE}"),
            message,
        })
}

/// Token bytes by rank of `o200k_base`'s ordinary tokens, from the bundled rank file.
pub fn o200k_base_ranks() -> Result<Vec<(Vec<u8>, u32)>> {
    let bpe = tiktoken_rs::o200k_base()
        .map_err(|e| DataError::tokenizer(format!("loading {O200K_BASE}"), e))?;
    let mut ranks = Vec::with_capacity(O200K_VOCAB);
    for rank in 0..O200K_VOCAB as u32 {
        if rank == O200K_ENDOFTEXT || rank == O200K_ENDOFPROMPT {
            continue;
        }
        // Ids without a token (199998 and 200000..200017) are unused in o200k_base.
        if let Ok(bytes) = bpe.decode_bytes(&[rank]) {
            ranks.push((bytes, rank));
        }
    }
    Ok(ranks)
}

/// The `tokenizer.json` text of `o200k_base`.
fn o200k_base_json() -> Result<String> {
    let ranks = o200k_base_ranks()?;
    let chars = byte_level_chars();
    let as_chars = |bytes: &[u8]| -> String { bytes.iter().map(|&b| chars[b as usize]).collect() };
    let by_bytes: HashMap<&[u8], u32> = ranks.iter().map(|(b, r)| (b.as_slice(), *r)).collect();
    let mut merges: Vec<(u32, u32, u32, String, String)> = Vec::new();
    for (bytes, rank) in &ranks {
        for cut in 1..bytes.len() {
            let (left, right) = bytes.split_at(cut);
            if let (Some(&l), Some(&r)) = (by_bytes.get(left), by_bytes.get(right)) {
                merges.push((*rank, l, r, as_chars(left), as_chars(right)));
            }
        }
    }
    merges.sort_unstable_by_key(|m| (m.0, m.1, m.2));
    let mut vocab = serde_json::Map::with_capacity(ranks.len());
    for (bytes, rank) in &ranks {
        vocab.insert(as_chars(bytes), (*rank).into());
    }
    // The special tokens are in the model's vocabulary too, so they keep their ids (added
    // tokens missing from it would be numbered after it).
    vocab.insert("<|endoftext|>".into(), O200K_ENDOFTEXT.into());
    vocab.insert("<|endofprompt|>".into(), O200K_ENDOFPROMPT.into());
    // The unused ids get names (as o200k_harmony names them) so the vocabulary has no holes,
    // which the `tokenizers` library warns about on stdout. The pre-tokenizer splits such a
    // name into several pieces, so text never encodes to them.
    let ordinary_end = ranks.iter().map(|(_, r)| r + 1).max().unwrap_or(0);
    for id in ordinary_end..O200K_VOCAB as u32 {
        if id != O200K_ENDOFTEXT && id != O200K_ENDOFPROMPT {
            vocab.insert(format!("<|reserved_{id}|>"), id.into());
        }
    }
    let merges: Vec<serde_json::Value> = merges
        .into_iter()
        .map(|(_, _, _, l, r)| serde_json::json!([l, r]))
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(O200K_ENDOFTEXT, "<|endoftext|>"),
                         special(O200K_ENDOFPROMPT, "<|endofprompt|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tiktoken_rs::O200K_BASE_PAT_STR},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": vocab, "merges": merges}
    });
    serde_json::to_string(&json).map_err(|e| DataError::tokenizer("serializing o200k_base", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use sha2::Digest;

    fn rank_of(ranks: &[(Vec<u8>, u32)], text: &str) -> u32 {
        ranks
            .iter()
            .find(|(b, _)| b.as_slice() == text.as_bytes())
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("{text:?} is not one token"))
    }

    #[test]
    fn known_o200k_base_ids() {
        let tok = o200k_base().unwrap();
        assert_eq!(tok.vocab_size(), O200K_VOCAB);
        // Published o200k_base ids (tiktoken): "hello world" -> [24912, 2375].
        assert_eq!(tok.encode("hello world").unwrap(), vec![24912, 2375]);
        // The bundled rank file, read on its own: single-token strings are their rank.
        let ranks = o200k_base_ranks().unwrap();
        assert_eq!(ranks.len(), 199_998);
        for piece in ["hello", " world", "!", " the", "\n", " 123", "123"] {
            if let Some((_, r)) = ranks.iter().find(|(b, _)| b.as_slice() == piece.as_bytes()) {
                assert_eq!(tok.encode(piece).unwrap(), vec![*r], "{piece:?}");
            }
        }
        assert_eq!(
            tok.encode("hello world").unwrap(),
            vec![rank_of(&ranks, "hello"), rank_of(&ranks, " world")]
        );
        let ids = tok.conventional_special_ids().unwrap();
        assert_eq!(
            (ids.pad, ids.bos, ids.eos),
            (O200K_ENDOFTEXT, O200K_ENDOFTEXT, O200K_ENDOFTEXT)
        );
        tok.check_special_ids(&ids).unwrap();
        assert_eq!(
            tok.decode(&[24912, 2375, O200K_ENDOFTEXT], true).unwrap(),
            "hello world"
        );
        // The reserved ids are never produced by text, even by their own names.
        let ids = tok
            .encode("<|reserved_199998|> <|reserved_200001|>")
            .unwrap();
        assert!(ids.iter().all(|&id| id < 199_998), "{ids:?}");
    }

    #[test]
    fn endoftext_in_a_document_is_text_not_the_special_id() {
        let tok = o200k_base().unwrap();
        let text = "the end <|endoftext|> and <|endofprompt|> more";
        let ids = tok.encode(text).unwrap();
        assert!(
            !ids.contains(&O200K_ENDOFTEXT) && !ids.contains(&O200K_ENDOFPROMPT),
            "{ids:?}"
        );
        // The same ids as tiktoken's `encode_ordinary`, and the text comes back.
        let reference = tiktoken_rs::o200k_base().unwrap();
        assert_eq!(ids, reference.encode_ordinary(text));
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    /// Standard base64 with padding, as the `.tiktoken` rank files write token bytes.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn the_bundled_ranks_are_the_published_o200k_base_file() {
        // Written back in the `.tiktoken` format ("base64 rank" lines by rank), the ranks hash
        // to the sha256 that OpenAI's tiktoken checks its downloaded o200k_base file against
        // (`expected_hash` in tiktoken_ext/openai_public.py).
        let mut text = String::new();
        for (bytes, rank) in o200k_base_ranks().unwrap() {
            text.push_str(&format!("{} {rank}\n", base64(&bytes)));
        }
        assert_eq!(
            hex::encode(sha2::Sha256::digest(text.as_bytes())),
            "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
        );
    }

    #[test]
    fn same_ids_as_openai_tiktoken() {
        // Ids printed by OpenAI's tiktoken 0.14.0 (PyPI), `encode_ordinary`, with the rank
        // file above (sha256 checked by tiktoken) and its own o200k_base definition.
        let tok = o200k_base().unwrap();
        let cases: [(&str, &[u32]); 8] = [
            ("hello world", &[24912, 2375]),
            (
                "Hello, World! 123 4567",
                &[13225, 11, 5922, 0, 220, 7633, 220, 19354, 22],
            ),
            (
                "naïve café — 日本語のテキスト 🙂👍🏽",
                &[
                    1503, 9954, 737, 30469, 2733, 17428, 40909, 3385, 16056, 18368, 38236, 26192,
                    82514, 52622, 121,
                ],
            ),
            (
                "  leading\tand\r\ntrailing  \n\n",
                &[220, 8117, 128995, 370, 371, 24408, 11691],
            ),
            ("don't I'LL they're", &[91418, 3413, 7454, 18940]),
            ("x\u{a0}y\u{3000}z", &[87, 5310, 88, 1397, 89]),
            (
                "$100,000.00 and 3.14159",
                &[3, 1353, 11, 1302, 13, 504, 326, 220, 18, 13, 16926, 4621],
            ),
            (
                "Привет, мир! مرحبا Ελληνικά",
                &[23881, 131903, 11, 37934, 0, 60397, 26537, 175295, 33428],
            ),
        ];
        for (text, ids) in cases {
            assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
            assert_eq!(tok.decode(ids, false).unwrap(), text);
        }
    }

    #[test]
    fn same_ids_as_tiktoken_rs_on_varied_text() {
        let tok = o200k_base().unwrap();
        let reference = tiktoken_rs::o200k_base().unwrap();
        let pieces = [
            "hello",
            " world",
            "Hello",
            "WORLD",
            "don't",
            "I'LL",
            "they're",
            " 3.14159",
            "1234567",
            "  ",
            "\n\n",
            "\t",
            " \n ",
            "\r\n",
            "   x",
            "ÄÖÜ äöü",
            "日本語のテキスト",
            "🙂👍🏽",
            "naïve café",
            "e\u{301}",
            "a\u{a0}b",
            "\u{3000}x",
            "--",
            "«»",
            "$100,000.00",
            "fn main() { println!(\"hi\"); }",
            "https://example.org/a/b?c=d",
            "Ελληνικά",
            "Привет, мир!",
            "مرحبا",
            "x'y",
            "''",
            "ABCdefGHI",
            "snake_case_name",
            " ///\n",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut texts: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
        for _ in 0..300 {
            let n = rng.gen_range(1..12);
            texts.push(
                (0..n)
                    .map(|_| pieces[rng.gen_range(0..pieces.len())])
                    .collect(),
            );
        }
        for text in &texts {
            let expected: Vec<u32> = reference.encode_ordinary(text);
            assert_eq!(tok.encode(text).unwrap(), expected, "{text:?}");
            assert_eq!(&tok.decode(&expected, false).unwrap(), text);
        }
    }
}
