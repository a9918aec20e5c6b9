//! Logical axis names: what a dimension of a parameter or activation *means*.
//!
//! Model code names each dimension (`("embed", "mlp")` for an MLP input weight); the rules
//! of [`crate::LogicalRules`] turn those names into mesh axes. Users write the names in JSON
//! rule overrides, so they parse from strings and an unknown name lists the valid ones.

use std::fmt;
use std::str::FromStr;

use crate::MeshError;

/// The meaning of one array dimension, independent of any mesh.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LogicalAxis {
    /// Examples in a batch (activations only).
    Batch,
    /// Sequence positions (activations only).
    Length,
    /// The model (hidden) width.
    Embed,
    /// Attention query heads.
    Heads,
    /// Attention key/value heads (fewer than `heads` under grouped-query attention).
    KvHeads,
    /// Width of one attention head.
    HeadDim,
    /// Hidden width of the feed-forward block.
    Mlp,
    /// Vocabulary entries (embedding table rows, logits).
    Vocab,
    /// Experts of a mixture-of-experts layer.
    Expert,
    /// Stacked layers of a scanned layer stack.
    Layers,
}

impl LogicalAxis {
    /// Every logical axis, in the order rule tables list them.
    pub const ALL: [LogicalAxis; 10] = [
        LogicalAxis::Batch,
        LogicalAxis::Length,
        LogicalAxis::Embed,
        LogicalAxis::Heads,
        LogicalAxis::KvHeads,
        LogicalAxis::HeadDim,
        LogicalAxis::Mlp,
        LogicalAxis::Vocab,
        LogicalAxis::Expert,
        LogicalAxis::Layers,
    ];

    /// The name users write, e.g. `kv_heads`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogicalAxis::Batch => "batch",
            LogicalAxis::Length => "length",
            LogicalAxis::Embed => "embed",
            LogicalAxis::Heads => "heads",
            LogicalAxis::KvHeads => "kv_heads",
            LogicalAxis::HeadDim => "head_dim",
            LogicalAxis::Mlp => "mlp",
            LogicalAxis::Vocab => "vocab",
            LogicalAxis::Expert => "expert",
            LogicalAxis::Layers => "layers",
        }
    }

    /// Position of this axis in [`LogicalAxis::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The valid names joined by `, `, for error messages.
    pub(crate) fn valid_names() -> String {
        LogicalAxis::ALL
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for LogicalAxis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogicalAxis {
    type Err = MeshError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        LogicalAxis::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| MeshError::UnknownLogicalAxis {
                name: name.to_string(),
                valid: LogicalAxis::valid_names(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_matches_all() {
        for (i, axis) in LogicalAxis::ALL.into_iter().enumerate() {
            assert_eq!(axis.index(), i);
            assert_eq!(axis.as_str().parse::<LogicalAxis>().unwrap(), axis);
            assert_eq!(axis.to_string(), axis.as_str());
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "hidden".parse::<LogicalAxis>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown logical axis `hidden`; valid logical axes are: batch, length, embed, heads, \
             kv_heads, head_dim, mlp, vocab, expert, layers"
        );
    }

    #[test]
    fn serde_uses_the_same_names() {
        let v: LogicalAxis = serde_json_like("kv_heads");
        assert_eq!(v, LogicalAxis::KvHeads);
    }

    /// Deserializes a bare string through serde's value machinery (no JSON crate needed).
    fn serde_json_like(name: &str) -> LogicalAxis {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        let de: StrDeserializer<'_, Error> = name.into_deserializer();
        LogicalAxis::deserialize(de).unwrap()
    }

    use serde::Deserialize;
}
