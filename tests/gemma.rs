//! Gemma's architecture switches (`model.activation = "gelu_tanh"`, `model.norm_offset = 1`,
//! `model.scale_embeddings`, with MQA and a head_dim independent of hidden/heads) against the
//! Candle reference, and a Gemma-layout Hugging Face directory (written here with random bf16
//! weights under transformers' names) imported, verified and exported again through the binary;
//! Gemma and Gemma 2 teachers from a fake Hugging Face cache distilled into a Llama student on
//! Brown (Gemma 2's own checks are in tests/gemma2.rs).

mod common;

use common::{model_family, succeeded, vishwam_cli};
use std::path::{Path, PathBuf};
use vishwam::config::Config;
use vishwam::verify::VerifyOptions;

/// The Gemma switches on a tiny model: MQA, head_dim 16 with hidden 32 and 4 heads.
const GEMMA: &[&str] = &[
    "model.vocab_size=96",
    "model.hidden_dim=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=1",
    "model.head_dim=16",
    "model.mlp_dim=48",
    "model.max_seq_len=16",
    "model.activation=gelu_tanh",
    "model.norm_offset=1",
    "model.scale_embeddings=true",
    "training.batch_size=4",
    "training.warmup_steps=1",
    "training.max_steps=10",
    "training.learning_rate=0.01",
];

/// XLA against Candle: logits, loss, gradients and `opts.steps` optimizer steps.
fn check(name: &str, sets: &[&str], opts: VerifyOptions) {
    let all: Vec<String> = GEMMA.iter().chain(sets).map(|s| s.to_string()).collect();
    model_family::assert_verifies(name, &Config::load(None, &all).unwrap(), opts);
}

#[test]
fn gemma_switches_match_candle() {
    let steps = VerifyOptions {
        steps: 2,
        loss_chunk: None,
    };
    check("gemma", &[], steps);
    check(
        "gemma, blocked attention and chunked loss",
        &[
            "memory.attention_memory_efficient=true",
            "optimization.block_size=4",
        ],
        VerifyOptions {
            steps: 1,
            loss_chunk: Some(16),
        },
    );
    // MoE experts (routed and shared) take the tanh GELU gate too.
    check(
        "gemma MoE",
        &[
            "model.use_moe=true",
            "model.num_experts=4",
            "model.num_shared_experts=1",
            "model.expert_dim=24",
        ],
        VerifyOptions {
            steps: 1,
            loss_chunk: None,
        },
    );
    // The embedding factor rounded to bf16 (sqrt(32) = 5.657 -> 5.65625), as Gemma does.
    check(
        "gemma bf16",
        &["tpu.use_bfloat16=true"],
        VerifyOptions {
            steps: 0,
            loss_chunk: None,
        },
    );
}

#[test]
fn the_kv_cache_decode_computes_gemma_as_candle_does() {
    // Prompts of 9 and 5 tokens: two prefill chunks of 6, and left padding.
    let sets: Vec<String> = GEMMA
        .iter()
        .map(|s| s.to_string())
        .chain(["sequence.chunk_size=6".to_string()])
        .collect();
    model_family::assert_decode_matches_candle(&Config::load(None, &sets).unwrap());
}

/// Writes the Gemma directory: config.json as transformers writes a Gemma 2B (`hidden_act`
/// "gelu", which GemmaMLP ignores for the tanh GELU; no `tie_word_embeddings`, which
/// GemmaConfig defaults to true) and bf16 weights. Returns the weights as f32.
fn write_gemma(dir: &Path) -> Vec<(String, Vec<f32>)> {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["GemmaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "head_dim": 16,
        "hidden_act": "gelu", "hidden_activation": null, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 48, "max_position_embeddings": 32,
        "model_type": "gemma", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_scaling": null,
        "rope_theta": 10000.0, "torch_dtype": "bfloat16", "transformers_version": "4.38.0",
        "use_cache": true, "vocab_size": 96
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    common::write_random_bf16_safetensors(dir, model_family::tiny_gemma_tensors(false), 4)
}

#[test]
fn a_gemma_directory_imports_verifies_and_exports_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let hf = root.path().join("gemma");
    let weights = write_gemma(&hf);
    // The norm weights are stored as Gemma stores them (scale = 1 + weight): exported
    // unchanged.
    let trip =
        model_family::import_verify_export(root.path(), &hf, &weights, &["model.max_seq_len=32"]);
    let m = &trip.imported["model"];
    assert_eq!(m["activation"], "gelu_tanh");
    assert_eq!(m["norm_offset"], 1.0);
    assert_eq!(m["scale_embeddings"], true);
    assert_eq!(m["tie_embeddings"], true);
    assert_eq!(
        (m["head_dim"].as_u64(), m["num_kv_heads"].as_u64()),
        (Some(16), Some(1))
    );
    let exported = &trip.exported;
    assert_eq!(exported["model_type"], "gemma");
    assert_eq!(exported["architectures"][0], "GemmaForCausalLM");
    assert_eq!(exported["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(exported["head_dim"], 16);
}

/// The validation loss a run printed (`validation: loss X, ...`).
fn validation_loss(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("validation: loss "))
        .unwrap_or_else(|| panic!("no validation line: {stdout}"));
    line["validation: loss ".len()..]
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A Gemma-architecture teacher (GeGLU, 1 + gain norms, scaled embeddings, MQA, head_dim 64
/// with width 128) trained on Brown, exported as a Gemma HF directory into a fake hub cache,
/// teaches a Llama student of another width and depth by its short name; the student beats
/// the same student trained on the labels alone.
#[test]
fn a_gemma_teacher_from_the_hf_cache_teaches_a_llama_student_on_brown() {
    teacher_from_the_hf_cache_beats_the_student_from_scratch("gemma", &[]);
}

/// The same with a Gemma-2-layout teacher: post-attention and post-feed-forward norms,
/// attention and final logit soft-caps (Gemma 2's 50 and 30), queries scaled by
/// query_pre_attn_scalar^-0.5, and a window of 16 on every second block of 64-token windows.
/// The teacher's HF directory is `model_type: "gemma2"` and distillation reads the teacher's
/// logits soft-capped.
#[test]
fn a_gemma2_teacher_from_the_hf_cache_teaches_a_llama_student_on_brown() {
    teacher_from_the_hf_cache_beats_the_student_from_scratch(
        "gemma2",
        &[
            "model.post_norms=true",
            "model.attn_logit_softcapping=50",
            "model.final_logit_softcapping=30",
            "model.query_pre_attn_scalar=128",
            "model.sliding_window=16",
            "model.sliding_window_pattern=2",
        ],
    );
}

/// A teacher with the Gemma switches and `extra` trained on Brown, exported (its config.json's
/// `model_type` must be `model_type`) into a fake hub cache, and a Llama student distilled
/// from it by its short name against the same student trained from scratch. Sizes as
/// tests/distill/brown.rs (teacher 4 x 128 for 300 steps, student 2 x 64 for 200 steps,
/// windows of 64, vocab 512, alpha 0.9 at T = 1), whose Llama teacher left gaps of at least
/// 0.17 nats where rounding moved losses by at most 0.05.
fn teacher_from_the_hf_cache_beats_the_student_from_scratch(model_type: &str, extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let home: PathBuf = vishwam::paths::vishwam_home();
    let common_sets = [
        "model.vocab_size=512",
        "model.max_seq_len=64",
        "training.batch_size=8",
        "training.learning_rate=0.003",
        "training.warmup_steps=10",
        "training.eval_steps=8",
        "data.val_fraction=0.05",
        "logging.eval_every=0",
        "logging.save_every=0",
        "logging.log_every=1000",
        "runtime.compile_cache=false",
    ];
    let run = |command: &str, sets: &[String]| {
        let mut args = vec![command.to_string(), "--no-progress".into()];
        for s in common_sets
            .iter()
            .map(|s| s.to_string())
            .chain(sets.iter().cloned())
        {
            args.extend(["--set".into(), s]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let hub = r.join("hub");
        let out = common::vishwam_command(&home, &args)
            .env("HF_HUB_CACHE", &hub)
            .output()
            .unwrap();
        succeeded(out)
    };
    let teacher_run = r.join("teacher");
    let mut teacher_sets: Vec<String> = [
        "model.hidden_dim=128",
        "model.num_heads=4",
        "model.num_kv_heads=1",
        "model.head_dim=64",
        "model.num_layers=4",
        "model.mlp_dim=256",
        "model.activation=gelu_tanh",
        "model.norm_offset=1",
        "model.scale_embeddings=true",
        "training.max_steps=300",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    teacher_sets.push(format!(
        "logging.output_dir={}",
        model_family::arg(&teacher_run)
    ));
    let teacher = validation_loss(&run("train", &teacher_sets));
    // Into the hub cache as huggingface_hub lays it out (a plain snapshot directory suffices
    // for the lookup; symlinked blobs are covered by tests/hf_cache.rs).
    let repo = r.join("hub").join("models--test-org--tiny-gemma");
    let snapshot = repo.join("snapshots").join("c0ffee");
    succeeded(vishwam_cli(
        &home,
        &[
            "export",
            "--checkpoint",
            &model_family::arg(&teacher_run),
            "--out",
            &model_family::arg(&snapshot),
        ],
    ));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "c0ffee").unwrap();
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(hf["model_type"], model_type);

    let student = |out: &str, teacher: Option<&str>| {
        let mut sets: Vec<String> = [
            "model.hidden_dim=64",
            "model.num_heads=4",
            "model.num_layers=2",
            "training.max_steps=200",
        ]
        .map(String::from)
        .to_vec();
        sets.push(format!(
            "logging.output_dir={}",
            model_family::arg(&r.join(out))
        ));
        sets.push(format!(
            "data.tokenizer={}",
            model_family::arg(&teacher_run.join("tokenizer.json"))
        ));
        match teacher {
            Some(name) => {
                sets.extend([
                    format!("distillation.teacher_model={name}"),
                    "distillation.alpha=0.9".into(),
                    "distillation.temperature=1.0".into(),
                ]);
                validation_loss(&run("distill", &sets))
            }
            None => validation_loss(&run("train", &sets)),
        }
    };
    let scratch = student("scratch", None);
    let distilled = student("distilled", Some("tiny-gemma"));
    println!("Brown validation loss ({model_type} teacher): teacher {teacher:.4}, Llama student from scratch {scratch:.4}, distilled {distilled:.4}");
    assert!(teacher < scratch, "teacher {teacher} vs student {scratch}");
    assert!(
        distilled < scratch,
        "distilled {distilled} should beat the student from scratch {scratch}"
    );
}
