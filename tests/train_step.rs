//! The compiled train step on tiny models.

use rand::{Rng, SeedableRng};
use std::sync::OnceLock;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::runtime::{Client, ClientSpec, CompileCache};
use vishwam::train::{HostBatch, Trainer};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| ClientSpec::cpu(4).open().expect("open the CPU plugin"))
}

fn tiny(overrides: &[&str]) -> Config {
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
    ];
    all.extend(overrides);
    Config::load(None, &all.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn trainer(
    cfg: &Config,
    strategy: DeviceStrategy,
    mesh: &[(&str, i64)],
    devices: usize,
) -> Trainer {
    let mut settings = MeshSettings::new(strategy, strategy == DeviceStrategy::Fsdp);
    settings.mesh_shape = mesh.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    let plan = ShardingPlan::build(&settings, "cpu", devices).unwrap();
    let engine = Engine::new(
        client().clone(),
        plan.mesh.clone(),
        CompileCache::disabled(),
    )
    .unwrap();
    Trainer::new(cfg, engine, plan).unwrap()
}

fn random_batch(cfg: &Config, seed: u64) -> HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (b, t) = (cfg.training.batch_size, cfg.seq_len());
    let seqs: Vec<Vec<i32>> = (0..b)
        .map(|_| {
            (0..=t)
                .map(|_| rng.gen_range(0..cfg.model.vocab_size as i32))
                .collect()
        })
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

#[test]
fn overfitting_one_batch_drives_the_loss_near_zero() {
    let cfg = tiny(&[]);
    let mut t = trainer(&cfg, DeviceStrategy::DataParallel, &[("data", 1)], 1);
    let batch = random_batch(&cfg, 0);
    let first = t.step(&batch).unwrap();
    assert!(
        (first.loss - (64f32).ln()).abs() < 0.3,
        "initial loss {} should be near ln(64)",
        first.loss
    );
    let mut last = first;
    for _ in 0..80 {
        last = t.step(&batch).unwrap();
    }
    println!("loss {} -> {}", first.loss, last.loss);
    assert!(last.loss < 0.05, "loss after 81 steps: {}", last.loss);
    assert_eq!(t.step_count().unwrap(), 81);
}
