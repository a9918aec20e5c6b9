//! Training windows over a prepared dataset: packed, random-chunk and document-aware, with a
//! deterministic train/validation split by document.
//!
//! Each document is *framed* as `[bos] tokens eos` (`bos` only with `add_bos`). A window has
//! `seq_len + 1` tokens; inputs are its first `seq_len`, targets its last `seq_len`. Where a
//! window runs out of real tokens the rest is `pad` and those targets have loss mask 0.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::permutation::{mix_all, streams, Permutation};
use super::prepare::PreparedDataset;
use super::tokenizer::SpecialTokenIds;

/// How documents become windows (config `data.dataset_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// Framed documents joined into one stream, cut into windows every `seq_len` tokens
    /// (consecutive windows share one token, so every token is a target exactly once).
    /// Window order is reshuffled each epoch.
    #[default]
    Packed,
    /// Windows starting at uniformly random positions of the joined stream (as many per
    /// epoch as `Packed` has).
    RandomChunk,
    /// Windows cut within each framed document; none crosses a document boundary; a
    /// document's last window is padded. Window order is reshuffled each epoch.
    DocumentAware,
}

/// Which documents a dataset view uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Documents not held out.
    Train,
    /// The held-out `val_fraction` of documents.
    Validation,
}

impl Split {
    /// "train" or "validation".
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }
}

/// What a [`TokenDataset`] needs beyond the prepared tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowOptions {
    /// How windows are cut.
    pub kind: DatasetKind,
    /// Tokens per input row.
    pub seq_len: usize,
    /// Seed of the split, the window order and the random chunks.
    pub seed: u64,
    /// Fraction of documents held out for validation (rounded to whole documents).
    pub val_fraction: f64,
    /// Put `bos` before every document.
    pub add_bos: bool,
    /// Ids of pad, bos and eos.
    pub specials: SpecialTokenIds,
}

/// Documents held out for validation: `round(val_fraction * n)`, at least one when
/// `val_fraction > 0`, chosen by a seeded permutation. Returns the count.
pub fn validation_count(documents: u64, val_fraction: f64) -> u64 {
    if val_fraction <= 0.0 {
        return 0;
    }
    ((val_fraction * documents as f64).round() as u64).clamp(1, documents)
}

/// Ids of the documents of `split`, ascending.
pub fn split_documents(
    documents: u64,
    seed: u64,
    val_fraction: f64,
    split: Split,
) -> Result<Vec<u64>> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::InvalidOption {
            name: "data.val_fraction",
            value: val_fraction.to_string(),
            expected: "a fraction in [0, 1)".into(),
        });
    }
    let held_out = validation_count(documents, val_fraction);
    let order = Permutation::new(documents, mix_all(seed, &[streams::SPLIT]));
    let ids: Vec<u64> = (0..documents)
        .filter(|&d| (order.apply(d) < held_out) == (split == Split::Validation))
        .collect();
    if ids.is_empty() {
        return Err(DataError::EmptySplit {
            split: split.name(),
            documents,
            val_fraction,
        });
    }
    Ok(ids)
}

/// Windows of one split of a prepared dataset; [`Self::fill_sample`] is a pure function of
/// (options, epoch, index), so any sample can be produced by any thread at any time.
pub struct TokenDataset {
    prepared: Arc<PreparedDataset>,
    options: WindowOptions,
    split: Split,
    /// Document ids of the split, ascending.
    documents: Vec<u64>,
    /// Packed/random: start of each framed document in the stream; document-aware: index of
    /// each document's first window. One extra entry holding the total.
    starts: Vec<u64>,
    samples_per_epoch: u64,
}

impl TokenDataset {
    /// The `split` of `prepared`, cut into windows as `options` say.
    pub fn new(
        prepared: Arc<PreparedDataset>,
        split: Split,
        options: WindowOptions,
    ) -> Result<Self> {
        if options.seq_len == 0 {
            return Err(DataError::InvalidOption {
                name: "sequence length",
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        let documents = split_documents(
            prepared.num_documents(),
            options.seed,
            options.val_fraction,
            split,
        )?;
        let frame = 1 + u64::from(options.add_bos);
        let seq = options.seq_len as u64;
        let mut starts = Vec::with_capacity(documents.len() + 1);
        let mut total = 0u64;
        for &doc in &documents {
            starts.push(total);
            let framed = prepared.document_len(doc) + frame;
            total += match options.kind {
                DatasetKind::DocumentAware => (framed - 1).div_ceil(seq),
                DatasetKind::Packed | DatasetKind::RandomChunk => framed,
            };
        }
        starts.push(total);
        let samples_per_epoch = match options.kind {
            DatasetKind::DocumentAware => total,
            DatasetKind::Packed | DatasetKind::RandomChunk => (total - 1).div_ceil(seq),
        };
        Ok(TokenDataset {
            prepared,
            options,
            split,
            documents,
            starts,
            samples_per_epoch,
        })
    }

    /// Windows in one epoch.
    pub fn samples_per_epoch(&self) -> u64 {
        self.samples_per_epoch
    }

    /// The options in use.
    pub fn options(&self) -> &WindowOptions {
        &self.options
    }

    /// The split in use.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Documents in the split.
    pub fn num_documents(&self) -> u64 {
        self.documents.len() as u64
    }

    /// The underlying prepared dataset.
    pub fn prepared(&self) -> &Arc<PreparedDataset> {
        &self.prepared
    }

    /// Length of document `j` of the split when framed.
    fn framed_len(&self, j: usize) -> u64 {
        self.prepared.document_len(self.documents[j]) + 1 + u64::from(self.options.add_bos)
    }

    /// Copies framed tokens `[offset, offset + out.len())` of split document `j`.
    fn copy_framed(&self, j: usize, offset: u64, out: &mut [i32]) {
        let bos = u64::from(self.options.add_bos);
        let len = self.prepared.document_len(self.documents[j]);
        let mut pos = offset;
        let mut written = 0;
        if bos == 1 && pos == 0 && written < out.len() {
            out[0] = self.options.specials.bos as i32;
            written = 1;
            pos = 1;
        }
        let token_start = pos - bos;
        if token_start < len && written < out.len() {
            let take = ((len - token_start) as usize).min(out.len() - written);
            self.prepared.copy_document_tokens(
                self.documents[j],
                token_start,
                &mut out[written..written + take],
            );
            written += take;
        }
        if written < out.len() {
            out[written] = self.options.specials.eos as i32;
            written += 1;
        }
        debug_assert_eq!(written, out.len(), "copy past the framed document");
    }

    /// Copies the joined stream from `start` into `out`; returns how many real tokens it had.
    fn copy_stream(&self, start: u64, out: &mut [i32]) -> usize {
        let total = *self.starts.last().unwrap_or(&0);
        let mut j = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let mut pos = start;
        let mut written = 0;
        while written < out.len() && pos < total {
            let offset = pos - self.starts[j];
            let take = ((self.framed_len(j) - offset) as usize).min(out.len() - written);
            self.copy_framed(j, offset, &mut out[written..written + take]);
            written += take;
            pos += take as u64;
            j += 1;
        }
        written
    }

    /// Fills one row of a batch with sample `index` of `epoch`: `window` is scratch of
    /// `seq_len + 1`; `inputs`, `targets`, `mask` are the row's `seq_len` slots.
    pub fn fill_sample(
        &self,
        epoch: u64,
        index: u64,
        window: &mut [i32],
        inputs: &mut [i32],
        targets: &mut [i32],
        mask: &mut [f32],
    ) {
        let seq = self.options.seq_len as u64;
        let n = self.samples_per_epoch;
        let key = mix_all(
            self.options.seed,
            &[streams::WINDOWS, epoch, self.split as u64],
        );
        let real = match self.options.kind {
            DatasetKind::Packed => {
                let k = Permutation::new(n, key).apply(index);
                self.copy_stream(k * seq, window)
            }
            DatasetKind::RandomChunk => {
                let total = *self.starts.last().unwrap_or(&0);
                let span = total.saturating_sub(seq + 1) + 1;
                let start = mix_all(key, &[index]) % span;
                self.copy_stream(start, window)
            }
            DatasetKind::DocumentAware => {
                let w = Permutation::new(n, key).apply(index);
                let j = self.starts.partition_point(|&s| s <= w) - 1;
                let offset = (w - self.starts[j]) * seq;
                let take = ((self.framed_len(j) - offset) as usize).min(window.len());
                self.copy_framed(j, offset, &mut window[..take]);
                take
            }
        };
        let pad = self.options.specials.pad as i32;
        window[real..].fill(pad);
        let t = self.options.seq_len;
        inputs.copy_from_slice(&window[..t]);
        targets.copy_from_slice(&window[1..]);
        for (position, m) in mask.iter_mut().enumerate() {
            *m = if position + 1 < real { 1.0 } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{prepared_corpus, trained};

    fn options(kind: DatasetKind, seq_len: usize) -> WindowOptions {
        WindowOptions {
            kind,
            seq_len,
            seed: 17,
            val_fraction: 0.0,
            add_bos: false,
            specials: SpecialTokenIds::default(),
        }
    }

    /// All samples of epoch 0 as (inputs, targets, mask) rows.
    fn samples(dataset: &TokenDataset) -> Vec<(Vec<i32>, Vec<i32>, Vec<f32>)> {
        let t = dataset.options().seq_len;
        (0..dataset.samples_per_epoch())
            .map(|k| {
                let (mut w, mut i, mut o, mut m) =
                    (vec![0; t + 1], vec![0; t], vec![0; t], vec![0.0; t]);
                dataset.fill_sample(0, k, &mut w, &mut i, &mut o, &mut m);
                (i, o, m)
            })
            .collect()
    }

    #[test]
    fn split_is_deterministic_disjoint_and_exact() {
        let train = split_documents(1000, 3, 0.1, Split::Train).unwrap();
        let val = split_documents(1000, 3, 0.1, Split::Validation).unwrap();
        assert_eq!(val.len(), 100);
        assert_eq!(train.len() + val.len(), 1000);
        assert!(val.iter().all(|d| train.binary_search(d).is_err()));
        assert_eq!(
            val,
            split_documents(1000, 3, 0.1, Split::Validation).unwrap()
        );
        assert_ne!(
            val,
            split_documents(1000, 4, 0.1, Split::Validation).unwrap()
        );
        assert!(matches!(
            split_documents(1, 3, 0.5, Split::Train),
            Err(DataError::EmptySplit { split: "train", .. })
        ));
        assert!(matches!(
            split_documents(10, 3, 0.0, Split::Validation),
            Err(DataError::EmptySplit { .. })
        ));
        assert!(split_documents(10, 3, 1.0, Split::Train).is_err());
    }

    #[test]
    fn packed_windows_cover_the_stream_once() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let prepared = Arc::new(prepared_corpus(dir.path(), "p", 12, 1, &tokenizer));
        let mut stream: Vec<i32> = Vec::new();
        for d in 0..prepared.num_documents() {
            stream.extend(prepared.document_tokens(d).iter().map(|&t| t as i32));
            stream.push(2);
        }
        let dataset =
            TokenDataset::new(prepared, Split::Train, options(DatasetKind::Packed, 16)).unwrap();
        let rows = samples(&dataset);
        assert_eq!(rows.len() as u64, (stream.len() as u64 - 1).div_ceil(16));
        let mut seen_targets = 0;
        let mut starts: Vec<usize> = Vec::new();
        for (inputs, targets, mask) in &rows {
            let r = mask.iter().filter(|&&m| m > 0.0).count();
            assert!(r > 0);
            let mut real_tokens = inputs[..r].to_vec();
            real_tokens.push(targets[r - 1]);
            let start = (0..stream.len())
                .step_by(16)
                .find(|&s| stream[s..].starts_with(&real_tokens))
                .expect("a window of the stream at a multiple of seq_len");
            starts.push(start);
            assert!(mask[..r].iter().all(|&m| m == 1.0));
            assert!(
                targets[r..].iter().all(|&t| t == 0),
                "padding after the stream's end"
            );
            assert_eq!(inputs[1..], targets[..15]);
            seen_targets += r;
        }
        assert_eq!(
            seen_targets,
            stream.len() - 1,
            "every token but the first is a target once"
        );
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), rows.len());
    }

    #[test]
    fn document_aware_windows_stay_inside_documents() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let prepared = Arc::new(prepared_corpus(dir.path(), "d", 9, 2, &tokenizer));
        let framed: Vec<Vec<i32>> = (0..prepared.num_documents())
            .map(|d| {
                let mut f = vec![1];
                f.extend(prepared.document_tokens(d).iter().map(|&t| t as i32));
                f.push(2);
                f
            })
            .collect();
        let mut opts = options(DatasetKind::DocumentAware, 32);
        opts.add_bos = true;
        let dataset = TokenDataset::new(prepared, Split::Train, opts).unwrap();
        let expected_windows: usize = framed.iter().map(|f| (f.len() - 1).div_ceil(32)).sum();
        let rows = samples(&dataset);
        assert_eq!(rows.len(), expected_windows);
        let mut targets_seen = 0;
        for (inputs, targets, mask) in &rows {
            assert_eq!(
                inputs[1..],
                targets[..31],
                "targets are inputs shifted by one"
            );
            let r = mask.iter().filter(|&&m| m > 0.0).count();
            assert!(mask[..r].iter().all(|&m| m == 1.0) && mask[r..].iter().all(|&m| m == 0.0));
            let mut real_tokens = inputs[..r].to_vec();
            real_tokens.push(targets[r - 1]);
            let inside = framed.iter().any(|f| {
                (0..f.len())
                    .step_by(32)
                    .any(|o| f[o..].starts_with(&real_tokens) && (r == 32 || o + r + 1 == f.len()))
            });
            assert!(
                inside,
                "window lies inside one framed document and ends at its end when short"
            );
            assert!(targets[r..].iter().all(|&t| t == 0), "padded with pad id");
            targets_seen += r;
        }
        let expected_targets: usize = framed.iter().map(|f| f.len() - 1).sum();
        assert_eq!(targets_seen, expected_targets);
    }

    #[test]
    fn random_chunks_are_windows_of_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = trained(300);
        let prepared = Arc::new(prepared_corpus(dir.path(), "r", 8, 4, &tokenizer));
        let mut stream: Vec<i32> = Vec::new();
        for d in 0..prepared.num_documents() {
            stream.extend(prepared.document_tokens(d).iter().map(|&t| t as i32));
            stream.push(2);
        }
        let dataset = TokenDataset::new(
            prepared,
            Split::Train,
            options(DatasetKind::RandomChunk, 24),
        )
        .unwrap();
        let rows = samples(&dataset);
        let mut distinct = std::collections::HashSet::new();
        for (inputs, targets, mask) in &rows {
            assert!(mask.iter().all(|&m| m == 1.0));
            let start = stream
                .windows(24)
                .position(|w| w == &inputs[..])
                .expect("a stream window");
            assert_eq!(targets[..], stream[start + 1..start + 25]);
            distinct.insert(start);
        }
        assert!(distinct.len() > rows.len() / 2, "positions vary");
    }
}
