//! Matrix products.

use crate::error::shape_err;
use crate::ir::{DotDims, Prim};
use crate::{DType, Tensor};

impl Tensor {
    /// `dot_general` with the result in the left operand's dtype.
    pub fn dot_general(&self, rhs: &Tensor, dims: DotDims) -> Tensor {
        self.dot_general_to(rhs, dims, self.dtype())
    }

    /// `dot_general` with the result in `out_dtype` (e.g. bf16 inputs, f32 result).
    pub fn dot_general_to(&self, rhs: &Tensor, dims: DotDims, out_dtype: DType) -> Tensor {
        self.graph()
            .push1(Prim::DotGeneral { dims, out_dtype }, &[self, rhs])
    }

    /// Matrix product. `[.., m, k] @ [k, n]` contracts the last dim with the first (any
    /// leading dims of `self` are kept); `[b.., m, k] @ [b.., k, n]` batches over equal
    /// leading dims.
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        let (lr, rr) = (self.rank(), rhs.rank());
        let dims = if lr >= 1 && rr == 2 {
            DotDims {
                lhs_contract: vec![lr - 1],
                rhs_contract: vec![0],
                ..Default::default()
            }
        } else if lr >= 3 && lr == rr {
            let batch: Vec<usize> = (0..lr - 2).collect();
            DotDims {
                lhs_batch: batch.clone(),
                rhs_batch: batch,
                lhs_contract: vec![lr - 1],
                rhs_contract: vec![rr - 2],
            }
        } else {
            return self.graph().fail(
                shape_err(
                    "matmul",
                    format!(
                        "cannot multiply {} by {} (need rhs of rank 2, or equal ranks >= 3)",
                        self.ty(),
                        rhs.ty()
                    ),
                ),
                self.ty().clone(),
            );
        };
        self.dot_general(rhs, dims)
    }
}
