//! `vishwam train` as processes of a job on the CPU: a mesh that would put one process's
//! rows on another's devices is refused before anything compiles, and a job of one process
//! runs the whole multi-process path (own rows, sharded checkpoints, resume) with the same
//! numbers as a single-process run.

use super::common::{failed, succeeded, vishwam_command, TINY_MODEL};
use super::store::free_port;
use std::path::Path;
use std::process::{Child, Output, Stdio};

/// `vishwam train` on the CPU with the tiny model, `extra` flags and `sets`.
fn train(home: &Path, out: &Path, extra: &[&str], sets: &[&str]) -> std::process::Command {
    let out_dir = format!("logging.output_dir={}", out.display());
    let mut args = vec!["train", "--platform", "cpu", "--no-progress"];
    for s in TINY_MODEL.iter().chain(sets).chain([&out_dir.as_str()]) {
        args.extend(["--set", s]);
    }
    args.extend_from_slice(extra);
    vishwam_command(home, &args)
}

/// The job flags of process `r` of `n` at `port`.
fn job_flags(port: u16, n: usize, r: usize) -> [String; 6] {
    [
        "--coordinator".into(),
        format!("127.0.0.1:{port}"),
        "--num-processes".into(),
        n.to_string(),
        "--process-id".into(),
        r.to_string(),
    ]
}

/// The `loss` of every step record of a run's metrics file, bit for bit.
fn losses(out: &Path) -> Vec<(u64, u32)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            let loss = v["loss"].as_f64().unwrap() as f32;
            (v["step"].as_u64().unwrap(), loss.to_bits())
        })
        .collect()
}

/// Two processes of 2 devices each whose mesh is `model` 2 outermost, `data` 2 inside: process
/// 0's devices would hold every row of each micro-batch (data 0 and 1), not only its half.
/// Each process refuses naming why, before the program over the job's devices (which the CPU
/// plugin could not compile).
#[test]
fn a_mesh_that_puts_other_processes_rows_on_a_process_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let port = free_port();
    let sets = [
        "tpu.mesh_shape={\"model\": 2, \"data\": -1}",
        "tpu.device_strategy=\"hybrid\"",
        "training.max_steps=2",
    ];
    let children: Vec<Child> = (0..2)
        .map(|r| {
            let flags = job_flags(port, 2, r);
            let mut extra: Vec<&str> = vec!["--devices", "2"];
            extra.extend(flags.iter().map(String::as_str));
            train(home.path(), &out, &extra, &sets)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, child) in children.into_iter().enumerate() {
        let err = failed(child.wait_with_output().unwrap());
        let feeds = ["rows 0..8", "rows 8..16"][r];
        assert!(
            err.contains(&format!(
                "places rows 0..16 of each micro-batch of 16 on process {r}"
            )) && err.contains(&format!("the process feeds {feeds}"))
                && err.contains("batch-sharding mesh axes outermost"),
            "{err}"
        );
        assert!(!err.contains("Multiprocess computations"), "{err}");
    }
}

/// A process started with another config than process 0's is refused naming the first key
/// that differs, before anything compiles.
#[test]
fn a_process_with_another_config_is_refused_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let port = free_port();
    let children: Vec<Child> = (0..2)
        .map(|r| {
            let flags = job_flags(port, 2, r);
            let mut extra: Vec<&str> = vec!["--devices", "2"];
            extra.extend(flags.iter().map(String::as_str));
            let lr = [
                "training.learning_rate=0.001",
                "training.learning_rate=0.002",
            ][r];
            train(home.path(), &out, &extra, &["training.max_steps=2", lr])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let err = failed(outputs[1].clone());
    assert!(
        err.contains("process 1 runs with another config than process 0")
            && err.contains(
                "training.learning_rate = 0.002 here, training.learning_rate = 0.001 there"
            ),
        "{err}"
    );
    // Process 0 stops too: with process 1's reason, or at the CPU plugin's refusal of the
    // program over both processes' devices, whichever comes first.
    failed(outputs[0].clone());
}

/// A job of one process on 2 CPU devices trains through the multi-process path (its rows,
/// placement, metrics, sharded checkpoints) with the losses of the single-process run, bit
/// for bit, and resumed from its step-2 checkpoint repeats steps 3 and 4 exactly.
#[test]
fn a_one_process_job_trains_and_resumes_as_a_single_process_run() {
    let home = vishwam::paths::vishwam_home();
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "logging.log_every=1",
        "logging.save_every=2",
        "logging.keep_checkpoints=3",
        "training.max_steps=4",
    ];
    let run = |out: &Path, job: bool, resume: bool| -> Output {
        let flags = job.then(|| job_flags(free_port(), 1, 0));
        let mut extra: Vec<&str> = vec!["--devices", "2"];
        extra.extend(flags.iter().flatten().map(String::as_str));
        if resume {
            extra.push("--resume");
        }
        train(&home, out, &extra, &sets).output().unwrap()
    };
    let single = dir.path().join("single");
    succeeded(run(&single, false, false));
    let want = losses(&single);
    assert_eq!(want.len(), 4);
    let job = dir.path().join("job");
    let printed = succeeded(run(&job, true, false));
    assert!(printed.contains("as 1 processes"), "{printed}");
    assert_eq!(losses(&job), want);
    let checkpoints = job.join("checkpoints");
    for step in ["step_00000002", "step_00000004"] {
        assert!(
            checkpoints.join(step).join("manifest.json").is_file(),
            "{step}"
        );
    }
    // Resume from step 2 (the newest once step 4 is gone): steps 3 and 4 come out the same
    // (appended to the metrics file after the first run's).
    std::fs::remove_dir_all(checkpoints.join("step_00000004")).unwrap();
    succeeded(run(&job, true, true));
    let resumed = losses(&job);
    assert_eq!(resumed.len(), 6, "{resumed:?}");
    assert_eq!(resumed[4..], want[2..]);
}
