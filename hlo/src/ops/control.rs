//! Random bits, barriers, sharding constraints, loops and custom calls.

use crate::error::HloError;
use crate::graph::Graph;
use crate::ir::{CustomCallSpec, Func, Prim, RngAlgorithm};
use crate::{Tensor, TensorType};
use std::sync::Arc;
use vishwam_mesh::PartitionSpec;

/// A failed region trace: the error and the types of the outputs the closure returned (so
/// the caller can hand back the right number of poisoned results).
pub(crate) struct RegionError {
    pub error: Box<HloError>,
    pub output_types: Vec<TensorType>,
}

/// Traces `f` over fresh parameters of `input_types` into a checked sub-function.
pub(crate) fn trace_region(
    name: &str,
    input_types: &[TensorType],
    f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
) -> std::result::Result<Func, RegionError> {
    let g = Graph::named(name);
    let params: Vec<Tensor> = input_types
        .iter()
        .enumerate()
        .map(|(i, t)| g.param(&format!("in{i}"), t.clone()))
        .collect();
    let outs = f(&g, &params);
    let named: Vec<(String, &Tensor)> = outs
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("out{i}"), t))
        .collect();
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    g.finish(&refs).map_err(|error| RegionError {
        error: Box::new(error),
        output_types: outs.iter().map(|t| t.ty().clone()).collect(),
    })
}

impl Graph {
    /// Random bits of type `ty` from `state` (`u64[2]` or `u64[3]`); returns (new state, bits).
    pub fn rng_bit_generator(
        &self,
        state: &Tensor,
        algorithm: RngAlgorithm,
        ty: &TensorType,
    ) -> (Tensor, Tensor) {
        let mut out = self.push(
            Prim::RngBitGenerator {
                algorithm,
                ty: ty.clone(),
            },
            &[state],
        );
        let bits = out.pop().unwrap_or_else(|| self.poisoned(ty.clone()));
        let state = out
            .pop()
            .unwrap_or_else(|| self.poisoned(state.ty().clone()));
        (state, bits)
    }

    /// An optimization barrier over all of `values`: each result equals its operand, but
    /// the compiler may not move computation across it or merge it with other values.
    pub fn optimization_barrier(&self, values: &[Tensor]) -> Vec<Tensor> {
        let refs: Vec<&Tensor> = values.iter().collect();
        self.push(Prim::OptimizationBarrier, &refs)
    }

    /// A loop over the carry `init`: while `cond(carry)` is true, `carry = body(carry)`.
    /// Both closures trace into their own graphs; outer tensors must come in through the
    /// carry. Not differentiable.
    pub fn while_loop(
        &self,
        init: &[Tensor],
        cond: impl FnOnce(&Graph, &[Tensor]) -> Tensor,
        body: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let types: Vec<TensorType> = init.iter().map(|t| t.ty().clone()).collect();
        let traced = trace_region("while_cond", &types, |g, xs| vec![cond(g, xs)])
            .and_then(|c| Ok((c, trace_region("while_body", &types, body)?)));
        match traced {
            Ok((c, b)) => {
                let refs: Vec<&Tensor> = init.iter().collect();
                self.push(
                    Prim::While {
                        cond: Arc::new(c),
                        body: Arc::new(b),
                    },
                    &refs,
                )
            }
            Err(e) => {
                self.record_error(nested("while", *e.error));
                types.into_iter().map(|t| self.poisoned(t)).collect()
            }
        }
    }

    /// A call of an external kernel (`stablehlo.custom_call`). Not differentiable by itself;
    /// wrap it in [`Graph::custom_vjp`] to give it a backward rule.
    pub fn custom_call(&self, spec: CustomCallSpec, inputs: &[Tensor]) -> Vec<Tensor> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        self.push(Prim::CustomCall(Box::new(spec)), &refs)
    }
}

/// Wraps an error from tracing a sub-function so that it names the enclosing construct.
pub(crate) fn nested(what: &str, e: HloError) -> HloError {
    match e {
        HloError::Shape { op, detail } => HloError::Shape {
            op: format!("{what}/{op}"),
            detail,
        },
        other => other,
    }
}

impl Tensor {
    /// Constrains the sharding of this value (Shardy `sdy.sharding_constraint` on the mesh
    /// given when printing).
    pub fn sharding_constraint(&self, spec: PartitionSpec) -> Tensor {
        self.graph()
            .push1(Prim::ShardingConstraint { spec }, &[self])
    }
}
