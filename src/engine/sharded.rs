//! Arrays split over the devices of a mesh: scatter from the host, gather back, reshard.

use super::{Engine, EngineError, HostArray};
use crate::runtime::{Buffer, ElementType};
use std::borrow::Cow;
use vishwam_mesh::{PartitionSpec, ShardLayout};

/// A global array split over the devices of a mesh as `spec` says, held as one buffer per
/// mesh position this process drives ([`Engine::placement`]'s local positions, ascending in
/// mesh order): every position in a single-process run.
#[derive(Debug)]
pub struct ShardedArray {
    /// Element type.
    pub element_type: ElementType,
    /// Global shape.
    pub shape: Vec<i64>,
    /// How the array is split over the mesh.
    pub spec: PartitionSpec,
    /// One buffer per local mesh position, in mesh order.
    pub shards: Vec<Buffer>,
}

impl ShardedArray {
    /// Total bytes of the global array.
    pub fn global_bytes(&self) -> usize {
        self.shape.iter().product::<i64>() as usize * self.element_type.size_in_bytes()
    }
}

impl Engine {
    /// The layout of an array of `shape` under `spec` on this engine's mesh.
    pub fn layout(&self, spec: &PartitionSpec, shape: &[i64]) -> Result<ShardLayout, EngineError> {
        Ok(ShardLayout::new(&self.mesh, spec, shape)?)
    }

    /// Scatters a host array onto the mesh: each local device receives its shard (every
    /// process of a job passes the same global array and uploads its own shards).
    pub fn put(&self, host: &HostArray, spec: &PartitionSpec) -> Result<ShardedArray, EngineError> {
        let layout = self.layout(spec, &host.shape)?;
        let elem = host.element_type.size_in_bytes();
        let replicated = layout.num_distinct_shards() == 1;
        self.place(&layout, host.element_type, &host.shape, spec, |position| {
            Ok(if replicated {
                Cow::Borrowed(host.data.as_slice())
            } else {
                Cow::Owned(layout.shard_bytes(&host.data, elem, position)?)
            })
        })
    }

    /// Places the global array of `global_shape` split as `spec` from `part`, its block that
    /// starts at index `start` of every dimension: each local device receives its shard, cut
    /// from `part`. Every local shard must lie inside the block (an error names the first
    /// that does not). A process of a multi-process job uploads its rows of a batch this way.
    pub fn put_block(
        &self,
        part: &HostArray,
        global_shape: &[i64],
        start: &[i64],
        spec: &PartitionSpec,
    ) -> Result<ShardedArray, EngineError> {
        let layout = self.layout(spec, global_shape)?;
        let rank = global_shape.len();
        if part.shape.len() != rank || start.len() != rank {
            return Err(EngineError::Shape(format!(
                "a block {:?} at {start:?} of a {global_shape:?} array: the ranks differ",
                part.shape
            )));
        }
        let elem = part.element_type.size_in_bytes();
        let part_shape: Vec<usize> = part.shape.iter().map(|&d| d as usize).collect();
        self.place(&layout, part.element_type, global_shape, spec, |position| {
            let slices = layout.slices(position);
            let mut offset = Vec::with_capacity(rank);
            for (d, s) in slices.iter().enumerate() {
                let from = s.start as i64 - start[d];
                if from < 0 || from + s.len as i64 > part.shape[d] {
                    return Err(EngineError::Shape(format!(
                        "mesh position {position} holds indices {}..{} of dimension {d} of \
                         the {global_shape:?} array, outside this process's block {}..{}",
                        s.start,
                        s.start + s.len,
                        start[d],
                        start[d] + part.shape[d]
                    )));
                }
                offset.push(from as usize);
            }
            Ok(Cow::Owned(super::host::copy_block(
                &part.data,
                &part_shape,
                elem,
                &offset,
                layout.local_shape(),
            )?))
        })
    }

    /// Uploads one buffer per local mesh position of an array laid out as `layout`; the bytes
    /// of each distinct shard come from `shard_bytes(position)`, called once, at its first
    /// local replica.
    fn place<'a>(
        &self,
        layout: &ShardLayout,
        element_type: ElementType,
        shape: &[i64],
        spec: &PartitionSpec,
        mut shard_bytes: impl FnMut(usize) -> Result<Cow<'a, [u8]>, EngineError>,
    ) -> Result<ShardedArray, EngineError> {
        let local: Vec<i64> = layout.local_shape().iter().map(|&d| d as i64).collect();
        let mut cut: Vec<Option<Cow<'a, [u8]>>> = vec![None; layout.num_distinct_shards()];
        let placement = &self.placement;
        let mut shards = Vec::with_capacity(placement.local_positions().len());
        for (&position, &device) in placement
            .local_positions()
            .iter()
            .zip(placement.client_devices())
        {
            let slot = &mut cut[layout.shard_index(position)];
            if slot.is_none() {
                *slot = Some(shard_bytes(position)?);
            }
            let bytes = slot.as_deref().unwrap_or_default();
            shards.push(
                self.client
                    .buffer_from_bytes(bytes, element_type, &local, device)?,
            );
        }
        Ok(ShardedArray {
            element_type,
            shape: shape.to_vec(),
            spec: spec.clone(),
            shards,
        })
    }

    /// Checks that `array` holds one buffer per local position of this engine's mesh.
    fn check_shard_count(
        &self,
        array: &ShardedArray,
        layout: &ShardLayout,
    ) -> Result<(), EngineError> {
        let local = self.placement.local_positions().len();
        if array.shards.len() != local {
            return Err(EngineError::Shape(format!(
                "sharded array has {} shards, but this process drives {local} of the mesh's {} \
                 devices",
                array.shards.len(),
                layout.num_devices()
            )));
        }
        Ok(())
    }

    /// For each distinct shard of `layout`, the local slot of a replica of it, or the error
    /// naming the first distinct shard this process does not hold.
    fn local_replicas(
        &self,
        array: &ShardedArray,
        layout: &ShardLayout,
    ) -> Result<Vec<usize>, EngineError> {
        self.placement
            .local_replicas(layout)
            .map_err(|(shard, positions)| EngineError::NotLocal {
                process: self.placement.process(),
                shape: array.shape.clone(),
                spec: format!("{:?}", array.spec),
                shard,
                owners: positions.iter().map(|&p| self.placement.owner(p)).collect(),
                positions,
            })
    }

    /// Gathers a sharded array back into one host array (reads one replica of each distinct
    /// shard). In a multi-process job this reads replicated arrays and arrays whose every
    /// distinct shard lies on this process's devices; others are an
    /// [`EngineError::NotLocal`] (no program gathers them across processes).
    pub fn get(&self, array: &ShardedArray) -> Result<HostArray, EngineError> {
        let layout = self.layout(&array.spec, &array.shape)?;
        let elem = array.element_type.size_in_bytes();
        self.check_shard_count(array, &layout)?;
        if layout.num_distinct_shards() == 1 {
            let data = array.shards[0].to_bytes()?;
            return Ok(HostArray {
                element_type: array.element_type,
                shape: array.shape.clone(),
                data,
            });
        }
        let replicas = self.local_replicas(array, &layout)?;
        let mut downloaded: Vec<Vec<u8>> = Vec::with_capacity(replicas.len());
        for &slot in &replicas {
            downloaded.push(array.shards[slot].to_bytes()?);
        }
        let views: Vec<&[u8]> = (0..layout.num_devices())
            .map(|p| downloaded[layout.shard_index(p)].as_slice())
            .collect();
        let data = layout.gather_first_replica(&views, elem)?;
        Ok(HostArray {
            element_type: array.element_type,
            shape: array.shape.clone(),
            data,
        })
    }

    /// The distinct shards of `array` this process owns (the first replica of each is on its
    /// devices), downloaded: `(start of the shard in every dimension, shard shape, bytes)`.
    /// Over the processes of a job, every distinct shard is returned by exactly one.
    #[allow(clippy::type_complexity)]
    pub fn owned_shards(
        &self,
        array: &ShardedArray,
    ) -> Result<Vec<(Vec<i64>, Vec<i64>, Vec<u8>)>, EngineError> {
        let layout = self.layout(&array.spec, &array.shape)?;
        self.check_shard_count(array, &layout)?;
        let shape: Vec<i64> = layout.local_shape().iter().map(|&d| d as i64).collect();
        let mut out = Vec::new();
        for (shard, slot) in self.placement.owned_shards(&layout) {
            let first = layout.replica_groups()[shard][0];
            let start = layout
                .slices(first)
                .iter()
                .map(|s| s.start as i64)
                .collect();
            out.push((start, shape.clone(), array.shards[slot].to_bytes()?));
        }
        Ok(out)
    }

    /// [`Engine::get`] of several arrays. When every array is replicated (one distinct shard,
    /// e.g. a step's scalar metrics) all their downloads are in flight at once; otherwise
    /// this is `get` on each in turn.
    pub fn get_all<'a>(
        &self,
        arrays: impl IntoIterator<Item = &'a ShardedArray>,
    ) -> Result<Vec<HostArray>, EngineError> {
        let arrays: Vec<&ShardedArray> = arrays.into_iter().collect();
        let mut replicated = Vec::new();
        for array in &arrays {
            let layout = self.layout(&array.spec, &array.shape)?;
            let local = self.placement.local_positions().len();
            if layout.num_distinct_shards() != 1 || array.shards.len() != local {
                return arrays.iter().map(|a| self.get(a)).collect();
            }
            replicated.push(&array.shards[0]);
        }
        let bytes = Buffer::to_bytes_all(&replicated)?;
        Ok(arrays
            .iter()
            .zip(bytes)
            .map(|(array, data)| HostArray {
                element_type: array.element_type,
                shape: array.shape.clone(),
                data,
            })
            .collect())
    }

    /// The same global array under another spec (through the host).
    pub fn reshard(
        &self,
        array: &ShardedArray,
        spec: &PartitionSpec,
    ) -> Result<ShardedArray, EngineError> {
        let host = self.get(array)?;
        self.put(&host, spec)
    }
}
