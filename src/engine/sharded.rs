//! Arrays split over the devices of a mesh: scatter from the host, gather back, reshard.

use super::{Engine, EngineError, HostArray};
use crate::runtime::{Buffer, ElementType};
use vishwam_mesh::{PartitionSpec, ShardLayout};

/// A global array held as one buffer per mesh device (mesh order), split as `spec` says.
#[derive(Debug)]
pub struct ShardedArray {
    /// Element type.
    pub element_type: ElementType,
    /// Global shape.
    pub shape: Vec<i64>,
    /// How the array is split over the mesh.
    pub spec: PartitionSpec,
    /// One buffer per mesh position.
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

    /// Scatters a host array onto the mesh: each device receives its shard.
    pub fn put(&self, host: &HostArray, spec: &PartitionSpec) -> Result<ShardedArray, EngineError> {
        let layout = self.layout(spec, &host.shape)?;
        let elem = host.element_type.size_in_bytes();
        let local: Vec<i64> = layout.local_shape().iter().map(|&d| d as i64).collect();
        let replicated = layout.num_distinct_shards() == 1;
        // Each distinct shard is cut once, when its first replica is reached.
        let mut cut: Vec<Option<Vec<u8>>> = vec![None; layout.num_distinct_shards()];
        let mut shards = Vec::with_capacity(layout.num_devices());
        for (position, &device) in self.mesh.device_ids().iter().enumerate() {
            let bytes: &[u8] = if replicated {
                &host.data
            } else {
                let slot = &mut cut[layout.shard_index(position)];
                if slot.is_none() {
                    *slot = Some(layout.shard_bytes(&host.data, elem, position)?);
                }
                slot.as_deref().unwrap_or_default()
            };
            shards.push(
                self.client
                    .buffer_from_bytes(bytes, host.element_type, &local, device)?,
            );
        }
        Ok(ShardedArray {
            element_type: host.element_type,
            shape: host.shape.clone(),
            spec: spec.clone(),
            shards,
        })
    }

    /// Gathers a sharded array back into one host array (reads one replica of each shard).
    pub fn get(&self, array: &ShardedArray) -> Result<HostArray, EngineError> {
        let layout = self.layout(&array.spec, &array.shape)?;
        let elem = array.element_type.size_in_bytes();
        if array.shards.len() != layout.num_devices() {
            return Err(EngineError::Shape(format!(
                "sharded array has {} shards, the mesh has {} devices",
                array.shards.len(),
                layout.num_devices()
            )));
        }
        if layout.num_distinct_shards() == 1 {
            let data = array.shards[0].to_bytes()?;
            return Ok(HostArray {
                element_type: array.element_type,
                shape: array.shape.clone(),
                data,
            });
        }
        let mut downloaded: Vec<Vec<u8>> = vec![Vec::new(); layout.num_distinct_shards()];
        for (index, group) in layout.replica_groups().iter().enumerate() {
            if let Some(&first) = group.first() {
                downloaded[index] = array.shards[first].to_bytes()?;
            }
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
            if layout.num_distinct_shards() != 1 || array.shards.len() != layout.num_devices() {
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
