//! The background loader: worker threads fill a bounded queue of ready batches in a fixed,
//! seed-determined order; its position can be saved and restored exactly.
//!
//! Batch `b` holds samples `b*B .. (b+1)*B` of the endless sequence epoch 0, epoch 1, ...,
//! each epoch a fresh seeded order of the split's windows (so an epoch boundary may fall inside
//! a batch, and nothing is dropped). Worker `w` of `n` builds batches `b ≡ w (mod n)` into its
//! own bounded channel and the consumer takes them round-robin, so the order never depends on
//! thread timing.

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::dataset::{DatasetKind, Split, TokenDataset, WindowOptions};
use super::error::{DataError, Result};
use super::prepare::PreparedDataset;
pub use super::process_slice::ProcessSlice;
use super::tokenizer::SpecialTokenIds;

/// Loader settings (the global batch of `training.batch_size` x batch shards x
/// `grad_accum_steps`, `model.max_seq_len`, `data.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderOptions {
    /// Rows per batch (the global batch, before data-parallel slicing).
    pub batch_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Ready batches kept waiting (split evenly over the workers, at least one each).
    pub queue_size: usize,
    /// Background threads building batches.
    pub num_workers: usize,
    /// Seed of the split, the per-epoch order and the random chunks.
    pub seed: u64,
    /// Fraction of documents held out for validation.
    pub val_fraction: f64,
    /// How windows are cut.
    pub kind: DatasetKind,
    /// Put bos before every document.
    pub add_bos: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 8,
            seq_len: 1024,
            queue_size: 8,
            num_workers: 2,
            seed: 0,
            val_fraction: 0.01,
            kind: DatasetKind::Packed,
            add_bos: false,
        }
    }
}

/// The loader's position, saved in checkpoints; restoring it yields exactly the batches the
/// uninterrupted run would have produced next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// Index of the next batch to be returned.
    pub next_batch: u64,
    /// Seed in use.
    pub seed: u64,
    /// Batch size in use.
    pub batch_size: usize,
    /// Sequence length in use.
    pub seq_len: usize,
    /// Window kind in use.
    pub kind: DatasetKind,
    /// Split in use.
    pub split: Split,
    /// Identity of the data: tokenizer hash, source fingerprint, document and token counts,
    /// validation fraction, bos setting.
    pub data_fingerprint: String,
}

/// Batches from a [`TokenDataset`], built ahead on background threads.
pub struct DataLoader {
    dataset: Arc<TokenDataset>,
    batch_size: usize,
    next_batch: u64,
    receivers: Vec<Receiver<Batch>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Batches sent by the workers and not yet taken (the workers count up after a send, the
    /// consumer down after a receive, so it can read -1 for a moment).
    ready: Arc<AtomicIsize>,
    wait_total: Duration,
    wait_since_take: Duration,
    fingerprint: String,
}

/// The identity of the data a loader reads, saved with its position:
/// `tokenizer:content:documents:tokens:val_fraction:add_bos`, where `content` is `sha256-`
/// and 16 hex digits of a hash over the shards' recorded sha256 sums. It depends on the
/// prepared tokens only, so the same data has the same fingerprint wherever it lives: on
/// another machine, in another vishwam home, after the corpus was moved or downloaded again.
fn data_fingerprint(dataset: &TokenDataset) -> String {
    use sha2::{Digest, Sha256};
    let manifest = dataset.prepared().manifest();
    let options = dataset.options();
    let mut content = Sha256::new();
    for shard in &manifest.shards {
        content.update(shard.tokens_sha256.as_bytes());
        content.update(shard.index_sha256.as_bytes());
        content.update(shard.origin_sha256.as_deref().unwrap_or("-").as_bytes());
    }
    let content = hex::encode(content.finalize());
    format!(
        "{}:{CONTENT_PREFIX}{}:{}:{}:{}:{}",
        &manifest.tokenizer_hash[..16.min(manifest.tokenizer_hash.len())],
        &content[..16],
        manifest.documents,
        manifest.tokens,
        options.val_fraction,
        options.add_bos
    )
}

/// How the content part of a [`data_fingerprint`] starts.
const CONTENT_PREFIX: &str = "sha256-";

/// True when the `saved` fingerprint names the same data as `current`: equal, or saved by a
/// vishwam before content fingerprints (whose second part hashed the corpus files' paths and
/// modification times, so it differs between machines for the same data) with every other
/// part (tokenizer, document and token counts, validation fraction, BOS) equal.
fn same_data(saved: &str, current: &str) -> bool {
    if saved == current {
        return true;
    }
    let (saved, current): (Vec<&str>, Vec<&str>) =
        (saved.split(':').collect(), current.split(':').collect());
    let legacy = saved.len() == 6 && !saved[1].starts_with(CONTENT_PREFIX);
    if !legacy || current.len() != 6 {
        return false;
    }
    let same = (0..6).all(|i| i == 1 || saved[i] == current[i]);
    if same {
        tracing::warn!(
            "the checkpoint's data position predates content fingerprints: resuming on data with \
             the same tokenizer, document count and token count"
        );
    }
    same
}

/// Builds batch `index` of `batch_size` rows.
pub fn build_batch(dataset: &TokenDataset, batch_size: usize, index: u64) -> Batch {
    build_batch_rows(dataset, batch_size, index, ProcessSlice::whole(batch_size))
}

/// Builds `slice`'s rows of batch `index` of `batch_size` rows: the same windows as those
/// rows of [`build_batch`], without building the others.
pub fn build_batch_rows(
    dataset: &TokenDataset,
    batch_size: usize,
    index: u64,
    slice: ProcessSlice,
) -> Batch {
    let t = dataset.options().seq_len;
    let n = dataset.samples_per_epoch();
    let mut batch = Batch::zeros(slice.rows_of(batch_size), t, index);
    let mut window = vec![0i32; t + 1];
    for (row, global_row) in slice.batch_rows(batch_size).enumerate() {
        let sample = index * batch_size as u64 + global_row as u64;
        let range = row * t..(row + 1) * t;
        dataset.fill_sample(
            sample / n,
            sample % n,
            &mut window,
            &mut batch.inputs[range.clone()],
            &mut batch.targets[range.clone()],
            &mut batch.loss_mask[range],
        );
    }
    batch
}

impl DataLoader {
    /// Starts a loader over `split` of `prepared`, from the beginning or from `resume`.
    pub fn start(
        prepared: Arc<PreparedDataset>,
        split: Split,
        options: &LoaderOptions,
        specials: SpecialTokenIds,
        resume: Option<&LoaderState>,
    ) -> Result<Self> {
        let whole = ProcessSlice::whole(options.batch_size);
        DataLoader::start_slice(prepared, split, options, specials, resume, whole)
    }

    /// As [`DataLoader::start`], serving only `slice`'s rows of each global batch of
    /// `options.batch_size` rows (one process of a multi-process job). The position
    /// ([`DataLoader::state`]) counts global batches, so every process saves the same one and
    /// a run resumes on any number of processes.
    pub fn start_slice(
        prepared: Arc<PreparedDataset>,
        split: Split,
        options: &LoaderOptions,
        specials: SpecialTokenIds,
        resume: Option<&LoaderState>,
        slice: ProcessSlice,
    ) -> Result<Self> {
        for (name, value) in [
            ("data.batch_size", options.batch_size),
            ("data.seq_len", options.seq_len),
            ("data.queue_size", options.queue_size),
            ("data.num_workers", options.num_workers),
        ] {
            if value == 0 {
                return Err(DataError::InvalidOption {
                    name,
                    value: "0".into(),
                    expected: "at least 1".into(),
                });
            }
        }
        slice.check(options.batch_size)?;
        let window = WindowOptions {
            kind: options.kind,
            seq_len: options.seq_len,
            seed: options.seed,
            val_fraction: options.val_fraction,
            add_bos: options.add_bos,
            specials,
        };
        let dataset = Arc::new(TokenDataset::new(prepared, split, window)?);
        let fingerprint = data_fingerprint(&dataset);
        let next_batch = match resume {
            None => 0,
            Some(state) => {
                let check = |field: &'static str, saved: String, current: String| {
                    if saved == current {
                        Ok(())
                    } else {
                        Err(DataError::LoaderStateMismatch {
                            field,
                            saved,
                            current,
                        })
                    }
                };
                check("seed", state.seed.to_string(), options.seed.to_string())?;
                check(
                    "batch_size",
                    state.batch_size.to_string(),
                    options.batch_size.to_string(),
                )?;
                check(
                    "seq_len",
                    state.seq_len.to_string(),
                    options.seq_len.to_string(),
                )?;
                check(
                    "dataset kind",
                    format!("{:?}", state.kind),
                    format!("{:?}", options.kind),
                )?;
                check("split", state.split.name().into(), split.name().into())?;
                if !same_data(&state.data_fingerprint, &fingerprint) {
                    check(
                        "data fingerprint",
                        state.data_fingerprint.clone(),
                        fingerprint.clone(),
                    )?;
                }
                state.next_batch
            }
        };
        let workers_count = options.num_workers;
        let per_worker = options.queue_size.div_ceil(workers_count).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicIsize::new(0));
        let mut receivers = Vec::with_capacity(workers_count);
        let mut workers = Vec::with_capacity(workers_count);
        for w in 0..workers_count as u64 {
            let (sender, receiver) = sync_channel::<Batch>(per_worker);
            let dataset = Arc::clone(&dataset);
            let stop = Arc::clone(&stop);
            let ready = Arc::clone(&ready);
            let batch_size = options.batch_size;
            let n = workers_count as u64;
            // First batch index >= next_batch that belongs to worker w.
            let first = next_batch + (w + n - next_batch % n) % n;
            let handle = std::thread::Builder::new()
                .name(format!("vishwam-data-{w}"))
                .spawn(move || {
                    let mut index = first;
                    while !stop.load(Ordering::Relaxed) {
                        let batch = build_batch_rows(&dataset, batch_size, index, slice);
                        if sender.send(batch).is_err() {
                            break;
                        }
                        ready.fetch_add(1, Ordering::Relaxed);
                        index += n;
                    }
                })
                .map_err(|e| DataError::LoaderStopped {
                    message: format!("could not start a worker thread: {e}"),
                })?;
            receivers.push(receiver);
            workers.push(handle);
        }
        Ok(DataLoader {
            dataset,
            batch_size: options.batch_size,
            next_batch,
            receivers,
            workers,
            stop,
            ready,
            wait_total: Duration::ZERO,
            wait_since_take: Duration::ZERO,
            fingerprint,
        })
    }

    /// The next batch; the time spent blocked here is added to the wait counters.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let worker = (self.next_batch % self.receivers.len() as u64) as usize;
        let started = Instant::now();
        let batch = self.receivers[worker]
            .recv()
            .map_err(|_| DataError::LoaderStopped {
                message: format!("worker {worker} exited (it panicked; see the message above)"),
            })?;
        self.ready.fetch_sub(1, Ordering::Relaxed);
        let waited = started.elapsed();
        self.wait_total += waited;
        self.wait_since_take += waited;
        debug_assert_eq!(batch.index, self.next_batch);
        self.next_batch += 1;
        Ok(batch)
    }

    /// The position to save: resuming from it continues with the batch `next_batch` would return.
    pub fn state(&self) -> LoaderState {
        let options = self.dataset.options();
        LoaderState {
            next_batch: self.next_batch,
            seed: options.seed,
            batch_size: self.batch_size,
            seq_len: options.seq_len,
            kind: options.kind,
            split: self.dataset.split(),
            data_fingerprint: self.fingerprint.clone(),
        }
    }

    /// Batches built and waiting in the prefetch queue now (at most about
    /// `data.queue_size`): 0 means the consumer is waiting for the workers.
    pub fn queue_depth(&self) -> usize {
        self.ready.load(Ordering::Relaxed).max(0) as usize
    }

    /// Total time `next_batch` spent waiting for a batch.
    pub fn wait_time(&self) -> Duration {
        self.wait_total
    }

    /// Waiting time since the previous call (for per-step profiles).
    pub fn take_wait_time(&mut self) -> Duration {
        std::mem::take(&mut self.wait_since_take)
    }

    /// The epoch the next batch's first row belongs to.
    pub fn epoch(&self) -> u64 {
        self.next_batch * self.batch_size as u64 / self.dataset.samples_per_epoch()
    }

    /// Batches per epoch (fractional: epochs need not end on a batch boundary).
    pub fn batches_per_epoch(&self) -> f64 {
        self.dataset.samples_per_epoch() as f64 / self.batch_size as f64
    }

    /// The windows being served.
    pub fn dataset(&self) -> &Arc<TokenDataset> {
        &self.dataset
    }
}

impl Drop for DataLoader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
