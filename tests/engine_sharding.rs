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
