//! The data workflows of Blues-01 through the binary: prepare (without a tokenizer, from CSV,
//! with tiktoken's o200k_base) -> merge -> train on the result (`--data_cache_dir`,
//! `datasets.paths`, `data.source`). The errors that keep bytes that are not text out are in
//! `data_inputs.rs`.

mod common;
mod data_helpers;

use common::{failed, succeeded, vishwam_cli};
use data_helpers::{
    assert_prompt_is_corpus_text, p, tiny_config, with_datasets, write_corpus, write_csv,
};
use std::path::PathBuf;

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
    assert_prompt_is_corpus_text(&out);
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
    // merge of them is refused, saying how to prepare with one tokenizer...
    let err = failed(vishwam_cli(
        &home,
        &[
            "data",
            "merge",
            "--datasets",
            &p(&r.join("pa")),
            &p(&r.join("pb")),
            "--out",
            &p(&r.join("pm")),
        ],
    ));
    let fix = format!(
        "`vishwam data prepare --input_dir ... --cache_dir {} --tokenizer {}`",
        p(&r.join("pb")),
        p(&r.join("pa/tokenizer.json"))
    );
    assert!(err.contains(&fix), "{err}");
    // ... and so is a mixture of them in training, naming both hashes and the same fix.
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
            && err.contains("prepared dataset at")
            && err.contains("`vishwam data prepare ... --tokenizer DIR/tokenizer.json`")
            && !err.contains("leave it null"),
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
    assert_prompt_is_corpus_text(&out);

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

    // The config may name o200k_base's own end-of-text id (it is not a trained tokenizer's
    // 0..2, and need not be).
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
            "--set",
            "sequence.eos_token_id=199999",
            "--no-progress",
        ],
    ));
    assert_prompt_is_corpus_text(&out);
}
