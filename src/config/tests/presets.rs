//! The presets in `configs/` and the user documentation of the keys.

use super::*;

const PRESETS: &[&str] = &[
    "default.json",
    "tpu_v3_8.json",
    "gpu_h100.json",
    "memory_efficient.json",
    "distill_tiny.json",
];

fn load_preset(name: &str) -> Config {
    match Config::load(Some(&preset(name)), &[]) {
        Ok(config) => config,
        Err(e) => panic!("configs/{name} should load:\n{e}"),
    }
}

#[test]
fn every_preset_loads_validates_and_round_trips() {
    for name in PRESETS {
        let config = load_preset(name);
        config.validate().expect("a loaded preset validates");
        assert!(
            config.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{name} has a description"
        );
        assert_eq!(load(&config.to_json_pretty()), config, "{name} round-trips");
    }
    let listed: Vec<String> = std::fs::read_dir(preset(""))
        .expect("configs/ exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    for name in &listed {
        assert!(
            PRESETS.contains(&name.as_str()),
            "configs/{name} is not covered by this test"
        );
    }
}

#[test]
fn default_json_spells_out_exactly_the_defaults() {
    let mut config = load_preset("default.json");
    assert!(config.description.take().is_some());
    assert_eq!(config, Config::default());
    let text = std::fs::read_to_string(preset("default.json")).expect("readable");
    let value: Value = serde_json::from_str(&text).expect("valid JSON");
    let Value::Object(sections) = value else {
        panic!("an object")
    };
    let listed: usize = sections
        .values()
        .map(|v| v.as_object().map_or(1, |m| m.len()))
        .sum();
    assert_eq!(listed, schema_keys().len(), "default.json lists every key");
}

#[test]
fn tpu_v3_8_is_the_24_layer_768_wide_data_parallel_model() {
    let config = load_preset("tpu_v3_8.json");
    let m = &config.model;
    assert_eq!(
        (m.num_layers, m.hidden_dim, m.num_heads, m.head_dim()),
        (24, 768, 12, 64)
    );
    assert_eq!(config.tpu.tpu_cores, Some(8));
    assert_eq!(
        config.tpu.mesh_shape,
        MeshShape::from_pairs([("data", 8), ("model", 1)])
    );
    assert_eq!(config.tpu.device_strategy, DeviceStrategy::DataParallel);
    assert!(config.tpu.use_bfloat16 && config.optimization.use_fp8);
    assert_eq!(config.runtime.platform, Platform::Tpu);
    assert_eq!(config.requested_devices(), Some(8));
    // 8 sequences on each of the 8 data shards: the global batch of 64 it always had.
    assert_eq!(config.batch_geometry(8).global_batch(), 64);
}

#[test]
fn tpu_v3_8_runs_on_eight_virtual_cpu_devices_and_a_shortened_run_cuts_its_warmup() {
    let sets = |extra: &[&str]| {
        let mut all = vec![
            "runtime.platform=cpu".to_string(),
            "runtime.devices=8".to_string(),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        Config::load(Some(&preset("tpu_v3_8.json")), &all)
    };
    assert_eq!(sets(&[]).expect("loads").requested_devices(), Some(8));
    let short = sets(&["training.max_steps=5"]).expect("the headline 5-step smoke run");
    assert_eq!(
        (short.training.max_steps, short.training.warmup_steps),
        (5, 5)
    );
    sets(&["training.max_steps=5", "training.warmup_steps=1"]).expect("a 5-step smoke run");
    let err = sets(&["training.max_steps=5", "training.warmup_steps=6"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("`training.warmup_steps` must be at most training.max_steps (5), got 6"),
        "{err}"
    );
    let err = sets(&["runtime.devices=4"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("`runtime.devices` = 4 contradicts `tpu.tpu_cores` = 8"),
        "{err}"
    );
}

#[test]
fn gpu_h100_is_the_124m_benchmark_model() {
    let config = load_preset("gpu_h100.json");
    let m = &config.model;
    assert_eq!(
        (
            m.hidden_dim,
            m.num_layers,
            m.num_heads,
            m.kv_heads(),
            m.mlp_dim(),
            m.vocab_size,
            m.max_seq_len
        ),
        (768, 12, 12, 4, 2048, 32000, 1024)
    );
    assert_eq!(config.training.batch_size, 16);
    assert_eq!(config.compute_dtype(), ComputeDtype::Bf16);
    assert_eq!(config.runtime.platform, Platform::Cuda);
}

#[test]
fn memory_efficient_turns_on_every_memory_saving() {
    let config = load_preset("memory_efficient.json");
    assert_eq!(config.model.vocab_size, 131072);
    assert!(config.memory.gradient_checkpointing && config.memory.memory_efficient_attention());
    assert!(config.optimization.use_fp8 && config.memory.kv_cache_fp8);
    assert_eq!(config.optimization.block_size, Some(512));
    assert_eq!(config.attention_block(), Some(512));
    // One GPU: 4 micro-batches of 8, the global batch of 32 it always had.
    let batch = config.batch_geometry(1);
    assert_eq!((batch.micro_batch(), batch.global_batch()), (8, 32));
}

#[test]
fn distill_tiny_has_a_teacher_and_a_smaller_student() {
    let config = load_preset("distill_tiny.json");
    assert_eq!(
        config.distillation.teacher_model.as_deref(),
        Some("runs/default")
    );
    assert!(config.model.hidden_dim < Config::default().model.hidden_dim);
    assert!(config.distillation.use_intermediate_distillation);
    assert_eq!(
        config.distillation.intermediate_layer_mapping,
        LayerMapping::Uniform
    );
}

#[test]
fn the_readme_documents_every_key() {
    let readme = std::fs::read_to_string(preset("README.md")).expect("configs/README.md exists");
    for key in schema_keys() {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "configs/README.md has no table row for `{key}`"
        );
    }
    for name in PRESETS {
        assert!(
            readme.contains(name),
            "configs/README.md does not describe {name}"
        );
    }
}
