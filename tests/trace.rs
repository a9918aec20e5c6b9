//! Step traces through the binary on the CPU plugin: `--profile-steps 2:3` writes the XSpace
//! for TensorBoard's profile plugin and the Chrome trace, both holding vishwam's host spans
//! of exactly steps 2 and 3; the losses are those of a run without tracing; the CPU plugin
//! (no profiler extension) gets one clear warning; `logging.profile_every` traces its windows;
//! bad `--profile-steps` values and `logging.profile_steps` fail with messages that say why.

mod common;

use common::{failed, succeeded, vishwam_cli};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use vishwam::train::trace::xspace::XSpace;

/// A tiny model on the built-in Brown corpus, as in tests/tensorboard.rs, logging every step.
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.max_steps=4",
    "training.eval_steps=2",
    "data.val_fraction=0.05",
    "logging.log_every=1",
    "logging.eval_every=0",
    "logging.save_every=0",
];

fn train(run: &Path, extra: &[&str], flags: &[&str]) -> std::process::Output {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in common::TINY_MODEL.iter().chain(TINY_RUN).chain(extra) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend([
        "--set".into(),
        format!("logging.output_dir={}", run.display()),
    ]);
    args.extend(flags.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vishwam_cli(&vishwam::paths::vishwam_home(), &args)
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// Every `*.xplane.pb` under `run/plugins/profile/<session>/`.
fn xplanes(run: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for session in std::fs::read_dir(run.join("plugins/profile")).unwrap() {
        for file in std::fs::read_dir(session.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.to_string_lossy().ends_with(".xplane.pb") {
                found.push(path);
            }
        }
    }
    found
}

/// Names of the events in the space's host planes, in order.
fn host_event_names(space: &XSpace) -> Vec<String> {
    space
        .planes
        .iter()
        .filter(|p| p.name.starts_with("/host:"))
        .flat_map(|p| {
            p.lines
                .iter()
                .flat_map(|l| &l.events)
                .map(|e| p.event_name(e.metadata_id))
        })
        .collect()
}

fn chrome_events(path: &Path) -> Vec<Value> {
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut json)
        .unwrap();
    let trace: Value = serde_json::from_str(&json).unwrap();
    trace["traceEvents"].as_array().unwrap().clone()
}

#[test]
fn profile_steps_writes_both_formats_and_leaves_the_losses_alone() {
    let root = tempfile::tempdir().unwrap();
    let (traced, plain) = (root.path().join("traced"), root.path().join("plain"));
    let out = train(&traced, &[], &["--profile-steps", "2:3"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    succeeded(out);
    succeeded(train(&plain, &[], &[]));

    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("has no profiler extension"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("host spans only"), "{}", warnings[0]);

    let traced_losses = losses(&traced);
    assert_eq!(traced_losses.len(), 4);
    assert_eq!(traced_losses, losses(&plain), "tracing changed the losses");

    let files = xplanes(&traced);
    assert_eq!(files.len(), 1, "{files:?}");
    let space = XSpace::decode(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(!space.planes.is_empty() && space.timed_event_count() > 0);
    let names = host_event_names(&space);
    for expected in [
        "step 2",
        "step 3",
        "data wait",
        "host to device",
        "compute",
        "launch",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "step 1" || n == "step 4"),
        "{names:?}"
    );
    assert_eq!(names.len(), 2 * 6, "six spans for each of the two steps");

    let chrome = traced.join("profile/steps_2-3.trace.json.gz");
    let events = chrome_events(&chrome);
    let steps: Vec<&str> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"].as_str().unwrap().starts_with("step "))
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["step 2", "step 3"]);
    let process = events
        .iter()
        .find(|e| e["ph"] == "M" && e["name"] == "process_name")
        .unwrap();
    assert_eq!(process["args"]["name"], "/host:CPU");
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let (ts, dur) = (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap());
        assert!(ts >= 0.0 && dur >= 0.0, "{e}");
    }
    assert!(!plain.join("plugins").exists() && !plain.join("profile").exists());

    // `bench kernels` reads the trace, and says that a CPU run's trace has no GPU kernels.
    let trace_arg = format!("cpu={}", files[0].display());
    let err = failed(vishwam_cli(
        root.path(),
        &["bench", "kernels", "--trace", &trace_arg, "--steps", "2"],
    ));
    assert!(
        err.contains("no GPU kernels") && err.contains("/host:CPU"),
        "{err}"
    );
}

#[test]
fn profile_every_traces_its_windows_and_bad_values_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("every");
    let every = ["logging.profile_every=2", "logging.profile_steps=1"];
    succeeded(train(&run, &every, &[]));
    for name in ["steps_2-2", "steps_4-4"] {
        let events = chrome_events(&run.join(format!("profile/{name}.trace.json.gz")));
        let step = format!("step {}", &name[name.len() - 1..]);
        assert!(events.iter().any(|e| e["name"] == step.as_str()), "{name}");
    }
    assert_eq!(xplanes(&run).len(), 2);
    // The timing breakdown of logging.profile_every stays in the metrics.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"profile\"").count(), 2);

    let bad = root.path().join("bad");
    for (value, why) in [
        ("3:2", "M is before N"),
        ("0:1", "steps count from 1"),
        ("2", "no `:`"),
        ("a:b", "N is not a whole number"),
    ] {
        let err = failed(train(&bad, &[], &["--profile-steps", value]));
        assert!(
            err.contains(why) && err.contains("M >= N >= 1"),
            "{value}: {err}"
        );
    }
    let err = failed(train(&bad, &[], &["--profile-steps", "5:6"]));
    assert!(
        err.contains("--profile-steps 5:6") && err.contains("training.max_steps = 4"),
        "{err}"
    );
    let err = failed(train(
        &bad,
        &["logging.profile_every=2", "logging.profile_steps=3"],
        &[],
    ));
    assert!(
        err.contains("logging.profile_steps") && err.contains("at most logging.profile_every = 2"),
        "{err}"
    );
}
