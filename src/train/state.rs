//! The train state: every array the step carries from one step to the next, as one type.
//!
//! [`TrainState`] is generic over its leaves. The same structure is the layout of the step
//! (`TrainState<StateSlot>`: each array's type, sharding and initial value), the traced state
//! inside the step (`TrainState<Tensor>`, a [`Tree`]), the arrays on the devices and the host
//! arrays of a checkpoint. Leaf names are the checkpoint's tensor names (`params.<p>`,
//! `opt.<kind>.<p>`, `step`, `rng`, `loss_scale`, `good_steps`,
//! `fp8.layers.<i>.amax_history`), the program's argument and result names, and the order of
//! [`TrainState::visit`] is the program's argument order. Adding a piece of state is a field
//! here (with its line in `visit` and `try_map`), where the layout gives its slot, and the
//! code that uses it.

use super::optim::OptState;
use crate::engine::HostArray;
use crate::model::ParamSpec;
use std::collections::BTreeMap;
use vishwam_hlo::{DType, PartitionSpec, Tensor, TensorType, Tree};

/// Initial dynamic loss scale for f16 compute.
pub const INITIAL_LOSS_SCALE: f64 = 65536.0;

/// One array of the state in the step's layout: its type, its sharding and how a fresh run
/// initialises it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSlot {
    /// Type.
    pub ty: TensorType,
    /// Sharding over the mesh.
    pub spec: PartitionSpec,
    /// Value at step 0.
    pub init: SlotInit,
}

/// How a slot starts.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotInit {
    /// The parameter's own initialisation, seeded by the run's seed and its name.
    Param(ParamSpec),
    /// All zeros.
    Zeros,
    /// This value.
    Value(HostArray),
}

impl StateSlot {
    /// A replicated scalar of `dtype` starting at `init`.
    pub fn scalar(dtype: DType, init: HostArray) -> StateSlot {
        StateSlot {
            ty: TensorType::new(dtype, &[]),
            spec: PartitionSpec::default(),
            init: SlotInit::Value(init),
        }
    }

    /// A zero-initialised slot of this one's type and sharding (an optimiser moment of a
    /// parameter).
    pub fn zeros_like(&self) -> StateSlot {
        StateSlot {
            ty: self.ty.clone(),
            spec: self.spec.clone(),
            init: SlotInit::Zeros,
        }
    }

    /// The value at step 0 for a run seeded with `seed`.
    pub fn initial_value(&self, seed: u64) -> HostArray {
        match &self.init {
            SlotInit::Param(spec) => crate::model::init_param(spec, seed),
            SlotInit::Value(v) => v.clone(),
            SlotInit::Zeros => {
                let bytes = self.ty.size_bytes();
                HostArray {
                    element_type: crate::engine::element_type(self.ty.dtype),
                    shape: self.ty.shape.clone(),
                    data: vec![0; bytes],
                }
            }
        }
    }
}

/// The f16 dynamic loss scale: the scale and the count of good steps since it last changed.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaleState<L> {
    /// The current scale (`loss_scale`).
    pub scale: L,
    /// Finite steps since the last change (`good_steps`).
    pub good_steps: L,
}

/// Every array of the train state.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState<L> {
    /// The trained parameters, by name (`params.<name>`): the model's and any the objective
    /// adds (distillation projections).
    pub params: BTreeMap<String, L>,
    /// The MoE routing state: the loss-free balancing biases, updated by their own rule once
    /// per step, with no gradient or optimiser state (`params.<name>`, beside the weights they
    /// shift, so that exports and the model read them as parameters).
    pub router_bias: BTreeMap<String, L>,
    /// The optimiser's state (`opt.<kind>.<param>`).
    pub opt: OptState<L>,
    /// Optimiser steps applied (`step`, i32).
    pub step: L,
    /// The random state of dropout and router noise (`rng`, u64[2]).
    pub rng: L,
    /// The dynamic loss scale, with f16 compute.
    pub loss_scale: Option<LossScaleState<L>>,
    /// Per layer, the amax history of delayed-scaling FP8 (`fp8.layers.<i>.amax_history`).
    pub fp8_history: Vec<L>,
}

/// The prefix of the model parameters' names in the state (`params.<name>`).
const PARAMS_PREFIX: &str = "params.";

/// The state (and checkpoint) name of model parameter `name`.
pub fn param_leaf(name: &str) -> String {
    format!("{PARAMS_PREFIX}{name}")
}

/// The model parameters among `state`'s arrays (keyed by state name), keyed by parameter
/// name.
pub fn params_of<T: Clone>(state: &BTreeMap<String, T>) -> BTreeMap<String, T> {
    state
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PARAMS_PREFIX)?.to_string(), v.clone())))
        .collect()
}

/// The checkpoint name of layer `layer`'s FP8 amax history.
pub fn amax_history_name(layer: usize) -> String {
    format!("fp8.layers.{layer}.amax_history")
}

fn map_named<L, M, E>(
    prefix: &str,
    map: BTreeMap<String, L>,
    f: &mut impl FnMut(&str, L) -> Result<M, E>,
) -> Result<BTreeMap<String, M>, E> {
    map.into_iter()
        .map(|(k, v)| Ok((k.clone(), f(&format!("{prefix}{k}"), v)?)))
        .collect()
}

impl<L> TrainState<L> {
    /// Calls `f` on every leaf with its name, in the state's order (the step's argument
    /// order).
    pub fn visit<'a>(&'a self, mut f: impl FnMut(String, &'a L)) {
        for (k, v) in self.params.iter().chain(&self.router_bias) {
            f(param_leaf(k), v);
        }
        self.opt.visit(&mut f);
        f("step".into(), &self.step);
        f("rng".into(), &self.rng);
        if let Some(s) = &self.loss_scale {
            f("loss_scale".into(), &s.scale);
            f("good_steps".into(), &s.good_steps);
        }
        for (i, h) in self.fp8_history.iter().enumerate() {
            f(amax_history_name(i), h);
        }
    }

    /// The same structure with every leaf mapped by `f(name, leaf)`, visiting in
    /// [`TrainState::visit`] order; the first error stops it.
    pub fn try_map<M, E>(
        self,
        mut f: impl FnMut(&str, L) -> Result<M, E>,
    ) -> Result<TrainState<M>, E> {
        Ok(TrainState {
            params: map_named(PARAMS_PREFIX, self.params, &mut f)?,
            router_bias: map_named(PARAMS_PREFIX, self.router_bias, &mut f)?,
            opt: self.opt.try_map(&mut f)?,
            step: f("step", self.step)?,
            rng: f("rng", self.rng)?,
            loss_scale: match self.loss_scale {
                Some(s) => Some(LossScaleState {
                    scale: f("loss_scale", s.scale)?,
                    good_steps: f("good_steps", s.good_steps)?,
                }),
                None => None,
            },
            fp8_history: self
                .fp8_history
                .into_iter()
                .enumerate()
                .map(|(i, h)| f(&amax_history_name(i), h))
                .collect::<Result<_, E>>()?,
        })
    }

    /// [`TrainState::try_map`] with a function that cannot fail.
    pub fn map<M>(self, mut f: impl FnMut(&str, L) -> M) -> TrainState<M> {
        let never: Result<_, std::convert::Infallible> = self.try_map(|n, l| Ok(f(n, l)));
        match never {
            Ok(s) => s,
            Err(e) => match e {},
        }
    }

    /// The leaves by reference, in the same structure.
    pub fn as_ref(&self) -> TrainState<&L> {
        fn refs<L>(m: &BTreeMap<String, L>) -> BTreeMap<String, &L> {
            m.iter().map(|(k, v)| (k.clone(), v)).collect()
        }
        TrainState {
            params: refs(&self.params),
            router_bias: refs(&self.router_bias),
            opt: self.opt.as_ref(),
            step: &self.step,
            rng: &self.rng,
            loss_scale: self.loss_scale.as_ref().map(|s| LossScaleState {
                scale: &s.scale,
                good_steps: &s.good_steps,
            }),
            fp8_history: self.fp8_history.iter().collect(),
        }
    }

    /// The leaf names, in order.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit(|n, _| names.push(n));
        names
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.visit(|_, _| n += 1);
        n
    }

    /// True when the state has no leaves (never, for a real step).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaves with their names, in order.
    pub fn into_named(self) -> Vec<(String, L)> {
        let mut out = Vec::new();
        self.map(|n, l| out.push((n.to_string(), l)));
        out
    }
}

impl TrainState<StateSlot> {
    /// The state at step 0 of a run seeded with `seed`, by name.
    pub fn initial_values(&self, seed: u64) -> BTreeMap<String, HostArray> {
        let mut out = BTreeMap::new();
        self.visit(|name, slot| {
            out.insert(name, slot.initial_value(seed));
        });
        out
    }
}

impl<L> TrainState<L> {
    /// The state whose leaves are the named entries of `arrays`; the error is the name of the
    /// first slot `arrays` lacks.
    pub fn from_named<T: Clone>(
        &self,
        arrays: &BTreeMap<String, T>,
    ) -> Result<TrainState<T>, String> {
        self.as_ref()
            .try_map(|name, _| arrays.get(name).cloned().ok_or_else(|| name.to_string()))
    }
}

impl Tree for TrainState<Tensor> {
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        self.visit(|name, t| out.push((vishwam_hlo::join_name(prefix, &name), t.clone())));
    }

    fn rebuild_from(&self, leaves: &mut dyn Iterator<Item = Tensor>) -> Option<Self> {
        self.as_ref().try_map(|_, _| leaves.next().ok_or(())).ok()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::train::{sharding_plan, StepLayout};
    use vishwam_hlo::{Graph, Tensor, Tree};

    fn layout(sets: &[&str]) -> StepLayout {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load(None, &sets).unwrap();
        let plan = sharding_plan(&cfg, "cpu", 1).unwrap();
        StepLayout::new(&cfg, &plan).unwrap()
    }

    #[test]
    fn one_type_gives_the_names_the_initial_values_and_the_traced_tree() {
        let l = layout(&[
            "model.num_layers=2",
            "model.use_moe=true",
            "model.use_lossfreebalance=true",
            "optimization.use_dynamic_scale=true",
            "optimization.use_fp8=true",
            "training.optimizer=\"muon\"",
        ]);
        let names = l.state.names();
        let position = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n}: {names:?}"))
        };
        // Parameters first (model inputs read them as a prefix), then routing biases, the
        // optimiser, and the scalars and histories.
        assert!(position("params.embed.tokens") < position("params.layers.0.moe.router_bias"));
        assert!(position("params.layers.1.moe.router_bias") < position("opt.m.embed.tokens"));
        assert!(names.contains(&"opt.momentum.layers.0.attn.wq".to_string()));
        assert!(!names.contains(&"opt.m.layers.0.attn.wq".to_string()));
        assert!(!names
            .iter()
            .any(|n| n.starts_with("opt.") && n.ends_with("router_bias")));
        let tail: Vec<&str> = names[names.len() - 6..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            [
                "step",
                "rng",
                "loss_scale",
                "good_steps",
                "fp8.layers.0.amax_history",
                "fp8.layers.1.amax_history"
            ]
        );
        let init = l.state.initial_values(7);
        assert_eq!(init.keys().collect::<Vec<_>>().len(), names.len());
        assert_eq!(init["loss_scale"].to_vec::<f32>().unwrap(), [65536.0]);
        assert!(init["opt.momentum.layers.0.attn.wq"]
            .data
            .iter()
            .all(|&b| b == 0));
        // The traced state flattens to the same names, and rebuilds from its leaves.
        let g = Graph::new();
        let traced = l.state.as_ref().map(|n, s| g.param(n, s.ty.clone()));
        let flat: Vec<String> = traced.flatten().into_iter().map(|(n, _)| n).collect();
        assert_eq!(flat, names);
        let doubled: Vec<Tensor> = traced.leaves().iter().map(|t| t + t).collect();
        let rebuilt = traced.rebuild(doubled.clone()).unwrap();
        assert_eq!(rebuilt.step.id(), doubled[position("step")].id());
    }
}
