//! Devices placed by the coordinates they report, as JAX's `mesh_utils.create_device_mesh`
//! places TPU devices.
//!
//! A TPU reports, per device, the PJRT attributes `coords` (its chip's x, y, z) and
//! `core_on_chip`. As in JAX's `_get_physical_tpu_mesh`, the devices form a physical mesh:
//! `X x Y x Z` chips (the coordinates' extents), one device per chip; on TPU v2 and v3, whose
//! two cores per chip are separate devices and whose slices are one plane (z = 0), the cores
//! take the place of z: `X x Y x cores`. `tpu.tpu_topology` must be this shape (a shorter
//! topology is padded with sizes of 1). The mesh order then follows JAX:
//!
//! - TPU v2/v3: the devices in JAX's order (z, y, x, core, the last fastest); with 8 devices
//!   (one tray) read in the tray's ring order `0 1 2 3 6 7 4 5` (both cores of a chip next to
//!   each other, the chips around the 2x2 ring), or, when the last mesh axis has 8 devices,
//!   that ring order within each group of 8 along it; otherwise in JAX's order.
//! - TPU v5 lite (v5e): a 2x2 slice of 4 devices in the ring order `0 1 3 2`, and a 4x4 slice
//!   whose mesh has an axis of all 16 devices in its 16-chip ring order.
//! - Otherwise each mesh axis takes whole physical axes ([`Topology::device_order`]'s
//!   assignment, JAX's `_create_device_mesh_for_nd_torus`), read at the devices' coordinates.

use crate::{MeshError, Topology};

/// Where one device sits, as a TPU reports it: its chip's coordinates (x, y, z; a shorter
/// list is padded with zeros) and its core on that chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePosition {
    /// The chip's coordinates, x first (PJRT attribute `coords`).
    pub coords: Vec<i64>,
    /// The core on the chip (PJRT attribute `core_on_chip`; 0 where not reported).
    pub core_on_chip: i64,
}

/// The devices of a run with their positions, in the platform's device-list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalDevices {
    /// The device kind, as PJRT reports it (e.g. `TPU v3`); it picks JAX's special cases.
    pub kind: String,
    /// One position per device, in the platform's order.
    pub positions: Vec<DevicePosition>,
}

const TPU_V2: &str = "TPU v2";
const TPU_V3: &str = "TPU v3";
const TPU_V5_LITE: &str = "TPU v5 lite";
/// JAX's `_TRAY_RING_ORDER`: a ring through the 8 cores of a v2/v3 tray.
const TRAY_RING_ORDER: [usize; 8] = [0, 1, 2, 3, 6, 7, 4, 5];
/// JAX's `_TRAY_2x2_RING_ORDER`.
const TRAY_2X2_RING_ORDER: [usize; 4] = [0, 1, 3, 2];
/// JAX's `_TRAY_4x4_RING_ORDER`.
const TRAY_4X4_RING_ORDER: [usize; 16] = [0, 1, 2, 3, 7, 6, 5, 9, 10, 11, 15, 14, 13, 12, 8, 4];

/// The physical mesh: its shape and the device (list position) in each cell, row-major.
struct Grid {
    shape: [usize; 3],
    chips: [usize; 3],
    cells: Vec<usize>,
}

impl PhysicalDevices {
    fn is_v2_or_v3(&self) -> bool {
        self.kind == TPU_V2 || self.kind == TPU_V3
    }

    fn bad(&self, reason: String) -> MeshError {
        MeshError::DeviceCoordinates {
            kind: self.kind.clone(),
            reason,
        }
    }

    /// The chip coordinates of device `i`, padded to three.
    fn coords(&self, i: usize) -> Result<[i64; 3], MeshError> {
        let c = &self.positions[i].coords;
        if c.is_empty() || c.len() > 3 {
            return Err(self.bad(format!(
                "device {i} reports coords {c:?}, not 1 to 3 values"
            )));
        }
        let mut out = [0i64; 3];
        out[..c.len()].copy_from_slice(c);
        Ok(out)
    }

    /// JAX's `_get_physical_tpu_mesh`: the devices laid out by their coordinates.
    fn grid(&self) -> Result<Grid, MeshError> {
        let n = self.positions.len();
        if n == 0 {
            return Err(self.bad("no devices".to_string()));
        }
        let coords: Vec<[i64; 3]> = (0..n).map(|i| self.coords(i)).collect::<Result<_, _>>()?;
        let low: Vec<i64> = (0..3)
            .map(|a| coords.iter().map(|c| c[a]).min().unwrap_or(0))
            .collect();
        let high: Vec<i64> = (0..3)
            .map(|a| coords.iter().map(|c| c[a]).max().unwrap_or(0))
            .collect();
        let chips = [0, 1, 2].map(|a| (high[a] - low[a] + 1) as usize);
        let cores = self.positions.iter().map(|p| p.core_on_chip);
        let core_low = cores.clone().min().unwrap_or(0);
        let core_count = (cores.max().unwrap_or(0) - core_low + 1) as usize;
        let shape = if self.is_v2_or_v3() {
            if chips[2] != 1 {
                return Err(self.bad(format!(
                    "TPU v2/v3 devices span {} z coordinates; a slice is one plane",
                    chips[2]
                )));
            }
            [chips[0], chips[1], core_count]
        } else {
            if let Some(i) = self.positions.iter().position(|p| p.core_on_chip != 0) {
                return Err(self.bad(format!(
                    "device {i} is core {} of its chip; meshes beyond TPU v3 need one device \
                     per chip (megacore), as in JAX",
                    self.positions[i].core_on_chip
                )));
            }
            chips
        };
        let total: usize = shape.iter().product();
        if total != n {
            return Err(self.bad(format!(
                "{n} devices do not fill their {}x{}x{} physical mesh (a hole or a repeated \
                 position)",
                shape[0], shape[1], shape[2]
            )));
        }
        let mut cells = vec![usize::MAX; total];
        for (i, c) in coords.iter().enumerate() {
            let third = if self.is_v2_or_v3() {
                (self.positions[i].core_on_chip - core_low) as usize
            } else {
                (c[2] - low[2]) as usize
            };
            let (x, y) = ((c[0] - low[0]) as usize, (c[1] - low[1]) as usize);
            let cell = (x * shape[1] + y) * shape[2] + third;
            if cells[cell] != usize::MAX {
                return Err(self.bad(format!(
                    "devices {} and {i} report the same position",
                    cells[cell]
                )));
            }
            cells[cell] = i;
        }
        Ok(Grid {
            shape,
            chips,
            cells,
        })
    }

    /// The physical mesh shape the devices form (see the module docs).
    pub fn physical_shape(&self) -> Result<[usize; 3], MeshError> {
        Ok(self.grid()?.shape)
    }

    /// The devices in JAX's device order: z, y, x, core, the last varying fastest.
    fn sequential(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.positions.len()).collect();
        order.sort_by_key(|&i| {
            let p = &self.positions[i];
            let mut key: Vec<i64> = p.coords.iter().rev().copied().collect();
            key.push(p.core_on_chip);
            key
        });
        order
    }

    /// Device positions (indices into [`PhysicalDevices::positions`]) in mesh (row-major)
    /// order for a mesh of axes `mesh_axes` (name, size) over `topology`, which must be the
    /// shape the devices form; see the module docs for the order.
    pub fn device_order(
        &self,
        topology: &Topology,
        mesh_axes: &[(&str, usize)],
    ) -> Result<Vec<usize>, MeshError> {
        let n = self.positions.len();
        let total: usize = mesh_axes.iter().map(|&(_, s)| s).product();
        let grid = self.grid()?;
        let mut dims = topology.dims().to_vec();
        dims.resize(3, 1);
        if dims != grid.shape || total != n {
            let [x, y, z] = grid.shape;
            let what = if self.is_v2_or_v3() {
                format!(
                    "{}x{} chips with {z} cores each",
                    grid.chips[0], grid.chips[1]
                )
            } else {
                format!(
                    "{}x{}x{} chips",
                    grid.chips[0], grid.chips[1], grid.chips[2]
                )
            };
            return Err(MeshError::TopologyMismatch {
                topology: topology.to_string(),
                reported: format!("{n} {} devices report {what}", self.kind),
                shape: format!("{x}x{y}x{z}"),
            });
        }
        let largest_axis = mesh_axes.iter().map(|&(_, s)| s).max().unwrap_or(1);
        if self.is_v2_or_v3() {
            let sequential = self.sequential();
            let last = mesh_axes.last().map_or(1, |&(_, s)| s);
            return Ok(if n == TRAY_RING_ORDER.len() {
                TRAY_RING_ORDER.iter().map(|&k| sequential[k]).collect()
            } else if last == TRAY_RING_ORDER.len() {
                sequential
                    .chunks(last)
                    .flat_map(|tray| TRAY_RING_ORDER.iter().map(move |&k| tray[k]))
                    .collect()
            } else {
                sequential
            });
        }
        if self.kind == TPU_V5_LITE {
            let ring: Option<&[usize]> = match (grid.chips, n) {
                ([2, 2, 1], 4) => Some(&TRAY_2X2_RING_ORDER),
                ([4, 4, 1], 16) if largest_axis == 16 => Some(&TRAY_4X4_RING_ORDER),
                _ => None,
            };
            if let Some(ring) = ring {
                let sequential = self.sequential();
                return Ok(ring.iter().map(|&k| sequential[k]).collect());
            }
        }
        let [_, y, z] = grid.shape;
        Ok(topology
            .torus_coords(mesh_axes)?
            .into_iter()
            .map(|mut c| {
                c.resize(3, 0);
                grid.cells[(c[0] * y + c[1]) * z + c[2]]
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "physical_tests.rs"]
mod tests;
