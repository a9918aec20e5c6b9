//! Reverse-mode autodiff inside a graph: the backward pass is appended to the same graph.
//!
//! The pass walks the equations between the `wrt` values and the outputs in reverse with a
//! cotangent per value. A missing cotangent is a symbolic zero: no equation is emitted for
//! it, and only a `wrt` value without any path to the outputs gets an explicit zeros
//! constant. Fan-out accumulates with `add`. Integer and boolean values never carry
//! cotangents, and `stop_gradient` blocks them. Each equation is visited once, so the cost
//! is linear in the size of the graph.

use crate::ad_rules::vjp_rule;
use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::ir::{Prim, ValueId};
use crate::Tensor;

impl Graph {
    /// Vector-Jacobian product: the cotangents of `wrt` given `cotangents` for `outputs`
    /// (one per output, of its type), appended to this graph. A `wrt` value the outputs do
    /// not depend on gets zeros.
    pub fn vjp(
        &self,
        outputs: &[Tensor],
        cotangents: &[Tensor],
        wrt: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        self.check_error()?;
        if outputs.len() != cotangents.len() {
            return Err(HloError::Grad {
                detail: format!(
                    "{} outputs but {} cotangents; give one cotangent per output",
                    outputs.len(),
                    cotangents.len()
                ),
            });
        }
        for t in outputs.iter().chain(cotangents).chain(wrt) {
            if !t.graph().same(self) {
                return Err(HloError::GraphMismatch { op: "vjp".into() });
            }
        }
        for (o, c) in outputs.iter().zip(cotangents) {
            if o.ty() != c.ty() || !o.dtype().is_float() {
                return Err(HloError::Grad {
                    detail: format!(
                        "output {} needs a float cotangent of its own type, got {}",
                        o.ty(),
                        c.ty()
                    ),
                });
            }
        }
        for w in wrt {
            if !w.dtype().is_float() {
                return Err(HloError::Grad {
                    detail: format!("cannot differentiate with respect to {} (only float values have gradients)", w.ty()),
                });
            }
        }
        let out_ids: Vec<ValueId> = outputs.iter().map(|t| t.id()).collect();
        let wrt_ids: Vec<ValueId> = wrt.iter().map(|t| t.id()).collect();
        let cts = cotangents.iter().cloned().map(Some).collect();
        let grads = backward(self, 0, 0, &out_ids, cts, &wrt_ids)?;
        let grads = grads
            .into_iter()
            .zip(wrt)
            .map(|(g, w)| g.unwrap_or_else(|| w.zeros_like()))
            .collect();
        self.check_error()?;
        Ok(grads)
    }

    /// Gradient of a float scalar with respect to `wrt`, appended to this graph.
    pub fn grad(&self, scalar: &Tensor, wrt: &[Tensor]) -> Result<Vec<Tensor>> {
        self.check_error()?;
        if scalar.rank() != 0 || !scalar.dtype().is_float() {
            return Err(HloError::Grad {
                detail: format!("grad needs a float scalar to differentiate, got {}; reduce it first (e.g. .mean_all())", scalar.ty()),
            });
        }
        self.vjp(std::slice::from_ref(scalar), &[scalar.ones_like()], wrt)
    }
}

/// The backward pass over the equations from index `first_eqn` on. Values with ids below
/// `first_value` are treated as constants. Returns the cotangent of each `wrt` value
/// (`None` for a symbolic zero).
pub(crate) fn backward(
    g: &Graph,
    first_eqn: usize,
    first_value: usize,
    outputs: &[ValueId],
    cotangents: Vec<Option<Tensor>>,
    wrt: &[ValueId],
) -> Result<Vec<Option<Tensor>>> {
    let (num_eqns, num_values) = {
        let d = g.inner.borrow();
        (d.eqns.len(), d.types.len())
    };
    let slot = |id: ValueId| {
        id.index()
            .checked_sub(first_value)
            .filter(|&i| i < num_values - first_value)
    };
    let mut active = vec![false; num_values - first_value];
    {
        let d = g.inner.borrow();
        for &w in wrt {
            if let Some(i) = slot(w) {
                active[i] = d.types[w.index()].dtype.is_float();
            }
        }
        for e in &d.eqns[first_eqn..num_eqns] {
            if matches!(e.prim, Prim::StopGradient) {
                continue;
            }
            if e.inputs.iter().any(|&x| slot(x).is_some_and(|i| active[i])) {
                for &o in &e.outputs {
                    if let Some(i) = slot(o) {
                        active[i] = d.types[o.index()].dtype.is_float();
                    }
                }
            }
        }
    }
    let mut ct: Vec<Option<Tensor>> = vec![None; num_values - first_value];
    for (&o, c) in outputs.iter().zip(cotangents) {
        if let (Some(i), Some(c)) = (slot(o), c) {
            if active[i] {
                accumulate(&mut ct[i], c, "output")?;
            }
        }
    }
    for index in (first_eqn..num_eqns).rev() {
        let eqn = {
            let d = g.inner.borrow();
            let e = &d.eqns[index];
            let has_ct = e
                .outputs
                .iter()
                .any(|&o| slot(o).is_some_and(|i| ct[i].is_some()));
            let any_active = e.inputs.iter().any(|&x| slot(x).is_some_and(|i| active[i]));
            if !has_ct || !any_active {
                continue;
            }
            e.clone()
        };
        let in_active: Vec<bool> = eqn
            .inputs
            .iter()
            .map(|&x| slot(x).is_some_and(|i| active[i]))
            .collect();
        let out_cts: Vec<Option<Tensor>> = eqn
            .outputs
            .iter()
            .map(|&o| slot(o).and_then(|i| ct[i].clone()))
            .collect();
        let ins: Vec<Tensor> = eqn.inputs.iter().map(|&x| g.tensor_of(x)).collect();
        let outs: Vec<Tensor> = eqn.outputs.iter().map(|&o| g.tensor_of(o)).collect();
        let in_cts = vjp_rule(g, &eqn.prim, &ins, &outs, &out_cts, &in_active)?;
        for ((c, x), act) in in_cts.into_iter().zip(&ins).zip(&in_active) {
            let (Some(c), true) = (c, *act) else { continue };
            if c.ty() != x.ty() && !c.is_poisoned() {
                return Err(HloError::Grad {
                    detail: format!(
                        "the rule of `{}` gave a cotangent {} for an operand {}",
                        eqn.prim.name(),
                        c.ty(),
                        x.ty()
                    ),
                });
            }
            if let Some(i) = slot(x.id()) {
                accumulate(&mut ct[i], c, eqn.prim.name())?;
            }
        }
    }
    g.check_error()?;
    Ok(wrt
        .iter()
        .map(|&w| slot(w).and_then(|i| ct[i].clone()))
        .collect())
}

fn accumulate(slot: &mut Option<Tensor>, c: Tensor, from: &str) -> Result<()> {
    *slot = Some(match slot.take() {
        None => c,
        Some(prev) => {
            if prev.ty() != c.ty() {
                return Err(HloError::Grad {
                    detail: format!(
                        "cotangents {} and {} from `{from}` cannot be added",
                        prev.ty(),
                        c.ty()
                    ),
                });
            }
            &prev + &c
        }
    });
    Ok(())
}
