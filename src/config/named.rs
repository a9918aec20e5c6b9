//! What the user's own config file and `--set` overrides name, as opposed to what the defaults
//! fill in, and loading them over a base other than the defaults. `vishwam train --init-from`
//! needs both: the model section comes from the weights wherever the user named no model key,
//! and every model key the user did name is checked against the weights.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{read_config_file, Config, ConfigError};

/// The `section.key` paths (or bare `section` / top-level key names, when a whole section is
/// given as a non-object) that a config file and its `--set` overrides name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedKeys(BTreeSet<String>);

impl NamedKeys {
    /// The keys named by `file` (a parsed config document) and `overrides` (`key=value`).
    fn collect(file: Option<&Value>, overrides: &[String]) -> NamedKeys {
        let mut keys = BTreeSet::new();
        if let Some(Value::Object(sections)) = file {
            for (section, value) in sections {
                add_section(&mut keys, section, value);
            }
        }
        for arg in overrides {
            let Some((path, text)) = arg.split_once('=') else {
                continue;
            };
            let segments: Vec<&str> = path.trim().split('.').collect();
            match segments.as_slice() {
                [section] => {
                    let value = serde_json::from_str::<Value>(text)
                        .unwrap_or_else(|_| Value::String(text.to_string()));
                    add_section(&mut keys, section, &value);
                }
                [section, key, ..] => {
                    keys.insert(format!("{section}.{key}"));
                }
                [] => {}
            }
        }
        NamedKeys(keys)
    }

    /// The keys that the config file at `path` (none: only the defaults) and `overrides`
    /// (`key=value`) name.
    pub fn of(path: Option<&Path>, overrides: &[String]) -> Result<NamedKeys, ConfigError> {
        let (_, file) = read_config_file(path, overrides)?;
        Ok(NamedKeys::collect(file.as_ref(), overrides))
    }

    /// Whether `key` (`section.key`) was named, itself or as part of a whole section.
    pub fn contains(&self, key: &str) -> bool {
        let section = key.split('.').next().unwrap_or(key);
        self.0.contains(key) || self.0.contains(section)
    }

    /// The named keys of `section`, as `section.key`.
    pub fn in_section<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .map(String::as_str)
            .filter(move |k| k.split('.').next() == Some(section) && k.contains('.'))
    }

    /// Whether any key of `section` was named.
    pub fn names_section(&self, section: &str) -> bool {
        self.0.contains(section) || self.in_section(section).next().is_some()
    }
}

fn add_section(keys: &mut BTreeSet<String>, section: &str, value: &Value) {
    match value {
        Value::Object(fields) => keys.extend(fields.keys().map(|k| format!("{section}.{k}"))),
        _ => {
            keys.insert(section.to_string());
        }
    }
}

impl Config {
    /// [`Config::load`] with `base` in place of the defaults beneath the file and the
    /// overrides, and the keys that the file and the overrides name. The result is validated
    /// as a whole, so a file that is only valid with the base's values loads.
    pub fn load_over(
        base: &Config,
        path: Option<&Path>,
        overrides: &[String],
    ) -> Result<(Config, NamedKeys), ConfigError> {
        let (origin, file) = read_config_file(path, overrides)?;
        let named = NamedKeys::collect(file.as_ref(), overrides);
        let config = Config::resolve(Some(base.to_value()), file, overrides, &origin)?;
        Ok((config, named))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_named_by_a_file_and_by_overrides() {
        let file: Value = serde_json::json!({
            "model": {"hidden_dim": 64, "num_layers": 2},
            "training": {"max_steps": 3},
            "description": "x"
        });
        let sets = [
            "model.rope_scaling.factor=2".to_string(),
            "data={\"tokenizer\": \"t.json\"}".to_string(),
        ];
        let named = NamedKeys::collect(Some(&file), &sets);
        assert!(named.contains("model.hidden_dim"));
        assert!(named.contains("model.rope_scaling"));
        assert!(named.contains("data.tokenizer"));
        assert!(named.contains("description"));
        assert!(!named.contains("model.vocab_size"));
        let model: Vec<&str> = named.in_section("model").collect();
        assert_eq!(
            model,
            ["model.hidden_dim", "model.num_layers", "model.rope_scaling"]
        );
        assert!(!named.names_section("tpu"));
        assert!(named.names_section("training"));
    }

    #[test]
    fn loading_over_a_base_keeps_the_base_where_nothing_is_named() {
        let mut base = Config::default();
        base.model.hidden_dim = 96;
        base.model.num_heads = 6;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"model": {"num_layers": 2}}"#).unwrap();
        let (cfg, named) =
            Config::load_over(&base, Some(&path), &["training.max_steps=3".into()]).unwrap();
        assert_eq!(cfg.model.hidden_dim, 96);
        assert_eq!(cfg.model.num_layers, 2);
        assert_eq!(cfg.training.max_steps, 3);
        assert!(named.contains("model.num_layers") && !named.contains("model.hidden_dim"));
    }
}
