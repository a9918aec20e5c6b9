//! Named trees of tensors: maps keyed by dotted paths like `layers.3.attn.wq`.

use crate::error::{HloError, Result};
use crate::Tensor;
use std::collections::BTreeMap;

/// Tensors keyed by dotted path, ordered by key.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    map: BTreeMap<String, Tensor>,
}

impl TensorMap {
    /// An empty map.
    pub fn new() -> TensorMap {
        TensorMap::default()
    }

    /// Inserts (or replaces) `name`.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.map.insert(name.into(), tensor);
    }

    /// The tensor at `name`, or an error listing what exists.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| HloError::UnknownName {
            kind: "tensor",
            name: name.to_string(),
            available: self.map.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// True when `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|k| k.as_str())
    }

    /// Tensors in key order.
    pub fn values(&self) -> impl Iterator<Item = &Tensor> {
        self.map.values()
    }

    /// The entries under `prefix.` with the prefix removed: `layers.3` of
    /// `layers.3.attn.wq` gives `attn.wq`.
    pub fn subtree(&self, prefix: &str) -> TensorMap {
        let dotted = format!("{prefix}.");
        let map = self
            .map
            .range(dotted.clone()..)
            .take_while(|(k, _)| k.starts_with(&dotted))
            .map(|(k, v)| (k[dotted.len()..].to_string(), v.clone()))
            .collect();
        TensorMap { map }
    }

    /// The same entries with `prefix.` put in front of every key.
    pub fn with_prefix(&self, prefix: &str) -> TensorMap {
        let map = self
            .map
            .iter()
            .map(|(k, v)| (format!("{prefix}.{k}"), v.clone()))
            .collect();
        TensorMap { map }
    }

    /// Adds every entry of `other` (replacing equal keys).
    pub fn extend(&mut self, other: TensorMap) {
        self.map.extend(other.map);
    }
}

impl FromIterator<(String, Tensor)> for TensorMap {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        TensorMap {
            map: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for TensorMap {
    type Item = (String, Tensor);
    type IntoIter = std::collections::btree_map::IntoIter<String, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}
