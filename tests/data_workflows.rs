//! The data workflows of Blues-01 through the binary: prepare (without a tokenizer, from CSV,
//! with tiktoken's o200k_base) -> merge -> train on the result (`--data_cache_dir`,
//! `datasets.paths`, `data.source`), and the errors that keep bytes that are not text out.

mod common;

use common::{failed, succeeded, vishwam_cli};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// The words of the corpora; a trained model's sample and prompt must be made of them.
const WORDS: [&str; 12] = [
    "river", "stone", "garden", "light", "market", "winter", "music", "paper", "window", "silver",
    "forest", "letter",
];

/// `files` text files of random words in `dir`.
fn write_corpus(dir: &Path, files: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let words: Vec<&str> = (0..rng.gen_range(120..200))
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        std::fs::write(dir.join(format!("doc{f:02}.txt")), words.join(" ")).unwrap();
    }
}

/// A CSV file of `rows` rows whose `text` column holds random words, some quoted with commas,
/// quotes and line breaks inside.
fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut csv = String::from("id,text,label\n");
    for row in 0..rows {
        let words: Vec<&str> = (0..rng.gen_range(80..140))
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        let text = if row % 2 == 0 {
            format!(
                "\"{}, \"\"quoted\"\"\n{}\"",
                words[..40].join(" "),
                words[40..].join(" ")
            )
        } else {
            words.join(" ")
        };
        csv.push_str(&format!("{row},{text},l{row}\n"));
    }
    std::fs::write(path, csv).unwrap();
}

/// A tiny model's config training `steps` steps into `run`, with `data` as its data section.
fn tiny_config(root: &Path, name: &str, vocab: usize, data: serde_json::Value) -> String {
    let run = root.join(format!("run-{name}"));
    let mut config = serde_json::json!({
        "model": {"vocab_size": vocab, "hidden_dim": 32, "num_layers": 1, "num_heads": 2,
                  "max_seq_len": 32},
        "training": {"batch_size": 2, "max_steps": 3, "warmup_steps": 1},
        "logging": {"output_dir": run.to_string_lossy(), "save_every": 3, "eval_every": 3},
        "data": {"val_fraction": 0.2, "num_workers": 1},
        "runtime": {"compile_cache": false}
    });
    for (key, value) in data.as_object().unwrap() {
        config["data"][key] = value.clone();
    }
    let path = root.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

/// Checks that a training run's output shows a falling-or-finite loss and a sample of words
/// from the corpus (not shard bytes read as text).
fn assert_trained_on_words(out: &str) {
    assert!(out.contains("trained steps 0..3: loss"), "{out}");
    let sample = out
        .lines()
        .find(|l| l.starts_with("sample"))
        .unwrap_or_else(|| panic!("no sample line in {out}"));
    let words = WORDS.iter().filter(|w| sample.contains(*w)).count();
    assert!(words >= 3, "the sample shows no corpus text: {sample}");
    assert!(
        !sample.contains("VSH"),
        "shard bytes read as text: {sample}"
    );
}

/// Adds a `datasets` section mixing `paths` equally to the config file at `config`.
fn with_datasets(config: &str, paths: &[PathBuf]) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let paths: Vec<String> = paths.iter().map(|d| p(d)).collect();
    json["datasets"] = serde_json::json!({"paths": paths, "merge_strategy": "equal"});
    std::fs::write(config, json.to_string()).unwrap();
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[test]
fn prepare_without_tokenizer_and_from_csv_then_merge_and_train_on_the_merge() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("raw"), 16, 1);
    write_csv(&r.join("rows.csv"), 12, 2);

    // No --tokenizer: the byte-level BPE `train` would use, trained once and cached.
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p(&r.join("raw")),
            "--cache_dir",
            &p(&r.join("dc1")),
            "--vocab-size",
            "384",
        ],
    ));
    assert!(
        out.contains("tokenizer: a byte-level BPE of 384 tokens trained now"),
        "{out}"
    );
    assert!(out.contains("16 documents"), "{out}");
    let again = succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p(&r.join("raw")),
            "--cache_dir",
            &p(&r.join("dc1")),
            "--vocab-size",
            "384",
        ],
    ));
    assert!(again.contains("trained on these sources before"), "{again}");

    // Blues-01's spelling: --dataset x.csv --data_cache_dir DIR; one document per row.
    let tokenizer = p(&r.join("dc1/tokenizer.json"));
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "prepare",
            "--dataset",
            &p(&r.join("rows.csv")),
            "--data_cache_dir",
            &p(&r.join("dc2")),
            "--tokenizer",
            &tokenizer,
        ],
    ));
    assert!(out.contains("12 documents"), "{out}");

    let merged = r.join("merged");
    succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "merge",
            "--datasets",
            &p(&r.join("dc1")),
            &p(&r.join("dc2")),
            "--weights",
            "0.6",
            "0.4",
            "--out",
            &p(&merged),
        ],
    ));
    assert_eq!(
        std::fs::read(merged.join("tokenizer.json")).unwrap(),
        std::fs::read(&tokenizer).unwrap(),
        "the merge ships its inputs' tokenizer"
    );

    let config = tiny_config(r, "merged", 384, serde_json::json!({}));
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &config,
            "--data_cache_dir",
            &p(&merged),
            "--no-progress",
        ],
    ));
    assert_trained_on_words(&out);
    assert_eq!(
        std::fs::read(r.join("run-merged/tokenizer.json")).unwrap(),
        std::fs::read(&tokenizer).unwrap(),
        "the run's tokenizer is the dataset's"
    );
}

#[test]
fn datasets_paths_and_data_source_take_prepared_directories() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("a"), 10, 3);
    write_corpus(&r.join("b"), 8, 4);
    for (input, out) in [("a", "pa"), ("b", "pb")] {
        succeeded(vishwam_cli(
            &home,
            &[
                "data",
                "prepare",
                "--input_dir",
                &p(&r.join(input)),
                "--cache_dir",
                &p(&r.join(out)),
                "--vocab-size",
                "320",
            ],
        ));
    }
    // Both preparations trained on different text, so they made different tokenizers: a
    // mixture of them is refused, naming both hashes.
    let inputs = [r.join("pa"), r.join("pb")];
    let mixed = tiny_config(r, "mixed", 384, serde_json::json!({}));
    with_datasets(&mixed, &inputs);
    let err = failed(vishwam_cli(
        &home,
        &["train", "--config", &mixed, "--no-progress"],
    ));
    let hash = |dir: &str| {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.join(dir).join("manifest.json")).unwrap())
                .unwrap();
        manifest["tokenizer_hash"].as_str().unwrap().to_string()
    };
    assert!(
        err.contains(&hash("pa"))
            && err.contains(&hash("pb"))
            && err.contains("prepared dataset at"),
        "{err}"
    );

    // Prepared with one tokenizer, the mixture trains; data.tokenizer naming that same file
    // is accepted (the hash matches).
    succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p(&r.join("b")),
            "--cache_dir",
            &p(&r.join("pb")),
            "--tokenizer",
            &p(&r.join("pa/tokenizer.json")),
        ],
    ));
    let config = tiny_config(
        r,
        "mixture",
        384,
        serde_json::json!({"tokenizer": p(&r.join("pa/tokenizer.json"))}),
    );
    with_datasets(&config, &inputs);
    let out = succeeded(vishwam_cli(
        &home,
        &["train", "--config", &config, "--no-progress"],
    ));
    assert_trained_on_words(&out);

    // data.source naming a prepared dataset with another tokenizer: an error naming both.
    let other = r.join("other.json");
    succeeded(vishwam_cli(
        &home,
        &[
            "tokenizer",
            "train",
            "--data",
            &p(&r.join("b")),
            "--vocab-size",
            "300",
            "--out",
            &p(&other),
        ],
    ));
    let config = tiny_config(
        r,
        "mismatch",
        384,
        serde_json::json!({"source": p(&r.join("pa")), "tokenizer": p(&other)}),
    );
    let err = failed(vishwam_cli(
        &home,
        &["train", "--config", &config, "--no-progress"],
    ));
    let other_hash = {
        let out = succeeded(vishwam_cli(&home, &["tokenizer", "inspect", &p(&other)]));
        out.lines()
            .find_map(|l| l.strip_prefix("hash: "))
            .unwrap()
            .to_string()
    };
    assert!(
        err.contains(&hash("pa")) && err.contains(&other_hash) && err.contains(&p(&other)),
        "{err}"
    );

    // A prepared dataset without its tokenizer.json needs data.tokenizer.
    std::fs::remove_file(r.join("pb/tokenizer.json")).unwrap();
    let config = tiny_config(
        r,
        "bare",
        384,
        serde_json::json!({"source": p(&r.join("pb"))}),
    );
    let err = failed(vishwam_cli(
        &home,
        &["train", "--config", &config, "--no-progress"],
    ));
    assert!(
        err.contains("has no tokenizer.json") && err.contains(&hash("pb")),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_text_are_errors_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("text"), 4, 5);
    let prepare = |input: &Path, out: &str, extra: &[&str]| {
        let mut args = vec!["data", "prepare", "--vocab-size", "300"];
        let input = p(input);
        let out = p(&r.join(out));
        args.extend(["--input_dir", &input, "--cache_dir", &out]);
        args.extend(extra);
        vishwam_cli(&home, &args)
    };

    // Invalid UTF-8: the file and the byte offset, unless replacing is asked for.
    let latin1 = r.join("latin1");
    std::fs::create_dir_all(&latin1).unwrap();
    std::fs::write(
        latin1.join("notes.txt"),
        b"river stone caf\xe9 garden\n".repeat(20),
    )
    .unwrap();
    let err = failed(prepare(&latin1, "l1", &[]));
    assert!(
        err.contains("notes.txt: invalid UTF-8 at byte offset 15"),
        "{err}"
    );
    let out = succeeded(prepare(&latin1, "l1", &["--invalid-utf8", "replace"]));
    assert!(out.contains("1 documents"), "{out}");
    // The config key does the same for `train` and `prepare --config`.
    let config = tiny_config(
        r,
        "lossy",
        300,
        serde_json::json!({"source": p(&latin1), "invalid_utf8": "replace", "cache_dir": p(&r.join("cache"))}),
    );
    succeeded(vishwam_cli(
        &home,
        &["data", "prepare", "--config", &config],
    ));
    let config = tiny_config(
        r,
        "strict",
        300,
        serde_json::json!({"source": p(&latin1), "cache_dir": p(&r.join("cache"))}),
    );
    let err = failed(vishwam_cli(
        &home,
        &["data", "prepare", "--config", &config],
    ));
    assert!(err.contains("invalid UTF-8 at byte offset 15"), "{err}");

    // A prepared dataset's shard copied among text files, and a NUL byte: binary, refused.
    succeeded(prepare(&r.join("text"), "ok", &[]));
    let mixed = r.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(r.join("ok/shard-00000.tokens"), mixed.join("tokens.txt")).unwrap();
    let err = failed(prepare(&mixed, "m", &["--invalid-utf8", "replace"]));
    assert!(
        err.contains("tokens.txt is not a text file: the header of a vishwam token shard"),
        "{err}"
    );
    std::fs::remove_file(mixed.join("tokens.txt")).unwrap();
    std::fs::write(mixed.join("nul.txt"), b"river stone\x00garden").unwrap();
    let err = failed(prepare(&mixed, "m", &[]));
    assert!(
        err.contains("nul.txt is not a text file: a NUL byte at byte offset 11"),
        "{err}"
    );

    // A prepared dataset inside text sources is never read as text.
    std::fs::remove_file(mixed.join("nul.txt")).unwrap();
    std::fs::rename(r.join("ok"), mixed.join("ok")).unwrap();
    let err = failed(prepare(&mixed, "m", &[]));
    assert!(err.contains("is a prepared dataset"), "{err}");

    // A CSV without the text column names the columns it has.
    std::fs::write(r.join("cols.csv"), "id,body\n1,river stone\n").unwrap();
    let err = failed(prepare(&r.join("cols.csv"), "c", &[]));
    assert!(err.contains(r#"the columns are ["id", "body"]"#), "{err}");
    let out = succeeded(prepare(&r.join("cols.csv"), "c", &["--text-field", "body"]));
    assert!(out.contains("1 documents"), "{out}");

    // The same through a config: data.format "csv" and data.text_field naming the column.
    let csv = p(&r.join("cols.csv"));
    let cache = p(&r.join("cache"));
    let config = tiny_config(
        r,
        "csv",
        300,
        serde_json::json!({"source": csv, "format": "csv", "text_field": "body", "cache_dir": cache}),
    );
    let out = succeeded(vishwam_cli(
        &home,
        &["data", "prepare", "--config", &config],
    ));
    assert!(out.contains("1 documents"), "{out}");
    let config = tiny_config(
        r,
        "csv-as-text",
        300,
        serde_json::json!({"source": csv, "cache_dir": cache}),
    );
    let err = failed(vishwam_cli(
        &home,
        &["data", "prepare", "--config", &config],
    ));
    assert!(
        err.contains("data.format is `text` but") && err.contains("cols.csv is CSV"),
        "{err}"
    );

    // --data_cache_dir must name a prepared dataset.
    let config = tiny_config(r, "notprepared", 300, serde_json::json!({}));
    let err = failed(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &config,
            "--data_cache_dir",
            &p(&r.join("text")),
            "--no-progress",
        ],
    ));
    assert!(err.contains("is not a prepared dataset"), "{err}");
}

#[test]
fn tiktoken_o200k_base_prepare_then_train() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("raw"), 10, 6);
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "tokenizer",
            "inspect",
            "o200k_base",
            "--text",
            "hello world",
        ],
    ));
    assert!(out.contains("tokens: 200019"), "{out}");
    assert!(out.contains("ids (2): [24912, 2375]"), "{out}");
    assert!(out.contains("pad/bos/eos: 199999 199999 199999"), "{out}");

    let dataset: PathBuf = r.join("dt");
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            &p(&r.join("raw")),
            "--cache_dir",
            &p(&dataset),
            "--tokenizer",
            "o200k_base",
        ],
    ));
    assert!(out.contains("tokenizer: o200k_base"), "{out}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dataset.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["tokenizer_origin"], "o200k_base");
    assert_eq!(manifest["vocab_size"], 200_019);
    assert_eq!(manifest["dtype"], "u32");

    // The model must embed every o200k_base id.
    let small = tiny_config(
        r,
        "small",
        8192,
        serde_json::json!({"tokenizer": "o200k_base"}),
    );
    let err = failed(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &small,
            "--data_cache_dir",
            &p(&dataset),
            "--no-progress",
        ],
    ));
    assert!(
        err.contains("model.vocab_size 8192 is smaller than the tokenizer's 200019"),
        "{err}"
    );

    let config = tiny_config(
        r,
        "o200k",
        200_064,
        serde_json::json!({"tokenizer": "o200k_base"}),
    );
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &config,
            "--data_cache_dir",
            &p(&dataset),
            "--no-progress",
        ],
    ));
    assert_trained_on_words(&out);
}
