//! The device mesh: ordered named axes over device ids.

use crate::MeshError;

/// One named axis of a mesh and its size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshAxis {
    /// Axis name, e.g. `data`, `fsdp`, `model`, `expert`.
    pub name: String,
    /// Number of devices along this axis.
    pub size: usize,
}

/// Ordered named axes laid over devices in row-major order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mesh {
    axes: Vec<MeshAxis>,
    device_ids: Vec<usize>,
}

impl Mesh {
    /// Builds a mesh from `(name, size)` pairs; one size may be `-1`, filled from `num_devices`.
    /// Devices are `0..num_devices` in mesh order.
    pub fn new(axes: &[(&str, i64)], num_devices: usize) -> Result<Mesh, MeshError> {
        let mut seen = std::collections::HashSet::new();
        let mut fill: Option<&str> = None;
        let mut known = 1usize;
        for &(name, size) in axes {
            if !seen.insert(name) {
                return Err(MeshError::DuplicateAxis {
                    axis: name.to_string(),
                });
            }
            match size {
                -1 => {
                    if let Some(first) = fill {
                        return Err(MeshError::TwoFills {
                            first: first.to_string(),
                            second: name.to_string(),
                        });
                    }
                    fill = Some(name);
                }
                s if s >= 1 => known *= s as usize,
                s => {
                    return Err(MeshError::BadAxisSize {
                        axis: name.to_string(),
                        size: s,
                    })
                }
            }
        }
        let describe = |axes: &[(&str, i64)]| {
            axes.iter()
                .map(|(n, s)| format!("{n}={s}"))
                .collect::<Vec<_>>()
                .join(" x ")
        };
        let filled = match fill {
            Some(_) if num_devices % known == 0 && num_devices >= known => num_devices / known,
            Some(_) => {
                return Err(MeshError::DeviceCount {
                    mesh: describe(axes),
                    needed: known,
                    available: num_devices,
                })
            }
            None => 1,
        };
        let axes: Vec<MeshAxis> = axes
            .iter()
            .map(|&(name, size)| MeshAxis {
                name: name.to_string(),
                size: if size == -1 { filled } else { size as usize },
            })
            .collect();
        let needed: usize = axes.iter().map(|a| a.size).product();
        if needed != num_devices {
            return Err(MeshError::DeviceCount {
                mesh: axes
                    .iter()
                    .map(|a| format!("{}={}", a.name, a.size))
                    .collect::<Vec<_>>()
                    .join(" x "),
                needed,
                available: num_devices,
            });
        }
        Ok(Mesh {
            axes,
            device_ids: (0..num_devices).collect(),
        })
    }

    /// A mesh of one device with a single axis `data` of size 1.
    pub fn single() -> Mesh {
        Mesh {
            axes: vec![MeshAxis {
                name: "data".into(),
                size: 1,
            }],
            device_ids: vec![0],
        }
    }

    /// The axes in order.
    pub fn axes(&self) -> &[MeshAxis] {
        &self.axes
    }

    /// Size of the named axis, if present.
    pub fn axis_size(&self, name: &str) -> Option<usize> {
        self.axes.iter().find(|a| a.name == name).map(|a| a.size)
    }

    /// Total number of devices.
    pub fn num_devices(&self) -> usize {
        self.device_ids.len()
    }

    /// Device ids in mesh (row-major) order.
    pub fn device_ids(&self) -> &[usize] {
        &self.device_ids
    }

    /// Mesh coordinates (one per axis) of the device at position `index` in mesh order.
    pub fn coords(&self, index: usize) -> Vec<usize> {
        let mut rest = index;
        let mut coords = vec![0; self.axes.len()];
        for (i, axis) in self.axes.iter().enumerate().rev() {
            coords[i] = rest % axis.size;
            rest /= axis.size;
        }
        coords
    }

    /// Shardy mesh declaration, e.g. `sdy.mesh @mesh = <["data"=2, "model"=2]>`.
    pub fn sdy_mesh_decl(&self, name: &str) -> String {
        let axes: Vec<String> = self
            .axes
            .iter()
            .map(|a| format!("\"{}\"={}", a.name, a.size))
            .collect();
        format!("sdy.mesh @{name} = <[{}]>", axes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_one_axis_and_prints_shardy() {
        let mesh = Mesh::new(&[("data", -1), ("model", 2)], 8).unwrap();
        assert_eq!(mesh.axis_size("data"), Some(4));
        assert_eq!(
            mesh.sdy_mesh_decl("mesh"),
            r#"sdy.mesh @mesh = <["data"=4, "model"=2]>"#
        );
        assert_eq!(mesh.coords(5), vec![2, 1]);
    }

    #[test]
    fn wrong_device_count_names_the_mesh() {
        let err = Mesh::new(&[("data", 8), ("model", 1)], 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mesh data=8 x model=1 needs 8 devices; 4 are available"
        );
    }
}
