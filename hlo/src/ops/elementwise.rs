//! Elementwise operations with numpy-style broadcasting, comparisons, select and casts.

use crate::error::shape_err;
use crate::ir::{BinaryOp, CompareDir, CompareKind, Prim, UnaryOp};
use crate::{DType, Tensor};

/// Something usable as the second operand of an elementwise op: a tensor of the same graph
/// or a scalar, which becomes a constant of the first operand's dtype.
pub trait Operand {
    /// This operand as a tensor in `like`'s graph (scalars take `like`'s dtype).
    fn to_tensor(&self, like: &Tensor) -> Tensor;
    /// The tensor, when this operand is one (not a scalar).
    fn as_tensor(&self) -> Option<&Tensor> {
        None
    }
}

impl Operand for Tensor {
    fn to_tensor(&self, _: &Tensor) -> Tensor {
        self.clone()
    }
    fn as_tensor(&self) -> Option<&Tensor> {
        Some(self)
    }
}

impl Operand for &Tensor {
    fn to_tensor(&self, _: &Tensor) -> Tensor {
        (*self).clone()
    }
    fn as_tensor(&self) -> Option<&Tensor> {
        Some(self)
    }
}

// Scalars become splat constants of the other operand's whole type, so that no broadcast
// is needed. Only `f64` and `i64` implement it, so unsuffixed literals work.
impl Operand for f64 {
    fn to_tensor(&self, like: &Tensor) -> Tensor {
        like.graph().full(*self, like.ty())
    }
}

impl Operand for i64 {
    fn to_tensor(&self, like: &Tensor) -> Tensor {
        like.graph().full_i64(*self, like.ty())
    }
}

/// The numpy broadcast of two shapes, if they are compatible.
pub fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let rank = a.len().max(b.len());
    let pad = |s: &[i64], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (pad(a, i), pad(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Tensor {
    /// Applies a binary op after broadcasting both operands to a common shape.
    pub fn binary(&self, op: BinaryOp, other: impl Operand) -> Tensor {
        let other = other.to_tensor(self);
        let name = Prim::Binary(op).name();
        let Some((a, b)) = self.broadcast_pair(name, &other) else {
            return self.graph().poisoned(self.ty().clone());
        };
        self.graph().push1(Prim::Binary(op), &[&a, &b])
    }

    /// Both operands broadcast to their common shape; records an error naming both types.
    pub(crate) fn broadcast_pair(&self, op: &str, other: &Tensor) -> Option<(Tensor, Tensor)> {
        if self.is_poisoned() || other.is_poisoned() {
            return None;
        }
        if self.dtype() != other.dtype() {
            self.graph().record_error(shape_err(
                op,
                format!(
                    "operand dtypes differ: {} vs {} (cast one with .cast())",
                    self.ty(),
                    other.ty()
                ),
            ));
            return None;
        }
        let Some(shape) = broadcast_shapes(self.shape(), other.shape()) else {
            self.graph().record_error(shape_err(
                op,
                format!("shapes {} and {} do not broadcast", self.ty(), other.ty()),
            ));
            return None;
        };
        Some((self.broadcast_to(&shape), other.broadcast_to(&shape)))
    }

    /// Applies a unary op.
    pub fn unary(&self, op: UnaryOp) -> Tensor {
        self.graph().push1(Prim::Unary(op), &[self])
    }

    /// Elementwise maximum.
    pub fn maximum(&self, other: impl Operand) -> Tensor {
        self.binary(BinaryOp::Max, other)
    }
    /// Elementwise minimum.
    pub fn minimum(&self, other: impl Operand) -> Tensor {
        self.binary(BinaryOp::Min, other)
    }
    /// Elementwise power (floats).
    pub fn pow(&self, exponent: impl Operand) -> Tensor {
        self.binary(BinaryOp::Pow, exponent)
    }
    /// Logical or bitwise and.
    pub fn and(&self, other: impl Operand) -> Tensor {
        self.binary(BinaryOp::And, other)
    }
    /// Logical or bitwise or.
    pub fn or(&self, other: impl Operand) -> Tensor {
        self.binary(BinaryOp::Or, other)
    }
    /// Logical or bitwise exclusive or.
    pub fn xor(&self, other: impl Operand) -> Tensor {
        self.binary(BinaryOp::Xor, other)
    }
    /// Integer shift left.
    pub fn shift_left(&self, bits: impl Operand) -> Tensor {
        self.binary(BinaryOp::ShiftLeft, bits)
    }
    /// Integer logical shift right.
    pub fn shift_right_logical(&self, bits: impl Operand) -> Tensor {
        self.binary(BinaryOp::ShiftRightLogical, bits)
    }

    /// `-x`.
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// `|x|`.
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// Sign: -1, 0 or 1.
    pub fn sign(&self) -> Tensor {
        self.unary(UnaryOp::Sign)
    }
    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// `log(1 + x)`.
    pub fn log1p(&self) -> Tensor {
        self.unary(UnaryOp::Log1p)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Logistic)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        self.unary(UnaryOp::Rsqrt)
    }
    /// Sine.
    pub fn sin(&self) -> Tensor {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine.
    pub fn cos(&self) -> Tensor {
        self.unary(UnaryOp::Cos)
    }
    /// The error function.
    pub fn erf(&self) -> Tensor {
        self.unary(UnaryOp::Erf)
    }
    /// Logical or bitwise not.
    pub fn not(&self) -> Tensor {
        self.unary(UnaryOp::Not)
    }
    /// `x * x`.
    pub fn square(&self) -> Tensor {
        self * self
    }

    /// Elementwise comparison after broadcasting; the kind follows the dtype.
    pub fn compare(&self, dir: CompareDir, other: impl Operand) -> Tensor {
        let other = other.to_tensor(self);
        let Some((a, b)) = self.broadcast_pair("compare", &other) else {
            return self.graph().poisoned(self.ty().with_dtype(DType::I1));
        };
        let kind = CompareKind::for_dtype(a.dtype());
        self.graph().push1(Prim::Compare { dir, kind }, &[&a, &b])
    }
    /// `x == y`.
    pub fn eq(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Eq, other)
    }
    /// `x != y`.
    pub fn ne(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Ne, other)
    }
    /// `x < y`.
    pub fn lt(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Lt, other)
    }
    /// `x <= y`.
    pub fn le(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Le, other)
    }
    /// `x > y`.
    pub fn gt(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Gt, other)
    }
    /// `x >= y`.
    pub fn ge(&self, other: impl Operand) -> Tensor {
        self.compare(CompareDir::Ge, other)
    }

    /// `pred ? on_true : on_false` elementwise, with all three broadcast to one shape.
    /// `self` is the `i1` predicate; a scalar operand takes the dtype of the tensor operand.
    pub fn select(&self, on_true: impl Operand, on_false: impl Operand) -> Tensor {
        let Some(like) = on_true.as_tensor().or(on_false.as_tensor()).cloned() else {
            return self.graph().fail(
                shape_err(
                    "select",
                    "at least one of the two branches must be a tensor",
                ),
                self.ty().clone(),
            );
        };
        let (t, f) = (on_true.to_tensor(&like), on_false.to_tensor(&like));
        let Some((t, f)) = t.broadcast_pair("select", &f) else {
            return self.graph().poisoned(like.ty().clone());
        };
        let Some(shape) = broadcast_shapes(self.shape(), t.shape()) else {
            return self.graph().fail(
                shape_err(
                    "select",
                    format!(
                        "predicate {} and operands {} do not broadcast",
                        self.ty(),
                        t.ty()
                    ),
                ),
                t.ty().clone(),
            );
        };
        let (p, t, f) = (
            self.broadcast_to(&shape),
            t.broadcast_to(&shape),
            f.broadcast_to(&shape),
        );
        self.graph().push1(Prim::Select, &[&p, &t, &f])
    }

    /// Free-function form of [`Tensor::select`]: `where_(pred, a, b)`.
    pub fn where_(pred: &Tensor, on_true: impl Operand, on_false: impl Operand) -> Tensor {
        pred.select(on_true, on_false)
    }

    /// Numeric conversion (no equation when the dtype is already `dtype`).
    pub fn cast(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        self.graph().push1(Prim::Convert { to: dtype }, &[self])
    }

    /// Reinterprets the bits as `dtype` of the same width.
    pub fn bitcast(&self, dtype: DType) -> Tensor {
        self.graph()
            .push1(Prim::BitcastConvert { to: dtype }, &[self])
    }

    /// The identity whose gradient is zero.
    pub fn stop_gradient(&self) -> Tensor {
        self.graph().push1(Prim::StopGradient, &[self])
    }
}
