//! Per-device memory of arrays under a spec: what sharding saves.

use crate::{Mesh, MeshError, PartitionSpec};

/// Bytes one device holds of an array of `shape` with `elem_size`-byte elements under `spec`.
pub fn bytes_per_device(
    mesh: &Mesh,
    spec: &PartitionSpec,
    shape: &[i64],
    elem_size: usize,
) -> Result<usize, MeshError> {
    spec.validate(mesh, shape)?;
    let per_dim = spec.shards_per_dim(mesh, shape.len());
    shape
        .iter()
        .zip(&per_dim)
        .try_fold(elem_size, |acc, (&s, &p)| acc.checked_mul(s as usize / p))
        .ok_or_else(|| MeshError::SizeOverflow {
            shape: shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            elem_size,
        })
}

/// Bytes one device holds of all `arrays`, each `(spec, shape, elem_size)`.
pub fn total_bytes_per_device<'a>(
    mesh: &Mesh,
    arrays: impl IntoIterator<Item = (&'a PartitionSpec, &'a [i64], usize)>,
) -> Result<usize, MeshError> {
    arrays
        .into_iter()
        .try_fold(0usize, |total, (spec, shape, elem_size)| {
            let bytes = bytes_per_device(mesh, spec, shape, elem_size)?;
            total
                .checked_add(bytes)
                .ok_or_else(|| MeshError::SizeOverflow {
                    shape: shape
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    elem_size,
                })
        })
}

/// How many devices hold each distinct piece of an array of `rank` under `spec`
/// (the mesh size divided by the number of pieces; 1 for a fully split array).
pub fn replication_factor(mesh: &Mesh, spec: &PartitionSpec, rank: usize) -> usize {
    let pieces: usize = spec.shards_per_dim(mesh, rank).iter().product();
    mesh.num_devices() / pieces.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharding_divides_memory() {
        let mesh = Mesh::new(&[("data", 2), ("model", 4)], 8).unwrap();
        let shape = [64i64, 32];
        let full = bytes_per_device(&mesh, &PartitionSpec::replicated(), &shape, 4).unwrap();
        assert_eq!(full, 64 * 32 * 4);
        let by_model = PartitionSpec::from_axes(&[None, Some("model")]);
        assert_eq!(
            bytes_per_device(&mesh, &by_model, &shape, 4).unwrap(),
            full / 4
        );
        let both = PartitionSpec::from_axes(&[Some("data"), Some("model")]);
        assert_eq!(
            bytes_per_device(&mesh, &both, &shape, 2).unwrap(),
            64 * 32 * 2 / 8
        );
        assert_eq!(
            replication_factor(&mesh, &PartitionSpec::replicated(), 2),
            8
        );
        assert_eq!(replication_factor(&mesh, &by_model, 2), 2);
        assert_eq!(replication_factor(&mesh, &both, 2), 1);
        let arrays = [(&by_model, &shape[..], 4usize), (&both, &shape[..], 4)];
        assert_eq!(
            total_bytes_per_device(&mesh, arrays).unwrap(),
            full / 4 + full / 8
        );
    }

    #[test]
    fn errors_on_invalid_specs_and_overflow() {
        let mesh = Mesh::new(&[("data", 2)], 2).unwrap();
        let spec = PartitionSpec::from_axes(&[Some("data")]);
        assert!(matches!(
            bytes_per_device(&mesh, &spec, &[3], 4),
            Err(MeshError::Indivisible { .. })
        ));
        assert!(matches!(
            bytes_per_device(&mesh, &spec, &[-2], 4),
            Err(MeshError::NegativeDimension { .. })
        ));
        assert!(matches!(
            bytes_per_device(&mesh, &PartitionSpec::replicated(), &[i64::MAX, 4], 8),
            Err(MeshError::SizeOverflow { .. })
        ));
    }
}
