//! Element types.

use std::fmt;

/// An element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// bfloat16.
    BF16,
    /// IEEE half precision.
    F16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, finite (no infinities).
    F8E4M3FN,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8E5M2,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 64-bit integer (random-number-generator state).
    U64,
    /// Boolean (predicate).
    I1,
}

impl DType {
    /// Every dtype, for tests and tables.
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F64,
        DType::BF16,
        DType::F16,
        DType::F8E4M3FN,
        DType::F8E5M2,
        DType::I32,
        DType::I64,
        DType::U32,
        DType::U8,
        DType::U64,
        DType::I1,
    ];

    /// The MLIR element type name, e.g. `f32`, `bf16`, `f8E4M3FN`, `ui32`, `i1`.
    pub fn mlir_name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F8E4M3FN => "f8E4M3FN",
            DType::F8E5M2 => "f8E5M2",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U32 => "ui32",
            DType::U8 => "ui8",
            DType::U64 => "ui64",
            DType::I1 => "i1",
        }
    }

    /// Bytes per element as stored in host buffers (`i1` takes one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::F8E4M3FN | DType::F8E5M2 | DType::U8 | DType::I1 => 1,
        }
    }

    /// True for floating-point types (the only ones that carry gradients).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::F64 | DType::BF16 | DType::F16 | DType::F8E4M3FN | DType::F8E5M2
        )
    }

    /// True for signed and unsigned integers (not `i1`).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I32 | DType::I64 | DType::U32 | DType::U8 | DType::U64
        )
    }

    /// True for unsigned integers.
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U32 | DType::U8 | DType::U64)
    }

    /// True for the boolean type `i1`.
    pub fn is_bool(self) -> bool {
        self == DType::I1
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mlir_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sizes_and_kinds() {
        assert_eq!(DType::F8E4M3FN.mlir_name(), "f8E4M3FN");
        assert_eq!(DType::U32.mlir_name(), "ui32");
        assert_eq!(DType::BF16.size_bytes(), 2);
        assert_eq!(DType::U64.size_bytes(), 8);
        let floats: Vec<DType> = DType::ALL.into_iter().filter(|d| d.is_float()).collect();
        assert_eq!(floats.len(), 6);
        assert!(!DType::I1.is_integer() && DType::I1.is_bool());
        assert!(DType::U8.is_unsigned() && !DType::I32.is_unsigned());
    }
}
