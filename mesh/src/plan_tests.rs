//! Tests of [`ShardingPlan::build`]: every strategy, default meshes, errors and overrides.

use super::*;
use crate::PartitionSpec;
use LogicalAxis::*;

fn settings(strategy: DeviceStrategy, shard_weights: bool, shape: &[(&str, i64)]) -> MeshSettings {
    MeshSettings {
        mesh_shape: shape.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        ..MeshSettings::new(strategy, shard_weights)
    }
}

fn plan(
    strategy: DeviceStrategy,
    shard_weights: bool,
    shape: &[(&str, i64)],
    n: usize,
) -> ShardingPlan {
    ShardingPlan::build(&settings(strategy, shard_weights, shape), "cpu", n).unwrap()
}

fn axes(spec: &[Option<&str>]) -> PartitionSpec {
    PartitionSpec::from_axes(spec)
}

#[test]
fn default_meshes_follow_the_strategy() {
    let cases = [
        (DeviceStrategy::DataParallel, false, "data=8"),
        (DeviceStrategy::Fsdp, true, "fsdp=8"),
        (DeviceStrategy::TensorParallel, false, "model=8"),
        (DeviceStrategy::Hybrid, true, "data=4 x model=2"),
    ];
    for (strategy, shard_weights, expected) in cases {
        let p = plan(strategy, shard_weights, &[], 8);
        assert_eq!(p.mesh.to_string(), expected, "{strategy}");
        assert_eq!(p.mesh.device_ids(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(p.warnings.is_empty(), "{strategy}: {:?}", p.warnings);
    }
    // One device: every strategy builds, with no warnings.
    for strategy in DeviceStrategy::ALL {
        let p = plan(strategy, true, &[], 1);
        assert_eq!(p.mesh.num_devices(), 1);
        assert!(p.warnings.is_empty());
    }
}

#[test]
fn device_count_mismatch_names_platform_and_hint() {
    let s = settings(
        DeviceStrategy::DataParallel,
        false,
        &[("data", 8), ("model", 1)],
    );
    let err = ShardingPlan::build(&s, "cpu", 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mesh data=8 x model=1 needs 8 devices; platform cpu has 4: pass --devices 8 or change \
         tpu.mesh_shape"
    );
    let err = ShardingPlan::build(&s, "cuda", 2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mesh data=8 x model=1 needs 8 devices; platform cuda has 2: change tpu.mesh_shape to fit \
         2 devices (one size may be -1) or run where 8 cuda devices are visible"
    );
    let s = settings(DeviceStrategy::Hybrid, false, &[("data", -1), ("model", 3)]);
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 4).unwrap_err().to_string(),
        "mesh data=-1 x model=3 needs a multiple of 3 devices; platform cpu has 4: pass \
         --devices 6 or change tpu.mesh_shape"
    );
    assert_eq!(
        ShardingPlan::build(&s, "tpu", 4).unwrap_err().to_string(),
        "mesh data=-1 x model=3 needs a multiple of 3 devices; platform tpu has 4: change \
         tpu.mesh_shape so that its fixed sizes divide 4, or run where a multiple of 3 devices \
         are visible"
    );
    // Too many devices is a mismatch too (without an explicit order, all devices are used).
    let s = settings(DeviceStrategy::DataParallel, false, &[("data", 2)]);
    assert!(matches!(
        ShardingPlan::build(&s, "cpu", 4),
        Err(MeshError::PlatformDeviceCount {
            needed: DeviceNeed::Exactly(2),
            available: 4,
            ..
        })
    ));
    // Bad axes pass through unchanged.
    let s = settings(DeviceStrategy::DataParallel, false, &[("data", 0)]);
    assert!(matches!(
        ShardingPlan::build(&s, "cpu", 4),
        Err(MeshError::BadAxisSize { .. })
    ));
}

#[test]
fn explicit_device_order_may_be_a_subset() {
    let mut s = settings(DeviceStrategy::DataParallel, false, &[("data", -1)]);
    s.device_order = Some(vec![6, 4, 2, 0]);
    let p = ShardingPlan::build(&s, "cuda", 8).unwrap();
    assert_eq!(p.mesh.to_string(), "data=4");
    assert_eq!(p.mesh.device_ids(), &[6, 4, 2, 0]);
    s.device_order = Some(vec![0, 9]);
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 8).unwrap_err().to_string(),
        "the device order names device 9, but platform cpu has 8 devices (ids 0 to 8 - 1)"
    );
    s.mesh_shape = vec![("data".into(), 4)];
    s.device_order = Some(vec![0, 1]);
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 8).unwrap_err().to_string(),
        "mesh data=4 needs 4 devices; the device order lists 2: list that many device ids or \
         change tpu.mesh_shape"
    );
    s.device_order = Some(vec![1, 1, 2, 3]);
    assert!(matches!(
        ShardingPlan::build(&s, "cpu", 8),
        Err(MeshError::DuplicateDevice { device: 1 })
    ));
    // The default mesh is sized by the order, not by the platform.
    let mut s = MeshSettings::new(DeviceStrategy::TensorParallel, false);
    s.device_order = Some(vec![3, 1]);
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 4).unwrap().mesh.to_string(),
        "model=2"
    );
}

#[test]
fn fsdp_without_shard_weights_is_a_contradiction() {
    let err =
        ShardingPlan::build(&MeshSettings::new(DeviceStrategy::Fsdp, false), "cpu", 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "device_strategy fsdp shards parameters by definition, but optimization.shard_weights is \
         false: set shard_weights to true, or use device_strategy data_parallel to keep whole \
         parameters on every device"
    );
}

#[test]
fn unused_axis_is_rejected_unless_an_override_uses_it() {
    let s = settings(
        DeviceStrategy::DataParallel,
        false,
        &[("data", 2), ("model", 2)],
    );
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 4).unwrap_err().to_string(),
        "mesh axis `model`=2 is used by no rule of device_strategy data_parallel, so its 2 groups \
         of devices would repeat the same work: set model=1 in tpu.mesh_shape, choose a \
         device_strategy that uses it, or map a logical axis to it with a rule override"
    );
    // Size-1 axes are fine anywhere; `fsdp` is unused by tensor_parallel.
    plan(
        DeviceStrategy::DataParallel,
        false,
        &[("data", 4), ("model", 1)],
        4,
    );
    let s = settings(
        DeviceStrategy::TensorParallel,
        false,
        &[("fsdp", 2), ("model", 2)],
    );
    assert!(matches!(
        ShardingPlan::build(&s, "cpu", 4),
        Err(MeshError::UnusedMeshAxis { .. })
    ));
    // Sequence parallelism by override makes `model` used under data_parallel.
    let mut s = settings(
        DeviceStrategy::DataParallel,
        false,
        &[("data", 2), ("model", 2)],
    );
    s.rule_overrides = vec![RuleOverride::parse("activations.length", &["model"]).unwrap()];
    let p = ShardingPlan::build(&s, "cpu", 4).unwrap();
    let r = p
        .activation_spec(&[Batch, Length, Embed], &[4, 8, 16])
        .unwrap();
    assert_eq!(r.spec, axes(&[Some("data"), Some("model")]));
}

#[test]
fn override_naming_a_missing_axis_is_an_error() {
    let mut s = settings(DeviceStrategy::Fsdp, true, &[("fsdp", 4)]);
    s.rule_overrides = vec![RuleOverride::parse("embed", &["fdsp"]).unwrap()];
    assert_eq!(
        ShardingPlan::build(&s, "cpu", 4).unwrap_err().to_string(),
        "the rule override for logical axis embed names mesh axis `fdsp`, but mesh fsdp=4 has \
         only [fsdp]"
    );
    s.rule_overrides = vec![RuleOverride {
        target: RuleTarget::Both,
        logical: Embed,
        mesh_axes: vec!["fsdp".into(), "fsdp".into()],
    }];
    assert!(matches!(
        ShardingPlan::build(&s, "cpu", 4),
        Err(MeshError::RepeatedRuleAxis { .. })
    ));
}

#[test]
fn data_parallel_replicates_parameters_unless_shard_weights() {
    let p = plan(DeviceStrategy::DataParallel, false, &[], 4);
    assert!(p
        .parameter_spec(&[Embed, Mlp], &[8, 16])
        .unwrap()
        .spec
        .is_replicated());
    assert_eq!(
        p.activation_spec(&[Batch, Length], &[8, 3]).unwrap().spec,
        axes(&[Some("data")])
    );
    let p = plan(DeviceStrategy::DataParallel, true, &[], 4);
    assert_eq!(
        p.parameter_spec(&[Embed, Mlp], &[8, 16]).unwrap().spec,
        axes(&[Some("data")])
    );
    // Activations are unaffected by shard_weights.
    assert!(p
        .activation_spec(&[Batch, Length, Embed], &[3, 8, 8])
        .unwrap()
        .spec
        .is_replicated());
}

#[test]
fn fsdp_shards_weights_on_embed_and_activations_on_batch() {
    let p = plan(DeviceStrategy::Fsdp, true, &[("data", 2), ("fsdp", 4)], 8);
    assert_eq!(
        p.parameter_spec(&[Embed, Mlp], &[16, 64]).unwrap().spec,
        axes(&[Some("fsdp")])
    );
    assert_eq!(
        p.parameter_spec(&[Mlp, Embed], &[64, 16]).unwrap().spec,
        axes(&[None, Some("fsdp")])
    );
    let batch = p
        .activation_spec(&[Batch, Length, Embed], &[16, 4, 16])
        .unwrap()
        .spec;
    assert_eq!(
        batch.dims[0].axes,
        vec!["data".to_string(), "fsdp".to_string()]
    );
    assert_eq!(batch.dims.len(), 1);
    // Without an fsdp axis, fsdp shards weights over data.
    let p = plan(DeviceStrategy::Fsdp, true, &[("data", 4)], 4);
    assert_eq!(
        p.parameter_spec(&[Vocab, Embed], &[32, 8]).unwrap().spec,
        axes(&[None, Some("data")])
    );
    // An fsdp axis of size 1 with another axis splitting the batch: weights stay whole, warned.
    let p = plan(DeviceStrategy::Fsdp, true, &[("data", 4), ("fsdp", 1)], 4);
    assert_eq!(
        p.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        vec![
            "optimization.shard_weights is true, but mesh data=4 x fsdp=1 has no `fsdp` axis \
              larger than 1 for device_strategy fsdp to split parameters over: every device keeps \
              whole parameters"
                .to_string()
        ]
    );
}

#[test]
fn tensor_parallel_is_megatron() {
    let p = plan(
        DeviceStrategy::TensorParallel,
        false,
        &[("data", 2), ("model", 2)],
        4,
    );
    // Column-parallel in, row-parallel out.
    assert_eq!(
        p.parameter_spec(&[Embed, Mlp], &[8, 16]).unwrap().spec,
        axes(&[None, Some("model")])
    );
    assert_eq!(
        p.parameter_spec(&[Mlp, Embed], &[16, 8]).unwrap().spec,
        axes(&[Some("model")])
    );
    assert_eq!(
        p.parameter_spec(&[Embed, Heads, HeadDim], &[8, 4, 2])
            .unwrap()
            .spec,
        axes(&[None, Some("model")])
    );
    assert_eq!(
        p.parameter_spec(&[Embed, KvHeads, HeadDim], &[8, 2, 2])
            .unwrap()
            .spec,
        axes(&[None, Some("model")])
    );
    assert_eq!(
        p.parameter_spec(&[Vocab, Embed], &[32, 8]).unwrap().spec,
        axes(&[Some("model")])
    );
    assert_eq!(
        p.activation_spec(&[Batch, Length, Vocab], &[4, 8, 32])
            .unwrap()
            .spec,
        axes(&[Some("data"), None, Some("model")])
    );
    // 12 heads on model=8: stays replicated, with a note to log.
    let p = plan(DeviceStrategy::TensorParallel, false, &[], 8);
    let r = p
        .parameter_spec(&[Embed, Heads, HeadDim], &[64, 12, 8])
        .unwrap();
    assert!(r.spec.is_replicated());
    assert_eq!(
        r.notes[0].to_string(),
        "dimension 1 (heads) of size 12 is not split over mesh axis `model`: it does not divide \
         into 8 equal parts"
    );
    // No model axis: allowed, warned.
    let p = plan(DeviceStrategy::TensorParallel, false, &[("data", 4)], 4);
    assert_eq!(
        p.warnings[0].to_string(),
        "device_strategy tensor_parallel splits attention, MLP and vocabulary over mesh axis \
         `model`, but mesh data=4 has no `model` axis larger than 1: nothing is split \
         Megatron-style and the run is data parallel"
    );
}

#[test]
fn hybrid_combines_data_fsdp_and_model() {
    let p = plan(
        DeviceStrategy::Hybrid,
        true,
        &[("data", 2), ("fsdp", 2), ("model", 2)],
        8,
    );
    assert_eq!(
        p.parameter_spec(&[Embed, Mlp], &[8, 16]).unwrap().spec,
        axes(&[Some("fsdp"), Some("model")])
    );
    let act = p
        .activation_spec(&[Batch, Length, Mlp], &[8, 4, 16])
        .unwrap()
        .spec;
    assert_eq!(
        act.dims[0].axes,
        vec!["data".to_string(), "fsdp".to_string()]
    );
    assert_eq!(act.dims[2].axes, vec!["model".to_string()]);
    // Default hybrid mesh with shard_weights: weights over data next to model.
    let p = plan(DeviceStrategy::Hybrid, true, &[], 4);
    assert_eq!(
        p.parameter_spec(&[Mlp, Embed], &[16, 8]).unwrap().spec,
        axes(&[Some("model"), Some("data")])
    );
    let p = plan(DeviceStrategy::Hybrid, false, &[], 4);
    assert_eq!(
        p.parameter_spec(&[Mlp, Embed], &[16, 8]).unwrap().spec,
        axes(&[Some("model")])
    );
}

#[test]
fn expert_axis_is_used_everywhere_it_exists() {
    for strategy in [DeviceStrategy::DataParallel, DeviceStrategy::Hybrid] {
        let p = plan(strategy, false, &[("data", 2), ("expert", 2)], 4);
        assert_eq!(
            p.parameter_spec(&[Expert, Embed, Mlp], &[4, 8, 16])
                .unwrap()
                .spec,
            axes(&[Some("expert")])
        );
        let act = p
            .activation_spec(&[Batch, Length, Embed], &[8, 4, 8])
            .unwrap()
            .spec;
        assert_eq!(
            act.dims[0].axes,
            vec!["data".to_string(), "expert".to_string()]
        );
    }
}

#[test]
fn parameter_overrides_leave_activations_alone() {
    let mut s = settings(DeviceStrategy::Fsdp, true, &[("fsdp", 4)]);
    s.rule_overrides = vec![
        RuleOverride::parse("parameters.embed", &[] as &[&str]).unwrap(),
        RuleOverride::parse("parameters.mlp", &["fsdp"]).unwrap(),
    ];
    let p = ShardingPlan::build(&s, "cpu", 4).unwrap();
    // embed no longer sharded, and with it the fallback is off (it follows the embed rule).
    assert_eq!(
        p.parameter_spec(&[Embed, Mlp], &[8, 16]).unwrap().spec,
        axes(&[None, Some("fsdp")])
    );
    assert!(p
        .parameter_spec(&[Embed, Vocab], &[8, 16])
        .unwrap()
        .spec
        .is_replicated());
    assert_eq!(
        p.activation_spec(&[Batch, Mlp], &[8, 16]).unwrap().spec,
        axes(&[Some("fsdp")])
    );
}

#[test]
fn plan_prints_for_the_log() {
    let p = plan(DeviceStrategy::Hybrid, false, &[], 4);
    assert_eq!(
        p.to_string(),
        "mesh data=2 x model=2 over devices [0, 1, 2, 3]; device_strategy hybrid; shard_weights \
         false\n\
         parameters: batch=[], length=[], embed=[], heads=[model], kv_heads=[model], \
         head_dim=[], mlp=[model], vocab=[model], expert=[expert], layers=[] (embed falls back \
         to the largest dimension)\n\
         activations: batch=[data, fsdp, expert], length=[], embed=[], heads=[model], \
         kv_heads=[model], head_dim=[], mlp=[model], vocab=[model], expert=[expert], layers=[]"
    );
}
