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
use crate::config::{ModelConfig, RopeScaling, RopeScalingType};
use serde_json::{json, Map, Value};
use std::path::Path;

/// `model_type` values read, with the architecture each names.
const MODEL_TYPES: &[(&str, &str)] = &[
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
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

/// The rope settings of one rope object (`rope_scaling` or `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rope {
    theta: Option<f64>,
    scaling: Option<RopeScaling>,
}

/// Reads a rope object: `rope_type` (or the legacy `type`), `factor`, and `rope_theta`.
fn read_rope(key: &str, value: &Value, path: &Path) -> Result<Rope, HfError> {
    let Value::Object(map) = value else {
        return Err(invalid(
            path,
            format!("`{key}` = {value}: expected an object or null"),
        ));
    };
    for name in map.keys() {
        if !matches!(
            name.as_str(),
            "rope_type" | "type" | "factor" | "rope_theta"
        ) {
            return Err(unsupported(
                path,
                &format!("{key}.{name}"),
                &map[name],
                "vishwam implements the rope types `default` and `linear`, which take only \
                 `rope_type`, `factor` and `rope_theta`",
            ));
        }
    }
    let kind = |k: &str| map.get(k).filter(|v| !v.is_null());
    let default = Value::String("default".into());
    let (type_key, rope_type) = match (kind("rope_type"), kind("type")) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                path,
                format!("`{key}.rope_type` = {a} and `{key}.type` = {b} disagree"),
            ))
        }
        (Some(v), _) => ("rope_type", v),
        (None, Some(v)) => ("type", v),
        (None, None) => ("rope_type", &default),
    };
    let theta = match map.get("rope_theta") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().filter(|&t| t > 0.0).ok_or_else(|| {
            invalid(
                path,
                format!("`{key}.rope_theta` = {v}: expected a positive number"),
            )
        })?),
    };
    let factor = map.get("factor").filter(|v| !v.is_null());
    let scaling = match rope_type.as_str() {
        Some("default") => {
            if let Some(f) = factor {
                return Err(unsupported(
                    path,
                    &format!("{key}.factor"),
                    f,
                    "rope_type `default` takes no factor",
                ));
            }
            None
        }
        Some("linear") => {
            let f = factor.ok_or_else(|| {
                invalid(
                    path,
                    format!("`{key}` has rope_type `linear` but no `factor`"),
                )
            })?;
            let factor = f.as_f64().filter(|&x| x >= 1.0).ok_or_else(|| {
                unsupported(
                    path,
                    &format!("{key}.factor"),
                    f,
                    "a linear rope factor is a number >= 1",
                )
            })?;
            Some(RopeScaling {
                kind: RopeScalingType::Linear,
                factor,
            })
        }
        _ => {
            return Err(unsupported(
                path,
                &format!("{key}.{type_key}"),
                rope_type,
                "vishwam implements the rope types `default` and `linear` (transformers' \
                 `dynamic`, `yarn`, `longrope` and `llama3` compute other frequencies)",
            ))
        }
    };
    Ok(Rope { theta, scaling })
}

/// The rope theta and scaling of a config, from either layout (or both, which must agree).
fn rope(keys: &mut Keys<'_>) -> Result<(f64, Option<RopeScaling>), HfError> {
    let path = keys.path;
    let top_theta = keys.number("rope_theta")?;
    if let Some(t) = top_theta.filter(|&t| t <= 0.0) {
        return Err(invalid(
            path,
            format!("`rope_theta` = {t}: expected a positive number"),
        ));
    }
    let v4 = keys
        .get("rope_scaling")
        .map(|v| read_rope("rope_scaling", v, path))
        .transpose()?;
    let v5 = keys
        .get("rope_parameters")
        .map(|v| read_rope("rope_parameters", v, path))
        .transpose()?;
    let thetas = [
        ("rope_theta", top_theta),
        ("rope_scaling.rope_theta", v4.and_then(|r| r.theta)),
        ("rope_parameters.rope_theta", v5.and_then(|r| r.theta)),
    ];
    let mut theta: Option<(&str, f64)> = None;
    for (key, value) in thetas {
        match (theta, value) {
            (Some((first, a)), Some(b)) if a != b => {
                return Err(invalid(
                    path,
                    format!("`{first}` = {a} and `{key}` = {b} disagree; which one the model was trained with is unknown"),
                ))
            }
            (None, Some(b)) => theta = Some((key, b)),
            _ => {}
        }
    }
    let scaling = match (v4, v5) {
        (Some(a), Some(b)) if a.scaling != b.scaling => {
            return Err(invalid(
                path,
                format!(
                    "`rope_scaling` ({:?}) and `rope_parameters` ({:?}) describe different rope scalings",
                    a.scaling, b.scaling
                ),
            ))
        }
        (Some(r), _) | (None, Some(r)) => r.scaling,
        (None, None) => None,
    };
    // transformers' default theta when neither layout gives one.
    Ok((theta.map_or(10000.0, |(_, t)| t), scaling))
}

/// The model described by a Llama-architecture `config.json` value (read from `path`).
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
            "vishwam reads Llama-architecture models (model_type \"llama\" or \"mistral\")",
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
    keys.only(
        "hidden_act",
        |v| matches!(v.as_str(), Some("silu" | "swish")),
        "vishwam's MLP is SwiGLU with silu",
    )?;
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
    if model_type.as_str() == Some("mistral") {
        match map.get("sliding_window") {
            Some(Value::Null) => keys.seen.push("sliding_window"),
            Some(v) => {
                return Err(unsupported(
                    path,
                    "sliding_window",
                    v,
                    "vishwam's attention has no sliding window; only null is read",
                ))
            }
            None => {
                return Err(invalid(
                    path,
                    "config.json of a mistral model lacks `sliding_window`, which transformers then sets to 4096; vishwam's attention has no sliding window, so only an explicit null is read",
                ))
            }
        }
    }
    let hidden = keys.required_size("hidden_size")?;
    let heads = keys.required_size("num_attention_heads")?;
    let kv_heads = keys.size("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = keys.size("head_dim")?.unwrap_or(hidden / heads);
    let (rope_theta, rope_scaling) = rope(&mut keys)?;
    let tie = match keys.get("tie_word_embeddings") {
        None => false,
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
    let mut c = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
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
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "pretraining_tp": 1,
        "torch_dtype": "float32",
        "dtype": "float32",
    });
    if let Some((pad, bos, eos)) = special {
        c["pad_token_id"] = json!(pad);
        c["bos_token_id"] = json!(bos);
        c["eos_token_id"] = json!(eos);
    }
    Ok(c)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
