//! Where vishwam keeps its files: `$VISHWAM_HOME` (default `~/.cache/vishwam`).

use std::path::PathBuf;

/// Name of the environment variable that overrides [`vishwam_home`].
pub const VISHWAM_HOME_ENV: &str = "VISHWAM_HOME";

/// Root of vishwam's cache: `$VISHWAM_HOME`, else `$HOME/.cache/vishwam`, else `./.vishwam`.
///
/// Datasets live under `datasets/`, trained tokenizers under `tokenizers/`.
pub fn vishwam_home() -> PathBuf {
    if let Some(home) = std::env::var_os(VISHWAM_HOME_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("vishwam"),
        None => PathBuf::from(".vishwam"),
    }
}

/// Directory for downloaded and converted datasets: `vishwam_home()/datasets`.
pub fn datasets_dir() -> PathBuf {
    vishwam_home().join("datasets")
}
