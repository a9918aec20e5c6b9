//! `vishwam train --validate-setup` and `--precision` through the binary on the CPU plugin:
//! a good tiny setup passes every check and writes nothing; a missing data path, a step that
//! does not fit a `--memory-gib` budget and a plugin that cannot be loaded each fail with a
//! non-zero exit and a verdict naming the problem, with the independent checks still
//! reported; `--precision auto` on the CPU chooses f32 and trains bit for bit as the default.

mod common;

use common::{succeeded, vishwam_cli};
use std::path::Path;

/// A tiny model on the built-in Brown corpus (its 512-token tokenizer is trained once and
/// cached in the vishwam home).
///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.max_steps=3",
    "training.learning_rate=0.003",
    "logging.eval_every=0",
    "logging.log_every=1",
    "runtime.compile_cache=false",
];

/// Every check, in the order they are printed.
const CHECKS: [&str; 10] = [
    "config",
    "plugin",
    "devices",
    "precision",
    "data sources",
    "tokenizer",
    "data",
    "compile",
    "memory",
    "step",
];

/// `vishwam train` with the tiny sets, `extra` sets, its output in `out`, then `more`.
fn train(out: &Path, extra: &[&str], more: &[&str]) -> std::process::Output {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    let output_dir = format!("logging.output_dir={}", out.display());
    for s in common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .chain(extra)
        .chain([&output_dir.as_str()])
    {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    vishwam_cli(&vishwam::paths::vishwam_home(), &args)
}

/// The printed line of each check, by name (`✓`, `✗` or `-` first).
fn check_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (mark, rest) = line.split_once(' ')?;
            if !["✓", "✗", "-"].contains(&mark) {
                return None;
            }
            let (name, _) = rest.split_once(':')?;
            Some((name.to_string(), line.to_string()))
        })
        .collect()
}

/// The mark of check `name` (panics if it was not printed).
fn mark(lines: &[(String, String)], name: &str) -> char {
    let (_, line) = lines
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}` line in {lines:?}"));
    line.chars().next().unwrap()
}

/// The stdout of a validation that must have failed with exit status 1.
fn invalid(output: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn a_good_setup_passes_every_check_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let stdout = succeeded(train(&out, &[], &["--validate-setup"]));
    let lines = check_lines(&stdout);
    let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, CHECKS, "{stdout}");
    for name in CHECKS {
        assert_eq!(mark(&lines, name), '✓', "{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("setup valid"), "{stdout}");
    // The CPU plugin reports no device memory: the compiled figure is shown, not checked.
    assert!(
        stdout.contains("device memory not reported by this plugin"),
        "{stdout}"
    );
    assert!(stdout.contains("precision: auto"), "{stdout}");
    assert!(
        !out.exists(),
        "--validate-setup wrote into the output directory"
    );
}

/// A config with `training.batch_size: "auto"` (as `vishwam plan` users write them) is
/// checked as `vishwam train` would run it: the batch is resolved from the memory budget
/// first (its own line), then compiled, measured and stepped.
#[test]
fn an_auto_batch_is_resolved_before_the_step_is_checked() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let stdout = succeeded(train(
        &out,
        &[
            "training.batch_size=\"auto\"",
            "training.global_batch_size=16",
            "training.memory_gib=1",
        ],
        &["--validate-setup"],
    ));
    let lines = check_lines(&stdout);
    for name in ["batch", "compile", "memory", "step"] {
        assert_eq!(mark(&lines, name), '✓', "{name}: {stdout}");
    }
    let batch = &lines.iter().find(|(n, _)| n == "batch").unwrap().1;
    assert!(batch.contains("= 16 sequences per step"), "{batch}");
    assert_eq!(stdout.lines().last(), Some("setup valid"), "{stdout}");
    assert!(
        !out.exists(),
        "--validate-setup wrote into the output directory"
    );
}

#[test]
fn a_missing_data_path_fails_naming_it_and_the_other_checks_still_run() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-corpus.txt");
    let source = format!("data.source={}", missing.display());
    let stdout = invalid(train(
        &root.path().join("run"),
        &[&source],
        &["--validate-setup"],
    ));
    let lines = check_lines(&stdout);
    for name in ["config", "plugin", "devices", "compile"] {
        assert_eq!(mark(&lines, name), '✓', "{name}: {stdout}");
    }
    assert_eq!(mark(&lines, "data sources"), '✗', "{stdout}");
    assert_eq!(mark(&lines, "step"), '-', "{stdout}");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("setup invalid: data sources:")
            && verdict.contains(&missing.display().to_string()),
        "{stdout}"
    );
}

#[test]
fn a_step_larger_than_the_memory_budget_fails_before_running() {
    let root = tempfile::tempdir().unwrap();
    // The tiny step compiles to about 12 MiB on the CPU (arguments, outputs, temporaries):
    // far more than 1 MiB, far less than 1 GiB.
    let stdout = invalid(train(
        &root.path().join("run"),
        &[],
        &["--validate-setup", "--memory-gib", "0.001"],
    ));
    let lines = check_lines(&stdout);
    assert_eq!(mark(&lines, "memory"), '✗', "{stdout}");
    assert_eq!(mark(&lines, "step"), '-', "{stdout}");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("setup invalid: memory: the step needs")
            && verdict.contains("more than the 0.001 GiB of --memory-gib"),
        "{stdout}"
    );
    let stdout = succeeded(train(
        &root.path().join("run"),
        &[],
        &[
            "--validate-setup",
            "--memory-gib",
            "1",
            "--precision",
            "bf16",
        ],
    ));
    assert!(stdout.contains("of the 1 GiB of --memory-gib"), "{stdout}");
    assert!(
        stdout.contains("✓ precision: bf16 (--precision); compute bf16"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_that_cannot_be_loaded_fails_and_nothing_is_compiled() {
    let root = tempfile::tempdir().unwrap();
    let plugin = root.path().join("notaplugin.so");
    std::fs::write(&plugin, b"not a shared library").unwrap();
    let plugin = plugin.display().to_string();
    let stdout = invalid(train(
        &root.path().join("run"),
        &[],
        &["--validate-setup", "--platform", "cpu", "--plugin", &plugin],
    ));
    let lines = check_lines(&stdout);
    assert_eq!(mark(&lines, "plugin"), '✗', "{stdout}");
    for name in ["devices", "precision", "compile", "memory", "step"] {
        assert_eq!(mark(&lines, name), '-', "{name}: {stdout}");
    }
    // The data does not need the plugin: it is still checked.
    assert_eq!(mark(&lines, "data"), '✓', "{stdout}");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("setup invalid: plugin:") && verdict.contains(&plugin),
        "{stdout}"
    );
}

/// The per-step losses of a run, as written (bit for bit).
fn losses(run_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            record.get("loss").map(|v| v.to_string())
        })
        .collect()
}

#[test]
fn precision_auto_on_the_cpu_is_f32_and_trains_as_the_default() {
    let root = tempfile::tempdir().unwrap();
    let default_run = root.path().join("default");
    succeeded(train(&default_run, &[], &[]));
    let auto_run = root.path().join("auto");
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    let output_dir = format!("logging.output_dir={}", auto_run.display());
    for s in common::TINY_MODEL
        .iter()
        .chain(TINY_RUN)
        .chain([&output_dir.as_str()])
    {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend(["--precision".to_string(), "auto".into()]);
    // At info level, to read the start-up log.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::vishwam_command(&vishwam::paths::vishwam_home(), &args)
        .env("VISHWAM_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    succeeded(out);
    assert!(
        log.contains("precision auto: f32 (CPU: no faster low-precision matmul"),
        "{log}"
    );
    let (default_losses, auto_losses) = (losses(&default_run), losses(&auto_run));
    assert_eq!(default_losses.len(), 3);
    assert_eq!(
        auto_losses, default_losses,
        "the same f32 program on the same machine"
    );

    // An unknown precision is refused with the allowed values.
    let out = train(&root.path().join("bad"), &[], &["--precision", "fp4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown precision `fp4`; expected one of auto, f32, bf16, f16, fp8"),
        "{err}"
    );
}
