//! The `config.json` keys of Gemma 2 (soft-caps, query scale, sliding window and its layer
//! pattern) and Mistral's sliding window, read and written.
//!
//! A key that is absent means what transformers' `Gemma2Config` (`MistralConfig`) defaults it
//! to: `attn_logit_softcapping` 50, `final_logit_softcapping` 30, `query_pre_attn_scalar` 256,
//! `sliding_window` 4096 (Mistral too), and `layer_types` alternating
//! `sliding_attention`, `full_attention` from the first layer; an explicit `null` soft-cap or
//! window means none. transformers releases before `layer_types` existed (4.42 to 4.52) make
//! even layers sliding whatever the file says, so a `layer_types` list is read only when it is
//! one of the patterns vishwam computes (every N-th layer full, or every layer sliding) and
//! the export writes Gemma 2's own alternation only.

use super::{invalid, unsupported, HfError, Keys};
use crate::config::ModelConfig;
use serde_json::{json, Value};

/// A key that may be absent (`default`), `null` (none) or a positive number.
fn optional_number(
    keys: &mut Keys<'_>,
    key: &'static str,
    default: Option<f64>,
) -> Result<Option<f64>, HfError> {
    keys.seen.push(key);
    match keys.map.get(key) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
            Some(x) => Ok(Some(x)),
            None => Err(invalid(
                keys.path,
                format!("`{key}` = {v}: expected null or a positive number"),
            )),
        },
    }
}

/// The sliding window of a Gemma 2 or Mistral `config.json` (absent: 4096; `null`: none).
pub(super) fn sliding_window(keys: &mut Keys<'_>) -> Result<Option<usize>, HfError> {
    let window = optional_number(keys, "sliding_window", Some(4096.0))?;
    match window {
        Some(w) if w.fract() != 0.0 => Err(invalid(
            keys.path,
            format!("`sliding_window` = {w}: expected null or a positive integer"),
        )),
        w => Ok(w.map(|w| w as usize)),
    }
}

/// `model` with the Gemma 2 keys of `keys` read into it (post norms, soft-caps, query scale,
/// sliding window every second layer unless `layer_types` says otherwise).
pub(super) fn read(keys: &mut Keys<'_>, model: ModelConfig) -> Result<ModelConfig, HfError> {
    let path = keys.path;
    let attn_cap = optional_number(keys, "attn_logit_softcapping", Some(50.0))?;
    let final_cap = optional_number(keys, "final_logit_softcapping", Some(30.0))?;
    let scalar = match optional_number(keys, "query_pre_attn_scalar", Some(256.0))? {
        Some(s) => s,
        None => {
            return Err(invalid(
                path,
                "`query_pre_attn_scalar` = null: expected a positive number (Gemma 2 scales queries by its inverse square root)",
            ))
        }
    };
    let window = sliding_window(keys)?;
    // Older Gemma 2 repositories repeat the window as `sliding_window_size`.
    if let Some(v) = keys.get("sliding_window_size") {
        if v.as_u64().map(|w| w as usize) != window {
            return Err(unsupported(
                path,
                "sliding_window_size",
                v,
                format!(
                    "it must equal `sliding_window` ({window:?}), which is what transformers reads"
                ),
            ));
        }
    }
    keys.only(
        "use_bidirectional_attention",
        |v| *v == json!(false),
        "vishwam's attention is causal",
    )?;
    let (window, pattern) = match keys.get("layer_types") {
        None => (window, 2),
        Some(v) => match layer_pattern(v, model.num_layers) {
            // Every layer full: no layer uses the window.
            Some(None) => (None, 0),
            Some(Some(pattern)) => (window, pattern),
            None => {
                return Err(unsupported(
                    path,
                    "layer_types",
                    v,
                    format!("vishwam reads a list of {} \"sliding_attention\" / \"full_attention\" entries where every N-th layer (N >= 2) is full, every layer sliding or every layer full", model.num_layers),
                ))
            }
        },
    };
    Ok(ModelConfig {
        post_norms: true,
        attn_logit_softcapping: attn_cap,
        final_logit_softcapping: final_cap,
        query_pre_attn_scalar: Some(scalar),
        sliding_window: window,
        sliding_window_pattern: pattern,
        ..model
    })
}

/// The `sliding_window_pattern` a `layer_types` list of `layers` entries spells: `Some(0)`
/// when every layer is sliding, `Some(N)` when exactly the layers i with (i + 1) % N == 0 are
/// full, `None` when every layer is full; the outer `None` when it spells none of these.
fn layer_pattern(v: &Value, layers: usize) -> Option<Option<usize>> {
    let types = v.as_array()?;
    let full: Vec<bool> = types
        .iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Some(true),
            Some("sliding_attention") => Some(false),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if full.len() != layers {
        return None;
    }
    if full.iter().all(|&f| f) {
        return Some(None);
    }
    let pattern = match full.iter().position(|&f| f) {
        None => 0,
        Some(first) => first + 1,
    };
    let candidate = ModelConfig {
        num_layers: layers,
        sliding_window: Some(1),
        sliding_window_pattern: pattern,
        ..ModelConfig::default()
    };
    let matches = (0..layers).all(|i| candidate.layer_window(i).is_none() == full[i]);
    (pattern != 1 && matches).then_some(Some(pattern))
}

/// Adds the Gemma 2 keys of `cfg` to the config.json value `c`; an error when the layer
/// pattern is not Gemma 2's alternation (see the module docs).
pub(super) fn write(cfg: &ModelConfig, c: &mut Value) -> Result<(), String> {
    if cfg.sliding_window.is_some() && cfg.sliding_window_pattern != 2 {
        return Err(format!(
            "model.sliding_window_pattern = {} has no Gemma 2 form: transformers before `layer_types` make every second layer sliding; export with sliding_window_pattern 2",
            cfg.sliding_window_pattern
        ));
    }
    let layer_types: Vec<&str> = (0..cfg.num_layers)
        .map(|i| match cfg.layer_window(i) {
            Some(_) => "sliding_attention",
            None => "full_attention",
        })
        .collect();
    c["attn_logit_softcapping"] = json!(cfg.attn_logit_softcapping);
    c["final_logit_softcapping"] = json!(cfg.final_logit_softcapping);
    c["query_pre_attn_scalar"] = json!(cfg.query_pre_attn_scalar.unwrap_or(cfg.head_dim() as f64));
    c["sliding_window"] = json!(cfg.sliding_window);
    c["layer_types"] = json!(layer_types);
    Ok(())
}
