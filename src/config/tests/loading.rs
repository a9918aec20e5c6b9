//! Parsing, merging over the defaults, unknown keys and wrong types.

use super::*;

#[test]
fn no_file_gives_the_defaults_and_they_are_valid() {
    let config = Config::load(None, &[]).expect("defaults load");
    assert_eq!(config, Config::default());
    Config::default().validate().expect("defaults validate");
    assert_eq!(load("{}"), Config::default());
}

#[test]
fn a_partial_file_keeps_every_other_default() {
    let config = load(r#"{"model": {"num_layers": 2}, "training": {"learning_rate": 0.01}}"#);
    let mut expected = Config::default();
    expected.model.num_layers = 2;
    expected.training.learning_rate = 0.01;
    assert_eq!(config, expected);
}

#[test]
fn mesh_shape_is_replaced_whole_and_keeps_the_written_order() {
    let config = load(r#"{"tpu": {"mesh_shape": {"model": 2, "data": -1}}}"#);
    let axes: Vec<(&str, i64)> = config
        .tpu
        .mesh_shape
        .axes()
        .iter()
        .map(|(n, s)| (n.as_str(), *s))
        .collect();
    assert_eq!(axes, [("model", 2), ("data", -1)]);
    let text = config.to_json_pretty();
    assert!(
        text.find("\"model\": 2").unwrap() < text.find("\"data\": -1").unwrap(),
        "{text}"
    );
}

#[test]
fn unknown_key_with_a_near_spelling_is_suggested() {
    assert_eq!(
        problem(r#"{"training": {"learing_rate": 0.1}}"#),
        "unknown key `training.learing_rate`; did you mean `training.learning_rate`?"
    );
    assert_eq!(
        problem(r#"{"trainig": {}}"#),
        "unknown key `trainig`; did you mean `training`?"
    );
}

#[test]
fn unknown_key_far_from_any_lists_the_section_keys() {
    assert_eq!(
        problem(r#"{"memory": {"offload": true}}"#),
        "unknown key `memory.offload`; valid keys of `memory` are: gradient_checkpointing, \
         attention_memory_efficient, use_memory_efficient_attention, kv_cache_fp8, \
         attention_backend, loss_chunk_tokens"
    );
    let top = problem(r#"{"extras": {}}"#);
    assert!(
        top.starts_with(
            "unknown key `extras`; valid top-level keys are: description, model, training,"
        ),
        "{top}"
    );
}

#[test]
fn a_key_in_the_wrong_section_points_to_its_section() {
    assert_eq!(
        problem(r#"{"training": {"use_fp8": true}}"#),
        "unknown key `training.use_fp8`; did you mean `optimization.use_fp8`?"
    );
}

#[test]
fn names_from_other_trainers_point_to_ours() {
    assert_eq!(
        problem(r#"{"model": {"d_model": 512}}"#),
        "unknown key `model.d_model`; did you mean `model.hidden_dim`?"
    );
    assert_eq!(
        problem(r#"{"training": {"lr": 0.1}}"#),
        "unknown key `training.lr`; did you mean `training.learning_rate`?"
    );
}

#[test]
fn wrong_types_name_the_key_the_rule_and_the_value() {
    let cases = [
        (r#"{"model": {"num_layers": "12"}}"#, r#"`model.num_layers` must be a positive integer, got "12""#),
        (r#"{"model": {"num_layers": 12.0}}"#, "`model.num_layers` must be a positive integer, got 12.0"),
        (r#"{"model": {"num_layers": -3}}"#, "`model.num_layers` must be a positive integer, got -3"),
        (r#"{"model": {"num_kv_heads": "4"}}"#, r#"`model.num_kv_heads` must be a positive integer or null, got "4""#),
        (r#"{"training": {"seed": -1}}"#, "`training.seed` must be a non-negative integer, got -1"),
        (r#"{"training": {"learning_rate": "3e-4"}}"#, r#"`training.learning_rate` must be a number, got "3e-4""#),
        (r#"{"memory": {"gradient_checkpointing": "yes"}}"#, r#"`memory.gradient_checkpointing` must be true or false, got "yes""#),
        (r#"{"memory": {"attention_memory_efficient": 1}}"#, "`memory.attention_memory_efficient` must be true, false or null, got 1"),
        (r#"{"logging": {"output_dir": 5}}"#, "`logging.output_dir` must be a string, got 5"),
        (r#"{"logging": {"tensorboard": "no"}}"#, r#"`logging.tensorboard` must be true or false, got "no""#),
        (r#"{"data": {"tokenizer": false}}"#, "`data.tokenizer` must be a string or null, got false"),
        (r#"{"model": 3}"#, "`model` must be an object of section keys, got 3"),
        (r#"{"description": ["a"]}"#, r#"`description` must be a string or null, got ["a"]"#),
        (r#"{"sequence": {"pad_token_id": 4294967296}}"#,
            "`sequence.pad_token_id` must be a token id (a non-negative integer below 2^32) or null, got 4294967296"),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
}

#[test]
fn bad_enum_values_list_the_choices_and_suggest_the_nearest() {
    assert_eq!(
        problem(r#"{"training": {"lr_schedule": "cosin"}}"#),
        r#"`training.lr_schedule` must be one of "cosine", "linear", "constant" (did you mean "cosine"?), got "cosin""#
    );
    assert_eq!(
        problem(r#"{"tpu": {"device_strategy": "pipeline"}}"#),
        r#"`tpu.device_strategy` must be one of "data_parallel", "fsdp", "tensor_parallel", "hybrid", got "pipeline""#
    );
    assert_eq!(
        problem(r#"{"datasets": {"merge_strategy": "weigthed"}}"#),
        r#"`datasets.merge_strategy` must be null or one of "weighted", "equal", "proportional" (did you mean "weighted"?), got "weigthed""#
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let json = r#"{"model": {"num_layers": "x", "hidden": 3}, "training": {"seed": 1.5}, "runtime": {"platform": "gpu"}}"#;
    let err = Config::from_json_str(json).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid configuration (config text), 4 problems:\n  - "),
        "{text}"
    );
    let found = problems(json);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("`model.num_layers` must be"));
    assert!(found[1].starts_with("unknown key `model.hidden`"));
    assert!(found[2].starts_with("`training.seed` must be"));
    assert!(found[3]
        .starts_with("`runtime.platform` must be one of \"auto\", \"cpu\", \"cuda\", \"tpu\""));
}

#[test]
fn rope_scaling_is_read_and_checked_as_an_object() {
    let config = load(r#"{"model": {"rope_scaling": {"type": "ntk", "factor": 4}}}"#);
    assert_eq!(
        config.model.rope_scaling,
        Some(RopeScaling {
            kind: RopeScalingType::Ntk,
            factor: 4.0
        })
    );
    assert_eq!(
        problem(r#"{"model": {"rope_scaling": {"type": "linear"}}}"#),
        "`model.rope_scaling.factor` is required: it must be a number >= 1"
    );
    assert_eq!(
        problems(r#"{"model": {"rope_scaling": {"type": "linear", "facter": 2}}}"#),
        [
            "`model.rope_scaling.factor` is required: it must be a number >= 1",
            "unknown key `model.rope_scaling.facter`; did you mean `model.rope_scaling.factor`?",
        ]
    );
    assert_eq!(
        problems(r#"{"model": {"rope_scaling": {"type": "linear", "factor": 2, "facter": 2}}}"#),
        ["unknown key `model.rope_scaling.facter`; did you mean `model.rope_scaling.factor`?"]
    );
    assert_eq!(
        problem(r#"{"model": {"rope_scaling": "yarn"}}"#),
        r#"`model.rope_scaling` must be null or an object {"type": "linear" | "ntk", "factor": number}, got "yarn""#
    );
}

#[test]
fn structured_values_are_parsed_or_rejected_with_their_shape() {
    let config = load(
        r#"{"tpu": {"mesh_shape": {"data": 2, "model": 2}, "logical_axis_rules": [["batch", ["data"]], ["embed", null], ["mlp", "model"]]},
            "distillation": {"intermediate_layer_mapping": [1, 3, 5, 7]},
            "data": {"source": ["a/*.txt", "b"]},
            "datasets": {"paths": [], "weights": null}}"#,
    );
    let rules = config.tpu.logical_axis_rules.clone().unwrap_or_default();
    assert_eq!(
        rules[0],
        LogicalAxisRule("batch".into(), vec!["data".into()])
    );
    assert_eq!(rules[1], LogicalAxisRule("embed".into(), vec![]));
    assert_eq!(
        rules[2],
        LogicalAxisRule("mlp".into(), vec!["model".into()])
    );
    assert_eq!(
        config.distillation.intermediate_layer_mapping,
        LayerMapping::Explicit(vec![1, 3, 5, 7])
    );
    assert_eq!(
        config.data.source,
        Some(DataSource::Paths(vec!["a/*.txt".into(), "b".into()]))
    );
    assert_eq!(
        load(r#"{"data": {"source": "brown"}}"#).data.source,
        Some(DataSource::Brown)
    );
    assert_eq!(
        load(r#"{"data": {"source": "corpus.txt"}}"#).data.source,
        Some(DataSource::Paths(vec!["corpus.txt".into()]))
    );

    let cases = [
        (
            r#"{"tpu": {"mesh_shape": {"data": "8"}}}"#,
            r#"`tpu.mesh_shape.data` must be an integer >= 1, or -1 for one axis filled from the device count, got "8""#,
        ),
        (
            r#"{"tpu": {"mesh_shape": [8, 1]}}"#,
            r#"`tpu.mesh_shape` must be an object of axis sizes in mesh order, such as {"data": 8, "model": 1}, got [8,1]"#,
        ),
        (
            r#"{"tpu": {"logical_axis_rules": [["batch"]]}}"#,
            r#"`tpu.logical_axis_rules[0]` must be a pair [logical_name, [mesh axes]] (the axes may also be one string, or null for replicated), got ["batch"]"#,
        ),
        (
            r#"{"distillation": {"intermediate_layer_mapping": "middle"}}"#,
            r#"`distillation.intermediate_layer_mapping` must be "uniform", "last", or a list of teacher layer indices (non-negative integers), got "middle""#,
        ),
        (
            r#"{"data": {"source": []}}"#,
            r#"`data.source` must be null, "brown", or a path / glob / directory, or a non-empty list of them ("brown" cannot be part of a list), got []"#,
        ),
        (
            r#"{"data": {"source": ["brown", "x"]}}"#,
            r#"`data.source` must be null, "brown", or a path / glob / directory, or a non-empty list of them ("brown" cannot be part of a list), got ["brown","x"]"#,
        ),
        (
            r#"{"datasets": {"paths": "a"}}"#,
            r#"`datasets.paths` must be a list of path strings, got "a""#,
        ),
        (
            r#"{"datasets": {"weights": [1, "2"]}}"#,
            r#"`datasets.weights` must be null or a list of numbers, got [1,"2"]"#,
        ),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
}

#[test]
fn syntax_errors_give_line_and_column() {
    let text = "{\n  \"model\": {\n    \"num_layers\": 4,\n  }\n}";
    match Config::from_json_str(text) {
        Err(ConfigError::Syntax {
            line,
            column,
            ref message,
            ..
        }) => {
            assert_eq!((line, column), (4, 3));
            assert_eq!(message, "trailing comma");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let err = Config::from_json_str(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config text is not valid JSON: trailing comma at line 4, column 3"
    );
}

#[test]
fn a_comment_gets_a_hint_about_description() {
    let err = Config::from_json_str("{\n  // small model\n  \"model\": {}\n}").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("config text is not valid JSON: "),
        "{text}"
    );
    assert!(text.contains("at line 2, column"), "{text}");
    assert!(
        text.ends_with(
            "; JSON has no comments (describe the file in a top-level \"description\" string)"
        ),
        "{text}"
    );
}

#[test]
fn a_document_that_is_not_an_object_is_refused() {
    let err = Config::from_json_str("[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config text must hold a JSON object of sections (model, training, ...), got [1,2]"
    );
}

#[test]
fn file_errors_name_the_path() {
    let missing = std::path::Path::new("/nonexistent/vishwam/config.json");
    let err = Config::load(Some(missing), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/vishwam/config.json: "),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("vishwam-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.json");
    std::fs::write(&path, r#"{"model": {"num_heads": 0}}"#).expect("write");
    let err = Config::load(Some(&path), &["training.seed=1".to_string()]).unwrap_err();
    let expected = format!(
        "invalid configuration ({} with 1 --set override), 1 problem:\n  - `model.num_heads` must be a positive integer, got 0",
        path.display()
    );
    assert_eq!(err.to_string(), expected);
    std::fs::write(&path, "{\"model\": }").expect("write");
    let err = Config::load(Some(&path), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not valid JSON: expected value at line 1, column 11",
            path.display()
        )
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn to_json_pretty_round_trips_a_config_with_every_option_set() {
    let json = r#"{
        "description": "everything",
        "model": {"num_kv_heads": 4, "head_dim": 32, "mlp_dim": 640, "rope_scaling": {"type": "linear", "factor": 2},
                  "use_moe": true, "expert_capacity": 64, "expert_dim": 128, "num_shared_experts": 1, "dropout_rate": 0.1},
        "training": {"lr_schedule": "linear", "grad_accum_steps": 2, "seed": 7},
        "tpu": {"tpu_cores": 4, "tpu_topology": "2x2", "device_strategy": "hybrid", "use_bfloat16": true,
                "mesh_shape": {"model": 2, "data": -1}, "logical_axis_rules": [["heads", ["model"]]]},
        "memory": {"use_memory_efficient_attention": true, "kv_cache_fp8": true},
        "optimization": {"use_fp8": true, "fp8_recipe": "current", "fp8_format": "e4m3"},
        "distillation": {"teacher_model": "teacher/", "intermediate_layer_mapping": [0, 1, 2, 3], "intermediate_loss": "cosine"},
        "sequence": {"max_length": 128, "min_length": 4, "pad_token_id": 0, "eos_token_id": 2, "bos_token_id": 1},
        "data": {"source": ["x.jsonl"], "format": "jsonl", "tokenizer": "tok.json", "dataset_type": "document", "cache_dir": "c"},
        "runtime": {"platform": "cuda", "devices": 4, "plugin": "/p.so", "compile_cache": false}
    }"#;
    let config = load(json);
    assert_eq!(
        config.memory.attention_memory_efficient,
        Some(true),
        "the alias is filled in"
    );
    let again = load(&config.to_json_pretty());
    assert_eq!(again, config);
    assert_eq!(load(&Config::default().to_json_pretty()), Config::default());
    let mixture = load(r#"{"datasets": {"paths": ["a", "b"], "weights": [0.7, 0.3]}}"#);
    assert_eq!(load(&mixture.to_json_pretty()), mixture);
}

#[test]
fn the_schema_lists_every_key_once() {
    let keys = schema_keys();
    assert!(keys.contains(&"training.learning_rate".to_string()));
    assert!(keys.contains(&"description".to_string()));
    let mut sorted = keys.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len());
}

#[test]
fn a_key_given_twice_is_refused_with_its_position() {
    let text = "{\n  \"model\": {\"num_layers\": 2,\n            \"num_layers\": 4}\n}";
    let err = Config::from_json_str(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config text is not valid JSON: key `num_layers` appears twice in one object (each key may be given once) \
         at line 3, column 24"
    );
    let mesh = r#"{"tpu": {"mesh_shape": {"data": 2, "data": 4}}}"#;
    assert!(Config::from_json_str(mesh)
        .unwrap_err()
        .to_string()
        .contains("key `data` appears twice"));
}
