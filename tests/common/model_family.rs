//! Checks shared by the tests of a model family's switches (tests/gemma.rs, tests/gemma2.rs):
//! XLA against the Candle reference, the KV-cache decode against Candle, and a Hugging Face
//! directory's import -> verify -> export round trip through the binary.

use rand::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray};
use vishwam::reference::{format_table, ReferenceDtype, ReferenceModel};
use vishwam::train::sharding_plan;
use vishwam::verify::{random_batch, verify, VerifyOptions};

/// Initial parameters of `cfg` with the norm gains drawn at random (at their initial 0 an
/// offset would be tested only through the gradients).
pub fn params_with_random_gains(cfg: &Config) -> BTreeMap<String, HostArray> {
    let mut params = vishwam::model::init_params(&cfg.model, 3);
    let mut rng = super::rng(11);
    for (name, array) in params.iter_mut() {
        if name.ends_with(".scale") {
            let gains: Vec<f32> = (0..array.shape[0])
                .map(|_| rng.gen_range(-0.5..0.5))
                .collect();
            *array = HostArray::from_slice(&array.shape, &gains).unwrap();
        }
    }
    params
}

/// An engine on one CPU device for `plan`'s mesh.
pub fn one_cpu_engine(plan: &vishwam_mesh::ShardingPlan) -> Engine {
    Engine::new(
        super::cpu_client(1).clone(),
        plan.mesh.clone(),
        super::private_cache(),
    )
    .unwrap()
}

/// XLA against Candle on `cfg` with [`params_with_random_gains`]: logits, loss, gradients and
/// `opts.steps` optimizer steps.
pub fn assert_verifies(name: &str, cfg: &Config, opts: VerifyOptions) {
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    let params = params_with_random_gains(cfg);
    let batch = random_batch(cfg, &plan, 5);
    let report = verify(cfg, one_cpu_engine(&plan), plan, &params, &batch, opts).unwrap();
    assert!(report.passed(), "{name}:\n{}", format_table(&report.rows));
}

/// The KV-cache decode's next-token logits of prompts of 9 and 5 tokens (left padding; with
/// `sequence.chunk_size=6`, two prefill chunks) against Candle's full forward, in f32.
pub fn assert_decode_matches_candle(cfg: &Config) {
    let plan = sharding_plan(cfg, "cpu", 1).unwrap();
    let params = params_with_random_gains(cfg);
    let vocab = cfg.model.vocab_size;
    let mut model =
        vishwam::generate::LoadedModel::new(cfg.clone(), &params, one_cpu_engine(&plan)).unwrap();
    let mut rng = super::rng(5);
    let prompts: Vec<Vec<i32>> = [9, 5]
        .iter()
        .map(|&n| (0..n).map(|_| rng.gen_range(0..vocab as i32)).collect())
        .collect();
    let got = model.next_token_logits(&prompts).unwrap();
    let reference =
        ReferenceModel::from_host_arrays(&cfg.model, &params, ReferenceDtype::F32).unwrap();
    for (prompt, got) in prompts.iter().zip(&got) {
        let all: Vec<f32> = reference
            .logits(prompt, 1, prompt.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = &all[all.len() - vocab..];
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // f32 in both engines: 10x verify's logits tolerance (1e-5 of the largest), as the
        // cached attention sums over padded cache slots in another order.
        assert!(
            err <= 1e-4 * scale.max(1.0),
            "prompt of {}: max error {err}, scale {scale}",
            prompt.len()
        );
    }
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A JSON file's value.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What [`import_verify_export`] made.
pub struct RoundTrip {
    /// The imported run's `config.json`.
    pub imported: serde_json::Value,
    /// The exported directory.
    pub exported_dir: PathBuf,
    /// The exported `config.json`.
    pub exported: serde_json::Value,
}

/// `vishwam import --hf hf` into `root/run`, `vishwam verify` of the imported checkpoint (one
/// step, 2 sequences of 16 tokens, plus `verify_sets`), and `vishwam export` into
/// `root/back`; then checks that the exported safetensors hold exactly `weights` (name and
/// f32 values, as written into `hf`).
pub fn import_verify_export(
    root: &Path,
    hf: &Path,
    weights: &[(String, Vec<f32>)],
    verify_sets: &[&str],
) -> RoundTrip {
    let home = vishwam::paths::vishwam_home();
    let (run, back) = (root.join("run"), root.join("back"));
    super::succeeded(super::vishwam_cli(
        &home,
        &["import", "--hf", &arg(hf), "--out", &arg(&run)],
    ));
    let imported = read_json(&run.join("config.json"));

    // The imported weights through XLA and through Candle: logits, loss, gradients, a step.
    let (config, checkpoint) = (
        arg(&run.join("config.json")),
        arg(&run.join("checkpoints/step_00000000")),
    );
    let mut args = vec![
        "verify",
        "--config",
        &config,
        "--checkpoint",
        &checkpoint,
        "--steps",
        "1",
        "--set",
        "training.batch_size=2",
        "--set",
        "sequence.max_length=16",
    ];
    for set in verify_sets {
        args.extend(["--set", set]);
    }
    let table = super::succeeded(super::vishwam_cli(&home, &args));
    assert!(table.contains("logits"), "{table}");

    super::succeeded(super::vishwam_cli(
        &home,
        &["export", "--checkpoint", &arg(&run), "--out", &arg(&back)],
    ));
    let exported = read_json(&back.join("config.json"));
    let bytes = std::fs::read(back.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), weights.len());
    for (name, want) in weights {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let got: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(&got, want, "{name}");
    }
    RoundTrip {
        imported,
        exported_dir: back,
        exported,
    }
}

/// transformers' names and `[out, in]` shapes of a tiny Gemma (hidden 32, 4 heads of 16, one
/// key/value head, MLP 48, vocabulary 96, 2 layers; the head tied to the embedding); with
/// `gemma2_norms`, Gemma 2's norms before and after the MLP as well (four per layer).
pub fn tiny_gemma_tensors(gemma2_norms: bool) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![96, 32]),
        ("model.norm.weight".to_string(), vec![32]),
    ];
    for i in 0..2 {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        t.extend([
            (l("input_layernorm.weight"), vec![32]),
            (l("self_attn.q_proj.weight"), vec![64, 32]),
            (l("self_attn.k_proj.weight"), vec![16, 32]),
            (l("self_attn.v_proj.weight"), vec![16, 32]),
            (l("self_attn.o_proj.weight"), vec![32, 64]),
            (l("post_attention_layernorm.weight"), vec![32]),
        ]);
        if gemma2_norms {
            t.push((l("pre_feedforward_layernorm.weight"), vec![32]));
        }
        t.extend([
            (l("mlp.gate_proj.weight"), vec![48, 32]),
            (l("mlp.up_proj.weight"), vec![48, 32]),
            (l("mlp.down_proj.weight"), vec![32, 48]),
        ]);
        if gemma2_norms {
            t.push((l("post_feedforward_layernorm.weight"), vec![32]));
        }
    }
    t
}
