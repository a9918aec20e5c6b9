//! Mixing several prepared datasets into one: weighted, equal or proportional shares.
//!
//! Each input gets a token quota: `share_i * total` (total defaults to the inputs' tokens
//! added up). Documents are drawn one at a time from an input chosen with probability
//! proportional to its remaining quota (seeded), each input's documents in a seeded order,
//! starting a fresh order when an input is exhausted (upsampling). An input stops when its
//! quota is met, so the shares come out within one document of the target.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};
use super::manifest::{
    ComponentRecord, Manifest, MergeRecord, SourceRecord, FORMAT_VERSION, TOKENIZER_FILE,
};
use super::permutation::{mix_all, streams, unit_float, Permutation};
use super::prepare::PreparedDataset;
use super::shards::ShardWriter;

/// How the inputs' shares are set (config `datasets.merge_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// Shares from `weights` (normalized to sum to 1).
    Weighted,
    /// The same share for every input.
    Equal,
    /// Shares proportional to the inputs' sizes: every document exactly once.
    #[default]
    Proportional,
}

impl MergeStrategy {
    /// "weighted", "equal" or "proportional".
    pub fn name(self) -> &'static str {
        match self {
            MergeStrategy::Weighted => "weighted",
            MergeStrategy::Equal => "equal",
            MergeStrategy::Proportional => "proportional",
        }
    }
}

/// Options of [`merge`] (config `datasets.weights`, `datasets.merge_strategy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeOptions {
    /// How shares are set.
    pub strategy: MergeStrategy,
    /// One weight per input; only with [`MergeStrategy::Weighted`].
    pub weights: Vec<f64>,
    /// Seed of the document draw.
    pub seed: u64,
    /// Tokens in the merged dataset; default: the inputs' tokens added up.
    pub total_tokens: Option<u64>,
    /// Shard size of the output.
    pub max_shard_tokens: u64,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            strategy: MergeStrategy::Proportional,
            weights: Vec::new(),
            seed: 0,
            total_tokens: None,
            max_shard_tokens: 64 << 20,
        }
    }
}

/// Target share of each input.
pub fn shares(options: &MergeOptions, input_tokens: &[u64]) -> Result<Vec<f64>> {
    let n = input_tokens.len();
    let invalid = |expected: String| DataError::InvalidOption {
        name: "datasets.weights",
        value: format!("{:?}", options.weights),
        expected,
    };
    if options.strategy != MergeStrategy::Weighted && !options.weights.is_empty() {
        return Err(invalid(format!(
            "no weights with the {} strategy (weights are used by `weighted` only)",
            options.strategy.name()
        )));
    }
    let raw: Vec<f64> = match options.strategy {
        MergeStrategy::Weighted => {
            if options.weights.len() != n {
                return Err(invalid(format!("one weight per dataset ({n})")));
            }
            if options.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                return Err(invalid("finite, non-negative weights".into()));
            }
            options.weights.clone()
        }
        MergeStrategy::Equal => vec![1.0; n],
        MergeStrategy::Proportional => input_tokens.iter().map(|&t| t as f64).collect(),
    };
    let sum: f64 = raw.iter().sum();
    if sum <= 0.0 {
        return Err(invalid("at least one positive weight".into()));
    }
    Ok(raw.iter().map(|w| w / sum).collect())
}

/// Merges the datasets in `inputs` into a new dataset at `out`, replacing it atomically.
pub fn merge(inputs: &[PathBuf], options: &MergeOptions, out: &Path) -> Result<PreparedDataset> {
    if inputs.is_empty() || inputs.len() > usize::from(u16::MAX) {
        return Err(DataError::IncompatibleDatasets {
            message: format!(
                "{} inputs given; give between 1 and 65535 datasets",
                inputs.len()
            ),
        });
    }
    super::atomic::check_replaceable_dataset_dir(out)?;
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(input) = inputs.iter().find(|input| same_dir(input, out)) {
        return Err(DataError::IncompatibleDatasets {
            message: format!(
                "the output {} is also an input ({}); write the merge to another directory",
                out.display(),
                input.display()
            ),
        });
    }
    // Check the options before opening anything (token counts only matter for proportional).
    shares(options, &vec![1; inputs.len()])?;
    let datasets: Vec<PreparedDataset> = inputs
        .iter()
        .map(|p| PreparedDataset::open(p))
        .collect::<Result<_>>()?;
    let first = datasets[0].manifest();
    for (path, dataset) in inputs.iter().zip(&datasets).skip(1) {
        let m = dataset.manifest();
        if m.tokenizer_hash != first.tokenizer_hash || m.vocab_size != first.vocab_size {
            return Err(DataError::IncompatibleDatasets {
                message: format!(
                    "{} was tokenized with tokenizer {} ({} tokens) but {} with {} ({} tokens); \
                     prepare all inputs with the same tokenizer, e.g. {}'s own: \
                     `vishwam data prepare --input_dir ... --cache_dir {} --tokenizer {}`",
                    path.display(),
                    &m.tokenizer_hash[..12.min(m.tokenizer_hash.len())],
                    m.vocab_size,
                    inputs[0].display(),
                    &first.tokenizer_hash[..12.min(first.tokenizer_hash.len())],
                    first.vocab_size,
                    inputs[0].display(),
                    path.display(),
                    inputs[0].join(super::manifest::TOKENIZER_FILE).display()
                ),
            });
        }
    }
    let input_tokens: Vec<u64> = datasets.iter().map(PreparedDataset::num_tokens).collect();
    let shares = shares(options, &input_tokens)?;
    let total = options
        .total_tokens
        .unwrap_or_else(|| input_tokens.iter().sum());
    let quotas: Vec<f64> = shares.iter().map(|s| s * total as f64).collect();

    let staged = super::atomic::temp_dir_beside(out)?;
    let mut writer = ShardWriter::new(staged.path(), first.dtype, options.max_shard_tokens, true);
    let n = datasets.len();
    let mut taken_tokens = vec![0u64; n];
    let mut taken_docs = vec![0u64; n];
    let mut buffer: Vec<i32> = Vec::new();
    let mut draw = 0u64;
    loop {
        let remaining: Vec<f64> = (0..n)
            .map(|i| (quotas[i] - taken_tokens[i] as f64).max(0.0))
            .collect();
        let open: f64 = remaining.iter().sum();
        if open <= 0.0 {
            break;
        }
        let mut pick = unit_float(mix_all(options.seed, &[streams::MERGE_DRAW, draw])) * open;
        let mut i = 0;
        while i + 1 < n && (remaining[i] <= 0.0 || pick >= remaining[i]) {
            pick -= remaining[i];
            i += 1;
        }
        while remaining[i] <= 0.0 {
            i -= 1;
        }
        draw += 1;
        let docs = datasets[i].num_documents();
        let pass = taken_docs[i] / docs;
        let order = Permutation::new(
            docs,
            mix_all(options.seed, &[streams::MERGE_ORDER, i as u64, pass]),
        );
        let doc = order.apply(taken_docs[i] % docs);
        buffer.resize(datasets[i].document_len(doc) as usize, 0);
        datasets[i].copy_document_tokens(doc, 0, &mut buffer);
        let ids: Vec<u32> = buffer.iter().map(|&t| t as u32).collect();
        writer.push_document(&ids, i as u16)?;
        taken_tokens[i] += ids.len() as u64;
        taken_docs[i] += 1;
    }
    let shards = writer.finish()?;
    let components: Vec<ComponentRecord> = (0..n)
        .map(|i| ComponentRecord {
            path: inputs[i].clone(),
            weight: shares[i],
            input_tokens: input_tokens[i],
            documents: taken_docs[i],
            tokens: taken_tokens[i],
        })
        .collect();
    for c in &components {
        let passes = c.tokens as f64 / c.input_tokens.max(1) as f64;
        tracing::info!(
            "{}: share {:.3}, took {} documents, {} tokens ({passes:.2}x the dataset)",
            c.path.display(),
            c.weight,
            c.documents,
            c.tokens
        );
    }
    let mut fingerprint = Sha256::new();
    for d in &datasets {
        fingerprint.update(d.manifest().source.fingerprint.as_bytes());
        fingerprint.update(d.manifest().tokens.to_le_bytes());
    }
    fingerprint.update(
        serde_json::to_string(options)
            .unwrap_or_default()
            .as_bytes(),
    );
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tokenizer_hash: first.tokenizer_hash.clone(),
        tokenizer_origin: first.tokenizer_origin.clone(),
        vocab_size: first.vocab_size,
        dtype: first.dtype,
        documents: taken_docs.iter().sum(),
        tokens: taken_tokens.iter().sum(),
        shards,
        source: SourceRecord {
            description: format!(
                "{} merge of {}",
                options.strategy.name(),
                components
                    .iter()
                    .map(|c| format!("{} ({:.3})", c.path.display(), c.weight))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fingerprint: hex::encode(fingerprint.finalize()),
            stats: None,
        },
        merge: Some(MergeRecord {
            strategy: options.strategy.name().into(),
            seed: options.seed,
            components,
        }),
    };
    // The inputs share one tokenizer (checked above); the first that ships it passes it on.
    if let Some(dataset) = datasets
        .iter()
        .find(|d| d.dir().join(TOKENIZER_FILE).is_file())
    {
        let from = dataset.dir().join(TOKENIZER_FILE);
        let to = staged.path().join(TOKENIZER_FILE);
        std::fs::copy(&from, &to).map_err(|e| DataError::io("copying", &from, e))?;
    }
    manifest.write(staged.path())?;
    super::atomic::replace_dir(staged, out)?;
    PreparedDataset::open(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{prepared_corpus, trained};

    #[test]
    fn shares_follow_the_strategy() {
        let mut options = MergeOptions {
            strategy: MergeStrategy::Weighted,
            weights: vec![3.0, 1.0],
            ..Default::default()
        };
        assert_eq!(shares(&options, &[10, 1000]).unwrap(), vec![0.75, 0.25]);
        options.weights = vec![1.0];
        assert!(shares(&options, &[10, 1000]).is_err());
        options.weights = vec![0.0, 0.0];
        assert!(shares(&options, &[10, 1000]).is_err());
        options.strategy = MergeStrategy::Equal;
        assert!(
            shares(&options, &[10, 1000]).is_err(),
            "weights without `weighted`"
        );
        options.weights.clear();
        assert_eq!(shares(&options, &[10, 1000]).unwrap(), vec![0.5, 0.5]);
        options.strategy = MergeStrategy::Proportional;
        assert_eq!(shares(&options, &[100, 300]).unwrap(), vec![0.25, 0.75]);
    }

    #[test]
    fn weighted_merge_meets_the_shares_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let a = prepared_corpus(dir.path(), "a", 40, 1, &tokenizer);
        let b = prepared_corpus(dir.path(), "b", 10, 2, &tokenizer);
        let inputs = vec![a.dir().to_path_buf(), b.dir().to_path_buf()];
        let options = MergeOptions {
            strategy: MergeStrategy::Weighted,
            weights: vec![0.3, 0.7],
            seed: 9,
            max_shard_tokens: 2000,
            ..Default::default()
        };
        let merged = merge(&inputs, &options, &dir.path().join("merged")).unwrap();
        let total = (a.num_tokens() + b.num_tokens()) as f64;
        let record = merged.manifest().merge.clone().unwrap();
        let mut from_origin = [0u64; 2];
        for d in 0..merged.num_documents() {
            from_origin[merged.document_origin(d) as usize] += merged.document_len(d);
        }
        for (i, want) in [0.3, 0.7].into_iter().enumerate() {
            let got = from_origin[i] as f64 / merged.num_tokens() as f64;
            assert!(
                (got - want).abs() < 0.03,
                "input {i}: share {got}, wanted {want}"
            );
            assert_eq!(from_origin[i], record.components[i].tokens);
        }
        assert!((merged.num_tokens() as f64 - total).abs() < 0.05 * total);
        assert!(
            record.components[1].tokens > b.num_tokens(),
            "b is upsampled"
        );
        let first_origins: Vec<u16> = (0..20).map(|d| merged.document_origin(d)).collect();
        assert!(
            first_origins.contains(&0) && first_origins.contains(&1),
            "interleaved"
        );

        let again = merge(&inputs, &options, &dir.path().join("merged2")).unwrap();
        assert_eq!(again.num_documents(), merged.num_documents());
        let docs = |m: &PreparedDataset| {
            (0..m.num_documents())
                .map(|d| m.document_tokens(d))
                .collect::<Vec<_>>()
        };
        assert_eq!(docs(&again), docs(&merged), "same seed, same merge");
    }

    #[test]
    fn proportional_merge_takes_every_document_once() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let a = prepared_corpus(dir.path(), "a", 7, 3, &tokenizer);
        let b = prepared_corpus(dir.path(), "b", 5, 4, &tokenizer);
        let inputs = vec![a.dir().to_path_buf(), b.dir().to_path_buf()];
        let merged = merge(&inputs, &MergeOptions::default(), &dir.path().join("m")).unwrap();
        assert_eq!(merged.num_documents(), 12);
        let mut got: Vec<Vec<u32>> = (0..12).map(|d| merged.document_tokens(d)).collect();
        let mut want: Vec<Vec<u32>> = (0..7)
            .map(|d| a.document_tokens(d))
            .chain((0..5).map(|d| b.document_tokens(d)))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn inputs_with_different_tokenizers_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let a = prepared_corpus(dir.path(), "a", 4, 3, &trained(300));
        let b = prepared_corpus(dir.path(), "b", 4, 4, &trained(310));
        let inputs = vec![a.dir().to_path_buf(), b.dir().to_path_buf()];
        let err = merge(&inputs, &MergeOptions::default(), &dir.path().join("m")).unwrap_err();
        assert!(
            matches!(err, DataError::IncompatibleDatasets { .. }),
            "{err}"
        );
    }
}
