//! The RoPE keys of `config.json`: transformers 4's `rope_theta` + `rope_scaling` and
//! transformers 5's `rope_parameters`, which must agree when both are there.

use super::{invalid, unsupported, Keys};
use crate::config::{RopeScaling, RopeScalingType};
use crate::model::hf::HfError;
use serde_json::Value;
use std::path::Path;

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
pub(super) fn rope(keys: &mut Keys<'_>) -> Result<(f64, Option<RopeScaling>), HfError> {
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
