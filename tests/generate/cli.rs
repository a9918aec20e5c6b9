//! `vishwam train`, then `vishwam generate` and `vishwam eval` on its checkpoint.

use crate::common::{succeeded, vishwam_cli};
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
    succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &p(&r.join("tiny.json")),
            "--no-progress",
        ],
    ));

    let run_dir = p(&run);
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
