//! Fine-tuning and resuming from any point, through the binary: `--init-from` a run trained
//! on one device onto two FSDP devices with fresh optimiser state, a mismatching model
//! section refused by name, and `--resume-from` an older checkpoint reproducing the
//! uninterrupted run bit for bit.

mod common;

use common::{failed, succeeded, vishwam_cli};
use std::path::{Path, PathBuf};
use vishwam::train::checkpoint;

/// A tiny model and run on the built-in Brown corpus (its 512-token tokenizer is trained once
/// and cached in the vishwam home). 8 rows per batch shard (training.batch_size is per shard),
/// so the global batch is 8 x the batch shards of each run's mesh.
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.eval_steps=4",
    "data.val_fraction=0.05",
    "logging.eval_every=0",
    "logging.log_every=1",
    "runtime.compile_cache=false",
];

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The `vishwam train` command line: `sets` as `--set`, then `more`.
fn train_args(sets: &[String], more: &[&str]) -> Vec<String> {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

fn run(args: &[String]) -> std::process::Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vishwam_cli(&vishwam::paths::vishwam_home(), &args)
}

fn sets(extra: &[String]) -> Vec<String> {
    common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

/// The per-step losses in a run's metrics file.
fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect()
}

fn newest(run_dir: &Path) -> PathBuf {
    checkpoint::latest(&run_dir.join("checkpoints")).unwrap()
}

#[test]
fn init_from_a_one_device_run_fine_tunes_on_two_fsdp_devices_with_fresh_optimiser_state() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    succeeded(run(&train_args(
        &sets(&[
            "training.max_steps=20".into(),
            format!("logging.output_dir={}", p(&base)),
        ]),
        &[],
    )));
    let base_ck = checkpoint::load(&newest(&base)).unwrap();

    // A model key that differs from the weights' is refused, naming it and both values.
    let bad = root.path().join("bad");
    let err = failed(run(&train_args(
        &[
            "model.hidden_dim=64".into(),
            "training.max_steps=1".into(),
            format!("logging.output_dir={}", p(&bad)),
        ],
        &["--init-from", &p(&base)],
    )));
    assert!(
        err.contains("model.hidden_dim = 64 in the config, 32 in the weights"),
        "{err}"
    );

    // Fine-tuning into the base run's own directory would set the base run aside (or, before,
    // prune it): refused, naming the key to change, with the base run untouched.
    let err = failed(run(&train_args(
        &[
            "training.max_steps=1".into(),
            format!("logging.output_dir={}", p(&base)),
        ],
        &["--init-from", &p(&base)],
    )));
    assert!(err.contains("--set logging.output_dir=NEW_DIR"), "{err}");
    assert_eq!(newest(&base), base_ck.dir);

    // No model section in the config: it comes from the weights; 2 devices, FSDP.
    let tuned = root.path().join("tuned");
    let (beta1, beta2) = (0.9, 0.95);
    succeeded(run(&train_args(
        &[
            "training.batch_size=8".into(),
            "training.warmup_steps=1".into(),
            "training.max_steps=1".into(),
            format!("training.adam_beta1={beta1}"),
            format!("training.adam_beta2={beta2}"),
            "tpu.device_strategy=\"fsdp\"".into(),
            "data.val_fraction=0.05".into(),
            "logging.eval_every=0".into(),
            "logging.log_every=1".into(),
            format!("logging.output_dir={}", p(&tuned)),
        ],
        &["--init-from", &p(&base), "--devices", "2"],
    )));
    let ck = checkpoint::load(&newest(&tuned)).unwrap();
    assert_eq!(
        ck.manifest.config["model"], base_ck.manifest.config["model"],
        "the model section comes from the weights"
    );
    assert_eq!(ck.manifest.config["tpu"]["device_strategy"], "fsdp");
    assert_eq!(ck.manifest.step, 1, "the step starts from 0");
    assert_eq!(ck.state["step"].to_vec::<i32>().unwrap(), vec![1]);

    // The first step's loss is the base weights' loss on a Brown batch: the base reached
    // about 5.6 nats after 20 steps, while a fresh 512-token model starts at ln 512 = 6.24.
    // Weights lost or scrambled by the resharding would give at least the fresh loss.
    let first = losses(&tuned)[0].1;
    let fresh = (512f64).ln();
    assert!(first < fresh - 0.3, "first fine-tuning loss {first}");

    // Fresh AdamW moments: after one step from zero, m = (1 - b1) g and v = (1 - b2) g², so
    // m² / v = (1 - b1)² / (1 - b2) in every element; moments carried over from the base run
    // (20 steps of other gradients) would not satisfy it.
    let expected = (1.0 - beta1) * (1.0 - beta1) / (1.0 - beta2);
    let mut checked = 0;
    for (name, m) in ck.state.iter().filter(|(k, _)| k.starts_with("opt.m.")) {
        let v = &ck.state[&name.replacen("opt.m.", "opt.v.", 1)];
        for (m, v) in m
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .zip(v.to_vec::<f32>().unwrap())
        {
            if v > 1e-20 {
                let ratio = (*m as f64).powi(2) / v as f64;
                assert!(
                    (ratio / expected - 1.0).abs() < 1e-3,
                    "{name}: m²/v = {ratio}, fresh moments give {expected}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} moments checked");
}

#[test]
fn resume_from_an_older_checkpoint_reproduces_the_uninterrupted_run_exactly() {
    let root = tempfile::tempdir().unwrap();
    let full = root.path().join("full");
    let common = [
        "training.max_steps=6".to_string(),
        "logging.save_every=2".into(),
        "logging.keep_checkpoints=5".into(),
    ];
    let with_dir = |dir: &Path| {
        let mut s = sets(&common);
        s.push(format!("logging.output_dir={}", p(dir)));
        s
    };
    succeeded(run(&train_args(&with_dir(&full), &[])));
    let step2 = full.join("checkpoints").join(checkpoint::step_dir_name(2));
    assert!(step2.is_dir());

    // Continuing from step 2 inside the run that went on to step 6 is refused by name.
    let err = failed(run(&train_args(
        &with_dir(&full),
        &["--resume-from", &p(&step2)],
    )));
    assert!(err.contains("after step 2 (steps 4, 6)"), "{err}");

    // From step 2 into a new directory: steps 3..6 and the final state equal the original's.
    let again = root.path().join("again");
    succeeded(run(&train_args(
        &with_dir(&again),
        &["--resume-from", &p(&step2)],
    )));
    assert_eq!(losses(&again), losses(&full)[2..].to_vec());
    let (a, b) = (
        checkpoint::load(&newest(&full)).unwrap(),
        checkpoint::load(&newest(&again)).unwrap(),
    );
    assert_eq!(b.manifest.step, 6);
    assert_eq!(
        a.state, b.state,
        "resumed state must equal the uninterrupted one bit for bit"
    );
    assert_eq!(a.manifest.data_position, b.manifest.data_position);

    // A checkpoint of another model is refused as --resume refuses it.
    let other = root.path().join("other");
    let mut s = with_dir(&other);
    s.push("model.hidden_dim=64".into());
    let err = failed(run(&train_args(&s, &["--resume-from", &p(&step2)])));
    assert!(err.contains("different `model` section"), "{err}");
}

#[test]
fn a_fresh_run_sets_an_earlier_one_aside_and_a_resume_on_another_mesh_names_the_batch_size() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("run");
    let out = format!("logging.output_dir={}", p(&dir));
    succeeded(run(&train_args(
        &sets(&["training.max_steps=3".into(), out.clone()]),
        &[],
    )));
    // Run again without --resume: the earlier run's checkpoint (step 3) would be kept and this
    // run's step 1 pruned as older; instead the earlier run moves into earlier-<time>/.
    succeeded(run(&train_args(
        &sets(&["training.max_steps=1".into(), out.clone()]),
        &[],
    )));
    let steps = |checkpoints: &Path| -> Vec<u64> {
        checkpoint::list(checkpoints)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    assert_eq!(steps(&dir.join("checkpoints")), [1]);
    assert_eq!(losses(&dir).len(), 1);
    let earlier: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| p(d).contains("earlier-"))
        .collect();
    assert_eq!(earlier.len(), 1, "{earlier:?}");
    assert_eq!(steps(&earlier[0].join("checkpoints")), [3]);
    assert_eq!(losses(&earlier[0]).len(), 3);

    // 8 per shard on 1 device wrote a global batch of 8; on 2 devices it would be 16.
    let err = failed(run(&train_args(
        &sets(&["training.max_steps=2".into(), out]),
        &["--resume", "--devices", "2"],
    )));
    assert!(
        err.contains("the mesh changed from 1 to 2 batch shards")
            && err.contains("set training.batch_size=4"),
        "{err}"
    );
}

#[test]
fn distill_starts_its_student_from_init_weights() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("base");
    succeeded(run(&train_args(
        &sets(&[
            "training.max_steps=2".into(),
            format!("logging.output_dir={}", p(&base)),
        ]),
        &[],
    )));
    // The student is the base model (no model section in the config), its teacher the base
    // run too; the run's checkpoint records the weights' model section.
    let student = root.path().join("student");
    let args: Vec<String> = [
        "distill",
        "--no-progress",
        "--init-from",
        &p(&base),
        "--set",
        &format!("distillation.teacher_model={}", p(&base)),
        "--set",
        "training.max_steps=1",
        "--set",
        "data.val_fraction=0.05",
        "--set",
        "logging.eval_every=0",
        "--set",
        &format!("logging.output_dir={}", p(&student)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    succeeded(run(&args));
    let (a, b) = (
        checkpoint::load(&newest(&base)).unwrap(),
        checkpoint::load(&newest(&student)).unwrap(),
    );
    assert_eq!(b.manifest.config["model"], a.manifest.config["model"]);
    assert_eq!(b.manifest.step, 1);
}
