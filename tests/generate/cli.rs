//! `vishwam train`, then `vishwam generate` and `vishwam eval` on its checkpoint.

use crate::common::{assert_sample_is_nucleus_sampling, succeeded, vishwam_cli};
use rand::{Rng, SeedableRng};

#[test]
fn generate_and_eval_commands_run_on_a_trained_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let words = ["ka", "lo", "mi", "ter", "an", "so", "ru", "vel"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for f in 0..8 {
        let text: Vec<&str> = (0..150)
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect();
        std::fs::create_dir_all(r.join("corpus")).unwrap();
        std::fs::write(r.join(format!("corpus/doc{f}.txt")), text.join(" ")).unwrap();
    }
    let run = r.join("run");
    let config = serde_json::json!({
        "model": {"vocab_size": 300, "hidden_dim": 32, "num_layers": 1, "num_heads": 2,
                  "max_seq_len": 32},
        "training": {"batch_size": 2, "max_steps": 2, "warmup_steps": 1},
        "logging": {"output_dir": run.to_string_lossy(), "save_every": 2, "eval_every": 2},
        "data": {"source": r.join("corpus").to_string_lossy(), "val_fraction": 0.2,
                 "num_workers": 1},
        "runtime": {"compile_cache": false}
    });
    std::fs::write(r.join("tiny.json"), config.to_string()).unwrap();
    let home = r.join("home");
    let p = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let train = |out: &std::path::Path| {
        let stdout = succeeded(vishwam_cli(
            &home,
            &[
                "train",
                "--config",
                &p(&r.join("tiny.json")),
                "--set",
                &format!("logging.output_dir={}", p(out)),
                "--no-progress",
            ],
        ));
        // The sample after training is seeded nucleus sampling (training.seed defaults to 42).
        let line = stdout
            .lines()
            .find(|l| l.starts_with("sample "))
            .unwrap_or_else(|| panic!("no sample line: {stdout}"))
            .to_string();
        assert!(
            line.starts_with("sample (top-p 0.9, T 0.8, seed 42): ") && line.contains('|'),
            "{line}"
        );
        line
    };
    let sample = train(&run);
    // The same run (same seed, same machine) prints the same sample.
    assert_eq!(train(&r.join("run_again")), sample);

    let run_dir = p(&run);
    // The sample is the run's weights sampled as the header says, not a greedy loop.
    assert_sample_is_nucleus_sampling(&home, &run, &sample);
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "generate",
            "--checkpoint",
            &run_dir,
            "--prompt",
            "ka lo",
            "--max_length",
            "6",
            "--greedy",
        ],
    ));
    assert!(
        out.starts_with("ka lo") && out.len() > "ka lo".len(),
        "{out}"
    );
    let sampled = |seed: &str| {
        succeeded(vishwam_cli(
            &home,
            &[
                "generate",
                "--checkpoint",
                &run_dir,
                "--prompt",
                "mi",
                "--prompt",
                "so ru",
                "--max_length",
                "5",
                "--top_k",
                "20",
                "--top_p",
                "0.9",
                "--seed",
                seed,
                "--kv_cache_fp8",
                "true",
            ],
        ))
    };
    let a = sampled("4");
    assert!(a.starts_with("[0] mi") && a.contains("\n[1] so ru"), "{a}");
    assert_eq!(a, sampled("4"), "same seed, same text");

    let out = succeeded(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run_dir,
            "--eval_text",
            "ka lo mi ter an so",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (loss, ppl) = (
        v["loss"].as_f64().unwrap(),
        v["perplexity"].as_f64().unwrap(),
    );
    assert!(loss > 0.0 && (ppl - loss.exp()).abs() <= 1e-9 * ppl, "{v}");
    assert_eq!(v["step"], 2);
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run_dir,
            "--data",
            &p(&r.join("corpus")),
        ],
    ));
    assert!(out.contains("perplexity"), "{out}");

    // As the Pufferfish README runs it: `--model RUN/checkpoints/latest` is the newest checkpoint.
    let greedy = |model_flag: &str, path: &str| {
        succeeded(vishwam_cli(
            &home,
            &[
                "generate",
                model_flag,
                path,
                "--prompt",
                "ka lo",
                "--max_length",
                "6",
                "--greedy",
            ],
        ))
    };
    let latest = p(&run.join("checkpoints").join("latest"));
    assert_eq!(greedy("--model", &latest), greedy("--checkpoint", &run_dir));
    let none = vishwam_cli(
        &home,
        &[
            "generate",
            "--model",
            &p(&r.join("corpus").join("latest")),
            "--prompt",
            "x",
        ],
    );
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success() && err.contains("`latest` stands for the newest"),
        "{err}"
    );

    let missing = vishwam_cli(
        &home,
        &[
            "generate",
            "--checkpoint",
            &p(&r.join("nope")),
            "--prompt",
            "x",
        ],
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no checkpoint at"), "{err}");
}

/// `verify`, `bench train` and `bench distill` run no training loop: the loop's flags
/// (`--resume`, `--no-progress`) are refused by the parser instead of being ignored.
#[test]
fn commands_without_a_training_loop_refuse_its_flags() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["verify", "--resume"][..],
        &["verify", "--no-progress"],
        &["bench", "train", "--resume"],
        &["bench", "train", "--no-progress"],
        &["bench", "distill", "--resume"],
        &["bench", "distill", "--no-progress"],
    ] {
        let out = vishwam_cli(home.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = args[args.len() - 1];
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("unexpected argument '{flag}'")),
            "{args:?}: {err}"
        );
    }
}
