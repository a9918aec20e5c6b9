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

/// Decodes an `f8E4M3FN` byte (bias 7, no infinities, 0x7f/0xff are NaN).
pub fn f8e4m3fn_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((byte >> 3) & 0x0f) as i32;
    let man = (byte & 0x07) as f32;
    if exp == 0x0f && byte & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// Decodes an `f8E5M2` byte (bias 15, IEEE-style infinities and NaNs).
pub fn f8e5m2_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((byte >> 2) & 0x1f) as i32;
    let man = (byte & 0x03) as f32;
    match exp {
        0x1f if man == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        0 => sign * man / 4.0 * 2f32.powi(-14),
        _ => sign * (1.0 + man / 4.0) * 2f32.powi(exp - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_codes_round_trip() {
        for t in ElementType::ALL {
            assert_eq!(ElementType::from_raw(t.to_raw()), Some(t));
        }
        assert_eq!(ElementType::from_raw(0), None);
    }

    #[test]
    fn f8_decoding_matches_known_values() {
        assert_eq!(f8e4m3fn_to_f32(0x7e), 448.0);
        assert_eq!(f8e4m3fn_to_f32(0x38), 1.0);
        assert_eq!(f8e4m3fn_to_f32(0x01), 2f32.powi(-9));
        assert!(f8e4m3fn_to_f32(0x7f).is_nan());
        assert_eq!(f8e5m2_to_f32(0x7b), 57344.0);
        assert_eq!(f8e5m2_to_f32(0x3c), 1.0);
        assert_eq!(f8e5m2_to_f32(0x7c), f32::INFINITY);
        assert!(f8e5m2_to_f32(0x7d).is_nan());
    }
}
