//! Gather and scatter: embedding lookups, one-hot encodings and their gradients.

use crate::ir::{GatherDims, Prim, ScatterDims};
use crate::{DType, Tensor, TensorType};

impl Tensor {
    /// StableHLO gather of slices of `self` at `indices`.
    pub fn gather(&self, indices: &Tensor, dims: GatherDims, slice_sizes: &[i64]) -> Tensor {
        let prim = Prim::Gather {
            dims,
            slice_sizes: slice_sizes.to_vec(),
            indices_are_sorted: false,
        };
        self.graph().push1(prim, &[self, indices])
    }

    /// StableHLO scatter that adds `updates` into `self` at `indices`.
    pub fn scatter_add(&self, indices: &Tensor, updates: &Tensor, dims: ScatterDims) -> Tensor {
        let prim = Prim::ScatterAdd {
            dims,
            indices_are_sorted: false,
            unique_indices: false,
        };
        self.graph().push1(prim, &[self, indices, updates])
    }

    /// Numpy `take`: the entries of `self` at integer `indices` along `axis`. The result has
    /// shape `self.shape[..axis] ++ indices.shape ++ self.shape[axis+1..]`; an embedding
    /// lookup is `table.take(&ids, 0)`. Out-of-range indices are clamped.
    pub fn take(&self, indices: &Tensor, axis: isize) -> Tensor {
        let Some(a) = self.axis("take", axis) else {
            return self.graph().poisoned(self.ty().clone());
        };
        let ir = indices.rank();
        let offset_dims: Vec<usize> = (0..a).chain(a + ir..self.rank() + ir - 1).collect();
        let mut slice_sizes = self.shape().to_vec();
        slice_sizes[a] = 1;
        let dims = GatherDims {
            offset_dims,
            collapsed_slice_dims: vec![a],
            start_index_map: vec![a],
            index_vector_dim: ir,
        };
        self.gather(indices, dims, &slice_sizes)
    }

    /// One-hot encoding of integer `self` over `num_classes` as a new last axis of `dtype`.
    pub fn one_hot(&self, num_classes: i64, dtype: DType) -> Tensor {
        let mut shape = self.shape().to_vec();
        shape.push(num_classes);
        let classes = self
            .graph()
            .iota(&TensorType::new(self.dtype(), &shape), shape.len() - 1);
        let labels = self.expand_dims(-1).broadcast_to(&shape);
        let out = TensorType::new(dtype, &shape);
        let g = self.graph();
        labels.eq(&classes).select(g.ones(&out), g.zeros(&out))
    }
}
