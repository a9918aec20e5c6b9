//! The example configurations of the VishwamAI configuration guide run as written.
//!
//! `configs/guide/` holds them verbatim: "Training on TPU v3-8", "Memory-Efficient
//! Configuration", and a file with every key of the guide at the value it lists (but
//! `distillation.teacher_model`). Each is trained through the binary on 8 virtual CPU devices
//! (`--platform cpu --devices 8`), shrunk only by `--set` for time (model size, sequence
//! length, steps, vocabulary) and pointed at a private output directory; the run must train
//! (finite losses), log the global batch the guide's per-device `batch_size` gives, and record
//! it in the checkpoint.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

/// The `--set` overrides every example gets: a small model, short windows, two steps.
const SMALLER: &[&str] = &[
    "model.num_layers=2",
    "model.hidden_dim=64",
    "model.num_heads=2",
    "model.mlp_dim=128",
    "model.vocab_size=512",
    "model.max_seq_len=16",
    "training.max_steps=2",
    "training.eval_steps=1",
];

fn guide_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/guide")
        .join(name)
}

/// Runs `vishwam train --config FILE --platform cpu --devices 8` with the shared home (the
/// built-in corpus and the CPU plugin live there) and info logs, one run at a time: runs with
/// the same tokenizer prepare the same dataset cache, which two processes must not write at
/// once.
fn train(config: &Path, out: &Path, extra: &[&str]) -> Output {
    let config = config.to_string_lossy();
    let head = ["--config", &config, "--platform", "cpu", "--devices", "8"];
    train_with(&head, out, extra)
}

/// `vishwam train ARGS --no-progress` with the smaller model, `extra` and `out` as `--set`s.
fn train_with(head: &[&str], out: &Path, extra: &[&str]) -> Output {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut args: Vec<String> = std::iter::once("train")
        .chain(head.iter().copied())
        .chain(["--no-progress"])
        .map(|s| s.to_string())
        .collect();
    let mut sets: Vec<String> = SMALLER.iter().map(|s| s.to_string()).collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets.push(format!("logging.output_dir={}", out.display()));
    for set in sets {
        args.extend(["--set".to_string(), set]);
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_vishwam"))
        .args(&args)
        .env("VISHWAM_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("running the vishwam binary")
}

/// What a finished run showed: its log (stderr), and the losses of its first and last step.
struct Trained {
    log: String,
    first_loss: f64,
    last_loss: f64,
}

fn trained(output: Output) -> Trained {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "failed:\n{stdout}\n{log}");
    // "trained steps 0..2: loss 6.2 -> 6.1, 1234 tokens/s"
    let line = stdout
        .lines()
        .find(|l| l.starts_with("trained steps 0..2: loss "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let losses = line["trained steps 0..2: loss ".len()..]
        .split(',')
        .next()
        .unwrap();
    let (first, last) = losses.split_once(" -> ").unwrap();
    Trained {
        log,
        first_loss: first.trim().parse().unwrap(),
        last_loss: last.trim().parse().unwrap(),
    }
}

/// Checks the global batch in the log and in the final checkpoint's manifest.
fn assert_global_batch(run: &Trained, out: &Path, per_shard: usize, shards: usize, accum: usize) {
    let global = per_shard * shards * accum;
    let expected = format!(
        "global batch: {per_shard} per shard (training.batch_size) x {shards} batch shards x \
         {accum} micro-batch{} (training.grad_accum_steps) = {global} sequences per step",
        if accum == 1 { "" } else { "es" }
    );
    assert!(
        run.log.contains(&expected),
        "no `{expected}` in\n{}",
        run.log
    );
    for loss in [run.first_loss, run.last_loss] {
        // A fresh model's loss is near ln(vocab) = ln(512) = 6.2; anything finite and
        // positive below twice that is a working step.
        assert!(loss.is_finite() && loss > 0.0 && loss < 12.5, "loss {loss}");
    }
    let manifest = out.join("checkpoints/step_00000002/manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(manifest["global_batch"], global, "{manifest:#}");
    assert_eq!(manifest["batch"]["per_shard"], per_shard);
    assert_eq!(manifest["batch"]["shards"], shards);
}

#[test]
fn the_tpu_v3_8_example_runs_as_written() {
    let out = tempfile::tempdir().unwrap();
    let run = trained(train(&guide_file("tpu_v3_8.json"), out.path(), &[]));
    // batch_size 8 is per device: 8 x 8 cores x grad_accum_steps 4 = 256 sequences.
    assert_global_batch(&run, out.path(), 8, 8, 4);
    assert!(run.log.contains("mesh data=8"), "{}", run.log);
    // block_size 128 is never ignored: it turns blocked attention on.
    assert!(run.log.contains("in blocks of 128"), "{}", run.log);
    assert!(run.log.contains("fp8 (f8E4M3FN forward"), "{}", run.log);
}

#[test]
fn the_memory_efficient_example_runs_as_written() {
    let out = tempfile::tempdir().unwrap();
    let run = trained(train(&guide_file("memory_efficient.json"), out.path(), &[]));
    // The default batch_size 8 per device over the 8 devices the mesh's -1 takes.
    assert_global_batch(&run, out.path(), 8, 8, 1);
    assert!(run.log.contains("KV cache f8E4M3FN"), "{}", run.log);
}

#[test]
fn every_key_of_the_guide_runs_at_the_value_it_lists() {
    let out = tempfile::tempdir().unwrap();
    let run = trained(train(
        &guide_file("every_key.json"),
        out.path(),
        // The listing's own head_dim (64) and sequence lengths (2048) shrink with the model.
        &["model.head_dim=32", "sequence.max_length=16"],
    ));
    assert_global_batch(&run, out.path(), 8, 8, 4);
    // tpu_topology 2x2x2 orders the 8 devices of the data=8 mesh over x, y and z, as
    // create_device_mesh does: device i sits at x = i % 2, y = i / 2 % 2, z = i / 4.
    assert!(
        run.log.contains("over devices [0, 4, 2, 6, 1, 5, 3, 7]"),
        "{}",
        run.log
    );
    // use_bfloat16 + use_fp8 + use_dynamic_scale: bf16 compute, FP8 projections and a dynamic
    // loss scale.
    assert!(run.log.contains("compute bf16"), "{}", run.log);
    assert!(run.log.contains("loss scale dynamic"), "{}", run.log);
    // pad_token_id 0 and eos_token_id 1: the trained tokenizer holds them there.
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("tokenizer.json")).unwrap())
            .unwrap();
    let added: Vec<(String, u64)> = tokenizer["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["content"].as_str().unwrap().to_string(),
                t["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        added,
        [
            ("<pad>".to_string(), 0),
            ("<eos>".to_string(), 1),
            ("<bos>".to_string(), 2)
        ]
    );
}

#[test]
fn the_platform_defaults_to_auto_and_says_what_it_picked() {
    // No --platform and no runtime.platform: "auto" picks what this machine has (the CPU
    // where neither libtpu nor the CUDA plugin is installed) and says why.
    let out = tempfile::tempdir().unwrap();
    let output = train_with(&[], out.path(), &["training.max_steps=1"]);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("runtime.platform auto: running on "))
        .unwrap_or_else(|| panic!("no start-up line for the platform:\n{log}"));
    assert!(
        ["cpu", "cuda", "tpu"]
            .iter()
            .any(|p| line.contains(&format!("running on {p} ("))),
        "{line}"
    );
}

#[test]
fn guide_examples_are_the_guide_verbatim() {
    // Spot checks that the files keep the guide's values (they are copied from it unchanged).
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(guide_file(name)).unwrap()).unwrap()
    };
    let tpu = read("tpu_v3_8.json");
    assert_eq!(tpu["training"]["batch_size"], 8);
    assert_eq!(tpu["optimization"]["block_size"], 128);
    assert!(tpu.get("runtime").is_none(), "the guide names no platform");
    let every = read("every_key.json");
    assert_eq!(every["tpu"]["tpu_topology"], "2x2x2");
    assert_eq!(every["model"]["vocab_size"], 131072);
    assert!(every["distillation"].get("teacher_model").is_none());
    let memory = read("memory_efficient.json");
    assert_eq!(memory["optimization"]["mixed_precision"], true);
}
