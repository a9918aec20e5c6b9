//! Feature gating: settings the trainer cannot honour yet are named, never ignored.

use super::*;

fn keys(settings: &[UnsupportedSetting]) -> Vec<&str> {
    settings.iter().map(|s| s.key.as_str()).collect()
}

#[test]
fn the_defaults_need_only_the_compile_cache() {
    let settings = Config::default().unsupported(Features::NONE);
    assert_eq!(keys(&settings), ["runtime.compile_cache"]);
    assert!(Config::default()
        .unsupported(Features::NONE.with(Feature::CompileCache))
        .is_empty());
}

#[test]
fn each_setting_names_its_key_value_and_remedy() {
    let config = load(r#"{"model": {"use_moe": true, "dropout_rate": 0.1}}"#);
    let settings = config.unsupported(Features::NONE.with(Feature::CompileCache));
    let messages: Vec<String> = settings.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "`model.use_moe` = true needs Mixture-of-Experts layers, which this build of vishwam does not implement yet; set it to false",
            "`model.dropout_rate` = 0.1 needs dropout, which this build of vishwam does not implement yet; set it to 0",
        ]
    );
    let err = config
        .require_features(Features::NONE.with(Feature::CompileCache))
        .unwrap_err();
    assert!(err.to_string().starts_with("the configuration asks for features this build of vishwam does not implement yet:\n  - `model.use_moe`"));
}

#[test]
fn flipping_a_feature_on_removes_exactly_its_settings() {
    let config = Config::load(Some(&preset("memory_efficient.json")), &[]).expect("loads");
    let none = config.unsupported(Features::NONE);
    assert_eq!(
        keys(&none),
        [
            "optimization.use_fp8",
            "memory.kv_cache_fp8",
            "memory.gradient_checkpointing",
            "memory.attention_memory_efficient",
            "optimization.block_size",
            "tpu.use_bfloat16",
            "optimization.mixed_precision",
            "training.grad_accum_steps",
            "runtime.compile_cache",
        ]
    );
    let with_fp8 = config.unsupported(Features::NONE.with(Feature::Fp8));
    assert_eq!(with_fp8.len(), none.len() - 1);
    assert!(!keys(&with_fp8).contains(&"optimization.use_fp8"));
    assert!(config.unsupported(Features::all()).is_empty());
    assert!(config.require_features(Features::all()).is_ok());
}

#[test]
fn every_feature_is_reachable_from_some_setting() {
    let everything = load(
        r#"{"model": {"use_moe": true, "dropout_rate": 0.1, "rope_scaling": {"type": "ntk", "factor": 2}},
            "training": {"grad_accum_steps": 2, "optimizer": "muon"},
            "tpu": {"tpu_topology": "2x2", "use_bfloat16": true, "logical_axis_rules": []},
            "memory": {"gradient_checkpointing": true, "attention_memory_efficient": true, "kv_cache_fp8": true},
            "optimization": {"use_fp8": true, "shard_weights": true},
            "distillation": {"teacher_model": "t", "use_intermediate_distillation": true},
            "data": {"tokenizer": "t.json", "format": "jsonl", "dataset_type": "document"},
            "datasets": {"paths": ["a"]},
            "logging": {"profile_every": 10}}"#,
    );
    let mut reached: Vec<Feature> = everything
        .unsupported(Features::NONE)
        .iter()
        .map(|s| s.feature)
        .collect();
    for other in [
        r#"{"tpu": {"device_strategy": "fsdp"}}"#,
        r#"{"tpu": {"device_strategy": "tensor_parallel"}}"#,
        r#"{"tpu": {"device_strategy": "hybrid"}}"#,
        r#"{"optimization": {"use_dynamic_scale": true}}"#,
        r#"{"data": {"source": "x.txt", "dataset_type": "random_chunk"}}"#,
    ] {
        reached.extend(
            load(other)
                .unsupported(Features::NONE)
                .iter()
                .map(|s| s.feature),
        );
    }
    for feature in Feature::ALL {
        assert!(
            reached.contains(feature),
            "{feature:?} is asked for by no setting"
        );
    }
}

#[test]
fn feature_sets_are_const_and_distinct() {
    const TRAINER: Features = Features::NONE
        .with(Feature::Dropout)
        .with(Feature::Bf16Compute);
    assert!(TRAINER.contains(Feature::Dropout) && TRAINER.contains(Feature::Bf16Compute));
    assert!(!TRAINER.contains(Feature::Moe));
    assert!(!TRAINER.without(Feature::Dropout).contains(Feature::Dropout));
    assert!(Feature::ALL.len() < 64);
    let all = Features::all();
    for feature in Feature::ALL {
        assert!(all.contains(*feature));
        assert_eq!(
            Features::NONE.with(*feature).without(*feature),
            Features::NONE
        );
    }
    let collected: Features = [Feature::Moe, Feature::Fp8].into_iter().collect();
    assert_eq!(
        collected,
        Features::NONE.with(Feature::Moe).with(Feature::Fp8)
    );
}
