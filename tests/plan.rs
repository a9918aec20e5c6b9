//! Planning by compiled memory: `vishwam plan` fits a memory budget less its reserve and its
//! config trains; a budget too small is a clear error; `training.batch_size` "auto" takes a
//! larger micro-batch from a larger budget; `vishwam train --target-hours` plans and trains;
//! `vishwam bench memory` prints the technique table.
//!
//! The CPU plugin reports no device memory (its `memory_stats` is Unimplemented), so a
//! plan's figure is checked against the compiled memory of the step the trainer runs (the
//! same program) instead of a measured peak.

mod common;

use common::{failed, succeeded, vishwam_cli};
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::plan::{
    plan_run, resolve_auto_batch, MemoryBudget, MemoryProbe, PlanRequest, StepTimeModel, GIB,
};
use vishwam::train::{sharding_plan, Trainer};

/// A small vocabulary on the built-in Brown corpus, so every ladder shape compiles fast.
const BASE: &[&str] = &[
    "--set",
    "model.vocab_size=512",
    "--set",
    "data.val_fraction=0.05",
    "--set",
    "training.eval_steps=2",
];

/// A roofline slow enough that a budget of seconds plans the smallest shape (no steps are
/// measured, which keeps the test's compiles few).
const ROOFLINE: &[&str] = &["--peak-tflops", "0.01", "--mfu", "1"];

fn run(args: &[&str]) -> std::process::Output {
    vishwam_cli(&vishwam::paths::vishwam_home(), args)
}

fn args<'a>(parts: &[&'a [&'a str]]) -> Vec<&'a str> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// `(first, last)` of the line `trained steps A..B: loss FIRST -> LAST, ...`.
fn losses(stdout: &str) -> (f32, f32) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("trained steps "))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    let rest = &line[line.find("loss ").expect("loss") + 5..];
    let mut parts = rest.split(" -> ");
    let first = parts.next().unwrap().trim().parse().unwrap();
    let last = parts
        .next()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (first, last)
}

#[test]
fn a_plan_for_2_gib_fits_it_less_the_reserve_and_its_config_trains() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.json");
    let out_s = out.to_str().unwrap();
    let run_dir = dir.path().join("run");
    let out_flag = ["--out", out_s];
    let plan_args = args(&[
        &[
            "plan",
            "--platform",
            "cpu",
            "--memory-gib",
            "2",
            "--target-hours",
            "0.003",
        ],
        ROOFLINE,
        BASE,
        &out_flag,
    ]);
    let table = succeeded(run(&plan_args));
    for item in [
        "model",
        "precision",
        "remat",
        "batch",
        "step time",
        "steps",
        "memory",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(item)),
            "{item} in {table}"
        );
    }
    assert!(table.contains("roofline"), "{table}");

    // The plan's step, compiled again, needs at most 2 GiB less 10%.
    let cfg = Config::load(Some(&out), &[]).unwrap();
    assert!(!cfg.training.batch_size_is_auto());
    let mut probe = MemoryProbe::new(common::client().clone(), 1, common::private_cache()).unwrap();
    let bytes = probe.bytes(&cfg).unwrap();
    assert!(bytes as f64 <= 2.0 * GIB * 0.9, "{bytes} bytes");

    // It trains through the binary, unchanged but for fewer steps, and its loss falls.
    let stdout = succeeded(run(&[
        "train",
        "--config",
        out_s,
        "--no-progress",
        "--set",
        "training.max_steps=40",
        "--set",
        "training.warmup_steps=4",
        "--set",
        &format!("logging.output_dir={}", run_dir.display()),
    ]));
    let (first, last) = losses(&stdout);
    // From about ln(512) = 6.2 at the start; 40 steps of Brown take it well below.
    assert!(last < first - 0.5, "loss {first} -> {last}");
}

#[test]
fn the_planned_figure_is_the_compiled_memory_of_the_step_the_trainer_runs() {
    let client = common::client().clone();
    let mut base = Config::load(None, &["model.vocab_size=256".to_string()]).unwrap();
    base.runtime.compile_cache = false;
    let mut probe = MemoryProbe::new(client.clone(), 1, common::private_cache()).unwrap();
    let request = PlanRequest {
        base,
        target_hours: 0.001,
        memory_reserve: 0.1,
        budget: MemoryBudget::of(&client, 1, Some(1.0), "--memory-gib").unwrap(),
        time_model: StepTimeModel::Roofline {
            peak_tflops: 0.01,
            mfu: 1.0,
        },
        dataset_tokens: None,
        sample_tokens: None,
        started: None,
    };
    let plan = plan_run(&mut probe, &request).unwrap();
    assert!(plan.step_bytes <= plan.usable_bytes);
    assert_eq!(plan.usable_bytes, (GIB * 0.9) as i64);
    let cfg = &plan.config;
    let (engine, sharding) = probe.engine_for(cfg).unwrap();
    let mut trainer = Trainer::new(cfg, engine, sharding).unwrap();
    assert_eq!(
        trainer.program.memory_stats().unwrap().total_bytes(),
        plan.step_bytes
    );
    // And the step runs in it.
    let rows = cfg.training.batch_size * cfg.training.grad_accum_steps;
    let n = rows * cfg.seq_len();
    let tokens: Vec<i32> = (0..n as i32).map(|i| (i * 7919) % 256).collect();
    let batch = vishwam::train::HostBatch::from_rows(
        cfg.training.grad_accum_steps,
        cfg.seq_len(),
        &tokens,
        &tokens,
        &vec![1.0; n],
    )
    .unwrap();
    assert!(trainer.step(&batch).unwrap().loss.is_finite());
}

#[test]
fn a_budget_too_small_for_the_smallest_model_is_a_clear_error() {
    let plan_args = args(&[
        &[
            "plan",
            "--platform",
            "cpu",
            "--memory-gib",
            "0.001",
            "--target-hours",
            "0.003",
        ],
        ROOFLINE,
        BASE,
    ]);
    let stderr = failed(run(&plan_args));
    assert!(
        stderr.contains("the smallest model")
            && stderr.contains("GiB per device by its compiled step")
            && stderr.contains("--memory-gib"),
        "{stderr}"
    );
}

/// The per-shard micro-batch "auto" picks for `cfg` within `gib` GiB.
fn auto_batch(cfg: &Config, gib: f64) -> (usize, i64, i64) {
    let mut cfg = cfg.clone();
    cfg.training.memory_gib = Some(gib);
    let sharding = sharding_plan(&cfg, "cpu", 1).unwrap();
    let engine = Engine::new(
        common::client().clone(),
        sharding.mesh.clone(),
        common::private_cache(),
    )
    .unwrap();
    let (resolved, auto) = resolve_auto_batch(&cfg, &engine, &sharding).unwrap();
    assert_eq!(resolved.training.batch_size, auto.per_shard);
    assert!(!resolved.training.batch_size_is_auto());
    (auto.per_shard, auto.step_bytes, auto.usable_bytes)
}

#[test]
fn batch_size_auto_takes_a_larger_micro_batch_from_a_larger_budget() {
    let sets: Vec<String> = [
        "model.vocab_size=256",
        "model.hidden_dim=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.max_seq_len=32",
        "training.batch_size=auto",
        "runtime.platform=cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = Config::load(None, &sets).unwrap();
    // Budgets from the step's own memory at 1 and 2 sequences, so that the test does not
    // depend on how this machine's XLA lays out buffers.
    let mut probe = MemoryProbe::new(common::client().clone(), 1, common::private_cache()).unwrap();
    let mut at = |b: usize| {
        let mut c = cfg.clone();
        c.training.batch_size = b;
        probe.bytes(&c).unwrap()
    };
    let (one, two) = (at(1), at(2));
    let per_sequence = (two - one).max(1);
    let small = (two + per_sequence / 2) as f64 / 0.9 / GIB;
    let large = (two + 4 * per_sequence) as f64 / 0.9 / GIB;
    let (b_small, bytes_small, usable_small) = auto_batch(&cfg, small);
    let (b_large, bytes_large, usable_large) = auto_batch(&cfg, large);
    assert!(bytes_small <= usable_small && bytes_large <= usable_large);
    assert!(b_small >= 2, "{b_small}");
    assert!(b_large > b_small, "{b_large} <= {b_small}");
}

#[test]
fn train_target_hours_plans_then_trains() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let output_dir = format!("logging.output_dir={}", run_dir.display());
    let output_flag = ["--set", output_dir.as_str()];
    let train_args = args(&[
        &[
            "train",
            "--no-progress",
            "--platform",
            "cpu",
            "--memory-gib",
            "1",
        ],
        &["--target-hours", "0.002"],
        ROOFLINE,
        BASE,
        &output_flag,
    ]);
    let out = run(&train_args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = succeeded(out);
    assert!(stdout.contains("trained steps 0.."), "{stdout}\n{stderr}");
    assert!(run_dir.join("metrics.jsonl").exists());
    // A planning flag without a budget would change nothing: refused.
    let stderr = failed(run(&["train", "--platform", "cpu", "--memory-gib", "1"]));
    assert!(
        stderr.contains("--memory-gib") && stderr.contains("--target-hours"),
        "{stderr}"
    );
}

/// `bench train --compare-loops` runs both loops on one compiled step, round by round, and
/// prints their medians; its flags are refused where they would do nothing.
#[test]
fn bench_train_compares_the_waiting_and_pipelined_loops() {
    let mut bench = vec![
        "bench",
        "train",
        "--platform",
        "cpu",
        "--steps",
        "3",
        "--tokens",
        "zipf",
    ];
    for set in [
        "model.vocab_size=128",
        "model.hidden_dim=32",
        "model.num_layers=1",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=16",
        "training.batch_size=2",
        "logging.log_every=2",
    ] {
        bench.extend(["--set", set]);
    }
    let compare = args(&[&bench, &["--compare-loops", "--rounds", "2"]]);
    let stdout = succeeded(run(&compare));
    for expected in [
        "round 1: waiting ",
        "round 2: waiting ",
        "loops: waiting ",
        "(medians of 2 rounds): pipelined runs at ",
        "(pipelined, median of 2 rounds)",
    ] {
        assert!(stdout.contains(expected), "{expected} in {stdout}");
    }
    let stderr = failed(run(&args(&[&bench, &["--rounds", "2"]])));
    assert!(stderr.contains("--compare-loops"), "{stderr}");
    let stderr = failed(run(&args(&[&bench, &["--compare-loops", "--rounds", "0"]])));
    assert!(stderr.contains("--rounds must be at least 1"), "{stderr}");
    let stderr = failed(run(&args(&[&compare, &["--pipeline"]])));
    assert!(
        stderr.contains("--pipeline") && stderr.contains("--compare-loops"),
        "{stderr}"
    );
}

#[test]
fn bench_memory_prints_each_technique_and_its_reduction() {
    let stdout = succeeded(run(&[
        "bench",
        "memory",
        "--platform",
        "cpu",
        "--layers",
        "1",
        "--hidden",
        "32",
        "--heads",
        "4",
        "--vocab",
        "128",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
    ]));
    for technique in vishwam::plan::techniques::TECHNIQUES {
        assert!(stdout.contains(technique), "{technique} in {stdout}");
    }
    let row = stdout
        .lines()
        .find(|l| l.starts_with('1'))
        .unwrap_or_else(|| panic!("no row in {stdout}"));
    assert_eq!(row.matches("%)").count(), 4, "{row}");
}

#[test]
fn candidates_are_timed_on_the_training_data_tokens() {
    let mut cfg = Config::load(
        None,
        &[
            "model.vocab_size=512",
            "model.num_layers=1",
            "model.hidden_dim=32",
            "model.num_heads=2",
            "model.num_kv_heads=1",
            "model.max_seq_len=32",
            "training.batch_size=2",
        ]
        .map(String::from),
    )
    .unwrap();
    cfg.runtime.compile_cache = false;
    let (_, _, prepared) = vishwam::train::prepare_data(&cfg).unwrap();
    let sample = vishwam::plan::sample_tokens(&prepared);
    let shard = &prepared.shards()[0];
    assert_eq!(
        sample.len() as u64,
        shard.num_tokens().min(vishwam::plan::speed::SAMPLE_TOKENS)
    );
    let mut head = vec![0; 16];
    shard.copy_tokens(0, &mut head);
    assert_eq!(&sample[..16], &head[..]);
    assert!(sample.iter().all(|&t| (0..512).contains(&t)));

    let client = common::client().clone();
    let mut probe = MemoryProbe::new(client, 1, common::private_cache()).unwrap();
    let (on_text, seconds) =
        vishwam::plan::speed::measure(&mut probe, &cfg, Some(&sample)).unwrap();
    assert!(seconds > 0.0 && on_text.flops_per_second > 0.0);
    assert!(
        on_text.source.contains("the training data's tokens"),
        "{}",
        on_text.source
    );
    let (uniform, _) = vishwam::plan::speed::measure(&mut probe, &cfg, None).unwrap();
    assert!(
        uniform.source.contains("uniform random tokens"),
        "{}",
        uniform.source
    );
}
