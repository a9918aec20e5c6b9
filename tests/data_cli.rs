//! End to end: `vishwam tokenizer train`, `vishwam data prepare`, `merge --verify`, `verify`.

mod common;

use common::succeeded;
use std::path::Path;
use std::process::{Command, Output};

fn vishwam(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vishwam"))
        .args(args)
        .env("VISHWAM_HOME", home)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running the vishwam binary")
}

/// Writes `files` documents of pseudo-random words (a seeded LCG) into `dir`.
fn write_corpus(dir: &Path, files: usize, mut state: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let syllables = [
        "ka", "lo", "mi", "ter", "an", "so", "ru", "vel", "di", "ne", "qua", "zo",
    ];
    for f in 0..files {
        let mut text = String::new();
        for w in 0..(60 + f * 13 % 90) {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = (state >> 33) as usize;
            text.push_str(if w % 17 == 16 { ".\n" } else { " " });
            text.push_str(syllables[word % syllables.len()]);
            text.push_str(syllables[(word / 16) % syllables.len()]);
        }
        std::fs::write(dir.join(format!("doc{f:03}.txt")), text).unwrap();
    }
}

#[test]
fn train_prepare_merge_verify() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("a"), 30, 1);
    write_corpus(&r.join("b"), 12, 2);
    let p = |name: &str| r.join(name).to_string_lossy().into_owned();

    let out = succeeded(vishwam(
        &home,
        &[
            "tokenizer",
            "train",
            "--data",
            &p("a"),
            &p("b"),
            "--vocab-size",
            "320",
            "--min-frequency",
            "1",
            "--out",
            &p("tok.json"),
        ],
    ));
    assert!(out.contains("320 tokens; <pad>=0 <bos>=1 <eos>=2"), "{out}");

    let out = succeeded(vishwam(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p("a"),
            "--cache_dir",
            &p("ca"),
            "--tokenizer",
            &p("tok.json"),
            "--vocab-size",
            "384",
            "--verify",
        ],
    ));
    assert!(out.contains("30 documents"), "{out}");
    assert!(out.contains("OK (checksums"), "{out}");
    let glob = format!("{}/*.txt", p("b"));
    succeeded(vishwam(
        &home,
        &[
            "data",
            "prepare",
            "--input-dir",
            &glob,
            "--cache-dir",
            &p("cb"),
            "--tokenizer",
            &p("tok.json"),
        ],
    ));

    let out = succeeded(vishwam(
        &home,
        &[
            "data",
            "merge",
            "--datasets",
            &p("ca"),
            &p("cb"),
            "--weights",
            "0.7",
            "0.3",
            "--seed",
            "3",
            "--verify",
            "--out",
            &p("merged"),
        ],
    ));
    assert!(out.contains("weighted merge"), "{out}");
    assert!(
        out.contains("target  70.00%") && out.contains("target  30.00%"),
        "{out}"
    );
    let out = succeeded(vishwam(&home, &["data", "verify", &p("merged")]));
    assert!(out.contains("OK (checksums"), "{out}");
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("a"), 5, 7);
    let p = |name: &str| r.join(name).to_string_lossy().into_owned();
    succeeded(vishwam(
        &home,
        &[
            "tokenizer",
            "train",
            "--data",
            &p("a"),
            "--vocab-size",
            "300",
            "--min-frequency",
            "1",
            "--out",
            &p("tok.json"),
        ],
    ));

    let small_vocab = vishwam(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p("a"),
            "--cache_dir",
            &p("c"),
            "--tokenizer",
            &p("tok.json"),
            "--vocab-size",
            "100",
        ],
    );
    assert!(!small_vocab.status.success());
    let stderr = String::from_utf8_lossy(&small_vocab.stderr);
    assert!(
        stderr.contains("model.vocab_size 100 is smaller than the tokenizer's 300"),
        "{stderr}"
    );

    let missing = vishwam(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p("nope"),
            "--cache_dir",
            &p("c"),
            "--tokenizer",
            &p("tok.json"),
        ],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    let weights = vishwam(
        &home,
        &[
            "data",
            "merge",
            "--datasets",
            &p("c"),
            "--weights",
            "1",
            "2",
            "--out",
            &p("m"),
        ],
    );
    assert!(!weights.status.success());
    let stderr = String::from_utf8_lossy(&weights.stderr);
    assert!(stderr.contains("one weight per dataset (1)"), "{stderr}");
}
