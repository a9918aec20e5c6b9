//! The training data of a config: tokenizer, prepared token shards, the background loader,
//! and fixed validation batches, behind [`BatchSource`].

use super::{BatchSource, HostBatch, TrainError};
use crate::config::{
    BatchGeometry, Config, DataFormat, DataSource, DatasetType, MergeStrategy as CfgMerge,
};
use crate::data::{
    self, loader::build_batch, BrownFetcher, DataLoader, DatasetKind, LoaderOptions, LoaderState,
    MergeOptions, MergeStrategy, PrepareOptions, PreparedDataset, SourceSpec, SpecialTokenIds,
    Split, TextTokenizer, TokenDataset, TrainOptions, WindowOptions,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl From<data::DataError> for TrainError {
    fn from(e: data::DataError) -> Self {
        TrainError::Other(e.to_string())
    }
}

/// Tokenizer, prepared dataset, loader and validation set of one run.
pub struct TrainingData {
    /// The tokenizer (also saved next to the run's checkpoints).
    pub tokenizer: TextTokenizer,
    /// pad / bos / eos ids.
    pub specials: SpecialTokenIds,
    /// The prepared token shards.
    pub prepared: Arc<PreparedDataset>,
    loader: DataLoader,
    options: LoaderOptions,
    accum: usize,
    micro_batch: usize,
    validation: Option<Arc<TokenDataset>>,
}

fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// The text sources named by `data.source` (or each entry of `datasets.paths`).
fn source_specs(cfg: &Config) -> Result<Vec<SourceSpec>, TrainError> {
    let groups: Vec<Vec<String>> = if cfg.uses_dataset_mixture() {
        cfg.datasets.paths.iter().map(|p| vec![p.clone()]).collect()
    } else {
        match &cfg.data.source {
            None | Some(DataSource::Brown) => vec![vec!["brown".to_string()]],
            Some(DataSource::Paths(paths)) => vec![paths.clone()],
        }
    };
    let mut specs = Vec::new();
    for paths in groups {
        let spec = SourceSpec {
            paths,
            text_field: cfg.data.text_field.clone(),
            ..SourceSpec::default()
        };
        let resolved = spec.resolve(&BrownFetcher::default())?;
        for file in &resolved.files {
            let name = file.path.to_string_lossy().to_lowercase();
            let is_jsonl = name.ends_with(".jsonl") || name.ends_with(".ndjson");
            let wants_jsonl = cfg.data.format == DataFormat::Jsonl;
            if is_jsonl != wants_jsonl {
                return Err(TrainError::Other(format!(
                    "data.format is `{}` but {} is {}; name JSONL files *.jsonl / *.ndjson and set data.format to match",
                    if wants_jsonl { "jsonl" } else { "text" },
                    file.path.display(),
                    if is_jsonl { "JSONL" } else { "plain text" }
                )));
            }
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// `data.tokenizer`, or a byte-level BPE of `model.vocab_size` trained on the sources once
/// and cached under `$VISHWAM_HOME/tokenizers/`.
fn tokenizer(cfg: &Config, specs: &[SourceSpec]) -> Result<TextTokenizer, TrainError> {
    if let Some(path) = &cfg.data.tokenizer {
        return Ok(TextTokenizer::from_file(Path::new(path))?);
    }
    let fetcher = BrownFetcher::default();
    let mut fingerprints = Vec::new();
    let mut resolved = Vec::new();
    for spec in specs {
        let r = spec.resolve(&fetcher)?;
        fingerprints.push(r.fingerprint.clone());
        resolved.push(r);
    }
    let s = &cfg.sequence;
    let specials = SpecialTokenIds::placed(s.pad_token_id, s.bos_token_id, s.eos_token_id)?;
    let vocab = cfg.model.vocab_size.to_string();
    // The default placement keeps the cache names of tokenizers trained before it was chosen.
    let placement = match specials == SpecialTokenIds::default() {
        true => String::new(),
        false => format!(
            "specials {} {} {}",
            specials.pad, specials.bos, specials.eos
        ),
    };
    let mut parts: Vec<&str> = vec![vocab.as_str()];
    if !placement.is_empty() {
        parts.push(&placement);
    }
    parts.extend(fingerprints.iter().map(String::as_str));
    let path = crate::paths::vishwam_home()
        .join("tokenizers")
        .join(format!("bpe-{vocab}-{}.json", hash_hex(&parts)));
    if path.is_file() {
        return Ok(TextTokenizer::from_file(&path)?);
    }
    tracing::info!("training a {vocab}-token byte-level BPE tokenizer on the training text (once; cached at {})", path.display());
    let docs = resolved
        .into_iter()
        .flat_map(|r| data::reader::documents(&r).collect::<Vec<_>>());
    let options = TrainOptions {
        vocab_size: cfg.model.vocab_size,
        show_progress: true,
        ..TrainOptions::default()
    };
    let tok = TextTokenizer::train_byte_level_bpe_with_specials(docs, &options, &specials)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::io(format!("creating {}", dir.display()), e))?;
    }
    tok.save(&path)?;
    Ok(tok)
}

/// The pad / bos / eos ids from `sequence.*` or the tokenizer's conventional names.
fn specials(cfg: &Config, tok: &TextTokenizer) -> Result<SpecialTokenIds, TrainError> {
    let base = tok.conventional_special_ids().unwrap_or_default();
    let s = &cfg.sequence;
    let ids = SpecialTokenIds {
        pad: s.pad_token_id.unwrap_or(base.pad),
        bos: s.bos_token_id.unwrap_or(base.bos),
        eos: s.eos_token_id.unwrap_or(base.eos),
    };
    tok.check_special_ids(&ids)?;
    Ok(ids)
}

/// The tokenizer, special ids and prepared token shards of a config's data: the tokenizer
/// is loaded or trained, each source is prepared (or its fresh cache reused), and a
/// `datasets` mixture is merged.
pub fn prepare_data(
    cfg: &Config,
) -> Result<(TextTokenizer, SpecialTokenIds, PreparedDataset), TrainError> {
    let specs = source_specs(cfg)?;
    let tokenizer = tokenizer(cfg, &specs)?;
    tokenizer.check_model_vocab(cfg.model.vocab_size)?;
    let specials = specials(cfg, &tokenizer)?;
    let cache_root = cfg
        .data
        .cache_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::paths::datasets_dir().join("cache"));
    let prepare = PrepareOptions::default();
    let mut dirs = Vec::new();
    for spec in &specs {
        let key = hash_hex(&[
            &spec.paths.join("\n"),
            &spec.text_field,
            &tokenizer.hash()[..16],
        ]);
        let dir = cache_root.join(key);
        data::ensure_prepared(spec, &tokenizer, &dir, &prepare)?;
        dirs.push(dir);
    }
    let prepared = if dirs.len() == 1 {
        PreparedDataset::open_for(&dirs[0], &tokenizer)?
    } else {
        let strategy = match cfg.datasets.strategy() {
            CfgMerge::Weighted => MergeStrategy::Weighted,
            CfgMerge::Equal => MergeStrategy::Equal,
            CfgMerge::Proportional => MergeStrategy::Proportional,
        };
        let weights = cfg.datasets.weights.clone().unwrap_or_default();
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        let w: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
        let key = hash_hex(&[
            &names.join("\n"),
            &w.join(","),
            &format!("{strategy:?}"),
            &cfg.training.seed.to_string(),
        ]);
        let out = cache_root.join(format!("mix-{key}"));
        match PreparedDataset::open_for(&out, &tokenizer) {
            Ok(p) => p,
            Err(_) => {
                let opts = MergeOptions {
                    strategy,
                    weights,
                    seed: cfg.training.seed,
                    ..MergeOptions::default()
                };
                data::merge(&dirs, &opts, &out)?
            }
        }
    };
    Ok((tokenizer, specials, prepared))
}

impl TrainingData {
    /// Loads or trains the tokenizer, prepares (or reuses) the token shards and starts the
    /// loader at the beginning of the training split; each batch holds `batch.global_batch()`
    /// sequences (see [`crate::train::batch_geometry`]).
    pub fn open(cfg: &Config, batch: BatchGeometry) -> Result<TrainingData, TrainError> {
        let (tokenizer, specials, prepared) = prepare_data(cfg)?;
        let prepared = Arc::new(prepared);
        let options = LoaderOptions {
            batch_size: batch.global_batch(),
            seq_len: cfg.seq_len(),
            queue_size: cfg.data.queue_size,
            num_workers: cfg.data.num_workers,
            seed: cfg.training.seed,
            val_fraction: cfg.data.val_fraction,
            kind: match cfg.data.dataset_type {
                DatasetType::Packed => DatasetKind::Packed,
                DatasetType::RandomChunk => DatasetKind::RandomChunk,
                DatasetType::Document => DatasetKind::DocumentAware,
            },
            add_bos: false,
        };
        let loader = DataLoader::start(prepared.clone(), Split::Train, &options, specials, None)?;
        let validation = if cfg.data.val_fraction > 0.0 {
            let window = WindowOptions {
                kind: options.kind,
                seq_len: options.seq_len,
                seed: options.seed,
                val_fraction: options.val_fraction,
                add_bos: false,
                specials,
            };
            Some(Arc::new(TokenDataset::new(
                prepared.clone(),
                Split::Validation,
                window,
            )?))
        } else {
            None
        };
        Ok(TrainingData {
            tokenizer,
            specials,
            prepared,
            loader,
            options,
            accum: batch.grad_accum_steps,
            micro_batch: batch.micro_batch(),
            validation,
        })
    }

    /// Seconds the trainer waited on the loader since the last call.
    pub fn take_wait_seconds(&mut self) -> f64 {
        self.loader.take_wait_time().as_secs_f64()
    }

    /// Some validation text to prompt a sample with (the start of the first held-out window).
    pub fn sample_prompt(&self, tokens: usize) -> Vec<i32> {
        match &self.validation {
            Some(v) => {
                let b = build_batch(v, 1, 0);
                b.inputs.into_iter().take(tokens).collect()
            }
            None => vec![self.specials.bos as i32],
        }
    }
}

fn to_host(batch: &data::Batch, accum: usize) -> Result<HostBatch, TrainError> {
    HostBatch::from_rows(
        accum,
        batch.seq_len,
        &batch.inputs,
        &batch.targets,
        &batch.loss_mask,
    )
}

impl BatchSource for TrainingData {
    fn next_train(&mut self) -> Result<HostBatch, TrainError> {
        let batch = self.loader.next_batch()?;
        to_host(&batch, self.accum)
    }

    fn eval_batches(&mut self, count: usize) -> Result<Vec<HostBatch>, TrainError> {
        let Some(v) = &self.validation else {
            return Err(TrainError::Other(
                "evaluation needs data.val_fraction > 0".into(),
            ));
        };
        (0..count as u64)
            .map(|i| to_host(&build_batch(v, self.micro_batch, i), 1))
            .collect()
    }

    fn position(&self) -> serde_json::Value {
        serde_json::to_value(self.loader.state()).unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), TrainError> {
        let state: LoaderState = serde_json::from_value(position.clone()).map_err(|e| {
            TrainError::Other(format!(
                "the checkpoint's data position is not a loader state: {e}"
            ))
        })?;
        self.loader = DataLoader::start(
            self.prepared.clone(),
            Split::Train,
            &self.options,
            self.specials,
            Some(&state),
        )?;
        Ok(())
    }
}
