//! The training data of a config: tokenizer, prepared token shards, the background loader,
//! and fixed validation batches, behind [`BatchSource`].

use super::data_inputs::{canonical_paths, data_inputs, DataInput};
use super::{BatchSource, HostBatch, TrainError};
use crate::config::{BatchGeometry, Config, DatasetType, MergeStrategy as CfgMerge};
use crate::data::error::TokenizerChoice;
use crate::data::{
    self, loader::build_batch, loader::build_batch_rows, process_slice::ProcessSlice, BrownFetcher,
    DataLoader, DatasetKind, LoaderOptions, LoaderState, MergeOptions, MergeStrategy,
    PrepareOptions, PreparedDataset, SourceSpec, SpecialTokenIds, Split, TextTokenizer,
    TokenDataset, TrainOptions, WindowOptions,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
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
    /// The rows of every micro-batch this process reads (all of them in a single-process run).
    rows: ProcessSlice,
}

fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// A tokenizer and a sentence saying which one it is and why.
pub struct ChosenTokenizer {
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    /// Which tokenizer it is and why it was chosen ("o200k_base (data.tokenizer)", ...).
    pub description: String,
}

/// The tokenizer of a run or of `vishwam data prepare`, by these rules in order:
/// 1. `configured` (`data.tokenizer` / `--tokenizer`): a `tokenizer.json` path or a name
///    (`o200k_base`);
/// 2. the `tokenizer.json` shipped by the first of the `prepared` datasets that ships one;
/// 3. a byte-level BPE of `vocab_size` tokens trained on the `text` sources once and cached
///    under `$VISHWAM_HOME/tokenizers/` (the same sources, size and special ids reuse it),
///    with `<pad>`, `<bos>` and `<eos>` at the ids [`SpecialTokenIds::placed`] gives for
///    `asked` (the `sequence.pad_token_id` / `bos_token_id` / `eos_token_id` of the config),
///    which must then lie in 0..=2. Rules 1 and 2 do not look at `asked`: the ids are
///    checked against the chosen tokenizer afterwards.
///
/// A prepared dataset that ships no tokenizer needs rule 1.
pub fn choose_tokenizer(
    configured: Option<&str>,
    vocab_size: usize,
    prepared: &[PathBuf],
    text: &[SourceSpec],
    asked: AskedSpecialIds,
) -> Result<ChosenTokenizer, TrainError> {
    if let Some(name) = configured {
        return Ok(ChosenTokenizer {
            tokenizer: TextTokenizer::load(name)?,
            description: format!("{name} (data.tokenizer)"),
        });
    }
    for dir in prepared {
        if let Some(tokenizer) = PreparedDataset::shipped_tokenizer(dir)? {
            return Ok(ChosenTokenizer {
                description: format!(
                    "{} (shipped with the prepared dataset {})",
                    tokenizer.origin(),
                    dir.display()
                ),
                tokenizer,
            });
        }
    }
    if let Some(dir) = prepared.first() {
        let manifest = data::Manifest::read(dir)?;
        return Err(data::DataError::DatasetWithoutTokenizer {
            dir: dir.clone(),
            origin: manifest.tokenizer_origin,
            hash: manifest.tokenizer_hash,
        }
        .into());
    }
    let specials = &SpecialTokenIds::placed(asked.pad, asked.bos, asked.eos)?;
    let fetcher = BrownFetcher::default();
    let mut fingerprints = Vec::new();
    let mut resolved = Vec::new();
    for spec in text {
        let r = spec.resolve(&fetcher)?;
        fingerprints.push(r.fingerprint.clone());
        resolved.push(r);
    }
    let vocab = vocab_size.to_string();
    // The default placement keeps the cache names of tokenizers trained before it was chosen.
    let placement = match *specials == SpecialTokenIds::default() {
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
    let _training = data::atomic::lock_beside(&path)?;
    if path.is_file() {
        return Ok(ChosenTokenizer {
            tokenizer: TextTokenizer::from_file(&path)?,
            description: format!(
                "the byte-level BPE of {vocab} tokens trained on these sources before ({})",
                path.display()
            ),
        });
    }
    tracing::info!("training a {vocab}-token byte-level BPE tokenizer on the training text (once; cached at {})", path.display());
    let docs = resolved
        .into_iter()
        .flat_map(|r| data::reader::documents(&r).collect::<Vec<_>>());
    let options = TrainOptions {
        vocab_size,
        show_progress: true,
        ..TrainOptions::default()
    };
    let tok = TextTokenizer::train_byte_level_bpe_with_specials(docs, &options, specials)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TrainError::io(format!("creating {}", dir.display()), e))?;
    }
    tok.save(&path)?;
    Ok(ChosenTokenizer {
        tokenizer: tok,
        description: format!(
            "a byte-level BPE of {vocab} tokens trained now on these sources ({})",
            path.display()
        ),
    })
}

/// The special ids a config asks for (`sequence.pad_token_id`, `bos_token_id`,
/// `eos_token_id`); `None` where it asks for none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AskedSpecialIds {
    /// `sequence.pad_token_id`.
    pub pad: Option<u32>,
    /// `sequence.bos_token_id`.
    pub bos: Option<u32>,
    /// `sequence.eos_token_id`.
    pub eos: Option<u32>,
}

impl AskedSpecialIds {
    /// The ids `cfg.sequence` asks for.
    pub fn of(cfg: &Config) -> AskedSpecialIds {
        let s = &cfg.sequence;
        AskedSpecialIds {
            pad: s.pad_token_id,
            bos: s.bos_token_id,
            eos: s.eos_token_id,
        }
    }
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

/// The tokenizer of a run of `cfg` ([`choose_tokenizer`] over its data inputs), checked
/// against `model.vocab_size` and the special ids the config asks for.
pub fn run_tokenizer(cfg: &Config) -> Result<ChosenTokenizer, TrainError> {
    let chosen = tokenizer_of_inputs(cfg, &data_inputs(cfg)?)?;
    specials(cfg, &chosen.tokenizer)?;
    Ok(chosen)
}

/// [`choose_tokenizer`] for `inputs`, checked against `model.vocab_size`.
fn tokenizer_of_inputs(cfg: &Config, inputs: &[DataInput]) -> Result<ChosenTokenizer, TrainError> {
    let (mut prepared_dirs, mut texts) = (Vec::new(), Vec::new());
    for input in inputs {
        match input {
            DataInput::Prepared(dir) => prepared_dirs.push(dir.clone()),
            DataInput::Text(spec) => texts.push(spec.clone()),
        }
    }
    let chosen = choose_tokenizer(
        cfg.data.tokenizer.as_deref(),
        cfg.model.vocab_size,
        &prepared_dirs,
        &texts,
        AskedSpecialIds::of(cfg),
    )?;
    chosen.tokenizer.check_model_vocab(cfg.model.vocab_size)?;
    Ok(chosen)
}

/// The tokenizer, special ids and prepared token shards of a config's data: the tokenizer
/// is chosen ([`choose_tokenizer`]), each prepared dataset is checked against it, each text
/// source is prepared (or its fresh cache reused), and a `datasets` mixture is merged.
pub fn prepare_data(
    cfg: &Config,
) -> Result<(TextTokenizer, SpecialTokenIds, PreparedDataset), TrainError> {
    let inputs = data_inputs(cfg)?;
    let chosen = tokenizer_of_inputs(cfg, &inputs)?;
    tracing::info!(
        "tokenizer: {} ({} tokens, hash {})",
        chosen.description,
        chosen.tokenizer.vocab_size(),
        &chosen.tokenizer.hash()[..12]
    );
    let tokenizer = chosen.tokenizer;
    let specials = specials(cfg, &tokenizer)?;
    let cache_root = cfg
        .data
        .cache_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::paths::datasets_dir().join("cache"));
    let prepare = PrepareOptions::default();
    let mut datasets = Vec::new();
    for input in &inputs {
        let dataset = match input {
            DataInput::Prepared(dir) => {
                tracing::info!("training on the prepared dataset {}", dir.display());
                data::verify::check_checksums(dir)?;
                let choice = match cfg.data.tokenizer {
                    Some(_) => TokenizerChoice::Configured,
                    None => TokenizerChoice::Inferred,
                };
                PreparedDataset::open_with(dir, &tokenizer, &chosen.description, choice)?
            }
            DataInput::Text(spec) => {
                let key = hash_hex(&[
                    &canonical_paths(&spec.paths).join("\n"),
                    &spec.text_field,
                    &tokenizer.hash()[..16],
                ]);
                data::ensure_prepared(spec, &tokenizer, &cache_root.join(key), &prepare)?
            }
        };
        datasets.push(dataset);
    }
    if datasets.len() == 1 {
        let dataset = datasets.pop().expect("one dataset");
        return Ok((tokenizer, specials, dataset));
    }
    let strategy = match cfg.datasets.strategy() {
        CfgMerge::Weighted => MergeStrategy::Weighted,
        CfgMerge::Equal => MergeStrategy::Equal,
        CfgMerge::Proportional => MergeStrategy::Proportional,
    };
    let weights = cfg.datasets.weights.clone().unwrap_or_default();
    // The inputs' contents are part of the key, so a changed input makes a new mixture.
    let names: Vec<String> = datasets
        .iter()
        .map(|d| {
            let m = d.manifest();
            format!(
                "{} {} {}",
                d.dir().display(),
                m.source.fingerprint,
                m.tokens
            )
        })
        .collect();
    let dirs: Vec<PathBuf> = datasets.iter().map(|d| d.dir().to_path_buf()).collect();
    drop(datasets);
    let w: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
    let key = hash_hex(&[
        &names.join("\n"),
        &w.join(","),
        &format!("{strategy:?}"),
        &cfg.training.seed.to_string(),
    ]);
    let out = cache_root.join(format!("mix-{key}"));
    let _merging = data::atomic::lock_beside(&out)?;
    let prepared = match PreparedDataset::open_for(&out, &tokenizer) {
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
    };
    Ok((tokenizer, specials, prepared))
}

impl TrainingData {
    /// Loads or trains the tokenizer, prepares (or reuses) the token shards and starts the
    /// loader at the beginning of the training split; each batch holds `batch.global_batch()`
    /// sequences (see [`crate::train::batch_geometry`]).
    pub fn open(cfg: &Config, batch: BatchGeometry) -> Result<TrainingData, TrainError> {
        TrainingData::open_rows(cfg, batch, ProcessSlice::whole(batch.micro_batch()))
    }

    /// [`TrainingData::open`] for one process of a multi-process job: its batches hold only
    /// `rows` of every micro-batch (`[accum, rows.rows, seq_len]`, the rows
    /// [`crate::train::Trainer::feed_rows`] places), training and validation alike. The data
    /// position counts global batches, the same on every process.
    pub fn open_rows(
        cfg: &Config,
        batch: BatchGeometry,
        rows: ProcessSlice,
    ) -> Result<TrainingData, TrainError> {
        if rows.period != batch.micro_batch() {
            return Err(TrainError::Other(format!(
                "a process's rows are given per micro-batch of {}, not per block of {}",
                batch.micro_batch(),
                rows.period
            )));
        }
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
        let loader = DataLoader::start_slice(
            prepared.clone(),
            Split::Train,
            &options,
            specials,
            None,
            rows,
        )?;
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
            rows,
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
            .map(|i| to_host(&build_batch_rows(v, self.micro_batch, i, self.rows), 1))
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
        self.loader = DataLoader::start_slice(
            self.prepared.clone(),
            Split::Train,
            &self.options,
            self.specials,
            Some(&state),
            self.rows,
        )?;
        Ok(())
    }

    fn queue_depth(&self) -> Option<usize> {
        Some(self.loader.queue_depth())
    }
}
