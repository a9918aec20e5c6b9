//! Errors of the configuration: one [`ConfigIssue`] per bad key, gathered into a [`ConfigError`].

use std::fmt::Write as _;
use std::path::PathBuf;

use super::features::UnsupportedSetting;

/// One problem with one key (or one pair of keys) of a configuration.
///
/// Every variant names the full key path (`training.learning_rate`), the value found and the
/// rule it breaks, so the message alone says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigIssue {
    /// A key that no section defines; `hint` is a "did you mean" or the list of valid keys.
    #[error("unknown key `{key}`; {hint}")]
    UnknownKey {
        /// Full path of the unknown key.
        key: String,
        /// A suggestion or the list of keys the section accepts.
        hint: String,
    },
    /// A key that must be present (inside an object that was given) is missing.
    #[error("`{key}` is required: it must be {expected}")]
    Missing {
        /// Full path of the missing key.
        key: String,
        /// What the key must hold.
        expected: String,
    },
    /// A value of the wrong type or outside its allowed range.
    #[error("`{key}` must be {expected}, got {got}")]
    Invalid {
        /// Full path of the key.
        key: String,
        /// The rule, phrased to follow "must be" (`a positive integer`, `in [0, 1)`).
        expected: String,
        /// The value found, as JSON text.
        got: String,
    },
    /// Two keys whose values cannot hold together.
    #[error("`{key}` = {value} contradicts `{other}` = {other_value}: {rule}")]
    Conflict {
        /// Full path of the first key.
        key: String,
        /// Its value, as JSON text.
        value: String,
        /// Full path of the second key.
        other: String,
        /// Its value, as JSON text.
        other_value: String,
        /// Why they cannot hold together and what to do.
        rule: String,
    },
}

impl ConfigIssue {
    /// The full key path this issue is about (the first key of a conflict).
    pub fn key(&self) -> &str {
        match self {
            ConfigIssue::UnknownKey { key, .. }
            | ConfigIssue::Missing { key, .. }
            | ConfigIssue::Invalid { key, .. }
            | ConfigIssue::Conflict { key, .. } => key,
        }
    }
}

/// Why a configuration could not be loaded, or cannot be run by this build.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The path that was given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid JSON.
    #[error("{origin} is not valid JSON: {message} at line {line}, column {column}{hint}")]
    Syntax {
        /// Where the text came from (a file path, or `config text`).
        origin: String,
        /// The parser's message.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// Extra advice (empty, or starts with "; ").
        hint: String,
    },
    /// The JSON document is not an object of sections.
    #[error("{origin} must hold a JSON object of sections (model, training, ...), got {got}")]
    NotAnObject {
        /// Where the text came from.
        origin: String,
        /// What the document holds instead, as JSON text.
        got: String,
    },
    /// A `--set` argument is malformed.
    #[error("bad override `--set {arg}`: {reason}")]
    BadOverride {
        /// The argument as given.
        arg: String,
        /// What is wrong and the expected form.
        reason: String,
    },
    /// Keys with wrong names, types or values; every problem found is listed.
    #[error("{}", describe_issues(origin, issues))]
    Invalid {
        /// Where the configuration came from.
        origin: String,
        /// All problems found, in key order.
        issues: Vec<ConfigIssue>,
    },
    /// Settings that this build of vishwam cannot honour yet (see [`super::Features`]).
    #[error("{}", describe_unsupported(settings))]
    Unsupported {
        /// Each setting that needs a feature this build lacks.
        settings: Vec<UnsupportedSetting>,
    },
}

fn describe_issues(origin: &str, issues: &[ConfigIssue]) -> String {
    let count = match issues.len() {
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    };
    let mut text = format!("invalid configuration ({origin}), {count}:");
    for issue in issues {
        let _ = write!(text, "\n  - {issue}");
    }
    text
}

fn describe_unsupported(settings: &[UnsupportedSetting]) -> String {
    let mut text = String::from(
        "the configuration asks for features this build of vishwam does not implement yet:",
    );
    for setting in settings {
        let _ = write!(text, "\n  - {setting}");
    }
    text
}

/// Renders a JSON value for a message, shortened when long.
pub(crate) fn show(value: &serde_json::Value) -> String {
    const LIMIT: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head}...")
    }
}
