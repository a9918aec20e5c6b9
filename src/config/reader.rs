//! Reading typed values out of a JSON object, with key paths in every error.
//!
//! Each section reads its own keys through an [`ObjectReader`], which records the keys it
//! knows; whatever is left in the object afterwards is an unknown key, reported with a
//! suggestion. Problems are collected, never returned early, so one run lists all of them.

use serde_json::{Map, Value};

use super::error::{show, ConfigIssue};

/// A closed set of names that a string key may take (`"cosine" | "linear" | ...`).
pub(crate) trait Choice: Sized + Copy {
    /// The accepted spellings, in declaration order.
    const NAMES: &'static [&'static str];
    /// Parses one spelling.
    fn from_name(name: &str) -> Option<Self>;
}

/// Declares a string-valued configuration enum: variants, JSON spellings, `Serialize`, `Display`.
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// The JSON spelling of every variant, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The JSON spelling of this variant.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl $crate::config::reader::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use config_enum;

/// Reads the keys of one JSON object into typed slots and reports what does not fit.
pub(crate) struct ObjectReader<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
    issues: &'a mut Vec<ConfigIssue>,
}

impl<'a> ObjectReader<'a> {
    /// A reader for the object at `path` (empty for the document root).
    pub fn new(path: &str, map: &'a Map<String, Value>, issues: &'a mut Vec<ConfigIssue>) -> Self {
        ObjectReader {
            path: path.to_string(),
            map,
            known: Vec::new(),
            issues,
        }
    }

    /// The full path of `key` inside this object.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Marks `key` as known and returns its value, if present.
    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key)
    }

    /// Records that `key` holds `value`, which is not `expected`.
    pub fn invalid(&mut self, key: &str, expected: &str, value: &Value) {
        self.issues.push(ConfigIssue::Invalid {
            key: self.key_path(key),
            expected: expected.to_string(),
            got: show(value),
        });
    }

    /// Reads a non-negative integer; `expected` phrases the rule for the message.
    pub fn integer<T: TryFrom<u64>>(&mut self, key: &'static str, slot: &mut T, expected: &str) {
        if let Some(value) = self.take(key) {
            match value.as_u64().and_then(|n| T::try_from(n).ok()) {
                Some(n) => *slot = n,
                None => self.invalid(key, expected, value),
            }
        }
    }

    /// Reads a non-negative integer or `null`.
    pub fn opt_integer<T: TryFrom<u64>>(
        &mut self,
        key: &'static str,
        slot: &mut Option<T>,
        expected: &str,
    ) {
        if let Some(value) = self.take(key) {
            if value.is_null() {
                *slot = None;
            } else {
                match value.as_u64().and_then(|n| T::try_from(n).ok()) {
                    Some(n) => *slot = Some(n),
                    None => self.invalid(key, &format!("{expected} or null"), value),
                }
            }
        }
    }

    /// Reads a number (integers are accepted as numbers).
    pub fn number(&mut self, key: &'static str, slot: &mut f64) {
        if let Some(value) = self.take(key) {
            match value.as_f64() {
                Some(x) => *slot = x,
                None => self.invalid(key, "a number", value),
            }
        }
    }

    /// Reads a number or `null`.
    pub fn opt_number(&mut self, key: &'static str, slot: &mut Option<f64>) {
        if let Some(value) = self.take(key) {
            match value {
                Value::Null => *slot = None,
                _ => match value.as_f64() {
                    Some(x) => *slot = Some(x),
                    None => self.invalid(key, "a number or null", value),
                },
            }
        }
    }

    /// Reads `true` or `false`.
    pub fn flag(&mut self, key: &'static str, slot: &mut bool) {
        if let Some(value) = self.take(key) {
            match value.as_bool() {
                Some(b) => *slot = b,
                None => self.invalid(key, "true or false", value),
            }
        }
    }

    /// Reads `true`, `false` or `null`.
    pub fn opt_flag(&mut self, key: &'static str, slot: &mut Option<bool>) {
        if let Some(value) = self.take(key) {
            match value {
                Value::Null => *slot = None,
                Value::Bool(b) => *slot = Some(*b),
                _ => self.invalid(key, "true, false or null", value),
            }
        }
    }

    /// Reads a string.
    pub fn text(&mut self, key: &'static str, slot: &mut String) {
        if let Some(value) = self.take(key) {
            match value.as_str() {
                Some(s) => *slot = s.to_string(),
                None => self.invalid(key, "a string", value),
            }
        }
    }

    /// Reads a string or `null`.
    pub fn opt_text(&mut self, key: &'static str, slot: &mut Option<String>) {
        if let Some(value) = self.take(key) {
            match value {
                Value::Null => *slot = None,
                Value::String(s) => *slot = Some(s.clone()),
                _ => self.invalid(key, "a string or null", value),
            }
        }
    }

    /// Reads one of the names of a [`Choice`] enum.
    pub fn choice<T: Choice>(&mut self, key: &'static str, slot: &mut T) {
        if let Some(value) = self.take(key) {
            match value.as_str().and_then(T::from_name) {
                Some(choice) => *slot = choice,
                None => {
                    let expected = one_of(T::NAMES, value.as_str());
                    self.invalid(key, &expected, value);
                }
            }
        }
    }

    /// Reads one of the names of a [`Choice`] enum, or `null`.
    pub fn opt_choice<T: Choice>(&mut self, key: &'static str, slot: &mut Option<T>) {
        if let Some(value) = self.take(key) {
            match value {
                Value::Null => *slot = None,
                _ => match value.as_str().and_then(T::from_name) {
                    Some(choice) => *slot = Some(choice),
                    None => {
                        let expected = format!("null or {}", one_of(T::NAMES, value.as_str()));
                        self.invalid(key, &expected, value);
                    }
                },
            }
        }
    }

    /// Reads a value with a custom parser, which gets the value and its full key path and
    /// returns `None` after pushing its own issues.
    pub fn custom<T>(
        &mut self,
        key: &'static str,
        slot: &mut T,
        parse: impl FnOnce(&'a Value, &str, &mut Vec<ConfigIssue>) -> Option<T>,
    ) {
        if let Some(value) = self.take(key) {
            let path = self.key_path(key);
            if let Some(parsed) = parse(value, &path, self.issues) {
                *slot = parsed;
            }
        }
    }

    /// Reads a nested object with `read`, which gets a reader for it.
    pub fn object(
        &mut self,
        key: &'static str,
        expected: &str,
        read: impl FnOnce(&mut ObjectReader<'_>),
    ) {
        if let Some(value) = self.take(key) {
            match value {
                Value::Object(map) => {
                    let path = self.key_path(key);
                    let mut inner = ObjectReader::new(&path, map, self.issues);
                    read(&mut inner);
                    inner.finish();
                }
                _ => self.invalid(key, expected, value),
            }
        }
    }

    /// Records a missing key that must be present in this object.
    pub fn require(&mut self, key: &'static str, expected: &str) {
        if !self.map.contains_key(key) {
            self.issues.push(ConfigIssue::Missing {
                key: self.key_path(key),
                expected: expected.to_string(),
            });
        }
    }

    /// Reports every key of the object that no read asked for.
    pub fn finish(self) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let hint = unknown_key_hint(&self.path, key, &self.known);
                self.issues.push(ConfigIssue::UnknownKey {
                    key: join(&self.path, key),
                    hint,
                });
            }
        }
    }
}

/// `section.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `one of "a", "b", "c"`, with a suggestion when `got` is close to one of them.
pub(crate) fn one_of(names: &[&str], got: Option<&str>) -> String {
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match got.and_then(|g| closest(g, names.iter().copied())) {
        Some(near) => format!("one of {list} (did you mean \"{near}\"?)"),
        None => format!("one of {list}"),
    }
}

/// Names other trainers use for our keys, suggested when a user writes them.
const SYNONYMS: &[(&str, &str)] = &[
    ("d_model", "model.hidden_dim"),
    ("n_embd", "model.hidden_dim"),
    ("hidden_size", "model.hidden_dim"),
    ("n_layer", "model.num_layers"),
    ("n_layers", "model.num_layers"),
    ("num_hidden_layers", "model.num_layers"),
    ("n_head", "model.num_heads"),
    ("n_heads", "model.num_heads"),
    ("num_attention_heads", "model.num_heads"),
    ("n_kv_heads", "model.num_kv_heads"),
    ("num_key_value_heads", "model.num_kv_heads"),
    ("intermediate_size", "model.mlp_dim"),
    ("ffn_dim", "model.mlp_dim"),
    ("d_ff", "model.mlp_dim"),
    ("max_position_embeddings", "model.max_seq_len"),
    ("seq_len", "model.max_seq_len"),
    ("context_length", "model.max_seq_len"),
    ("rms_norm_eps", "model.norm_eps"),
    ("tie_word_embeddings", "model.tie_embeddings"),
    ("dropout", "model.dropout_rate"),
    ("num_experts_per_tok", "model.experts_per_token"),
    ("lr", "training.learning_rate"),
    ("warmup", "training.warmup_steps"),
    ("total_steps", "training.max_steps"),
    ("train_steps", "training.max_steps"),
    ("grad_clip", "training.max_grad_norm"),
    ("gradient_clipping", "training.max_grad_norm"),
    ("beta1", "training.adam_beta1"),
    ("beta2", "training.adam_beta2"),
    ("gradient_accumulation_steps", "training.grad_accum_steps"),
];

/// The hint after "unknown key `x`;": a synonym, a near spelling in the same section, the same
/// key in another section, or the list of valid keys.
fn unknown_key_hint(section: &str, key: &str, known: &[&str]) -> String {
    if let Some((_, ours)) = SYNONYMS.iter().find(|(theirs, _)| *theirs == key) {
        return format!("did you mean `{ours}`?");
    }
    if let Some(near) = closest(key, known.iter().copied()) {
        return format!("did you mean `{}`?", join(section, near));
    }
    if !section.contains('.') {
        if let Some(full) = super::schema_keys()
            .iter()
            .find(|full| full.rsplit('.').next() == Some(key))
        {
            return format!("did you mean `{full}`?");
        }
    }
    let mut valid: Vec<&str> = known.to_vec();
    valid.dedup();
    match section {
        "" => format!("valid top-level keys are: {}", valid.join(", ")),
        _ => format!("valid keys of `{section}` are: {}", valid.join(", ")),
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
pub(crate) fn closest<'n>(
    word: &str,
    candidates: impl Iterator<Item = &'n str>,
) -> Option<&'n str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions() {
        assert_eq!(edit_distance("learing_rate", "learning_rate"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn closest_rejects_far_candidates() {
        let names = ["cosine", "linear", "constant"];
        assert_eq!(closest("cosin", names.iter().copied()), Some("cosine"));
        assert_eq!(closest("exponential", names.iter().copied()), None);
    }
}
