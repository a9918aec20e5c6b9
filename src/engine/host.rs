//! Host arrays: typed, row-major bytes with a shape.

use crate::runtime::{ElementType, NativeType};

/// A dense row-major array in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    /// Element type.
    pub element_type: ElementType,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Row-major little-endian bytes; `len == elements * element size`.
    pub data: Vec<u8>,
}

impl HostArray {
    /// Wraps raw bytes; fails when the length does not match the shape.
    pub fn from_bytes(
        element_type: ElementType,
        shape: &[i64],
        data: Vec<u8>,
    ) -> Result<HostArray, String> {
        let expected = shape.iter().product::<i64>() as usize * element_type.size_in_bytes();
        if data.len() != expected || shape.iter().any(|&d| d < 0) {
            return Err(format!(
                "{} bytes do not form a {}{shape:?} array ({expected} bytes)",
                data.len(),
                element_type.mlir_name()
            ));
        }
        Ok(HostArray {
            element_type,
            shape: shape.to_vec(),
            data,
        })
    }

    /// From native scalars; fails when the count does not match the shape.
    pub fn from_slice<T: NativeType>(shape: &[i64], values: &[T]) -> Result<HostArray, String> {
        HostArray::from_bytes(
            T::ELEMENT_TYPE,
            shape,
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// A scalar.
    pub fn scalar<T: NativeType>(value: T) -> HostArray {
        HostArray {
            element_type: T::ELEMENT_TYPE,
            shape: Vec::new(),
            data: bytemuck::bytes_of(&value).to_vec(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }

    /// True for arrays with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as native scalars (a copy), checking the element type.
    pub fn to_vec<T: NativeType>(&self) -> Result<Vec<T>, String> {
        if self.element_type != T::ELEMENT_TYPE {
            return Err(format!(
                "array holds {:?}, asked for {:?}",
                self.element_type,
                T::ELEMENT_TYPE
            ));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.data))
    }

    /// The elements converted to f32 (floating and integer types; f8 decoded).
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.len();
        let e = self.element_type.size_in_bytes();
        let d = &self.data;
        let at = |i: usize| &d[i * e..(i + 1) * e];
        (0..n)
            .map(|i| {
                let s = at(i);
                match self.element_type {
                    ElementType::F32 => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                    ElementType::F64 => f64::from_le_bytes(s.try_into().unwrap_or_default()) as f32,
                    ElementType::BF16 => half::bf16::from_le_bytes([s[0], s[1]]).to_f32(),
                    ElementType::F16 => half::f16::from_le_bytes([s[0], s[1]]).to_f32(),
                    ElementType::F8E4M3FN => crate::runtime::f8e4m3fn_to_f32(s[0]),
                    ElementType::F8E5M2 => crate::runtime::f8e5m2_to_f32(s[0]),
                    ElementType::Pred | ElementType::U8 => s[0] as f32,
                    ElementType::S8 => s[0] as i8 as f32,
                    ElementType::S32 => i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32,
                    ElementType::U32 => u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32,
                    ElementType::S64 => i64::from_le_bytes(s.try_into().unwrap_or_default()) as f32,
                    ElementType::U64 => u64::from_le_bytes(s.try_into().unwrap_or_default()) as f32,
                }
            })
            .collect()
    }
}

/// The block of `shape` starting at `offset` of a row-major array of `source_shape` with
/// `elem`-byte elements, row-major, copied run by run ([`vishwam_mesh::for_each_run`]).
pub(super) fn copy_block(
    source: &[u8],
    source_shape: &[usize],
    elem: usize,
    offset: &[usize],
    shape: &[usize],
) -> Result<Vec<u8>, super::EngineError> {
    let rank = source_shape.len();
    let fits = offset.len() == rank
        && shape.len() == rank
        && (0..rank).all(|d| offset[d] + shape[d] <= source_shape[d])
        && source.len() == source_shape.iter().product::<usize>() * elem;
    if !fits {
        return Err(super::EngineError::Shape(format!(
            "a block {shape:?} at {offset:?} does not fit a {source_shape:?} array of {} bytes",
            source.len()
        )));
    }
    let mut out = vec![0u8; shape.iter().product::<usize>() * elem];
    vishwam_mesh::for_each_run(source_shape, shape, offset, elem, |at, to, len| {
        out[to..to + len].copy_from_slice(&source[at..at + len]);
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::copy_block;

    #[test]
    fn copy_block_takes_the_block_of_every_offset() {
        // A 3x4x2 array of bytes numbered in row-major order.
        let shape = [3usize, 4, 2];
        let source: Vec<u8> = (0..24).collect();
        let at = |i: usize, j: usize, k: usize| (i * 8 + j * 2 + k) as u8;
        for (offset, block) in [
            ([0, 0, 0], [3, 4, 2]),
            ([1, 1, 0], [2, 2, 2]),
            ([0, 2, 1], [3, 2, 1]),
            ([2, 0, 0], [1, 4, 2]),
            ([0, 3, 0], [3, 1, 2]),
        ] {
            let got = copy_block(&source, &shape, 1, &offset, &block).unwrap();
            let mut want = Vec::new();
            for i in 0..block[0] {
                for j in 0..block[1] {
                    for k in 0..block[2] {
                        want.push(at(offset[0] + i, offset[1] + j, offset[2] + k));
                    }
                }
            }
            assert_eq!(got, want, "block {block:?} at {offset:?}");
        }
        assert!(copy_block(&source, &shape, 1, &[2, 0, 0], &[2, 4, 2]).is_err());
    }
}
