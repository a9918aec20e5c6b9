//! Which positions of a mesh this process drives.
//!
//! In a single-process run the mesh's device ids index the client's devices and every
//! position is local. In a multi-process job they index the job's global device list (every
//! process's devices, by process, as `vishwam train` agrees on it through the store), and a
//! process holds buffers only for the positions whose device it owns: its *local positions*,
//! ascending in mesh order. A [`crate::engine::ShardedArray`]'s shards are one buffer per local
//! position in that order. Each distinct shard of an array is *owned* (written to checkpoints)
//! by the process of its first replica, so that every distinct shard has exactly one owner.

use super::EngineError;
use crate::runtime::GlobalDevice;
use std::ops::Range;
use vishwam_mesh::{Mesh, ShardLayout};

/// The mesh positions one process drives and the client devices they sit on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPlacement {
    /// This process's index (0 in a single-process run).
    process: usize,
    /// Processes in the job (1 in a single-process run).
    num_processes: usize,
    /// Per mesh position: the process that owns its device.
    owners: Vec<usize>,
    /// Per mesh position: the global device id (the compile options' device assignment).
    device_ids: Vec<i32>,
    /// The positions this process drives, ascending.
    local_positions: Vec<usize>,
    /// Per local position (same order): its device's index in the client's devices.
    client_devices: Vec<usize>,
    /// Per mesh position: its index in `local_positions`, if local.
    local_slot: Vec<Option<usize>>,
}

impl MeshPlacement {
    /// A single-process run: the mesh's device ids index the client's devices, whose global
    /// ids are `client_device_ids`; every position is local.
    pub fn single(mesh: &Mesh, client_device_ids: &[i32]) -> Result<MeshPlacement, EngineError> {
        let n = mesh.num_devices();
        let mut device_ids = Vec::with_capacity(n);
        for &d in mesh.device_ids() {
            let id = client_device_ids.get(d).ok_or_else(|| {
                EngineError::Shape(format!(
                    "mesh {mesh} uses device {d}, but the client has {} devices",
                    client_device_ids.len()
                ))
            })?;
            device_ids.push(*id);
        }
        Ok(MeshPlacement {
            process: 0,
            num_processes: 1,
            owners: vec![0; n],
            device_ids,
            local_positions: (0..n).collect(),
            client_devices: mesh.device_ids().to_vec(),
            local_slot: (0..n).map(Some).collect(),
        })
    }

    /// Process `process` of a job of `num_processes` whose global device list is `job` (the
    /// mesh's device ids index it); `client_device_ids` are the global ids of this process's
    /// client devices, in the client's order. Fails when a device of this process is not one
    /// of its client's, or when this process drives none of the mesh's positions.
    pub fn of_job(
        mesh: &Mesh,
        job: &[GlobalDevice],
        num_processes: usize,
        process: usize,
        client_device_ids: &[i32],
    ) -> Result<MeshPlacement, EngineError> {
        let n = mesh.num_devices();
        let mut placement = MeshPlacement {
            process,
            num_processes,
            owners: Vec::with_capacity(n),
            device_ids: Vec::with_capacity(n),
            local_positions: Vec::new(),
            client_devices: Vec::new(),
            local_slot: vec![None; n],
        };
        for (position, &d) in mesh.device_ids().iter().enumerate() {
            let device = job.get(d).ok_or_else(|| {
                EngineError::Shape(format!(
                    "mesh {mesh} uses device {d}, but the job has {} devices",
                    job.len()
                ))
            })?;
            let owner = usize::try_from(device.process_index)
                .ok()
                .filter(|&p| p < num_processes)
                .ok_or_else(|| {
                    EngineError::Shape(format!(
                        "device {} belongs to process {}, not one of the job's {num_processes}",
                        device.id, device.process_index
                    ))
                })?;
            placement.owners.push(owner);
            placement.device_ids.push(device.id);
            if owner == process {
                let client = client_device_ids
                    .iter()
                    .position(|&id| id == device.id)
                    .ok_or_else(|| {
                        EngineError::Shape(format!(
                            "device {} of process {process} (mesh position {position}) is not \
                             one of this process's client devices {client_device_ids:?}",
                            device.id
                        ))
                    })?;
                placement.local_slot[position] = Some(placement.local_positions.len());
                placement.local_positions.push(position);
                placement.client_devices.push(client);
            }
        }
        if placement.local_positions.is_empty() {
            return Err(EngineError::Shape(format!(
                "process {process} drives none of the devices of mesh {mesh} (over devices \
                 {:?} of the job's {}): every process must own some of the mesh's devices; \
                 use all of the job's devices",
                mesh.device_ids(),
                job.len()
            )));
        }
        Ok(placement)
    }

    /// This process's index.
    pub fn process(&self) -> usize {
        self.process
    }

    /// Processes in the job.
    pub fn num_processes(&self) -> usize {
        self.num_processes
    }

    /// True when this process drives every position (a single-process run).
    pub fn is_whole_mesh(&self) -> bool {
        self.local_positions.len() == self.owners.len()
    }

    /// The mesh positions this process drives, ascending: the order of a sharded array's
    /// shards.
    pub fn local_positions(&self) -> &[usize] {
        &self.local_positions
    }

    /// The client device index of the `slot`-th local position.
    pub fn client_device(&self, slot: usize) -> usize {
        self.client_devices[slot]
    }

    /// The client device indices of the local positions, in their order.
    pub fn client_devices(&self) -> &[usize] {
        &self.client_devices
    }

    /// The index among the local positions of mesh position `position`, if it is local.
    pub fn local_slot(&self, position: usize) -> Option<usize> {
        self.local_slot.get(position).copied().flatten()
    }

    /// The process owning the device of mesh position `position`.
    pub fn owner(&self, position: usize) -> usize {
        self.owners[position]
    }

    /// The global device id of every mesh position, in mesh order (the device assignment).
    pub fn device_assignment(&self) -> &[i32] {
        &self.device_ids
    }

    /// The distinct shards of `layout` this process owns (those whose first replica is on
    /// one of its devices), ascending, each with the local slot holding that replica.
    pub fn owned_shards(&self, layout: &ShardLayout) -> Vec<(usize, usize)> {
        layout
            .replica_groups()
            .iter()
            .enumerate()
            .filter_map(|(shard, group)| {
                let first = *group.first()?;
                self.local_slot(first).map(|slot| (shard, slot))
            })
            .collect()
    }

    /// For every distinct shard of `layout`, a local slot holding a replica of it; `Err`
    /// names the first distinct shard held only by other processes.
    pub fn local_replicas(&self, layout: &ShardLayout) -> Result<Vec<usize>, (usize, Vec<usize>)> {
        layout
            .replica_groups()
            .iter()
            .enumerate()
            .map(|(shard, group)| {
                group
                    .iter()
                    .find_map(|&p| self.local_slot(p))
                    .ok_or_else(|| (shard, group.clone()))
            })
            .collect()
    }

    /// The indices along dimension `dim` of `layout`'s array that this process's devices
    /// hold, as one range; an error when they are not contiguous.
    pub fn rows_held(&self, layout: &ShardLayout, dim: usize) -> Result<Range<usize>, String> {
        let mut pieces: Vec<Range<usize>> = self
            .local_positions
            .iter()
            .map(|&p| {
                let s = layout.slices(p)[dim];
                s.start..s.start + s.len
            })
            .collect();
        pieces.sort_by_key(|r| (r.start, r.end));
        pieces.dedup();
        let mut held = pieces.first().cloned().unwrap_or(0..0);
        for piece in &pieces[1..] {
            if piece.start != held.end {
                return Err(format!(
                    "process {}'s devices hold rows {:?} of dimension {dim}, which are not one \
                     contiguous block",
                    self.process, pieces
                ));
            }
            held.end = piece.end;
        }
        Ok(held)
    }

    /// Checks that this process's devices hold exactly `rows` along dimension `dim` of
    /// `layout`'s array (a batch: the rows this process feeds), naming why not.
    pub fn check_rows(
        &self,
        layout: &ShardLayout,
        dim: usize,
        rows: Range<usize>,
    ) -> Result<(), EngineError> {
        let held = self.rows_held(layout, dim).map_err(|why| {
            EngineError::Shape(format!(
                "{why}; a multi-process run needs each process's devices to hold one block of \
                 the batch (order the mesh with the batch axes outermost)"
            ))
        })?;
        if held != rows {
            return Err(EngineError::Shape(format!(
                "the mesh places rows {held:?} of each micro-batch of {} on process {}'s \
                 devices, but the process feeds rows {rows:?}: a multi-process run needs the \
                 batch-sharding mesh axes outermost over the job's devices (process 0's \
                 devices first), so that each process's devices hold its own rows; \
                 tpu.tpu_topology or tpu.mesh_shape orders the devices otherwise here",
                layout.global_shape()[dim],
                self.process
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
