//! Tests of shard geometry and byte movement on small hand-checked cases.

use super::*;

fn mesh_2x2() -> Mesh {
    Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap()
}

#[test]
fn slices_and_replicas_on_2x2() {
    let mesh = mesh_2x2();
    let spec = PartitionSpec::from_axes(&[Some("data")]);
    let layout = ShardLayout::new(&mesh, &spec, &[4, 6]).unwrap();
    assert_eq!(layout.local_shape(), &[2, 6]);
    assert_eq!(layout.num_distinct_shards(), 2);
    assert_eq!(layout.replica_groups(), &[vec![0, 1], vec![2, 3]]);
    assert_eq!(layout.replicas_of(3), &[2, 3]);
    assert_eq!(
        layout.slices(2),
        vec![DimSlice { start: 2, len: 2 }, DimSlice { start: 0, len: 6 }]
    );
    // Two axes on one dim: data major, model minor.
    let spec = PartitionSpec {
        dims: vec![crate::DimSharding {
            axes: vec!["model".into(), "data".into()],
        }],
    };
    let layout = ShardLayout::new(&mesh, &spec, &[8]).unwrap();
    let starts: Vec<usize> = (0..4).map(|p| layout.slices(p)[0].start).collect();
    // position p = (data, model): (0,0)->0, (0,1)->model 1 => piece 2, (1,0)->1, (1,1)->3.
    assert_eq!(starts, vec![0, 4, 2, 6]);
}

#[test]
fn scatter_cuts_the_expected_bytes() {
    let mesh = mesh_2x2();
    let spec = PartitionSpec::from_axes(&[Some("data"), Some("model")]);
    let layout = ShardLayout::new(&mesh, &spec, &[2, 4]).unwrap();
    let global: Vec<u8> = (0..8).collect();
    let shards = layout.scatter(&global, 1).unwrap();
    assert_eq!(shards, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
    assert_eq!(layout.shard_bytes(&global, 1, 1).unwrap(), vec![2, 3]);
    assert_eq!(layout.gather(&shards, 1).unwrap(), global);
}

#[test]
fn gather_checks_replicas_unless_asked_not_to() {
    let mesh = mesh_2x2();
    let layout =
        ShardLayout::new(&mesh, &PartitionSpec::from_axes(&[Some("model")]), &[2]).unwrap();
    let shards = vec![vec![1u8], vec![2], vec![1], vec![9]];
    assert_eq!(
        layout.gather(&shards, 1).unwrap_err().to_string(),
        "devices at mesh positions 1 and 3 should hold identical replicas of shard 1 but differ"
    );
    assert_eq!(layout.gather_first_replica(&shards, 1).unwrap(), vec![1, 2]);
}

#[test]
fn rejects_bad_buffers() {
    let mesh = mesh_2x2();
    let layout = ShardLayout::new(&mesh, &PartitionSpec::replicated(), &[3, 2]).unwrap();
    assert_eq!(
        layout.scatter(&[0u8; 5], 1).unwrap_err().to_string(),
        "the global array holds 5 bytes; shape [3, 2] of 1-byte elements needs 6"
    );
    assert_eq!(
        layout.scatter(&[], 0).unwrap_err(),
        MeshError::ZeroElementSize
    );
    assert_eq!(
        layout.gather(&[vec![0u8; 6]], 1).unwrap_err().to_string(),
        "got 1 shards for a layout over 4 devices"
    );
    let short = vec![vec![0u8; 6], vec![0u8; 6], vec![0u8; 4], vec![0u8; 6]];
    assert_eq!(
        layout.gather(&short, 1).unwrap_err().to_string(),
        "the shard of the device at mesh position 2 holds 4 bytes; shape [3, 2] of 1-byte \
         elements needs 6"
    );
    assert!(matches!(
        ShardLayout::new(&mesh, &PartitionSpec::replicated(), &[-2]),
        Err(MeshError::NegativeDimension { .. })
    ));
    assert!(matches!(
        ShardLayout::new(&mesh, &PartitionSpec::from_axes(&[Some("data")]), &[3]),
        Err(MeshError::Indivisible { .. })
    ));
    let other = ShardLayout::new(&mesh, &PartitionSpec::replicated(), &[6]).unwrap();
    assert_eq!(
        reshard(&layout, &other, &vec![vec![0u8; 6]; 4], 1)
            .unwrap_err()
            .to_string(),
        "cannot reshard an array of shape [3, 2] into a layout of shape [6]"
    );
}

#[test]
fn scalars_and_empty_arrays() {
    let mesh = mesh_2x2();
    let layout = ShardLayout::new(&mesh, &PartitionSpec::replicated(), &[]).unwrap();
    let shards = layout.scatter(&[1, 2, 3, 4], 4).unwrap();
    assert_eq!(shards, vec![vec![1, 2, 3, 4]; 4]);
    assert_eq!(layout.gather(&shards, 4).unwrap(), vec![1, 2, 3, 4]);
    let empty =
        ShardLayout::new(&mesh, &PartitionSpec::from_axes(&[Some("data")]), &[0, 3]).unwrap();
    let shards = empty.scatter(&[], 2).unwrap();
    assert!(shards.iter().all(|s| s.is_empty()));
    assert!(empty.gather(&shards, 2).unwrap().is_empty());
}

#[test]
fn runs_are_as_long_as_the_layout_allows() {
    let mut runs = Vec::new();
    // Split on dim 1 of [4, 6, 5]: each run is 3 * 5 elements, 4 runs.
    for_each_run(&[4, 6, 5], &[4, 3, 5], &[0, 3, 0], 2, |g, l, n| {
        runs.push((g, l, n))
    });
    assert_eq!(
        runs,
        vec![(30, 0, 30), (90, 30, 30), (150, 60, 30), (210, 90, 30)]
    );
    runs.clear();
    // Split on dim 0 only: one run.
    for_each_run(&[4, 6], &[2, 6], &[2, 0], 1, |g, l, n| runs.push((g, l, n)));
    assert_eq!(runs, vec![(12, 0, 12)]);
}
