//! Sharded arrays on 4 and 8 virtual CPU devices: put/get round trips and resharding.

mod common;

use rand::{Rng, SeedableRng};
use vishwam::engine::{Engine, HostArray};
use vishwam::runtime::{Client, CompileCache};
use vishwam_mesh::{DimSharding, Mesh, PartitionSpec};

fn client() -> &'static Client {
    common::cpu_client(8)
}

fn engine(axes: &[(&str, i64)], devices: usize) -> Engine {
    Engine::new(
        client().clone(),
        Mesh::new(axes, devices).unwrap(),
        CompileCache::disabled(),
    )
    .unwrap()
}

/// Every spec that uses each mesh axis at most once over `rank` dimensions.
fn all_specs(mesh: &Mesh, rank: usize) -> Vec<PartitionSpec> {
    let axes: Vec<String> = mesh.axes().iter().map(|a| a.name.clone()).collect();
    let mut specs = vec![PartitionSpec {
        dims: vec![DimSharding::default(); rank],
    }];
    for axis in &axes {
        let mut next = Vec::new();
        for spec in &specs {
            next.push(spec.clone());
            for d in 0..rank {
                let mut s = spec.clone();
                s.dims[d].axes.push(axis.clone());
                next.push(s);
            }
        }
        specs = next;
    }
    specs
}

fn random_array(shape: &[i64], seed: u64) -> HostArray {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product::<i64>() as usize;
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    HostArray::from_slice(shape, &v).unwrap()
}

#[test]
fn put_then_get_is_identity_for_every_spec() {
    let cases: &[(&[(&str, i64)], usize)] = &[
        (&[("data", 4)], 4),
        (&[("data", 2), ("model", 2)], 4),
        (&[("data", 8)], 8),
        (&[("data", 2), ("model", 4)], 8),
    ];
    let mut checked = 0;
    for (axes, devices) in cases {
        let e = engine(axes, *devices);
        for shape in [&[8i64, 16][..], &[8, 4, 8][..]] {
            let x = random_array(shape, checked as u64);
            for spec in all_specs(&e.mesh, shape.len()) {
                if spec.validate(&e.mesh, shape).is_err() {
                    continue;
                }
                let sharded = e.put(&x, &spec).unwrap();
                let layout = e.layout(&spec, shape).unwrap();
                for (p, buf) in sharded.shards.iter().enumerate() {
                    let want = layout.shard_bytes(&x.data, 4, p).unwrap();
                    assert_eq!(buf.to_bytes().unwrap(), want, "spec {spec:?} position {p}");
                    assert_eq!(buf.device_index().unwrap(), e.mesh.device_ids()[p]);
                }
                assert_eq!(e.get(&sharded).unwrap(), x, "spec {spec:?} on {}", e.mesh);
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} layouts checked");
}

#[test]
fn reshard_moves_between_specs() {
    let e = engine(&[("data", 2), ("model", 4)], 8);
    let x = random_array(&[8, 16], 99);
    let a = e
        .put(
            &x,
            &PartitionSpec::from_axes(&[Some("data"), Some("model")]),
        )
        .unwrap();
    let b = e
        .reshard(&a, &PartitionSpec::from_axes(&[Some("model"), None]))
        .unwrap();
    assert_eq!(b.shards[0].dims().unwrap(), vec![2, 16]);
    assert_eq!(e.get(&b).unwrap(), x);
}

#[test]
fn indivisible_spec_is_a_clear_error() {
    let e = engine(&[("data", 4)], 4);
    let x = random_array(&[6, 4], 1);
    let err = e
        .put(&x, &PartitionSpec::from_axes(&[Some("data")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not divide"), "{err}");
}

#[test]
fn compile_hints_change_the_options_only_on_cuda() {
    let e = engine(&[("data", 2)], 2);
    let plain = e.compile_options();
    let hinted = e
        .compile_options_with(vishwam::engine::CompileHints {
            fp8_matmuls: true,
            ..Default::default()
        })
        .unwrap();
    // On the CPU there is no Triton GEMM fusion to turn off: the options are the plain ones.
    assert_eq!(hinted.to_proto_bytes(), plain.to_proto_bytes());
    assert!(hinted
        .overrides
        .iter()
        .all(|(key, _)| key != "xla_gpu_enable_triton_gemm"));
}

/// This client's 8 devices as process 0 of a 2-process job whose process 1 owns 8 more (ids
/// the client does not have): the engine places and reads only process 0's shards.
fn engine_of_process_zero(axes: &[(&str, i64)]) -> Engine {
    use vishwam::runtime::GlobalDevice;
    let mut job: Vec<GlobalDevice> = client()
        .devices()
        .iter()
        .map(|d| GlobalDevice {
            id: d.id().unwrap(),
            process_index: 0,
            kind: "cpu".into(),
            addressable: true,
        })
        .collect();
    let foreign = job.iter().map(|d| d.id).max().unwrap() + 1;
    job.extend((0..8).map(|k| GlobalDevice {
        id: foreign + k,
        process_index: 1,
        kind: "cpu".into(),
        addressable: false,
    }));
    Engine::for_job(
        client().clone(),
        Mesh::new(axes, 16).unwrap(),
        CompileCache::disabled(),
        &job,
        2,
    )
    .unwrap()
}

#[test]
fn a_process_of_a_job_places_and_reads_only_its_own_shards() {
    let e = engine_of_process_zero(&[("data", 4), ("model", 4)]);
    assert_eq!(e.placement().local_positions(), (0..8).collect::<Vec<_>>());
    let x = random_array(&[8, 16], 5);
    let mut checked = 0;
    for spec in all_specs(&e.mesh, 2) {
        if spec.validate(&e.mesh, &x.shape).is_err() {
            continue;
        }
        let sharded = e.put(&x, &spec).unwrap();
        let layout = e.layout(&spec, &x.shape).unwrap();
        // One buffer per local position (mesh positions 0..8), each its shard.
        assert_eq!(sharded.shards.len(), 8);
        for (p, buf) in sharded.shards.iter().enumerate() {
            assert_eq!(
                buf.to_bytes().unwrap(),
                layout.shard_bytes(&x.data, 4, p).unwrap(),
                "{spec:?} position {p}"
            );
        }
        // Readable exactly when every distinct shard has a replica among positions 0..8.
        let whole = layout
            .replica_groups()
            .iter()
            .all(|group| group.iter().any(|&p| p < 8));
        match e.get(&sharded) {
            Ok(host) => {
                assert!(whole, "{spec:?}");
                assert_eq!(host, x, "{spec:?}");
            }
            Err(err) => {
                assert!(!whole, "{spec:?}: {err}");
                assert!(err.to_string().contains("processes [1"), "{err}");
            }
        }
        // The owned shards are those whose first replica is local, with their starts.
        let owned = e.owned_shards(&sharded).unwrap();
        let want: Vec<usize> = (0..layout.num_distinct_shards())
            .filter(|&s| layout.replica_groups()[s][0] < 8)
            .collect();
        assert_eq!(owned.len(), want.len(), "{spec:?}");
        for ((start, shape, bytes), s) in owned.iter().zip(want) {
            let first = layout.replica_groups()[s][0];
            let slices = layout.slices(first);
            let starts: Vec<i64> = slices.iter().map(|d| d.start as i64).collect();
            assert_eq!(start, &starts);
            assert_eq!(shape, &[slices[0].len as i64, slices[1].len as i64]);
            assert_eq!(bytes, &layout.shard_bytes(&x.data, 4, first).unwrap());
        }
        checked += 1;
    }
    assert!(checked > 5, "only {checked} specs");
}

#[test]
fn a_process_uploads_its_rows_of_a_batch_from_its_block() {
    let e = engine_of_process_zero(&[("data", 4), ("model", 4)]);
    // [accum 2, micro 8, seq 4], rows split over `data`: process 0 (data 0 and 1) feeds
    // rows 0..4 of every micro-batch.
    let global = random_array(&[2, 8, 4], 7);
    let spec = PartitionSpec::from_axes(&[None, Some("data"), None]);
    let layout = e.layout(&spec, &global.shape).unwrap();
    let rows: Vec<f32> = global.to_vec::<f32>().unwrap()[..]
        .chunks(4)
        .enumerate()
        .filter(|(row, _)| row % 8 < 4)
        .flat_map(|(_, r)| r.to_vec())
        .collect();
    let part = HostArray::from_slice(&[2, 4, 4], &rows).unwrap();
    let placed = e.put_block(&part, &[2, 8, 4], &[0, 0, 0], &spec).unwrap();
    let whole = e.put(&global, &spec).unwrap();
    for (p, (a, b)) in placed.shards.iter().zip(&whole.shards).enumerate() {
        assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap(), "position {p}");
        assert_eq!(
            a.to_bytes().unwrap(),
            layout.shard_bytes(&global.data, 4, p).unwrap()
        );
    }
    // The block of process 1's rows does not hold process 0's shards.
    let err = e
        .put_block(&part, &[2, 8, 4], &[0, 4, 0], &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside this process's block 4..8"), "{err}");
}

/// A mesh whose devices are not in the client's order (as `tpu.tpu_topology` makes them):
/// each device runs the partition of its mesh position on its own shard, so gathering the
/// squares of a row-split array gives the squares in row order.
#[test]
fn a_permuted_mesh_runs_each_shard_at_its_position() {
    use vishwam_hlo::{DType, Graph, TensorType};
    let mesh = Mesh::with_device_ids(&[("data", 4)], vec![2, 0, 3, 1]).unwrap();
    let e = Engine::new(client().clone(), mesh, CompileCache::disabled()).unwrap();
    let rows = PartitionSpec::from_axes(&[Some("data"), None]);
    let g = Graph::named("square_gathered");
    let x = g.param_sharded("x", TensorType::new(DType::F32, &[8, 4]), rows.clone());
    let y = x.clone() * x;
    let mut func = g.finish(&[("y", &y)]).unwrap();
    func.set_output_sharding("y", PartitionSpec::default())
        .unwrap();
    let program = e.compile(&func).unwrap();
    let host = random_array(&[8, 4], 11);
    let input = e.put(&host, &rows).unwrap();
    let out = program.run(vec![vishwam::engine::Input::Keep(&input)]);
    let got = e.get(&out.unwrap()[0]).unwrap().to_vec::<f32>().unwrap();
    let want: Vec<f32> = host
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v * v)
        .collect();
    assert_eq!(got, want);
}
