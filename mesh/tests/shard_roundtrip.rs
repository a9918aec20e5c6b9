//! Property tests of shard geometry: for EVERY partition spec of 1-, 2- and 3-D arrays on
//! meshes of 1, 2, 4 and 8 devices, scatter matches an element-by-element reference, the
//! distinct shards tile the array exactly once, gather(scatter(x)) == x, and reshard between
//! any two layouts equals scattering the original array directly.

use vishwam_mesh::{reshard, DimSharding, Mesh, MeshError, PartitionSpec, ShardLayout};

/// SplitMix64: small seeded generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn meshes() -> Vec<Mesh> {
    vec![
        Mesh::new(&[("data", 1)], 1).unwrap(),
        Mesh::new(&[("data", 2)], 2).unwrap(),
        Mesh::new(&[("data", 4)], 4).unwrap(),
        Mesh::new(&[("data", 8)], 8).unwrap(),
        Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap(),
        Mesh::new(&[("data", 2), ("model", 4)], 8).unwrap(),
        Mesh::new(&[("data", 2), ("fsdp", 2), ("model", 2)], 8).unwrap(),
    ]
}

/// Every spec of an array of `rank` on `mesh`: each axis on no dimension or on one, and
/// every order of the axes that share a dimension.
fn all_specs(mesh: &Mesh, rank: usize) -> Vec<PartitionSpec> {
    let names: Vec<String> = mesh.axes().iter().map(|a| a.name.clone()).collect();
    let mut specs = Vec::new();
    let choices = (rank + 1).pow(names.len() as u32);
    for code in 0..choices {
        let mut per_dim: Vec<Vec<String>> = vec![Vec::new(); rank];
        let mut c = code;
        for name in &names {
            let choice = c % (rank + 1);
            c /= rank + 1;
            if choice < rank {
                per_dim[choice].push(name.clone());
            }
        }
        let mut partial: Vec<Vec<DimSharding>> = vec![Vec::new()];
        for axes in per_dim {
            let orders = permutations(&axes);
            partial = partial
                .into_iter()
                .flat_map(|p| {
                    orders.iter().map(move |o| {
                        let mut p = p.clone();
                        p.push(DimSharding { axes: o.clone() });
                        p
                    })
                })
                .collect();
        }
        specs.extend(partial.into_iter().map(|dims| PartitionSpec { dims }));
    }
    specs
}

fn permutations(items: &[String]) -> Vec<Vec<String>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

/// Reference scatter: element by element through multi-indices.
fn reference_shard(layout: &ShardLayout, global: &[u8], elem: usize, position: usize) -> Vec<u8> {
    let gshape = layout.global_shape();
    let slices = layout.slices(position);
    let mut out = Vec::new();
    let count = layout.local_elements();
    for linear in 0..count {
        let mut rest = linear;
        let mut offset = 0;
        let mut stride = 1;
        for d in (0..gshape.len()).rev() {
            let i = rest % slices[d].len;
            rest /= slices[d].len;
            offset += (slices[d].start + i) * stride;
            stride *= gshape[d];
        }
        out.extend_from_slice(&global[offset * elem..(offset + 1) * elem]);
    }
    out
}

/// The distinct shards cover every element exactly once.
fn assert_tiles(layout: &ShardLayout) {
    let gshape = layout.global_shape();
    let mut hits = vec![0u8; layout.global_elements()];
    for group in layout.replica_groups() {
        let slices = layout.slices(group[0]);
        for linear in 0..layout.local_elements() {
            let mut rest = linear;
            let mut offset = 0;
            let mut stride = 1;
            for d in (0..gshape.len()).rev() {
                offset += (slices[d].start + rest % slices[d].len) * stride;
                rest /= slices[d].len;
                stride *= gshape[d];
            }
            hits[offset] += 1;
        }
        for &p in group {
            assert_eq!(
                layout.slices(p),
                slices,
                "replicas must hold the same slice"
            );
        }
    }
    assert!(
        hits.iter().all(|&h| h == 1),
        "distinct shards must tile the array once"
    );
}

#[test]
fn gather_of_scatter_is_identity_for_every_spec() {
    let mut rng = Rng(0x5EED_0001);
    let shapes: [&[i64]; 3] = [&[16], &[8, 24], &[8, 16, 8]];
    let mut checked = 0;
    for mesh in meshes() {
        for shape in shapes {
            for (i, spec) in all_specs(&mesh, shape.len()).into_iter().enumerate() {
                let elem = [1, 2, 4, 8][i % 4];
                let layout = ShardLayout::new(&mesh, &spec, shape).unwrap();
                let global = rng.bytes(layout.global_elements() * elem);
                let shards = layout.scatter(&global, elem).unwrap();
                assert_eq!(shards.len(), mesh.num_devices());
                for (p, shard) in shards.iter().enumerate() {
                    assert_eq!(
                        shard,
                        &reference_shard(&layout, &global, elem, p),
                        "{spec:?} {p}"
                    );
                }
                assert_tiles(&layout);
                assert_eq!(
                    layout.gather(&shards, elem).unwrap(),
                    global,
                    "{mesh} {spec:?}"
                );
                assert_eq!(layout.gather_first_replica(&shards, elem).unwrap(), global);
                let pieces: usize = spec.shards_per_dim(&mesh, shape.len()).iter().product();
                assert_eq!(layout.num_distinct_shards(), pieces);
                assert_eq!(layout.local_elements() * pieces, layout.global_elements());
                checked += 1;
            }
        }
    }
    // Specs of n axes over rank r: sum over k of C(n, k) * r(r+1)...(r+k-1) (k axes placed
    // in r ordered lists). Ranks 1..=3: 9 per 1-axis mesh (x4), 35 per 2-axis mesh (x2),
    // 171 for the 3-axis mesh.
    assert_eq!(checked, 4 * 9 + 2 * 35 + 171);
}

#[test]
fn indivisible_specs_fail_exactly_when_validate_does() {
    let mut rng = Rng(0x5EED_0002);
    let shape: &[i64] = &[6, 4, 2];
    for mesh in meshes() {
        for spec in all_specs(&mesh, shape.len()) {
            match (
                spec.validate(&mesh, shape),
                ShardLayout::new(&mesh, &spec, shape),
            ) {
                (Ok(()), Ok(layout)) => {
                    let global = rng.bytes(48 * 4);
                    let shards = layout.scatter(&global, 4).unwrap();
                    assert_eq!(layout.gather(&shards, 4).unwrap(), global);
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b);
                    assert!(matches!(a, MeshError::Indivisible { .. }));
                }
                (a, b) => panic!("validate {a:?} but layout {:?} for {spec:?}", b.map(|_| ())),
            }
        }
    }
}

#[test]
fn reshard_between_meshes_equals_direct_scatter() {
    let mut rng = Rng(0x5EED_0003);
    let shape: &[i64] = &[8, 16, 8];
    let layouts: Vec<ShardLayout> = meshes()
        .iter()
        .flat_map(|m| {
            all_specs(m, 3)
                .into_iter()
                .map(move |s| ShardLayout::new(m, &s, shape).unwrap())
        })
        .collect();
    for _ in 0..300 {
        let from = &layouts[rng.below(layouts.len())];
        let to = &layouts[rng.below(layouts.len())];
        let elem = [2, 4][rng.below(2)];
        let global = rng.bytes(from.global_elements() * elem);
        let shards = from.scatter(&global, elem).unwrap();
        let moved = reshard(from, to, &shards, elem).unwrap();
        assert_eq!(moved, to.scatter(&global, elem).unwrap());
        assert_eq!(to.gather(&moved, elem).unwrap(), global);
    }
}

#[test]
fn explicit_device_order_keeps_mesh_positions() {
    // Shards are handed out by mesh position; device ids only label them.
    let mesh = Mesh::with_device_ids(&[("data", 2), ("model", 2)], vec![3, 1, 2, 0]).unwrap();
    let plain = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
    let spec = PartitionSpec::from_axes(&[Some("model"), Some("data")]);
    let a = ShardLayout::new(&mesh, &spec, &[4, 4]).unwrap();
    let b = ShardLayout::new(&plain, &spec, &[4, 4]).unwrap();
    assert_eq!(a.device_ids(), &[3, 1, 2, 0]);
    let global = Rng(7).bytes(16);
    assert_eq!(
        a.scatter(&global, 1).unwrap(),
        b.scatter(&global, 1).unwrap()
    );
}
