//! Composing transformations: one after another ([`Chain`]), or each over its own group of
//! parameters ([`Partition`], optax's `multi_transform`).

use super::{GradientTransformation, OptState, UpdateContext};
use crate::train::state::StateSlot;
use std::collections::BTreeMap;
use vishwam_hlo::{Result, Tensor, TensorMap};

/// Transformations applied in order, each to the previous one's updates.
pub struct Chain {
    /// The stages, first to last.
    pub stages: Vec<Box<dyn GradientTransformation>>,
}

impl GradientTransformation for Chain {
    fn init(&self, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
        let mut state = OptState::default();
        for stage in &self.stages {
            state.merge(stage.init(params));
        }
        state
    }

    fn update(
        &self,
        updates: TensorMap,
        state: &OptState<Tensor>,
        params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let mut updates = updates;
        let mut next = OptState::default();
        for stage in &self.stages {
            let (u, s) = stage.update(updates, state, params, ctx)?;
            updates = u;
            next.merge(s);
        }
        Ok((updates, next))
    }
}

/// Each group of parameters (by name) transformed by its own transformation.
pub struct Partition {
    /// The groups: their parameters and their transformation.
    pub groups: Vec<(Vec<String>, Chain)>,
}

fn select<T: Clone>(map: &BTreeMap<String, T>, names: &[String]) -> BTreeMap<String, T> {
    map.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn select_tensors(map: &TensorMap, names: &[String]) -> TensorMap {
    map.iter()
        .filter(|(k, _)| names.iter().any(|n| n == k))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl GradientTransformation for Partition {
    fn init(&self, params: &BTreeMap<String, StateSlot>) -> OptState<StateSlot> {
        let mut state = OptState::default();
        for (names, t) in &self.groups {
            state.merge(t.init(&select(params, names)));
        }
        state
    }

    fn update(
        &self,
        updates: TensorMap,
        state: &OptState<Tensor>,
        params: &TensorMap,
        ctx: &UpdateContext,
    ) -> Result<(TensorMap, OptState<Tensor>)> {
        let mut out = TensorMap::new();
        let mut next = OptState::default();
        for (names, t) in &self.groups {
            let (u, s) = t.update(
                select_tensors(&updates, names),
                state,
                &select_tensors(params, names),
                ctx,
            )?;
            out.extend(u);
            next.merge(s);
        }
        Ok((out, next))
    }
}
