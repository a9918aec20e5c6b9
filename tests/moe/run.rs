//! A short MoE run through the training loop: MoE metrics in the JSONL, the checkpoint, and
//! `vishwam inspect --experts` on it (library and command line).

use super::{cache, client, random_batch, tiny};
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::train::{
    checkpoint, expert_utilisation, run_training, BatchSource, HostBatch, RunOptions, TrainError,
    Trainer,
};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

/// Seeded random batches.
struct Random {
    cfg: Config,
    served: u64,
}

impl BatchSource for Random {
    fn next_train(&mut self) -> Result<HostBatch, TrainError> {
        self.served += 1;
        Ok(random_batch(&self.cfg, self.served))
    }
    fn eval_batches(&mut self, _count: usize) -> Result<Vec<HostBatch>, TrainError> {
        Ok(vec![])
    }
    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "served": self.served })
    }
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), TrainError> {
        self.served = position["served"].as_u64().unwrap_or(0);
        Ok(())
    }
}

#[test]
fn metrics_checkpoint_and_inspect_report_expert_utilisation() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("logging.output_dir={}", dir.path().display());
    let cfg = tiny(&[
        "model.use_lossfreebalance=true",
        "model.capacity_factor=1.0",
        "model.moe_layer_frequency=2",
        "training.max_steps=3",
        "logging.log_every=1",
        "data.val_fraction=0",
        "logging.eval_every=0",
        &out,
    ]);
    let plan = ShardingPlan::build(
        &MeshSettings::new(DeviceStrategy::DataParallel, false),
        "cpu",
        1,
    )
    .unwrap();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    let mut trainer = Trainer::new(&cfg, engine, plan.clone()).unwrap();
    let mut data = Random {
        cfg: cfg.clone(),
        served: 0,
    };
    let summary = run_training(&mut trainer, &mut data, &RunOptions::default()).unwrap();
    assert_eq!(summary.steps, 3);

    // Every logged step carries the MoE metrics of the one MoE block (block 1 of 2).
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l.get("loss").is_some())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let moe = &line["moe"];
        assert_eq!(moe["layers"], serde_json::json!([1]));
        let row: Vec<f64> = serde_json::from_value(moe["utilisation"][0].clone()).unwrap();
        assert_eq!(row.len(), 4);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
        let dropped = moe["dropped_fraction"][0].as_f64().unwrap();
        assert!((0.0..1.0).contains(&dropped));
        assert!(moe["aux_loss"][0].as_f64().unwrap() >= 0.99);
        assert!(moe["bias_norm"][0].as_f64().unwrap() > 0.0);
    }
    println!("last metrics line: {}", lines[2]);

    // The checkpoint's parameters route random tokens as the library reports them.
    let ck_dir = summary.checkpoint.unwrap();
    let ck = checkpoint::load(&ck_dir).unwrap();
    let params = ck
        .state
        .iter()
        .filter_map(|(n, a)| Some((n.strip_prefix("params.")?.to_string(), a.clone())))
        .collect();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    let batches: Vec<Vec<i32>> = (0..2)
        .map(|i| (0..64).map(|j| (i * 7 + j * 13) % 64).collect())
        .collect();
    let m = expert_utilisation(&engine, &plan, &cfg, &params, &batches).unwrap();
    assert_eq!(m.layers, vec![1]);
    assert!((m.utilisation[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(m.bias_norm.as_ref().unwrap()[0] > 0.0);

    // The command line prints one line per MoE block.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vishwam"))
        .args([
            "inspect",
            "--experts",
            "--random",
            "--batches",
            "2",
            "--checkpoint",
        ])
        .arg(&ck_dir)
        .env("VISHWAM_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("step 3"), "{stdout}");
    assert!(stdout.contains("  block 1: ["), "{stdout}");
    assert!(stdout.contains("bias norm"), "{stdout}");
}
