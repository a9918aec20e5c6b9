//! Impossible values and contradictions, one rule per case, with the message asserted.

use super::*;

#[test]
fn model_shape_rules() {
    let cases = [
        (r#"{"model": {"hidden_dim": 250}}"#,
            "`model.hidden_dim` must be divisible by model.num_heads (8) when model.head_dim is not given; \
             set model.head_dim explicitly or change one of them, got 250"),
        (r#"{"model": {"num_kv_heads": 3}}"#,
            "`model.num_kv_heads` must be a divisor of model.num_heads (8) so that query heads group evenly \
             over key/value heads, got 3"),
        (r#"{"model": {"head_dim": 33}}"#, "`model.head_dim` must be even (RoPE rotates pairs of dimensions), got 33"),
        (r#"{"model": {"hidden_dim": 264}}"#,
            "`model.head_dim` must be even (RoPE rotates pairs of dimensions); it defaults to model.hidden_dim / \
             model.num_heads, so set it or change those, got 33 (derived)"),
        (r#"{"model": {"num_layers": 0}}"#, "`model.num_layers` must be a positive integer, got 0"),
        (r#"{"model": {"mlp_dim": 0}}"#, "`model.mlp_dim` must be a positive integer, got 0"),
        (r#"{"model": {"dropout_rate": 1.0}}"#, "`model.dropout_rate` must be in [0, 1), got 1"),
        (r#"{"model": {"dropout_rate": -0.1}}"#, "`model.dropout_rate` must be in [0, 1), got -0.1"),
        (r#"{"model": {"rope_theta": 0}}"#, "`model.rope_theta` must be a number > 0, got 0"),
        (r#"{"model": {"rope_scaling": {"type": "linear", "factor": 0.5}}}"#, "`model.rope_scaling.factor` must be a number >= 1, got 0.5"),
        (r#"{"model": {"norm_eps": 0}}"#, "`model.norm_eps` must be a number > 0, got 0"),
        (r#"{"model": {"init_std": -0.02}}"#, "`model.init_std` must be a number > 0, got -0.02"),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    // An explicit head_dim lifts the divisibility rule.
    let config = load(r#"{"model": {"hidden_dim": 250, "head_dim": 32}}"#);
    assert_eq!(config.model.head_dim(), 32);
}

#[test]
fn moe_rules() {
    let cases = [
        (r#"{"model": {"num_experts": 2, "experts_per_token": 3}}"#, "`model.experts_per_token` must be at most model.num_experts (2), got 3"),
        (r#"{"model": {"use_moe": true, "moe_layer_frequency": 5}}"#,
            "`model.moe_layer_frequency` must be at most model.num_layers (4), or no block would be MoE, got 5"),
        (r#"{"model": {"expert_capacity": 32, "capacity_factor": 1.5}}"#,
            "`model.expert_capacity` = 32 contradicts `model.capacity_factor` = 1.5: give an absolute capacity or a factor, not both"),
        (r#"{"model": {"capacity_factor": 0}}"#, "`model.capacity_factor` must be a number > 0, got 0"),
        (r#"{"model": {"router_noise": -1}}"#, "`model.router_noise` must be a number >= 0, got -1"),
        (r#"{"model": {"aux_loss_coef": -0.5}}"#, "`model.aux_loss_coef` must be a number >= 0, got -0.5"),
        (r#"{"model": {"lossfree_update_rate": 0}}"#, "`model.lossfree_update_rate` must be a number > 0, got 0"),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
}

#[test]
fn training_rules() {
    let cases = [
        (
            r#"{"training": {"warmup_steps": 400}}"#,
            "`training.warmup_steps` must be at most training.max_steps (300), got 400",
        ),
        (
            r#"{"training": {"learning_rate": 0}}"#,
            "`training.learning_rate` must be a number > 0, got 0",
        ),
        (
            r#"{"training": {"learning_rate": -0.001}}"#,
            "`training.learning_rate` must be a number > 0, got -0.001",
        ),
        (
            r#"{"training": {"min_lr_ratio": 1.5}}"#,
            "`training.min_lr_ratio` must be in [0, 1], got 1.5",
        ),
        (
            r#"{"training": {"adam_beta2": 1}}"#,
            "`training.adam_beta2` must be in [0, 1), got 1",
        ),
        (
            r#"{"training": {"adam_eps": 0}}"#,
            "`training.adam_eps` must be a number > 0, got 0",
        ),
        (
            r#"{"training": {"weight_decay": -0.1}}"#,
            "`training.weight_decay` must be a number >= 0, got -0.1",
        ),
        (
            r#"{"training": {"max_grad_norm": -1}}"#,
            "`training.max_grad_norm` must be a number >= 0, got -1",
        ),
        (
            r#"{"training": {"eval_steps": 0}}"#,
            "`training.eval_steps` must be a positive integer, got 0",
        ),
        (
            r#"{"logging": {"log_every": 0}}"#,
            "`logging.log_every` must be a positive integer, got 0",
        ),
        (
            r#"{"logging": {"keep_checkpoints": 0}}"#,
            "`logging.keep_checkpoints` must be a positive integer, got 0",
        ),
        (
            r#"{"logging": {"output_dir": " "}}"#,
            r#"`logging.output_dir` must be a non-empty string, got " ""#,
        ),
        (
            r#"{"logging": {"profile_steps": 0}}"#,
            "`logging.profile_steps` must be a positive integer, got 0",
        ),
        (
            r#"{"logging": {"profile_every": 2, "profile_steps": 3}}"#,
            "`logging.profile_steps` must be at most logging.profile_every = 2 (each trace covers \
             profile_steps steps from a multiple of profile_every; more would trace every step), \
             got 3",
        ),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    // batch_size is per batch shard: any size accumulates over any number of micro-batches.
    let accumulated = load(r#"{"training": {"batch_size": 10, "grad_accum_steps": 4}}"#);
    let batch = accumulated.batch_geometry(8);
    assert_eq!((batch.micro_batch(), batch.global_batch()), (80, 320));
    assert_eq!(
        batch.to_string(),
        "10 per shard (training.batch_size) x 8 batch shards x 4 micro-batches \
         (training.grad_accum_steps) = 320 sequences per step"
    );
}

#[test]
fn sequence_rules() {
    let cases = [
        (
            r#"{"sequence": {"max_length": 512}}"#,
            "`sequence.max_length` must be at most model.max_seq_len (128), got 512",
        ),
        (
            r#"{"sequence": {"min_length": 300}}"#,
            "`sequence.min_length` must be at most the sequence length (128), got 300",
        ),
        (
            r#"{"sequence": {"pad_token_id": 8192}}"#,
            "`sequence.pad_token_id` must be below model.vocab_size (8192), got 8192",
        ),
        (
            r#"{"sequence": {"eos_token_id": 9000}}"#,
            "`sequence.eos_token_id` must be below model.vocab_size (8192), got 9000",
        ),
        (
            r#"{"sequence": {"chunk_size": 0}}"#,
            "`sequence.chunk_size` must be a positive integer, got 0",
        ),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    let config = load(r#"{"model": {"max_seq_len": 1024}}"#);
    assert_eq!(
        config.seq_len(),
        1024,
        "max_length follows max_seq_len when not given"
    );
}

#[test]
fn mesh_and_device_rules() {
    let cases = [
        (r#"{"tpu": {"mesh_shape": {"data": 0}}}"#,
            "`tpu.mesh_shape.data` must be an integer >= 1, or -1 for one axis filled from the device count, got 0"),
        (r#"{"tpu": {"mesh_shape": {}}}"#, r#"`tpu.mesh_shape` must be an object with at least one axis, such as {"data": -1}, got {}"#),
        (r#"{"tpu": {"mesh_shape": {"data": -1, "model": -1}}}"#,
            "`tpu.mesh_shape.data` = -1 contradicts `tpu.mesh_shape.model` = -1: only one mesh axis may be -1 \
             (filled from the device count)"),
        (r#"{"tpu": {"tpu_cores": 8, "mesh_shape": {"data": 4, "model": 1}}}"#,
            r#"`tpu.mesh_shape` = {"data": 4, "model": 1} contradicts `tpu.tpu_cores` = 8: the axes multiply to 4 devices; make their product 8, or set one axis to -1"#),
        (r#"{"tpu": {"tpu_cores": 6, "mesh_shape": {"data": -1, "model": 4}}}"#,
            r#"`tpu.mesh_shape` = {"data": -1, "model": 4} contradicts `tpu.tpu_cores` = 6: the fixed axes multiply to 4, which does not divide 6 devices"#),
        (r#"{"tpu": {"tpu_cores": 8}, "runtime": {"devices": 4}}"#,
            "`runtime.devices` = 4 contradicts `tpu.tpu_cores` = 8: both give the number of devices; give one of them, or the same number"),
        (r#"{"tpu": {"tpu_cores": 4, "tpu_topology": "2x2x2"}}"#,
            r#"`tpu.tpu_topology` = "2x2x2" contradicts `tpu.tpu_cores` = 4: the topology holds 8 devices; they must be the run's devices"#),
        (r#"{"tpu": {"tpu_topology": "2by2"}}"#, r#"`tpu.tpu_topology` must be a TPU topology such as "2x2" or "2x2x1", got "2by2""#),
        (r#"{"tpu": {"tpu_cores": 0}}"#, "`tpu.tpu_cores` must be a positive integer, got 0"),
        (r#"{"runtime": {"devices": 0}}"#, "`runtime.devices` must be a positive integer, got 0"),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    // batch_size is per batch shard, so any batch splits over any mesh.
    load(r#"{"tpu": {"mesh_shape": {"data": 3}}}"#);
    load(r#"{"runtime": {"devices": 32}, "tpu": {"tpu_topology": "4x8"}}"#);
    let config =
        load(r#"{"tpu": {"mesh_shape": {"data": -1, "model": 2}}, "runtime": {"devices": 8}}"#);
    assert_eq!(
        config.tpu.mesh_shape.resolve(config.requested_devices()),
        Some(vec![("data".into(), 4), ("model".into(), 2)])
    );
    // A `batch` rule decides which axes split the batch; any per-shard batch fits.
    load(
        r#"{"tpu": {"mesh_shape": {"data": 2, "model": 3}, "logical_axis_rules": [["batch", ["data", "model"]]]}}"#,
    );
}

#[test]
fn logical_axis_rule_rules() {
    let cases = [
        (
            r#"{"tpu": {"logical_axis_rules": [["embd", ["data"]]]}}"#,
            r#"`tpu.logical_axis_rules[0]` must be a rule for a logical axis among [batch, length, embed, heads, kv_heads, head_dim, mlp, vocab, expert, layers] (did you mean "embed"?), got "embd""#,
        ),
        (
            r#"{"tpu": {"logical_axis_rules": [["mlp", ["tensor"]]]}}"#,
            r#"`tpu.logical_axis_rules[0]` must be a rule naming axes of tpu.mesh_shape [data], got "tensor""#,
        ),
        (
            r#"{"tpu": {"logical_axis_rules": [["mlp", []], ["mlp", ["data"]]]}}"#,
            r#"`tpu.logical_axis_rules[1]` must be the only rule for its logical axis (each logical axis gets one rule), got "mlp""#,
        ),
        (
            r#"{"tpu": {"logical_axis_rules": [["mlp", ["data", "data"]]]}}"#,
            r#"`tpu.logical_axis_rules[0]` must be a rule naming each mesh axis at most once, got "data""#,
        ),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
}

#[test]
fn precision_and_alias_rules() {
    assert_eq!(
        problem(r#"{"memory": {"attention_memory_efficient": true, "use_memory_efficient_attention": false}}"#),
        "`memory.attention_memory_efficient` = true contradicts `memory.use_memory_efficient_attention` = false: \
         the two keys are aliases of one switch and must agree; give only one"
    );
    for key in [
        "attention_memory_efficient",
        "use_memory_efficient_attention",
    ] {
        let config = load(&format!(r#"{{"memory": {{"{key}": true}}}}"#));
        assert!(config.memory.memory_efficient_attention());
        assert_eq!(
            config.memory.attention_memory_efficient,
            config.memory.use_memory_efficient_attention
        );
    }
    assert!(!Config::default().memory.memory_efficient_attention());
    // The guide's listing sets both: bf16 compute with a dynamic loss scale.
    let both =
        load(r#"{"tpu": {"use_bfloat16": true}, "optimization": {"use_dynamic_scale": true}}"#);
    assert_eq!(both.compute_dtype(), ComputeDtype::Bf16);
    assert_eq!(
        problem(r#"{"optimization": {"use_pjit": false}}"#),
        "`optimization.use_pjit` must be true: vishwam always compiles the step as one SPMD program over the device \
         mesh (what pjit does); remove the key or set it to true, got false"
    );
    assert_eq!(
        problem(r#"{"optimization": {"block_size": 0}}"#),
        "`optimization.block_size` must be a positive integer, got 0"
    );
    // block_size is never without effect: given, it turns blocked attention on.
    assert_eq!(Config::default().attention_block(), None);
    let flag = load(r#"{"memory": {"attention_memory_efficient": true}}"#);
    assert_eq!(flag.attention_block(), Some(DEFAULT_ATTENTION_BLOCK));
    let block = load(r#"{"optimization": {"use_fp8": true, "block_size": 64}}"#);
    assert_eq!(block.attention_block(), Some(64));
    assert_eq!(
        problem(r#"{"memory": {"use_memory_efficient_attention": false}, "optimization": {"block_size": 64}}"#),
        "`optimization.block_size` = 64 contradicts `memory.attention_memory_efficient` = false: block_size \
         is the block length of blocked (memory-efficient) attention, which is switched off; remove \
         block_size (null), or set attention_memory_efficient to true"
    );
    let cudnn = problem(
        r#"{"memory": {"attention_backend": "cudnn"}, "runtime": {"platform": "cuda"},
            "optimization": {"mixed_precision": true, "block_size": 128}}"#,
    );
    assert!(
        cudnn.starts_with(
            "`memory.attention_backend` = \"cudnn\" contradicts `optimization.block_size` = 128"
        ),
        "{cudnn}"
    );
    assert_eq!(
        problem(r#"{"optimization": {"amax_history_len": 0}}"#),
        "`optimization.amax_history_len` must be a positive integer, got 0"
    );
    assert_eq!(
        problem(r#"{"optimization": {"fp8_head": true}}"#),
        "`optimization.fp8_head` = true contradicts `optimization.use_fp8` = false: an FP8 LM head \
         needs FP8 training; set use_fp8 to true, or fp8_head to false"
    );
    assert!(
        load(r#"{"optimization": {"use_fp8": true, "fp8_head": true}}"#)
            .optimization
            .fp8_head
    );
}

#[test]
fn the_loss_chunk_is_a_positive_token_count_or_null() {
    assert_eq!(
        problem(r#"{"memory": {"loss_chunk_tokens": 0}}"#),
        "`memory.loss_chunk_tokens` must be a positive integer, got 0"
    );
    assert!(problem(r#"{"memory": {"loss_chunk_tokens": "auto"}}"#)
        .contains("`memory.loss_chunk_tokens`"));
    assert_eq!(
        load(r#"{"memory": {"loss_chunk_tokens": 4096}}"#)
            .memory
            .loss_chunk_tokens,
        Some(4096)
    );
    assert_eq!(load("{}").memory.loss_chunk_tokens, None);
}

#[test]
fn attention_backend_rules() {
    assert_eq!(
        Config::default().memory.attention_backend,
        AttentionBackend::Auto
    );
    let cuda_bf16 = r#""runtime": {"platform": "cuda"}, "optimization": {"mixed_precision": true}"#;
    let config = load(&format!(
        r#"{{"memory": {{"attention_backend": "cudnn"}}, {cuda_bf16}}}"#
    ));
    assert_eq!(config.memory.attention_backend, AttentionBackend::Cudnn);
    assert!(config.cudnn_attention_blockers().is_empty());
    let f16 = r#"{"memory": {"attention_backend": "cudnn"}, "runtime": {"platform": "cuda"},
                  "optimization": {"mixed_precision": true, "use_dynamic_scale": true}}"#;
    assert!(load(f16).cudnn_attention_blockers().is_empty());
    // "auto" may pick CUDA: the platform is checked once it is resolved (open_engine).
    let auto = load(
        r#"{"memory": {"attention_backend": "cudnn"}, "optimization": {"mixed_precision": true}}"#,
    );
    let blockers = auto.cudnn_attention_blockers();
    assert_eq!(blockers.len(), 1, "{blockers:?}");
    assert_eq!(blockers[0].key, "runtime.platform");
    assert_eq!(
        problem(
            r#"{"memory": {"attention_backend": "cudnn"}, "runtime": {"platform": "cpu"},
                "optimization": {"mixed_precision": true}}"#
        ),
        "`memory.attention_backend` = \"cudnn\" contradicts `runtime.platform` = \"cpu\": cuDNN flash \
         attention needs the XLA CUDA plugin; set runtime.platform to \"cuda\", or \
         memory.attention_backend to \"auto\" or \"xla\""
    );
    let f32_message =
        problem(r#"{"memory": {"attention_backend": "cudnn"}, "runtime": {"platform": "cuda"}}"#);
    assert!(
        f32_message.starts_with(
            "`memory.attention_backend` = \"cudnn\" contradicts `optimization.mixed_precision` = false: \
             cuDNN flash attention computes in bf16 or f16"
        ),
        "{f32_message}"
    );
    for head_dim in [60, 256] {
        let message = problem(&format!(
            r#"{{"memory": {{"attention_backend": "cudnn"}}, {cuda_bf16},
                "model": {{"hidden_dim": 768, "num_heads": 12, "head_dim": {head_dim}}}}}"#
        ));
        assert!(
            message.starts_with(&format!(
                "`memory.attention_backend` = \"cudnn\" contradicts `model.head_dim` = {head_dim}: \
                 cuDNN flash attention takes a head dim that is a multiple of 8 and at most 128"
            )),
            "{message}"
        );
    }
    // "auto" and "xla" load anywhere; blockers only matter to "auto"'s choice.
    for backend in ["auto", "xla"] {
        let config = load(&format!(
            r#"{{"memory": {{"attention_backend": "{backend}"}}}}"#
        ));
        assert_eq!(config.cudnn_attention_blockers().len(), 2, "auto and f32");
    }
    assert_eq!(
        problem(r#"{"memory": {"attention_backend": "flash"}}"#),
        "`memory.attention_backend` must be one of \"auto\", \"xla\", \"cudnn\", \"xla_per_shard\", got \"flash\""
    );
}

#[test]
fn compute_dtype_follows_the_precision_keys() {
    assert_eq!(Config::default().compute_dtype(), ComputeDtype::F32);
    assert_eq!(
        load(r#"{"tpu": {"use_bfloat16": true}}"#).compute_dtype(),
        ComputeDtype::Bf16
    );
    assert_eq!(
        load(r#"{"optimization": {"mixed_precision": true}}"#).compute_dtype(),
        ComputeDtype::Bf16
    );
    let f16 = r#"{"optimization": {"mixed_precision": true, "use_dynamic_scale": true}}"#;
    assert_eq!(load(f16).compute_dtype(), ComputeDtype::F16);
    let bf16 = r#"{"tpu": {"use_bfloat16": true}, "optimization": {"use_dynamic_scale": true}}"#;
    assert_eq!(load(bf16).compute_dtype(), ComputeDtype::Bf16);
}

#[test]
fn distillation_rules() {
    let cases = [
        (r#"{"distillation": {"alpha": 1.5}}"#, "`distillation.alpha` must be in [0, 1], got 1.5"),
        (r#"{"distillation": {"temperature": 0}}"#, "`distillation.temperature` must be a number > 0, got 0"),
        (r#"{"distillation": {"intermediate_weight": -1}}"#, "`distillation.intermediate_weight` must be a number >= 0, got -1"),
        (r#"{"distillation": {"intermediate_layer_mapping": [0, 1]}}"#,
            "`distillation.intermediate_layer_mapping` must be a list of one teacher layer per student layer \
             (model.num_layers = 4), got a list of 2 entries"),
        (r#"{"distillation": {"teacher_model": ""}}"#, r#"`distillation.teacher_model` must be a non-empty string, got """#),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
}

#[test]
fn data_rules() {
    let cases = [
        (r#"{"data": {"val_fraction": 1}}"#, "`data.val_fraction` must be in [0, 1), got 1"),
        (r#"{"data": {"val_fraction": 0}}"#,
            "`logging.eval_every` = 100 contradicts `data.val_fraction` = 0: evaluation needs held-out data; set \
             val_fraction above 0, or eval_every to 0"),
        (r#"{"data": {"source": "brown", "format": "jsonl"}}"#,
            r#"`data.source` = "brown" contradicts `data.format` = "jsonl": the built-in Brown corpus is plain text; use format "text" or point source at JSONL or CSV files"#),
        (r#"{"data": {"source": "brown"}, "datasets": {"paths": ["a"]}}"#,
            r#"`data.source` = "brown" contradicts `datasets.paths` = ["a"]: both name the training data; set data.source to null to train on the mixture, or datasets.paths to []"#),
        (r#"{"data": {"queue_size": 0}}"#, "`data.queue_size` must be a positive integer, got 0"),
        (r#"{"data": {"num_workers": 0}}"#, "`data.num_workers` must be a positive integer, got 0"),
        (r#"{"data": {"text_field": ""}}"#, r#"`data.text_field` must be a non-empty string, got """#),
        (r#"{"data": {"source": ["a", ""]}}"#, r#"`data.source[1]` must be a non-empty string, got """#),
        (r#"{"datasets": {"paths": ["a", "b"], "weights": [1]}}"#,
            "`datasets.weights` must be one weight per entry of datasets.paths (2), got 1 weights"),
        (r#"{"datasets": {"paths": ["a"], "weights": [0]}}"#, "`datasets.weights[0]` must be a number > 0, got 0"),
        (r#"{"datasets": {"paths": ["a"], "merge_strategy": "weighted"}}"#,
            r#"`datasets.weights` must be a list of one weight per path when datasets.merge_strategy is "weighted", got null"#),
        (r#"{"datasets": {"paths": ["a"], "weights": [2], "merge_strategy": "equal"}}"#,
            r#"`datasets.merge_strategy` = "equal" contradicts `datasets.weights` = [2.0]: weights are used only by "weighted" merging; remove them or set merge_strategy to "weighted""#),
    ];
    for (json, message) in cases {
        assert_eq!(problem(json), message, "for {json}");
    }
    assert_eq!(
        load(r#"{"data": {"val_fraction": 0}, "logging": {"eval_every": 0}}"#)
            .data
            .val_fraction,
        0.0
    );
    let weighted = load(r#"{"datasets": {"paths": ["a", "b"], "weights": [0.7, 0.3]}}"#);
    assert_eq!(weighted.datasets.strategy(), MergeStrategy::Weighted);
    assert!(weighted.uses_dataset_mixture());
    assert_eq!(
        load(r#"{"datasets": {"paths": ["a"]}}"#)
            .datasets
            .strategy(),
        MergeStrategy::Proportional
    );
}

#[test]
fn all_validation_problems_are_listed_together() {
    let json = r#"{"model": {"hidden_dim": 250, "dropout_rate": 2}, "training": {"warmup_steps": 1000},
                   "distillation": {"alpha": -1}, "sequence": {"pad_token_id": 99999}}"#;
    let found = problems(json);
    assert_eq!(found.len(), 5, "{found:#?}");
    let text = Config::from_json_str(json).unwrap_err().to_string();
    assert!(
        text.starts_with("invalid configuration (config text), 5 problems:"),
        "{text}"
    );
    assert_eq!(text.matches("\n  - `").count(), 5, "{text}");
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut config = Config::default();
    config.model.num_layers = 0;
    config.training.warmup_steps = 10_000;
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration (configuration), 2 problems:\n  - `model.num_layers` must be a positive integer, got 0\n  \
         - `training.warmup_steps` must be at most training.max_steps (300), got 10000"
    );
}

#[test]
fn derived_values() {
    let model = ModelConfig::default();
    assert_eq!(
        (model.head_dim(), model.kv_heads(), model.mlp_dim()),
        (32, 8, 768)
    );
    let h100 = load(r#"{"model": {"hidden_dim": 768, "num_heads": 12}}"#).model;
    assert_eq!((h100.head_dim(), h100.mlp_dim()), (64, 2048));
    let big = load(r#"{"model": {"hidden_dim": 2048, "num_heads": 16}}"#).model;
    assert_eq!(big.mlp_dim(), 5632);
    assert_eq!(big.expert_dim(), 5632);

    let moe = load(r#"{"model": {"use_moe": true, "moe_layer_frequency": 2, "num_experts": 8, "experts_per_token": 2}}"#).model;
    let moe_layers: Vec<usize> = (0..4).filter(|&i| moe.is_moe_layer(i)).collect();
    assert_eq!(moe_layers, [1, 3]);
    assert_eq!(moe.expert_capacity_for(100), 32, "ceil(1.25 * 100 * 2 / 8)");
    let fixed = load(r#"{"model": {"expert_capacity": 7}}"#).model;
    assert_eq!(fixed.expert_capacity_for(100), 7);
    assert!(
        !Config::default().model.is_moe_layer(0),
        "no MoE without use_moe"
    );

    assert_eq!(Config::default().requested_devices(), None);
    assert_eq!(
        load(r#"{"tpu": {"tpu_cores": 8}}"#).requested_devices(),
        Some(8)
    );
    assert_eq!(
        load(r#"{"tpu": {"mesh_shape": {"data": 2, "model": 2}}}"#).requested_devices(),
        Some(4)
    );
}

#[test]
fn distillation_keys_set_lists_the_non_default_ones() {
    assert!(Config::default().distillation.keys_set().is_empty());
    let config = load(
        r#"{"distillation": {"temperature": 2.0, "alpha": 0.7,
            "use_intermediate_distillation": true, "teacher_model": null}}"#,
    );
    assert_eq!(
        config.distillation.keys_set(),
        [
            "distillation.alpha = 0.7",
            "distillation.use_intermediate_distillation = true"
        ]
    );
}
