//! Sharded checkpoints of multi-process runs (manifest version 2), on the CPU: processes are
//! threads, each with a real `Session` over loopback TCP. Random arrays of several dtypes are
//! laid out by `ShardLayout` over a 4-device mesh and split between 1, 2 or 4 processes; what
//! the processes write, `checkpoint::load` must assemble bitwise. The manifest is committed
//! last, a killed process leaves no checkpoint and stops the others, and a checkpoint with a
//! corrupt, missing, overlapping or absent shard is refused naming it.

use rand::{RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vishwam::distributed::{ProcessSpec, Session};
use vishwam::engine::HostArray;
use vishwam::runtime::ElementType;
use vishwam::train::checkpoint::sharded::{save_sharded, LocalShard};
use vishwam::train::checkpoint::{self, sharded, SingleProcess};
use vishwam_mesh::{Mesh, PartitionSpec, ShardLayout};

/// Generous bound for a survivor to notice a dead process (the store notices a dropped
/// connection at once; heartbeats are checked every 0.2 s with a 2 s timeout here).
const NOTICE_BOUND: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(2);
const JOIN: Duration = Duration::from_secs(30);

/// The state arrays: name, dtype, shape and the mesh axis splitting each dimension.
type ArraySpec = (
    &'static str,
    ElementType,
    &'static [i64],
    &'static [Option<&'static str>],
);

const ARRAYS: &[ArraySpec] = &[
    // Split on both axes: four distinct shards.
    (
        "params.w",
        ElementType::F32,
        &[8, 6],
        &[Some("data"), Some("model")],
    ),
    // Split on one axis, replicated along the other.
    ("opt.mu", ElementType::BF16, &[8, 6], &[Some("data"), None]),
    (
        "params.e",
        ElementType::F16,
        &[4, 3, 2],
        &[None, None, Some("model")],
    ),
    ("params.b", ElementType::F64, &[6], &[Some("model")]),
    // Replicated: one shard, owned by the process of the first device.
    ("step", ElementType::S32, &[], &[]),
    ("rng", ElementType::U64, &[2], &[None]),
    ("fp8.amax", ElementType::F8E4M3FN, &[3, 5], &[None, None]),
    ("mask", ElementType::U8, &[5], &[None]),
];

/// The arrays whole, and for each of `processes` the distinct shards it owns over a mesh of
/// 4 devices (`data` 2 x `model` 2), the devices split evenly between the processes.
fn layout(processes: usize, seed: u64) -> (BTreeMap<String, HostArray>, Vec<Vec<LocalShard>>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mesh = Mesh::new(&[("data", 2), ("model", 2)], 4).unwrap();
    let mut global = BTreeMap::new();
    let mut owned = vec![Vec::new(); processes];
    for (name, element_type, shape, axes) in ARRAYS {
        let size = element_type.size_in_bytes();
        let mut data = vec![0u8; shape.iter().product::<i64>() as usize * size];
        rng.fill_bytes(&mut data);
        let layout = ShardLayout::new(&mesh, &PartitionSpec::from_axes(axes), shape).unwrap();
        for group in layout.replica_groups() {
            let first = group[0];
            let owner = layout.device_ids()[first] * processes / mesh.num_devices();
            let slices = layout.slices(first);
            owned[owner].push(LocalShard {
                name: name.to_string(),
                element_type: *element_type,
                global_shape: shape.to_vec(),
                start: slices.iter().map(|s| s.start as i64).collect(),
                shape: slices.iter().map(|s| s.len as i64).collect(),
                data: layout.shard_bytes(&data, size, first).unwrap(),
            });
        }
        let array = HostArray::from_bytes(*element_type, shape, data).unwrap();
        global.insert(name.to_string(), array);
    }
    (global, owned)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `body(process id, session)` for each of `n` processes, each a thread with its own
/// session of one job on loopback; returns their results in process order.
fn run_job<T: Send + 'static>(
    n: usize,
    body: impl Fn(usize, Session) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let port = free_port();
    let body = Arc::new(body);
    let threads: Vec<_> = (0..n)
        .map(|id| {
            let body = body.clone();
            std::thread::spawn(move || {
                let spec = ProcessSpec {
                    coordinator: format!("127.0.0.1:{port}"),
                    num_processes: n,
                    process_id: id,
                    join_timeout: JOIN,
                    heartbeat_timeout: HEARTBEAT,
                };
                let session = Session::join(&spec, Box::new(|_| {})).unwrap();
                body(id, session)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Saves `shards` at `step` under `root` with the test's manifest fields; the error as text.
fn save(
    root: &Path,
    step: u64,
    shards: &[LocalShard],
    keep: usize,
    job: &dyn sharded::CheckpointJob,
) -> Result<PathBuf, String> {
    let config = serde_json::json!({"model": {"hidden_dim": 16}});
    let position = serde_json::json!({"documents": step * 3});
    save_sharded(root, step, shards, config, position, None, keep, job).map_err(|e| e.to_string())
}

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn one_two_and_four_processes_write_what_load_assembles_bitwise() {
    for n in [1, 2, 4] {
        let root = tempfile::tempdir().unwrap();
        let (global, owned) = layout(n, 10 + n as u64);
        let (path, owned) = (root.path().to_path_buf(), Arc::new(owned));
        let dirs = run_job(n, move |id, session| {
            let shards = &owned[id];
            let first = save(&path, 1, shards, 1, &session).unwrap();
            let second = save(&path, 2, shards, 1, &session).unwrap();
            // The same step again in the same job (an interrupted run saves its last step
            // twice): a new attempt, not the first one's keys.
            let again = save(&path, 2, shards, 1, &session).unwrap();
            session.finish().unwrap();
            (first, second, again)
        });
        let step_2 = root.path().join("step_00000002");
        for (first, second, again) in &dirs {
            assert_eq!(first, &root.path().join("step_00000001"));
            assert_eq!((second, again), (&step_2, &step_2));
        }
        // Pruned to the newest; no temporary directory left.
        assert_eq!(entries(root.path()), ["step_00000002"]);
        let mut files: Vec<String> = (0..n).map(|r| sharded::state_file_name(r, n)).collect();
        files.push("manifest.json".into());
        files.sort();
        assert_eq!(entries(&step_2), files);

        let ck = checkpoint::load(&step_2).unwrap();
        assert_eq!(ck.manifest.version, sharded::SHARDED_VERSION);
        assert_eq!(ck.manifest.step, 2);
        assert_eq!(ck.manifest.data_position["documents"], 6);
        assert_eq!(ck.manifest.files.len(), n);
        // Every key a build that reads only version 1 requires is there, so such a build
        // parses the manifest and refuses it by its version.
        let text = std::fs::read_to_string(step_2.join("manifest.json")).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "format",
            "version",
            "step",
            "config",
            "data_position",
            "tensors",
        ] {
            assert!(manifest.get(key).is_some(), "{key} in {text}");
        }
        assert_eq!(manifest["state_sha256"], "");
        assert!(
            ck.state == global,
            "{n} processes: the assembled state differs"
        );

        // The single-file layout of the same state reads back the same.
        let single = tempfile::tempdir().unwrap();
        let config = serde_json::json!({});
        let dir = checkpoint::save(
            single.path(),
            2,
            &global,
            config,
            ck.manifest.data_position,
            1,
        )
        .unwrap();
        let v1 = checkpoint::load(&dir).unwrap();
        assert_eq!(v1.manifest.version, checkpoint::VERSION);
        assert!(v1.state == ck.state);
    }
}

#[test]
fn the_manifest_is_committed_only_after_every_process_wrote_its_file() {
    let root = tempfile::tempdir().unwrap();
    let (global, owned) = layout(2, 3);
    let (path, owned) = (root.path().to_path_buf(), Arc::new(owned));
    run_job(2, move |id, session| {
        if id == 1 {
            // Process 1 is late: process 0 has written its file and waits for process 1's.
            let tmp = path.join(sharded::job_tmp_dir_name(5));
            let own_file = tmp.join(sharded::state_file_name(0, 2));
            let deadline = Instant::now() + NOTICE_BOUND;
            while !own_file.is_file() {
                assert!(Instant::now() < deadline, "process 0 wrote no file");
                std::thread::sleep(Duration::from_millis(20));
            }
            for _ in 0..2 {
                assert!(!path.join("step_00000005").exists(), "committed too early");
                assert!(
                    !tmp.join("manifest.json").exists(),
                    "manifest written too early"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let dir = save(&path, 5, &owned[id], 3, &session).unwrap();
        // Every process returns after the commit.
        assert!(dir.join("manifest.json").is_file());
        session.finish().unwrap();
    });
    assert!(
        checkpoint::load(&root.path().join("step_00000005"))
            .unwrap()
            .state
            == global
    );
}

#[test]
fn a_killed_process_leaves_no_checkpoint_and_the_others_stop_in_bounded_time() {
    let root = tempfile::tempdir().unwrap();
    let (global, owned) = layout(3, 4);
    let (path, owned) = (root.path().to_path_buf(), Arc::new(owned));
    let outcomes = {
        let (path, owned) = (path.clone(), owned.clone());
        run_job(3, move |id, session| {
            if id == 2 {
                // Killed halfway through writing its file: part of it, then gone without
                // finishing (its connection to the store drops).
                let tmp = path.join(sharded::job_tmp_dir_name(7));
                let deadline = Instant::now() + NOTICE_BOUND;
                while !tmp.is_dir() {
                    assert!(Instant::now() < deadline, "process 0 made no directory");
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::fs::write(tmp.join(sharded::state_file_name(2, 3)), b"partial").unwrap();
                drop(session);
                return None;
            }
            let start = Instant::now();
            let result = save(&path, 7, &owned[id], 3, &session);
            let took = start.elapsed();
            let message = result.unwrap_err().to_string();
            session.abort(&message, Duration::from_secs(10));
            Some((message, took))
        })
    };
    for (id, outcome) in outcomes.iter().take(2).enumerate() {
        let (message, took) = outcome.clone().unwrap();
        assert!(
            took < NOTICE_BOUND,
            "process {id} waited {took:?}: {message}"
        );
        assert!(message.contains("process 2"), "process {id}: {message}");
    }
    assert!(!root.path().join("step_00000007").exists());
    assert!(checkpoint::list(root.path()).is_empty());

    // The next job saves the same step: the killed save's leftovers are cleared.
    run_job(3, move |id, session| {
        save(&path, 7, &owned[id], 3, &session).unwrap();
        session.finish().unwrap();
    });
    let step = root.path().join("step_00000007");
    assert_eq!(entries(root.path()), ["step_00000007"]);
    assert_eq!(entries(&step).len(), 4);
    assert!(checkpoint::load(&step).unwrap().state == global);
}

#[test]
fn when_process_0_dies_the_others_stop_and_nothing_is_committed() {
    let root = tempfile::tempdir().unwrap();
    let (_, owned) = layout(2, 5);
    let (path, owned) = (root.path().to_path_buf(), Arc::new(owned));
    let outcomes = run_job(2, move |id, session| {
        if id == 0 {
            // Gone before it prepares the directory: the store it served goes with it.
            std::thread::sleep(Duration::from_millis(500));
            drop(session);
            return None;
        }
        let start = Instant::now();
        let message = save(&path, 9, &owned[id], 3, &session)
            .unwrap_err()
            .to_string();
        Some((message, start.elapsed()))
    });
    let (message, took) = outcomes[1].clone().unwrap();
    assert!(took < NOTICE_BOUND, "process 1 waited {took:?}: {message}");
    assert!(message.contains("process 0"), "{message}");
    assert!(checkpoint::list(root.path()).is_empty());
    assert!(!root.path().join("step_00000009").exists());
}

/// Each of 2 processes saves its `owned` shards at step 4 under `root`, which must fail on
/// every process; their error messages.
fn failed_saves(root: &Path, owned: Vec<Vec<LocalShard>>) -> Vec<String> {
    let (path, owned) = (root.to_path_buf(), Arc::new(owned));
    run_job(2, move |id, session| {
        let message = save(&path, 4, &owned[id], 3, &session)
            .unwrap_err()
            .to_string();
        session.finish().unwrap();
        message
    })
}

#[test]
fn shards_that_do_not_tile_their_arrays_fail_the_save_on_every_process() {
    // Process 1 also writes a copy of a shard process 0 owns: the shards overlap.
    let root = tempfile::tempdir().unwrap();
    let (_, mut owned) = layout(2, 6);
    let step_shard = owned[0].iter().find(|s| s.name == "step").unwrap().clone();
    owned[1].push(step_shard);
    let messages = failed_saves(root.path(), owned);
    for m in &messages {
        assert!(m.contains("the shards of `step` overlap"), "{m}");
        assert!(m.contains(&sharded::state_file_name(1, 2)), "{m}");
    }
    assert!(checkpoint::list(root.path()).is_empty());

    // Process 1 holds a shard whose bytes do not match its shape: nothing is written, and
    // both processes say why.
    let root = tempfile::tempdir().unwrap();
    let (_, mut owned) = layout(2, 7);
    owned[1][0].data.pop();
    let name = owned[1][0].name.clone();
    let messages = failed_saves(root.path(), owned);
    for m in &messages {
        assert!(
            m.contains("process 1") && m.contains(&format!("`{name}`")),
            "{m}"
        );
    }
    assert!(checkpoint::list(root.path()).is_empty());
}

#[test]
fn a_checkpoint_directory_that_not_every_process_sees_is_an_error() {
    // Process 1 writes under another directory, as on a host whose disk is its own.
    for other_has_a_tmp_dir in [false, true] {
        let (shared, own) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        if other_has_a_tmp_dir {
            std::fs::create_dir(own.path().join(sharded::job_tmp_dir_name(6))).unwrap();
        }
        let (_, owned) = layout(2, 9);
        let roots = Arc::new([shared.path().to_path_buf(), own.path().to_path_buf()]);
        let owned = Arc::new(owned);
        let messages = run_job(2, move |id, session| {
            let message = save(&roots[id], 6, &owned[id], 3, &session)
                .unwrap_err()
                .to_string();
            session.finish().unwrap();
            message
        });
        let expected = match other_has_a_tmp_dir {
            true => "but process 0 sees nothing",
            false => "process 1 does not see",
        };
        for m in &messages {
            assert!(m.contains(expected), "{m}");
            assert!(m.contains("a filesystem every process sees"), "{m}");
        }
        assert!(checkpoint::list(shared.path()).is_empty());
    }
}

/// A checkpoint of the test state written by one process holding every shard.
fn one_process_checkpoint(root: &Path) -> (PathBuf, BTreeMap<String, HostArray>) {
    let (global, owned) = layout(1, 8);
    let dir = save(root, 3, &owned[0], 3, &SingleProcess::default()).unwrap();
    (dir, global)
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// Index of the shard of `array` in the manifest's first file.
fn shard_index(manifest: &serde_json::Value, array: &str) -> usize {
    manifest["files"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["array"] == array)
        .unwrap()
}

#[test]
fn corrupt_missing_overlapping_and_absent_shards_are_refused_naming_them() {
    let root = tempfile::tempdir().unwrap();
    let (dir, global) = one_process_checkpoint(root.path());
    assert!(checkpoint::load(&dir).unwrap().state == global);
    let file = dir.join(sharded::state_file_name(0, 1));
    let good = std::fs::read(&file).unwrap();
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let load_error = || checkpoint::load(&dir).unwrap_err().to_string();
    let file_name = sharded::state_file_name(0, 1);

    let mut bad = good.clone();
    let at = bad.len() - 3;
    bad[at] ^= 0x10;
    std::fs::write(&file, &bad).unwrap();
    let e = load_error();
    assert!(e.contains(&file_name) && e.contains("corrupt"), "{e}");

    std::fs::remove_file(&file).unwrap();
    let e = load_error();
    assert!(e.contains(&file_name) && e.contains("cannot read"), "{e}");
    std::fs::write(&file, &good).unwrap();

    // A shard of `params.w` left out of the manifest: the array has a hole.
    edit_manifest(&dir, |m| {
        let i = shard_index(m, "params.w");
        m["files"][0]["shards"].as_array_mut().unwrap().remove(i);
    });
    let e = load_error();
    assert!(e.contains("`params.w`") && e.contains("missing"), "{e}");
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();

    // A shard of `opt.mu` listed twice: it overlaps itself.
    edit_manifest(&dir, |m| {
        let shard = m["files"][0]["shards"][shard_index(m, "opt.mu")].clone();
        m["files"][0]["shards"].as_array_mut().unwrap().push(shard);
    });
    let e = load_error();
    assert!(e.contains("`opt.mu`") && e.contains("overlap"), "{e}");
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();

    // The manifest says a shard is bf16 where the file holds f32.
    edit_manifest(&dir, |m| m["tensors"]["params.w"]["dtype"] = "bf16".into());
    let e = load_error();
    assert!(e.contains(&file_name) && e.contains("`params.w`"), "{e}");
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();

    // A build that reads version 2 refuses version 3 by its version.
    edit_manifest(&dir, |m| m["version"] = 3.into());
    let e = load_error();
    assert!(e.contains("format version 3"), "{e}");
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    assert!(checkpoint::load(&dir).unwrap().state == global);
}
