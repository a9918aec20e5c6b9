//! Model names resolved offline in the local Hugging Face cache, through the binary: a fake
//! hub cache in a temporary folder (`HF_HUB_CACHE`), laid out as huggingface_hub writes it
//! (files in `blobs/`, symlinks in `snapshots/<rev>/`, `refs/main`), holding a tiny
//! Llama-layout model whole and one sharded with `model.safetensors.index.json`.
//! `vishwam import --hf`, `vishwam train --init-from` and `distillation.teacher_model` take a
//! model id or a unique short name; an ambiguous or missing name is an error that says why.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vishwam::config::ModelConfig;
use vishwam::engine::HostArray;
use vishwam::model::hf;

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs the binary with `HF_HUB_CACHE=hub` (and no other HF variable).
fn vishwam(home: &Path, hub: &Path, args: &[&str]) -> std::process::Output {
    common::vishwam_command(home, args)
        .env("HF_HUB_CACHE", hub)
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HF_HOME")
        .output()
        .expect("running the vishwam binary")
}

fn tiny_model() -> ModelConfig {
    ModelConfig {
        vocab_size: 300,
        hidden_dim: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: Some(2),
        max_seq_len: 32,
        ..ModelConfig::default()
    }
}

/// Moves every file of `from` into the cache repository of `id` (revision `rev`, named by
/// `refs/main`) as huggingface_hub stores it: content in `blobs/`, a relative symlink in the
/// snapshot. Returns the snapshot directory.
fn cache_as(hub: &Path, id: &str, rev: &str, from: &Path) -> PathBuf {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), rev).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let file = entry.unwrap().path();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let blob = format!("{rev}-{name}");
        std::fs::copy(&file, repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snap.join(&name)).unwrap();
    }
    snap
}

/// Rewrites the single `model.safetensors` of `dir` as two shards and an index.
fn shard(dir: &Path) {
    let whole = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&whole).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    let half = names.len() / 2;
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index =
        serde_json::json!({"metadata": {"total_size": whole.len()}, "weight_map": weight_map});
    std::fs::write(dir.join(hf::INDEX), index.to_string()).unwrap();
}

/// A hub cache holding `test-org/tiny-llama` (whole) and `test-org/tiny-sharded` (two
/// shards), both of [`tiny_model`] with the parameters returned, plus two models named
/// `tiny-twin` under different organisations.
fn fake_hub(root: &Path) -> (PathBuf, BTreeMap<String, HostArray>) {
    let model = tiny_model();
    let params = vishwam::model::init_params(&model, 7);
    let hub = root.join("hub");
    for (id, sharded) in [
        ("test-org/tiny-llama", false),
        ("test-org/tiny-sharded", true),
        ("one/tiny-twin", false),
        ("other/tiny-twin", false),
    ] {
        let staging = root.join("staging").join(id);
        hf::export(&model, &params, None, &staging).unwrap();
        if sharded {
            shard(&staging);
        }
        cache_as(&hub, id, "0123abcd", &staging);
    }
    (hub, params)
}

#[test]
fn sharded_and_whole_cached_models_import_by_id_and_short_name() {
    let root = tempfile::tempdir().unwrap();
    let (hub, params) = fake_hub(root.path());
    let home = root.path().join("home");
    // In-process: the sharded snapshot reads back the very parameters.
    let snap = hf::cache::resolve(
        "tiny-sharded",
        &hf::cache::HubCache {
            dir: hub.clone(),
            origin: "test".into(),
        },
    )
    .unwrap();
    assert!(snap.join(hf::INDEX).is_file());
    assert_eq!(hf::import(&snap).unwrap().1, params);

    for (name, out) in [("test-org/tiny-llama", "a"), ("tiny-sharded", "b")] {
        let out = root.path().join(out);
        let stdout = common::succeeded(vishwam(
            &home,
            &hub,
            &["import", "--hf", name, "--out", &p(&out)],
        ));
        assert!(stdout.contains("snapshots/0123abcd"), "{stdout}");
        let ck = vishwam::train::checkpoint::load(&out.join("checkpoints/step_00000000")).unwrap();
        assert_eq!(vishwam::train::state::params_of(&ck.state), params);
    }

    let out = p(&root.path().join("c"));
    let e = common::failed(vishwam(
        &home,
        &hub,
        &["import", "--hf", "tiny-twin", "--out", &out],
    ));
    assert!(e.contains("one/tiny-twin, other/tiny-twin"), "{e}");
    let e = common::failed(vishwam(
        &home,
        &hub,
        &["import", "--hf", "google/gemma-7b", "--out", &out],
    ));
    assert!(
        e.contains(&p(&hub.join("models--google--gemma-7b")))
            && e.contains("huggingface-cli download google/gemma-7b")
            && e.contains("from HF_HUB_CACHE")
            && e.contains("downloads nothing"),
        "{e}"
    );
    // A shard the index names, missing (an interrupted download).
    let sharded = hub.join("models--test-org--tiny-sharded/snapshots/0123abcd");
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let e = common::failed(vishwam(
        &home,
        &hub,
        &["import", "--hf", "tiny-sharded", "--out", &out],
    ));
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn distill_and_init_from_take_a_cached_model_name() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (hub, _) = fake_hub(r);
    let home = r.join("home");
    // A corpus whose trained tokenizer has the teacher's 300 tokens.
    let words = ["ka", "lo", "mi", "ter", "an", "so", "ru", "vel"];
    std::fs::create_dir_all(r.join("corpus")).unwrap();
    for f in 0..6u64 {
        let text: Vec<&str> = (0..150)
            .map(|i| words[((i * 7 + f * 3 + i * i) % 8) as usize])
            .collect();
        std::fs::write(r.join(format!("corpus/doc{f}.txt")), text.join(" ")).unwrap();
    }
    let common_sets = [
        format!("data.source={}", p(&r.join("corpus"))),
        "data.val_fraction=0.2".into(),
        "data.num_workers=1".into(),
        "training.batch_size=2".into(),
        "training.max_steps=1".into(),
        "training.warmup_steps=1".into(),
        "logging.eval_every=0".into(),
        "runtime.compile_cache=false".into(),
    ];
    let run = |command: &str, sets: &[String], more: &[&str]| {
        let mut args = vec![command.to_string(), "--no-progress".into()];
        for s in common_sets.iter().chain(sets) {
            args.extend(["--set".into(), s.clone()]);
        }
        args.extend(more.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vishwam(&home, &hub, &args)
    };
    let student = [
        "model.vocab_size=300",
        "model.hidden_dim=16",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.max_seq_len=32",
    ]
    .map(String::from);
    let distilled = r.join("distilled");
    let mut sets = student.to_vec();
    sets.push("distillation.teacher_model=tiny-sharded".into());
    sets.push(format!("logging.output_dir={}", p(&distilled)));
    common::succeeded(run("distill", &sets, &[]));
    assert!(distilled
        .join("checkpoints/step_00000001/manifest.json")
        .is_file());

    // Fine-tune the cached model by its id; the HF directory has no tokenizer.json, so the
    // distilled run's (300 tokens, the same corpus) is named.
    let tuned = r.join("tuned");
    let sets = [
        format!("logging.output_dir={}", p(&tuned)),
        format!("data.tokenizer={}", p(&distilled.join("tokenizer.json"))),
    ];
    let out = common::succeeded(run("train", &sets, &["--init-from", "test-org/tiny-llama"]));
    assert!(out.contains("validation: loss"), "{out}");
    assert!(tuned
        .join("checkpoints/step_00000001/manifest.json")
        .is_file());
    let e = common::failed(run("train", &sets, &["--init-from", "tiny-missing"]));
    assert!(
        e.contains("models--*--tiny-missing")
            && e.contains("huggingface-cli download ORG/tiny-missing"),
        "{e}"
    );
}
