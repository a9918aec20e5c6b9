//! Real processes through the binary: `vishwam doctor` as 2 and 4 processes on loopback, the
//! CPU plugin's refusal of a cross-process program, and a killed or hung process ending the
//! job for the others.

use super::common::{failed, vishwam_command};
use super::store::free_port;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// The message of the CPU plugin (jax 0.11.2) for a program whose devices span processes.
const CPU_REFUSAL: &str = "Multiprocess computations aren't implemented on the CPU backend";

fn spawn(home: &std::path::Path, port: u16, n: usize, r: usize, extra: &[&str]) -> Child {
    let (coordinator, n_s, r_s) = (format!("127.0.0.1:{port}"), n.to_string(), r.to_string());
    let mut args = vec![
        "doctor",
        "--platform",
        "cpu",
        "--coordinator",
        &coordinator,
        "--num-processes",
        &n_s,
        "--process-id",
        &r_s,
    ];
    args.extend_from_slice(extra);
    vishwam_command(home, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vishwam doctor")
}

/// Waits for `child` at most `limit` (then kills it and fails the test); its output is
/// small, so the pipes never fill while it runs.
fn wait(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "process {} ran over {limit:?}:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    (child.wait_with_output().unwrap(), took)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (id, process, addressable) of every `  id=... process=... kind=... addressable=...` line.
fn listed_devices(out: &str) -> Vec<(i64, i64, bool)> {
    out.lines()
        .filter(|l| l.trim_start().starts_with("id="))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {l:?}"))
                    .to_string()
            };
            (
                field("id=").parse().unwrap(),
                field("process=").parse().unwrap(),
                field("addressable=") == "yes",
            )
        })
        .collect()
}

fn job_of(processes: usize, devices: usize) {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = devices.to_string();
    let children: Vec<Child> = (0..processes)
        .map(|r| spawn(home.path(), port, processes, r, &["--devices", &d]))
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| wait(c, Duration::from_secs(120)).0)
        .collect();
    let mut first: Option<Vec<(i64, i64)>> = None;
    for (r, output) in outputs.into_iter().enumerate() {
        let out = stdout(&output);
        assert!(
            out.contains(&format!("process:       {r} of {processes}")),
            "{out}"
        );
        assert!(
            out.contains(&format!("job devices:   {}", processes * devices)),
            "{out}"
        );
        let listed = listed_devices(&out);
        assert_eq!(listed.len(), processes * devices, "{out}");
        // Every process owns `devices` of them; this process's are the addressable ones.
        for q in 0..processes as i64 {
            assert_eq!(listed.iter().filter(|d| d.1 == q).count(), devices, "{out}");
        }
        assert!(
            listed.iter().all(|&(_, q, mine)| mine == (q == r as i64)),
            "{out}"
        );
        let mut ids: Vec<i64> = listed.iter().map(|d| d.0).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(
            ids.len(),
            processes * devices,
            "device ids are unique: {out}"
        );
        // Every process sees the same list in the same order.
        let view: Vec<(i64, i64)> = listed.iter().map(|d| (d.0, d.1)).collect();
        match &first {
            None => first = Some(view),
            Some(f) => assert_eq!(&view, f, "process {r} sees another list"),
        }
        // The plugin refuses the program over every process's devices. If a future CPU
        // plugin gains cross-process collectives, doctor prints PASS instead and this fails:
        // then multi-process training can be tested on the CPU.
        let err = failed(output);
        assert!(
            err.contains(CPU_REFUSAL),
            "expected the CPU plugin to refuse a cross-process program; it did not (has it \
             gained cross-process collectives?):\n{out}\n{err}"
        );
    }
}

#[test]
fn two_processes_list_the_jobs_devices_and_the_cpu_plugin_refuses_a_cross_process_program() {
    job_of(2, 2);
}

#[test]
fn four_processes_list_the_jobs_devices() {
    job_of(4, 1);
}

#[test]
fn conflicting_process_ids_are_an_error_naming_both() {
    let home = tempfile::tempdir().unwrap();
    let output = vishwam_command(
        home.path(),
        &[
            "doctor",
            "--platform",
            "cpu",
            "--coordinator",
            "127.0.0.1:1",
            "--num-processes",
            "2",
            "--process-id",
            "0",
        ],
    )
    .env("RANK", "1")
    .output()
    .unwrap();
    let err = failed(output);
    assert!(
        err.contains("--process-id") && err.contains("RANK=1"),
        "{err}"
    );
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Processes 0 and 1 of a job of 3 wait at the join barrier for process 2, which never comes;
/// process 1 then dies (`KILL`) or hangs (`STOP`). Process 0 must end with the reason long
/// before its join timeout (300 s).
fn peer_lost(how: &str, expect: &str) {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = ["--heartbeat-timeout", "2"];
    let zero = spawn(home.path(), port, 3, 0, &extra);
    let mut one = spawn(home.path(), port, 3, 1, &extra);
    // Both have joined the store well within this (they only connect and say hello).
    std::thread::sleep(Duration::from_secs(3));
    signal(&one, how);
    let (output, took) = wait(zero, Duration::from_secs(60));
    let _ = one.kill();
    let _ = one.wait();
    let err = failed(output);
    assert!(err.contains(expect), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_killed_process_ends_the_job_for_the_others() {
    peer_lost("KILL", "process 1 lost its connection to the store");
}

#[test]
fn a_hung_process_ends_the_job_after_the_heartbeat_timeout() {
    peer_lost("STOP", "process 1 sent no heartbeat for 2.0 s");
}

/// `vishwam train` as 2 processes of 2 virtual CPU devices each: both join, lay the mesh over
/// the job's 4 devices, and stop at the CPU plugin's refusal of a program over them. The
/// config's fixed mesh shape counts the whole job's devices (`--devices` each process's).
#[test]
fn train_as_two_processes_stops_at_the_cpu_plugins_refusal() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("run");
    let port = free_port();
    let (coordinator, out_dir) = (
        format!("127.0.0.1:{port}"),
        format!("logging.output_dir={}", out.display()),
    );
    let children: Vec<Child> = (0..2)
        .map(|r| {
            let r = r.to_string();
            let mut args = vec!["train", "--platform", "cpu", "--devices", "2"];
            for s in super::common::TINY_MODEL {
                args.extend(["--set", s]);
            }
            args.extend(["--set", "training.max_steps=2", "--set", &out_dir]);
            args.extend(["--set", "tpu.mesh_shape={\"data\": 4}"]);
            args.extend([
                "--coordinator",
                &coordinator,
                "--num-processes",
                "2",
                "--process-id",
                &r,
            ]);
            vishwam_command(home.path(), &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let err = failed(wait(child, Duration::from_secs(120)).0);
        assert!(err.contains(CPU_REFUSAL), "{err}");
        assert!(err.contains("span the job's 2 processes"), "{err}");
    }
}

/// A process whose client cannot be created (here: a create option the CPU plugin does not
/// know) tells the others why before it exits.
#[test]
fn a_process_that_fails_to_start_tells_the_others_why() {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let zero = spawn(
        home.path(),
        port,
        2,
        0,
        &["--client-option", "asynchronous=false"],
    );
    let one = spawn(
        home.path(),
        port,
        2,
        1,
        &["--client-option", "bogus_option=3"],
    );
    let err_one = failed(wait(one, Duration::from_secs(60)).0);
    assert!(
        err_one.contains("Unexpected option name") && err_one.contains("bogus_option"),
        "{err_one}"
    );
    let err_zero = failed(wait(zero, Duration::from_secs(60)).0);
    assert!(
        err_zero.contains("process 1 failed") && err_zero.contains("bogus_option"),
        "{err_zero}"
    );
}

/// Commands that run as one process refuse the multi-process flags instead of ignoring them.
#[test]
fn single_process_commands_refuse_the_multi_process_flags() {
    let home = tempfile::tempdir().unwrap();
    let job = [
        "--coordinator",
        "127.0.0.1:1",
        "--num-processes",
        "2",
        "--process-id",
        "0",
    ];
    let distill = [&["distill"][..], &job].concat();
    let err = failed(vishwam_command(home.path(), &distill).output().unwrap());
    assert!(
        err.contains("vishwam distill runs as a single process"),
        "{err}"
    );
    let validate = [&["train", "--validate-setup"][..], &job].concat();
    let err = failed(vishwam_command(home.path(), &validate).output().unwrap());
    assert!(
        err.contains("--validate-setup checks a single-process run"),
        "{err}"
    );
    let err = failed(
        vishwam_command(home.path(), &["doctor", "--visible-devices", "0"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("--visible-devices and --client-option are for a multi-process run"),
        "{err}"
    );
}
