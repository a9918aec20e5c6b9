//! The local placement of every process of 2- and 4-process jobs over data-parallel, fsdp,
//! tensor-parallel and hybrid meshes: local positions, owned shards, batch rows.

use super::MeshPlacement;
use crate::data::process_slice::ProcessSlice;
use crate::runtime::GlobalDevice;
use vishwam_mesh::{
    DeviceStrategy, LogicalAxis as L, Mesh, MeshSettings, PartitionSpec, ShardLayout, ShardingPlan,
};

/// A job of `processes` with `per_process` devices each, listed by process; ids are not
/// positions (process r's device k has id 100 r + k), as a plugin's may not be.
fn job(processes: usize, per_process: usize) -> Vec<GlobalDevice> {
    (0..processes)
        .flat_map(|r| {
            (0..per_process).map(move |k| GlobalDevice {
                id: (100 * r + k) as i32,
                process_index: r as i32,
                kind: "cpu".into(),
                addressable: false,
            })
        })
        .collect()
}

/// The client device ids of process `r` (its own devices, in its plugin's order).
fn client_ids(devices: &[GlobalDevice], r: usize) -> Vec<i32> {
    devices
        .iter()
        .filter(|d| d.process_index == r as i32)
        .map(|d| d.id)
        .collect()
}

fn placements(mesh: &Mesh, devices: &[GlobalDevice], processes: usize) -> Vec<MeshPlacement> {
    (0..processes)
        .map(|r| {
            MeshPlacement::of_job(mesh, devices, processes, r, &client_ids(devices, r)).unwrap()
        })
        .collect()
}

fn plan(strategy: DeviceStrategy, devices: usize) -> ShardingPlan {
    let settings = MeshSettings::new(strategy, true);
    ShardingPlan::build(&settings, "cpu", devices).unwrap()
}

/// Specs of parameters of every kind under `plan`, with their shapes.
fn parameter_layouts(plan: &ShardingPlan) -> Vec<ShardLayout> {
    let cases: [(&[L], &[i64]); 5] = [
        (&[L::Vocab, L::Embed], &[64, 16]),
        (&[L::Embed, L::Mlp], &[16, 32]),
        (&[L::Mlp, L::Embed], &[32, 16]),
        (&[L::Embed, L::Heads, L::HeadDim], &[16, 8, 4]),
        (&[L::Embed], &[16]),
    ];
    let mut layouts: Vec<ShardLayout> = cases
        .iter()
        .map(|(logical, shape)| {
            let spec = plan.parameter_spec(logical, shape).unwrap().spec;
            ShardLayout::new(&plan.mesh, &spec, shape).unwrap()
        })
        .collect();
    layouts.push(ShardLayout::new(&plan.mesh, &PartitionSpec::default(), &[]).unwrap());
    layouts
}

/// The batch `[accum, micro_batch, seq_len]` of `plan` as the trainer lays it out.
fn batch_layout(plan: &ShardingPlan, accum: i64, micro: i64) -> ShardLayout {
    let micro_spec = plan
        .activation_spec(&[L::Batch, L::Length], &[micro, 8])
        .unwrap()
        .spec;
    let mut dims = vec![Default::default()];
    dims.extend(micro_spec.dims);
    ShardLayout::new(&plan.mesh, &PartitionSpec { dims }, &[accum, micro, 8]).unwrap()
}

/// Every process's placement over `plan`'s mesh: local positions partition the mesh, each
/// distinct shard of every array has exactly one owner, which holds it, and where the batch
/// is split over the processes their rows tile every micro-batch exactly once, each process
/// holding the rows its `ProcessSlice` feeds.
fn check_job(strategy: DeviceStrategy, processes: usize, per_process: usize) {
    let devices = job(processes, per_process);
    let plan = plan(strategy, devices.len());
    let all = placements(&plan.mesh, &devices, processes);
    let what = format!("{strategy} over {processes} processes of {per_process}: {plan}");
    let mut seen = vec![0; plan.mesh.num_devices()];
    for (r, p) in all.iter().enumerate() {
        assert_eq!(p.local_positions().len(), per_process, "{what}");
        for (slot, &position) in p.local_positions().iter().enumerate() {
            seen[position] += 1;
            assert_eq!(p.owner(position), r, "{what}");
            assert_eq!(p.local_slot(position), Some(slot), "{what}");
            let id = p.device_assignment()[position];
            assert_eq!(client_ids(&devices, r)[p.client_device(slot)], id, "{what}");
        }
        assert!(!p.is_whole_mesh(), "{what}");
    }
    assert!(seen.iter().all(|&n| n == 1), "{what}: {seen:?}");
    for layout in parameter_layouts(&plan) {
        let mut owners = vec![Vec::new(); layout.num_distinct_shards()];
        for (r, p) in all.iter().enumerate() {
            for (shard, slot) in p.owned_shards(&layout) {
                owners[shard].push(r);
                assert_eq!(layout.shard_index(p.local_positions()[slot]), shard);
            }
        }
        for (shard, who) in owners.iter().enumerate() {
            let first = layout.replica_groups()[shard][0];
            assert_eq!(who, &[all[0].owner(first)], "{what}: shard {shard}");
        }
    }
    let micro = 4 * processes;
    let batch = batch_layout(&plan, 2, micro as i64);
    let mut fed = vec![0; micro];
    for (r, p) in all.iter().enumerate() {
        let slice = ProcessSlice::of_process(2 * micro, micro, processes, r).unwrap();
        let rows = slice.first_row..slice.first_row + slice.rows;
        p.check_rows(&batch, 1, rows.clone()).unwrap();
        assert_eq!(p.rows_held(&batch, 1).unwrap(), rows, "{what}");
        for row in rows {
            fed[row] += 1;
        }
    }
    assert!(fed.iter().all(|&n| n == 1), "{what}: {fed:?}");
}

#[test]
fn two_and_four_processes_split_dp_fsdp_and_hybrid_meshes() {
    for strategy in [
        DeviceStrategy::DataParallel,
        DeviceStrategy::Fsdp,
        DeviceStrategy::Hybrid,
    ] {
        check_job(strategy, 2, 2);
        check_job(strategy, 2, 4);
        check_job(strategy, 4, 2);
    }
    // Hybrid over 4 processes of 4 devices: data 4 x model 4, one data row per process.
    check_job(DeviceStrategy::Hybrid, 4, 4);
}

#[test]
fn a_tensor_parallel_mesh_over_processes_is_refused_for_the_batch() {
    let devices = job(2, 2);
    let plan = plan(DeviceStrategy::TensorParallel, 4);
    let all = placements(&plan.mesh, &devices, 2);
    // Parameters: still every distinct shard owned once.
    for layout in parameter_layouts(&plan) {
        let owned: usize = all.iter().map(|p| p.owned_shards(&layout).len()).sum();
        assert_eq!(owned, layout.num_distinct_shards());
    }
    // The batch is replicated: process 0's devices hold every row, not only its own.
    let batch = batch_layout(&plan, 1, 8);
    let err = all[0].check_rows(&batch, 1, 0..4).unwrap_err().to_string();
    assert!(
        err.contains("places rows 0..8") && err.contains("feeds rows 0..4"),
        "{err}"
    );
}

#[test]
fn a_mesh_that_interleaves_the_processes_is_refused_naming_why() {
    // Devices 0, 2 of process 0 and 1, 3... in mesh order: data row 0 = job devices 0 and 2,
    // which belong to processes 0 and 1.
    let devices = job(2, 2);
    let mesh = Mesh::with_device_ids(&[("data", 2), ("model", 2)], vec![0, 2, 1, 3]).unwrap();
    let all = placements(&mesh, &devices, 2);
    assert_eq!(all[0].local_positions(), [0, 2]);
    let spec = PartitionSpec::from_axes(&[None, Some("data"), None]);
    let batch = ShardLayout::new(&mesh, &spec, &[1, 8, 8]).unwrap();
    assert_eq!(all[0].rows_held(&batch, 1).unwrap(), 0..8);
    let err = all[0].check_rows(&batch, 1, 0..4).unwrap_err().to_string();
    assert!(err.contains("batch-sharding mesh axes outermost"), "{err}");
    // A `model`-split array: each process holds (and owns) one of its two distinct shards,
    // so neither can read it whole.
    let w = ShardLayout::new(&mesh, &PartitionSpec::from_axes(&[Some("model")]), &[8]).unwrap();
    assert_eq!(all[0].owned_shards(&w), [(0, 0)]);
    assert_eq!(all[1].owned_shards(&w), [(1, 0)]);
    assert_eq!(all[1].local_replicas(&w), Err((0, vec![0, 2])));
    // A `data`-split one: both distinct shards are on each process.
    let x = ShardLayout::new(&mesh, &PartitionSpec::from_axes(&[Some("data")]), &[8]).unwrap();
    assert_eq!(all[1].local_replicas(&x), Ok(vec![0, 1]));
    assert_eq!(all[0].owned_shards(&x), [(0, 0), (1, 1)]);
    assert!(all[1].owned_shards(&x).is_empty());
}

#[test]
fn a_single_process_drives_every_position_on_its_client_devices() {
    let mesh = Mesh::with_device_ids(&[("data", 4)], vec![3, 1, 0, 2]).unwrap();
    let p = MeshPlacement::single(&mesh, &[10, 11, 12, 13]).unwrap();
    assert!(p.is_whole_mesh());
    assert_eq!(p.local_positions(), [0, 1, 2, 3]);
    assert_eq!(p.client_devices(), [3, 1, 0, 2]);
    assert_eq!(p.device_assignment(), [13, 11, 10, 12]);
    let err = MeshPlacement::single(&mesh, &[10, 11]).unwrap_err();
    assert!(
        err.to_string().contains("the client has 2 devices"),
        "{err}"
    );
}

#[test]
fn a_process_without_devices_in_the_mesh_or_with_foreign_ids_is_an_error() {
    let devices = job(2, 2);
    // A mesh over process 0's devices only.
    let mesh = Mesh::new(&[("data", 2)], 2).unwrap();
    let err = MeshPlacement::of_job(&mesh, &devices, 2, 1, &client_ids(&devices, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("process 1 drives none"), "{err}");
    // Process 0's client does not list the device the job says it owns.
    let err = MeshPlacement::of_job(&mesh, &devices, 2, 0, &[0, 7])
        .unwrap_err()
        .to_string();
    assert!(err.contains("device 1 of process 0"), "{err}");
}
