//! Tests of loading, merging, overrides, validation, presets and feature gating.

mod auto_batch;
mod features;
mod loading;
mod optimizer;
mod overrides;
mod presets;
mod validation;

use super::*;

/// Loads `json` and returns the messages of its problems (empty when it loads).
fn problems(json: &str) -> Vec<String> {
    match Config::from_json_str(json) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { issues, .. }) => {
            issues.iter().map(ToString::to_string).collect()
        }
        Err(other) => vec![format!("not an Invalid error: {other}")],
    }
}

/// The one problem `json` has; fails when it has none or several.
fn problem(json: &str) -> String {
    let found = problems(json);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one problem for {json}, got {found:#?}"
    );
    found.into_iter().next().unwrap_or_default()
}

/// Loads `json`, failing the test with the error's text when it does not load.
fn load(json: &str) -> Config {
    match Config::from_json_str(json) {
        Ok(config) => config,
        Err(e) => panic!("{json} should load, got:\n{e}"),
    }
}

/// Defaults plus `--set` overrides.
fn with_sets(sets: &[&str]) -> Result<Config, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(None, &sets)
}

/// Path of a file in `configs/`.
fn preset(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}
