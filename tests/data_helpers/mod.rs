//! Helpers of the data workflow tests (`data_workflows.rs`, `data_inputs.rs`): corpora of
//! random words, CSV files, tiny training configs, and the check that a run trained on text.
//!
//! A test file includes it with `mod data_helpers;`; not every file uses every helper.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// The words of the corpora; a trained model's prompt must be made of them.
pub const WORDS: [&str; 12] = [
    "river", "stone", "garden", "light", "market", "winter", "music", "paper", "window", "silver",
    "forest", "letter",
];

/// The one other word of the CSV corpora (inside quotes).
pub const CSV_WORD: &str = "quoted";

/// `files` text files of random words in `dir`.
pub fn write_corpus(dir: &Path, files: usize, seed: u64) {
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
pub fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut csv = String::from("id,text,label\n");
    for row in 0..rows {
        let words: Vec<&str> = (0..rng.gen_range(80..140))
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        let text = if row % 2 == 0 {
            format!(
                "\"{}, \"\"{CSV_WORD}\"\"\n{}\"",
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

/// A tiny model's config training 3 steps into `root/run-NAME`, with `data` merged into its
/// data section; returns the config file's path.
pub fn tiny_config(root: &Path, name: &str, vocab: usize, data: serde_json::Value) -> String {
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

/// Checks that a training run finished and trained on the corpus text, not on shard bytes read
/// as text (the symptom was a sample prompt like `VSHORIGN|...`): the sample's prompt (the
/// validation text before `|`) is made of corpus words. Only the prompt is checked: the
/// continuation of a model trained 3 steps depends on the CPU's rounding.
pub fn assert_prompt_is_corpus_text(out: &str) {
    assert!(out.contains("trained steps 0..3: loss"), "{out}");
    let start = out
        .find("sample (")
        .unwrap_or_else(|| panic!("no sample line in {out}"));
    let sample = &out[start..];
    let prompt = sample
        .split_once("): ")
        .and_then(|(_, rest)| rest.split_once('|'))
        .map(|(prompt, _)| prompt)
        .unwrap_or_else(|| panic!("no `prompt|continuation` in {sample}"));
    assert!(
        !prompt.contains("VSH") && !prompt.contains('\u{FFFD}'),
        "shard bytes read as text: {prompt}"
    );
    let words: Vec<&str> = prompt
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    assert!(
        words.len() >= 3,
        "the prompt shows no corpus text: {prompt:?}"
    );
    // The window may start or end inside a word, and documents are joined without a space
    // (their end-of-text token is not printed): each word is corpus words run together, the
    // first possibly starting inside one, the last possibly ending inside one.
    let last = words.len() - 1;
    for (i, word) in words.iter().enumerate() {
        assert!(
            is_corpus_words(word, i == 0, i == last),
            "{word:?} is not corpus text in the prompt {prompt:?}"
        );
    }
}

/// Whether `text` is corpus words run together; with `cut_start` the first may be only the
/// end of a word, with `cut_end` the last only its beginning.
fn is_corpus_words(text: &str, cut_start: bool, cut_end: bool) -> bool {
    if text.is_empty() {
        return true;
    }
    WORDS.iter().chain([&CSV_WORD]).any(|w| {
        let whole = text.strip_prefix(w);
        let partial_end = cut_end && w.starts_with(text);
        let partial_start = cut_start
            && (1..w.len()).any(|k| {
                text.strip_prefix(&w[k..])
                    .is_some_and(|rest| is_corpus_words(rest, false, cut_end))
            });
        whole.is_some_and(|rest| is_corpus_words(rest, false, cut_end))
            || partial_end
            || partial_start
    })
}

/// Adds a `datasets` section mixing `paths` equally to the config file at `config`.
pub fn with_datasets(config: &str, paths: &[PathBuf]) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    let paths: Vec<String> = paths.iter().map(|d| p(d)).collect();
    json["datasets"] = serde_json::json!({"paths": paths, "merge_strategy": "equal"});
    std::fs::write(config, json.to_string()).unwrap();
}

/// A path as a string argument.
pub fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
