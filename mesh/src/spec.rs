//! Partition specs: which mesh axes split each dimension of an array.

use crate::{Mesh, MeshError};

/// How one array dimension is split: by no axis (replicated) or by one or more mesh axes
/// (major to minor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DimSharding {
    /// Mesh axes splitting this dimension, major first. Empty means unsharded.
    pub axes: Vec<String>,
}

impl DimSharding {
    /// An unsharded dimension.
    pub fn replicated() -> Self {
        DimSharding { axes: Vec::new() }
    }
    /// A dimension split over one mesh axis.
    pub fn axis(name: &str) -> Self {
        DimSharding {
            axes: vec![name.to_string()],
        }
    }
}

/// Per-dimension sharding of one array. Missing trailing entries are unsharded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PartitionSpec {
    /// One entry per leading dimension.
    pub dims: Vec<DimSharding>,
}

impl PartitionSpec {
    /// Fully replicated.
    pub fn replicated() -> Self {
        PartitionSpec { dims: Vec::new() }
    }

    /// From one optional axis per dimension, e.g. `&[Some("data"), None]`.
    pub fn from_axes(axes: &[Option<&str>]) -> Self {
        PartitionSpec {
            dims: axes
                .iter()
                .map(|a| a.map_or_else(DimSharding::replicated, DimSharding::axis))
                .collect(),
        }
    }

    /// True when no dimension is sharded.
    pub fn is_replicated(&self) -> bool {
        self.dims.iter().all(|d| d.axes.is_empty())
    }

    /// Checks the spec against a mesh and an array shape: no negative dimension, no more
    /// entries than dimensions, known axes, no axis on two dimensions, even division.
    pub fn validate(&self, mesh: &Mesh, shape: &[i64]) -> Result<(), MeshError> {
        if let Some(dim) = shape.iter().position(|&s| s < 0) {
            return Err(MeshError::NegativeDimension {
                dim,
                size: shape[dim],
            });
        }
        if self.dims.len() > shape.len() {
            return Err(MeshError::RankMismatch {
                spec_rank: self.dims.len(),
                rank: shape.len(),
            });
        }
        let names: Vec<&str> = mesh.axes().iter().map(|a| a.name.as_str()).collect();
        let mut used = std::collections::HashSet::new();
        for (dim, sharding) in self.dims.iter().enumerate() {
            let mut shards = 1usize;
            for axis in &sharding.axes {
                let size = mesh.axis_size(axis).ok_or_else(|| MeshError::UnknownAxis {
                    axis: axis.clone(),
                    axes: names.join(", "),
                })?;
                if !used.insert(axis.clone()) {
                    return Err(MeshError::AxisReused { axis: axis.clone() });
                }
                shards *= size;
            }
            if shape[dim] % shards as i64 != 0 {
                return Err(MeshError::Indivisible {
                    dim,
                    size: shape[dim],
                    axes: sharding.axes.join(", "),
                    shards,
                });
            }
        }
        Ok(())
    }

    /// Shardy tensor sharding for an array of `rank` dimensions on mesh `@mesh_name`,
    /// e.g. `#sdy.sharding<@mesh, [{"data"}, {}]>`.
    pub fn sdy_sharding(&self, mesh_name: &str, rank: usize) -> String {
        format!("#sdy.sharding<@{mesh_name}, [{}]>", self.sdy_dims(rank))
    }

    /// The bracketed per-dimension list alone, e.g. `{"data"}, {}`.
    pub fn sdy_dims(&self, rank: usize) -> String {
        (0..rank)
            .map(|d| sdy_dim(self.dims.get(d).map_or(&[][..], |s| &s.axes), false))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The sharding as written inside ops, without the `#sdy.sharding` prefix:
    /// `<@mesh, [{"data"}, {}]>` (the body of `sdy.sharding_constraint` and
    /// `#sdy.sharding_per_value`).
    pub fn sdy_tensor_sharding(&self, mesh_name: &str, rank: usize) -> String {
        format!("<@{mesh_name}, [{}]>", self.sdy_dims(rank))
    }

    /// A whole constraint op on `operand` (an SSA name such as `%3`) of type `tensor_type`:
    /// `sdy.sharding_constraint %3 <@mesh, [{"data"}, {}]> : tensor<8x4xf32>`.
    pub fn sdy_sharding_constraint(
        &self,
        operand: &str,
        mesh_name: &str,
        rank: usize,
        tensor_type: &str,
    ) -> String {
        format!(
            "sdy.sharding_constraint {operand} {} : {tensor_type}",
            self.sdy_tensor_sharding(mesh_name, rank)
        )
    }

    /// Number of pieces each dimension is split into on `mesh` (1 for unsharded or missing
    /// entries; axes the mesh lacks count as 1, `validate` rejects them).
    pub fn shards_per_dim(&self, mesh: &Mesh, rank: usize) -> Vec<usize> {
        (0..rank)
            .map(|d| {
                self.dims.get(d).map_or(1, |s| {
                    s.axes
                        .iter()
                        .map(|a| mesh.axis_size(a).unwrap_or(1))
                        .product()
                })
            })
            .collect()
    }
}

/// One Shardy dimension sharding: `{"a", "b"}`, `{}`, or open: `{"a", ?}`, `{?}`.
pub(crate) fn sdy_dim(axes: &[String], open: bool) -> String {
    let mut parts: Vec<String> = axes.iter().map(|a| format!("\"{a}\"")).collect();
    if open {
        parts.push("?".to_string());
    }
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_shardy_verbatim() {
        let spec = PartitionSpec::from_axes(&[Some("data"), Some("model")]);
        assert_eq!(
            spec.sdy_sharding("mesh", 2),
            r#"#sdy.sharding<@mesh, [{"data"}, {"model"}]>"#
        );
        let spec = PartitionSpec::from_axes(&[Some("model")]);
        assert_eq!(
            spec.sdy_sharding("mesh", 2),
            r#"#sdy.sharding<@mesh, [{"model"}, {}]>"#
        );
        assert_eq!(
            PartitionSpec::replicated().sdy_sharding("mesh", 0),
            "#sdy.sharding<@mesh, []>"
        );
        let spec = PartitionSpec {
            dims: vec![DimSharding {
                axes: vec!["data".into(), "fsdp".into()],
            }],
        };
        assert_eq!(
            spec.sdy_sharding("m", 3),
            r#"#sdy.sharding<@m, [{"data", "fsdp"}, {}, {}]>"#
        );
    }

    /// The strings of the module that ran on 4 virtual CPU devices (ARCHITECTURE.md).
    #[test]
    fn reproduces_the_verified_module_strings() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
        assert_eq!(
            mesh.sdy_mesh_decl("mesh"),
            r#"sdy.mesh @mesh = <["data"=2, "model"=2]>"#
        );
        let x = PartitionSpec::from_axes(&[Some("data"), Some("model")]);
        let w = PartitionSpec::from_axes(&[Some("model"), None]);
        let out = PartitionSpec::from_axes(&[Some("data")]);
        for (spec, shape) in [(&x, [8, 4]), (&w, [4, 6]), (&out, [8, 6])] {
            spec.validate(&mesh, &shape).unwrap();
        }
        assert_eq!(
            x.sdy_sharding("mesh", 2),
            r#"#sdy.sharding<@mesh, [{"data"}, {"model"}]>"#
        );
        assert_eq!(
            w.sdy_sharding("mesh", 2),
            r#"#sdy.sharding<@mesh, [{"model"}, {}]>"#
        );
        assert_eq!(
            out.sdy_sharding("mesh", 2),
            r#"#sdy.sharding<@mesh, [{"data"}, {}]>"#
        );
    }

    #[test]
    fn prints_constraint_bodies_verbatim() {
        let spec = PartitionSpec::from_axes(&[Some("data"), None]);
        assert_eq!(
            spec.sdy_tensor_sharding("mesh", 2),
            r#"<@mesh, [{"data"}, {}]>"#
        );
        assert_eq!(
            spec.sdy_sharding_constraint("%3", "mesh", 2, "tensor<8x4xf32>"),
            r#"sdy.sharding_constraint %3 <@mesh, [{"data"}, {}]> : tensor<8x4xf32>"#
        );
        assert_eq!(
            PartitionSpec::replicated().sdy_tensor_sharding("mesh", 0),
            "<@mesh, []>"
        );
    }

    #[test]
    fn counts_shards_per_dimension() {
        let mesh = Mesh::new(&[("data", 2), ("model", 4)], 8).unwrap();
        let spec = PartitionSpec {
            dims: vec![
                DimSharding::replicated(),
                DimSharding {
                    axes: vec!["model".into(), "data".into()],
                },
            ],
        };
        assert_eq!(spec.shards_per_dim(&mesh, 3), vec![1, 8, 1]);
    }

    #[test]
    fn validate_rejects_bad_specs() {
        let mesh = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
        let spec = PartitionSpec::from_axes(&[Some("data"), Some("data")]);
        assert!(matches!(
            spec.validate(&mesh, &[4, 4]),
            Err(MeshError::AxisReused { .. })
        ));
        let spec = PartitionSpec::from_axes(&[Some("expert")]);
        assert!(matches!(
            spec.validate(&mesh, &[4]),
            Err(MeshError::UnknownAxis { .. })
        ));
        let spec = PartitionSpec::from_axes(&[Some("data")]);
        assert!(matches!(
            spec.validate(&mesh, &[3]),
            Err(MeshError::Indivisible { .. })
        ));
        assert!(spec.validate(&mesh, &[4, 3]).is_ok());
    }
}
