//! Manual computations: a region that runs once per device on its local shards, the
//! StableHLO/Shardy form of JAX's `shard_map` (`sdy.manual_computation`).
//!
//! The region is traced on the *local* types: each operand's dimensions divided by the
//! product of the sizes of the mesh axes its spec names for that dimension. Its results are
//! local too; the equation's results are the global arrays they form under the result specs.
//! Every mesh axis given is manual, so the body sees no sharding at all: an operand whose spec
//! leaves an axis out is whole (replicated) on every device along it. The printed form, as
//! Shardy's parser reads it (checked against `manual_computation_parse_print.mlir` of
//! openxla/shardy and compiled by the 0.11.2 CPU plugin on 2 to 8 virtual devices):
//!
//! ```text
//! %5:2 = sdy.manual_computation(%1, %2) in_shardings=[<@mesh, [{"data"}, {}]>, ...]
//!     out_shardings=[...] manual_axes={"data", "model"} (%it5_0: tensor<4x8xf32>, ...) {
//!   ...
//!   sdy.return %a, %b : tensor<4x8xf32>, tensor<4xf32>
//! } : (tensor<8x8xf32>, ...) -> (tensor<8x8xf32>, tensor<8xf32>)
//! ```
//!
//! A manual computation is not differentiable by itself: a result replicated over an axis
//! would need a cross-device sum of its cotangent that the body cannot know about. Wrap it in
//! [`Graph::custom_vjp`] with a second manual computation as the backward rule.

use crate::error::{HloError, Result};
use crate::graph::Graph;
use crate::ir::{Eqn, Func, Prim};
use crate::ops::control::{nested, trace_region};
use crate::print::{Name, Printer};
use crate::{Tensor, TensorType};
use std::sync::Arc;
use vishwam_mesh::PartitionSpec;

/// The static parameters of a manual computation besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualAxes {
    /// The manual mesh axes with their sizes, in mesh order (the printing mesh must match).
    pub axes: Vec<(String, i64)>,
    /// How each operand is split over the manual axes.
    pub in_specs: Vec<PartitionSpec>,
    /// How each result is assembled from the devices' local results.
    pub out_specs: Vec<PartitionSpec>,
}

impl ManualAxes {
    /// The local type of an array of global type `ty` split as `spec`; fails when the spec
    /// names an axis that is not manual or a dimension does not divide.
    pub fn local_type(&self, ty: &TensorType, spec: &PartitionSpec) -> Result<TensorType> {
        let factors = self.factors(spec, ty.rank())?;
        let mut shape = ty.shape.clone();
        for (d, (dim, f)) in shape.iter_mut().zip(factors).enumerate() {
            if *dim % f != 0 {
                return Err(manual_err(format!(
                    "dimension {d} of {} does not divide into {f} shards ({spec:?})",
                    ty.mlir()
                )));
            }
            *dim /= f;
        }
        Ok(TensorType::new(ty.dtype, &shape))
    }

    /// The global type of a local array `ty` assembled as `spec`.
    pub fn global_type(&self, ty: &TensorType, spec: &PartitionSpec) -> Result<TensorType> {
        let factors = self.factors(spec, ty.rank())?;
        let shape: Vec<i64> = ty.shape.iter().zip(factors).map(|(d, f)| d * f).collect();
        Ok(TensorType::new(ty.dtype, &shape))
    }

    /// Shards per dimension: the product of the sizes of the axes the spec names there.
    fn factors(&self, spec: &PartitionSpec, rank: usize) -> Result<Vec<i64>> {
        if spec.dims.len() > rank {
            return Err(manual_err(format!(
                "spec {spec:?} has {} entries for an array of rank {rank}",
                spec.dims.len()
            )));
        }
        let mut factors = vec![1i64; rank];
        for (d, dim) in spec.dims.iter().enumerate() {
            for axis in &dim.axes {
                let size = self
                    .axes
                    .iter()
                    .find(|(name, _)| name == axis)
                    .map(|(_, size)| *size)
                    .ok_or_else(|| {
                        let manual: Vec<&str> = self.axes.iter().map(|(n, _)| n.as_str()).collect();
                        manual_err(format!(
                            "spec {spec:?} names axis `{axis}`, which is not manual (manual: {})",
                            manual.join(", ")
                        ))
                    })?;
                factors[d] *= size;
            }
        }
        Ok(factors)
    }
}

fn manual_err(detail: String) -> HloError {
    HloError::Shape {
        op: "manual_computation".into(),
        detail,
    }
}

impl Graph {
    /// Traces `f` once over the local shards of `inputs` (split as `manual.in_specs`) and
    /// returns the global arrays its local results form under `manual.out_specs`. `f` may not
    /// use outer tensors; everything comes in through `inputs`.
    pub fn manual_computation(
        &self,
        name: &str,
        manual: ManualAxes,
        inputs: &[Tensor],
        f: impl FnOnce(&Graph, &[Tensor]) -> Vec<Tensor>,
    ) -> Vec<Tensor> {
        let what = format!("manual_computation `{name}`");
        if inputs.len() != manual.in_specs.len() || manual.axes.is_empty() {
            self.record_error(manual_err(format!(
                "`{name}`: {} operands for {} specs over {} manual axes (need one spec per operand and at least one axis)",
                inputs.len(),
                manual.in_specs.len(),
                manual.axes.len()
            )));
            return Vec::new();
        }
        let local: Result<Vec<TensorType>> = inputs
            .iter()
            .zip(&manual.in_specs)
            .map(|(x, spec)| manual.local_type(x.ty(), spec))
            .collect();
        let local = match local {
            Ok(types) => types,
            Err(e) => {
                self.record_error(nested(&what, e));
                return Vec::new();
            }
        };
        match trace_region(name, &local, f) {
            Ok(body) => {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                self.push(
                    Prim::ManualComputation {
                        name: name.to_string(),
                        manual: Box::new(manual),
                        body: Arc::new(body),
                    },
                    &refs,
                )
            }
            Err(e) => {
                self.record_error(nested(&what, *e.error));
                e.output_types
                    .into_iter()
                    .map(|t| self.poisoned(t))
                    .collect()
            }
        }
    }
}

/// The shape rule: the operands' local types must be the body's parameters; the results are
/// the body's results assembled under the result specs.
pub(crate) fn infer_manual(
    manual: &ManualAxes,
    body: &Func,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>> {
    if inputs.len() != manual.in_specs.len() || inputs.len() != body.params.len() {
        return Err(manual_err(format!(
            "{} operands, {} operand specs, {} body parameters",
            inputs.len(),
            manual.in_specs.len(),
            body.params.len()
        )));
    }
    for (i, ((x, spec), p)) in inputs
        .iter()
        .zip(&manual.in_specs)
        .zip(&body.params)
        .enumerate()
    {
        let local = manual.local_type(x, spec)?;
        if local != p.ty {
            return Err(manual_err(format!(
                "operand {i} of type {} is {} per device, but the body takes {}",
                x.mlir(),
                local.mlir(),
                p.ty.mlir()
            )));
        }
    }
    if body.outputs.len() != manual.out_specs.len() {
        return Err(manual_err(format!(
            "the body returns {} values for {} result specs",
            body.outputs.len(),
            manual.out_specs.len()
        )));
    }
    body.outputs
        .iter()
        .zip(&manual.out_specs)
        .map(|(o, spec)| manual.global_type(body.value_type(o.value), spec))
        .collect()
}

impl Printer<'_> {
    /// `sdy.manual_computation(...) in_shardings=[...] out_shardings=[...] manual_axes={...}
    /// (block args) { body; sdy.return } : (global operand types) -> global result types`.
    pub(crate) fn manual_computation(
        &mut self,
        f: &Func,
        e: &Eqn,
        names: &mut [Name],
        depth: usize,
        manual: &ManualAxes,
        body: &Func,
    ) -> Result<()> {
        let mesh = self.mesh("a manual computation")?;
        let mesh_name = self.opts.mesh_name.clone();
        let mut last = None;
        for (axis, size) in &manual.axes {
            let index = mesh.axis_index(axis);
            let fits = mesh.axis_size(axis) == Some(*size as usize) && index > last;
            if !fits {
                return Err(HloError::Print {
                    detail: format!(
                        "manual computation over axis `{axis}` of size {size}, but the mesh is {mesh} (the manual axes must be mesh axes of those sizes, in mesh order)"
                    ),
                });
            }
            last = index;
        }
        let shardings = |specs: &[PartitionSpec], types: Vec<&TensorType>| -> Result<String> {
            let mut items = Vec::new();
            for (spec, ty) in specs.iter().zip(types) {
                spec.validate(mesh, &ty.shape)
                    .map_err(|source| HloError::Sharding {
                        name: "manual computation".into(),
                        source,
                    })?;
                items.push(spec.sdy_tensor_sharding(&mesh_name, ty.rank()));
            }
            Ok(items.join(", "))
        };
        let ins = shardings(
            &manual.in_specs,
            e.inputs.iter().map(|&x| f.value_type(x)).collect(),
        )?;
        let outs = shardings(
            &manual.out_specs,
            e.outputs.iter().map(|&x| f.value_type(x)).collect(),
        )?;
        let axes: Vec<String> = manual
            .axes
            .iter()
            .map(|(a, _)| format!("\"{a}\""))
            .collect();
        let n = self.results(e, names, depth);
        self.out.push_str("sdy.manual_computation(");
        for (i, x) in e.inputs.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            self.name(names[x.index()])?;
        }
        self.out.push_str(&format!(
            ") in_shardings=[{ins}] out_shardings=[{outs}] manual_axes={{{}}} (",
            axes.join(", ")
        ));
        let mut sub = vec![Name::Unset; body.types.len()];
        for (k, p) in body.params.iter().enumerate() {
            if k > 0 {
                self.out.push_str(", ");
            }
            self.out.push_str(&format!("%it{n}_{k}: "));
            self.ty(&p.ty);
            sub[p.value.index()] = Name::Iter(n, k as u32);
        }
        self.out.push_str(") {\n");
        self.body(body, &mut sub, depth + 1)?;
        self.indent(depth + 1);
        self.ret(body, &sub, "sdy.return")?;
        self.indent(depth);
        self.out.push('}');
        self.signature(f, e);
        self.out.push('\n');
        Ok(())
    }
}

impl Graph {
    /// Records an error met by code that traces into this graph but cannot return it (a
    /// nested [`Graph::vjp`] inside a region closure); [`Graph::finish`] reports it.
    pub fn record_failure(&self, err: HloError) {
        self.record_error(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, PrintOptions};
    use vishwam_mesh::Mesh;

    fn manual(in_specs: Vec<PartitionSpec>, out_specs: Vec<PartitionSpec>) -> ManualAxes {
        ManualAxes {
            axes: vec![("a".into(), 2), ("b".into(), 2)],
            in_specs,
            out_specs,
        }
    }

    #[test]
    fn prints_the_shardy_form_with_local_block_arguments() {
        let g = Graph::named("m");
        let x = g.param("x", TensorType::new(DType::F32, &[8, 4]));
        let y = g.param("y", TensorType::new(DType::F32, &[4]));
        let rows = PartitionSpec::from_axes(&[Some("a"), Some("b")]);
        let m = manual(
            vec![rows.clone(), PartitionSpec::replicated()],
            vec![rows.clone(), PartitionSpec::from_axes(&[Some("a")])],
        );
        let outs = g.manual_computation("body", m, &[x, y.clone()], |_, l| {
            assert_eq!(l[0].shape(), &[4, 2]);
            let scaled = &l[0] * &l[1].slice(&[0], &[2], &[1]).broadcast_in_dim(&[4, 2], &[1]);
            vec![scaled.clone(), scaled.sum(&[1], false)]
        });
        assert_eq!(outs[0].shape(), &[8, 4]);
        assert_eq!(outs[1].shape(), &[8]);
        let f = g.finish(&[("z", &outs[0]), ("s", &outs[1])]).unwrap();
        let mesh = Mesh::new(&[("a", 2), ("b", 2)], 4).unwrap();
        let text = f.to_stablehlo(&PrintOptions::with_mesh(mesh)).unwrap();
        assert!(
            text.contains(
                r#"sdy.manual_computation(%arg0, %arg1) in_shardings=[<@mesh, [{"a"}, {"b"}]>, <@mesh, [{}]>] out_shardings=[<@mesh, [{"a"}, {"b"}]>, <@mesh, [{"a"}]>] manual_axes={"a", "b"} (%it0_0: tensor<4x2xf32>, %it0_1: tensor<4xf32>) {"#
            ),
            "{text}"
        );
        assert!(text.contains("sdy.return"), "{text}");
        assert!(
            text.contains(
                "} : (tensor<8x4xf32>, tensor<4xf32>) -> (tensor<8x4xf32>, tensor<8xf32>)"
            ),
            "{text}"
        );
        // Without a mesh, or on a mesh without the manual axes, printing fails.
        assert!(f.to_stablehlo(&PrintOptions::default()).is_err());
        let other = Mesh::new(&[("a", 4)], 4).unwrap();
        let err = f.to_stablehlo(&PrintOptions::with_mesh(other)).unwrap_err();
        assert!(err.to_string().contains("axis `a` of size 2"), "{err}");
    }

    #[test]
    fn rejects_specs_that_do_not_fit_and_has_no_gradient() {
        let g = Graph::named("m");
        let x = g.param("x", TensorType::new(DType::F32, &[6, 4]));
        let m = manual(vec![PartitionSpec::from_axes(&[Some("c")])], vec![]);
        g.manual_computation("c", m, std::slice::from_ref(&x), |_, l| vec![l[0].clone()]);
        let err = g.check_error().unwrap_err().to_string();
        assert!(err.contains("axis `c`, which is not manual"), "{err}");

        let g = Graph::named("m");
        let x = g.param("x", TensorType::new(DType::F32, &[6, 4]));
        let spec = PartitionSpec::from_axes(&[Some("a"), Some("b")]);
        let m = manual(
            vec![PartitionSpec::from_axes(&[Some("b"), Some("a")])],
            vec![spec],
        );
        let out =
            g.manual_computation("ok", m, std::slice::from_ref(&x), |_, l| vec![l[0].clone()]);
        g.check_error().unwrap();
        let err = g.grad(&out[0].sum_all(), &[x]).unwrap_err().to_string();
        assert!(err.contains("manual_computation"), "{err}");

        let g = Graph::named("m");
        let x = g.param("x", TensorType::new(DType::F32, &[5, 4]));
        let m = manual(vec![PartitionSpec::from_axes(&[Some("a")])], vec![]);
        g.manual_computation("odd", m, &[x], |_, l| vec![l[0].clone()]);
        let err = g.check_error().unwrap_err().to_string();
        assert!(err.contains("does not divide into 2 shards"), "{err}");
    }
}
