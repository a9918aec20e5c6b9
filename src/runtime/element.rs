//! Element types of device buffers and their host representations.

use std::ffi::c_int;

/// Element type of a device buffer (the subset of `PJRT_Buffer_Type` vishwam uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// Boolean, one byte per element.
    Pred,
    /// Signed 8-bit integer.
    S8,
    /// Signed 32-bit integer.
    S32,
    /// Signed 64-bit integer.
    S64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// bfloat16.
    BF16,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, finite (no infinities).
    F8E4M3FN,
}

impl ElementType {
    /// Every element type vishwam supports.
    pub const ALL: [ElementType; 13] = [
        ElementType::Pred,
        ElementType::S8,
        ElementType::S32,
        ElementType::S64,
        ElementType::U8,
        ElementType::U32,
        ElementType::U64,
        ElementType::F16,
        ElementType::F32,
        ElementType::F64,
        ElementType::BF16,
        ElementType::F8E5M2,
        ElementType::F8E4M3FN,
    ];

    /// Bytes per element on the host.
    pub fn size_in_bytes(self) -> usize {
        use ElementType::*;
        match self {
            Pred | S8 | U8 | F8E5M2 | F8E4M3FN => 1,
            F16 | BF16 => 2,
            S32 | U32 | F32 => 4,
            S64 | U64 | F64 => 8,
        }
    }

    /// The `PJRT_Buffer_Type` value.
    pub fn to_raw(self) -> c_int {
        use ElementType::*;
        match self {
            Pred => 1,
            S8 => 2,
            S32 => 4,
            S64 => 5,
            U8 => 6,
            U32 => 8,
            U64 => 9,
            F16 => 10,
            F32 => 11,
            F64 => 12,
            BF16 => 13,
            F8E5M2 => 16,
            F8E4M3FN => 17,
        }
    }

    /// From a `PJRT_Buffer_Type` value.
    pub fn from_raw(raw: c_int) -> Option<ElementType> {
        ElementType::ALL.into_iter().find(|t| t.to_raw() == raw)
    }

    /// The StableHLO name of the type (`f32`, `bf16`, `i1`, `ui8`, ...).
    pub fn mlir_name(self) -> &'static str {
        use ElementType::*;
        match self {
            Pred => "i1",
            S8 => "i8",
            S32 => "i32",
            S64 => "i64",
            U8 => "ui8",
            U32 => "ui32",
            U64 => "ui64",
            F16 => "f16",
            F32 => "f32",
            F64 => "f64",
            BF16 => "bf16",
            F8E5M2 => "f8E5M2",
            F8E4M3FN => "f8E4M3FN",
        }
    }
}

/// A Rust scalar type that has a device element type and a plain byte layout.
pub trait NativeType: bytemuck::Pod {
    /// The matching device element type.
    const ELEMENT_TYPE: ElementType;
}

macro_rules! native {
    ($($t:ty => $e:ident),*) => {$(
        impl NativeType for $t {
            const ELEMENT_TYPE: ElementType = ElementType::$e;
        }
    )*};
}
native!(i8 => S8, i32 => S32, i64 => S64, u8 => U8, u32 => U32, u64 => U64, f32 => F32,
        f64 => F64, half::f16 => F16, half::bf16 => BF16);
