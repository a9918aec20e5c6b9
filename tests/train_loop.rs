//! The training loop: exact resume, Ctrl-C checkpoints, metrics and evaluation.

use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::runtime::{Client, ClientSpec, CompileCache};
use vishwam::train::{run_training, BatchSource, HostBatch, RunOptions, TrainError, Trainer};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| ClientSpec::cpu(2).open().expect("open the CPU plugin"))
}

/// Deterministic random batches; can raise a stop flag after serving some batches.
struct Synthetic {
    vocab: i32,
    accum: usize,
    batch: usize,
    seq: usize,
    served: u64,
    stop_after: Option<(u64, Arc<AtomicBool>)>,
}

impl Synthetic {
    fn batch_at(&self, index: u64, rows: usize, accum: usize) -> HostBatch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(index);
        let mut tokens = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..rows {
            let s: Vec<i32> = (0..=self.seq)
                .map(|_| rng.gen_range(0..self.vocab))
                .collect();
            tokens.extend_from_slice(&s[..self.seq]);
            targets.extend_from_slice(&s[1..]);
        }
        HostBatch::from_rows(
            accum,
            self.seq,
            &tokens,
            &targets,
            &vec![1.0; rows * self.seq],
        )
        .unwrap()
    }
}

impl BatchSource for Synthetic {
    fn next_train(&mut self) -> Result<HostBatch, TrainError> {
        let b = self.batch_at(self.served, self.batch, self.accum);
        self.served += 1;
        if let Some((n, flag)) = &self.stop_after {
            if self.served >= *n {
                flag.store(true, Ordering::SeqCst);
            }
        }
        Ok(b)
    }
    fn eval_batches(&mut self, count: usize) -> Result<Vec<HostBatch>, TrainError> {
        Ok((0..count as u64)
            .map(|i| self.batch_at(1_000_000 + i, self.batch / self.accum, 1))
            .collect())
    }
    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "served": self.served })
    }
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), TrainError> {
        self.served = position["served"]
            .as_u64()
            .ok_or_else(|| TrainError::Other("bad position".into()))?;
        Ok(())
    }
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
        "training.batch_size=4",
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

fn data(cfg: &Config, stop_after: Option<(u64, Arc<AtomicBool>)>) -> Synthetic {
    Synthetic {
        vocab: 64,
        accum: 2,
        batch: cfg.training.batch_size,
        seq: cfg.seq_len(),
        served: 0,
        stop_after,
    }
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
    let joined: Vec<f32> = first
        .losses
        .iter()
        .chain(&resumed.losses)
        .copied()
        .collect();
    assert_eq!(
        joined, full.losses,
        "resumed losses must equal the uninterrupted run bit for bit"
    );
    assert_eq!(
        resumed.validation.unwrap().loss,
        full.validation.unwrap().loss
    );

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
