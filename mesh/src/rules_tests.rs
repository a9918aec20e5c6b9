//! Tests of logical-rule resolution and overrides.

use super::*;
use LogicalAxis::*;

fn mesh(axes: &[(&str, i64)]) -> Mesh {
    let n = axes.iter().map(|a| a.1 as usize).product();
    Mesh::new(axes, n).unwrap()
}

fn rules(entries: &[(LogicalAxis, &[&str])]) -> LogicalRules {
    let mut r = LogicalRules::unsharded();
    for (l, axes) in entries {
        r.set(*l, axes);
    }
    r
}

#[test]
fn drops_absent_and_size_one_axes_silently() {
    let m = mesh(&[("data", 4), ("model", 1)]);
    let r = rules(&[(Batch, &["data", "fsdp", "expert"]), (Mlp, &["model"])]);
    let res = r.spec_for_explained(&[Batch, Mlp], &[8, 16], &m).unwrap();
    assert_eq!(res.spec, PartitionSpec::from_axes(&[Some("data")]));
    assert!(res.notes.is_empty());
}

#[test]
fn first_dimension_wins_and_is_noted() {
    let m = mesh(&[("data", 2), ("model", 2)]);
    let r = rules(&[(Heads, &["model"]), (Mlp, &["model"])]);
    let res = r.spec_for_explained(&[Heads, Mlp], &[4, 8], &m).unwrap();
    assert_eq!(res.spec, PartitionSpec::from_axes(&[Some("model")]));
    assert_eq!(
        res.notes[0].to_string(),
        "dimension 1 (mlp) is not split over mesh axis `model`: dimension 0 of the same \
         array already uses it"
    );
}

#[test]
fn indivisible_axis_is_skipped_but_later_axes_still_apply() {
    let m = mesh(&[("data", 2), ("fsdp", 4)]);
    let r = rules(&[(Batch, &["fsdp", "data"])]);
    let res = r.spec_for_explained(&[Batch], &[6], &m).unwrap();
    assert_eq!(res.spec, PartitionSpec::from_axes(&[Some("data")]));
    assert_eq!(
        res.notes,
        vec![ResolutionNote::Indivisible {
            dim: 0,
            logical: Batch,
            size: 6,
            axis: "fsdp".into(),
            parts: 4
        }]
    );
    assert_eq!(
        res.notes[0].to_string(),
        "dimension 0 (batch) of size 6 is not split over mesh axis `fsdp`: it does not \
         divide into 4 equal parts"
    );
    // Two axes on one dimension, major first.
    let res = r.spec_for_explained(&[Batch], &[16], &m).unwrap();
    assert_eq!(
        res.spec.dims[0].axes,
        vec!["fsdp".to_string(), "data".to_string()]
    );
}

#[test]
fn fallback_takes_largest_divisible_dimension_but_not_layers() {
    let m = mesh(&[("fsdp", 4)]);
    let mut r = rules(&[(Embed, &["fsdp"])]);
    r.set_largest_dim_fallback(true);
    // embed 6 does not divide by 4: fsdp goes to the largest other dimension (mlp 32).
    let res = r
        .spec_for_explained(&[Layers, Embed, Mlp], &[64, 6, 32], &m)
        .unwrap();
    assert_eq!(
        res.spec,
        PartitionSpec::from_axes(&[None, None, Some("fsdp")])
    );
    assert_eq!(res.notes.len(), 2);
    assert_eq!(
        res.notes[1].to_string(),
        "mesh axis `fsdp` (rule of embed) splits dimension 2 (mlp), the largest that \
         divides evenly"
    );
    // A bias without embed dimension still gets sharded.
    let res = r.spec_for_explained(&[Mlp], &[8], &m).unwrap();
    assert_eq!(res.spec, PartitionSpec::from_axes(&[Some("fsdp")]));
    // Nothing divides: replicated, with a note.
    let res = r.spec_for_explained(&[Layers, Heads], &[8, 3], &m).unwrap();
    assert!(res.spec.is_replicated());
    assert_eq!(
        res.notes[0].to_string(),
        "no dimension divides evenly over mesh axis `fsdp`=4; the array is replicated over it"
    );
    // Fallback off: the bias stays replicated.
    r.set_largest_dim_fallback(false);
    assert!(r.spec_for(&[Mlp], &[8], &m).unwrap().is_replicated());
}

#[test]
fn fallback_ties_go_to_the_first_dimension_and_can_stack_on_a_sharded_one() {
    let m = mesh(&[("data", 2), ("model", 2)]);
    let mut r = rules(&[(Embed, &["data"]), (Mlp, &["model"])]);
    r.set_largest_dim_fallback(true);
    let spec = r.spec_for(&[Heads, HeadDim], &[8, 8], &m).unwrap();
    assert_eq!(spec, PartitionSpec::from_axes(&[Some("data")]));
    // mlp 16 / model 2 = 8 local rows, still the largest: data stacks as the minor axis.
    let spec = r.spec_for(&[Mlp, HeadDim], &[16, 4], &m).unwrap();
    assert_eq!(
        spec.dims[0].axes,
        vec!["model".to_string(), "data".to_string()]
    );
}

#[test]
fn errors_on_rank_mismatch_and_negative_sizes() {
    let m = mesh(&[("data", 2)]);
    let r = LogicalRules::unsharded();
    assert_eq!(
        r.spec_for(&[Batch, Embed], &[4], &m)
            .unwrap_err()
            .to_string(),
        "logical axes [batch, embed] name 2 dimensions but the array has rank 1"
    );
    assert!(matches!(
        r.spec_for(&[Batch], &[-1], &m),
        Err(MeshError::NegativeDimension { dim: 0, size: -1 })
    ));
}

#[test]
fn overrides_parse_targets_and_replace_entries() {
    let o = RuleOverride::parse("parameters.embed", &["fsdp", "data"]).unwrap();
    assert_eq!(o.target, RuleTarget::Parameters);
    assert_eq!(
        RuleOverride::parse("batch", &["data"]).unwrap().target,
        RuleTarget::Both
    );
    assert_eq!(
        RuleOverride::parse("activations.length", &["model"])
            .unwrap()
            .target,
        RuleTarget::Activations
    );
    assert_eq!(
        RuleOverride::parse("params.embed", &["fsdp"])
            .unwrap_err()
            .to_string(),
        "rule override key `params.embed` is not `<logical>`, `parameters.<logical>` or \
         `activations.<logical>`"
    );
    assert_eq!(
        RuleOverride::parse("embed", &["fsdp", "fsdp"])
            .unwrap_err()
            .to_string(),
        "the rule for logical axis embed names mesh axis `fsdp` twice"
    );
    assert!(matches!(
        RuleOverride::parse("parameters.hidden", &["fsdp"]),
        Err(MeshError::UnknownLogicalAxis { .. })
    ));
    let mut r = rules(&[(Embed, &["data"]), (Batch, &["data"])]);
    let overrides = vec![
        o,
        RuleOverride::parse("activations.batch", &[] as &[&str]).unwrap(),
    ];
    r.apply_overrides(&overrides, RuleTarget::Parameters)
        .unwrap();
    assert_eq!(r.mesh_axes(Embed), ["fsdp".to_string(), "data".to_string()]);
    assert_eq!(r.mesh_axes(Batch), ["data".to_string()]);
    r.apply_overrides(&overrides, RuleTarget::Activations)
        .unwrap();
    assert!(r.mesh_axes(Batch).is_empty());
}

#[test]
fn displays_the_whole_table_in_order() {
    let mut r = rules(&[(Batch, &["data", "fsdp"]), (Embed, &["fsdp"])]);
    r.set_largest_dim_fallback(true);
    assert_eq!(
        r.to_string(),
        "batch=[data, fsdp], length=[], embed=[fsdp], heads=[], kv_heads=[], head_dim=[], \
         mlp=[], vocab=[], expert=[], layers=[] (embed falls back to the largest dimension)"
    );
    assert!(r.uses_mesh_axis("fsdp") && !r.uses_mesh_axis("model"));
}
