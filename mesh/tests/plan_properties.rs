//! Property tests of plans and rule resolution: whatever the strategy, mesh, overrides and
//! shape, a resolved spec is valid for its mesh and shape, and every decision that departs
//! from the rules is explained by a note.

use vishwam_mesh::{
    DeviceStrategy, LogicalAxis, MeshError, MeshSettings, ResolutionNote, RuleOverride,
    ShardLayout, ShardingPlan,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const MESHES: [&[(&str, i64)]; 9] = [
    &[],
    &[("data", -1)],
    &[("fsdp", -1)],
    &[("model", -1)],
    &[("data", 2), ("model", -1)],
    &[("data", -1), ("fsdp", 2)],
    &[("data", 2), ("fsdp", 2), ("model", -1)],
    &[("data", -1), ("expert", 2)],
    &[("data", 1), ("fsdp", -1), ("model", 2)],
];

/// Every strategy x shard_weights x mesh on 8 devices builds or fails with one of the
/// documented errors, never anything else.
#[test]
fn every_combination_builds_or_fails_for_a_documented_reason() {
    let mut built = 0;
    for strategy in DeviceStrategy::ALL {
        for shard_weights in [false, true] {
            for shape in MESHES {
                let settings = MeshSettings {
                    mesh_shape: shape.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
                    ..MeshSettings::new(strategy, shard_weights)
                };
                match ShardingPlan::build(&settings, "cpu", 8) {
                    Ok(plan) => {
                        assert_eq!(plan.mesh.num_devices(), 8);
                        built += 1;
                    }
                    Err(MeshError::FsdpWithoutShardWeights) => {
                        assert_eq!((strategy, shard_weights), (DeviceStrategy::Fsdp, false));
                    }
                    Err(MeshError::UnusedMeshAxis { axis, .. }) => match strategy {
                        DeviceStrategy::DataParallel => assert!(axis == "fsdp" || axis == "model"),
                        DeviceStrategy::Fsdp => assert_eq!(axis, "model"),
                        DeviceStrategy::TensorParallel => assert_eq!(axis, "fsdp"),
                        DeviceStrategy::Hybrid => panic!("hybrid uses every standard axis"),
                    },
                    Err(e) => panic!("{strategy} {shard_weights} {shape:?}: {e}"),
                }
            }
        }
    }
    // Meshes that build (x2 for shard_weights, fsdp only with true): data_parallel 3 (default,
    // data, data x expert), fsdp 5 (+ fsdp, data x fsdp), tensor_parallel 5 (default, data,
    // model, data x model, data x expert), hybrid all 9.
    assert_eq!(built, 3 * 2 + 5 + 5 * 2 + 9 * 2);
}

/// Random logical shapes (with dimensions that often do not divide) always resolve to a
/// spec that validates and lays out, for parameters and activations alike.
#[test]
fn resolved_specs_are_always_valid() {
    let mut rng = Rng(0xA11CE);
    let sizes = [0i64, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48];
    let mut notes = 0;
    for strategy in DeviceStrategy::ALL {
        for shape in MESHES {
            for overrides in [
                vec![],
                vec![RuleOverride::parse("length", &["data"]).unwrap()],
            ] {
                let settings = MeshSettings {
                    mesh_shape: shape.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
                    rule_overrides: overrides,
                    ..MeshSettings::new(strategy, true)
                };
                let Ok(plan) = ShardingPlan::build(&settings, "cpu", 8) else {
                    continue;
                };
                for _ in 0..200 {
                    let rank = rng.below(4) + 1;
                    let logical: Vec<LogicalAxis> =
                        (0..rank).map(|_| LogicalAxis::ALL[rng.below(10)]).collect();
                    let dims: Vec<i64> = (0..rank).map(|_| sizes[rng.below(sizes.len())]).collect();
                    for res in [
                        plan.parameter_spec(&logical, &dims).unwrap(),
                        plan.activation_spec(&logical, &dims).unwrap(),
                    ] {
                        res.spec.validate(&plan.mesh, &dims).unwrap();
                        ShardLayout::new(&plan.mesh, &res.spec, &dims).unwrap();
                        for note in &res.notes {
                            if let ResolutionNote::Indivisible {
                                dim, size, parts, ..
                            } = note
                            {
                                assert_ne!(dims[*dim] % *parts as i64, 0);
                                assert_eq!(*size, dims[*dim]);
                            }
                        }
                        notes += res.notes.len();
                    }
                }
            }
        }
    }
    assert!(notes > 0, "random shapes should hit indivisible dimensions");
}
