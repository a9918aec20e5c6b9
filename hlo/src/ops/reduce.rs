//! Reductions: sum, max, min, mean, argmax, and several operands at once by a traced
//! combiner, over axes.

use super::control::{nested, trace_region};
use crate::error::shape_err;
use crate::infer::remove_dims;
use crate::ir::{Prim, ReduceKind};
use crate::{DType, Graph, Tensor, TensorType};
use std::sync::Arc;

impl Graph {
    /// Reduces `operands` (all of one shape) over `axes` together, from the scalar `inits`
    /// (one per operand, of its dtype), with `combine(graph, accumulators, elements)`
    /// returning the new accumulators; returns one result per operand, without `axes`.
    /// `combine` must be associative and commutative (the backend combines partial results
    /// in any order and tree shape), and the result is not differentiable: use it under
    /// `stop_gradient` or inside a custom VJP.
    pub fn reduce_with(
        &self,
        operands: &[Tensor],
        inits: &[Tensor],
        axes: &[isize],
        combine: impl FnOnce(&Graph, &[Tensor], &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let Some(first) = operands.first() else {
            self.record_error(shape_err("reduce_with", "needs at least one operand"));
            return Vec::new();
        };
        if inits.len() != operands.len() {
            self.record_error(shape_err(
                "reduce_with",
                format!(
                    "needs one initial value per operand, got {} operands and {} initial values",
                    operands.len(),
                    inits.len()
                ),
            ));
            return operands
                .iter()
                .map(|t| self.poisoned(t.ty().clone()))
                .collect();
        }
        let Some(dims) = first.axes("reduce_with", axes) else {
            return operands
                .iter()
                .map(|t| self.poisoned(t.ty().clone()))
                .collect();
        };
        let n = operands.len();
        let scalars: Vec<TensorType> = operands
            .iter()
            .map(|t| TensorType::scalar(t.dtype()))
            .collect();
        let params: Vec<TensorType> = scalars.iter().chain(&scalars).cloned().collect();
        match trace_region("reduce_with_combiner", &params, |g, xs| {
            combine(g, &xs[..n], &xs[n..])
        }) {
            Ok(body) => {
                let inputs: Vec<&Tensor> = operands.iter().chain(inits).collect();
                self.push(
                    Prim::ReduceWith {
                        dims,
                        body: Arc::new(body),
                    },
                    &inputs,
                )
            }
            Err(e) => {
                self.record_error(nested("reduce_with", *e.error));
                operands
                    .iter()
                    .map(|t| self.poisoned(remove_dims(t.ty(), &dims)))
                    .collect()
            }
        }
    }
}

impl Tensor {
    /// Reduces `axes` with `kind`; `keepdims` leaves them as size-1 dims.
    pub fn reduce(&self, kind: ReduceKind, axes: &[isize], keepdims: bool) -> Tensor {
        let Some(dims) = self.axes("reduce", axes) else {
            return self.graph().poisoned(self.ty().clone());
        };
        if dims.is_empty() {
            return self.clone();
        }
        let out = self.graph().push1(
            Prim::Reduce {
                kind,
                dims: dims.clone(),
            },
            &[self],
        );
        if keepdims {
            let shape: Vec<i64> = (0..self.rank())
                .map(|d| {
                    if dims.contains(&d) {
                        1
                    } else {
                        self.shape()[d]
                    }
                })
                .collect();
            out.reshape(&shape)
        } else {
            out
        }
    }

    /// Sum over `axes`.
    pub fn sum(&self, axes: &[isize], keepdims: bool) -> Tensor {
        self.reduce(ReduceKind::Sum, axes, keepdims)
    }

    /// Maximum over `axes`.
    pub fn max(&self, axes: &[isize], keepdims: bool) -> Tensor {
        self.reduce(ReduceKind::Max, axes, keepdims)
    }

    /// Minimum over `axes`.
    pub fn min(&self, axes: &[isize], keepdims: bool) -> Tensor {
        self.reduce(ReduceKind::Min, axes, keepdims)
    }

    /// Mean over `axes` (floats).
    pub fn mean(&self, axes: &[isize], keepdims: bool) -> Tensor {
        let Some(dims) = self.axes("mean", axes) else {
            return self.graph().poisoned(self.ty().clone());
        };
        let count: i64 = dims.iter().map(|&d| self.shape()[d]).product();
        self.sum(axes, keepdims) * (1.0 / count as f64)
    }

    /// Sum of all elements (a scalar).
    pub fn sum_all(&self) -> Tensor {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&axes, false)
    }

    /// Mean of all elements (a scalar).
    pub fn mean_all(&self) -> Tensor {
        let axes: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&axes, false)
    }

    /// Index of the maximum along `axis` as `index_dtype` (the first one on ties; NaN counts
    /// as the maximum). Not differentiable (integer result).
    pub fn argmax(&self, axis: isize, index_dtype: DType) -> Tensor {
        let Some(dim) = self.axis("argmax", axis) else {
            return self.graph().poisoned(self.ty().with_dtype(index_dtype));
        };
        self.graph()
            .push1(Prim::Argmax { dim, index_dtype }, &[self])
    }
}

impl Tensor {
    /// Reduces sorted, distinct `dims` (no equation when empty).
    pub(crate) fn reduce_dims(&self, kind: ReduceKind, dims: Vec<usize>) -> Tensor {
        if dims.is_empty() {
            return self.clone();
        }
        self.graph().push1(Prim::Reduce { kind, dims }, &[self])
    }
}
