//! `--set section.key=value` overrides.

use super::*;

fn set_problems(sets: &[&str]) -> Vec<String> {
    match with_sets(sets) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { issues, .. }) => {
            issues.iter().map(ToString::to_string).collect()
        }
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn values_parse_as_json_and_fall_back_to_strings() {
    let config = with_sets(&[
        "training.learning_rate=3e-4",
        "memory.gradient_checkpointing=true",
        "data.source=corpus/*.txt",
        "data.tokenizer=tok.json",
        "logging.output_dir=runs/x",
        "tpu.tpu_topology=2x2",
    ])
    .expect("overrides apply");
    assert_eq!(config.training.learning_rate, 3e-4);
    assert!(config.memory.gradient_checkpointing);
    assert_eq!(
        config.data.source,
        Some(DataSource::Paths(vec!["corpus/*.txt".into()]))
    );
    assert_eq!(config.data.tokenizer.as_deref(), Some("tok.json"));
    assert_eq!(config.logging.output_dir, "runs/x");
    assert_eq!(config.tpu.tpu_topology.as_deref(), Some("2x2"));
    let back =
        with_sets(&["data.tokenizer=tok.json", "data.tokenizer=null"]).expect("null applies");
    assert_eq!(back.data.tokenizer, None);
}

#[test]
fn overrides_apply_after_the_file_in_order() {
    let dir = std::env::temp_dir().join(format!("vishwam-override-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("c.json");
    std::fs::write(&path, r#"{"model": {"num_layers": 2, "hidden_dim": 128}}"#).expect("write");
    let sets = [
        "model.num_layers=6".to_string(),
        "model.num_layers=8".to_string(),
    ];
    let config = Config::load(Some(&path), &sets).expect("loads");
    assert_eq!((config.model.num_layers, config.model.hidden_dim), (8, 128));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn objects_merge_except_the_mesh_which_is_replaced() {
    let config = with_sets(&[r#"model={"num_layers": 2}"#]).expect("merges");
    assert_eq!((config.model.num_layers, config.model.hidden_dim), (2, 256));

    let replaced = with_sets(&[r#"tpu.mesh_shape={"model": 2, "data": -1}"#]).expect("replaces");
    assert_eq!(
        replaced.tpu.mesh_shape,
        MeshShape::from_pairs([("model", 2), ("data", -1)])
    );

    let one_axis = with_sets(&[
        r#"tpu.mesh_shape={"model": 1, "data": 8}"#,
        "tpu.mesh_shape.data=4",
    ])
    .expect("sets");
    assert_eq!(
        one_axis.tpu.mesh_shape,
        MeshShape::from_pairs([("model", 1), ("data", 4)])
    );

    let rope = with_sets(&["model.rope_scaling.type=ntk", "model.rope_scaling.factor=2"])
        .expect("builds the object");
    assert_eq!(
        rope.model.rope_scaling,
        Some(RopeScaling {
            kind: RopeScalingType::Ntk,
            factor: 2.0
        })
    );
}

#[test]
fn overridden_keys_get_the_same_checks_as_the_file() {
    assert_eq!(
        set_problems(&["training.learing_rate=1e-3"]),
        ["unknown key `training.learing_rate`; did you mean `training.learning_rate`?"]
    );
    assert_eq!(
        set_problems(&["model.num_layers=twelve"]),
        [r#"`model.num_layers` must be a positive integer, got "twelve""#]
    );
    assert_eq!(
        set_problems(&["training.warmup_steps=1000"]),
        ["`training.warmup_steps` must be at most training.max_steps (300), got 1000"]
    );
    let err = with_sets(&["model.num_heads=0"]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid configuration (defaults with 1 --set override), 1 problem:"),
        "{err}"
    );
}

#[test]
fn malformed_overrides_say_the_expected_form() {
    let cases = [
        ("training.learning_rate", "bad override `--set training.learning_rate`: expected section.key=value, e.g. --set training.learning_rate=3e-4"),
        ("=3", "bad override `--set =3`: `` is not a key path; expected section.key, e.g. training.max_steps"),
        ("training..seed=3", "bad override `--set training..seed=3`: `training..seed` is not a key path; expected section.key, e.g. training.max_steps"),
        ("training.learning_rate.peak=1", "bad override `--set training.learning_rate.peak=1`: `training.learning_rate` holds 0.001, not an object of keys"),
        ("training.seed.a.b=1", "bad override `--set training.seed.a.b=1`: `training.seed` holds 42, not an object of keys"),
    ];
    for (arg, message) in cases {
        let err = with_sets(&[arg]).unwrap_err();
        assert!(
            matches!(err, ConfigError::BadOverride { .. }),
            "{arg}: {err}"
        );
        assert_eq!(err.to_string(), message);
    }
}
