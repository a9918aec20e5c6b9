//! Constants and iota.

use crate::graph::Graph;
use crate::ir::Prim;
use crate::literal::Literal;
use crate::{DType, Tensor, TensorType};
use std::sync::Arc;

impl Graph {
    /// A scalar constant `value` of `dtype` (rounded to nearest for floats).
    pub fn scalar(&self, value: f64, dtype: DType) -> Tensor {
        self.full(value, &TensorType::scalar(dtype))
    }

    /// A scalar integer constant of `dtype`.
    pub fn scalar_i64(&self, value: i64, dtype: DType) -> Tensor {
        self.full_i64(value, &TensorType::scalar(dtype))
    }

    /// A constant of type `ty` with every element `value`.
    pub fn full(&self, value: f64, ty: &TensorType) -> Tensor {
        let value = Literal::splat_f64(value, ty.dtype);
        self.push1(
            Prim::Constant {
                ty: ty.clone(),
                value,
            },
            &[],
        )
    }

    /// A constant of type `ty` with every element the integer `value`.
    pub fn full_i64(&self, value: i64, ty: &TensorType) -> Tensor {
        let value = Literal::splat_i64(value, ty.dtype);
        self.push1(
            Prim::Constant {
                ty: ty.clone(),
                value,
            },
            &[],
        )
    }

    /// Zeros of type `ty`.
    pub fn zeros(&self, ty: &TensorType) -> Tensor {
        self.full(0.0, ty)
    }

    /// Ones of type `ty`.
    pub fn ones(&self, ty: &TensorType) -> Tensor {
        self.full(1.0, ty)
    }

    /// A constant from raw little-endian element bytes (`i1`: one byte, 0 or 1, each).
    pub fn constant_bytes(&self, ty: &TensorType, bytes: Vec<u8>) -> Tensor {
        let value = Literal::Dense(Arc::from(bytes));
        self.push1(
            Prim::Constant {
                ty: ty.clone(),
                value,
            },
            &[],
        )
    }

    /// An `f32` constant of `shape` from row-major data.
    pub fn constant_f32(&self, data: &[f32], shape: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_bytes(&TensorType::new(DType::F32, shape), bytes)
    }

    /// An `f64` constant of `shape` from row-major data.
    pub fn constant_f64(&self, data: &[f64], shape: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_bytes(&TensorType::new(DType::F64, shape), bytes)
    }

    /// An `i32` constant of `shape` from row-major data.
    pub fn constant_i32(&self, data: &[i32], shape: &[i64]) -> Tensor {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_bytes(&TensorType::new(DType::I32, shape), bytes)
    }

    /// `0, 1, 2, ...` along `dim` of type `ty`.
    pub fn iota(&self, ty: &TensorType, dim: usize) -> Tensor {
        self.push1(
            Prim::Iota {
                ty: ty.clone(),
                dim,
            },
            &[],
        )
    }
}

impl Tensor {
    /// Zeros of this tensor's type.
    pub fn zeros_like(&self) -> Tensor {
        self.graph().zeros(self.ty())
    }

    /// Ones of this tensor's type.
    pub fn ones_like(&self) -> Tensor {
        self.graph().ones(self.ty())
    }
}
