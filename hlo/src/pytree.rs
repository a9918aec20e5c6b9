//! Structures of tensors as trees (as `jax.tree_util` does): a [`Tree`] flattens to its
//! leaves, each with a stable dotted name, and rebuilds a tree of the same structure from new
//! leaves. Loops, rematerialised regions, custom gradients and whole functions take and return
//! trees, so callers address state by field instead of by position in a flat list.
//!
//! Implemented for [`Tensor`] (a leaf), [`TensorMap`] and `BTreeMap<String, T>` (one child per
//! key), `Option<T>` (no leaves when `None`), `Vec<T>` and arrays (children `0`, `1`, ...),
//! tuples (children `0`, `1`, ...) and `()`; structs implement it with [`tree_struct!`].

use crate::error::{HloError, Result};
use crate::{Tensor, TensorMap};
use std::collections::BTreeMap;

/// A structure of tensors with a fixed leaf order and stable dotted leaf names.
pub trait Tree: Sized {
    /// Appends every leaf with its name under `prefix` (`""` at the root), in the tree's order.
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>);

    /// A tree of this one's structure whose leaves are the next ones of `leaves`, taken in
    /// flatten order; `None` when `leaves` runs out.
    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self>;

    /// The leaves with their names, in order.
    fn flatten(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.flatten_into("", &mut out);
        out
    }

    /// The leaves, in order.
    fn leaves(&self) -> Vec<Tensor> {
        self.flatten().into_iter().map(|(_, t)| t).collect()
    }

    /// A tree of this one's structure over `leaves` (in flatten order), which must match
    /// this tree's leaves in number and type.
    fn rebuild(&self, leaves: Vec<Tensor>) -> Result<Self> {
        let mine = self.flatten();
        let mismatch = |detail: String| HloError::Shape {
            op: "tree rebuild".into(),
            detail,
        };
        if mine.len() != leaves.len() {
            return Err(mismatch(format!(
                "the tree has {} leaves, {} were given",
                mine.len(),
                leaves.len()
            )));
        }
        for ((name, old), new) in mine.iter().zip(&leaves) {
            if old.ty() != new.ty() {
                return Err(mismatch(format!(
                    "leaf `{name}` is {}, the new leaf is {}",
                    old.ty(),
                    new.ty()
                )));
            }
        }
        let mut it = leaves.into_iter();
        self.rebuild_from(&mut it)
            .ok_or_else(|| mismatch("too few leaves".into()))
    }
}

/// `prefix.key`, or the non-empty one of the two.
pub fn join_name(prefix: &str, key: &str) -> String {
    match (prefix.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{key}"),
    }
}

impl Tree for Tensor {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((prefix.to_string(), self.clone()));
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        leaves.next()
    }
}

impl Tree for TensorMap {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (k, v) in self.iter() {
            out.push((join_name(prefix, k), v.clone()));
        }
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        self.keys()
            .map(|k| Some((k.to_string(), leaves.next()?)))
            .collect()
    }
}

impl<T: Tree> Tree for BTreeMap<String, T> {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (k, v) in self {
            v.flatten_into(&join_name(prefix, k), out);
        }
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        self.iter()
            .map(|(k, v)| Some((k.clone(), v.rebuild_from(leaves)?)))
            .collect()
    }
}

impl<T: Tree> Tree for Option<T> {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        if let Some(t) = self {
            t.flatten_into(prefix, out);
        }
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        match self {
            Some(t) => Some(Some(t.rebuild_from(leaves)?)),
            None => Some(None),
        }
    }
}

impl<T: Tree> Tree for Vec<T> {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (i, t) in self.iter().enumerate() {
            t.flatten_into(&join_name(prefix, &i.to_string()), out);
        }
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        self.iter().map(|t| t.rebuild_from(leaves)).collect()
    }
}

impl<T: Tree, const N: usize> Tree for [T; N] {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        for (i, t) in self.iter().enumerate() {
            t.flatten_into(&join_name(prefix, &i.to_string()), out);
        }
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        let parts: Vec<T> = self
            .iter()
            .map(|t| t.rebuild_from(leaves))
            .collect::<Option<_>>()?;
        parts.try_into().ok()
    }
}

impl Tree for () {
    fn flatten_into(&self, _prefix: &str, _out: &mut Vec<(String, Tensor)>) {}

    fn rebuild_from(&self, _leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        Some(())
    }
}

macro_rules! tuple_tree {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Tree),+> Tree for ($($t,)+) {
            fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
                $(self.$i.flatten_into(&join_name(prefix, stringify!($i)), out);)+
            }

            fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
                Some(($(self.$i.rebuild_from(leaves)?,)+))
            }
        }
    };
}

tuple_tree!(A 0);
tuple_tree!(A 0, B 1);
tuple_tree!(A 0, B 1, C 2);
tuple_tree!(A 0, B 1, C 2, D 3);

/// Implements [`Tree`] for a struct whose fields are trees: each field's leaves are named under
/// the field's name, or under the name given after `=>` (`""` puts them at the struct's own
/// level). Fields are flattened in the order listed, which must name every field.
///
/// ```
/// use vishwam_hlo::{tree_struct, Tensor, TensorMap, Tree};
/// struct Adam {
///     m: TensorMap,
///     v: TensorMap,
///     count: Option<Tensor>,
/// }
/// tree_struct!(Adam { m => "opt.m", v => "opt.v", count });
/// ```
#[macro_export]
macro_rules! tree_struct {
    ($ty:ty { $($field:ident $(=> $name:expr)?),* $(,)? }) => {
        impl $crate::Tree for $ty {
            fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, $crate::Tensor)>) {
                $(
                    let name = $crate::tree_struct!(@name $field $(, $name)?);
                    $crate::Tree::flatten_into(
                        &self.$field,
                        &$crate::join_name(prefix, name),
                        out,
                    );
                )*
            }

            fn rebuild_from(
                &self,
                leaves: &mut dyn Iterator<Item = $crate::Tensor>,
            ) -> Option<Self> {
                Some(Self {
                    $($field: $crate::Tree::rebuild_from(&self.$field, leaves)?,)*
                })
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident, $name:expr) => { $name };
}
