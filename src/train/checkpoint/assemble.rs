//! Reading a sharded checkpoint: every file's checksum, every shard against the manifest, the
//! shards of every array covering it exactly once, and the arrays assembled whole.

use super::sharded::{state_file_name, ShardEntry, StateFile};
use super::{element_type, err, Manifest, TensorEntry, TrainError};
use crate::engine::HostArray;
use crate::runtime::ElementType;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// One shard's place in its array, and where it comes from (for error messages).
#[derive(Debug, Clone)]
pub(super) struct ShardBox<'a> {
    /// The array.
    pub array: &'a str,
    /// First index in each dimension.
    pub start: &'a [i64],
    /// Extent in each dimension.
    pub shape: &'a [i64],
    /// The file (or process) holding it.
    pub source: &'a str,
}

impl<'a> ShardBox<'a> {
    /// The box of `shard`, held by `source`.
    pub fn of(shard: &'a ShardEntry, source: &'a str) -> ShardBox<'a> {
        ShardBox {
            array: &shard.array,
            start: &shard.start,
            shape: &shard.shape,
            source,
        }
    }

    fn elements(&self) -> u128 {
        self.shape.iter().map(|&d| d.max(0) as u128).product()
    }

    fn overlaps(&self, other: &ShardBox) -> bool {
        self.elements() > 0
            && other.elements() > 0
            && (0..self.start.len()).all(|d| {
                self.start[d] < other.start[d] + other.shape[d]
                    && other.start[d] < self.start[d] + self.shape[d]
            })
    }
}

/// [`check_coverage`] of the shards that `files` hold, each named by its file.
pub(super) fn check_files_cover(
    tensors: &BTreeMap<String, TensorEntry>,
    files: &[StateFile],
) -> Result<(), String> {
    let boxes: Vec<ShardBox> = files
        .iter()
        .flat_map(|f| f.shards.iter().map(move |s| ShardBox::of(s, &f.file)))
        .collect();
    check_coverage(tensors, &boxes)
}

/// Checks that the shards of every array in `tensors` lie inside it and cover it exactly once
/// (no gap, no overlap), and that every shard belongs to an array of `tensors`.
pub(super) fn check_coverage(
    tensors: &BTreeMap<String, TensorEntry>,
    boxes: &[ShardBox],
) -> Result<(), String> {
    let mut by_array: BTreeMap<&str, Vec<&ShardBox>> = BTreeMap::new();
    for b in boxes {
        let Some(entry) = tensors.get(b.array) else {
            return Err(format!(
                "{} holds a shard of `{}`, which the manifest does not list",
                b.source, b.array
            ));
        };
        let rank = entry.shape.len();
        let inside = b.start.len() == rank
            && b.shape.len() == rank
            && (0..rank).all(|d| {
                b.start[d] >= 0 && b.shape[d] >= 0 && b.start[d] + b.shape[d] <= entry.shape[d]
            });
        if !inside {
            return Err(format!(
                "{}: the shard of `{}` at {:?} of shape {:?} lies outside the array's shape {:?}",
                b.source, b.array, b.start, b.shape, entry.shape
            ));
        }
        by_array.entry(b.array).or_default().push(b);
    }
    for (name, entry) in tensors {
        let shards = by_array
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if shards.is_empty() {
            return Err(format!("no file holds a shard of `{name}`"));
        }
        for (i, a) in shards.iter().enumerate() {
            if let Some(b) = shards[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(format!(
                    "the shards of `{name}` overlap: {:?} of shape {:?} in {} and {:?} of \
                     shape {:?} in {}",
                    a.start, a.shape, a.source, b.start, b.shape, b.source
                ));
            }
        }
        let covered: u128 = shards.iter().map(|b| b.elements()).sum();
        let total: u128 = entry.shape.iter().map(|&d| d.max(0) as u128).product();
        if covered != total {
            return Err(format!(
                "the shards of `{name}` {:?} cover {covered} of its {total} elements (a shard \
                 is missing)",
                entry.shape
            ));
        }
    }
    Ok(())
}

/// Copies a row-major `shard` (its box at `start` of shape `shape`) into the row-major array
/// `whole` of shape `global`, run by run ([`vishwam_mesh::for_each_run`]).
fn place(
    whole: &mut [u8],
    global: &[i64],
    start: &[i64],
    shape: &[i64],
    shard: &[u8],
    size: usize,
) {
    let dims = |v: &[i64]| -> Vec<usize> { v.iter().map(|&d| d as usize).collect() };
    vishwam_mesh::for_each_run(
        &dims(global),
        &dims(shape),
        &dims(start),
        size,
        |at, from, len| {
            whole[at..at + len].copy_from_slice(&shard[from..from + len]);
        },
    );
}

/// Reads the state of the sharded checkpoint in `dir` described by `manifest`.
pub(super) fn read_sharded_state(
    dir: &Path,
    manifest: &Manifest,
) -> Result<BTreeMap<String, HostArray>, TrainError> {
    let n = manifest.files.len();
    if n == 0 {
        return Err(err(dir, "the manifest (version 2) lists no state files"));
    }
    if !manifest.state_sha256.is_empty() {
        return Err(err(
            dir,
            "the manifest (version 2) has a non-empty `state_sha256`, which only version 1 has",
        ));
    }
    for (r, f) in manifest.files.iter().enumerate() {
        if f.process != r || f.file != state_file_name(r, n) {
            return Err(err(
                dir,
                format!(
                    "the manifest's file {r} is {} of process {}, expected {}",
                    f.file,
                    f.process,
                    state_file_name(r, n)
                ),
            ));
        }
    }
    let mut arrays: BTreeMap<String, HostArray> = BTreeMap::new();
    for (name, entry) in &manifest.tensors {
        let element_type = ElementType::ALL
            .into_iter()
            .find(|t| t.mlir_name() == entry.dtype)
            .ok_or_else(|| err(dir, format!("`{name}` has unknown dtype `{}`", entry.dtype)))?;
        if entry.shape.iter().any(|&d| d < 0) {
            return Err(err(dir, format!("`{name}` has shape {:?}", entry.shape)));
        }
        let bytes = entry.shape.iter().product::<i64>() as usize * element_type.size_in_bytes();
        arrays.insert(
            name.clone(),
            HostArray {
                element_type,
                shape: entry.shape.clone(),
                data: vec![0; bytes],
            },
        );
    }
    check_files_cover(&manifest.tensors, &manifest.files).map_err(|d| err(dir, d))?;
    for file in &manifest.files {
        read_file_into(dir, file, &mut arrays)?;
    }
    Ok(arrays)
}

/// Verifies one state file and copies its shards into `arrays`.
fn read_file_into(
    dir: &Path,
    file: &StateFile,
    arrays: &mut BTreeMap<String, HostArray>,
) -> Result<(), TrainError> {
    let path = dir.join(&file.file);
    let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot read it: {e}")))?;
    let sum = hex::encode(Sha256::digest(&bytes));
    if sum != file.sha256 || bytes.len() as u64 != file.bytes {
        return Err(err(
            &path,
            format!(
                "corrupt: {} bytes with SHA-256 {sum}, the manifest says {} bytes with {}",
                bytes.len(),
                file.bytes,
                file.sha256
            ),
        ));
    }
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(&path, format!("not a safetensors file: {e}")))?;
    let listed: std::collections::BTreeSet<&str> =
        file.shards.iter().map(|s| s.tensor.as_str()).collect();
    if listed.len() != file.shards.len() {
        return Err(err(&path, "the manifest lists one of its tensors twice"));
    }
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|t| !listed.contains(t.as_str()))
    {
        return Err(err(
            &path,
            format!("holds tensor `{extra}`, which the manifest does not list"),
        ));
    }
    for shard in &file.shards {
        let array = arrays.get_mut(&shard.array).expect("coverage checked");
        let view = tensors.tensor(&shard.tensor).map_err(|_| {
            err(
                &path,
                format!(
                    "lacks `{}`, the shard of `{}` at {:?} listed in the manifest",
                    shard.tensor, shard.array, shard.start
                ),
            )
        })?;
        let found = element_type(view.dtype());
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if found != Some(array.element_type) || shape != shard.shape {
            let dtype =
                found.map_or_else(|| format!("{:?}", view.dtype()), |t| t.mlir_name().into());
            return Err(err(
                &path,
                format!(
                    "the shard of `{}` at {:?} is {dtype}{shape:?} in the file but {}{:?} in the \
                     manifest",
                    shard.array,
                    shard.start,
                    array.element_type.mlir_name(),
                    shard.shape
                ),
            ));
        }
        place(
            &mut array.data,
            &array.shape,
            &shard.start,
            &shard.shape,
            view.data(),
            array.element_type.size_in_bytes(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_copies_a_box_into_its_rows() {
        // A 3x4 array of u8; the 2x2 box at (1, 2).
        let mut whole = vec![0u8; 12];
        place(&mut whole, &[3, 4], &[1, 2], &[2, 2], &[1, 2, 3, 4], 1);
        assert_eq!(whole, vec![0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4]);
        let mut scalar = vec![0u8; 4];
        place(&mut scalar, &[], &[], &[], &[9, 8, 7, 6], 4);
        assert_eq!(scalar, vec![9, 8, 7, 6]);
    }

    fn entry(shape: &[i64]) -> BTreeMap<String, TensorEntry> {
        let entry = TensorEntry {
            dtype: "f32".into(),
            shape: shape.to_vec(),
        };
        BTreeMap::from([("a".to_string(), entry)])
    }

    fn boxed<'a>(start: &'a [i64], shape: &'a [i64], source: &'a str) -> ShardBox<'a> {
        ShardBox {
            array: "a",
            start,
            shape,
            source,
        }
    }

    #[test]
    fn coverage_needs_every_element_exactly_once() {
        let tensors = entry(&[4, 6]);
        let quarters = [
            boxed(&[0, 0], &[2, 3], "f0"),
            boxed(&[0, 3], &[2, 3], "f0"),
            boxed(&[2, 0], &[2, 3], "f1"),
            boxed(&[2, 3], &[2, 3], "f1"),
        ];
        check_coverage(&tensors, &quarters).unwrap();
        let e = check_coverage(&tensors, &quarters[..3]).unwrap_err();
        assert!(e.contains("cover 18 of its 24"), "{e}");
        // Same element count, but one box shifted onto another: an overlap, not a cover.
        let shifted = [
            quarters[0].clone(),
            boxed(&[1, 3], &[2, 3], "f0"),
            quarters[2].clone(),
            quarters[3].clone(),
        ];
        let e = check_coverage(&tensors, &shifted).unwrap_err();
        assert!(e.contains("overlap") && e.contains("f1"), "{e}");
        let outside = [boxed(&[0, 0], &[4, 3], "f0"), boxed(&[0, 4], &[4, 3], "f1")];
        let e = check_coverage(&tensors, &outside).unwrap_err();
        assert!(e.contains("outside") && e.contains("f1"), "{e}");
        let e = check_coverage(&tensors, &[]).unwrap_err();
        assert!(e.contains("no file holds a shard of `a`"), "{e}");
        // A zero-size array is covered by its one empty shard; a scalar by its one element.
        check_coverage(&entry(&[0, 3]), &[boxed(&[0, 0], &[0, 3], "f0")]).unwrap();
        check_coverage(&entry(&[]), &[boxed(&[], &[], "f0")]).unwrap();
        let twice = [boxed(&[], &[], "f0"), boxed(&[], &[], "f1")];
        assert!(check_coverage(&entry(&[]), &twice)
            .unwrap_err()
            .contains("overlap"));
    }
}
