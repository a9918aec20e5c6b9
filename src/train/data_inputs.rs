//! The inputs of a run's data (`data.source`, `datasets.paths`): prepared datasets, trained
//! on as they are, and text sources, checked against `data.format`; and the keys that only
//! apply to text, refused when there is none.

use super::TrainError;
use crate::config::{Config, DataFormat, DataSource, InvalidUtf8Policy};
use crate::data::manifest::is_prepared_dataset;
use crate::data::sources::{FileFormat, InvalidUtf8};
use crate::data::{BrownFetcher, SourceSpec};
use std::path::{Path, PathBuf};

/// `paths` with each existing path made canonical (`data/raw` and `./data/raw/` alike); globs
/// and `brown` as they are.
pub(super) fn canonical_paths(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .map(|p| match std::fs::canonicalize(p) {
            Ok(canonical) => canonical.to_string_lossy().into_owned(),
            Err(_) => p.clone(),
        })
        .collect()
}

/// One input of a run's data: a prepared dataset, trained on as it is, or text to prepare.
pub(super) enum DataInput {
    /// A directory made by `vishwam data prepare` or `merge` (recognised by its manifest).
    Prepared(PathBuf),
    /// Text sources, tokenized into the cache first.
    Text(SourceSpec),
}

/// The inputs named by `data.source` (or each entry of `datasets.paths`).
pub(super) fn data_inputs(cfg: &Config) -> Result<Vec<DataInput>, TrainError> {
    let groups: Vec<Vec<String>> = if cfg.uses_dataset_mixture() {
        cfg.datasets.paths.iter().map(|p| vec![p.clone()]).collect()
    } else {
        match &cfg.data.source {
            None | Some(DataSource::Brown) => vec![vec!["brown".to_string()]],
            Some(DataSource::Paths(paths)) => vec![paths.clone()],
        }
    };
    let wanted = match cfg.data.format {
        DataFormat::Text => FileFormat::Text,
        DataFormat::Jsonl => FileFormat::Jsonl,
        DataFormat::Csv => FileFormat::Csv,
    };
    let mut inputs = Vec::new();
    for paths in groups {
        if let [path] = paths.as_slice() {
            if is_prepared_dataset(Path::new(path)) {
                inputs.push(DataInput::Prepared(PathBuf::from(path)));
                continue;
            }
        }
        let spec = SourceSpec {
            paths,
            text_field: cfg.data.text_field.clone(),
            invalid_utf8: match cfg.data.invalid_utf8 {
                InvalidUtf8Policy::Error => InvalidUtf8::Error,
                InvalidUtf8Policy::Replace => InvalidUtf8::Replace,
            },
            ..SourceSpec::default()
        };
        // Resolving also refuses a prepared dataset listed among text sources.
        let resolved = spec.resolve(&BrownFetcher::default())?;
        for file in &resolved.files {
            if file.format != wanted {
                return Err(TrainError::Other(format!(
                    "data.format is `{}` but {} is {}; name JSONL files *.jsonl / *.ndjson and \
                     CSV files *.csv, and set data.format to match",
                    cfg.data.format,
                    file.path.display(),
                    match file.format {
                        FileFormat::Text => "plain text",
                        FileFormat::Jsonl => "JSONL",
                        FileFormat::Csv => "CSV",
                    }
                )));
            }
        }
        inputs.push(DataInput::Text(spec));
    }
    if inputs.iter().all(|i| matches!(i, DataInput::Prepared(_))) {
        refuse_text_options(cfg)?;
    }
    Ok(inputs)
}

/// What the data of `cfg` (`data.source`, or each entry of `datasets.paths`) resolves to, one
/// line per input: "prepared dataset DIR" or the text sources and their file count. A path
/// that does not exist, or a file of another format than `data.format`, is an error naming it.
pub fn describe_data_inputs(cfg: &Config) -> Result<Vec<String>, TrainError> {
    let mut lines = Vec::new();
    for input in data_inputs(cfg)? {
        lines.push(match input {
            DataInput::Prepared(dir) => format!("prepared dataset {}", dir.display()),
            DataInput::Text(spec) => spec.resolve(&BrownFetcher::default())?.description,
        });
    }
    Ok(lines)
}

/// With only prepared datasets as inputs, the keys that say how text is read have nothing to
/// act on: a value other than the default is an error naming the key.
fn refuse_text_options(cfg: &Config) -> Result<(), TrainError> {
    let defaults = crate::config::DataConfig::default();
    let set: Vec<String> = [
        (
            "data.format",
            cfg.data.format != defaults.format,
            cfg.data.format.to_string(),
        ),
        (
            "data.text_field",
            cfg.data.text_field != defaults.text_field,
            cfg.data.text_field.clone(),
        ),
        (
            "data.invalid_utf8",
            cfg.data.invalid_utf8 != defaults.invalid_utf8,
            cfg.data.invalid_utf8.to_string(),
        ),
    ]
    .into_iter()
    .filter(|(_, differs, _)| *differs)
    .map(|(key, _, value)| format!("{key} = \"{value}\""))
    .collect();
    if set.is_empty() {
        return Ok(());
    }
    Err(TrainError::Other(format!(
        "{} only apply to text sources, but every input of this run is a prepared dataset \
         (its text was read when it was prepared); remove {}",
        set.join(", "),
        if set.len() == 1 { "it" } else { "them" }
    )))
}
