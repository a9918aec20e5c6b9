//! TensorBoard event files through the binary, read back with the real `tensorboard` Python
//! package: every number of every `metrics.jsonl` record is a scalar at the record's step
//! under the documented tag, a resumed run (also one resumed from an older checkpoint, after
//! the run had logged past it) shows no step twice, a fresh run sets the earlier events
//! aside, a two-device run writes one file, and `logging.tensorboard=false` writes none.
//!
//! The Python interpreter is `$VISHWAM_TEST_PYTHON` (`.ci/run` installs `tensorboard` into a
//! virtual environment and sets it), else `python3`; without `tensorboard` importable the
//! test fails and says how to install it.

mod common;

use common::{succeeded, vishwam_cli};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use vishwam::train::checkpoint;
use vishwam::train::tensorboard::record_scalars;

/// A tiny model on the built-in Brown corpus, as in tests/finetune.rs, logging every step
/// (the compile cache on: the runs after the first reuse its executables).
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.eval_steps=2",
    "data.val_fraction=0.05",
    "logging.log_every=1",
    "logging.eval_every=2",
    "logging.save_every=2",
    "logging.keep_checkpoints=5",
];

const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;

/// The Python that has `tensorboard`, or a failure that says how to get one.
fn python() -> String {
    let python = std::env::var("VISHWAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        other => panic!(
            "this test reads event files with the `tensorboard` Python package, and `{python}` \
             cannot import it ({}); run .ci/run, or `python3 -m venv VENV && VENV/bin/pip install \
             tensorboard` and set VISHWAM_TEST_PYTHON=VENV/bin/python",
            match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            }
        ),
    }
}

/// Scalars of every event file in `run/tensorboard`, as TensorBoard reads them:
/// tag -> [(step, value)].
fn tensorboard_scalars(python: &str, run: &Path) -> BTreeMap<String, Vec<(u64, f32)>> {
    let out = std::process::Command::new(python)
        .args(["-c", READ_EVENTS])
        .arg(run.join("tensorboard"))
        .output()
        .unwrap();
    let stdout = succeeded(out);
    let parsed: BTreeMap<String, Vec<(u64, f64)>> = serde_json::from_str(&stdout).unwrap();
    parsed
        .into_iter()
        .map(|(tag, v)| (tag, v.into_iter().map(|(s, x)| (s, x as f32)).collect()))
        .collect()
}

/// The records of the metrics file.
fn records(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train(run: &Path, extra: &[String], flags: &[&str]) {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
    {
        args.extend(["--set".to_string(), s]);
    }
    args.extend([
        "--set".into(),
        format!("logging.output_dir={}", run.display()),
    ]);
    args.extend(flags.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded(vishwam_cli(&vishwam::paths::vishwam_home(), &args));
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|f| f.to_string_lossy().contains("events.out.tfevents."));
    files
}

/// Checks TensorBoard's view of `run` against its metrics file, where a step logged twice
/// (a run resumed from before its last logged step) counts with its last record.
fn assert_matches_metrics(python: &str, run: &Path) -> BTreeMap<String, Vec<(u64, f32)>> {
    let board = tensorboard_scalars(python, run);
    let mut expected: BTreeMap<String, BTreeMap<u64, f32>> = BTreeMap::new();
    for record in records(run) {
        let (step, scalars) = record_scalars(&record).expect("every record has a step");
        for (tag, value) in scalars {
            expected.entry(tag).or_default().insert(step, value);
        }
    }
    let tags: BTreeSet<&String> = board.keys().collect();
    assert_eq!(tags, expected.keys().collect(), "tags");
    for (tag, points) in &board {
        let want: Vec<(u64, f32)> = expected[tag].iter().map(|(s, v)| (*s, *v)).collect();
        assert_eq!(points, &want, "steps and values of {tag}");
    }
    // The documented tags, straight from the records' keys.
    for (key, tag) in [
        ("loss", "train/loss"),
        ("lr", "train/lr"),
        ("grad_norm", "train/grad_norm"),
        ("tokens_per_second", "perf/tokens_per_second"),
        ("step_time", "perf/step_time"),
        ("val_loss", "val/loss"),
        ("val_perplexity", "val/perplexity"),
    ] {
        let last: BTreeMap<u64, f32> = records(run)
            .iter()
            .filter_map(|r| Some((r["step"].as_u64()?, r.get(key)?.as_f64()? as f32)))
            .collect();
        assert_eq!(board[tag], last.into_iter().collect::<Vec<_>>(), "{tag}");
    }
    board
}

fn steps(board: &BTreeMap<String, Vec<(u64, f32)>>, tag: &str) -> Vec<u64> {
    board[tag].iter().map(|(s, _)| *s).collect()
}

#[test]
fn event_files_match_the_metrics_across_resumes_and_fresh_runs() {
    let python = python();
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");

    // Steps 1..4, then resumed to 6: two event files, each step once.
    train(&run, &["training.max_steps=4".into()], &[]);
    train(&run, &["training.max_steps=6".into()], &["--resume"]);
    assert_eq!(event_files(&run.join("tensorboard")).len(), 2);
    let board = assert_matches_metrics(&python, &run);
    assert_eq!(steps(&board, "train/loss"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(steps(&board, "val/loss"), [2, 4, 6]);

    // As if the run had died after logging step 6 but before its checkpoint: resuming from
    // step 4 logs 5 and 6 again (metrics.jsonl holds them twice); TensorBoard shows them once.
    std::fs::remove_dir_all(run.join("checkpoints").join(checkpoint::step_dir_name(6))).unwrap();
    train(&run, &["training.max_steps=6".into()], &["--resume"]);
    let logged: Vec<u64> = records(&run)
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(logged, [1, 2, 3, 4, 5, 6, 5, 6]);
    let board = assert_matches_metrics(&python, &run);
    assert_eq!(steps(&board, "train/loss"), [1, 2, 3, 4, 5, 6]);

    // A fresh run on two devices moves the earlier events aside and writes one file.
    train(&run, &["training.max_steps=2".into()], &["--devices", "2"]);
    assert_eq!(event_files(&run.join("tensorboard")).len(), 1);
    let board = assert_matches_metrics(&python, &run);
    assert_eq!(steps(&board, "train/loss"), [1, 2]);
    let aside = earlier_runs(&run);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(event_files(&aside[0].join("tensorboard")).len(), 3);

    // With TensorBoard off, a fresh run writes no events (and sets the last ones aside).
    train(
        &run,
        &[
            "training.max_steps=1".into(),
            "logging.tensorboard=false".into(),
        ],
        &[],
    );
    assert!(!run.join("tensorboard").exists());
    assert_eq!(earlier_runs(&run).len(), 2);
}

/// The `earlier-*` directories a fresh run set an earlier run aside in.
fn earlier_runs(run: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("earlier-")
        })
        .collect()
}
