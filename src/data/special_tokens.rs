//! Special token roles: pad, bos and eos ids, checked against a tokenizer.
//!
//! Tokenizers trained by vishwam fix `<pad>` = 0, `<bos>` = 1, `<eos>` = 2. For any other
//! tokenizer the configured ids (`sequence.pad_token_id`, `bos_token_id`, `eos_token_id`) must
//! name special tokens of that tokenizer fit for their role.

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::tokenizer::TextTokenizer;

/// Token ids with a role in training (config `sequence.pad_token_id/bos_token_id/eos_token_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokenIds {
    /// Fills the unused tail of a window; its targets are masked out of the loss.
    pub pad: u32,
    /// Marks the start of a document when `add_bos` is on.
    pub bos: u32,
    /// Separates (ends) documents.
    pub eos: u32,
}

impl Default for SpecialTokenIds {
    /// The ids of tokenizers trained by vishwam: pad 0, bos 1, eos 2.
    fn default() -> Self {
        SpecialTokenIds {
            pad: 0,
            bos: 1,
            eos: 2,
        }
    }
}

impl TextTokenizer {
    /// The special (added) tokens as `(text, id)`, by id.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        let mut specials: Vec<(String, u32)> = self
            .inner()
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, token)| (token.content, id))
            .collect();
        specials.sort_by_key(|(_, id)| *id);
        specials
    }

    /// Pad, bos and eos ids found by the special tokens' names (`<pad>`, `</s>`,
    /// `<|endoftext|>`, ...); a missing pad or bos falls back to eos. `None` without an eos.
    pub fn conventional_special_ids(&self) -> Option<SpecialTokenIds> {
        let specials = self.special_tokens();
        let find = |role: &str| {
            specials
                .iter()
                .find(|(text, _)| role_of_token_name(text) == Some(role))
                .map(|&(_, id)| id)
        };
        let eos = find("eos")?;
        Some(SpecialTokenIds {
            pad: find("pad").unwrap_or(eos),
            bos: find("bos").unwrap_or(eos),
            eos,
        })
    }

    /// Checks that each role's id is a special token of this tokenizer fit for that role.
    ///
    /// An id is rejected when it lies outside the vocabulary, when it is an ordinary text
    /// token, or when it is the special token named for another role while this tokenizer
    /// names a different token for this role (e.g. pad = id of `<eos>` although `<pad>` exists).
    /// One token in several roles (GPT-2's `<|endoftext|>` as pad, bos and eos) is accepted.
    pub fn check_special_ids(&self, ids: &SpecialTokenIds) -> Result<()> {
        let specials = self.special_tokens();
        let listing = || {
            if specials.is_empty() {
                "(none: this tokenizer has no special tokens, add some or train one with \
                 `vishwam tokenizer train`)"
                    .to_string()
            } else {
                specials
                    .iter()
                    .map(|(t, id)| format!("{t}={id}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        for (role, id) in [("pad", ids.pad), ("bos", ids.bos), ("eos", ids.eos)] {
            let Some(token) = self.inner().id_to_token(id) else {
                return Err(DataError::SpecialTokenOutOfRange {
                    role,
                    id,
                    tokenizer_size: self.vocab_size(),
                    specials: listing(),
                });
            };
            if !specials.iter().any(|(_, special_id)| *special_id == id) {
                return Err(DataError::SpecialTokenClash {
                    role,
                    id,
                    found: format!("the ordinary text token {token:?}"),
                    specials: listing(),
                });
            }
            let named_for_this_role = specials
                .iter()
                .find(|(text, _)| role_of_token_name(text) == Some(role));
            let role_of_this_token = role_of_token_name(&token);
            if let (Some((own_text, own_id)), Some(other_role)) =
                (named_for_this_role, role_of_this_token)
            {
                if other_role != role && *own_id != id {
                    return Err(DataError::SpecialTokenClash {
                        role,
                        id,
                        found: format!(
                            "the {other_role} token {token:?}, while the tokenizer's {role} \
                             token {own_text:?} is id {own_id}"
                        ),
                        specials: listing(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The role a special token's text conventionally names, if any.
fn role_of_token_name(text: &str) -> Option<&'static str> {
    match text {
        "<pad>" | "[PAD]" | "<PAD>" | "<|pad|>" | "<|padding|>" => Some("pad"),
        "<bos>" | "<s>" | "[CLS]" | "<BOS>" | "<|begin_of_text|>" | "<|startoftext|>" => {
            Some("bos")
        }
        "<eos>" | "</s>" | "[SEP]" | "<EOS>" | "<|end_of_text|>" | "<|endoftext|>" => Some("eos"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::trained;

    #[test]
    fn special_id_checks_name_the_problem() {
        let tokenizer = trained(300);
        tokenizer
            .check_special_ids(&SpecialTokenIds::default())
            .unwrap();
        assert_eq!(
            tokenizer.conventional_special_ids(),
            Some(SpecialTokenIds::default())
        );
        let out_of_range = SpecialTokenIds {
            eos: 5000,
            ..Default::default()
        };
        let err = tokenizer.check_special_ids(&out_of_range).unwrap_err();
        assert!(matches!(
            err,
            DataError::SpecialTokenOutOfRange { role: "eos", .. }
        ));
        assert!(err.to_string().contains("<eos>=2"), "{err}");
        let ordinary = SpecialTokenIds {
            pad: 100,
            ..Default::default()
        };
        let err = tokenizer.check_special_ids(&ordinary).unwrap_err();
        assert!(matches!(
            err,
            DataError::SpecialTokenClash {
                role: "pad",
                id: 100,
                ..
            }
        ));
        let swapped = SpecialTokenIds {
            pad: 2,
            bos: 1,
            eos: 2,
        };
        let err = tokenizer.check_special_ids(&swapped).unwrap_err();
        assert!(err.to_string().contains("\"<pad>\" is id 0"), "{err}");
    }
}
