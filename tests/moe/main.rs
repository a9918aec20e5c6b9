//! Mixture-of-Experts layers on the CPU plugin: routing and capacity, dispatch/combine
//! gradients, the dense special case, load balancing, expert parallelism and metrics.

#[path = "../common/mod.rs"]
mod common;

mod generate;
mod objective;
mod reference;
mod routing;
mod run;
mod training;

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::{HostBatch, Trainer};
use vishwam_hlo::Func;
use vishwam_mesh::{DeviceStrategy, Mesh, MeshSettings, PartitionSpec, ShardingPlan};

/// The CPU client shared by every test of this binary (4 virtual devices).
pub fn client() -> &'static Client {
    common::cpu_client(4)
}

/// A compile cache private to this test binary, so a program compiled twice compiles once.
pub fn cache() -> CompileCache {
    common::private_cache()
}

/// A tiny MoE model: 2 blocks, both MoE, 4 experts, top-2.
pub fn tiny(overrides: &[&str]) -> Config {
    let mut all = vec![
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=16",
        "model.mlp_dim=64",
        "model.use_moe=true",
        "model.num_experts=4",
        "model.experts_per_token=2",
        "model.expert_dim=32",
        "training.batch_size=4",
        "training.warmup_steps=0",
        "training.max_steps=100",
        "training.learning_rate=0.01",
        "training.weight_decay=0.0",
    ];
    all.extend(overrides);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    Config::load(None, &all).unwrap()
}

/// A trainer over `devices` CPU devices with `mesh` under `strategy`.
pub fn trainer(cfg: &Config, mesh: &[(&str, i64)], devices: usize) -> Trainer {
    let mut settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
    settings.mesh_shape = mesh.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    let plan = ShardingPlan::build(&settings, "cpu", devices).unwrap();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    Trainer::new(cfg, engine, plan).unwrap()
}

/// How many ways `mesh` over `devices` CPU devices splits a batch.
pub fn batch_shards(mesh: &[(&str, i64)], devices: usize) -> usize {
    let mut settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
    settings.mesh_shape = mesh.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    ShardingPlan::build(&settings, "cpu", devices)
        .unwrap()
        .batch_shards()
}

/// A single-device trainer.
pub fn trainer1(cfg: &Config) -> Trainer {
    trainer(cfg, &[("data", 1)], 1)
}

/// Seeded random next-token batches over the whole vocabulary.
pub fn random_batch(cfg: &Config, seed: u64) -> HostBatch {
    batch_from(cfg, seed, |rng| {
        rng.gen_range(0..cfg.model.vocab_size as i32)
    })
}

/// A batch of one optimizer step on one device (`batch_size` x `grad_accum_steps` sequences)
/// whose tokens come from `draw`.
pub fn batch_from(
    cfg: &Config,
    seed: u64,
    mut draw: impl FnMut(&mut rand_chacha::ChaCha8Rng) -> i32,
) -> HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let t = cfg.seq_len();
    let b = cfg.training.batch_size * cfg.training.grad_accum_steps;
    let seqs: Vec<Vec<i32>> = (0..b)
        .map(|_| (0..=t).map(|_| draw(&mut rng)).collect())
        .collect();
    let tokens: Vec<i32> = seqs.iter().flat_map(|s| s[..t].to_vec()).collect();
    let targets: Vec<i32> = seqs.iter().flat_map(|s| s[1..].to_vec()).collect();
    HostBatch::from_rows(
        cfg.training.grad_accum_steps,
        t,
        &tokens,
        &targets,
        &vec![1.0; b * t],
    )
    .unwrap()
}

/// Host arrays of the parameters (by name) of a trainer.
pub fn params(t: &Trainer) -> BTreeMap<String, Vec<f32>> {
    t.params_to_host()
        .unwrap()
        .into_iter()
        .map(|(n, a)| (n, a.to_vec::<f32>().unwrap()))
        .collect()
}

/// Compiles `func` on one CPU device and runs it on host arrays (replicated).
pub fn run_func(func: &Func, inputs: &[HostArray]) -> Vec<HostArray> {
    let mesh = Mesh::new(&[("data", 1)], 1).unwrap();
    let engine = Engine::new(client().clone(), mesh, cache()).unwrap();
    let program = engine.compile(func).unwrap();
    let arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &PartitionSpec::default()).unwrap())
        .collect();
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    out.iter().map(|a| engine.get(a).unwrap()).collect()
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
