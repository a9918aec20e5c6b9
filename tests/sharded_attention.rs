//! Attention per shard (`model/sharded_attention.rs`): the composed attention inside the same
//! Shardy manual computations that carry the cuDNN kernels on GPUs, trained on 2, 4 and 8
//! virtual CPU devices under data parallelism, FSDP and tensor parallelism, gives the losses of
//! one device.

mod common;

use rand::{Rng, SeedableRng};
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::model::AttentionKind;
use vishwam::train::{
    attention_kind, attention_summary, build_train_step, sharding_plan, HostBatch, StepLayout,
    Trainer,
};

const DEVICES: usize = 8;
/// Sequences per optimizer step on every mesh (`training.batch_size` is per batch shard).
const GLOBAL_BATCH: usize = 8;
const STEPS: usize = 3;

fn config(extra: &[String]) -> Config {
    let mut all: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden_dim=64",
        "model.num_layers=2",
        "model.num_heads=8",
        "model.max_seq_len=16",
        "model.mlp_dim=64",
        "training.warmup_steps=0",
        "training.max_steps=20",
        "training.learning_rate=0.01",
        "memory.attention_backend=\"xla_per_shard\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(extra.iter().cloned());
    Config::load(None, &all).unwrap_or_else(|e| panic!("{all:?}: {e}"))
}

/// `strategy` over `devices` devices (one mesh axis of that size), `kv_heads` kv heads.
fn mesh_config(strategy: &str, devices: usize, kv_heads: usize) -> Config {
    let (axis, batch_shards) = match strategy {
        "data_parallel" => ("data", devices),
        "fsdp" => ("fsdp", devices),
        "tensor_parallel" => ("model", 1),
        other => panic!("no mesh for {other}"),
    };
    let mut sets = vec![
        format!("model.num_kv_heads={kv_heads}"),
        format!("training.batch_size={}", GLOBAL_BATCH / batch_shards),
        format!("runtime.devices={devices}"),
    ];
    if devices > 1 {
        sets.push(format!("tpu.device_strategy=\"{strategy}\""));
        sets.push(format!("tpu.mesh_shape={{\"{axis}\": {devices}}}"));
        if strategy == "fsdp" {
            sets.push("optimization.shard_weights=true".into());
        }
    }
    config(&sets)
}

/// Random tokens, the same for every mesh: `GLOBAL_BATCH` rows of `seq_len`.
fn batch(cfg: &Config, seed: u64) -> HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = GLOBAL_BATCH * cfg.seq_len();
    let vocab = cfg.model.vocab_size as i32;
    let t: Vec<i32> = (0..n).map(|_| rng.gen_range(0..vocab)).collect();
    let y: Vec<i32> = (0..n).map(|_| rng.gen_range(0..vocab)).collect();
    HostBatch::from_rows(1, cfg.seq_len(), &t, &y, &vec![1.0; n]).unwrap()
}

/// The losses of `STEPS` optimizer steps on one batch, and the attention summary of the run.
fn losses(cfg: &Config, devices: usize) -> (Vec<f32>, String) {
    let plan = sharding_plan(cfg, "cpu", devices).unwrap();
    let summary = attention_summary(cfg, &plan);
    let client = common::cpu_client(DEVICES).clone();
    let engine = Engine::new(client, plan.mesh.clone(), common::private_cache()).unwrap();
    let mut t = Trainer::new(cfg, engine, plan).unwrap();
    let losses = (0..STEPS)
        .map(|_| t.step(&batch(cfg, 5)).unwrap().loss)
        .collect();
    (losses, summary)
}

/// The train step's text on `devices` devices: how many manual computations it holds.
fn manual_computations(cfg: &Config, devices: usize) -> usize {
    let plan = sharding_plan(cfg, "cpu", devices).unwrap();
    let layout = StepLayout::new(cfg, &plan).unwrap();
    build_train_step(cfg, &plan, &layout)
        .unwrap()
        .to_stablehlo(&vishwam_hlo::PrintOptions::with_mesh(plan.mesh.clone()))
        .unwrap()
        .matches("sdy.manual_computation(")
        .count()
}

/// Losses on 2, 4 and 8 devices under `strategy` against one device. The tolerance: the
/// meshes compute the same f32 program, but each device sums its own rows and heads and the
/// partial sums meet in another order (an all-reduce over 2 to 8 parts), so gradients differ
/// in their last bits (f32 epsilon 1.2e-7 times the few hundred terms of the largest sums:
/// ~1e-5 relative at worst). Adam's update is invariant to the gradient's scale, so relative
/// differences pass to the parameters at the same order, and 3 steps at lr 0.01 move the loss
/// by ~1e-6 of it per step from them. A relative 1e-4 is ten times that worst case, and far
/// below what a wrong shard shows (a dropped or doubled batch slice or head changes the first
/// loss by percents; a wrong gradient changes the later ones by ~1e-2).
fn assert_meshes_match_one_device(strategy: &str, kv_heads: usize) {
    let (one, _) = losses(&mesh_config(strategy, 1, kv_heads), 1);
    assert!(one.iter().all(|l| l.is_finite()), "{one:?}");
    assert!(one[STEPS - 1] < one[0], "one device did not train: {one:?}");
    for devices in [2, 4, 8] {
        let cfg = mesh_config(strategy, devices, kv_heads);
        let plan = sharding_plan(&cfg, "cpu", devices).unwrap();
        assert!(
            matches!(attention_kind(&cfg, &plan), AttentionKind::PerShard(_)),
            "{strategy} x{devices}"
        );
        // Two per layer: the forward and the backward computation.
        assert_eq!(
            manual_computations(&cfg, devices),
            2 * 2,
            "{strategy} x{devices}"
        );
        let (many, summary) = losses(&cfg, devices);
        println!("{strategy} x{devices}: {many:?} against {one:?}; {summary}");
        for (step, (a, b)) in many.iter().zip(&one).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "{strategy} x{devices}, step {step}: {a} against one device's {b} ({summary})"
            );
        }
    }
}

#[test]
fn data_parallel_attention_per_shard_equals_one_device() {
    assert_meshes_match_one_device("data_parallel", 4);
}

#[test]
fn fsdp_attention_per_shard_equals_one_device() {
    assert_meshes_match_one_device("fsdp", 2);
}

#[test]
fn tensor_parallel_attention_per_shard_equals_one_device() {
    // 8 query and 8 kv heads split over model = 2, 4 and 8.
    assert_meshes_match_one_device("tensor_parallel", 8);
}

/// `extra` on one device, or on 4 as data 2 x model 2 (batch and heads split), with the same
/// global batch.
fn hybrid_config(devices: usize, extra: &[&str]) -> Config {
    let mut sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    sets.push(format!("runtime.devices={devices}"));
    if devices > 1 {
        sets.extend([
            "tpu.device_strategy=\"hybrid\"".into(),
            "tpu.mesh_shape={\"data\": 2, \"model\": 2}".into(),
            format!("training.batch_size={}", GLOBAL_BATCH / 2),
        ]);
    } else {
        sets.push(format!("training.batch_size={GLOBAL_BATCH}"));
    }
    config(&sets)
}

#[test]
fn blocked_attention_per_shard_equals_one_device() {
    // Blocks of 8 over the 16 positions, on hybrid data = 2 x model = 2 (batch and heads).
    let blocked = |devices: usize| {
        hybrid_config(
            devices,
            &["model.num_kv_heads=4", "optimization.block_size=8"],
        )
    };
    let cfg = blocked(4);
    let plan = sharding_plan(&cfg, "cpu", 4).unwrap();
    match attention_kind(&cfg, &plan) {
        AttentionKind::PerShard(p) => assert_eq!(p.inner, AttentionKind::Blocked(8)),
        other => panic!("{other:?}"),
    }
    let (one, _) = losses(&blocked(1), 1);
    let (four, summary) = losses(&cfg, 4);
    assert!(
        summary.contains("batch over [\"data\"], heads over [\"model\"]"),
        "{summary}"
    );
    for (a, b) in four.iter().zip(&one) {
        // As in assert_meshes_match_one_device.
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{four:?} against {one:?}");
    }
}

#[test]
fn attention_composes_where_the_heads_cannot_be_split_alike() {
    // 8 query heads split over model = 4, but 2 kv heads do not divide 4: a shard's query heads
    // would need kv heads of another shard, so attention composes under the partitioner, says
    // so, and still equals one device.
    let cfg = mesh_config("tensor_parallel", 4, 2);
    let plan = sharding_plan(&cfg, "cpu", 4).unwrap();
    assert_eq!(attention_kind(&cfg, &plan), AttentionKind::Full);
    assert_eq!(manual_computations(&cfg, 4), 0);
    let summary = attention_summary(&cfg, &plan);
    assert!(
        summary.contains("under the partitioner") && summary.contains("2 kv heads"),
        "{summary}"
    );
    let (one, _) = losses(&mesh_config("tensor_parallel", 1, 2), 1);
    let (four, _) = losses(&cfg, 4);
    for (a, b) in four.iter().zip(&one) {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{four:?} against {one:?}");
    }
}

#[test]
fn a_split_sequence_is_reported_and_composed() {
    let cfg = config(&[
        "model.num_kv_heads=4".into(),
        "training.batch_size=2".into(),
        "runtime.devices=4".into(),
        "tpu.mesh_shape={\"data\": 4}".into(),
        "tpu.logical_axis_rules=[[\"length\", \"data\"], [\"batch\", null]]".into(),
    ]);
    let plan = sharding_plan(&cfg, "cpu", 4).unwrap();
    let summary = attention_summary(&cfg, &plan);
    assert!(summary.contains("the sequence is split"), "{summary}");
    assert_eq!(attention_kind(&cfg, &plan), AttentionKind::Full);
}

#[test]
fn bench_sharded_attention_counts_the_kernels_in_the_optimised_program() {
    // On the CPU the per-shard attention is composed: the StableHLO holds one manual
    // computation per layer and pass, XLA's optimised program no cuDNN call, as expected.
    let home = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "sharded-attention",
        "--platform",
        "cpu",
        "--devices",
        "4",
        "--set",
        "memory.attention_backend=\"xla_per_shard\"",
    ];
    let sets = [
        "model.vocab_size=64",
        "model.hidden_dim=64",
        "model.num_layers=2",
        "model.num_heads=8",
        "model.num_kv_heads=4",
        "model.max_seq_len=16",
        "training.batch_size=2",
    ];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let out = common::succeeded(common::vishwam_cli(home.path(), &args));
    assert!(out.contains("composed XLA attention per shard"), "{out}");
    assert!(
        out.contains("train step: 4 sdy.manual_computation"),
        "{out}"
    );
    assert!(
        out.contains("0 __cudnn$fmhaSoftmax, 0 __cudnn$fmhaSoftmaxBackward (expected 0 and 0"),
        "{out}"
    );
    // Mocked GPUs exist only on the CUDA plugin.
    let err = common::failed(common::vishwam_cli(
        home.path(),
        &[
            "bench",
            "sharded-attention",
            "--platform",
            "cpu",
            "--mock-gpus",
            "8",
        ],
    ));
    assert!(err.contains("pass --platform cuda"), "{err}");
}

#[test]
fn gemma2_attention_per_shard_equals_one_device() {
    // Sliding windows of 5 on every other block, soft-capped scores and a query scalar: the
    // layer's AttentionSpec reaches the attention inside the manual computation.
    let gemma2 = |devices: usize| {
        hybrid_config(
            devices,
            &[
                "model.num_kv_heads=4",
                "model.sliding_window=5",
                "model.sliding_window_pattern=2",
                "model.attn_logit_softcapping=2.0",
                "model.query_pre_attn_scalar=4",
                "model.post_norms=true",
            ],
        )
    };
    let cfg = gemma2(4);
    let plan = sharding_plan(&cfg, "cpu", 4).unwrap();
    assert!(matches!(
        attention_kind(&cfg, &plan),
        AttentionKind::PerShard(_)
    ));
    let (one, _) = losses(&gemma2(1), 1);
    let (four, summary) = losses(&cfg, 4);
    // The windowed, capped attention differs from plain attention: the switches are live.
    let (plain, _) = losses(
        &config(&[
            "model.num_kv_heads=4".to_string(),
            "model.post_norms=true".into(),
            "runtime.devices=1".into(),
            format!("training.batch_size={GLOBAL_BATCH}"),
        ]),
        1,
    );
    assert!(
        (plain[1] - one[1]).abs() > 1e-4 * one[1].abs(),
        "{plain:?} {one:?}"
    );
    for (a, b) in four.iter().zip(&one) {
        // As in assert_meshes_match_one_device.
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "{four:?} against {one:?} ({summary})"
        );
    }
}
