//! Inputs of `vishwam data prepare`, `train` and `eval` through the binary: bytes that are
//! not text are errors naming the file; the tokenizer `data prepare` trains is the one `train`
//! trains; tokenizers with special ids beyond 0..2; `eval`'s UTF-8 policy and named tokenizers.

mod common;
mod data_helpers;

use common::{failed, succeeded, vishwam_cli};
use data_helpers::{assert_prompt_is_corpus_text, p, tiny_config, write_corpus};
use std::path::Path;

/// Runs the binary in the directory `cwd` (for relative paths); no XLA plugin is needed.
fn vishwam_in(cwd: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vishwam"))
        .args(args)
        .current_dir(cwd)
        .env("VISHWAM_HOME", home)
        .env("VISHWAM_LOG", "warn")
        .output()
        .expect("running the vishwam binary")
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
    // Extensions are matched in any case.
    std::fs::copy(r.join("cols.csv"), r.join("COLS.CSV")).unwrap();
    let out = succeeded(prepare(&r.join("COLS.CSV"), "c", &["--text-field", "body"]));
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

    // With --config, the flags that the config's data section says are refused.
    for flag in [
        &["--force"][..],
        &["--shard-tokens", "1000"],
        &["--invalid-utf8", "replace"],
        &["--text-field", "body"],
        &["--text-documents", "line"],
    ] {
        let mut args = vec!["data", "prepare", "--config", &config];
        args.extend(flag);
        let err = failed(vishwam_cli(&home, &args));
        assert!(err.contains("cannot be used with"), "{flag:?}: {err}");
    }

    // A run whose only input is a prepared dataset refuses the keys that say how to read text.
    let config = tiny_config(
        r,
        "prepared-csv",
        300,
        serde_json::json!({"source": p(&r.join("c")), "format": "csv", "text_field": "body"}),
    );
    let err = failed(vishwam_cli(
        &home,
        &["train", "--config", &config, "--no-progress"],
    ));
    assert!(
        err.contains(r#"data.format = "csv", data.text_field = "body" only apply to text sources"#),
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
fn prepare_trains_the_tokenizer_train_would_and_other_special_ids_work() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home = r.join("home");
    write_corpus(&r.join("raw"), 12, 7);

    // `data prepare` with a relative, dotted spelling of the sources; `train` with the
    // absolute path: one tokenizer, trained once.
    succeeded(vishwam_in(
        r,
        &home,
        &[
            "data",
            "prepare",
            "--input_dir",
            "./raw/",
            "--cache_dir",
            "dc",
            "--vocab-size",
            "384",
        ],
    ));
    let config = tiny_config(
        r,
        "raw",
        512,
        serde_json::json!({"source": p(&r.join("raw"))}),
    );
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &config,
            "--set",
            "model.vocab_size=384",
            "--no-progress",
        ],
    ));
    assert_prompt_is_corpus_text(&out);
    let prepared_tokenizer = std::fs::read(r.join("dc/tokenizer.json")).unwrap();
    assert_eq!(
        std::fs::read(r.join("run-raw/tokenizer.json")).unwrap(),
        prepared_tokenizer,
        "train trained another tokenizer than data prepare"
    );
    let cached: Vec<_> = std::fs::read_dir(home.join("tokenizers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // Locks live under the home, not beside the user's directories.
    let beside: Vec<_> = std::fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // A tokenizer whose eos is `</s>` at the id after the trained ones (beyond 0..2). (Edited
    // as text: the `tokenizers` library reads the model's keys in its own order.)
    let out = succeeded(vishwam_cli(
        &home,
        &["tokenizer", "inspect", &p(&r.join("dc/tokenizer.json"))],
    ));
    let eos: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("tokens: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {out}"));
    let json = String::from_utf8(prepared_tokenizer.clone()).unwrap();
    let end_of_added = "\"special\": true\n    }\n  ],";
    assert!(json.contains(end_of_added), "{json}");
    let json = json.replacen(
        end_of_added,
        &format!(
            "\"special\": true\n    }},\n    {{\"id\": {eos}, \"content\": \"</s>\", \
             \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \
             \"normalized\": false, \"special\": true}}\n  ],"
        ),
        1,
    );
    let custom = r.join("custom-tokenizer.json");
    std::fs::write(&custom, json).unwrap();
    let out = succeeded(vishwam_cli(&home, &["tokenizer", "inspect", &p(&custom)]));
    assert!(out.contains(&format!("</s>={eos}")), "{out}");
    let config = tiny_config(
        r,
        "custom",
        448,
        serde_json::json!({"source": p(&r.join("raw")), "tokenizer": p(&custom)}),
    );
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "train",
            "--config",
            &config,
            "--set",
            &format!("sequence.eos_token_id={eos}"),
            "--no-progress",
        ],
    ));
    assert_prompt_is_corpus_text(&out);

    // eval --data follows the run's data.invalid_utf8, and --invalid-utf8 overrides it.
    let latin1 = r.join("latin1.txt");
    std::fs::write(&latin1, b"river stone caf\xe9 garden\n".repeat(4)).unwrap();
    let run = p(&r.join("run-raw"));
    let err = failed(vishwam_cli(
        &home,
        &["eval", "--checkpoint", &run, "--data", &p(&latin1)],
    ));
    assert!(
        err.contains("invalid UTF-8 at byte offset 15") && err.contains("--invalid-utf8 replace"),
        "{err}"
    );
    let out = succeeded(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run,
            "--data",
            &p(&latin1),
            "--invalid-utf8",
            "replace",
        ],
    ));
    assert!(out.contains("perplexity"), "{out}");

    // --tokenizer takes a name as everything else does (this model is too small for it).
    let err = failed(vishwam_cli(
        &home,
        &[
            "eval",
            "--checkpoint",
            &run,
            "--tokenizer",
            "o200k_base",
            "--eval_text",
            "river stone",
        ],
    ));
    assert!(
        err.contains("model.vocab_size 384 is smaller than the tokenizer's 200019"),
        "{err}"
    );
}
