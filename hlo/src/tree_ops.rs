//! Loops, rematerialised regions, custom gradients and whole functions over [`Tree`]s: the
//! flat-list forms ([`Graph::while_loop`], [`Graph::remat`], [`Graph::custom_vjp`],
//! [`Graph::param_sharded`], [`Graph::finish`]) with the flattening and rebuilding done here,
//! so callers read and write their state by field.
//!
//! As with the flat forms, an error found while tracing a region (a shape error inside it) is
//! recorded in the graph and returned by [`Graph::finish`], and the results are poisoned
//! values of the right types; an error the caller's closure returns is returned here.

use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::ir::Func;
use crate::pytree::Tree;
use crate::Tensor;
use std::cell::RefCell;
use vishwam_mesh::PartitionSpec;

fn structure_error(what: &str, detail: String) -> HloError {
    HloError::Shape {
        op: what.to_string(),
        detail,
    }
}

/// `template`'s structure over `leaves` of the same types (the parameters or results of a
/// region traced from `template`'s leaves).
fn same_structure<T: Tree>(template: &T, leaves: &[Tensor]) -> Result<T> {
    template.rebuild(leaves.to_vec())
}

impl Graph {
    /// A loop over the tree `init`: while `cond(carry)` is true, `carry = body(carry)`. Both
    /// closures trace into their own graphs and see the carry as a tree of `init`'s structure;
    /// outer tensors must come in through the carry. The body returns a tree of the same
    /// structure and leaf types, or an error, which this returns.
    pub fn while_tree<T: Tree>(
        &self,
        init: &T,
        cond: impl FnOnce(&Graph, &T) -> Result<Tensor>,
        body: impl FnOnce(&Graph, &T) -> Result<T>,
    ) -> Result<T> {
        let error: RefCell<Option<HloError>> = RefCell::new(None);
        let fail = |e: HloError| {
            error.borrow_mut().get_or_insert(e);
        };
        let out = self.while_loop(
            &init.leaves(),
            |g, xs| match same_structure(init, xs).and_then(|carry| cond(g, &carry)) {
                Ok(c) => c,
                Err(e) => {
                    fail(e);
                    g.scalar(0.0, crate::DType::F32).gt(1.0)
                }
            },
            |g, xs| {
                let next = same_structure(init, xs).and_then(|carry| body(g, &carry));
                let checked = next.and_then(|n| {
                    init.rebuild(n.leaves())
                        .map_err(|e| structure_error("while_tree body", e.to_string()))
                });
                match checked {
                    Ok(n) => n.leaves(),
                    Err(e) => {
                        fail(e);
                        xs.to_vec()
                    }
                }
            },
        );
        if let Some(e) = error.into_inner() {
            return Err(e);
        }
        same_structure(init, &out)
    }

    /// [`Graph::remat`] over trees: `f` maps the tree `inputs` to a tree of outputs, traced as
    /// a region whose forward pass is recomputed in the backward pass.
    pub fn remat_tree<I: Tree, O: Tree>(
        &self,
        name: &str,
        inputs: &I,
        f: impl FnOnce(&Graph, &I) -> Result<O>,
    ) -> Result<O> {
        let template: RefCell<Option<Result<O>>> = RefCell::new(None);
        let outs = self.remat(name, &inputs.leaves(), |g, xs| {
            let result = same_structure(inputs, xs).and_then(|i| f(g, &i));
            let leaves = result.as_ref().map(Tree::leaves).unwrap_or_default();
            *template.borrow_mut() = Some(result);
            leaves
        });
        let template = template.into_inner().unwrap_or_else(|| {
            Err(structure_error(
                "remat_tree",
                format!("`{name}` was not traced"),
            ))
        })?;
        same_structure(&template, &outs)
    }

    /// [`Graph::custom_vjp`] over trees: `fwd` maps `inputs` to outputs; `bwd(inputs, outputs,
    /// output cotangents)` returns one cotangent per input leaf, as a tree of `inputs`'
    /// structure (the entries of non-float leaves are ignored).
    pub fn custom_vjp_tree<I: Tree, O: Tree>(
        &self,
        name: &str,
        inputs: &I,
        fwd: impl FnOnce(&Graph, &I) -> Result<O>,
        bwd: impl FnOnce(&Graph, &I, &O, &O) -> Result<I>,
    ) -> Result<O> {
        let template: RefCell<Option<O>> = RefCell::new(None);
        let error: RefCell<Option<HloError>> = RefCell::new(None);
        let fail = |e: HloError| {
            error.borrow_mut().get_or_insert(e);
        };
        let n_in = inputs.leaves().len();
        let outs = self.custom_vjp(
            name,
            &inputs.leaves(),
            |g, xs| match same_structure(inputs, xs).and_then(|i| fwd(g, &i)) {
                Ok(o) => {
                    let leaves = o.leaves();
                    *template.borrow_mut() = Some(o);
                    leaves
                }
                Err(e) => {
                    fail(e);
                    Vec::new()
                }
            },
            |g, ins, outs, cts| {
                let result = (|| {
                    let t = template.borrow();
                    let t = t
                        .as_ref()
                        .ok_or_else(|| structure_error("custom_vjp_tree", "no forward".into()))?;
                    let i = same_structure(inputs, ins)?;
                    let o = same_structure(t, outs)?;
                    let c = same_structure(t, cts)?;
                    Ok(bwd(g, &i, &o, &c)?.leaves())
                })();
                result.unwrap_or_else(|e| {
                    fail(e);
                    ins.iter().take(n_in).cloned().collect()
                })
            },
        );
        if let Some(e) = error.into_inner() {
            return Err(e);
        }
        let template = template.into_inner().ok_or_else(|| {
            structure_error("custom_vjp_tree", format!("`{name}` was not traced"))
        })?;
        same_structure(&template, &outs)
    }

    /// One parameter per leaf of `template`, named by the leaf's path under `prefix` and
    /// typed like it, split over the mesh as `sharding(name)` says (`None`: no annotation);
    /// returns them as a tree of `template`'s structure. `template`'s leaves may belong to any
    /// graph: only their names and types are read.
    pub fn input_tree<T: Tree>(
        &self,
        prefix: &str,
        template: &T,
        sharding: impl Fn(&str) -> Option<PartitionSpec>,
    ) -> Result<T> {
        let mut named = Vec::new();
        template.flatten_into(prefix, &mut named);
        let params: Vec<Tensor> = named
            .iter()
            .map(|(name, t)| match sharding(name) {
                Some(spec) => self.param_sharded(name, t.ty().clone(), spec),
                None => self.param(name, t.ty().clone()),
            })
            .collect();
        template.rebuild(params)
    }

    /// Ends tracing with the leaves of `outputs` as the function's results, each named by its
    /// path in the tree (see [`Graph::finish`]).
    pub fn finish_tree(&self, outputs: &impl Tree) -> Result<Func> {
        let named = outputs.flatten();
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.finish(&refs)
    }
}
