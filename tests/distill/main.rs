//! Teacher-student distillation on the CPU plugin: the loss against the Candle reference,
//! the step inside the training loop (exact resume, metrics, sharding, precision), teacher
//! loading and its errors, the command line, and a student that learns more from a trained
//! teacher than from the labels alone.

#[path = "../common/mod.rs"]
mod common;

mod brown;
mod cli;
mod loss;
mod run;
mod teacher;

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vishwam::config::{Config, ModelConfig};
use vishwam::engine::{Engine, HostArray};
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::distill::{Teacher, TeacherSource};
use vishwam::train::{checkpoint, HostBatch, Trainer};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

/// The CPU client shared by every test of this binary (2 virtual devices).
pub fn client() -> &'static Client {
    common::cpu_client(2)
}

/// A compile cache private to this test binary, so a program compiled twice compiles once.
pub fn cache() -> CompileCache {
    common::private_cache()
}

/// A tiny student: 2 blocks, 32 wide, vocab 64, windows of 16, batches of 4.
pub fn student(overrides: &[&str]) -> Config {
    let mut all = vec![
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=16",
        "training.batch_size=4",
        "training.warmup_steps=0",
        "training.max_steps=100",
        "training.learning_rate=0.01",
        "training.weight_decay=0.0",
        "data.val_fraction=0",
        "logging.eval_every=0",
    ];
    all.extend(overrides);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    Config::load(None, &all).unwrap()
}

/// A tiny teacher architecture: 3 blocks, 48 wide (head_dim 12), vocab 64.
pub fn teacher_model() -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        hidden_dim: 48,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: Some(4),
        max_seq_len: 16,
        tie_embeddings: false,
        ..ModelConfig::default()
    }
}

/// Seeded parameters far from the init (matrices uniform in ±0.3, gains 1 ± 0.2), so the
/// teacher's distribution is far from uniform.
pub fn random_params(model: &ModelConfig, seed: u64) -> BTreeMap<String, HostArray> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    vishwam::model::param_specs(model)
        .into_iter()
        .map(|s| {
            let v: Vec<f32> = (0..s.numel())
                .map(|_| match s.shape.len() {
                    1 => 1.0 + rng.gen_range(-0.2..0.2),
                    _ => rng.gen_range(-0.3..0.3),
                })
                .collect();
            (s.name, HostArray::from_slice(&s.shape, &v).unwrap())
        })
        .collect()
}

/// A teacher held in memory.
pub fn memory_teacher(model: &ModelConfig, seed: u64) -> Teacher {
    Teacher::new(
        TeacherSource::Memory,
        model.clone(),
        random_params(model, seed),
        None,
    )
    .unwrap()
}

/// Writes `teacher` as the step-0 checkpoint of a run directory `dir` (as `vishwam import`
/// would), returning the run directory.
pub fn save_teacher_run(dir: &std::path::Path, teacher: &Teacher) -> std::path::PathBuf {
    let cfg = Config {
        model: teacher.model.clone(),
        ..Config::default()
    };
    let state: BTreeMap<String, HostArray> = teacher
        .params
        .iter()
        .map(|(k, v)| (format!("params.{k}"), v.clone()))
        .collect();
    let config: serde_json::Value = serde_json::from_str(&cfg.to_json_pretty()).unwrap();
    checkpoint::save(
        &dir.join("checkpoints"),
        0,
        &state,
        config,
        serde_json::Value::Null,
        1,
    )
    .unwrap();
    dir.to_path_buf()
}

/// The plan of `devices` CPU devices along one `strategy` axis.
pub fn plan(strategy: DeviceStrategy, axis: &str, devices: usize) -> ShardingPlan {
    let mut settings = MeshSettings::new(strategy, strategy == DeviceStrategy::Fsdp);
    settings.mesh_shape = vec![(axis.to_string(), devices as i64)];
    ShardingPlan::build(&settings, "cpu", devices).unwrap()
}

/// An engine over `plan`'s mesh on the shared client.
pub fn engine(plan: &ShardingPlan) -> Engine {
    Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap()
}

/// A single-device data-parallel trainer distilling `teacher`.
pub fn distiller(cfg: &Config, teacher: &Teacher) -> Trainer {
    let plan = plan(DeviceStrategy::DataParallel, "data", 1);
    Trainer::with_teacher(cfg, engine(&plan), plan, teacher).unwrap()
}

/// Seeded random next-token rows `[batch_size x grad_accum_steps, seq_len]` (one optimizer
/// step on one device) over the vocabulary.
pub fn random_rows(cfg: &Config, seed: u64) -> (Vec<i32>, Vec<i32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t = cfg.seq_len();
    let b = cfg.training.batch_size * cfg.training.grad_accum_steps;
    let mut tokens = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..b {
        let s: Vec<i32> = (0..=t)
            .map(|_| rng.gen_range(0..cfg.model.vocab_size as i32))
            .collect();
        tokens.extend_from_slice(&s[..t]);
        targets.extend_from_slice(&s[1..]);
    }
    (tokens, targets)
}

/// A seeded training batch with the last quarter of the last row masked.
pub fn random_batch(cfg: &Config, seed: u64) -> HostBatch {
    let (tokens, targets) = random_rows(cfg, seed);
    let t = cfg.seq_len();
    let mut mask = vec![1f32; tokens.len()];
    let n = mask.len();
    for m in &mut mask[n - t / 4..] {
        *m = 0.0;
    }
    HostBatch::from_rows(cfg.training.grad_accum_steps, t, &tokens, &targets, &mask).unwrap()
}

/// Largest `|a - b|` relative to the largest `|b|`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}
