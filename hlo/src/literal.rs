//! Constant data: a splat element or dense little-endian bytes, and exact scalar encoding.

use crate::DType;
use std::sync::Arc;

/// The data of a constant, stored exactly as little-endian element bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// One element repeated over the whole shape.
    Splat(Vec<u8>),
    /// Every element, row-major (`i1` takes one byte per element, 0 or 1).
    Dense(Arc<[u8]>),
}

impl Literal {
    /// A splat of `value` converted to `dtype` (rounded to nearest even for floats,
    /// truncated toward zero and saturated for integers, `value != 0` for `i1`).
    pub fn splat_f64(value: f64, dtype: DType) -> Literal {
        Literal::Splat(encode_f64(value, dtype))
    }

    /// A splat of an integer `value` (wrapping to the width of `dtype`; converted for floats).
    pub fn splat_i64(value: i64, dtype: DType) -> Literal {
        Literal::Splat(encode_i64(value, dtype))
    }
}

/// Encodes one element of `dtype` from an `f64`.
pub fn encode_f64(value: f64, dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => (value as f32).to_le_bytes().to_vec(),
        DType::F64 => value.to_le_bytes().to_vec(),
        DType::BF16 => half::bf16::from_f64(value).to_le_bytes().to_vec(),
        DType::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
        DType::F8E4M3FN => vec![encode_f8(value, F8E4M3FN)],
        DType::F8E5M2 => vec![encode_f8(value, F8E5M2)],
        DType::I32 => (value as i32).to_le_bytes().to_vec(),
        DType::I64 => (value as i64).to_le_bytes().to_vec(),
        DType::U32 => (value as u32).to_le_bytes().to_vec(),
        DType::U8 => vec![value as u8],
        DType::U64 => (value as u64).to_le_bytes().to_vec(),
        DType::I1 => vec![u8::from(value != 0.0)],
    }
}

/// Encodes one element of `dtype` from an `i64` (wrapping for narrower integers).
pub fn encode_i64(value: i64, dtype: DType) -> Vec<u8> {
    match dtype {
        DType::I32 | DType::U32 => (value as u32).to_le_bytes().to_vec(),
        DType::I64 | DType::U64 => value.to_le_bytes().to_vec(),
        DType::U8 => vec![value as u8],
        DType::I1 => vec![u8::from(value != 0)],
        DType::F32 | DType::F64 | DType::BF16 | DType::F16 | DType::F8E4M3FN | DType::F8E5M2 => {
            encode_f64(value as f64, dtype)
        }
    }
}

/// Decodes one float element (any float dtype) to `f64`; `None` for non-float dtypes.
pub fn decode_float(bytes: &[u8], dtype: DType) -> Option<f64> {
    Some(match dtype {
        DType::F32 => f32::from_le_bytes(bytes.try_into().ok()?) as f64,
        DType::F64 => f64::from_le_bytes(bytes.try_into().ok()?),
        DType::BF16 => half::bf16::from_le_bytes(bytes.try_into().ok()?).to_f64(),
        DType::F16 => half::f16::from_le_bytes(bytes.try_into().ok()?).to_f64(),
        DType::F8E4M3FN => decode_f8(*bytes.first()?, F8E4M3FN),
        DType::F8E5M2 => decode_f8(*bytes.first()?, F8E5M2),
        DType::I32 | DType::I64 | DType::U32 | DType::U8 | DType::U64 | DType::I1 => return None,
    })
}

/// Layout of an 8-bit float format.
#[derive(Clone, Copy)]
struct F8Format {
    mantissa_bits: u32,
    bias: i32,
    /// True for the `FN` formats: no infinities, only the all-ones pattern is NaN.
    finite_only: bool,
}

const F8E4M3FN: F8Format = F8Format {
    mantissa_bits: 3,
    bias: 7,
    finite_only: true,
};
const F8E5M2: F8Format = F8Format {
    mantissa_bits: 2,
    bias: 15,
    finite_only: false,
};

fn decode_f8(code: u8, f: F8Format) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp_field = ((code & 0x7f) >> f.mantissa_bits) as i32;
    let man = (code & ((1 << f.mantissa_bits) - 1)) as f64;
    let exp_max: i32 = 0x7f >> f.mantissa_bits;
    let scale = (1u32 << f.mantissa_bits) as f64;
    if f.finite_only && code & 0x7f == 0x7f {
        return f64::NAN;
    }
    if !f.finite_only && exp_field == exp_max {
        return if man == 0.0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    if exp_field == 0 {
        sign * man / scale * 2f64.powi(1 - f.bias)
    } else {
        sign * (1.0 + man / scale) * 2f64.powi(exp_field - f.bias)
    }
}

/// Rounds to the nearest representable value (ties to even); overflow gives infinity, or
/// NaN in the finite-only formats.
fn encode_f8(value: f64, f: F8Format) -> u8 {
    let sign: u8 = if value.is_sign_negative() { 0x80 } else { 0 };
    let nan = if f.finite_only { 0x7f } else { 0x7e };
    if value.is_nan() {
        return nan;
    }
    let inf_or_nan = if f.finite_only {
        sign | nan
    } else {
        sign | 0x7c
    };
    let a = value.abs();
    let finite: Vec<u8> = (0u8..0x80)
        .filter(|&c| decode_f8(c, f).is_finite())
        .collect();
    let max_code = *finite.last().unwrap_or(&0);
    let max = decode_f8(max_code, f);
    let ulp_at_max = max - decode_f8(max_code - 1, f);
    if a >= max + ulp_at_max / 2.0 {
        return inf_or_nan;
    }
    let mut best = 0u8;
    let mut best_err = f64::INFINITY;
    for &c in &finite {
        let err = (decode_f8(c, f) - a).abs();
        if err < best_err || (err == best_err && c & 1 == 0) {
            best = c;
            best_err = err;
        }
    }
    sign | best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8_round_trips_and_rounds_to_nearest_even() {
        assert_eq!(encode_f64(1.0, DType::F8E4M3FN), vec![0x38]);
        assert_eq!(encode_f64(448.0, DType::F8E4M3FN), vec![0x7e]);
        assert_eq!(encode_f64(-2.0, DType::F8E5M2), vec![0xc0]);
        assert!(
            decode_float(&encode_f64(1000.0, DType::F8E4M3FN), DType::F8E4M3FN)
                .unwrap()
                .is_nan()
        );
        assert_eq!(encode_f64(f64::INFINITY, DType::F8E5M2), vec![0x7c]);
        // 1.0625 lies halfway between 1.0 (even) and 1.125 in E4M3: ties to even.
        assert_eq!(encode_f64(1.0625, DType::F8E4M3FN), vec![0x38]);
        for code in 0u8..=255 {
            let v = decode_f8(code, F8E5M2);
            if v.is_finite() && !(v == 0.0 && code == 0x80) {
                assert_eq!(encode_f8(v, F8E5M2), code, "code {code:#x}");
            }
        }
    }

    #[test]
    fn integers_wrap_to_width() {
        assert_eq!(encode_i64(-1, DType::U32), vec![0xff; 4]);
        assert_eq!(
            encode_i64(0x3f80_0000, DType::I32),
            0x3f80_0000i32.to_le_bytes().to_vec()
        );
        assert_eq!(
            encode_f64(2.0, DType::BF16),
            half::bf16::from_f32(2.0).to_le_bytes().to_vec()
        );
    }
}
