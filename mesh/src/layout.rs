//! Shard geometry: which slice of a global array each device holds, and byte-level scatter,
//! gather and reshard over row-major host data.
//!
//! Along a dimension split by mesh axes `[a, b]` (major first) the device with coordinates
//! `(ca, cb)` holds piece `ca * size(b) + cb` of `size(a) * size(b)` equal pieces, the
//! convention of Shardy and GSPMD. Devices whose coordinates differ only along axes the spec
//! does not use hold identical replicas. Copies move contiguous runs: every dimension after
//! the innermost split one is whole, so one `copy_from_slice` moves that dimension's local
//! extent times everything inside it.

use crate::{Mesh, MeshError, PartitionSpec};

/// The part of one dimension a device holds: `len` elements from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DimSlice {
    /// First index held, in the global array.
    pub start: usize,
    /// Number of indices held (the local size of the dimension).
    pub len: usize,
}

/// Where every device's shard of one global array lies, for one mesh and spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    spec: PartitionSpec,
    global_shape: Vec<usize>,
    local_shape: Vec<usize>,
    device_ids: Vec<usize>,
    /// Per device position: the piece index along each dimension.
    pieces: Vec<Vec<usize>>,
    /// Per device position: the index of the distinct shard it holds.
    shard_of: Vec<usize>,
    /// Per distinct shard: the device positions holding it, ascending.
    replica_groups: Vec<Vec<usize>>,
}

impl ShardLayout {
    /// The layout of an array of `global_shape` split by `spec` over `mesh`.
    pub fn new(
        mesh: &Mesh,
        spec: &PartitionSpec,
        global_shape: &[i64],
    ) -> Result<ShardLayout, MeshError> {
        spec.validate(mesh, global_shape)?;
        let global: Vec<usize> = global_shape.iter().map(|&s| s as usize).collect();
        if global
            .iter()
            .try_fold(1usize, |acc, &s| acc.checked_mul(s))
            .is_none()
        {
            return Err(MeshError::SizeOverflow {
                shape: join(&global),
                elem_size: 1,
            });
        }
        let rank = global.len();
        let per_dim = spec.shards_per_dim(mesh, rank);
        let local_shape: Vec<usize> = global.iter().zip(&per_dim).map(|(g, p)| g / p).collect();
        let num_shards: usize = per_dim.iter().product();
        let mut pieces = Vec::with_capacity(mesh.num_devices());
        let mut shard_of = Vec::with_capacity(mesh.num_devices());
        let mut replica_groups = vec![Vec::new(); num_shards];
        for position in 0..mesh.num_devices() {
            let coords = mesh.coords(position);
            let piece: Vec<usize> = (0..rank)
                .map(|d| {
                    spec.dims.get(d).map_or(0, |s| {
                        s.axes.iter().fold(0, |acc, axis| {
                            // validate() guaranteed the axis exists.
                            let i = mesh.axis_index(axis).unwrap_or(0);
                            acc * mesh.axes()[i].size + coords[i]
                        })
                    })
                })
                .collect();
            let shard = piece
                .iter()
                .zip(&per_dim)
                .fold(0, |acc, (c, p)| acc * p + c);
            replica_groups[shard].push(position);
            shard_of.push(shard);
            pieces.push(piece);
        }
        Ok(ShardLayout {
            spec: spec.clone(),
            global_shape: global,
            local_shape,
            device_ids: mesh.device_ids().to_vec(),
            pieces,
            shard_of,
            replica_groups,
        })
    }

    /// The spec this layout follows.
    pub fn spec(&self) -> &PartitionSpec {
        &self.spec
    }

    /// Shape of the whole array.
    pub fn global_shape(&self) -> &[usize] {
        &self.global_shape
    }

    /// Shape of every device's shard (all shards have the same shape).
    pub fn local_shape(&self) -> &[usize] {
        &self.local_shape
    }

    /// Number of devices, i.e. of shards handed out (replicas included).
    pub fn num_devices(&self) -> usize {
        self.device_ids.len()
    }

    /// Device ids in mesh order: shard `i` of [`ShardLayout::scatter`] goes to `device_ids()[i]`.
    pub fn device_ids(&self) -> &[usize] {
        &self.device_ids
    }

    /// Number of distinct shards (devices divided by the replication factor).
    pub fn num_distinct_shards(&self) -> usize {
        self.replica_groups.len()
    }

    /// The slice of every dimension held by the device at `position` in mesh order.
    pub fn slices(&self, position: usize) -> Vec<DimSlice> {
        self.pieces[position]
            .iter()
            .zip(&self.local_shape)
            .map(|(&piece, &len)| DimSlice {
                start: piece * len,
                len,
            })
            .collect()
    }

    /// Index of the distinct shard held by the device at `position`.
    pub fn shard_index(&self, position: usize) -> usize {
        self.shard_of[position]
    }

    /// For each distinct shard, the device positions holding identical copies of it.
    pub fn replica_groups(&self) -> &[Vec<usize>] {
        &self.replica_groups
    }

    /// The device positions holding the same data as the device at `position` (itself included).
    pub fn replicas_of(&self, position: usize) -> &[usize] {
        &self.replica_groups[self.shard_of[position]]
    }

    /// Elements in one shard.
    pub fn local_elements(&self) -> usize {
        self.local_shape.iter().product()
    }

    /// Elements in the whole array.
    pub fn global_elements(&self) -> usize {
        self.global_shape.iter().product()
    }

    /// Bytes of one shard with `elem_size`-byte elements.
    pub fn local_bytes(&self, elem_size: usize) -> Result<usize, MeshError> {
        self.local_elements()
            .checked_mul(elem_size)
            .ok_or_else(|| self.overflow(elem_size))
    }

    /// Bytes of the whole array with `elem_size`-byte elements.
    pub fn global_bytes(&self, elem_size: usize) -> Result<usize, MeshError> {
        self.global_elements()
            .checked_mul(elem_size)
            .ok_or_else(|| self.overflow(elem_size))
    }

    /// Splits a row-major global array into one shard per device, in mesh order. Each distinct
    /// shard is cut once and cloned for its replicas.
    pub fn scatter(&self, global: &[u8], elem_size: usize) -> Result<Vec<Vec<u8>>, MeshError> {
        self.check_global(global, elem_size)?;
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); self.num_devices()];
        for group in &self.replica_groups {
            let Some((&first, rest)) = group.split_first() else {
                continue;
            };
            let shard = self.cut(global, elem_size, first)?;
            for &p in rest {
                out[p] = shard.clone();
            }
            out[first] = shard;
        }
        Ok(out)
    }

    /// The shard of the device at `position` alone, cut from a row-major global array.
    pub fn shard_bytes(
        &self,
        global: &[u8],
        elem_size: usize,
        position: usize,
    ) -> Result<Vec<u8>, MeshError> {
        self.check_global(global, elem_size)?;
        self.cut(global, elem_size, position)
    }

    /// Joins one shard per device (mesh order) into the row-major global array, checking that
    /// devices meant to hold replicas hold identical bytes (a mismatch is an error naming them).
    pub fn gather<S: AsRef<[u8]>>(
        &self,
        shards: &[S],
        elem_size: usize,
    ) -> Result<Vec<u8>, MeshError> {
        self.gather_impl(shards, elem_size, true)
    }

    /// Like [`ShardLayout::gather`] but reads only the first replica of each shard (faster; use
    /// when replicas are known to agree, e.g. straight out of one SPMD program).
    pub fn gather_first_replica<S: AsRef<[u8]>>(
        &self,
        shards: &[S],
        elem_size: usize,
    ) -> Result<Vec<u8>, MeshError> {
        self.gather_impl(shards, elem_size, false)
    }

    fn gather_impl<S: AsRef<[u8]>>(
        &self,
        shards: &[S],
        elem_size: usize,
        check_replicas: bool,
    ) -> Result<Vec<u8>, MeshError> {
        if elem_size == 0 {
            return Err(MeshError::ZeroElementSize);
        }
        if shards.len() != self.num_devices() {
            return Err(MeshError::ShardCount {
                expected: self.num_devices(),
                got: shards.len(),
            });
        }
        let local_bytes = self.local_bytes(elem_size)?;
        for (position, shard) in shards.iter().enumerate() {
            let got = shard.as_ref().len();
            if got != local_bytes {
                return Err(MeshError::ByteLength {
                    what: format!("the shard of the device at mesh position {position}"),
                    shape: join(&self.local_shape),
                    elem_size,
                    expected: local_bytes,
                    got,
                });
            }
        }
        let mut global = vec![0u8; self.global_bytes(elem_size)?];
        for (shard, group) in self.replica_groups.iter().enumerate() {
            let Some((&first, rest)) = group.split_first() else {
                continue;
            };
            let src = shards[first].as_ref();
            if check_replicas {
                if let Some(&other) = rest.iter().find(|&&p| shards[p].as_ref() != src) {
                    return Err(MeshError::ReplicaMismatch {
                        shard,
                        first,
                        other,
                    });
                }
            }
            let start = self.starts(first);
            for_each_run(
                &self.global_shape,
                &self.local_shape,
                &start,
                elem_size,
                |g, l, n| {
                    global[g..g + n].copy_from_slice(&src[l..l + n]);
                },
            );
        }
        Ok(global)
    }

    /// Checks a global buffer's element size and length.
    fn check_global(&self, global: &[u8], elem_size: usize) -> Result<(), MeshError> {
        if elem_size == 0 {
            return Err(MeshError::ZeroElementSize);
        }
        let expected = self.global_bytes(elem_size)?;
        if global.len() != expected {
            return Err(MeshError::ByteLength {
                what: "the global array".to_string(),
                shape: join(&self.global_shape),
                elem_size,
                expected,
                got: global.len(),
            });
        }
        Ok(())
    }

    /// Copies the shard of `position` out of a checked global buffer.
    fn cut(&self, global: &[u8], elem_size: usize, position: usize) -> Result<Vec<u8>, MeshError> {
        let mut shard = vec![0u8; self.local_bytes(elem_size)?];
        let start = self.starts(position);
        for_each_run(
            &self.global_shape,
            &self.local_shape,
            &start,
            elem_size,
            |g, l, n| {
                shard[l..l + n].copy_from_slice(&global[g..g + n]);
            },
        );
        Ok(shard)
    }

    fn starts(&self, position: usize) -> Vec<usize> {
        self.slices(position).iter().map(|s| s.start).collect()
    }

    fn overflow(&self, elem_size: usize) -> MeshError {
        MeshError::SizeOverflow {
            shape: join(&self.global_shape),
            elem_size,
        }
    }
}

/// Moves shards of one array from layout `from` to layout `to` (any meshes, same global
/// shape) through the global array; replicas of `from` are checked to agree.
pub fn reshard<S: AsRef<[u8]>>(
    from: &ShardLayout,
    to: &ShardLayout,
    shards: &[S],
    elem_size: usize,
) -> Result<Vec<Vec<u8>>, MeshError> {
    if from.global_shape != to.global_shape {
        return Err(MeshError::ReshardShape {
            from: join(&from.global_shape),
            to: join(&to.global_shape),
        });
    }
    let global = from.gather(shards, elem_size)?;
    to.scatter(&global, elem_size)
}

/// Calls `f(global_byte_offset, local_byte_offset, byte_len)` for each contiguous run of the
/// block of shape `local` starting at `start` inside a row-major array of shape `global`
/// (the innermost dimensions the block takes whole move together). The block must lie inside
/// the array; nothing is called for an empty block.
pub fn for_each_run(
    global: &[usize],
    local: &[usize],
    start: &[usize],
    elem_size: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    if local.contains(&0) {
        return;
    }
    let rank = global.len();
    let Some(k) = (0..rank).rev().find(|&d| local[d] != global[d]) else {
        f(0, 0, global.iter().product::<usize>() * elem_size);
        return;
    };
    let mut stride = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * global[d + 1];
    }
    let run = local[k] * stride[k] * elem_size;
    let base: usize = (0..=k).map(|d| start[d] * stride[d]).sum();
    let mut index = vec![0usize; k];
    let mut local_offset = 0;
    loop {
        let offset = base + index.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        f(offset * elem_size, local_offset, run);
        local_offset += run;
        let mut d = k;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < local[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

fn join(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
