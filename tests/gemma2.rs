//! Gemma 2's architecture switches (`model.post_norms`, the attention and final logit
//! soft-caps, `model.query_pre_attn_scalar`, a sliding window on every second block) on top
//! of Gemma's, against the Candle reference through the composed, blocked and KV-cache
//! attention; and a Gemma-2-layout Hugging Face directory (written here with random bf16
//! weights under transformers' names) imported, verified and exported again through the
//! binary. The distillation from a Gemma 2 teacher on Brown is in tests/gemma.rs.

mod common;

use common::{model_family, succeeded, vishwam_cli};
use std::path::Path;
use vishwam::config::Config;
use vishwam::reference::{ReferenceDtype, ReferenceModel};
use vishwam::verify::VerifyOptions;

/// Every Gemma 2 switch on a tiny model: MQA, head_dim 16 with hidden 32 and 4 heads, 16
/// positions with a window of 5 on block 0 (block 1 global). The weights are drawn 12x wider
/// than the default so that scores (about +-2) and logits (about +-1.5) reach the soft-caps'
/// curved part (at 1.5 and 3); at the default init both caps would be the identity to within
/// rounding.
const GEMMA2: &[&str] = &[
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
    "model.post_norms=true",
    "model.attn_logit_softcapping=1.5",
    "model.final_logit_softcapping=3.0",
    "model.query_pre_attn_scalar=24",
    "model.sliding_window=5",
    "model.sliding_window_pattern=2",
    "model.init_std=0.25",
    "training.batch_size=4",
    "training.warmup_steps=1",
    "training.max_steps=10",
    "training.learning_rate=0.01",
];

fn load(extra: &[&str]) -> Config {
    let all: Vec<String> = GEMMA2.iter().chain(extra).map(|s| s.to_string()).collect();
    Config::load(None, &all).unwrap()
}

/// XLA against Candle: logits, loss, gradients and `opts.steps` optimizer steps.
fn check(name: &str, sets: &[&str], opts: VerifyOptions) {
    model_family::assert_verifies(name, &load(sets), opts);
}

fn steps(steps: usize, loss_chunk: Option<usize>) -> VerifyOptions {
    VerifyOptions { steps, loss_chunk }
}

#[test]
fn gemma2_switches_match_candle() {
    check("gemma 2", &[], steps(1, None));
    // Blocks of 4 under a window of 5: per query block, the diagonal block and the one before
    // are masked, the one before that is skipped. Logits, loss and gradients.
    check(
        "gemma 2, blocked attention and chunked loss",
        &[
            "memory.attention_memory_efficient=true",
            "optimization.block_size=4",
        ],
        steps(0, Some(16)),
    );
    check(
        "gemma 2, every block local, MoE",
        &[
            "model.sliding_window_pattern=0",
            "model.use_moe=true",
            "model.num_experts=4",
            "model.expert_dim=24",
        ],
        steps(0, None),
    );
    // bf16 at the default init width: at 12x wider weights bf16 rounding moves the logits by
    // about 0.1 (0.125 measured without any Gemma 2 switch), which the final cap of 3 makes
    // 5% of the largest logit, past verify's bf16 tolerance of 3%.
    check(
        "gemma 2 bf16",
        &["tpu.use_bfloat16=true", "model.init_std=0.02"],
        steps(0, None),
    );
}

/// The window is applied where it must be and nowhere else: in the Candle reference, a
/// window of 5 on block 0 leaves the logits of positions 0..5 (which see at most 5 keys)
/// exactly as without a window and changes the later ones; so the XLA paths, which match the
/// reference above, mask by the window too.
#[test]
fn the_window_changes_only_positions_past_it() {
    let windowed = load(&[]);
    let global = load(&["model.sliding_window=null"]);
    let params = model_family::params_with_random_gains(&windowed);
    let logits = |cfg: &Config| -> Vec<f32> {
        let m = ReferenceModel::from_host_arrays(&cfg.model, &params, ReferenceDtype::F32).unwrap();
        let tokens: Vec<i32> = (0..16).map(|i| (i * 7 + 3) % 96).collect();
        let out = m.logits(&tokens, 1, 16).unwrap();
        out.flatten_all().unwrap().to_vec1().unwrap()
    };
    let (a, b) = (logits(&windowed), logits(&global));
    assert_eq!(a[..5 * 96], b[..5 * 96]);
    for position in 5..16 {
        let row = position * 96..(position + 1) * 96;
        assert_ne!(a[row.clone()], b[row], "position {position}");
    }
}

#[test]
fn the_kv_cache_decode_computes_gemma2_as_candle_does() {
    // Prompts of 9 and 5 tokens: two prefill chunks of 6, and left padding; the 9-token
    // prompt's last query sees 5 of its 9 keys in block 0.
    model_family::assert_decode_matches_candle(&load(&["sequence.chunk_size=6"]));
}

#[test]
fn invalid_gemma2_keys_name_key_value_and_what_is_allowed() {
    let err = |set: &str| {
        let sets = vec![set.to_string()];
        Config::load(None, &sets).unwrap_err().to_string()
    };
    let cases = [
        (
            "model.sliding_window_pattern=1",
            "`model.sliding_window_pattern` must be 0 (every block local) or an integer >= 2",
        ),
        ("model.sliding_window=0", "`model.sliding_window` must be"),
        (
            "model.attn_logit_softcapping=-5",
            "`model.attn_logit_softcapping` must be null or a positive number, got -5",
        ),
        (
            "model.final_logit_softcapping=0",
            "`model.final_logit_softcapping` must be null or a positive number, got 0",
        ),
        (
            "model.query_pre_attn_scalar=0",
            "`model.query_pre_attn_scalar` must be null or a positive number",
        ),
        ("model.post_norms=1", "`model.post_norms`"),
    ];
    for (set, expected) in cases {
        let got = err(set);
        assert!(got.contains(expected), "{set}: {got}");
    }
    // cuDNN flash attention cannot soft-cap: asking for it is an error that says so.
    let sets: Vec<String> = [
        "memory.attention_backend=cudnn",
        "runtime.platform=cuda",
        "optimization.mixed_precision=true",
        "model.attn_logit_softcapping=50",
    ]
    .map(String::from)
    .to_vec();
    let got = Config::load(None, &sets).unwrap_err().to_string();
    assert!(
        got.contains("`model.attn_logit_softcapping` = 50: cuDNN flash attention cannot soft-cap"),
        "{got}"
    );
}

/// Writes the Gemma 2 directory: config.json as transformers 4.44 writes a Gemma 2 2B (no
/// `layer_types`: even layers sliding), scaled down, and bf16 weights. Returns the weights as
/// f32.
fn write_gemma2(dir: &Path) -> Vec<(String, Vec<f32>)> {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
        "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
        "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 32, "initializer_range": 0.02,
        "intermediate_size": 48, "max_position_embeddings": 32, "model_type": "gemma2",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 1,
        "pad_token_id": 0, "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "sliding_window": 8, "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0", "use_cache": true, "vocab_size": 96
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    common::write_random_bf16_safetensors(dir, model_family::tiny_gemma_tensors(true), 4)
}

#[test]
fn a_gemma2_directory_imports_verifies_and_exports_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let hf = root.path().join("gemma2");
    let weights = write_gemma2(&hf);
    // Verified at 16 positions: past the window.
    let trip = model_family::import_verify_export(root.path(), &hf, &weights, &[]);
    let m = &trip.imported["model"];
    assert_eq!(m["activation"], "gelu_tanh");
    assert_eq!(
        (m["norm_offset"].as_f64(), m["post_norms"].as_bool()),
        (Some(1.0), Some(true))
    );
    assert_eq!(m["attn_logit_softcapping"], 50.0);
    assert_eq!(m["final_logit_softcapping"], 30.0);
    assert_eq!(m["query_pre_attn_scalar"], 16.0);
    assert_eq!(
        (
            m["sliding_window"].as_u64(),
            m["sliding_window_pattern"].as_u64()
        ),
        (Some(8), Some(2))
    );
    let exported = &trip.exported;
    assert_eq!(exported["model_type"], "gemma2");
    assert_eq!(exported["architectures"][0], "Gemma2ForCausalLM");
    assert_eq!(exported["hidden_activation"], "gelu_pytorch_tanh");
    for (key, value) in [
        ("attn_logit_softcapping", serde_json::json!(50.0)),
        ("final_logit_softcapping", serde_json::json!(30.0)),
        ("query_pre_attn_scalar", serde_json::json!(16.0)),
        ("sliding_window", serde_json::json!(8)),
        ("head_dim", serde_json::json!(16)),
        (
            "layer_types",
            serde_json::json!(["sliding_attention", "full_attention"]),
        ),
    ] {
        assert_eq!(exported[key], value, "{key}");
    }
    // And imported again: the same model.
    let again = root.path().join("again");
    succeeded(vishwam_cli(
        &vishwam::paths::vishwam_home(),
        &[
            "import",
            "--hf",
            &model_family::arg(&trip.exported_dir),
            "--out",
            &model_family::arg(&again),
        ],
    ));
    let reread = model_family::read_json(&again.join("config.json"));
    assert_eq!(reread["model"], trip.imported["model"]);
}
