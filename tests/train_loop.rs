//! The training loop: exact resume, Ctrl-C checkpoints, metrics and evaluation.

mod common;

use common::{random_token_batch, SyntheticBatches};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::{run_training, RunOptions, Trainer};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

fn client() -> &'static Client {
    common::cpu_client(2)
}

fn config(out: &std::path::Path, extra: &[String]) -> Config {
    let mut all: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=1",
        "model.max_seq_len=16",
        "model.dropout_rate=0.1",
        "training.batch_size=1",
        "training.grad_accum_steps=2",
        "training.warmup_steps=2",
        "training.max_steps=6",
        "training.eval_steps=2",
        "logging.log_every=1",
        "logging.eval_every=3",
        "logging.save_every=2",
        "logging.profile_every=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(format!("logging.output_dir={}", out.display()));
    all.extend(extra.iter().cloned());
    Config::load(None, &all).unwrap()
}

fn trainer(cfg: &Config) -> Trainer {
    let mut settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
    settings.mesh_shape = vec![("data".into(), 2)];
    let plan = ShardingPlan::build(&settings, "cpu", 2).unwrap();
    let engine = Engine::new(
        client().clone(),
        plan.mesh.clone(),
        CompileCache::disabled(),
    )
    .unwrap();
    Trainer::new(cfg, engine, plan).unwrap()
}

/// Random batches of 64-token vocabulary in 2 micro-batches of `batch_size` x 2 data shards;
/// evaluation micro-batches hold half the rows.
fn data(cfg: &Config, stop_after: Option<(u64, Arc<AtomicBool>)>) -> SyntheticBatches {
    let accum = 2;
    let (batch, seq) = (cfg.training.batch_size * 2 * accum, cfg.seq_len());
    SyntheticBatches::new(
        move |index, eval| match eval {
            false => random_token_batch(index, batch, accum, seq, 64),
            true => random_token_batch(index, batch / accum, 1, seq, 64),
        },
        stop_after,
    )
}

#[test]
fn interrupted_and_resumed_run_reproduces_the_uninterrupted_losses_exactly() {
    let full_dir = tempfile::tempdir().unwrap();
    let cfg = config(full_dir.path(), &[]);
    let mut t = trainer(&cfg);
    let full = run_training(&mut t, &mut data(&cfg, None), &RunOptions::default()).unwrap();
    assert_eq!(full.losses.len(), 6);
    assert!(full.validation.is_some());

    // The same run, stopped after 3 steps as Ctrl-C would stop it, then resumed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions {
        stop: stop.clone(),
        ..RunOptions::default()
    };
    let mut t = trainer(&cfg);
    let first = run_training(&mut t, &mut data(&cfg, Some((3, stop))), &opts).unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps, 3);
    assert!(first
        .checkpoint
        .as_ref()
        .unwrap()
        .ends_with("step_00000003"));

    let mut t = trainer(&cfg);
    let resumed = run_training(
        &mut t,
        &mut data(&cfg, None),
        &RunOptions {
            resume: true,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.start_step, 3);
    common::assert_resumed_exactly(&first, &resumed, &full);

    // Metrics: one JSON object per line with the documented fields.
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    for key in [
        "lr",
        "grad_norm",
        "tokens_per_second",
        "step_time",
        "device_memory_bytes",
    ] {
        assert!(
            lines[0].get(key).is_some(),
            "metrics lack {key}: {}",
            lines[0]
        );
    }
    assert!(lines.iter().any(|l| l.get("val_perplexity").is_some()));
    assert!(lines
        .iter()
        .any(|l| l["profile"]["data_wait_ms"].is_number()));
}

#[test]
fn resuming_with_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &["training.max_steps=2".into()]);
    run_training(
        &mut trainer(&cfg),
        &mut data(&cfg, None),
        &RunOptions::default(),
    )
    .unwrap();
    let other = config(
        dir.path(),
        &["training.max_steps=2".into(), "model.hidden_dim=64".into()],
    );
    let err = run_training(
        &mut trainer(&other),
        &mut data(&other, None),
        &RunOptions {
            resume: true,
            ..RunOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("different `model` section"), "{err}");
}

#[test]
fn a_deadline_ends_the_run_with_a_checkpoint_and_an_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &["logging.save_every=0".into()]);
    let mut t = trainer(&cfg);
    // The third training batch arrives only after the deadline has passed, so the loop
    // starts no step after it: at most 3 of the 6 steps run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let accum = 2;
    let (batch, seq) = (cfg.training.batch_size * 2 * accum, cfg.seq_len());
    let mut data = SyntheticBatches::new(
        move |index, eval| {
            if !eval && index == 2 {
                std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
            }
            match eval {
                false => random_token_batch(index, batch, accum, seq, 64),
                true => random_token_batch(index, batch / accum, 1, seq, 64),
            }
        },
        None,
    );
    let opts = RunOptions {
        deadline: Some(deadline),
        ..RunOptions::default()
    };
    let summary = run_training(&mut t, &mut data, &opts).unwrap();
    assert!(summary.reached_deadline);
    assert!(!summary.interrupted);
    assert!((1..=3).contains(&summary.steps), "{} steps", summary.steps);
    let saved = format!("step_{:08}", summary.steps);
    assert!(summary.checkpoint.as_ref().unwrap().ends_with(&saved));
    assert!(summary.validation.is_some());
}

/// The loop launches steps ahead of reading their metrics (reading every `log_every` steps,
/// and at least every 32, the size of the metrics ring). Its losses and final parameters must
/// be bitwise those of a step-by-step loop, and of the loop with `runtime.launch_ahead` off.
#[test]
fn the_pipelined_loop_matches_a_step_by_step_loop_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let config_with = |launch_ahead: bool| {
        config(
            dir.path(),
            &[
                "training.max_steps=45".into(),
                "logging.log_every=40".into(),
                "logging.eval_every=0".into(),
                "logging.save_every=0".into(),
                "logging.profile_every=0".into(),
                "data.val_fraction=0".into(),
                format!("runtime.launch_ahead={launch_ahead}"),
            ],
        )
    };
    // Each run of the loop, launching ahead or (`runtime.launch_ahead: false`) waiting for
    // every step: its trainer and its losses.
    let run = |launch_ahead: bool| {
        let cfg = config_with(launch_ahead);
        let mut t = trainer(&cfg);
        let summary = run_training(&mut t, &mut data(&cfg, None), &RunOptions::default()).unwrap();
        assert_eq!(summary.steps, 45);
        (t, summary.losses)
    };
    let (pipelined, pipelined_losses) = run(true);
    let (waiting, waited_losses) = run(false);

    let cfg = config_with(true);
    let mut stepped = trainer(&cfg);
    let mut source = data(&cfg, None);
    let mut losses = Vec::new();
    for _ in 0..45 {
        let batch = vishwam::train::BatchSource::next_train(&mut source).unwrap();
        losses.push(stepped.step(&batch).unwrap().loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&pipelined_losses), bits(&losses));
    assert_eq!(bits(&waited_losses), bits(&losses));
    let params = stepped.params_to_host().unwrap();
    assert_eq!(pipelined.params_to_host().unwrap(), params);
    assert_eq!(waiting.params_to_host().unwrap(), params);
}
