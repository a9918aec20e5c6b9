//! `config.json` of a Hugging Face Llama directory, in the layouts of transformers 4 and 5,
//! read so that it can never be silently wrong, and written so that both read it.
//!
//! transformers 4 writes a top-level `rope_theta`, an optional `rope_scaling` object and
//! `torch_dtype`; transformers 5 folds the theta and the scaling into one `rope_parameters`
//! object (`{"rope_type": "default", "rope_theta": 500000.0}`) and writes `dtype`. Reading:
//! every key is either read into the model, checked to hold the one value vishwam implements,
//! known not to change the computation (listed in [`IGNORED`]), or an error naming it. Both
//! layouts at once must agree. A key that is absent means what transformers' `LlamaConfig`
//! defaults it to (e.g. `rms_norm_eps` 1e-6, `rope_theta` 10000, no biases).
//!
//! Writing: both layouts at once, consistently. transformers 5 reads `rope_scaling` and
//! `rope_theta` as the legacy spellings of `rope_parameters` and lets them take its place, and
//! transformers 4 does not know `rope_parameters` (it would silently use theta 10000 on a
//! v5-only file), so the file carries `rope_theta` + `rope_scaling` + `torch_dtype` for 4 and
//! `rope_parameters` + `dtype` for 5, with equal values. Checked with the configuration
//! classes of transformers 4.46.3 and 5.25.0: each reads an exported `config.json` (default
//! and linear rope, theta 10000 and 500000) with the theta and scaling written; 5 warns that
//! `torch_dtype` is deprecated, which is harmless.

use super::HfError;
use crate::config::{MlpActivation, ModelConfig, RopeScalingType};
use serde_json::{json, Map, Value};
use std::path::Path;

/// `model_type` values read, with the architecture each names.
const MODEL_TYPES: &[(&str, &str)] = &[
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
    ("gemma", "GemmaForCausalLM"),
    ("gemma2", "Gemma2ForCausalLM"),
];

/// Keys that do not change the model's computation, and why each is ignored.
pub const IGNORED: &[(&str, &str)] = &[
    (
        "bos_token_id",
        "a generation default; vishwam takes special ids from the tokenizer and `sequence`",
    ),
    (
        "eos_token_id",
        "a generation default; vishwam takes special ids from the tokenizer and `sequence`",
    ),
    (
        "pad_token_id",
        "a generation default; vishwam takes special ids from the tokenizer and `sequence`",
    ),
    ("transformers_version", "the writer's version"),
    ("use_cache", "a transformers inference switch"),
    (
        "initializer_range",
        "initialisation of new weights; imported weights are not initialised",
    ),
    ("_name_or_path", "where transformers loaded the model from"),
    (
        "cache_implementation",
        "transformers' KV-cache class for generation (Gemma 2's \"hybrid\")",
    ),
    (
        "_attn_implementation_autoset",
        "transformers' attention kernel choice",
    ),
];

/// Element types `torch_dtype` / `dtype` may name (the stored weights' type; vishwam reads the
/// safetensors dtypes themselves and computes as its config says).
const DTYPES: &[&str] = &["float32", "float16", "bfloat16"];

fn unsupported(path: &Path, key: &str, value: &Value, why: impl Into<String>) -> HfError {
    HfError::Unsupported {
        path: path.to_path_buf(),
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

fn invalid(path: &Path, detail: impl Into<String>) -> HfError {
    HfError::Invalid {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Reads `config.json` keys, remembering which ones were looked at.
struct Keys<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
    seen: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    /// The value of `key`; `null` counts as absent.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn size(&mut self, key: &'static str) -> Result<Option<usize>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|&n| n > 0) {
                Some(n) => Ok(Some(n as usize)),
                None => Err(invalid(
                    self.path,
                    format!("`{key}` = {v}: expected a positive integer"),
                )),
            },
        }
    }

    fn required_size(&mut self, key: &'static str) -> Result<usize, HfError> {
        self.size(key)?.ok_or_else(|| {
            invalid(
                self.path,
                format!("config.json lacks `{key}` (a positive integer)"),
            )
        })
    }

    fn number(&mut self, key: &'static str) -> Result<Option<f64>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(self.path, format!("`{key}` = {v}: expected a number"))),
        }
    }

    /// Checks that `key` is absent or holds a value `accept` allows.
    fn only(
        &mut self,
        key: &'static str,
        accept: impl Fn(&Value) -> bool,
        why: &str,
    ) -> Result<(), HfError> {
        match self.get(key) {
            Some(v) if !accept(v) => Err(unsupported(self.path, key, v, why)),
            _ => Ok(()),
        }
    }
}

#[path = "config_rope.rs"]
mod rope_keys;
use rope_keys::rope;

#[path = "config_gemma2.rs"]
mod gemma2_keys;

/// The model described by a Llama- or Gemma-architecture `config.json` value (read from
/// `path`).
pub fn parse(c: &Value, path: &Path) -> Result<ModelConfig, HfError> {
    let Value::Object(map) = c else {
        return Err(invalid(path, "config.json is not a JSON object"));
    };
    let mut keys = Keys {
        map,
        path,
        seen: Vec::new(),
    };
    let model_type = keys
        .get("model_type")
        .ok_or_else(|| invalid(path, "config.json lacks `model_type`"))?;
    let Some(&(_, architecture)) = MODEL_TYPES
        .iter()
        .find(|(t, _)| Some(*t) == model_type.as_str())
    else {
        return Err(unsupported(
            path,
            "model_type",
            model_type,
            "vishwam reads model_type \"llama\", \"mistral\", \"gemma\" and \"gemma2\"",
        ));
    };
    keys.only(
        "architectures",
        |v| *v == json!([architecture]),
        &format!(
            "a {} model_type's weights are [\"{architecture}\"]",
            model_type
        ),
    )?;
    let gemma2 = model_type.as_str() == Some("gemma2");
    let gemma = gemma2 || model_type.as_str() == Some("gemma");
    if gemma {
        // Gemma is trained with the tanh GELU. The Gemma 1.0 repositories' config.json says
        // `hidden_act: "gelu"` and no `hidden_activation`; transformers 4.39 to 4.47 applied
        // the tanh GELU for them anyway (GemmaMLP: "`config.hidden_act` is ignored"), later
        // releases read `hidden_act` and apply the exact GELU. vishwam computes the model as
        // trained: the tanh GELU, and it writes both keys as `gelu_pytorch_tanh`.
        keys.only(
            "hidden_act",
            |v| matches!(v.as_str(), Some("gelu" | "gelu_pytorch_tanh")),
            "a Gemma's hidden_act is \"gelu\" (the 1.0 configs) or \"gelu_pytorch_tanh\"",
        )?;
        keys.only(
            "hidden_activation",
            |v| v.as_str() == Some("gelu_pytorch_tanh"),
            "vishwam's Gemma MLP is GeGLU with the tanh-approximated GELU (gelu_pytorch_tanh)",
        )?;
    } else {
        keys.only(
            "hidden_act",
            |v| matches!(v.as_str(), Some("silu" | "swish")),
            "vishwam's Llama MLP is SwiGLU with silu",
        )?;
    }
    keys.only(
        "attention_bias",
        |v| *v == json!(false),
        "vishwam's attention projections have no biases",
    )?;
    keys.only(
        "mlp_bias",
        |v| *v == json!(false),
        "vishwam's MLP projections have no biases",
    )?;
    keys.only(
        "attention_dropout",
        |v| v.as_f64() == Some(0.0),
        "vishwam has no dropout on attention probabilities",
    )?;
    keys.only(
        "pretraining_tp",
        |v| v.as_u64() == Some(1),
        "transformers slices every projection into pretraining_tp parts; vishwam computes them whole",
    )?;
    for key in ["torch_dtype", "dtype"] {
        keys.only(
            key,
            |v| v.as_str().is_some_and(|s| DTYPES.contains(&s)),
            &format!("one of {DTYPES:?} (vishwam reads the safetensors dtypes themselves)"),
        )?;
    }
    // Mistral: a sliding window in every layer (absent: MistralConfig's 4096; null: none).
    let mistral_window = match model_type.as_str() {
        Some("mistral") => gemma2_keys::sliding_window(&mut keys)?,
        _ => None,
    };
    let hidden = keys.required_size("hidden_size")?;
    let heads = keys.required_size("num_attention_heads")?;
    let kv_heads = keys.size("num_key_value_heads")?.unwrap_or(heads);
    // GemmaConfig's head_dim defaults to 256, LlamaConfig's to hidden / heads.
    let head_dim = keys
        .size("head_dim")?
        .unwrap_or(if gemma { 256 } else { hidden / heads });
    let (rope_theta, rope_scaling) = rope(&mut keys)?;
    let tie = match keys.get("tie_word_embeddings") {
        // GemmaConfig ties by default, LlamaConfig does not.
        None => gemma,
        Some(v) => v.as_bool().ok_or_else(|| {
            invalid(
                path,
                format!("`tie_word_embeddings` = {v}: expected true or false"),
            )
        })?,
    };
    let model = ModelConfig {
        vocab_size: keys.required_size("vocab_size")?,
        hidden_dim: hidden,
        num_layers: keys.required_size("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        mlp_dim: Some(keys.required_size("intermediate_size")?),
        max_seq_len: keys.required_size("max_position_embeddings")?,
        rope_theta,
        rope_scaling,
        tie_embeddings: tie,
        norm_eps: keys.number("rms_norm_eps")?.unwrap_or(1e-6),
        ..ModelConfig::default()
    };
    // Gemma: GeGLU, RMSNorm by 1 + the stored weight (kept as stored), embeddings times
    // sqrt(hidden_size).
    let model = if gemma {
        ModelConfig {
            activation: MlpActivation::GeluTanh,
            norm_offset: 1.0,
            scale_embeddings: true,
            ..model
        }
    } else {
        ModelConfig {
            sliding_window: mistral_window,
            ..model
        }
    };
    // Gemma 2: post-attention and post-feed-forward norms, soft-caps, its query scale and
    // sliding-window layers.
    let model = if gemma2 {
        gemma2_keys::read(&mut keys, model)?
    } else {
        model
    };
    for key in map.keys() {
        let known = keys.seen.contains(&key.as_str()) || IGNORED.iter().any(|(k, _)| k == key);
        if !known {
            return Err(HfError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                value: map[key].to_string(),
            });
        }
    }
    Ok(model)
}

/// The HF `config.json` of a vishwam model, in both transformers layouts (see the module
/// docs); `special` = (pad, bos, eos) ids. NTK rope scaling has no transformers form.
pub fn write(cfg: &ModelConfig, special: Option<(u32, u32, u32)>) -> Result<Value, String> {
    let mut rope_parameters = json!({"rope_type": "default", "rope_theta": cfg.rope_theta});
    let mut rope_scaling = Value::Null;
    if let Some(s) = &cfg.rope_scaling {
        match s.kind {
            RopeScalingType::Linear => {
                rope_parameters = json!({"rope_type": "linear", "rope_theta": cfg.rope_theta, "factor": s.factor});
                // Two fields, the only form every transformers 4 release reads.
                rope_scaling = json!({"type": "linear", "factor": s.factor});
            }
            RopeScalingType::Ntk => {
                return Err(format!(
                    "model.rope_scaling {{\"type\": \"ntk\", \"factor\": {}}} (static NTK-aware scaling) has no transformers equivalent: transformers' `dynamic` type leaves RoPE unchanged up to max_position_embeddings",
                    s.factor
                ))
            }
        }
    }
    let (model_type, architecture) = architecture_of(cfg)?;
    let mut c = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": cfg.hidden_dim,
        "intermediate_size": cfg.mlp_dim(),
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads(),
        "head_dim": cfg.head_dim(),
        "num_hidden_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "rope_parameters": rope_parameters,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": if model_type.starts_with("gemma") { "gelu_pytorch_tanh" } else { "silu" },
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "pretraining_tp": 1,
        "torch_dtype": "float32",
        "dtype": "float32",
    });
    if model_type.starts_with("gemma") {
        c["hidden_activation"] = json!("gelu_pytorch_tanh");
        for key in ["mlp_bias", "pretraining_tp"] {
            c.as_object_mut().expect("an object").remove(key);
        }
    }
    match model_type {
        "gemma2" => gemma2_keys::write(cfg, &mut c)?,
        "mistral" => c["sliding_window"] = json!(cfg.sliding_window),
        _ => {}
    }
    if let Some((pad, bos, eos)) = special {
        c["pad_token_id"] = json!(pad);
        c["bos_token_id"] = json!(bos);
        c["eos_token_id"] = json!(eos);
    }
    Ok(c)
}

/// The transformers `model_type` and architecture that compute what `cfg` computes: Llama
/// (SwiGLU, RMSNorm by the gain, unscaled embeddings), Mistral (Llama with a sliding window in
/// every layer), Gemma (GeGLU with the tanh GELU, RMSNorm by 1 + gain, embeddings times
/// sqrt(hidden)) or Gemma 2 (Gemma with post norms, and its soft-caps, query scale and
/// window); other combinations have none.
fn architecture_of(cfg: &ModelConfig) -> Result<(&'static str, &'static str), String> {
    let switches = (cfg.activation, cfg.norm_offset, cfg.scale_embeddings);
    let gemma2_keys = [
        ("model.attn_logit_softcapping", cfg.attn_logit_softcapping),
        ("model.final_logit_softcapping", cfg.final_logit_softcapping),
        ("model.query_pre_attn_scalar", cfg.query_pre_attn_scalar),
    ];
    let gemma2_only = gemma2_keys.iter().find(|(_, v)| v.is_some());
    let window = cfg.sliding_window.is_some();
    let found = match switches {
        (MlpActivation::GeluTanh, 1.0, true) if cfg.post_norms => {
            return Ok(("gemma2", "Gemma2ForCausalLM"))
        }
        (MlpActivation::Silu, 0.0, false) if window && cfg.sliding_window_pattern == 0 => {
            ("mistral", "MistralForCausalLM")
        }
        (MlpActivation::Silu, 0.0, false) => ("llama", "LlamaForCausalLM"),
        (MlpActivation::GeluTanh, 1.0, true) => ("gemma", "GemmaForCausalLM"),
        _ => {
            return Err(format!(
                "model.activation = {}, model.norm_offset = {}, model.scale_embeddings = {} match no transformers architecture: Llama is silu, 0, false and Gemma gelu_tanh, 1, true",
                cfg.activation, cfg.norm_offset, cfg.scale_embeddings
            ))
        }
    };
    if cfg.post_norms {
        return Err(format!(
            "model.post_norms = true is Gemma 2's, which also needs model.activation gelu_tanh, norm_offset 1 and scale_embeddings true; {} has no post norms",
            found.0
        ));
    }
    if let Some((key, value)) = gemma2_only {
        return Err(format!(
            "{key} = {} is Gemma 2's (with model.post_norms = true); {} has no such key",
            value.unwrap_or_default(),
            found.0
        ));
    }
    if window && found.0 != "mistral" {
        return Err(format!(
            "model.sliding_window = {} with sliding_window_pattern {}: {} has no sliding window (Mistral has one in every layer, pattern 0, and Gemma 2 every second layer, pattern 2, with post norms)",
            cfg.sliding_window.unwrap_or_default(),
            cfg.sliding_window_pattern,
            found.0
        ));
    }
    Ok(found)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
