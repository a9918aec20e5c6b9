//! Logical-axis rules: one table from logical axes to mesh axes, and its resolution into a
//! [`PartitionSpec`] for one array on one mesh.
//!
//! Resolution, dimension by dimension in order (MaxText's convention):
//! - a rule's mesh axes are taken major first; axes the mesh lacks or of size 1 are skipped
//!   silently (presets name `fsdp`, `expert`, ... whether or not a mesh has them);
//! - a mesh axis already used by an earlier dimension of the same array is skipped (the first
//!   dimension wins) and a note says so;
//! - an axis whose addition would leave the dimension not evenly divisible is skipped and a
//!   note says so (the dimension keeps the axes that do divide it), never an error;
//! - with the largest-dimension fallback on (parameter presets), each axis of the `embed`
//!   rule that the array did not use (no `embed` dimension, or it did not divide) splits the
//!   largest dimension that divides evenly, `layers` excepted (a scanned stack must stay whole).

use std::fmt;

use crate::{DimSharding, LogicalAxis, Mesh, MeshError, PartitionSpec};

/// An ordered table mapping each logical axis to zero or more mesh axes (major first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalRules {
    table: Vec<Vec<String>>,
    largest_dim_fallback: bool,
}

/// Which rule table a user override replaces entries of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// The parameter rules only (key `parameters.<logical>`).
    Parameters,
    /// The activation rules only (key `activations.<logical>`).
    Activations,
    /// Both tables (a bare key `<logical>`).
    Both,
}

/// One user override: replace the mesh axes of one logical axis in one or both tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOverride {
    /// Which table(s) the override replaces an entry of.
    pub target: RuleTarget,
    /// The logical axis whose entry is replaced.
    pub logical: LogicalAxis,
    /// The new mesh axes, major first; empty means unsharded.
    pub mesh_axes: Vec<String>,
}

/// A resolved spec and the reasons any rule could not be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The partition spec, one entry per array dimension; always valid for the mesh and shape.
    pub spec: PartitionSpec,
    /// Why a rule's axis was not used, or where the fallback put it; for the caller to log.
    pub notes: Vec<ResolutionNote>,
}

/// One decision of [`LogicalRules::spec_for_explained`] that departs from the plain rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolutionNote {
    /// An earlier dimension of the same array already uses the mesh axis.
    AxisTaken {
        /// The dimension that wanted the axis.
        dim: usize,
        /// Its logical name.
        logical: LogicalAxis,
        /// The mesh axis.
        axis: String,
        /// The earlier dimension that holds the axis.
        by_dim: usize,
    },
    /// Adding the mesh axis would split the dimension into `parts` unequal pieces.
    Indivisible {
        /// The dimension that wanted the axis.
        dim: usize,
        /// Its logical name.
        logical: LogicalAxis,
        /// Its size.
        size: i64,
        /// The mesh axis left out.
        axis: String,
        /// Pieces the dimension would have been split into with the axis.
        parts: usize,
    },
    /// The largest-dimension fallback put an unused `embed` axis on this dimension.
    Fallback {
        /// The dimension that took the axis.
        dim: usize,
        /// Its logical name.
        logical: LogicalAxis,
        /// The mesh axis.
        axis: String,
    },
    /// No dimension could take an unused `embed` axis; the array is replicated over it.
    NoFallback {
        /// The mesh axis.
        axis: String,
        /// Its size.
        axis_size: usize,
    },
}

impl fmt::Display for ResolutionNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolutionNote::AxisTaken {
                dim,
                logical,
                axis,
                by_dim,
            } => write!(
                f,
                "dimension {dim} ({logical}) is not split over mesh axis `{axis}`: dimension \
                 {by_dim} of the same array already uses it"
            ),
            ResolutionNote::Indivisible {
                dim,
                logical,
                size,
                axis,
                parts,
            } => write!(
                f,
                "dimension {dim} ({logical}) of size {size} is not split over mesh axis \
                 `{axis}`: it does not divide into {parts} equal parts"
            ),
            ResolutionNote::Fallback { dim, logical, axis } => write!(
                f,
                "mesh axis `{axis}` (rule of embed) splits dimension {dim} ({logical}), the \
                 largest that divides evenly"
            ),
            ResolutionNote::NoFallback { axis, axis_size } => write!(
                f,
                "no dimension divides evenly over mesh axis `{axis}`={axis_size}; the array is \
                 replicated over it"
            ),
        }
    }
}

impl RuleOverride {
    /// Parses a user key (`embed`, `parameters.embed` or `activations.batch`) and its axes.
    pub fn parse<S: AsRef<str>>(key: &str, mesh_axes: &[S]) -> Result<RuleOverride, MeshError> {
        let (target, name) = match key.split_once('.') {
            None => (RuleTarget::Both, key),
            Some(("parameters", name)) => (RuleTarget::Parameters, name),
            Some(("activations", name)) => (RuleTarget::Activations, name),
            Some(_) => {
                return Err(MeshError::BadRuleKey {
                    key: key.to_string(),
                })
            }
        };
        let logical = name.parse::<LogicalAxis>()?;
        let mesh_axes: Vec<String> = mesh_axes.iter().map(|a| a.as_ref().to_string()).collect();
        check_no_repeats(logical, &mesh_axes)?;
        Ok(RuleOverride {
            target,
            logical,
            mesh_axes,
        })
    }

    /// Whether this override replaces an entry of the table `table` (never `Both`).
    pub fn applies_to(&self, table: RuleTarget) -> bool {
        self.target == RuleTarget::Both || self.target == table
    }
}

/// Rejects a rule that names one mesh axis twice.
pub(crate) fn check_no_repeats(logical: LogicalAxis, axes: &[String]) -> Result<(), MeshError> {
    for (i, axis) in axes.iter().enumerate() {
        if axes[..i].contains(axis) {
            return Err(MeshError::RepeatedRuleAxis {
                logical,
                axis: axis.clone(),
            });
        }
    }
    Ok(())
}

impl LogicalRules {
    /// A table that maps every logical axis to nothing (everything replicated).
    pub fn unsharded() -> LogicalRules {
        LogicalRules {
            table: vec![Vec::new(); LogicalAxis::ALL.len()],
            largest_dim_fallback: false,
        }
    }

    /// Replaces the mesh axes of one logical axis (major first; empty means unsharded).
    pub fn set<S: AsRef<str>>(&mut self, logical: LogicalAxis, mesh_axes: &[S]) {
        self.table[logical.index()] = mesh_axes.iter().map(|a| a.as_ref().to_string()).collect();
    }

    /// Applies the overrides aimed at `table` (`Parameters` or `Activations`), in order.
    pub fn apply_overrides(
        &mut self,
        overrides: &[RuleOverride],
        table: RuleTarget,
    ) -> Result<(), MeshError> {
        for o in overrides.iter().filter(|o| o.applies_to(table)) {
            check_no_repeats(o.logical, &o.mesh_axes)?;
            self.set(o.logical, &o.mesh_axes);
        }
        Ok(())
    }

    /// The mesh axes of one logical axis, major first.
    pub fn mesh_axes(&self, logical: LogicalAxis) -> &[String] {
        &self.table[logical.index()]
    }

    /// Every entry in [`LogicalAxis::ALL`] order.
    pub fn entries(&self) -> impl Iterator<Item = (LogicalAxis, &[String])> + '_ {
        LogicalAxis::ALL
            .into_iter()
            .map(move |l| (l, self.mesh_axes(l)))
    }

    /// Whether any entry names the mesh axis `name`.
    pub fn uses_mesh_axis(&self, name: &str) -> bool {
        self.table.iter().any(|axes| axes.iter().any(|a| a == name))
    }

    /// Whether unused `embed` axes go to an array's largest divisible dimension.
    pub fn largest_dim_fallback(&self) -> bool {
        self.largest_dim_fallback
    }

    /// Turns the largest-dimension fallback on or off (on in parameter presets).
    pub fn set_largest_dim_fallback(&mut self, on: bool) {
        self.largest_dim_fallback = on;
    }

    /// The partition spec of an array whose dimensions mean `logical`, on `mesh`.
    pub fn spec_for(
        &self,
        logical: &[LogicalAxis],
        shape: &[i64],
        mesh: &Mesh,
    ) -> Result<PartitionSpec, MeshError> {
        Ok(self.spec_for_explained(logical, shape, mesh)?.spec)
    }

    /// Like [`LogicalRules::spec_for`], with a note for every rule that could not be followed.
    /// Errors only when `logical` and `shape` differ in length or a dimension is negative.
    pub fn spec_for_explained(
        &self,
        logical: &[LogicalAxis],
        shape: &[i64],
        mesh: &Mesh,
    ) -> Result<Resolution, MeshError> {
        if logical.len() != shape.len() {
            return Err(MeshError::LogicalRankMismatch {
                logical: logical
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                count: logical.len(),
                rank: shape.len(),
            });
        }
        if let Some(dim) = shape.iter().position(|&s| s < 0) {
            return Err(MeshError::NegativeDimension {
                dim,
                size: shape[dim],
            });
        }
        let mut dims = vec![DimSharding::replicated(); shape.len()];
        let mut parts = vec![1usize; shape.len()];
        let mut used: Vec<(String, usize)> = Vec::new();
        let mut notes = Vec::new();
        for (dim, (&logical_axis, &size)) in logical.iter().zip(shape).enumerate() {
            for axis in self.mesh_axes(logical_axis) {
                let axis_size = match mesh.axis_size(axis) {
                    Some(s) if s > 1 => s,
                    _ => continue,
                };
                if let Some((_, by_dim)) = used.iter().find(|(a, _)| a == axis) {
                    notes.push(ResolutionNote::AxisTaken {
                        dim,
                        logical: logical_axis,
                        axis: axis.clone(),
                        by_dim: *by_dim,
                    });
                    continue;
                }
                let wanted = parts[dim] * axis_size;
                if size % wanted as i64 != 0 {
                    notes.push(ResolutionNote::Indivisible {
                        dim,
                        logical: logical_axis,
                        size,
                        axis: axis.clone(),
                        parts: wanted,
                    });
                    continue;
                }
                parts[dim] = wanted;
                dims[dim].axes.push(axis.clone());
                used.push((axis.clone(), dim));
            }
        }
        if self.largest_dim_fallback {
            for axis in self.mesh_axes(LogicalAxis::Embed) {
                let axis_size = match mesh.axis_size(axis) {
                    Some(s) if s > 1 => s,
                    _ => continue,
                };
                if used.iter().any(|(a, _)| a == axis) {
                    continue;
                }
                let best = (0..shape.len())
                    .filter(|&d| logical[d] != LogicalAxis::Layers && shape[d] > 0)
                    .filter(|&d| shape[d] % (parts[d] * axis_size) as i64 == 0)
                    .max_by_key(|&d| (shape[d] / parts[d] as i64, std::cmp::Reverse(d)));
                match best {
                    Some(dim) => {
                        parts[dim] *= axis_size;
                        dims[dim].axes.push(axis.clone());
                        used.push((axis.clone(), dim));
                        notes.push(ResolutionNote::Fallback {
                            dim,
                            logical: logical[dim],
                            axis: axis.clone(),
                        });
                    }
                    None => notes.push(ResolutionNote::NoFallback {
                        axis: axis.clone(),
                        axis_size,
                    }),
                }
            }
        }
        while dims.last().is_some_and(|d| d.axes.is_empty()) {
            dims.pop();
        }
        Ok(Resolution {
            spec: PartitionSpec { dims },
            notes,
        })
    }
}

impl fmt::Display for LogicalRules {
    /// One line, e.g. `batch=[data, fsdp], length=[], ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .entries()
            .map(|(l, axes)| format!("{l}=[{}]", axes.join(", ")))
            .collect();
        f.write_str(&entries.join(", "))?;
        if self.largest_dim_fallback {
            f.write_str(" (embed falls back to the largest dimension)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
