//! `vishwam train` a teacher, then `vishwam distill` a student from its run directory; the
//! commands refuse what they cannot do.

use crate::common::{assert_sample_is_nucleus_sampling, failed, succeeded, vishwam_cli};
use rand::{Rng, SeedableRng};
use std::path::Path;

#[test]
fn distill_command_trains_a_student_from_a_trained_teacher() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let words = ["ka", "lo", "mi", "ter", "an", "so", "ru", "vel"];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    std::fs::create_dir_all(r.join("corpus")).unwrap();
    for f in 0..8 {
        let text: Vec<&str> = (0..150)
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect();
        std::fs::write(r.join(format!("corpus/doc{f}.txt")), text.join(" ")).unwrap();
    }
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let (teacher_run, student_run) = (r.join("teacher"), r.join("student"));
    let common = serde_json::json!({
        "training": {"batch_size": 2, "max_steps": 2, "warmup_steps": 1},
        "data": {"source": p(&r.join("corpus")), "val_fraction": 0.2, "num_workers": 1},
        "runtime": {"compile_cache": false}
    });
    let mut teacher = common.clone();
    teacher["model"] = serde_json::json!({"vocab_size": 300, "hidden_dim": 48,
        "num_layers": 2, "num_heads": 4, "max_seq_len": 32});
    teacher["logging"] = serde_json::json!({"output_dir": p(&teacher_run), "eval_every": 0});
    std::fs::write(r.join("teacher.json"), teacher.to_string()).unwrap();
    let mut student = common;
    student["model"] = serde_json::json!({"vocab_size": 300, "hidden_dim": 32,
        "num_layers": 1, "num_heads": 2, "max_seq_len": 32});
    student["logging"] =
        serde_json::json!({"output_dir": p(&student_run), "eval_every": 0, "log_every": 1});
    student["distillation"] = serde_json::json!({"teacher_model": p(&teacher_run),
        "use_intermediate_distillation": true, "intermediate_layer_mapping": "last"});
    std::fs::write(r.join("student.json"), student.to_string()).unwrap();
    let home = r.join("home");

    succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &p(&r.join("teacher.json")),
            "--no-progress",
        ],
    ));
    let stderr = failed(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &p(&r.join("student.json")),
            "--no-progress",
        ],
    ));
    assert!(stderr.contains("run `vishwam distill`"), "{stderr}");

    let out = succeeded(vishwam_cli(
        &home,
        &[
            "distill",
            "--config",
            &p(&r.join("student.json")),
            "--no-progress",
        ],
    ));
    assert!(out.contains("validation: loss"), "{out}");
    // The student's sample, as `vishwam train` prints it: seeded nucleus sampling of the
    // student's final weights, which `vishwam generate` reproduces from its checkpoint.
    let sample = out
        .lines()
        .find(|l| l.starts_with("sample "))
        .unwrap_or_else(|| panic!("no sample line: {out}"));
    assert_sample_is_nucleus_sampling(&home, &student_run, sample);
    let metrics = std::fs::read_to_string(student_run.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in ["loss", "ce", "kl", "intermediate"] {
        assert!(first[key].is_number(), "{key} missing: {first}");
    }
    // The student's token accuracy on its batch, from the distillation loss's own pass.
    let accuracy = first["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{first}");
    let ck = student_run.join("checkpoints").join("step_00000002");
    assert!(ck.join("manifest.json").is_file());

    // Without a teacher, or with a teacher of another vocabulary, distill refuses to start.
    let stderr = failed(vishwam_cli(
        &home,
        &[
            "distill",
            "--config",
            &p(&r.join("student.json")),
            "--set",
            "distillation.teacher_model=null",
        ],
    ));
    assert!(
        stderr.contains("distillation.teacher_model is not set"),
        "{stderr}"
    );
    let stderr = failed(vishwam_cli(
        &home,
        &[
            "distill",
            "--config",
            &p(&r.join("student.json")),
            "--set",
            "model.vocab_size=320",
        ],
    ));
    assert!(
        stderr.contains("teacher's vocabulary has 300 tokens"),
        "{stderr}"
    );
}
