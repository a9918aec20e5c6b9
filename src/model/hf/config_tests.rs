//! Tests of reading and writing `config.json` in both transformers layouts.

use super::*;
use crate::config::RopeScaling;

const V4: &str = include_str!("../../../tests/fixtures/hf_v4/config.json");
const V5: &str = include_str!("../../../tests/fixtures/hf_v5/config.json");

fn read(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn parse_value(c: &Value) -> Result<ModelConfig, String> {
    parse(c, Path::new("config.json")).map_err(|e| e.to_string())
}

#[test]
fn both_layouts_give_one_model() {
    let v4 = parse_value(&read(V4)).unwrap();
    assert_eq!(v4, parse_value(&read(V5)).unwrap());
    assert_eq!(
        (v4.num_kv_heads, v4.head_dim, v4.mlp_dim),
        (Some(2), Some(8), Some(256))
    );
    assert!(v4.tie_embeddings && v4.rope_scaling.is_none());
}

#[test]
fn linear_scaling_and_theta_are_read_from_either_layout() {
    let mut v4 = read(V4);
    v4["rope_theta"] = json!(500000.0);
    v4["rope_scaling"] = json!({"type": "linear", "factor": 4.0});
    let mut v5 = read(V5);
    v5["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 500000.0, "factor": 4.0});
    let (a, b) = (parse_value(&v4).unwrap(), parse_value(&v5).unwrap());
    assert_eq!(a, b);
    assert_eq!(a.rope_theta, 500000.0);
    assert_eq!(
        a.rope_scaling,
        Some(RopeScaling {
            kind: RopeScalingType::Linear,
            factor: 4.0
        })
    );
    // Written in both layouts, read back the same.
    assert_eq!(
        parse_value(&write(&a, None).unwrap()).unwrap().rope_scaling,
        a.rope_scaling
    );
    let mut both = write(&a, None).unwrap();
    assert_eq!(parse_value(&both).unwrap().rope_theta, 500000.0);
    both["rope_parameters"]["factor"] = json!(2.0);
    assert!(parse_value(&both)
        .unwrap_err()
        .contains("describe different rope scalings"));
}

#[test]
fn absent_keys_mean_transformers_defaults() {
    let mut c = read(V4);
    for key in [
        "rms_norm_eps",
        "rope_theta",
        "tie_word_embeddings",
        "head_dim",
    ] {
        c.as_object_mut().unwrap().remove(key);
    }
    let m = parse_value(&c).unwrap();
    assert_eq!((m.norm_eps, m.rope_theta), (1e-6, 10000.0));
    assert!(!m.tie_embeddings);
    assert_eq!(m.head_dim, Some(8));
}

#[test]
fn mistral_reads_its_sliding_window_in_every_layer() {
    let mut c = read(V4);
    c["model_type"] = json!("mistral");
    c["architectures"] = json!(["MistralForCausalLM"]);
    // Absent: MistralConfig's 4096.
    let m = parse_value(&c).unwrap();
    assert_eq!(
        (m.sliding_window, m.sliding_window_pattern),
        (Some(4096), 0)
    );
    assert!((0..m.num_layers).all(|i| m.layer_window(i) == Some(4096)));
    c["sliding_window"] = json!(16);
    let m = parse_value(&c).unwrap();
    assert_eq!(m.sliding_window, Some(16));
    let written = write(&m, None).unwrap();
    assert_eq!(written["model_type"], "mistral");
    assert_eq!(written["sliding_window"], 16);
    assert_eq!(parse_value(&written).unwrap(), m);
    c["sliding_window"] = Value::Null;
    assert_eq!(parse_value(&c).unwrap().sliding_window, None);
    c["sliding_window"] = json!(0);
    assert!(parse_value(&c)
        .unwrap_err()
        .contains("`sliding_window` = 0: expected null or a positive number"));
    c["model_type"] = json!("qwen2");
    assert!(parse_value(&c)
        .unwrap_err()
        .contains("`model_type` = \"qwen2\""));
}

#[test]
fn unknown_and_unsupported_keys_are_named() {
    let cases = [
        (
            "architectures",
            json!(["LlamaForSequenceClassification"]),
            "`architectures`",
        ),
        (
            "torch_dtype",
            json!("float8_e4m3fn"),
            "`torch_dtype` = \"float8_e4m3fn\"",
        ),
        ("attention_dropout", json!(0.1), "`attention_dropout` = 0.1"),
        (
            "rope_scaling",
            json!({"rope_type": "yarn", "factor": 4.0}),
            "`rope_scaling.rope_type` = \"yarn\"",
        ),
        (
            "rope_scaling",
            json!({"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 32}),
            "`rope_scaling.original_max_position_embeddings`",
        ),
        (
            "layer_norm_eps",
            json!(1e-5),
            "unknown key `layer_norm_eps`",
        ),
        ("num_attention_heads", json!(0), "`num_attention_heads` = 0"),
    ];
    for (key, value, expected) in cases {
        let mut c = read(V4);
        c[key] = value;
        let err = parse_value(&c).unwrap_err();
        assert!(err.contains(expected), "{key}: {err}");
    }
}

#[test]
fn gemma_configs_read_with_gemma_defaults_and_switches() {
    let mut c = json!({
        "architectures": ["GemmaForCausalLM"], "model_type": "gemma", "hidden_act": "gelu",
        "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 2,
        "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 100,
        "max_position_embeddings": 64
    });
    let m = parse_value(&c).unwrap();
    // GemmaConfig's defaults: head_dim 256, tied head; the tanh GELU whatever hidden_act says.
    assert_eq!((m.head_dim(), m.tie_embeddings), (256, true));
    assert_eq!(m.activation, MlpActivation::GeluTanh);
    assert_eq!((m.norm_offset, m.scale_embeddings), (1.0, true));
    let written = write(&m, None).unwrap();
    assert_eq!(written["model_type"], "gemma");
    assert_eq!(parse_value(&written).unwrap(), m);
    c["hidden_activation"] = json!("gelu");
    let err = parse_value(&c).unwrap_err();
    assert!(err.contains("`hidden_activation` = \"gelu\""), "{err}");
    // A Llama with only some Gemma switches has no transformers form.
    let mixed = ModelConfig {
        scale_embeddings: true,
        ..ModelConfig::default()
    };
    let err = write(&mixed, None).unwrap_err();
    assert!(err.contains("match no transformers architecture"), "{err}");
}

fn gemma2_json() -> Value {
    json!({
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 2,
        "num_key_value_heads": 1, "num_hidden_layers": 4, "vocab_size": 100, "head_dim": 32,
        "max_position_embeddings": 64, "cache_implementation": "hybrid"
    })
}

#[test]
fn gemma2_configs_read_with_gemma2_defaults() {
    let m = parse_value(&gemma2_json()).unwrap();
    // Gemma2Config's defaults.
    assert!(m.post_norms && m.tie_embeddings && m.scale_embeddings);
    assert_eq!(
        (m.attn_logit_softcapping, m.final_logit_softcapping),
        (Some(50.0), Some(30.0))
    );
    assert_eq!(m.query_pre_attn_scalar, Some(256.0));
    assert_eq!(
        (m.sliding_window, m.sliding_window_pattern),
        (Some(4096), 2)
    );
    // Even layers local, odd global.
    let windows: Vec<_> = (0..4).map(|i| m.layer_window(i)).collect();
    assert_eq!(windows, [Some(4096), None, Some(4096), None]);
    let written = write(&m, None).unwrap();
    assert_eq!(written["model_type"], "gemma2");
    assert_eq!(
        written["layer_types"],
        json!([
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "full_attention"
        ])
    );
    assert_eq!(parse_value(&written).unwrap(), m);
}

#[test]
fn gemma2_nulls_layer_types_and_refusals() {
    let mut c = gemma2_json();
    c["attn_logit_softcapping"] = Value::Null;
    c["final_logit_softcapping"] = Value::Null;
    c["sliding_window"] = json!(8);
    c["sliding_window_size"] = json!(8);
    c["query_pre_attn_scalar"] = json!(24);
    let m = parse_value(&c).unwrap();
    assert_eq!(
        (m.attn_logit_softcapping, m.final_logit_softcapping),
        (None, None)
    );
    assert_eq!(
        (m.sliding_window, m.query_pre_attn_scalar),
        (Some(8), Some(24.0))
    );
    assert_eq!(parse_value(&write(&m, None).unwrap()).unwrap(), m);
    // Every layer sliding, and every layer full (no window at all).
    c["layer_types"] = json!(vec!["sliding_attention"; 4]);
    assert_eq!(parse_value(&c).unwrap().sliding_window_pattern, 0);
    c["layer_types"] = json!(vec!["full_attention"; 4]);
    assert_eq!(parse_value(&c).unwrap().sliding_window, None);
    let refused = [
        (
            "layer_types",
            json!([
                "full_attention",
                "sliding_attention",
                "sliding_attention",
                "sliding_attention"
            ]),
            "`layer_types`",
        ),
        ("layer_types", json!(["sliding_attention"]), "`layer_types`"),
        (
            "sliding_window_size",
            json!(16),
            "`sliding_window_size` = 16",
        ),
        (
            "use_bidirectional_attention",
            json!(true),
            "`use_bidirectional_attention`",
        ),
        (
            "attn_logit_softcapping",
            json!(-1.0),
            "`attn_logit_softcapping` = -1.0",
        ),
        (
            "query_pre_attn_scalar",
            Value::Null,
            "`query_pre_attn_scalar` = null",
        ),
    ];
    for (key, value, expected) in refused {
        let mut c = c.clone();
        c.as_object_mut().unwrap().remove("layer_types");
        c[key] = value;
        let err = parse_value(&c).unwrap_err();
        assert!(err.contains(expected), "{key}: {err}");
    }
    // Gemma 2's switches without its post norms have no transformers form.
    let capped_gemma = ModelConfig {
        post_norms: false,
        ..parse_value(&gemma2_json()).unwrap()
    };
    let err = write(&capped_gemma, None).unwrap_err();
    assert!(err.contains("is Gemma 2's"), "{err}");
    let local_every_third = ModelConfig {
        sliding_window_pattern: 3,
        ..parse_value(&gemma2_json()).unwrap()
    };
    let err = write(&local_every_third, None).unwrap_err();
    assert!(err.contains("sliding_window_pattern = 3"), "{err}");
}
