//! Regions with their own backward rule (FP8 straight-through casts, vendor kernels).

use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::infer::output_types;
use crate::ir::{Func, Prim};
use crate::ops::control::{nested, trace_region, RegionError};
use crate::{Tensor, TensorType};
use std::sync::Arc;

impl Graph {
    /// Traces `fwd(inputs)` normally, but differentiates it with `bwd(inputs, outputs,
    /// output_cotangents)`, which returns one cotangent per input (entries for non-float
    /// inputs are ignored). Both closures trace into their own graphs.
    pub fn custom_vjp(
        &self,
        name: &str,
        inputs: &[Tensor],
        fwd: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
        bwd: impl FnOnce(&Graph, &[Tensor], &[Tensor], &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let in_types: Vec<TensorType> = inputs.iter().map(|t| t.ty().clone()).collect();
        let traced = trace_region(name, &in_types, fwd).and_then(|fwd_fn| {
            let fail_types = output_types(&fwd_fn);
            let out_types = output_types(&fwd_fn);
            let (n_in, n_out) = (in_types.len(), out_types.len());
            let mut bwd_types = in_types.clone();
            bwd_types.extend(out_types.iter().cloned());
            bwd_types.extend(out_types);
            let wrong_count = std::cell::Cell::new(None);
            let bwd_fn = trace_region(&format!("{name}_bwd"), &bwd_types, |g, xs| {
                let all = bwd(g, &xs[..n_in], &xs[n_in..n_in + n_out], &xs[n_in + n_out..]);
                if all.len() != n_in {
                    wrong_count.set(Some(all.len()));
                }
                all.into_iter()
                    .zip(&in_types)
                    .filter(|(_, t)| t.dtype.is_float())
                    .map(|(c, _)| c)
                    .collect()
            })
            .map_err(|e| RegionError {
                error: e.error,
                output_types: fail_types.clone(),
            })?;
            if let Some(n) = wrong_count.get() {
                return Err(RegionError {
                    error: Box::new(HloError::Shape {
                        op: "custom_vjp".into(),
                        detail: format!(
                            "backward rule of `{name}` returned {n} cotangents for {n_in} inputs"
                        ),
                    }),
                    output_types: fail_types,
                });
            }
            Ok((fwd_fn, bwd_fn))
        });
        match traced {
            Ok((fwd, bwd)) => {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let prim = Prim::CustomVjp {
                    name: name.to_string(),
                    fwd: Arc::new(fwd),
                    bwd: Arc::new(bwd),
                };
                self.push(prim, &refs)
            }
            Err(e) => {
                self.record_error(nested(&format!("custom_vjp `{name}`"), *e.error));
                e.output_types
                    .into_iter()
                    .map(|t| self.poisoned(t))
                    .collect()
            }
        }
    }
}

/// The gradient rule of a `CustomVjp` equation: inline its backward function.
pub(crate) fn custom_vjp_backward(
    g: &Graph,
    bwd: &Func,
    ins: &[Tensor],
    outs: &[Tensor],
    cts: &[Option<Tensor>],
) -> Result<Vec<Option<Tensor>>> {
    let mut args: Vec<Tensor> = ins.to_vec();
    args.extend(outs.iter().cloned());
    args.extend(
        cts.iter()
            .zip(outs)
            .map(|(c, o)| c.clone().unwrap_or_else(|| o.zeros_like())),
    );
    let mut grads = g.inline(bwd, &args)?.into_iter();
    Ok(ins
        .iter()
        .map(|x| {
            if x.dtype().is_float() {
                grads.next()
            } else {
                None
            }
        })
        .collect())
}
