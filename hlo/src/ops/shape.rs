//! Shape manipulation: reshape, transpose, broadcast, slices, concatenation, padding.

use crate::error::shape_err;
use crate::ir::Prim;
use crate::Tensor;

impl Tensor {
    /// Resolves a possibly negative axis (`-1` is the last); records an error if out of range.
    pub(crate) fn axis(&self, op: &str, axis: isize) -> Option<usize> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            if !self.is_poisoned() {
                self.graph().record_error(shape_err(
                    op,
                    format!("axis {axis} is out of range for {}", self.ty()),
                ));
            }
            return None;
        }
        Some(a as usize)
    }

    /// Resolves a list of axes into sorted distinct dims.
    pub(crate) fn axes(&self, op: &str, axes: &[isize]) -> Option<Vec<usize>> {
        let mut dims = axes
            .iter()
            .map(|&a| self.axis(op, a))
            .collect::<Option<Vec<_>>>()?;
        dims.sort_unstable();
        if dims.windows(2).any(|w| w[0] == w[1]) {
            self.graph()
                .record_error(shape_err(op, format!("axes {axes:?} repeat a dimension")));
            return None;
        }
        Some(dims)
    }

    /// Same elements, new shape; one entry may be `-1` to be inferred.
    pub fn reshape(&self, shape: &[i64]) -> Tensor {
        let mut shape = shape.to_vec();
        if let Some(pos) = shape.iter().position(|&d| d == -1) {
            let known: i64 = shape.iter().filter(|&&d| d != -1).product();
            let total = self.ty().num_elements();
            if known <= 0 || total % known != 0 || shape.iter().filter(|&&d| d == -1).count() > 1 {
                return self.graph().fail(
                    shape_err(
                        "reshape",
                        format!("cannot reshape {} to {shape:?}", self.ty()),
                    ),
                    self.ty().clone(),
                );
            }
            shape[pos] = total / known;
        }
        if shape == self.shape() {
            return self.clone();
        }
        self.graph().push1(Prim::Reshape { shape }, &[self])
    }

    /// Permutes dimensions: result dim `i` is dim `perm[i]` of `self`.
    pub fn transpose(&self, perm: &[usize]) -> Tensor {
        if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == self.rank() {
            return self.clone();
        }
        self.graph().push1(
            Prim::Transpose {
                perm: perm.to_vec(),
            },
            &[self],
        )
    }

    /// Swaps two axes.
    pub fn swap_axes(&self, a: isize, b: isize) -> Tensor {
        let (Some(a), Some(b)) = (self.axis("swap_axes", a), self.axis("swap_axes", b)) else {
            return self.graph().poisoned(self.ty().clone());
        };
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.transpose(&perm)
    }

    /// Broadcast: dim `i` of `self` becomes dim `dims[i]` of a result of `shape`.
    pub fn broadcast_in_dim(&self, shape: &[i64], dims: &[usize]) -> Tensor {
        if shape == self.shape() && dims.iter().enumerate().all(|(i, &d)| i == d) {
            return self.clone();
        }
        self.graph().push1(
            Prim::BroadcastInDim {
                shape: shape.to_vec(),
                dims: dims.to_vec(),
            },
            &[self],
        )
    }

    /// Numpy broadcast to `shape` (trailing dims aligned; size-1 dims stretched).
    pub fn broadcast_to(&self, shape: &[i64]) -> Tensor {
        if shape == self.shape() {
            return self.clone();
        }
        if self.rank() > shape.len() {
            return self.graph().fail(
                shape_err(
                    "broadcast",
                    format!("cannot broadcast {} to {shape:?}", self.ty()),
                ),
                self.ty().clone(),
            );
        }
        let offset = shape.len() - self.rank();
        let dims: Vec<usize> = (offset..shape.len()).collect();
        self.broadcast_in_dim(shape, &dims)
    }

    /// Inserts a size-1 dimension at `axis` (`-1` appends).
    pub fn expand_dims(&self, axis: isize) -> Tensor {
        let rank = self.rank() as isize + 1;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return self.graph().fail(
                shape_err(
                    "expand_dims",
                    format!("axis {axis} is out of range for {}", self.ty()),
                ),
                self.ty().clone(),
            );
        }
        let mut shape = self.shape().to_vec();
        shape.insert(a as usize, 1);
        self.reshape(&shape)
    }

    /// Removes the size-1 dimension `axis`.
    pub fn squeeze(&self, axis: isize) -> Tensor {
        let Some(a) = self.axis("squeeze", axis) else {
            return self.graph().poisoned(self.ty().clone());
        };
        if self.shape()[a] != 1 {
            return self.graph().fail(
                shape_err(
                    "squeeze",
                    format!("dim {a} of {} is not of size 1", self.ty()),
                ),
                self.ty().clone(),
            );
        }
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape(&shape)
    }

    /// Static strided slice.
    pub fn slice(&self, start: &[i64], limit: &[i64], stride: &[i64]) -> Tensor {
        let prim = Prim::Slice {
            start: start.to_vec(),
            limit: limit.to_vec(),
            stride: stride.to_vec(),
        };
        self.graph().push1(prim, &[self])
    }

    /// Elements `start..limit` of one axis.
    pub fn slice_axis(&self, axis: isize, start: i64, limit: i64) -> Tensor {
        let Some(a) = self.axis("slice", axis) else {
            return self.graph().poisoned(self.ty().clone());
        };
        let mut lo = vec![0; self.rank()];
        let mut hi = self.shape().to_vec();
        lo[a] = start;
        hi[a] = limit;
        self.slice(&lo, &hi, &vec![1; self.rank()])
    }

    /// Joins `self` and then `others` along `axis`.
    pub fn concat(&self, others: &[Tensor], axis: isize) -> Tensor {
        let Some(dim) = self.axis("concatenate", axis) else {
            return self.graph().poisoned(self.ty().clone());
        };
        let mut refs = vec![self];
        refs.extend(others);
        self.graph().push1(Prim::Concatenate { dim }, &refs)
    }

    /// Pads with `value` (negative `low`/`high` crop); `interior` inserts between elements.
    pub fn pad(&self, value: f64, low: &[i64], high: &[i64], interior: &[i64]) -> Tensor {
        let v = self.graph().scalar(value, self.dtype());
        self.pad_with(&v, low, high, interior)
    }

    /// [`Tensor::pad`] with a scalar tensor as the padding value.
    pub fn pad_with(&self, value: &Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> Tensor {
        let prim = Prim::Pad {
            low: low.to_vec(),
            high: high.to_vec(),
            interior: interior.to_vec(),
        };
        self.graph().push1(prim, &[self, value])
    }

    /// A slice of `sizes` starting at run-time indices (one integer scalar per dim, clamped
    /// to stay in bounds).
    pub fn dynamic_slice(&self, starts: &[Tensor], sizes: &[i64]) -> Tensor {
        let mut inputs = vec![self];
        inputs.extend(starts);
        self.graph().push1(
            Prim::DynamicSlice {
                sizes: sizes.to_vec(),
            },
            &inputs,
        )
    }

    /// `self` with the block at run-time `starts` replaced by `update`.
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[Tensor]) -> Tensor {
        let mut inputs = vec![self, update];
        inputs.extend(starts);
        self.graph().push1(Prim::DynamicUpdateSlice, &inputs)
    }
}
