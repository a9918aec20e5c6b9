//! Rematerialisation: regions whose forward pass is recomputed in the backward pass.
//!
//! `Graph::remat` traces a region (a transformer block) into a sub-function and records it
//! as one `Remat` equation; the printer inlines it in the forward pass. Its gradient rule
//! passes the region's inputs and the incoming cotangents through an `optimization_barrier`
//! (so XLA can neither merge the recomputation with the original forward nor hoist it
//! before the cotangents exist), re-emits the region from the barrier's results, and
//! differentiates the re-emitted equations. The backward pass therefore never reads the
//! region's forward intermediates, and the gradients equal those without remat. Regions
//! nest: an inner region is recomputed again inside the outer one's recomputation.

use crate::ad::backward;
use crate::error::Result;
use crate::graph::Graph;
use crate::ir::{Func, Prim, ValueId};
use crate::ops::control::{nested, trace_region};
use crate::{Tensor, TensorMap, TensorType};
use std::cell::RefCell;
use std::sync::Arc;

impl Graph {
    /// Traces `f(inputs)` as a rematerialised region named `name` and returns its outputs.
    /// Outer tensors must come in through `inputs`.
    pub fn remat(
        &self,
        name: &str,
        inputs: &[Tensor],
        f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let types: Vec<TensorType> = inputs.iter().map(|t| t.ty().clone()).collect();
        match trace_region(name, &types, f) {
            Ok(body) => {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                self.push(
                    Prim::Remat {
                        name: name.to_string(),
                        body: Arc::new(body),
                    },
                    &refs,
                )
            }
            Err(e) => {
                self.record_error(nested(&format!("remat `{name}`"), *e.error));
                e.output_types
                    .into_iter()
                    .map(|t| self.poisoned(t))
                    .collect()
            }
        }
    }

    /// [`Graph::remat`] over named trees: `f` maps the named inputs to named outputs.
    pub fn remat_map(
        &self,
        name: &str,
        inputs: &TensorMap,
        f: impl FnOnce(&Graph, &TensorMap) -> TensorMap,
    ) -> TensorMap {
        let keys: Vec<String> = inputs.keys().map(str::to_string).collect();
        let values: Vec<Tensor> = inputs.values().cloned().collect();
        let out_keys = RefCell::new(Vec::new());
        let outs = self.remat(name, &values, |g, xs| {
            let named: TensorMap = keys.iter().cloned().zip(xs.iter().cloned()).collect();
            let result = f(g, &named);
            *out_keys.borrow_mut() = result.keys().map(str::to_string).collect();
            result.values().cloned().collect()
        });
        out_keys.into_inner().into_iter().zip(outs).collect()
    }
}

/// The gradient rule of a `Remat` equation: recompute the body behind a barrier and
/// differentiate the recomputation.
pub(crate) fn remat_backward(
    g: &Graph,
    body: &Func,
    ins: &[Tensor],
    cts: &[Option<Tensor>],
    active: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let first_value = g.num_values();
    let mut through: Vec<Tensor> = ins.to_vec();
    through.extend(cts.iter().flatten().cloned());
    let barred = g.optimization_barrier(&through);
    let first_eqn = g.num_eqns();
    let (xs, barred_cts) = barred.split_at(ins.len());
    let mut barred_cts = barred_cts.iter();
    let cts: Vec<Option<Tensor>> = cts
        .iter()
        .map(|c| c.as_ref().and_then(|_| barred_cts.next().cloned()))
        .collect();
    let outs = g.inline(body, xs)?;
    let out_ids: Vec<ValueId> = outs.iter().map(|t| t.id()).collect();
    let wrt: Vec<ValueId> = xs
        .iter()
        .zip(active)
        .filter(|(_, &a)| a)
        .map(|(x, _)| x.id())
        .collect();
    let grads = backward(g, first_eqn, first_value, &out_ids, cts, &wrt)?;
    let mut grads = grads.into_iter();
    Ok(active
        .iter()
        .map(|&a| if a { grads.next().flatten() } else { None })
        .collect())
}
