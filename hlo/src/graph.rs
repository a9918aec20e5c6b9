//! The tracing graph: a cheaply clonable handle that records equations as tensors are used.

use crate::error::{HloError, Result};
use crate::infer::infer;
use crate::ir::{Eqn, Func, Output, Param, Prim, ValueId};
use crate::{Tensor, TensorMap, TensorType};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use vishwam_mesh::PartitionSpec;

/// A graph being traced. Clones share the same graph; there is no global state.
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Rc<RefCell<GraphData>>,
}

/// The recorded state of a graph.
pub(crate) struct GraphData {
    pub name: String,
    pub params: Vec<Param>,
    pub eqns: Vec<Eqn>,
    pub types: Vec<TensorType>,
    /// The first error met while tracing; later ops on poisoned tensors add none.
    pub error: Option<HloError>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.inner.borrow();
        write!(
            f,
            "Graph({}: {} params, {} eqns)",
            d.name,
            d.params.len(),
            d.eqns.len()
        )
    }
}

impl Graph {
    /// An empty graph named `main`.
    pub fn new() -> Graph {
        Graph::named("main")
    }

    /// An empty graph with a name (used as the module name when printed).
    pub fn named(name: &str) -> Graph {
        Graph {
            inner: Rc::new(RefCell::new(GraphData {
                name: name.to_string(),
                params: Vec::new(),
                eqns: Vec::new(),
                types: Vec::new(),
                error: None,
            })),
        }
    }

    /// True when both handles refer to the same graph.
    pub fn same(&self, other: &Graph) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Adds a parameter and returns its tensor.
    pub fn param(&self, name: &str, ty: TensorType) -> Tensor {
        self.add_param(name, ty, None)
    }

    /// Adds a parameter split over the mesh as `spec`.
    pub fn param_sharded(&self, name: &str, ty: TensorType, spec: PartitionSpec) -> Tensor {
        self.add_param(name, ty, Some(spec))
    }

    /// Adds one parameter per entry, in key order, and returns them as a map.
    pub fn params<'a>(&self, types: impl IntoIterator<Item = (&'a str, TensorType)>) -> TensorMap {
        let mut map = TensorMap::new();
        for (name, ty) in types {
            map.insert(name, self.param(name, ty));
        }
        map
    }

    fn add_param(&self, name: &str, ty: TensorType, sharding: Option<PartitionSpec>) -> Tensor {
        let mut d = self.inner.borrow_mut();
        if d.params.iter().any(|p| p.name == name) {
            let err = HloError::Shape {
                op: "parameter".into(),
                detail: format!("a parameter named `{name}` already exists"),
            };
            d.error.get_or_insert(err);
        }
        let id = ValueId(d.types.len() as u32);
        d.types.push(ty.clone());
        d.params.push(Param {
            name: name.to_string(),
            value: id,
            ty: ty.clone(),
            sharding,
            donate_to: None,
        });
        drop(d);
        Tensor::new(self.clone(), id, ty, false)
    }

    /// The first error recorded while tracing, if any.
    pub fn check_error(&self) -> Result<()> {
        match &self.inner.borrow().error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Number of equations recorded so far.
    pub fn num_eqns(&self) -> usize {
        self.inner.borrow().eqns.len()
    }

    /// Records `err` unless an earlier error is already recorded.
    pub(crate) fn record_error(&self, err: HloError) {
        self.inner.borrow_mut().error.get_or_insert(err);
    }

    /// Records `err` and returns a poisoned tensor of type `ty`.
    pub(crate) fn fail(&self, err: HloError, ty: TensorType) -> Tensor {
        self.record_error(err);
        self.poisoned(ty)
    }

    /// A tensor that stands for the result of a failed operation.
    pub(crate) fn poisoned(&self, ty: TensorType) -> Tensor {
        let mut d = self.inner.borrow_mut();
        let id = ValueId(d.types.len() as u32);
        d.types.push(ty.clone());
        drop(d);
        Tensor::new(self.clone(), id, ty, true)
    }

    /// A handle to an existing value of this graph.
    pub(crate) fn tensor_of(&self, id: ValueId) -> Tensor {
        let ty = self.inner.borrow().types[id.index()].clone();
        Tensor::new(self.clone(), id, ty, false)
    }

    /// Appends `outputs = prim(inputs)` after inferring the result types. On a shape error
    /// (or a poisoned or foreign operand) the results are poisoned and the first error kept.
    pub(crate) fn push(&self, prim: Prim, inputs: &[&Tensor]) -> Vec<Tensor> {
        let n_out = prim.num_outputs(inputs.len());
        let fallback = inputs
            .first()
            .map(|t| t.ty().clone())
            .unwrap_or_else(|| TensorType::scalar(crate::DType::F32));
        let poison = |g: &Graph| (0..n_out).map(|_| g.poisoned(fallback.clone())).collect();
        if inputs.iter().any(|t| !t.graph().same(self)) {
            self.record_error(HloError::GraphMismatch {
                op: prim.name().to_string(),
            });
            return poison(self);
        }
        if inputs.iter().any(|t| t.is_poisoned()) {
            return poison(self);
        }
        let types: Vec<&TensorType> = inputs.iter().map(|t| t.ty()).collect();
        let out_types = match infer(&prim, &types) {
            Ok(t) => t,
            Err(e) => {
                self.record_error(e);
                return poison(self);
            }
        };
        let mut d = self.inner.borrow_mut();
        let base = d.types.len() as u32;
        let outputs: Vec<ValueId> = (0..out_types.len() as u32)
            .map(|i| ValueId(base + i))
            .collect();
        d.types.extend(out_types.iter().cloned());
        d.eqns.push(Eqn {
            prim,
            inputs: inputs.iter().map(|t| t.id()).collect(),
            outputs: outputs.clone(),
        });
        drop(d);
        outputs
            .into_iter()
            .zip(out_types)
            .map(|(id, ty)| Tensor::new(self.clone(), id, ty, false))
            .collect()
    }

    /// Like [`Graph::push`] for primitives with one result.
    pub(crate) fn push1(&self, prim: Prim, inputs: &[&Tensor]) -> Tensor {
        let mut out = self.push(prim, inputs);
        out.swap_remove(0)
    }

    /// Ends tracing: a checked [`Func`] with the given named outputs, without the equations
    /// that no output needs. Returns the first tracing error if any occurred.
    pub fn finish(&self, outputs: &[(&str, &Tensor)]) -> Result<Func> {
        self.check_error()?;
        let mut seen = HashSet::new();
        for (name, t) in outputs {
            if !t.graph().same(self) {
                return Err(HloError::GraphMismatch {
                    op: format!("output `{name}`"),
                });
            }
            if !seen.insert(*name) {
                return Err(HloError::Check {
                    func: self.inner.borrow().name.clone(),
                    eqn: None,
                    detail: format!("two outputs are named `{name}`"),
                });
            }
        }
        let d = self.inner.borrow();
        let outs: Vec<Output> = outputs
            .iter()
            .map(|(name, t)| Output {
                name: name.to_string(),
                value: t.id(),
                sharding: None,
            })
            .collect();
        let func = Func {
            name: d.name.clone(),
            params: d.params.clone(),
            eqns: live_eqns(&d.eqns, &outs, d.types.len()),
            types: d.types.clone(),
            outputs: outs,
        };
        drop(d);
        func.check()?;
        Ok(func)
    }

    /// [`Graph::finish`] with the outputs of a map, in key order.
    pub fn finish_map(&self, outputs: &TensorMap) -> Result<Func> {
        let list: Vec<(&str, &Tensor)> = outputs.iter().collect();
        self.finish(&list)
    }

    /// Replays a function into a fresh graph: its parameters (with shardings and donation)
    /// and its output tensors, in order.
    pub fn from_func(func: &Func) -> Result<(Graph, Vec<Tensor>, Vec<Tensor>)> {
        let g = Graph::named(&func.name);
        let mut map: Vec<Option<Tensor>> = vec![None; func.types.len()];
        let mut params = Vec::with_capacity(func.params.len());
        for p in &func.params {
            let t = g.add_param(&p.name, p.ty.clone(), p.sharding.clone());
            if let Some(q) = g.inner.borrow_mut().params.last_mut() {
                q.donate_to = p.donate_to;
            }
            map[p.value.index()] = Some(t.clone());
            params.push(t);
        }
        let lookup = |map: &[Option<Tensor>], id: ValueId| {
            map.get(id.index())
                .cloned()
                .flatten()
                .ok_or_else(|| HloError::Check {
                    func: func.name.clone(),
                    eqn: None,
                    detail: format!("value {} is used before it is defined", id.0),
                })
        };
        for eqn in &func.eqns {
            let ins = eqn
                .inputs
                .iter()
                .map(|&i| lookup(&map, i))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            let outs = g.push(eqn.prim.clone(), &refs);
            for (&id, t) in eqn.outputs.iter().zip(outs) {
                map[id.index()] = Some(t);
            }
        }
        g.check_error()?;
        let outputs = func
            .outputs
            .iter()
            .map(|o| lookup(&map, o.value))
            .collect::<Result<Vec<_>>>()?;
        Ok((g, params, outputs))
    }
}

/// The equations needed by `outputs` (and those with side effects), in order.
pub(crate) fn live_eqns(eqns: &[Eqn], outputs: &[Output], num_values: usize) -> Vec<Eqn> {
    let mut live = vec![false; num_values];
    for o in outputs {
        live[o.value.index()] = true;
    }
    let mut keep = vec![false; eqns.len()];
    for (i, e) in eqns.iter().enumerate().rev() {
        if e.prim.has_side_effect() || e.outputs.iter().any(|o| live[o.index()]) {
            keep[i] = true;
            for x in &e.inputs {
                live[x.index()] = true;
            }
        }
    }
    eqns.iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(e, _)| e.clone())
        .collect()
}

impl Graph {
    /// Number of values (parameters, results and poisoned placeholders) so far.
    pub(crate) fn num_values(&self) -> usize {
        self.inner.borrow().types.len()
    }

    /// Re-emits the equations of `func` into this graph with its parameters bound to
    /// `args`; returns its outputs.
    pub(crate) fn inline(&self, func: &Func, args: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut map: Vec<Option<Tensor>> = vec![None; func.types.len()];
        for (p, a) in func.params.iter().zip(args) {
            map[p.value.index()] = Some(a.clone());
        }
        let get = |map: &[Option<Tensor>], id: ValueId| {
            map[id.index()].clone().ok_or_else(|| HloError::Check {
                func: func.name.clone(),
                eqn: None,
                detail: format!("value %{} is used before it is defined", id.0),
            })
        };
        for eqn in &func.eqns {
            let ins = eqn
                .inputs
                .iter()
                .map(|&i| get(&map, i))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            for (&id, t) in eqn.outputs.iter().zip(self.push(eqn.prim.clone(), &refs)) {
                map[id.index()] = Some(t);
            }
        }
        func.outputs.iter().map(|o| get(&map, o.value)).collect()
    }
}
