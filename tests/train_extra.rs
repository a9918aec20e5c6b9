//! More train-step behaviour: the f16 loss scale, non-finite stops, real text, chunked loss,
//! checkpoints moving between meshes.

mod common;

use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::model::RowStats;
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::{
    batch_geometry, checkpoint, run_training, sharding_plan, BatchSource, HostBatch, RunOptions,
    TrainError, Trainer, TrainingData,
};
use vishwam_hlo::{DType, Graph, TensorType};
use vishwam_mesh::Mesh;

fn client() -> &'static Client {
    common::cpu_client(4)
}

fn cache() -> CompileCache {
    common::private_cache()
}

fn tiny(extra: &[&str]) -> Config {
    let mut all: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=16",
        "training.batch_size=4",
        "training.warmup_steps=0",
        "training.max_steps=20",
        "training.learning_rate=0.01",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &all).unwrap()
}

fn trainer(cfg: &Config, devices: usize) -> Trainer {
    let plan = sharding_plan(cfg, "cpu", devices).unwrap();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    Trainer::new(cfg, engine, plan).unwrap()
}

/// One optimizer step's batch of `rows` sequences (`training.batch_size` x the batch shards
/// x `grad_accum_steps`).
fn batch(cfg: &Config, rows: usize, seed: u64) -> HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = rows * cfg.seq_len();
    let t: Vec<i32> = (0..n)
        .map(|_| rng.gen_range(0..cfg.model.vocab_size as i32))
        .collect();
    let y: Vec<i32> = t
        .iter()
        .map(|&x| (x * 7 + 3) % cfg.model.vocab_size as i32)
        .collect();
    HostBatch::from_rows(
        cfg.training.grad_accum_steps,
        cfg.seq_len(),
        &t,
        &y,
        &vec![1.0; n],
    )
    .unwrap()
}

#[test]
fn f16_compute_with_a_dynamic_loss_scale_trains() {
    let cfg = tiny(&["optimization.use_dynamic_scale=true"]);
    let mut t = trainer(&cfg, 1);
    let b = batch(&cfg, cfg.training.batch_size, 1);
    let metrics: Vec<_> = (0..15).map(|_| t.step(&b).unwrap()).collect();
    let losses: Vec<f32> = metrics.iter().map(|m| m.loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[14] < 0.5 * losses[0],
        "f16 training did not learn a fixed mapping: {losses:?}"
    );
    let state = t.state_to_host().unwrap();
    let scale = state["loss_scale"].to_vec::<f32>().unwrap()[0];
    assert!(scale.is_finite() && scale >= 1.0, "loss scale {scale}");
    // What the metrics record (the step's row of the metrics ring): the same scale.
    assert_eq!(metrics[14].loss_scale, Some(scale));
    assert_eq!(t.loss_scale().unwrap(), Some(scale));
}

#[test]
fn bf16_compute_with_a_dynamic_loss_scale_trains() {
    // The VishwamAI guide sets use_bfloat16 and use_dynamic_scale together: bf16 compute with
    // the dynamic loss scale in the train state.
    let cfg = tiny(&[
        "tpu.use_bfloat16=true",
        "optimization.use_dynamic_scale=true",
    ]);
    let mut t = trainer(&cfg, 1);
    assert!(t.layout.dynamic_scale);
    let b = batch(&cfg, cfg.training.batch_size, 1);
    let losses: Vec<f32> = (0..15).map(|_| t.step(&b).unwrap().loss).collect();
    println!("bf16 + dynamic scale: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    // Measured (x86-64, 2 cores): 4.204 -> 1.618 in 14 steps, a ratio of 0.385 falling
    // smoothly every step. The bound asks for a ratio below 0.6 (a drop of 1.68 from 4.20,
    // 65% of the measured 2.59): a healthy run clears it by about 0.9, far past what another
    // CPU's rounding of the same 14 steps moves (hundredths), while a run that does not learn
    // (every update skipped, or a loss scale left in the update) stays near a ratio of 1.
    assert!(
        losses[14] < 0.6 * losses[0],
        "bf16 training did not learn a fixed mapping: {losses:?}"
    );
    let scale = t.state_to_host().unwrap()["loss_scale"]
        .to_vec::<f32>()
        .unwrap()[0];
    // 15 good steps: the scale is where it started (it doubles after 2000).
    assert_eq!(scale, 65536.0);
}

#[test]
fn a_non_finite_update_is_skipped_and_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("logging.output_dir={}", dir.path().display());
    let cfg = tiny(&[
        "training.learning_rate=1e30",
        "training.max_grad_norm=0",
        "logging.save_every=0",
        &out,
    ]);
    struct Fixed(Config, u64);
    impl BatchSource for Fixed {
        fn next_train(&mut self) -> Result<HostBatch, TrainError> {
            self.1 += 1;
            Ok(batch(&self.0, self.0.training.batch_size, self.1))
        }
        fn eval_batches(&mut self, _: usize) -> Result<Vec<HostBatch>, TrainError> {
            Ok(vec![])
        }
        fn position(&self) -> serde_json::Value {
            serde_json::json!(self.1)
        }
        fn restore(&mut self, _: &serde_json::Value) -> Result<(), TrainError> {
            Ok(())
        }
    }
    let mut t = trainer(&cfg, 1);
    let err = run_training(&mut t, &mut Fixed(cfg.clone(), 0), &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::NonFinite(_)), "{msg}");
    assert!(
        msg.contains("is not finite") && msg.contains("not applied"),
        "{msg}"
    );
    let before = t.step_count().unwrap();
    let params = t.params_to_host().unwrap();
    assert!(
        params
            .values()
            .all(|a| a.to_f32().iter().all(|v| v.is_finite())),
        "the skipped update must not reach the parameters"
    );
    assert!(before >= 1, "at least the first update was applied");
}

#[test]
fn chunked_loss_equals_the_unchunked_loss_and_gradients_with_either_row_statistics() {
    let (n, h, v) = (24i64, 8i64, 40i64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut rand = |k: i64| -> Vec<f32> { (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect() };
    let (hs, ws) = (rand(n * h), rand(h * v));
    let targets: Vec<i32> = (0..n as i32).map(|i| (i * 13) % v as i32).collect();
    let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 0 { 0.0 } else { 1.0 }).collect();
    // With `vocab_sharded`, the head (so the logits and the row reductions) is split over the
    // vocabulary on 4 devices, as tensor parallelism splits it.
    let run = |chunk: usize, stats: RowStats, vocab_sharded: bool| -> Vec<Vec<f32>> {
        let (mesh, w_spec) = if vocab_sharded {
            (
                Mesh::new(&[("model", 4)], 4).unwrap(),
                vishwam_mesh::PartitionSpec::from_axes(&[None, Some("model")]),
            )
        } else {
            (Mesh::single(), vishwam_mesh::PartitionSpec::default())
        };
        let g = Graph::named("ce");
        let hp = g.param("h", TensorType::new(DType::F32, &[n, h]));
        let wp = g.param_sharded("w", TensorType::new(DType::F32, &[h, v]), w_spec.clone());
        let tp = g.param("t", TensorType::new(DType::I32, &[n]));
        let mp = g.param("m", TensorType::new(DType::F32, &[n]));
        let loss = vishwam::model::masked_ce_sum(&hp, &wp, &tp, &mp, chunk, None, stats);
        let grads = g.grad(&loss, &[hp.clone(), wp.clone()]).unwrap();
        let f = g
            .finish(&[("loss", &loss), ("dh", &grads[0]), ("dw", &grads[1])])
            .unwrap();
        let e = Engine::new(client().clone(), mesh, cache()).unwrap();
        let p = e.compile(&f).unwrap();
        let rep = vishwam_mesh::PartitionSpec::default();
        let put = |a: HostArray| e.put(&a, &rep).unwrap();
        let args = [
            put(HostArray::from_slice(&[n, h], &hs).unwrap()),
            e.put(&HostArray::from_slice(&[h, v], &ws).unwrap(), &w_spec)
                .unwrap(),
            put(HostArray::from_slice(&[n], &targets).unwrap()),
            put(HostArray::from_slice(&[n], &mask).unwrap()),
        ];
        let out = p.run(args.iter().map(Input::Keep).collect()).unwrap();
        out.iter()
            .map(|a| e.get(a).unwrap().to_vec::<f32>().unwrap())
            .collect()
    };
    let whole = run(24, RowStats::TwoPass, false);
    let cases = [4, 6, 12]
        .map(|c| (c, RowStats::TwoPass, false))
        .into_iter()
        .chain([24, 4, 1].map(|c| (c, RowStats::Online, false)))
        .chain([(24, RowStats::Online, true), (6, RowStats::Online, true)])
        .chain([(12, RowStats::TwoPass, true)]);
    for (chunk, stats, sharded) in cases {
        let parts = run(chunk, stats, sharded);
        for (a, b) in parts.iter().zip(&whole) {
            assert!(
                a.iter().all(|x| x.is_finite()),
                "{stats:?} chunk {chunk} vocab sharded {sharded}"
            );
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
                / scale;
            assert!(
                err < 1e-6,
                "{stats:?} chunk {chunk} vocab sharded {sharded}: relative error {err:e}"
            );
        }
    }
}

#[test]
fn a_checkpoint_from_one_mesh_resumes_on_another() {
    let dir = tempfile::tempdir().unwrap();
    // training.batch_size is per batch shard: 4 sequences per step on both meshes.
    let dp = tiny(&[
        "tpu.mesh_shape={\"data\": 2}",
        "runtime.devices=2",
        "training.batch_size=2",
    ]);
    let mut a = trainer(&dp, 2);
    for i in 0..2 {
        a.step(&batch(&dp, 4, i)).unwrap();
    }
    let saved = checkpoint::save(
        dir.path(),
        2,
        &a.state_to_host().unwrap(),
        serde_json::json!({}),
        serde_json::json!(null),
        1,
    )
    .unwrap();
    let fsdp = tiny(&[
        "tpu.device_strategy=\"fsdp\"",
        "optimization.shard_weights=true",
        "tpu.mesh_shape={\"fsdp\": 4}",
        "runtime.devices=4",
        "training.batch_size=1",
    ]);
    let mut b = trainer(&fsdp, 4);
    let state: BTreeMap<String, HostArray> = checkpoint::load(&saved).unwrap().state;
    b.load_state(&state).unwrap();
    assert_eq!(b.step_count().unwrap(), 2);
    let next = batch(&dp, 4, 7);
    let (la, lb) = (a.step(&next).unwrap().loss, b.step(&next).unwrap().loss);
    assert!(
        (la - lb).abs() <= 1e-5 * la.abs(),
        "dp x2 continues with {la}, fsdp x4 from its checkpoint with {lb}"
    );
}

#[test]
fn the_loss_falls_on_real_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&[
        "model.vocab_size=512",
        "model.hidden_dim=64",
        "model.max_seq_len=64",
        "training.batch_size=8",
        "training.max_steps=40",
        "training.warmup_steps=5",
        "logging.eval_every=0",
        "logging.save_every=0",
        &format!("logging.output_dir={}", dir.path().display()),
    ]);
    let mut t = trainer(&cfg, 1);
    let mut data = TrainingData::open(&cfg, batch_geometry(&cfg, &t.plan)).unwrap();
    let before = t.evaluate(&data.eval_batches(4).unwrap()).unwrap();
    let summary = run_training(&mut t, &mut data, &RunOptions::default()).unwrap();
    let after = summary.validation.unwrap();
    println!(
        "Brown validation loss {:.3} -> {:.3} (perplexity {:.1} -> {:.1})",
        before.loss, after.loss, before.perplexity, after.perplexity
    );
    // Measured 6.236 -> 5.260..5.263 on an AMD EPYC (XLA's default CPU target and SSE4.2)
    // and an Intel Xeon (AVX, SSE4.2): a drop of 0.97 nats against the 0.5 asked.
    assert!(
        after.loss < before.loss - 0.5,
        "validation loss {} -> {}",
        before.loss,
        after.loss
    );
}
