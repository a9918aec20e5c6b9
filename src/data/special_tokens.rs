//! Special token roles: pad, bos and eos ids, checked against a tokenizer.
//!
//! Tokenizers trained by vishwam hold `<pad>`, `<bos>` and `<eos>` at ids 0, 1 and 2: by
//! default in that order, else where the config's `sequence.pad_token_id`, `bos_token_id`
//! and `eos_token_id` place them ([`SpecialTokenIds::placed`]). For any other tokenizer the
//! configured ids must name special tokens of that tokenizer fit for their role.

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::tokenizer::{TextTokenizer, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN};

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

impl SpecialTokenIds {
    /// Where a tokenizer trained by vishwam places its special tokens when a config asks for
    /// some ids (`sequence.pad_token_id`, `bos_token_id`, `eos_token_id`): each id given must
    /// be 0, 1 or 2 and differ from the others given; the roles not given take the ids left,
    /// lowest first, in the order pad, bos, eos. Nothing given: pad 0, bos 1, eos 2.
    pub fn placed(pad: Option<u32>, bos: Option<u32>, eos: Option<u32>) -> Result<SpecialTokenIds> {
        let asked = [
            ("sequence.pad_token_id", pad),
            ("sequence.bos_token_id", bos),
            ("sequence.eos_token_id", eos),
        ];
        let mut taken = Vec::new();
        for (key, id) in asked {
            if let Some(id) = id {
                if id > 2 || taken.contains(&id) {
                    return Err(DataError::InvalidOption {
                        name: key,
                        value: id.to_string(),
                        expected: "0, 1 or 2, and not an id another role asks for: a tokenizer \
                                   vishwam trains holds <pad>, <bos> and <eos> at ids 0 to 2 \
                                   (give data.tokenizer to use one with other ids)"
                            .into(),
                    });
                }
                taken.push(id);
            }
        }
        let mut free = (0..3u32).filter(|id| !taken.contains(id));
        let mut fill = |id: Option<u32>| id.or_else(|| free.next()).unwrap_or_default();
        Ok(SpecialTokenIds {
            pad: fill(pad),
            bos: fill(bos),
            eos: fill(eos),
        })
    }

    /// The texts `<pad>`, `<bos>` and `<eos>` in the order of their ids, which must be 0, 1
    /// and 2 (as [`SpecialTokenIds::placed`] gives).
    pub fn trained_order(&self) -> Result<[&'static str; 3]> {
        let mut order: [Option<&'static str>; 3] = [None; 3];
        for (text, id) in [
            (PAD_TOKEN, self.pad),
            (BOS_TOKEN, self.bos),
            (EOS_TOKEN, self.eos),
        ] {
            match order.get_mut(id as usize) {
                Some(slot @ None) => *slot = Some(text),
                _ => {
                    return Err(DataError::InvalidOption {
                        name: "special token ids",
                        value: format!("pad {}, bos {}, eos {}", self.pad, self.bos, self.eos),
                        expected: "0, 1 and 2 in some order".into(),
                    })
                }
            }
        }
        Ok(order.map(|t| t.unwrap_or_default()))
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
    fn placed_ids_follow_the_config_and_fill_the_rest() {
        let ids = |pad, bos, eos| SpecialTokenIds::placed(pad, bos, eos);
        assert_eq!(ids(None, None, None).unwrap(), SpecialTokenIds::default());
        // The VishwamAI guide: pad 0, eos 1; bos takes the id left.
        assert_eq!(
            ids(Some(0), None, Some(1)).unwrap(),
            SpecialTokenIds {
                pad: 0,
                bos: 2,
                eos: 1
            }
        );
        assert_eq!(
            ids(None, None, Some(0)).unwrap(),
            SpecialTokenIds {
                pad: 1,
                bos: 2,
                eos: 0
            }
        );
        let err = ids(Some(0), None, Some(0)).unwrap_err();
        assert!(err.to_string().contains("sequence.eos_token_id"), "{err}");
        let err = ids(None, Some(7), None).unwrap_err();
        assert!(err.to_string().contains("sequence.bos_token_id"), "{err}");
        assert_eq!(
            ids(Some(0), None, Some(1))
                .unwrap()
                .trained_order()
                .unwrap(),
            ["<pad>", "<eos>", "<bos>"]
        );
    }

    #[test]
    fn a_trained_tokenizer_holds_its_specials_where_asked() {
        let docs: Vec<Result<String>> = (0..20)
            .map(|i| Ok(format!("the cat {i} sat on the mat, the dog ran {i} times")))
            .collect();
        let options = crate::data::TrainOptions {
            vocab_size: 300,
            min_frequency: 1,
            show_progress: false,
        };
        let ids = SpecialTokenIds::placed(Some(0), None, Some(1)).unwrap();
        let tokenizer =
            TextTokenizer::train_byte_level_bpe_with_specials(docs.into_iter(), &options, &ids)
                .unwrap();
        assert_eq!(
            tokenizer.special_tokens(),
            [
                ("<pad>".to_string(), 0),
                ("<eos>".to_string(), 1),
                ("<bos>".to_string(), 2)
            ]
        );
        assert_eq!(tokenizer.conventional_special_ids(), Some(ids));
        tokenizer.check_special_ids(&ids).unwrap();
    }

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
