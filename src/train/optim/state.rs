//! The optimiser's part of the train state: per kind of statistic, one array per parameter.

use std::collections::BTreeMap;
use vishwam_hlo::{HloError, Result, Tensor};

/// Optimiser state: for each kind of statistic (`m`, `v`, `momentum`), one array per
/// parameter it covers. Leaves are named `opt.<kind>.<param>`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptState<L> {
    /// Kind -> parameter -> array.
    pub kinds: BTreeMap<String, BTreeMap<String, L>>,
}

impl<L> Default for OptState<L> {
    fn default() -> Self {
        OptState {
            kinds: BTreeMap::new(),
        }
    }
}

impl<L> OptState<L> {
    /// A state of one kind.
    pub fn of_kind(kind: &str, arrays: BTreeMap<String, L>) -> OptState<L> {
        OptState {
            kinds: BTreeMap::from([(kind.to_string(), arrays)]),
        }
    }

    /// Adds the kinds of `other`, merging the parameters of a kind both have.
    pub fn merge(&mut self, other: OptState<L>) {
        for (kind, arrays) in other.kinds {
            self.kinds.entry(kind).or_default().extend(arrays);
        }
    }

    /// Calls `f` on every leaf with its name (`opt.<kind>.<param>`), kinds and parameters in
    /// order.
    pub fn visit<'a>(&'a self, f: &mut impl FnMut(String, &'a L)) {
        for (kind, arrays) in &self.kinds {
            for (param, leaf) in arrays {
                f(format!("opt.{kind}.{param}"), leaf);
            }
        }
    }

    /// The same structure with every leaf mapped by `f(name, leaf)`.
    pub fn try_map<M, E>(
        self,
        f: &mut impl FnMut(&str, L) -> std::result::Result<M, E>,
    ) -> std::result::Result<OptState<M>, E> {
        let mut kinds = BTreeMap::new();
        for (kind, arrays) in self.kinds {
            let mapped = arrays
                .into_iter()
                .map(|(param, leaf)| {
                    let name = format!("opt.{kind}.{param}");
                    Ok((param, f(&name, leaf)?))
                })
                .collect::<std::result::Result<_, E>>()?;
            kinds.insert(kind, mapped);
        }
        Ok(OptState { kinds })
    }

    /// The leaves by reference.
    pub fn as_ref(&self) -> OptState<&L> {
        OptState {
            kinds: self
                .kinds
                .iter()
                .map(|(k, a)| (k.clone(), a.iter().map(|(p, l)| (p.clone(), l)).collect()))
                .collect(),
        }
    }
}

impl OptState<Tensor> {
    /// Each array of `self` where `ok` (an `i1` scalar) holds, else the same array of `old`.
    pub fn where_or(&self, ok: &Tensor, old: &OptState<Tensor>) -> Result<OptState<Tensor>> {
        let mut out = OptState::default();
        for (kind, arrays) in &self.kinds {
            let kept = arrays
                .iter()
                .map(|(param, t)| Ok((param.clone(), ok.select(t, old.get(kind, param)?))))
                .collect::<Result<_>>()?;
            out.kinds.insert(kind.clone(), kept);
        }
        Ok(out)
    }

    /// The `kind` statistic of parameter `param`.
    pub fn get(&self, kind: &str, param: &str) -> Result<&Tensor> {
        self.kinds
            .get(kind)
            .and_then(|a| a.get(param))
            .ok_or_else(|| HloError::UnknownName {
                kind: "optimiser state",
                name: format!("opt.{kind}.{param}"),
                available: self
                    .kinds
                    .iter()
                    .flat_map(|(k, a)| a.keys().map(move |p| format!("opt.{k}.{p}")))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
