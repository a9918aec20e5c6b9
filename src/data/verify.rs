//! Integrity check of a prepared dataset, with its statistics (`vishwam data merge --verify`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::manifest::{Manifest, ShardEntry, TokenDtype, MANIFEST_FILE};
use super::prepare::PreparedDataset;
use super::shards::{sha256_file, ShardReader};

/// One input's part of a verified (merged) dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentShare {
    /// The input dataset (or the dataset itself when not merged).
    pub name: String,
    /// Documents from it.
    pub documents: u64,
    /// Tokens from it.
    pub tokens: u64,
    /// Its fraction of the tokens.
    pub share: f64,
    /// The share it was meant to have.
    pub target_share: f64,
}

/// What [`verify`] checked and counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The dataset directory.
    pub dir: PathBuf,
    /// Shards checked.
    pub shards: usize,
    /// Documents.
    pub documents: u64,
    /// Tokens (without separators).
    pub tokens: u64,
    /// Mean tokens per document.
    pub mean_document_tokens: f64,
    /// Shortest document in tokens.
    pub min_document_tokens: u64,
    /// Longest document in tokens.
    pub max_document_tokens: u64,
    /// Largest token id found.
    pub max_token_id: u32,
    /// The tokenizer's vocabulary size.
    pub vocab_size: usize,
    /// Token ids of each input (one entry when not merged).
    pub components: Vec<ComponentShare>,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "dataset {}: OK (checksums, token ids < {}, index consistency)",
            self.dir.display(),
            self.vocab_size
        )?;
        writeln!(f, "  shards     {}", self.shards)?;
        writeln!(f, "  documents  {}", self.documents)?;
        writeln!(f, "  tokens     {}", self.tokens)?;
        writeln!(
            f,
            "  doc length mean {:.1}, min {}, max {} tokens",
            self.mean_document_tokens, self.min_document_tokens, self.max_document_tokens
        )?;
        writeln!(f, "  max token id {}", self.max_token_id)?;
        for c in &self.components {
            writeln!(
                f,
                "  {:>6.2}% of tokens (target {:>6.2}%)  {} documents  {} tokens  {}",
                100.0 * c.share,
                100.0 * c.target_share,
                c.documents,
                c.tokens,
                c.name
            )?;
        }
        Ok(())
    }
}

/// Per-shard findings.
struct ShardCheck {
    max_token: u32,
    min_doc: u64,
    max_doc: u64,
    component_tokens: Vec<u64>,
    component_docs: Vec<u64>,
}

fn check_checksum(dir: &Path, file: &str, expected: &str) -> Result<()> {
    let path = dir.join(file);
    let actual = sha256_file(&path)?;
    if actual != expected {
        return Err(DataError::ChecksumMismatch {
            path,
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

fn check_shard(
    dir: &Path,
    manifest: &Manifest,
    entry: &ShardEntry,
    components: usize,
) -> Result<ShardCheck> {
    check_checksum(dir, &entry.tokens_file, &entry.tokens_sha256)?;
    check_checksum(dir, &entry.index_file, &entry.index_sha256)?;
    if let (Some(file), Some(sum)) = (&entry.origin_file, &entry.origin_sha256) {
        check_checksum(dir, file, sum)?;
    }
    let shard = ShardReader::open(dir, entry, manifest.dtype)?;
    let corrupt = |message: String| DataError::CorruptShard {
        path: dir.join(&entry.index_file),
        message,
    };
    let mut check = ShardCheck {
        max_token: 0,
        min_doc: u64::MAX,
        max_doc: 0,
        component_tokens: vec![0; components],
        component_docs: vec![0; components],
    };
    for d in 0..shard.num_documents() {
        let (start, end) = shard.document_range(d);
        if end <= start {
            return Err(corrupt(format!(
                "document {d} has offsets {start}..{end}: empty or reversed"
            )));
        }
        let origin = shard.origin(d) as usize;
        if origin >= components {
            return Err(corrupt(format!(
                "document {d} comes from input {origin}, but there are {components}"
            )));
        }
        check.component_tokens[origin] += end - start;
        check.component_docs[origin] += 1;
        check.min_doc = check.min_doc.min(end - start);
        check.max_doc = check.max_doc.max(end - start);
    }
    let bytes = shard.token_bytes();
    check.max_token = match manifest.dtype {
        TokenDtype::U16 => bytes
            .chunks_exact(2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
            .max(),
        TokenDtype::U32 => bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .max(),
    }
    .unwrap_or(0);
    if check.max_token as usize >= manifest.vocab_size {
        let position = (0..shard.num_tokens())
            .find(|&i| shard.token(i) as usize >= manifest.vocab_size)
            .unwrap_or(0);
        return Err(DataError::CorruptShard {
            path: shard.tokens_path().to_path_buf(),
            message: format!(
                "token {} at position {position} is not below the vocabulary size {}",
                shard.token(position),
                manifest.vocab_size
            ),
        });
    }
    Ok(check)
}

/// Checks the sha256 of every shard file against the manifest (what training does before
/// reusing a cache; [`verify`] does this and more).
pub fn check_checksums(dir: &Path) -> Result<()> {
    let manifest = Manifest::read(dir)?;
    manifest.shards.par_iter().try_for_each(|entry| {
        check_checksum(dir, &entry.tokens_file, &entry.tokens_sha256)?;
        check_checksum(dir, &entry.index_file, &entry.index_sha256)?;
        match (&entry.origin_file, &entry.origin_sha256) {
            (Some(file), Some(sum)) => check_checksum(dir, file, sum),
            _ => Ok(()),
        }
    })
}

/// Checks every shard's checksums, token ids and index, and the totals against the manifest.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let manifest = Manifest::read(dir)?;
    let components = manifest.merge.as_ref().map_or(1, |m| m.components.len());
    let checks: Vec<ShardCheck> = manifest
        .shards
        .par_iter()
        .map(|entry| check_shard(dir, &manifest, entry, components))
        .collect::<Result<_>>()?;
    let mut component_tokens = vec![0u64; components];
    let mut component_docs = vec![0u64; components];
    for c in &checks {
        for i in 0..components {
            component_tokens[i] += c.component_tokens[i];
            component_docs[i] += c.component_docs[i];
        }
    }
    let documents: u64 = component_docs.iter().sum();
    let tokens: u64 = component_tokens.iter().sum();
    let mismatch = |message: String| DataError::Manifest {
        path: dir.join(MANIFEST_FILE),
        message,
    };
    if documents != manifest.documents || tokens != manifest.tokens {
        return Err(mismatch(format!(
            "shards hold {documents} documents and {tokens} tokens, the manifest says {} and {}",
            manifest.documents, manifest.tokens
        )));
    }
    let component_shares = match &manifest.merge {
        Some(merge) => merge
            .components
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if c.tokens != component_tokens[i] || c.documents != component_docs[i] {
                    return Err(mismatch(format!(
                        "input {i} ({}) has {} documents and {} tokens in the shards, the manifest says {} and {}",
                        c.path.display(),
                        component_docs[i],
                        component_tokens[i],
                        c.documents,
                        c.tokens
                    )));
                }
                Ok(ComponentShare {
                    name: c.path.display().to_string(),
                    documents: c.documents,
                    tokens: c.tokens,
                    share: c.tokens as f64 / tokens.max(1) as f64,
                    target_share: c.weight,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => vec![ComponentShare {
            name: manifest.source.description.clone(),
            documents,
            tokens,
            share: 1.0,
            target_share: 1.0,
        }],
    };
    // Opening checks the headers, sizes and index ends of every shard once more, together.
    PreparedDataset::open(dir)?;
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        shards: manifest.shards.len(),
        documents,
        tokens,
        mean_document_tokens: tokens as f64 / documents.max(1) as f64,
        min_document_tokens: checks.iter().map(|c| c.min_doc).min().unwrap_or(0),
        max_document_tokens: checks.iter().map(|c| c.max_doc).max().unwrap_or(0),
        max_token_id: checks.iter().map(|c| c.max_token).max().unwrap_or(0),
        vocab_size: manifest.vocab_size,
        components: component_shares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::merge::{merge, MergeOptions, MergeStrategy};
    use crate::data::test_support::{prepared_corpus, trained};

    #[test]
    fn verify_reports_statistics_and_catches_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let a = prepared_corpus(dir.path(), "a", 20, 1, &tokenizer);
        let b = prepared_corpus(dir.path(), "b", 20, 2, &tokenizer);
        let report = verify(a.dir()).unwrap();
        assert_eq!(report.documents, 20);
        assert_eq!(report.tokens, a.num_tokens());
        assert!(report.max_token_id < 300);
        assert!(report.to_string().contains("documents  20"));

        let options = MergeOptions {
            strategy: MergeStrategy::Equal,
            ..Default::default()
        };
        let merged = merge(
            &[a.dir().into(), b.dir().into()],
            &options,
            &dir.path().join("m"),
        )
        .unwrap();
        let report = verify(merged.dir()).unwrap();
        assert_eq!(report.components.len(), 2);
        assert!((report.components[0].share - 0.5).abs() < 0.05, "{report}");

        // Flip one token byte: the checksum catches it.
        let entry = &a.manifest().shards[0];
        let path = a.dir().join(&entry.tokens_file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = verify(a.dir()).unwrap_err();
        assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains("prepare` again"));
    }

    #[test]
    fn out_of_vocabulary_ids_are_caught_even_with_matching_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let a = prepared_corpus(dir.path(), "a", 5, 1, &tokenizer);
        let mut manifest = a.manifest().clone();
        manifest.vocab_size = 10;
        manifest.write(a.dir()).unwrap();
        let err = verify(a.dir()).unwrap_err();
        assert!(
            err.to_string().contains("not below the vocabulary size 10"),
            "{err}"
        );
    }
}
