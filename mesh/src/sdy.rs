//! Shardy text beyond closed specs: open dimensions and explicitly replicated axes.
//!
//! A closed dimension (`{"data"}`, `{}`) is fixed; an open one (`{"data", ?}`, `{?}`) lets
//! Shardy's propagation add further axes. Axes listed in `replicated={...}` may not be added
//! by propagation. Closed specs print through [`PartitionSpec`] directly; this type is for
//! constraints that only pin some dimensions.
//!
//! Checked against real XLA (jax 0.11.2's, the plugins' version) on 4 virtual CPU devices: a
//! module with a closed constraint `<@mesh, [{"data"}, {}]>`, an open one
//! `<@mesh, [{"data", ?}, {?}]>`, one with `replicated={"model"}` and an op carrying
//! `#sdy.sharding_per_value<[...]>` compiled with Shardy on and gave correct numbers; JAX
//! prints its own constraints in the same form.

use crate::spec::sdy_dim;
use crate::{Mesh, MeshError, PartitionSpec};

/// A [`PartitionSpec`] for one array of known rank, with Shardy's open and replicated markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdySharding {
    spec: PartitionSpec,
    open: Vec<bool>,
    replicated: Vec<String>,
}

impl SdySharding {
    /// All dimensions closed; fails when the spec has more entries than `rank`.
    pub fn new(spec: &PartitionSpec, rank: usize) -> Result<SdySharding, MeshError> {
        if spec.dims.len() > rank {
            return Err(MeshError::RankMismatch {
                spec_rank: spec.dims.len(),
                rank,
            });
        }
        Ok(SdySharding {
            spec: spec.clone(),
            open: vec![false; rank],
            replicated: Vec::new(),
        })
    }

    /// Marks the given dimensions open to further sharding by propagation.
    pub fn with_open_dims(mut self, dims: &[usize]) -> Result<SdySharding, MeshError> {
        let rank = self.open.len();
        for &dim in dims {
            *self
                .open
                .get_mut(dim)
                .ok_or(MeshError::OpenDimOutOfRange { dim, rank })? = true;
        }
        Ok(self)
    }

    /// Marks every dimension open.
    pub fn all_open(mut self) -> SdySharding {
        self.open.iter_mut().for_each(|o| *o = true);
        self
    }

    /// Lists mesh axes as explicitly replicated (printed in mesh order, as Shardy requires).
    pub fn with_replicated(mut self, mesh: &Mesh, axes: &[&str]) -> Result<SdySharding, MeshError> {
        for &axis in axes {
            if mesh.axis_size(axis).is_none() {
                let names: Vec<&str> = mesh.axes().iter().map(|a| a.name.as_str()).collect();
                return Err(MeshError::UnknownAxis {
                    axis: axis.to_string(),
                    axes: names.join(", "),
                });
            }
            if self
                .spec
                .dims
                .iter()
                .any(|d| d.axes.iter().any(|a| a == axis))
            {
                return Err(MeshError::ReplicatedAxisInUse {
                    axis: axis.to_string(),
                });
            }
            if !self.replicated.iter().any(|a| a == axis) {
                self.replicated.push(axis.to_string());
            }
        }
        self.replicated.sort_by_key(|a| mesh.axis_index(a));
        Ok(self)
    }

    /// As written inside ops: `<@mesh, [{"data", ?}, {?}], replicated={"model"}>`.
    pub fn body(&self, mesh_name: &str) -> String {
        let dims: Vec<String> = self
            .open
            .iter()
            .enumerate()
            .map(|(d, &open)| sdy_dim(self.spec.dims.get(d).map_or(&[][..], |s| &s.axes), open))
            .collect();
        let mut text = format!("<@{mesh_name}, [{}]", dims.join(", "));
        if !self.replicated.is_empty() {
            let axes: Vec<String> = self.replicated.iter().map(|a| format!("\"{a}\"")).collect();
            text.push_str(&format!(", replicated={{{}}}", axes.join(", ")));
        }
        text.push('>');
        text
    }

    /// As an attribute of arguments and results: `#sdy.sharding<@mesh, [...]>`.
    pub fn attr(&self, mesh_name: &str) -> String {
        format!("#sdy.sharding{}", self.body(mesh_name))
    }

    /// A constraint op on `operand` of type `tensor_type`.
    pub fn constraint(&self, operand: &str, mesh_name: &str, tensor_type: &str) -> String {
        format!(
            "sdy.sharding_constraint {operand} {} : {tensor_type}",
            self.body(mesh_name)
        )
    }
}

/// The attribute for the results of one op, one body per result:
/// `#sdy.sharding_per_value<[<@mesh, [{"data"}, {}]>]>`.
pub fn sdy_sharding_per_value(bodies: &[String]) -> String {
    format!("#sdy.sharding_per_value<[{}]>", bodies.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_replicated_print_verbatim() {
        let mesh = Mesh::new(&[("a", 2), ("b", 2)], 4).unwrap();
        let spec = PartitionSpec::from_axes(&[Some("a")]);
        let s = SdySharding::new(&spec, 2).unwrap();
        assert_eq!(s.body("mesh"), r#"<@mesh, [{"a"}, {}]>"#);
        let open = s.clone().all_open();
        assert_eq!(open.body("mesh"), r#"<@mesh, [{"a", ?}, {?}]>"#);
        assert_eq!(
            open.constraint("%arg0", "mesh", "tensor<8x8xf32>"),
            r#"sdy.sharding_constraint %arg0 <@mesh, [{"a", ?}, {?}]> : tensor<8x8xf32>"#
        );
        let one_open = s.clone().with_open_dims(&[1]).unwrap();
        assert_eq!(one_open.body("mesh"), r#"<@mesh, [{"a"}, {?}]>"#);
        let rep = SdySharding::new(&PartitionSpec::replicated(), 2)
            .unwrap()
            .with_replicated(&mesh, &["b", "a"])
            .unwrap();
        assert_eq!(
            rep.attr("mesh"),
            r#"#sdy.sharding<@mesh, [{}, {}], replicated={"a", "b"}>"#
        );
        let rep = s.with_replicated(&mesh, &["b"]).unwrap();
        assert_eq!(
            rep.attr("mesh"),
            r#"#sdy.sharding<@mesh, [{"a"}, {}], replicated={"b"}>"#
        );
        assert_eq!(
            sdy_sharding_per_value(&[rep.body("mesh"), spec.sdy_tensor_sharding("mesh", 1)]),
            r#"#sdy.sharding_per_value<[<@mesh, [{"a"}, {}], replicated={"b"}>, <@mesh, [{"a"}]>]>"#
        );
    }

    #[test]
    fn rejects_bad_markers() {
        let mesh = Mesh::new(&[("a", 2), ("b", 2)], 4).unwrap();
        let spec = PartitionSpec::from_axes(&[Some("a"), None]);
        assert!(matches!(
            SdySharding::new(&spec, 1),
            Err(MeshError::RankMismatch { .. })
        ));
        let s = SdySharding::new(&spec, 2).unwrap();
        assert_eq!(
            s.clone().with_open_dims(&[2]).unwrap_err().to_string(),
            "open dimension 2 is out of range for an array of rank 2"
        );
        assert_eq!(
            s.clone()
                .with_replicated(&mesh, &["a"])
                .unwrap_err()
                .to_string(),
            "mesh axis `a` cannot be both replicated and sharding a dimension"
        );
        assert!(matches!(
            s.with_replicated(&mesh, &["c"]),
            Err(MeshError::UnknownAxis { .. })
        ));
    }
}
