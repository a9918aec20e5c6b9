//! `+ - * /` and unary `-` on tensors, references and scalars. Scalars are `f64` or `i64`
//! only, so that literals like `x * 0.5` or `i + 1` need no suffix.

use crate::ir::BinaryOp;
use crate::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary($op, &rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                self.binary($op, &rhs)
            }
        }
        binary_operator!(@scalar $trait, $method, $op, f64);
        binary_operator!(@scalar $trait, $method, $op, i64);
    };
    (@scalar $trait:ident, $method:ident, $op:expr, $scalar:ty) => {
        impl $trait<$scalar> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $scalar) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl $trait<$scalar> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $scalar) -> Tensor {
                self.binary($op, rhs)
            }
        }
        impl $trait<&Tensor> for $scalar {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                crate::Operand::to_tensor(&self, rhs).binary($op, rhs)
            }
        }
        impl $trait<Tensor> for $scalar {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                crate::Operand::to_tensor(&self, &rhs).binary($op, &rhs)
            }
        }
    };
}

binary_operator!(Add, add, BinaryOp::Add);
binary_operator!(Sub, sub, BinaryOp::Sub);
binary_operator!(Mul, mul, BinaryOp::Mul);
binary_operator!(Div, div, BinaryOp::Div);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
