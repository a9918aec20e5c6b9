//! A lean encoder for byte-level BPE tokenizers, giving the same ids as the `tokenizers`
//! pipeline with less work per word.
//!
//! The library builds a `PreTokenizedString` with per-byte alignments and an `Encoding` with
//! offsets and token strings for every text; for training data only the ids matter. For a
//! tokenizer whose pipeline is exactly "no normalizer, ByteLevel pre-tokenizer with the GPT-2
//! regex and no prefix space, BPE model without dropout", this encoder splits with the same
//! regex, maps bytes to the byte-level alphabet, asks the same BPE model for each word, and
//! memoizes words per thread. Texts containing an added token's content go through the
//! library (added tokens are matched there). Tests compare both paths on varied text.

use std::cell::RefCell;
use std::collections::HashMap;

use tokenizers::models::ModelWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::utils::SysRegex;
use tokenizers::{Model, Tokenizer};

/// The GPT-2 pre-tokenization pattern the ByteLevel pre-tokenizer uses.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Words memoized per thread before the memo is cleared.
const MEMO_CAPACITY: usize = 1 << 18;
/// Words longer than this are not memoized.
const MEMO_MAX_WORD_BYTES: usize = 64;

thread_local! {
    /// (tokenizer hash, word -> ids) of the tokenizer this thread encoded with last.
    static MEMO: RefCell<(String, HashMap<String, Vec<u32>>)> = RefCell::new((String::new(), HashMap::new()));
}

/// The byte-level BPE fast path of one tokenizer.
pub struct ByteLevelBpe {
    regex: SysRegex,
    byte_chars: [char; 256],
    added_contents: Vec<String>,
    hash: String,
}

impl std::fmt::Debug for ByteLevelBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteLevelBpe")
            .field("hash", &self.hash)
            .finish()
    }
}

/// GPT-2's reversible map from bytes to printable characters.
pub(crate) fn byte_level_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        chars[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("256..324 are valid chars");
            next += 1;
            c
        };
    }
    chars
}

impl ByteLevelBpe {
    /// The fast path for `tokenizer`, or `None` when its pipeline is not plain byte-level BPE.
    pub fn for_tokenizer(tokenizer: &Tokenizer, hash: &str) -> Option<Self> {
        if tokenizer.get_normalizer().is_some() {
            return None;
        }
        match tokenizer.get_pre_tokenizer() {
            Some(PreTokenizerWrapper::ByteLevel(byte_level))
                if byte_level.use_regex && !byte_level.add_prefix_space => {}
            _ => return None,
        }
        match tokenizer.get_model() {
            ModelWrapper::BPE(bpe) if bpe.dropout.is_none_or(|d| d == 0.0) => {}
            _ => return None,
        }
        let regex = SysRegex::new(GPT2_PATTERN).ok()?;
        let added_contents = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .filter(|c| !c.is_empty())
            .collect();
        Some(ByteLevelBpe {
            regex,
            byte_chars: byte_level_chars(),
            added_contents,
            hash: hash.to_string(),
        })
    }

    /// Appends the ids of `text` to `out`; `Ok(false)` (nothing appended) when the text holds
    /// an added token and must go through the library instead.
    pub fn encode_into(
        &self,
        tokenizer: &Tokenizer,
        text: &str,
        out: &mut Vec<u32>,
    ) -> tokenizers::Result<bool> {
        if self
            .added_contents
            .iter()
            .any(|c| text.contains(c.as_str()))
        {
            return Ok(false);
        }
        let model = tokenizer.get_model();
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            let (owner, words) = &mut *memo;
            if *owner != self.hash {
                owner.clone_from(&self.hash);
                words.clear();
            }
            let mut mapped = String::new();
            let mut previous_end = 0;
            let mut encode_piece = |piece: &str, words: &mut HashMap<String, Vec<u32>>| {
                if piece.is_empty() {
                    return Ok(());
                }
                if let Some(ids) = words.get(piece) {
                    out.extend_from_slice(ids);
                    return Ok(());
                }
                mapped.clear();
                mapped.extend(piece.bytes().map(|b| self.byte_chars[b as usize]));
                let ids: Vec<u32> = model.tokenize(&mapped)?.iter().map(|t| t.id).collect();
                out.extend_from_slice(&ids);
                if piece.len() <= MEMO_MAX_WORD_BYTES {
                    if words.len() >= MEMO_CAPACITY {
                        words.clear();
                    }
                    words.insert(piece.to_string(), ids);
                }
                tokenizers::Result::Ok(())
            };
            for (start, end) in self.regex.find_iter(text) {
                if start > previous_end {
                    encode_piece(&text[previous_end..start], words)?;
                }
                encode_piece(&text[start..end], words)?;
                previous_end = end;
            }
            encode_piece(&text[previous_end..], words)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{random_text, trained};
    use rand::{Rng, SeedableRng};

    #[test]
    fn byte_chars_match_the_alphabet() {
        let chars = byte_level_chars();
        let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
        assert_eq!(alphabet.len(), 256);
        assert!(chars.iter().all(|c| alphabet.contains(c)));
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn same_ids_as_the_library_on_varied_text() {
        let tokenizer = trained(500);
        let inner = tokenizer.inner();
        let fast = ByteLevelBpe::for_tokenizer(inner, tokenizer.hash()).expect("byte-level BPE");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let extras = [
            "  ",
            "\n\n",
            "\t",
            " \n ",
            "'s",
            "'ll",
            "don't",
            "1999",
            " 3.14",
            "ÄÖÜ",
            "日本語",
            "🙂",
            "\r\n",
            "   x",
            "--",
            "«»",
            "\u{0301}",
            "a\u{a0}b",
            "'",
            "''",
            "x'y",
        ];
        for round in 0..200 {
            let words = rng.gen_range(0..30);
            let mut text = random_text(&mut rng, words);
            for _ in 0..rng.gen_range(0..6) {
                let at = rng.gen_range(0..=text.len());
                if text.is_char_boundary(at) {
                    text.insert_str(at, extras[rng.gen_range(0..extras.len())]);
                }
            }
            let expected = inner
                .encode_fast(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            let mut got = Vec::new();
            assert!(fast.encode_into(inner, &text, &mut got).unwrap());
            assert_eq!(got, expected, "round {round}: {text:?}");
            // Second time from the memo.
            got.clear();
            fast.encode_into(inner, &text, &mut got).unwrap();
            assert_eq!(got, expected, "round {round} (memoized): {text:?}");
        }
    }

    #[test]
    fn texts_with_added_tokens_are_left_to_the_library() {
        let tokenizer = trained(300);
        let fast = ByteLevelBpe::for_tokenizer(tokenizer.inner(), tokenizer.hash()).unwrap();
        let mut out = Vec::new();
        assert!(!fast
            .encode_into(tokenizer.inner(), "a <eos> b", &mut out)
            .unwrap());
        assert!(out.is_empty());
    }
}
