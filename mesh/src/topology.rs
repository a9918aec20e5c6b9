//! The device order of a mesh laid over a physical topology, as JAX's
//! `mesh_utils.create_device_mesh` lays a logical mesh over a TPU slice.
//!
//! A topology such as `2x2x2` names the sizes of the physical axes, x first. Where the
//! devices report where they sit (TPUs: the PJRT device attributes `coords` and
//! `core_on_chip`), [`crate::PhysicalDevices`] places them by those coordinates and checks the
//! topology against them. Where they report nothing (the CPU plugin's virtual devices), device
//! `i` (its position in the platform's device list) is taken to sit at `x = i % X`,
//! `y = (i / X) % Y`, `z = i / (X Y)`: x varies fastest, the order vishwam gives virtual CPU
//! devices ([`Topology::device_order`]). Each mesh axis is then
//! given a set of whole physical axes whose sizes multiply to its size, the last mesh axis
//! (the one with the most traffic, by convention) first and with as many physical axes as
//! possible, so that its collectives run over the most links: JAX's
//! `_create_device_mesh_for_nd_torus` without splitting physical axes.

use std::fmt;

use crate::MeshError;

/// A physical device topology: the sizes of its axes, x first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    dims: Vec<usize>,
}

impl Topology {
    /// Parses `"2x2x2"` (one to three positive sizes joined by `x`).
    pub fn parse(text: &str) -> Result<Topology, MeshError> {
        let bad = || MeshError::BadTopology {
            topology: text.to_string(),
        };
        let dims: Vec<usize> = text
            .split('x')
            .map(|d| d.trim().parse::<usize>().ok().filter(|&n| n >= 1))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if dims.is_empty() || dims.len() > 3 {
            return Err(bad());
        }
        Ok(Topology { dims })
    }

    /// The sizes of the physical axes, x first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Devices in the topology: the product of its sizes.
    pub fn num_devices(&self) -> usize {
        self.dims.iter().product()
    }

    /// Device positions in mesh (row-major) order for a mesh of axes `mesh_sizes` (names for
    /// errors), each mesh axis over whole physical axes.
    pub fn device_order(&self, mesh_axes: &[(&str, usize)]) -> Result<Vec<usize>, MeshError> {
        Ok(self
            .torus_coords(mesh_axes)?
            .iter()
            .map(|coords| self.device_at(coords))
            .collect())
    }

    /// The physical coordinates (one per topology axis) of each mesh position, in mesh
    /// (row-major) order: JAX's `_create_device_mesh_for_nd_torus` without splitting axes.
    pub(crate) fn torus_coords(
        &self,
        mesh_axes: &[(&str, usize)],
    ) -> Result<Vec<Vec<usize>>, MeshError> {
        let total: usize = mesh_axes.iter().map(|&(_, s)| s).product();
        if total != self.num_devices() {
            return Err(MeshError::TopologyDeviceCount {
                topology: self.to_string(),
                topology_devices: self.num_devices(),
                devices: total,
            });
        }
        // Sizes of the physical axes not yet given to a mesh axis (0 once given).
        let mut free: Vec<usize> = self.dims.clone();
        let mut assignment: Vec<Vec<usize>> = vec![Vec::new(); mesh_axes.len()];
        for (index, &(name, size)) in mesh_axes.iter().enumerate().rev() {
            let found = (1..=free.len()).rev().find_map(|count| {
                combinations(free.len(), count)
                    .into_iter()
                    .find(|axes| axes.iter().map(|&a| free[a]).product::<usize>() == size)
            });
            match found {
                Some(axes) => {
                    for &a in &axes {
                        free[a] = 0;
                    }
                    assignment[index] = axes;
                }
                None if size == 1 => {}
                None => {
                    return Err(MeshError::TopologyAxis {
                        axis: name.to_string(),
                        size,
                        topology: self.to_string(),
                    })
                }
            }
        }
        // Physical axes in the order they are read: each mesh axis's, in mesh order, then any
        // left over (all of size 1, since the sizes multiply to the same count).
        let mut order: Vec<usize> = assignment.into_iter().flatten().collect();
        let left_over: Vec<usize> = (0..self.dims.len())
            .filter(|a| !order.contains(a))
            .collect();
        order.extend(left_over);
        let sizes: Vec<usize> = order.iter().map(|&a| self.dims[a]).collect();
        let mut coords = vec![0usize; self.dims.len()];
        let mut out = Vec::with_capacity(total);
        for flat in 0..total {
            let mut rest = flat;
            for (k, &a) in order.iter().enumerate().rev() {
                coords[a] = rest % sizes[k];
                rest /= sizes[k];
            }
            out.push(coords.clone());
        }
        Ok(out)
    }

    /// The device position at physical coordinates (x fastest).
    fn device_at(&self, coords: &[usize]) -> usize {
        coords
            .iter()
            .zip(&self.dims)
            .rev()
            .fold(0, |id, (&c, &d)| id * d + c)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(usize::to_string).collect();
        f.write_str(&dims.join("x"))
    }
}

/// The `count`-element subsets of `0..n` in lexicographic order (Python's
/// `itertools.combinations`).
fn combinations(n: usize, count: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut current = Vec::with_capacity(count);
    fn extend(
        start: usize,
        n: usize,
        count: usize,
        current: &mut Vec<usize>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if current.len() == count {
            out.push(current.clone());
            return;
        }
        for i in start..n {
            current.push(i);
            extend(i + 1, n, count, current, out);
            current.pop();
        }
    }
    extend(0, n, count, &mut current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(topology: &str, mesh: &[(&str, usize)]) -> Vec<usize> {
        Topology::parse(topology)
            .unwrap()
            .device_order(mesh)
            .unwrap()
    }

    #[test]
    fn parses_and_rejects_topologies() {
        assert_eq!(Topology::parse("2x2x2").unwrap().dims(), &[2, 2, 2]);
        assert_eq!(Topology::parse("4").unwrap().num_devices(), 4);
        for bad in ["", "2x", "2x0", "x2", "2x2x2x2", "two"] {
            assert!(
                matches!(Topology::parse(bad), Err(MeshError::BadTopology { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn orders_devices_as_jax_create_device_mesh() {
        // Expected orders worked out with numpy as mesh_utils does:
        // physical[x, y, z] = x + 2y + 4z, transposed by the assignment, then reshaped.
        // data=8 takes all three axes (x, y, z): physical.reshape(8) reads z fastest.
        assert_eq!(
            order("2x2x2", &[("data", 8), ("model", 1)]),
            [0, 4, 2, 6, 1, 5, 3, 7]
        );
        // model=4 (last, assigned first) takes (x, y); data=2 takes z:
        // physical.transpose(2, 0, 1).reshape(2, 4).
        assert_eq!(
            order("2x2x2", &[("data", 2), ("model", 4)]),
            [0, 2, 1, 3, 4, 6, 5, 7]
        );
        // A 1-D topology keeps the device order.
        assert_eq!(order("4", &[("data", 4)]), [0, 1, 2, 3]);
        // 4x2: model=2 takes y (the only axis of size 2), data=4 takes x.
        assert_eq!(
            order("4x2", &[("data", 4), ("model", 2)]),
            [0, 4, 1, 5, 2, 6, 3, 7]
        );
    }

    #[test]
    fn every_order_is_a_permutation() {
        for (topology, mesh) in [
            ("2x2x2", vec![("a", 2), ("b", 2), ("c", 2)]),
            ("2x4", vec![("a", 8)]),
            ("4x4", vec![("a", 4), ("b", 4)]),
            ("2x2x4", vec![("a", 4), ("b", 4)]),
        ] {
            let mut ids = order(topology, &mesh);
            ids.sort_unstable();
            assert_eq!(ids, (0..ids.len()).collect::<Vec<_>>(), "{topology}");
        }
    }

    #[test]
    fn errors_name_the_topology_and_the_axis() {
        let t = Topology::parse("2x2x2").unwrap();
        let err = t.device_order(&[("data", 4)]).unwrap_err();
        assert!(err.to_string().contains("2x2x2"), "{err}");
        assert!(err.to_string().contains("8 devices"), "{err}");
        assert!(
            matches!(err, MeshError::TopologyDeviceCount { .. }),
            "{err}"
        );
        // 8 is no product of whole axes of 4x4.
        let err = Topology::parse("4x4")
            .unwrap()
            .device_order(&[("data", 2), ("model", 8)])
            .unwrap_err();
        assert!(
            matches!(err, MeshError::TopologyAxis { ref axis, size: 8, .. } if axis == "model"),
            "{err}"
        );
        assert!(err.to_string().contains("4x4"), "{err}");
    }
}
