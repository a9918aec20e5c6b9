//! The device mesh: ordered named axes over device ids.

use std::fmt;

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
        let axes = resolve_axes(axes, num_devices)?;
        Ok(Mesh {
            axes,
            device_ids: (0..num_devices).collect(),
        })
    }

    /// Builds a mesh over the given device ids, in mesh (row-major) order; one size may be
    /// `-1`, filled from `device_ids.len()`.
    pub fn with_device_ids(
        axes: &[(&str, i64)],
        device_ids: Vec<usize>,
    ) -> Result<Mesh, MeshError> {
        for (i, id) in device_ids.iter().enumerate() {
            if device_ids[..i].contains(id) {
                return Err(MeshError::DuplicateDevice { device: *id });
            }
        }
        let axes = resolve_axes(axes, device_ids.len())?;
        Ok(Mesh { axes, device_ids })
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

    /// Position in mesh order of the device at `coords` (one per axis, each below its size).
    pub fn position(&self, coords: &[usize]) -> usize {
        self.axes
            .iter()
            .zip(coords)
            .fold(0, |pos, (axis, &c)| pos * axis.size + c)
    }

    /// Index of the named axis in mesh order, if present.
    pub fn axis_index(&self, name: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.name == name)
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

impl fmt::Display for Mesh {
    /// The axes as users write them, e.g. `data=8 x model=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let axes: Vec<String> = self
            .axes
            .iter()
            .map(|a| format!("{}={}", a.name, a.size))
            .collect();
        f.write_str(&axes.join(" x "))
    }
}

/// `name=size x name=size`, as written (a `-1` stays `-1`).
pub(crate) fn describe_axes(axes: &[(&str, i64)]) -> String {
    axes.iter()
        .map(|(n, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(" x ")
}

/// Checks names and sizes and fills the one `-1` so that the sizes multiply to `num_devices`.
fn resolve_axes(axes: &[(&str, i64)], num_devices: usize) -> Result<Vec<MeshAxis>, MeshError> {
    let mut fill: Option<&str> = None;
    let mut known = 1usize;
    for (i, &(name, size)) in axes.iter().enumerate() {
        if axes[..i].iter().any(|(n, _)| *n == name) {
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
            s if s >= 1 => known = known.saturating_mul(s as usize),
            s => {
                return Err(MeshError::BadAxisSize {
                    axis: name.to_string(),
                    size: s,
                })
            }
        }
    }
    let filled = match fill {
        Some(_) if num_devices >= known && num_devices.is_multiple_of(known) => num_devices / known,
        Some(_) => {
            return Err(MeshError::DeviceMultiple {
                mesh: describe_axes(axes),
                multiple_of: known,
                available: num_devices,
            })
        }
        None if known == num_devices => 1,
        None => {
            return Err(MeshError::DeviceCount {
                mesh: describe_axes(axes),
                needed: known,
                available: num_devices,
            })
        }
    };
    Ok(axes
        .iter()
        .map(|&(name, size)| MeshAxis {
            name: name.to_string(),
            size: if size == -1 { filled } else { size as usize },
        })
        .collect())
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
        let err = Mesh::new(&[("data", -1), ("model", 3)], 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mesh data=-1 x model=3 needs a multiple of 3 devices; 4 are available"
        );
        let err = Mesh::new(&[("data", -1), ("model", 2)], 0).unwrap_err();
        assert!(matches!(
            err,
            MeshError::DeviceMultiple {
                multiple_of: 2,
                available: 0,
                ..
            }
        ));
    }

    #[test]
    fn rejects_bad_axes() {
        assert_eq!(
            Mesh::new(&[("data", 2), ("data", 2)], 4).unwrap_err(),
            MeshError::DuplicateAxis {
                axis: "data".into()
            }
        );
        assert_eq!(
            Mesh::new(&[("data", -1), ("model", -1)], 4)
                .unwrap_err()
                .to_string(),
            "only one mesh axis may be -1; `data` and `model` both are"
        );
        assert!(matches!(
            Mesh::new(&[("data", 0)], 0),
            Err(MeshError::BadAxisSize { size: 0, .. })
        ));
        assert!(matches!(
            Mesh::new(&[("data", -2)], 2),
            Err(MeshError::BadAxisSize { size: -2, .. })
        ));
    }

    #[test]
    fn explicit_device_order_and_positions() {
        let mesh = Mesh::with_device_ids(&[("data", 2), ("model", -1)], vec![3, 2, 1, 0]).unwrap();
        assert_eq!(mesh.device_ids(), &[3, 2, 1, 0]);
        assert_eq!(mesh.to_string(), "data=2 x model=2");
        assert_eq!(mesh.axis_index("model"), Some(1));
        for i in 0..4 {
            assert_eq!(mesh.position(&mesh.coords(i)), i);
        }
        assert_eq!(
            Mesh::with_device_ids(&[("data", 2)], vec![1, 1])
                .unwrap_err()
                .to_string(),
            "device id 1 appears twice in the device order"
        );
    }

    #[test]
    fn single_and_empty_meshes() {
        let single = Mesh::single();
        assert_eq!(single.num_devices(), 1);
        assert_eq!(single.coords(0), vec![0]);
        let empty = Mesh::new(&[], 1).unwrap();
        assert_eq!(empty.sdy_mesh_decl("mesh"), "sdy.mesh @mesh = <[]>");
        assert_eq!(empty.coords(0), Vec::<usize>::new());
    }
}
