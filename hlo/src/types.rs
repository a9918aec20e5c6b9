//! Tensor types: a dtype and a static shape.

use crate::DType;
use std::fmt;

/// The type of a tensor value: element type and static shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimension sizes, major first. Empty for a scalar.
    pub shape: Vec<i64>,
}

impl TensorType {
    /// A tensor type of `dtype` and `shape`.
    pub fn new(dtype: DType, shape: &[i64]) -> Self {
        TensorType {
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// A scalar (rank 0) type.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn size_bytes(&self) -> usize {
        self.num_elements() as usize * self.dtype.size_bytes()
    }

    /// The same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// The MLIR type, e.g. `tensor<8x4xf32>` or `tensor<f32>`.
    pub fn mlir(&self) -> String {
        let mut s = String::with_capacity(16);
        self.write_mlir(&mut s);
        s
    }

    /// Appends the MLIR type to `out`.
    pub fn write_mlir(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("tensor<");
        for d in &self.shape {
            let _ = write!(out, "{d}x");
        }
        out.push_str(self.dtype.mlir_name());
        out.push('>');
    }
}

impl fmt::Display for TensorType {
    /// Short form used in error messages, e.g. `f32[8,4]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_short_and_mlir_forms() {
        let t = TensorType::new(DType::F32, &[8, 4]);
        assert_eq!(t.to_string(), "f32[8,4]");
        assert_eq!(t.mlir(), "tensor<8x4xf32>");
        assert_eq!(TensorType::scalar(DType::BF16).mlir(), "tensor<bf16>");
        assert_eq!(t.num_elements(), 32);
        assert_eq!(t.size_bytes(), 128);
    }
}
