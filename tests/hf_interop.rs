//! Hugging Face interop that cannot be silently wrong, through the binary: the config.json
//! layouts of transformers 4 and 5 (fixtures in `tests/fixtures/hf_v4`, `hf_v5`) import into
//! the same model, the v5 `rope_parameters.rope_theta` is honoured, keys that change the
//! computation in ways vishwam lacks are errors naming them, and an imported model fine-tunes
//! on Brown to a lower evaluation loss on Brown files held out of the fine-tuning.

mod common;

use common::{failed, succeeded, vishwam_cli};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Training settings shared by every run here.
const RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.eval_steps=4",
    "data.val_fraction=0.05",
    "logging.eval_every=0",
    "logging.log_every=1",
    "runtime.compile_cache=false",
];

fn home() -> PathBuf {
    vishwam::paths::vishwam_home()
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs `vishwam train` with `sets` and more arguments.
fn train(sets: &[&str], more: &[&str]) -> String {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded(vishwam_cli(&home(), &args))
}

/// A tiny vishwam run trained for 2 steps on Brown, exported as an HF directory (once per
/// test binary; the tests only read it).
fn exported_tiny() -> PathBuf {
    static EXPORTED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    EXPORTED
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let hf = export_tiny(dir.path());
            (dir, hf)
        })
        .1
        .clone()
}

fn export_tiny(root: &Path) -> PathBuf {
    let run = root.join("base");
    let out = format!("logging.output_dir={}", p(&run));
    let mut sets: Vec<&str> = common::TINY_MODEL.iter().chain(RUN).copied().collect();
    sets.extend(["training.max_steps=2", out.as_str()]);
    train(&sets, &[]);
    let hf = root.join("exported");
    succeeded(vishwam_cli(
        &home(),
        &["export", "--checkpoint", &p(&run), "--out", &p(&hf)],
    ));
    hf
}

/// An HF directory: the exported weights and tokenizer with `config` as config.json.
fn hf_dir(root: &Path, name: &str, exported: &Path, config: &Value) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(exported.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn fixture(layout: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(layout)
        .join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `vishwam import`, returning the model section of the step-0 checkpoint's manifest.
fn import(hf: &Path, run: &Path) -> Value {
    succeeded(vishwam_cli(
        &home(),
        &["import", "--hf", &p(hf), "--out", &p(run)],
    ));
    let manifest = run.join("checkpoints/step_00000000/manifest.json");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    manifest["config"]["model"].clone()
}

/// The Brown corpus's files, sorted (fetched by the first training run).
fn brown_corpus() -> Vec<PathBuf> {
    let dir = vishwam::paths::datasets_dir().join("brown/text");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Three Brown files from three genres (the files are sorted by genre).
fn brown_files() -> Vec<String> {
    brown_corpus().iter().step_by(167).map(|f| p(f)).collect()
}

/// A copy of the Brown corpus without [`brown_files`] under `root`: a fine-tuning run
/// trained on it is evaluated on text it never saw.
fn brown_without_eval_files(root: &Path) -> PathBuf {
    let held_out = brown_files();
    let dir = root.join("brown_train");
    std::fs::create_dir_all(&dir).unwrap();
    for file in brown_corpus() {
        if !held_out.contains(&p(&file)) {
            std::fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// `vishwam eval --json` loss of a run or checkpoint on `files`.
fn eval_loss(checkpoint: &Path, files: &[String]) -> f64 {
    let mut args = vec!["eval", "--json", "--checkpoint"];
    let c = p(checkpoint);
    args.push(&c);
    args.push("--data");
    args.extend(files.iter().map(String::as_str));
    let out = succeeded(vishwam_cli(&home(), &args));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn both_config_layouts_import_the_same_model_and_fine_tune_on_brown() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let exported = exported_tiny();
    let v4 = hf_dir(r, "hf_v4", &exported, &fixture("hf_v4"));
    let v5 = hf_dir(r, "hf_v5", &exported, &fixture("hf_v5"));
    let model_v4 = import(&v4, &r.join("run_v4"));
    let model_v5 = import(&v5, &r.join("run_v5"));
    assert_eq!(model_v4, model_v5, "both layouts must give one model");
    assert_eq!(model_v5["rope_theta"], 10000.0);
    let files = brown_files();
    let imported = eval_loss(&r.join("run_v4"), &files);
    assert_eq!(
        imported,
        eval_loss(&r.join("run_v5"), &files),
        "the same weights and model give the same loss"
    );

    // Fine-tune: from the imported run (v4) and straight from the HF directory (v5), on
    // Brown without the evaluation files (held out: the loss is measured on unseen text).
    let source = format!("data.source={}", p(&brown_without_eval_files(r)));
    for (name, from) in [("ft_v4", r.join("run_v4")), ("ft_v5", v5.clone())] {
        let out = format!("logging.output_dir={}", p(&r.join(name)));
        let mut sets: Vec<&str> = RUN.to_vec();
        sets.extend(["training.max_steps=20", out.as_str(), source.as_str()]);
        train(&sets, &["--init-from", &p(&from)]);
        let tuned = eval_loss(&r.join(name), &files);
        println!("{name}: held-out Brown loss {imported:.4} imported -> {tuned:.4} fine-tuned");
        // 20 AdamW steps at lr 3e-3 from a model that has seen 2 batches take a 2-layer model
        // from near-uniform (ln 512 = 6.24) to about 5.6 on the held-out files (the word
        // statistics it learns are those of all of Brown; measured 6.225 -> 5.577 on an AMD
        // EPYC); 0.3 nat less than the import is far outside what rounding moves.
        assert!(
            tuned < imported - 0.3,
            "{name}: fine-tuned loss {tuned} is not below the imported {imported}"
        );
    }
}

#[test]
fn the_v5_rope_theta_is_honoured_in_both_layouts() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let exported = exported_tiny();
    let mut v5 = fixture("hf_v5");
    v5["rope_parameters"]["rope_theta"] = 500000.0.into();
    let mut v4 = fixture("hf_v4");
    v4["rope_theta"] = 500000.0.into();
    let model_v5 = import(&hf_dir(r, "v5", &exported, &v5), &r.join("run_v5"));
    let model_v4 = import(&hf_dir(r, "v4", &exported, &v4), &r.join("run_v4"));
    assert_eq!(model_v5["rope_theta"], 500000.0);
    assert_eq!(model_v4, model_v5);
    let plain = import(
        &hf_dir(r, "plain", &exported, &fixture("hf_v5")),
        &r.join("run_plain"),
    );
    assert_eq!(plain["rope_theta"], 10000.0);
    let files = brown_files();
    let (at_500k, at_10k) = (
        eval_loss(&r.join("run_v5"), &files),
        eval_loss(&r.join("run_plain"), &files),
    );
    assert_eq!(at_500k, eval_loss(&r.join("run_v4"), &files));
    assert_ne!(at_500k, at_10k, "theta must change the logits");
}

#[test]
fn keys_that_change_the_computation_are_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let exported = exported_tiny();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "v5",
            Box::new(|c| c["attention_bias"] = true.into()),
            "`attention_bias` = true",
        ),
        (
            "v4",
            Box::new(|c| c["mlp_bias"] = true.into()),
            "`mlp_bias` = true",
        ),
        (
            "v4",
            Box::new(|c| c["hidden_act"] = "gelu".into()),
            "`hidden_act` = \"gelu\"",
        ),
        (
            "v4",
            Box::new(|c| c["pretraining_tp"] = 2.into()),
            "`pretraining_tp` = 2",
        ),
        (
            "v4",
            Box::new(|c| c["sliding_window"] = 16.into()),
            "unknown key `sliding_window`",
        ),
        (
            "v5",
            Box::new(|c| c["rope_parameters"]["rope_type"] = "llama3".into()),
            "`rope_parameters.rope_type` = \"llama3\"",
        ),
        (
            "v4",
            Box::new(|c| c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0})),
            "`rope_scaling.type` = \"dynamic\"",
        ),
        (
            "v4",
            Box::new(|c| {
                c["rope_parameters"] =
                    serde_json::json!({"rope_type": "default", "rope_theta": 500000.0})
            }),
            "`rope_theta` = 10000 and `rope_parameters.rope_theta` = 500000 disagree",
        ),
        ("v5", Box::new(|c| c["head_dim"] = 16.into()), "head_dim"),
        (
            "v5",
            Box::new(|c| c["quantization_config"] = serde_json::json!({"bits": 4})),
            "unknown key `quantization_config`",
        ),
    ];
    for (i, (layout, edit, expected)) in cases.iter().enumerate() {
        let mut config = fixture(&format!("hf_{layout}"));
        edit(&mut config);
        let dir = hf_dir(r, &format!("case{i}"), &exported, &config);
        let err = failed(vishwam_cli(
            &home(),
            &[
                "import",
                "--hf",
                &p(&dir),
                "--out",
                &p(&r.join(format!("out{i}"))),
            ],
        ));
        assert!(
            err.contains(expected),
            "case {i}: expected {expected:?} in {err}"
        );
    }
}

#[test]
fn export_writes_both_layouts_and_refuses_ntk_scaling() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let exported = exported_tiny();
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(c["rope_theta"], 10000.0);
    assert_eq!(c["rope_parameters"]["rope_theta"], 10000.0);
    assert_eq!(c["rope_parameters"]["rope_type"], "default");
    assert_eq!(c["torch_dtype"], c["dtype"]);

    let run = r.join("ntk");
    let out = format!("logging.output_dir={}", p(&run));
    let mut sets: Vec<&str> = common::TINY_MODEL.iter().chain(RUN).copied().collect();
    sets.extend([
        "training.max_steps=1",
        out.as_str(),
        "model.rope_scaling={\"type\": \"ntk\", \"factor\": 2}",
    ]);
    train(&sets, &[]);
    let err = failed(vishwam_cli(
        &home(),
        &[
            "export",
            "--checkpoint",
            &p(&run),
            "--out",
            &p(&r.join("ntk_hf")),
        ],
    ));
    assert!(err.contains("no transformers equivalent"), "{err}");
}
