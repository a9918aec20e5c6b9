//! FP8 training on the CPU plugin: gradients against the f32 Candle reference, FP8 against
//! bf16 on the Brown corpus, delayed-scaling state through checkpoint and resume, and the
//! TPU v3-8 preset on 8 virtual devices.

mod common;

use common::{random_token_batch, SyntheticBatches};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::model::{init_params, FP8_ROW_COUNT};
use vishwam::reference::format_table;
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::{
    amax_history_name, batch_geometry, checkpoint, run_training, sharding_plan, BatchSource,
    RunOptions, Trainer, TrainingData, SUPPORTED,
};
use vishwam::verify::{random_batch, verify, VerifyOptions};

fn client() -> &'static Client {
    common::cpu_client(8)
}

fn cache() -> CompileCache {
    common::private_cache()
}

fn config(base: &[&str], sets: &[&str]) -> Config {
    let all: Vec<String> = base.iter().chain(sets).map(|s| s.to_string()).collect();
    Config::load(None, &all).unwrap()
}

fn engine_for(cfg: &Config, devices: usize) -> (Engine, vishwam_mesh::ShardingPlan) {
    let plan = sharding_plan(cfg, "cpu", devices).unwrap();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    (engine, plan)
}

const VERIFY_MODEL: [&str; 10] = [
    "model.vocab_size=96",
    "model.hidden_dim=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.max_seq_len=16",
    "training.batch_size=4",
    "training.warmup_steps=1",
    "training.max_steps=10",
    "training.learning_rate=0.01",
];

#[test]
fn fp8_gradients_match_the_f32_reference_within_fp8_tolerance() {
    let cases: [(&str, &[&str], usize); 5] = [
        (
            "hybrid, current, f32 compute",
            &[
                "optimization.use_fp8=true",
                "optimization.fp8_recipe=current",
            ],
            1,
        ),
        (
            "e4m3, delayed, remat",
            &[
                "optimization.use_fp8=true",
                "optimization.fp8_format=e4m3",
                "memory.gradient_checkpointing=true",
            ],
            1,
        ),
        (
            "hybrid, delayed, bf16 compute, fsdp x4",
            &[
                "optimization.use_fp8=true",
                "optimization.mixed_precision=true",
                "tpu.device_strategy=\"fsdp\"",
                "tpu.mesh_shape={\"fsdp\": 4}",
                "optimization.shard_weights=true",
                "runtime.devices=4",
                // Per batch shard: 4 sequences over the 4 fsdp shards.
                "training.batch_size=1",
            ],
            4,
        ),
        (
            "hybrid, delayed, data x model 2x2 (projections not merged)",
            &[
                "optimization.use_fp8=true",
                "tpu.device_strategy=\"hybrid\"",
                "tpu.mesh_shape={\"data\": 2, \"model\": 2}",
                "runtime.devices=4",
                // Per batch shard: 4 sequences over the 2 data shards.
                "training.batch_size=2",
            ],
            4,
        ),
        (
            "hybrid, current, bf16 compute, FP8 LM head",
            &[
                "optimization.use_fp8=true",
                "optimization.fp8_recipe=current",
                "optimization.mixed_precision=true",
                "optimization.fp8_head=true",
            ],
            1,
        ),
    ];
    for (name, sets, devices) in cases {
        let cfg = config(&VERIFY_MODEL, sets);
        let (engine, plan) = engine_for(&cfg, devices);
        let params = init_params(&cfg.model, 3);
        let opts = VerifyOptions {
            steps: 2,
            loss_chunk: None,
        };
        let batch = random_batch(&cfg, &plan, 5);
        let report = verify(&cfg, engine, plan, &params, &batch, opts).unwrap();
        let table = format_table(&report.rows);
        println!("{name}:\n{table}");
        assert!(report.passed(), "{name}:\n{table}");
        // The projections really are FP8: their gradients are far from f32 agreement.
        let worst_grad = report
            .rows
            .iter()
            .filter(|r| r.name.starts_with("grad layers"))
            .map(|r| r.max_rel)
            .fold(0.0, f64::max);
        assert!(
            worst_grad > 1e-3,
            "{name}: FP8 rounding not visible:\n{table}"
        );
    }
}

/// Trains `steps` steps on the Brown corpus; returns (mean loss of the last 10 steps,
/// validation loss, seconds, first step's loss).
fn train_on_brown(cfg: &Config, steps: usize) -> (f64, f64, f64, f64) {
    let started = std::time::Instant::now();
    let (engine, plan) = engine_for(cfg, 1);
    let mut data = TrainingData::open(cfg, batch_geometry(cfg, &plan)).unwrap();
    let mut trainer = Trainer::new(cfg, engine, plan).unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let m = trainer.step(&data.next_train().unwrap()).unwrap();
        assert!(!m.skipped && m.loss.is_finite());
        losses.push(m.loss as f64);
    }
    let tail = &losses[steps - 10..];
    let validation = trainer.evaluate(&data.eval_batches(4).unwrap()).unwrap();
    (
        tail.iter().sum::<f64>() / tail.len() as f64,
        validation.loss,
        started.elapsed().as_secs_f64(),
        losses[0],
    )
}

#[test]
fn fp8_training_on_brown_ends_within_two_percent_of_bf16() {
    let base = [
        "model.vocab_size=512",
        "model.hidden_dim=64",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.max_seq_len=64",
        "training.batch_size=8",
        // 3e-3, not 1e-2: at 1e-2 these 100 steps are chaotic and rounding alone decides
        // where they end. Measured under XLA's CPU targets (AVX-512, AVX2, AVX, SSE4.2) on an
        // AMD EPYC and an Intel Xeon: at 1e-2 the bf16 train loss ended anywhere in
        // 5.04..5.27 and fp8's in 5.05..5.27 (gaps of 3-4.5% either way, so a 2% bound passed
        // or failed by CPU); at 3e-3 bf16 ended in 5.2352..5.2379, fp8 in 5.2232..5.2418 and
        // fp8 with the FP8 head in 5.2281..5.2311: every gap below 0.3%, validation alike.
        "training.learning_rate=3e-3",
        "training.warmup_steps=10",
        "training.max_steps=100",
        "optimization.mixed_precision=true",
    ];
    let steps = 100;
    let bf16 = train_on_brown(&config(&base, &[]), steps);
    let fp8 = train_on_brown(&config(&base, &["optimization.use_fp8=true"]), steps);
    let fp8_head = train_on_brown(
        &config(
            &base,
            &["optimization.use_fp8=true", "optimization.fp8_head=true"],
        ),
        steps,
    );
    println!(
        "after {steps} steps on Brown: bf16 train loss {:.4} (last 10 steps), validation {:.4} ({:.1}s); \
         fp8 train loss {:.4}, validation {:.4} ({:.1}s); fp8 with FP8 head train loss {:.4}, \
         validation {:.4} ({:.1}s)",
        bf16.0, bf16.1, bf16.2, fp8.0, fp8.1, fp8.2, fp8_head.0, fp8_head.1, fp8_head.2
    );
    // Did it learn: the last 10 steps' mean loss is at least 10% below the first step's
    // (6.24, ln 512, at initialisation). Measured drops on both CPUs under every target
    // above: 16.0-16.3%, which rounding moves by under 0.4%; 10% leaves a margin of 6 points,
    // while a run that does not learn (no or a wrong update) stays within a point or two of
    // the start. (The old bound, a drop of more than 1.0 nat, i.e. 16.0%, had no margin.)
    for (what, run) in [("bf16", &bf16), ("fp8", &fp8), ("fp8 head", &fp8_head)] {
        assert!(
            run.0 < 0.9 * run.3,
            "{what} did not learn: {} -> {}",
            run.3,
            run.0
        );
    }
    for (what, b, f) in [
        ("train", bf16.0, fp8.0),
        ("validation", bf16.1, fp8.1),
        ("train, FP8 head", bf16.0, fp8_head.0),
        ("validation, FP8 head", bf16.1, fp8_head.1),
    ] {
        // 2%: about 7 times the largest gap measured at this learning rate (see `base`).
        let gap = (f - b).abs() / b;
        assert!(
            gap <= 0.02,
            "{what}: fp8 {f:.4} vs bf16 {b:.4} ({:.2}%)",
            100.0 * gap
        );
    }
}

/// Seeded random batches of `cfg`'s shape (on the 2 data shards of [`run`]) and vocabulary;
/// raises a stop flag after serving some (as Ctrl-C would).
fn data(cfg: &Config, stop_after: Option<(u64, Arc<AtomicBool>)>) -> SyntheticBatches {
    let (batch, seq, vocab) = (
        cfg.batch_geometry(2),
        cfg.seq_len(),
        cfg.model.vocab_size as i32,
    );
    SyntheticBatches::new(
        move |index, eval| match eval {
            false => random_token_batch(
                index,
                batch.global_batch(),
                batch.grad_accum_steps,
                seq,
                vocab,
            ),
            true => random_token_batch(index, batch.micro_batch(), 1, seq, vocab),
        },
        stop_after,
    )
}

fn delayed_config(out: &std::path::Path) -> Config {
    let dir = format!("logging.output_dir={}", out.display());
    config(
        &[
            "model.vocab_size=64",
            "model.hidden_dim=32",
            "model.num_layers=2",
            "model.num_heads=4",
            "model.num_kv_heads=2",
            "model.max_seq_len=16",
            "model.dropout_rate=0.1",
            "memory.gradient_checkpointing=true",
            "memory.attention_memory_efficient=true",
            "optimization.block_size=8",
            "training.batch_size=1",
            "training.grad_accum_steps=2",
            "training.warmup_steps=2",
            "training.max_steps=6",
            "logging.log_every=1",
            "logging.eval_every=0",
            "logging.save_every=2",
            "logging.keep_checkpoints=5",
            "optimization.use_fp8=true",
            "optimization.fp8_recipe=delayed",
            "optimization.amax_history_len=3",
            "optimization.mixed_precision=true",
        ],
        &[dir.as_str()],
    )
}

fn run(cfg: &Config, stop_after: Option<(u64, Arc<AtomicBool>)>, resume: bool) -> Vec<f32> {
    let (engine, plan) = engine_for(cfg, 2);
    let mut trainer = Trainer::new(cfg, engine, plan).unwrap();
    let mut data = data(cfg, stop_after.clone());
    let opts = RunOptions {
        resume,
        stop: stop_after.map(|(_, f)| f).unwrap_or_default(),
        ..RunOptions::default()
    };
    run_training(&mut trainer, &mut data, &opts).unwrap().losses
}

fn f32s(a: &vishwam::engine::HostArray) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

/// Delayed scaling with everything that threads state through the step: dropout, remat,
/// blocked attention, bf16 and two micro-batches (the memory_efficient preset's mix).
#[test]
fn delayed_scaling_state_survives_checkpoint_and_resume_exactly() {
    let full_dir = tempfile::tempdir().unwrap();
    let cfg = delayed_config(full_dir.path());
    let full = run(&cfg, None, false);
    assert_eq!(full.len(), 6);

    let dir = tempfile::tempdir().unwrap();
    let cfg = delayed_config(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let first = run(&cfg, Some((3, stop)), false);
    assert_eq!(first.len(), 3);
    let resumed = run(&cfg, None, true);
    let joined: Vec<f32> = first.iter().chain(&resumed).copied().collect();
    assert_eq!(
        joined, full,
        "resumed FP8 losses must equal the uninterrupted run"
    );

    // The final states agree bit for bit, amax histories included.
    let root = |d: &tempfile::TempDir| d.path().join("checkpoints");
    let load = |d: &tempfile::TempDir, step: u64| {
        checkpoint::load(&root(d).join(checkpoint::step_dir_name(step))).unwrap()
    };
    let (a, b) = (load(&full_dir, 6), load(&dir, 6));
    assert_eq!(a.state, b.state);

    // History semantics: newest first, one column per step, zeros until filled.
    let rows = FP8_ROW_COUNT;
    let history =
        |step: u64, layer: usize| f32s(&load(&full_dir, step).state[&amax_history_name(layer)]);
    let column = |h: &[f32], c: usize| (0..rows).map(|r| h[r * 3 + c]).collect::<Vec<f32>>();
    let at2 = history(2, 0);
    assert!(column(&at2, 0)
        .iter()
        .chain(&column(&at2, 1))
        .all(|&v| v > 0.0));
    assert!(column(&at2, 2).iter().all(|&v| v == 0.0));
    let (at4, at6) = (history(4, 1), history(6, 1));
    assert!(at6.iter().all(|&v| v > 0.0 && v.is_finite()));
    assert_eq!(column(&at6, 2), column(&at4, 0), "rolled by two steps");
    // Step 3 ran on the parameters of the step-2 checkpoint: its weight amaxes are theirs,
    // the largest over the projections that share an input (one GEMM, one scale).
    let params2 = load(&full_dir, 2).state;
    let all = vishwam::model::Projection::ALL;
    let amax_of = |p: &vishwam::model::Projection| {
        let w = f32s(&params2[&format!("params.layers.1.{}", p.param())]);
        w.iter().fold(0f32, |m, v| m.max(v.abs()))
    };
    for (i, p) in all.iter().enumerate() {
        let group = all.iter().filter(|q| q.input() == p.input());
        let amax = group.map(amax_of).fold(0f32, f32::max);
        assert_eq!(at4[p.weight_row() * 3 + 1], amax, "weight row {i}");
    }

    // Saturation counts are logged with every step.
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let steps = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .inspect(|l| {
            assert!(l["fp8_saturated_forward"].is_number(), "{l}");
            assert!(l["fp8_saturated_backward"].is_number(), "{l}");
        })
        .count();
    assert_eq!(steps, 6);
}

#[test]
fn tpu_v3_8_preset_with_fp8_runs_on_8_cpu_devices() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tpu_v3_8.json");
    // The preset's mesh, strategy, bf16 and FP8; fewer layers, a smaller vocabulary, batch and
    // sequence so that one step fits a CI machine.
    let sets: Vec<String> = [
        "runtime.platform=cpu",
        "runtime.devices=8",
        "model.num_layers=2",
        "model.vocab_size=1024",
        "model.max_seq_len=32",
        // Per device: 8 sequences over the 8 devices.
        "training.batch_size=1",
        "training.warmup_steps=1",
        "training.max_steps=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = Config::load(Some(&path), &sets).unwrap();
    assert!(cfg.optimization.use_fp8 && cfg.tpu.use_bfloat16);
    cfg.require_features(SUPPORTED).unwrap();
    let (engine, plan) = engine_for(&cfg, 8);
    assert_eq!(plan.mesh.num_devices(), 8);
    let mut trainer = Trainer::new(&cfg, engine, plan).unwrap();
    let batch = random_token_batch(0, 8, 1, cfg.seq_len(), cfg.model.vocab_size as i32);
    let m = trainer.step(&batch).unwrap();
    println!(
        "tpu_v3_8 (2 layers) on 8 CPU devices, one FP8 step: loss {}",
        m.loss
    );
    assert!(!m.skipped);
    assert!(
        (m.loss as f64 - (1024f64).ln()).abs() < 0.5,
        "loss {}",
        m.loss
    );
    assert_eq!(trainer.step_count().unwrap(), 1);
}

#[test]
fn delayed_scaling_takes_its_scales_from_the_history() {
    let cfg = config(&VERIFY_MODEL, &["optimization.use_fp8=true"]);
    let (engine, plan) = engine_for(&cfg, 1);
    let mut trainer = Trainer::new(&cfg, engine, plan).unwrap();
    let batch = |index| random_token_batch(index, 4, 1, cfg.seq_len(), cfg.model.vocab_size as i32);
    // A fresh run bootstraps from the tensors' own amaxes: nothing saturates.
    let first = trainer.step(&batch(0)).unwrap();
    assert_eq!(
        (first.fp8_saturated_forward, first.fp8_saturated_backward),
        (0.0, 0.0)
    );
    // Histories 1000x below the tensors: the next step scales by them and clips.
    let mut state = trainer.state_to_host().unwrap();
    for layer in 0..cfg.model.num_layers {
        let name = amax_history_name(layer);
        let small: Vec<f32> = f32s(&state[&name]).iter().map(|v| v * 1e-3).collect();
        let shape = state[&name].shape.clone();
        state.insert(
            name,
            vishwam::engine::HostArray::from_slice(&shape, &small).unwrap(),
        );
    }
    trainer.load_state(&state).unwrap();
    let m = trainer.step(&batch(1)).unwrap();
    println!(
        "saturated with histories 1000x too small: {} forward, {} backward",
        m.fp8_saturated_forward, m.fp8_saturated_backward
    );
    assert!(m.fp8_saturated_forward > 1000.0 && m.fp8_saturated_backward > 100.0);
    // Each clipped element counts once, also in the merged q/k/v and gate/up GEMMs: at most
    // every element of the FP8 forward tensors (inputs and weights) and gradients clips.
    let tokens = (cfg.training.batch_size * cfg.seq_len()) as f32;
    let (h, f) = (cfg.model.hidden_dim as f32, cfg.model.mlp_dim() as f32);
    let weights: f32 = vishwam::model::param_specs(&cfg.model)
        .iter()
        .filter(|p| {
            vishwam::model::Projection::ALL
                .iter()
                .any(|q| p.name.ends_with(q.param()))
        })
        .map(|p| p.shape.iter().product::<i64>() as f32)
        .sum();
    let layers = cfg.model.num_layers as f32;
    let inputs = layers * tokens * (3.0 * h + f);
    // Output gradients: q, k, v, the attention output, gate, up and down.
    let qkv = (cfg.model.head_dim() * (cfg.model.num_heads + 2 * cfg.model.kv_heads())) as f32;
    let outputs = layers * tokens * (qkv + h + 2.0 * f + h);
    assert!(
        m.fp8_saturated_forward <= inputs + weights,
        "forward: {} clipped of {} elements",
        m.fp8_saturated_forward,
        inputs + weights
    );
    assert!(
        m.fp8_saturated_backward <= outputs,
        "backward: {} clipped of {} elements",
        m.fp8_saturated_backward,
        outputs
    );
}
