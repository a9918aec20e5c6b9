//! The JSON document: strict parsing, deep merge over the defaults, `--set` overrides.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::{show, ConfigError};
use super::reader::join;

/// Object-valued keys that a file or override replaces whole instead of merging into (their
/// keys are data, and their order matters).
const REPLACED_WHOLE: &[&str] = &["tpu.mesh_shape"];

/// Parses text as a JSON object, with line and column on syntax errors and duplicate keys.
pub(crate) fn parse_document(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let value: Value = serde_json::from_str::<StrictValue>(text)
        .map(|v| v.0)
        .map_err(|e| {
            let full = e.to_string();
            let message = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(m, _)| m)
                .to_string();
            let at_comment = text
                .lines()
                .nth(e.line().saturating_sub(1))
                .is_some_and(|line| {
                    let rest = line
                        .chars()
                        .skip(e.column().saturating_sub(1))
                        .collect::<String>();
                    rest.starts_with("//") || rest.starts_with("/*") || rest.starts_with('#')
                });
            let hint = match at_comment {
            true => {
                "; JSON has no comments (describe the file in a top-level \"description\" string)"
                    .to_string()
            }
            false => String::new(),
        };
            ConfigError::Syntax {
                origin: origin.to_string(),
                message,
                line: e.line(),
                column: e.column(),
                hint,
            }
        })?;
    match value {
        Value::Object(_) => Ok(value),
        other => Err(ConfigError::NotAnObject {
            origin: origin.to_string(),
            got: show(&other),
        }),
    }
}

/// Deep-merges `patch` into `base` at `path`: objects key by key, everything else replaced.
pub(crate) fn merge(base: &mut Value, patch: Value, path: &str) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) if !REPLACED_WHOLE.contains(&path) => {
            for (key, value) in patch {
                let child = join(path, &key);
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value, &child),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Applies one `section.key=value` override; the value is JSON when it parses, else a string.
pub(crate) fn apply_override(merged: &mut Value, arg: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadOverride {
        arg: arg.to_string(),
        reason,
    };
    let Some((path, text)) = arg.split_once('=') else {
        return Err(bad(
            "expected section.key=value, e.g. --set training.learning_rate=3e-4".into(),
        ));
    };
    let segments: Vec<&str> = path.trim().split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad(format!(
            "`{path}` is not a key path; expected section.key, e.g. training.max_steps"
        )));
    }
    let value =
        serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_string()));
    let (last, parents) = segments
        .split_last()
        .expect("split yields at least one segment");
    let mut slot = merged;
    let mut walked = String::new();
    for segment in parents {
        walked = join(&walked, segment);
        let map: &mut Map<String, Value> = match slot {
            Value::Object(map) => map,
            other => {
                return Err(bad(format!(
                    "`{}` holds {}, not an object of keys",
                    parent_of(&walked),
                    show(other)
                )))
            }
        };
        let child = map.entry(segment.to_string()).or_insert(Value::Null);
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        slot = child;
    }
    let Value::Object(map) = slot else {
        return Err(bad(format!(
            "`{walked}` holds {}, not an object of keys",
            show(slot)
        )));
    };
    let full = join(&walked, last);
    match map.get_mut(*last) {
        Some(existing) => merge(existing, value, &full),
        None => {
            map.insert(last.to_string(), value);
        }
    }
    Ok(())
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// A JSON value whose objects have no repeated key (serde_json keeps the last one silently,
/// which would ignore the first).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(Value::from(x))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "key `{key}` appears twice in one object (each key may be given once)"
                )));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}
