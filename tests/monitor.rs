//! Resource monitoring and token accuracy: a tiny run through the binary whose logged records
//! carry device memory (or its documented absence on the CPU plugin), host RSS, the loader's
//! queue depth and validation accuracy; `vishwam eval` reporting accuracy; and the accuracy
//! count of both evaluation programs against an argmax on the host over the Candle reference
//! model's logits.

mod common;

use common::{cpu_client, private_cache, succeeded, vishwam_cli};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::model::{self, ForwardOptions};
use vishwam::reference::{ReferenceDtype, ReferenceModel};
use vishwam::train::{state::param_leaf, HostBatch, Trainer};
use vishwam_mesh::{DeviceStrategy, Mesh, MeshSettings, PartitionSpec, ShardingPlan};

/// The tiny Brown-corpus run of tests/finetune.rs, logging every step.
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.eval_steps=2",
    "data.val_fraction=0.05",
    "logging.log_every=1",
    "runtime.compile_cache=false",
];

fn records(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logged_steps_record_resources_and_validation_records_accuracy() {
    let root = tempfile::tempdir().unwrap();
    let run_dir = root.path().join("run");
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .map(|s| s.to_string())
        .chain([
            "training.max_steps=4".into(),
            "logging.eval_every=2".into(),
            format!("logging.output_dir={}", run_dir.display()),
        ])
    {
        args.extend(["--set".to_string(), s]);
    }
    // At info level, to see what the monitor says once.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::vishwam_command(&vishwam::paths::vishwam_home(), &args)
        .env("VISHWAM_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = succeeded(out);
    assert!(stdout.contains("token accuracy"), "{stdout}");
    // The summary's share of the loop spent logging: logged steps after the first were timed,
    // so it is above 0, and it is a part of the loop.
    let share: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("logging and monitoring: "))
        .and_then(|l| l.split('%').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no logging share in {stdout}"));
    assert!(share > 0.0 && share < 100.0, "{stdout}");

    let all = records(&run_dir);
    let steps: Vec<&serde_json::Value> = all.iter().filter(|r| r.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 4, "log_every=1 logs every step");
    let said = log.matches("reports no memory statistics").count();
    for r in &steps {
        // The CPU plugin reports no allocator statistics: the record says null, and the log
        // says so once; a plugin that reports them gives each device's bytes in use.
        match &r["memory"] {
            serde_json::Value::Null => assert_eq!(said, 1, "said once, not every step: {log}"),
            memory => assert!(memory["device0"]["in_use"].as_i64().unwrap() > 0, "{r}"),
        }
        assert!(r["device_memory_bytes"].as_i64().unwrap() > 0, "{r}");
        assert!(r.get("gpu").is_none(), "no GPU section off CUDA: {r}");
        if cfg!(target_os = "linux") {
            assert!(r["host_rss_bytes"].as_u64().unwrap() > 1 << 20, "{r}");
        }
        // data.queue_size 8 over 2 workers: at most 8 ready batches.
        assert!(r["data_queue_depth"].as_u64().unwrap() <= 8, "{r}");
        // The step's time broken down; it adds up to at most the step time plus the wait.
        let parts = &r["step_seconds"];
        let sum: f64 = ["host_to_device", "compute", "device_to_host"]
            .iter()
            .map(|p| parts[p].as_f64().unwrap())
            .sum();
        assert!(parts["data_wait"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(
            sum > 0.0 && sum <= r["step_time"].as_f64().unwrap() * 1.001,
            "{r}"
        );
        // The batch's token accuracy, a fraction of its tokens.
        let accuracy = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{r}");
        // No known peak for a CPU, so no MFU; f32 compute, so no loss scale.
        assert!(
            r.get("mfu").is_none() && r.get("loss_scale").is_none(),
            "{r}"
        );
    }
    let validation: Vec<&serde_json::Value> =
        all.iter().filter(|r| r.get("val_loss").is_some()).collect();
    assert_eq!(
        validation
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 4],
        "eval_every=2 and the final evaluation"
    );
    for r in validation {
        let accuracy = r["val_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy), "{r}");
    }

    let home = vishwam::paths::vishwam_home();
    let run = run_dir.to_string_lossy().into_owned();
    let eval = |json: bool| {
        let mut a = vec!["eval", "--checkpoint", &run, "--eval_text"];
        a.push("The jury said that the election was conducted with integrity.");
        if json {
            a.push("--json");
        }
        succeeded(vishwam_cli(&home, &a))
    };
    let v: serde_json::Value = serde_json::from_str(eval(true).trim()).unwrap();
    let (accuracy, correct, tokens) = (
        v["accuracy"].as_f64().unwrap(),
        v["correct"].as_f64().unwrap(),
        v["tokens"].as_f64().unwrap(),
    );
    assert!(
        tokens >= 1.0 && correct <= tokens && correct.fract() == 0.0,
        "{v}"
    );
    assert_eq!(accuracy, correct / tokens, "{v}");
    let text = eval(false);
    assert!(text.contains("token accuracy"), "{text}");
}

/// A dense tiny model in f32 (the default precision).
fn tiny_config() -> Config {
    let overrides: Vec<String> = [
        "model.vocab_size=64",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.max_seq_len=16",
        "model.mlp_dim=64",
        "training.batch_size=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::load(None, &overrides).unwrap()
}

/// Parameters far from the init (uniform ± 0.5, gains 1 ± 0.2), so the logits are spread
/// and the argmax is decided by clear margins.
fn random_params(cfg: &Config, seed: u64) -> BTreeMap<String, HostArray> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    model::param_specs(&cfg.model)
        .into_iter()
        .map(|s| {
            let v: Vec<f32> = (0..s.numel())
                .map(|_| match s.init {
                    model::Init::Ones => 1.0 + rng.gen_range(-0.2..0.2),
                    _ => rng.gen_range(-0.5..0.5),
                })
                .collect();
            (s.name, HostArray::from_slice(&s.shape, &v).unwrap())
        })
        .collect()
}

/// The accuracy count of the training evaluation (`Trainer::evaluate`), of the train step's
/// `accuracy` metric (measured before its update) and of generation's evaluation program
/// (`generate::build_eval`, used by `vishwam eval`) equals the count of
/// masked positions whose host argmax over the Candle reference's logits is the target. About
/// half the targets are set to that argmax, the rest drawn at random; a fifth of the positions
/// are masked out. Positions whose two largest reference logits lie within 1e-4 of each other
/// could go either way on another machine's rounding: the counts may differ by at most their
/// number (printed; 0 for this seed).
#[test]
fn accuracy_counts_match_an_argmax_over_the_reference_logits() {
    let cfg = tiny_config();
    let (b, t, v) = (4usize, 16usize, 64usize);
    let params = random_params(&cfg, 3);
    let reference =
        ReferenceModel::from_host_arrays(&cfg.model, &params, ReferenceDtype::F32).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let tokens: Vec<i32> = (0..b * t).map(|_| rng.gen_range(0..v as i32)).collect();
    let logits: Vec<f32> = reference
        .logits(&tokens, b, t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (mut targets, mut mask) = (Vec::new(), Vec::new());
    let (mut want, mut undecided) = (0f64, 0f64);
    for row in logits.chunks(v) {
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let best = order[0] as i32;
        let target = if rng.gen_bool(0.5) {
            best
        } else {
            rng.gen_range(0..v as i32)
        };
        let weight = if rng.gen_bool(0.2) { 0.0 } else { 1.0 };
        if weight > 0.0 && target == best {
            want += 1.0;
        }
        if weight > 0.0 && row[order[0]] - row[order[1]] < 1e-4 {
            undecided += 1.0;
        }
        targets.push(target);
        mask.push(weight);
    }
    let tokens_counted: f64 = mask.iter().map(|&m| m as f64).sum();
    println!("{want} of {tokens_counted} masked positions predicted; {undecided} undecided");
    assert!(
        want >= 10.0 && want < tokens_counted,
        "a count worth testing"
    );

    // The training evaluation, on a trainer holding `params`.
    let mut settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
    settings.mesh_shape = vec![("data".to_string(), 1)];
    let plan = ShardingPlan::build(&settings, "cpu", 1).unwrap();
    let engine = Engine::new(cpu_client(1).clone(), plan.mesh.clone(), private_cache()).unwrap();
    let mut trainer = Trainer::new(&cfg, engine, plan).unwrap();
    let mut state = trainer.state_to_host().unwrap();
    for (name, array) in &params {
        state.insert(param_leaf(name), array.clone());
    }
    trainer.load_state(&state).unwrap();
    let batch = HostBatch::from_rows(1, t, &tokens, &targets, &mask).unwrap();
    let trained = trainer.evaluate(std::slice::from_ref(&batch)).unwrap();
    assert_eq!(trained.tokens, tokens_counted);
    assert_eq!(trained.accuracy, trained.correct / trained.tokens);
    assert!(
        (trained.correct - want).abs() <= undecided,
        "training evaluation: {} correct, host argmax {want}",
        trained.correct
    );

    // The train step's own accuracy on the same batch (no dropout: the same forward pass).
    let step = trainer.step(&batch).unwrap();
    assert_eq!(step.tokens as f64, tokens_counted);
    let step_correct = (step.accuracy as f64 * tokens_counted).round();
    assert!(
        (step_correct - want).abs() <= undecided,
        "train step: accuracy {} ({step_correct} correct), host argmax {want}",
        step.accuracy
    );

    // Generation's evaluation program on the same parameters and batch.
    let func = vishwam::generate::build_eval(&cfg.model, &ForwardOptions::eval(), b, t).unwrap();
    let mesh = Mesh::new(&[("data", 1)], 1).unwrap();
    let engine = Engine::new(cpu_client(1).clone(), mesh, private_cache()).unwrap();
    let program = engine.compile(&func).unwrap();
    let shape = [b as i64, t as i64];
    let mut inputs: Vec<HostArray> = model::param_specs(&cfg.model)
        .iter()
        .map(|s| params[&s.name].clone())
        .collect();
    inputs.push(HostArray::from_slice(&shape, &tokens).unwrap());
    inputs.push(HostArray::from_slice(&shape, &targets).unwrap());
    inputs.push(HostArray::from_slice(&shape, &mask).unwrap());
    let arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &PartitionSpec::default()).unwrap())
        .collect();
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    let scalar = |i: usize| engine.get(&out[i]).unwrap().to_vec::<f32>().unwrap()[0] as f64;
    assert_eq!(scalar(1), tokens_counted);
    assert!(
        (scalar(2) - want).abs() <= undecided,
        "generation's evaluation: {} correct, host argmax {want}",
        scalar(2)
    );
}
