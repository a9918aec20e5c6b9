//! Checkpoints written by an earlier vishwam still resume, through the binary: the committed
//! fixtures in `tests/fixtures/checkpoints_v1/` (format version 1, written by vishwam at
//! fc2b99c before the train state became one typed `TrainState`; their README says how) are
//! continued for two steps with `--resume-from`, and a copy with one tensor removed is
//! refused with an error naming it. The fixture rewritten as a sharded checkpoint (format
//! version 2, its arrays cut in halves) resumes exactly as the fixture does.

mod common;

use common::{failed, succeeded, vishwam_cli};
use std::path::{Path, PathBuf};
use vishwam::engine::HostArray;
use vishwam::train::checkpoint::sharded::{self, save_sharded, LocalShard};
use vishwam::train::checkpoint::{self, Checkpoint, SingleProcess};

/// The model, data and run of both fixtures (their `model`, `data` and `sequence` sections
/// must match what the fixtures recorded, or the resume is refused): 16 wide rather than the
/// 32 of the other tiny tests so that each fixture stays under 200 KB.
const TINY: &[&str] = &[
    "model.vocab_size=512",
    "model.hidden_dim=16",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.max_seq_len=64",
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.eval_steps=1",
    "data.val_fraction=0.05",
    "logging.eval_every=0",
    "logging.log_every=1",
    "logging.save_every=1",
    "runtime.compile_cache=false",
    "training.max_steps=5",
];

/// Dense, f16 compute with a dynamic loss scale and FP8 projections with delayed scaling:
/// every kind of slot
/// (parameters, both AdamW moments, step, random state, loss scale, good steps, amax
/// histories).
const DENSE_FP8: &[&str] = &[
    "model.mlp_dim=32",
    "optimization.use_dynamic_scale=true",
    "optimization.use_fp8=true",
];

/// Mixture of experts with loss-free balancing (router bias buffers), two micro-batches.
const MOE_LOSSFREE: &[&str] = &[
    "model.use_moe=true",
    "model.num_experts=4",
    "model.expert_dim=8",
    "model.use_lossfreebalance=true",
    "training.grad_accum_steps=2",
];

/// The step every fixture was written at.
const FIXTURE_STEP: u64 = 3;
/// Steps the resumed run adds.
const MORE_STEPS: u64 = 2;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoints_v1")
        .join(case)
        .join(checkpoint::step_dir_name(FIXTURE_STEP))
}

/// A copy of the fixture `case` under `dir` (a test must not be able to change a committed
/// file). Its data position carries the fingerprint of checkpoints before content
/// fingerprints, `tokenizer:source:documents:tokens:val_fraction:add_bos` with a `source`
/// part that hashed the corpus files' paths and modification times (different on every
/// machine): resuming it checks that such checkpoints still resume, on the other parts.
fn copy_fixture(case: &str, dir: &Path) -> PathBuf {
    let from = fixture(case);
    let to = dir.join(case).join(from.file_name().unwrap());
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(to.join("manifest.json")).unwrap()).unwrap();
    let saved = manifest["data_position"]["data_fingerprint"]
        .as_str()
        .unwrap();
    let parts: Vec<&str> = saved.split(':').collect();
    assert!(
        parts.len() == 6 && !parts[1].starts_with("sha256-"),
        "{case}: a path-and-time fingerprint {saved}"
    );
    to
}

/// Runs `vishwam train --resume-from step_dir` with the tiny settings and `extra`, writing
/// into `out`.
fn resume(step_dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    train(out, extra, Some(step_dir))
}

/// Runs `vishwam train` with the tiny settings and `extra` (the later `--set` wins), writing
/// into `out`, resuming from `step_dir` when given.
fn train(out: &Path, extra: &[&str], step_dir: Option<&Path>) -> std::process::Output {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    let output_dir = format!("logging.output_dir={:?}", out.to_string_lossy());
    for set in TINY
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .chain([output_dir])
    {
        args.extend(["--set".to_string(), set]);
    }
    if let Some(step_dir) = step_dir {
        args.extend([
            "--resume-from".to_string(),
            step_dir.to_string_lossy().into_owned(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vishwam_cli(&vishwam::paths::vishwam_home(), &args)
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

fn scalar_i32(ck: &Checkpoint, name: &str) -> i32 {
    ck.state[name].to_vec::<i32>().unwrap()[0]
}

/// Resumes the fixture `case` for two steps and checks that the run continued the fixture's
/// state: steps 4 and 5 with finite losses, a checkpoint at each, the same tensors (names,
/// dtypes, shapes) as the fixture, the state's step counter and the data position carried on.
/// Returns the fixture and the last checkpoint of the resumed run.
fn resumes_for_two_steps(case: &str, extra: &[&str]) -> (Checkpoint, Checkpoint) {
    let tmp = tempfile::tempdir().unwrap();
    let step_dir = copy_fixture(case, tmp.path());
    let out = tmp.path().join("resumed");
    succeeded(resume(&step_dir, &out, extra));

    let losses = losses(&out);
    let steps: Vec<u64> = losses.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [4, 5], "{case}: the resumed run's steps");
    for (step, loss) in &losses {
        assert!(loss.is_finite(), "{case}: step {step} loss {loss}");
    }
    let written: Vec<u64> = checkpoint::list(&out.join("checkpoints"))
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(written, [4, 5], "{case}: the resumed run's checkpoints");

    let before = checkpoint::load(&step_dir).unwrap();
    assert_eq!(before.manifest.version, 1, "{case}: the fixture's format");
    assert_eq!(before.manifest.step, FIXTURE_STEP);
    let after = checkpoint::load(&checkpoint::latest(&out.join("checkpoints")).unwrap()).unwrap();
    assert_eq!(after.manifest.step, FIXTURE_STEP + MORE_STEPS);
    // The resumed run's state has exactly the fixture's slots, each with its dtype and shape.
    assert_eq!(
        after.manifest.tensors, before.manifest.tensors,
        "{case}: the tensors of the resumed run's checkpoint"
    );
    // The step counter in the state and the data loader's position went on from the
    // fixture's (a fresh state would count from 0).
    assert_eq!(scalar_i32(&before, "step"), FIXTURE_STEP as i32);
    assert_eq!(
        scalar_i32(&after, "step"),
        (FIXTURE_STEP + MORE_STEPS) as i32
    );
    let next_batch = |ck: &Checkpoint| ck.manifest.data_position["next_batch"].as_u64();
    assert_eq!(next_batch(&before), Some(FIXTURE_STEP));
    assert_eq!(next_batch(&after), Some(FIXTURE_STEP + MORE_STEPS));
    (before, after)
}

#[test]
fn a_dense_fp8_dynamic_scale_checkpoint_of_format_1_resumes_with_its_state() {
    let (before, after) = resumes_for_two_steps("dense_fp8", DENSE_FP8);
    // Every step applied its update: the scaled gradient of the mean loss over 512 tokens is at
    // most 2^16 / 512 = 128 per logit, far below the f16 limit (65504), and FP8 casts saturate
    // rather than overflow. So the loss scale was kept bit for bit (it grows only after 2000
    // good steps) and the good-step count went on from the fixture's (a fresh state's would
    // be 2).
    assert_eq!(
        after.state["loss_scale"], before.state["loss_scale"],
        "the loss scale"
    );
    assert_eq!(
        scalar_i32(&after, "good_steps"),
        scalar_i32(&before, "good_steps") + MORE_STEPS as i32
    );
    // Each amax history holds the newest step first: two steps later the fixture's history
    // sits two places further on, bit for bit.
    let histories: Vec<&String> = before
        .state
        .keys()
        .filter(|n| n.starts_with("fp8.") && n.ends_with(".amax_history"))
        .collect();
    assert_eq!(histories.len(), 2, "one amax history per layer");
    let shift = MORE_STEPS as usize;
    for name in histories {
        let (old, new) = (&before.state[name], &after.state[name]);
        let len = old.shape[1] as usize;
        let (old, new) = (old.to_vec::<f32>().unwrap(), new.to_vec::<f32>().unwrap());
        assert!(
            old.iter().any(|&a| a > 0.0),
            "{name}: the fixture's history"
        );
        for (r, (old_row, new_row)) in old.chunks(len).zip(new.chunks(len)).enumerate() {
            let kept: Vec<u32> = old_row[..len - shift].iter().map(|a| a.to_bits()).collect();
            let moved: Vec<u32> = new_row[shift..].iter().map(|a| a.to_bits()).collect();
            assert_eq!(moved, kept, "{name} row {r}");
        }
    }
}

#[test]
fn a_moe_lossfree_checkpoint_of_format_1_resumes_with_its_state() {
    let (before, _) = resumes_for_two_steps("moe_lossfree", MOE_LOSSFREE);
    let router_biases = before
        .state
        .keys()
        .filter(|n| n.ends_with(".moe.router_bias"))
        .count();
    assert_eq!(router_biases, 2, "one router bias per MoE layer");
}

/// Writes `ck` into `dir` without the tensor `missing`, in the fixture's own manifest (the
/// state file rewritten and its checksum updated, so that only the tensor is missing).
fn without_tensor(ck: &Checkpoint, missing: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = ck
        .state
        .iter()
        .filter(|(name, _)| name.as_str() != missing)
        .map(|(name, array)| (name.clone(), view(array)))
        .collect();
    let bytes = safetensors::serialize(views, &None).unwrap();
    std::fs::write(dir.join("state.safetensors"), &bytes).unwrap();
    let text = std::fs::read_to_string(ck.dir.join("manifest.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tensors = manifest["tensors"].as_object_mut().unwrap();
    assert!(
        tensors.remove(missing).is_some(),
        "{missing} in the fixture"
    );
    use sha2::Digest;
    manifest["state_sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn view(array: &HostArray) -> safetensors::tensor::TensorView<'_> {
    use safetensors::Dtype;
    use vishwam::runtime::ElementType;
    let dtype = match array.element_type {
        ElementType::F32 => Dtype::F32,
        ElementType::S32 => Dtype::I32,
        ElementType::U64 => Dtype::U64,
        other => panic!("no fixture tensor is {}", other.mlir_name()),
    };
    let shape = array.shape.iter().map(|&d| d as usize).collect();
    safetensors::tensor::TensorView::new(dtype, shape, &array.data).unwrap()
}

#[test]
fn a_format_1_checkpoint_missing_a_tensor_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = checkpoint::load(&fixture("dense_fp8")).unwrap();
    let missing = "opt.m.layers.1.attn.wq";
    let broken = tmp
        .path()
        .join("broken")
        .join(checkpoint::step_dir_name(FIXTURE_STEP));
    without_tensor(&fixture, missing, &broken);
    // The broken copy is itself a consistent checkpoint; only the run's state lacks a slot.
    assert!(!checkpoint::load(&broken)
        .unwrap()
        .state
        .contains_key(missing));
    let out = tmp.path().join("resumed");
    let err = failed(resume(&broken, &out, DENSE_FP8));
    assert!(err.contains(&format!("`{missing}`")), "{err}");
    assert!(checkpoint::list(&out.join("checkpoints")).is_empty());
}

/// `count` Brown files (installed on first use), copied into `dir`.
fn brown_copy(dir: &Path, count: usize) {
    let brown = vishwam::data::BrownFetcher::new(vishwam::paths::datasets_dir())
        .ensure_text()
        .unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&brown)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::create_dir_all(dir).unwrap();
    for file in files.iter().take(count) {
        std::fs::copy(file, dir.join(file.file_name().unwrap())).unwrap();
    }
}

/// A checkpoint names its data by content: a run resumes on its corpus copied to another
/// directory (other paths, other modification times, as on another machine or after the
/// corpus was downloaded again) and the original deleted, and refuses the copy once one
/// file's text has changed.
#[test]
fn a_run_resumes_on_its_corpus_moved_elsewhere_and_refuses_changed_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, moved, changed) = (
        tmp.path().join("corpus"),
        tmp.path().join("moved/corpus"),
        tmp.path().join("changed"),
    );
    brown_copy(&first, 40);
    let source = |dir: &Path| format!("data.source={:?}", dir.to_string_lossy());
    let out = tmp.path().join("run");
    succeeded(train(
        &out,
        &[&source(&first), "training.max_steps=2"],
        None,
    ));
    let step_dir = checkpoint::latest(&out.join("checkpoints")).unwrap();

    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&first, &changed).unwrap();
    brown_copy(&moved, 40);
    let resumed = tmp.path().join("resumed");
    succeeded(resume(
        &step_dir,
        &resumed,
        &[&source(&moved), "training.max_steps=4"],
    ));
    let steps: Vec<u64> = losses(&resumed).iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, [3, 4], "the resumed run's steps");

    // The same files with a few words more in one of them: other data.
    let mut names: Vec<PathBuf> = std::fs::read_dir(&changed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut text = std::fs::read_to_string(&names[7]).unwrap();
    text.push_str("\nThe committee said the report was late .\n");
    std::fs::write(&names[7], text).unwrap();
    let stderr = failed(resume(
        &step_dir,
        &tmp.path().join("refused"),
        &[&source(&changed), "training.max_steps=4"],
    ));
    assert!(stderr.contains("data fingerprint"), "{stderr}");
}

/// The state of `ck` cut as a multi-process run writes it: every array of two rows or more
/// in two halves along its first dimension (the second half starting at row `rows / 2`), the
/// others whole.
fn halves(ck: &Checkpoint) -> Vec<LocalShard> {
    let mut shards = Vec::new();
    for (name, array) in &ck.state {
        let rows = array.shape.first().copied().unwrap_or(1);
        let cuts = if array.shape.is_empty() || rows < 2 {
            vec![(0, rows)]
        } else {
            vec![(0, rows / 2), (rows / 2, rows)]
        };
        let row_bytes = array.data.len() / rows.max(1) as usize;
        for (from, to) in cuts {
            let mut start = vec![0; array.shape.len()];
            let mut shape = array.shape.clone();
            if let Some(first) = shape.first_mut() {
                (start[0], *first) = (from, to - from);
            }
            let bytes = match array.shape.is_empty() {
                true => array.data.clone(),
                false => array.data[from as usize * row_bytes..to as usize * row_bytes].to_vec(),
            };
            shards.push(LocalShard {
                name: name.clone(),
                element_type: array.element_type,
                global_shape: array.shape.clone(),
                start,
                shape,
                data: bytes,
            });
        }
    }
    shards
}

#[test]
fn the_fixture_rewritten_as_a_sharded_checkpoint_resumes_exactly_as_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let single = copy_fixture("dense_fp8", tmp.path());
    let ck = checkpoint::load(&single).unwrap();
    let sharded = save_sharded(
        &tmp.path().join("sharded"),
        FIXTURE_STEP,
        &halves(&ck),
        ck.manifest.config.clone(),
        ck.manifest.data_position.clone(),
        ck.manifest.batch,
        1,
        &SingleProcess::default(),
    )
    .unwrap();
    let rewritten = checkpoint::load(&sharded).unwrap();
    assert_eq!(rewritten.manifest.version, sharded::SHARDED_VERSION);
    assert!(rewritten.state == ck.state, "the assembled state");
    // One more step from each: the same losses and the same state, bit for bit.
    let one_more = [DENSE_FP8, &["training.max_steps=4"]].concat();
    let (from_single, from_sharded) = (tmp.path().join("a"), tmp.path().join("b"));
    succeeded(resume(&single, &from_single, &one_more));
    succeeded(resume(&sharded, &from_sharded, &one_more));
    assert_eq!(losses(&from_single), losses(&from_sharded));
    assert_eq!(losses(&from_sharded).len(), 1);
    let last = |run: &Path| {
        checkpoint::load(&checkpoint::latest(&run.join("checkpoints")).unwrap())
            .unwrap()
            .state
    };
    assert!(last(&from_single) == last(&from_sharded));
}
