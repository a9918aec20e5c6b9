//! Data sources: text files, directories, globs, JSONL, CSV and the built-in `brown` corpus.
//!
//! A [`SourceSpec`] resolves to an ordered list of files ([`ResolvedSources`]) with a
//! fingerprint of their state; [`super::reader`] reads them. A prepared dataset (a directory
//! with a `manifest.json`) is never a text source: resolving one is an error, and training
//! takes such directories as datasets before sources are resolved
//! ([`super::manifest::is_prepared_dataset`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::brown::{BrownFetcher, BROWN_SOURCE_NAME};
use super::error::{DataError, Result};

/// How a plain-text file is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TextDocuments {
    /// Each file is one document.
    #[default]
    File,
    /// Documents are separated by blank lines.
    Paragraph,
    /// Each non-blank line is one document.
    Line,
}

/// What to do with bytes that are not valid UTF-8 (config `data.invalid_utf8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    /// Stop with an error naming the file and the byte offset.
    #[default]
    Error,
    /// Replace each invalid sequence with U+FFFD (counted and warned about per file).
    Replace,
}

/// Where the text comes from (config `data.paths`, `data.text_field`, `data.text_documents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSpec {
    /// Files, directories (read recursively, hidden entries skipped), glob patterns, or the
    /// word `brown` for the built-in Brown corpus. Files ending in `.jsonl` or `.ndjson` are
    /// JSONL (one document per record), files ending in `.csv` are CSV with a header (one
    /// document per row); all others are plain text.
    pub paths: Vec<String>,
    /// The field of each JSONL record, or the CSV column, that holds the document's text.
    pub text_field: String,
    /// How plain-text files are cut into documents.
    pub text_documents: TextDocuments,
    /// A document longer than this many bytes is read in pieces cut at line ends (the pieces'
    /// tokens are joined into one document), so no file has to fit in memory.
    pub max_piece_bytes: usize,
    /// What to do with bytes that are not valid UTF-8.
    pub invalid_utf8: InvalidUtf8,
}

impl Default for SourceSpec {
    fn default() -> Self {
        SourceSpec {
            paths: vec![BROWN_SOURCE_NAME.to_string()],
            text_field: "text".to_string(),
            text_documents: TextDocuments::File,
            max_piece_bytes: 64 << 20,
            invalid_utf8: InvalidUtf8::Error,
        }
    }
}

/// The format of one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Plain text, cut by [`TextDocuments`].
    Text,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row; one document per row.
    Csv,
}

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The file's path.
    pub path: PathBuf,
    /// How to read it.
    pub format: FileFormat,
}

/// The files a [`SourceSpec`] names, in reading order, with a fingerprint of their state.
#[derive(Debug, Clone)]
pub struct ResolvedSources {
    /// The spec they came from.
    pub spec: SourceSpec,
    /// Files in the order their documents are read.
    pub files: Vec<SourceFile>,
    /// Human-readable description ("brown (500 files)", "3 paths (12 files)").
    pub description: String,
    /// Hex sha256 over the spec's options and each file's canonical path, size and
    /// modification time (not over the paths as spelled).
    pub fingerprint: String,
}

impl SourceSpec {
    /// A spec reading `paths` with the default options.
    pub fn from_paths<S: Into<String>>(paths: impl IntoIterator<Item = S>) -> Self {
        SourceSpec {
            paths: paths.into_iter().map(Into::into).collect(),
            ..SourceSpec::default()
        }
    }

    /// Expands paths, directories and globs (fetching `brown` on first use) into files.
    pub fn resolve(&self, brown: &BrownFetcher) -> Result<ResolvedSources> {
        if self.paths.is_empty() {
            return Err(DataError::InvalidOption {
                name: "data.paths",
                value: "[]".into(),
                expected: "at least one file, directory, glob or `brown`".into(),
            });
        }
        if self.max_piece_bytes < 1024 {
            return Err(DataError::InvalidOption {
                name: "data.max_piece_bytes",
                value: self.max_piece_bytes.to_string(),
                expected: "at least 1024".into(),
            });
        }
        let mut files = Vec::new();
        let mut hidden_skipped = 0u64;
        for entry in &self.paths {
            if entry == BROWN_SOURCE_NAME {
                let dir = brown.ensure_text()?;
                walk_dir(&dir, &mut files, &mut hidden_skipped)?;
            } else if entry.contains(['*', '?', '[']) {
                let matches = glob::glob(entry).map_err(|e| DataError::InvalidGlob {
                    pattern: entry.clone(),
                    message: e.to_string(),
                })?;
                let mut matched: Vec<PathBuf> = Vec::new();
                for m in matches {
                    let path = m.map_err(|e| {
                        let path = e.path().to_path_buf();
                        DataError::io("reading glob match", path, e.into())
                    })?;
                    matched.push(path);
                }
                if matched.is_empty() {
                    return Err(DataError::GlobNoMatch {
                        pattern: entry.clone(),
                    });
                }
                matched.sort();
                for path in matched {
                    add_path(&path, &mut files, &mut hidden_skipped)?;
                }
            } else {
                let path = PathBuf::from(entry);
                if !path.exists() {
                    return Err(DataError::MissingPath { path });
                }
                add_path(&path, &mut files, &mut hidden_skipped)?;
            }
        }
        if hidden_skipped > 0 {
            tracing::info!(
                "skipped {hidden_skipped} hidden files or directories (names starting with '.')"
            );
        }
        if files.is_empty() {
            return Err(DataError::NoDocuments {
                description: format!("{:?} (no files found)", self.paths),
            });
        }
        let description = format!("{} ({} files)", self.paths.join(", "), files.len());
        let fingerprint = fingerprint(self, &files)?;
        Ok(ResolvedSources {
            spec: self.clone(),
            files,
            description,
            fingerprint,
        })
    }
}

fn add_path(path: &Path, files: &mut Vec<SourceFile>, hidden: &mut u64) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io("reading", path, e))?;
    if meta.is_dir() && super::manifest::is_prepared_dataset(path) {
        return Err(DataError::PreparedDatasetInSources {
            path: path.to_path_buf(),
            manifest: super::manifest::MANIFEST_FILE,
        });
    }
    if meta.is_dir() {
        walk_dir(path, files, hidden)
    } else {
        files.push(SourceFile {
            path: path.to_path_buf(),
            format: format_of(path),
        });
        Ok(())
    }
}

fn walk_dir(dir: &Path, files: &mut Vec<SourceFile>, hidden: &mut u64) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io("listing", dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| DataError::io("listing", dir, e))?;
    entries.sort();
    for path in entries {
        let is_hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_hidden {
            *hidden += 1;
            continue;
        }
        add_path(&path, files, hidden)?;
    }
    Ok(())
}

/// The format by extension, in any case (`x.csv`, `X.CSV`, `x.JSONL`).
fn format_of(path: &Path) -> FileFormat {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match extension.as_deref() {
        Some("jsonl") | Some("ndjson") => FileFormat::Jsonl,
        Some("csv") => FileFormat::Csv,
        _ => FileFormat::Text,
    }
}

/// The fingerprint hashes the options of `spec` and, for each file, its canonical path, size
/// and modification time: the `paths` as spelled (`data/raw`, `./data/raw/`) are left out,
/// since the files they resolve to say the same, so two spellings of one source share caches.
fn fingerprint(spec: &SourceSpec, files: &[SourceFile]) -> Result<String> {
    let mut hasher = Sha256::new();
    let options = SourceSpec {
        paths: Vec::new(),
        ..spec.clone()
    };
    let spec_json = serde_json::to_string(&options).unwrap_or_default();
    hasher.update(spec_json.as_bytes());
    for file in files {
        let meta =
            std::fs::metadata(&file.path).map_err(|e| DataError::io("reading", &file.path, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let canonical = std::fs::canonicalize(&file.path)
            .map_err(|e| DataError::io("resolving the path of", &file.path, e))?;
        hasher.update(canonical.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(meta.len().to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::data::test_support::collect_source as collect;

    #[test]
    fn files_directories_globs_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("a.txt"), "alpha text\n").unwrap();
        std::fs::write(root.join("sub/b.txt"), "beta").unwrap();
        std::fs::write(root.join("sub/deeper/c.md"), "gamma\n\ngamma two").unwrap();
        std::fs::write(root.join(".git/x"), "hidden").unwrap();
        std::fs::write(
            root.join("d.jsonl"),
            "{\"body\": \"one\", \"id\": 1}\n\n{\"body\": \"two\\nlines\"}\n",
        )
        .unwrap();
        let mut spec = SourceSpec::from_paths([root.to_string_lossy()]);
        spec.text_field = "body".into();
        let (docs, stats) = collect(&spec);
        assert_eq!(
            docs,
            vec![
                "alpha text\n",
                "one",
                "two\nlines",
                "beta",
                "gamma\n\ngamma two"
            ]
        );
        assert_eq!(stats.files, 4);
        assert_eq!(stats.documents, 5);

        let pattern = format!("{}/sub/**/*.md", root.display());
        spec.paths = vec![pattern];
        spec.text_documents = TextDocuments::Paragraph;
        assert_eq!(collect(&spec).0, vec!["gamma", "gamma two"]);
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        let spec = SourceSpec::from_paths([path.to_string_lossy()]);
        let fetcher = BrownFetcher::unavailable_for_tests();
        let before = spec.resolve(&fetcher).unwrap().fingerprint;
        assert_eq!(before, spec.resolve(&fetcher).unwrap().fingerprint);
        std::fs::write(&path, "one two").unwrap();
        assert_ne!(before, spec.resolve(&fetcher).unwrap().fingerprint);
    }

    #[test]
    fn two_spellings_of_one_path_have_one_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("raw")).unwrap();
        std::fs::write(dir.path().join("raw/a.txt"), "one two").unwrap();
        let fetcher = BrownFetcher::unavailable_for_tests();
        let plain = format!("{}/raw", dir.path().display());
        let dotted = format!("{}/./raw/", dir.path().display());
        let of = |p: &str| {
            SourceSpec::from_paths([p])
                .resolve(&fetcher)
                .unwrap()
                .fingerprint
        };
        assert_eq!(of(&plain), of(&dotted));
    }

    #[test]
    fn extensions_are_matched_in_any_case() {
        assert_eq!(format_of(Path::new("a/X.CSV")), FileFormat::Csv);
        assert_eq!(format_of(Path::new("X.JsonL")), FileFormat::Jsonl);
        assert_eq!(format_of(Path::new("X.NDJSON")), FileFormat::Jsonl);
        assert_eq!(format_of(Path::new("X.Txt")), FileFormat::Text);
    }
}
