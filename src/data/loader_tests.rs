//! Tests of the background loader: order, resume, epochs, queue depth, mismatched states and
//! fingerprints.

use super::*;
use crate::data::test_support::{prepared_corpus, trained};

fn loader_options(workers: usize, kind: DatasetKind) -> LoaderOptions {
    LoaderOptions {
        batch_size: 4,
        seq_len: 16,
        queue_size: 3,
        num_workers: workers,
        seed: 5,
        val_fraction: 0.2,
        kind,
        add_bos: false,
    }
}

#[test]
fn order_is_independent_of_workers_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = trained(300);
    let prepared = Arc::new(prepared_corpus(dir.path(), "l", 15, 8, &tokenizer));
    for kind in [
        DatasetKind::Packed,
        DatasetKind::RandomChunk,
        DatasetKind::DocumentAware,
    ] {
        let specials = SpecialTokenIds::default();
        let mut single = DataLoader::start(
            prepared.clone(),
            Split::Train,
            &loader_options(1, kind),
            specials,
            None,
        )
        .unwrap();
        let total = (single.batches_per_epoch() * 1.5).ceil() as usize + 1;
        let reference: Vec<Batch> = (0..total).map(|_| single.next_batch().unwrap()).collect();
        assert!(
            single.epoch() >= 1,
            "{kind:?}: the run crosses an epoch boundary"
        );
        let cut = total / 2 + 1;

        let mut loader = DataLoader::start(
            prepared.clone(),
            Split::Train,
            &loader_options(3, kind),
            specials,
            None,
        )
        .unwrap();
        let first: Vec<Batch> = (0..cut).map(|_| loader.next_batch().unwrap()).collect();
        assert_eq!(
            first[..],
            reference[..cut],
            "{kind:?}: same order with 3 workers"
        );
        let saved = serde_json::to_string(&loader.state()).unwrap();
        drop(loader);
        let state: LoaderState = serde_json::from_str(&saved).unwrap();
        let mut resumed = DataLoader::start(
            prepared.clone(),
            Split::Train,
            &loader_options(2, kind),
            specials,
            Some(&state),
        )
        .unwrap();
        let rest: Vec<Batch> = (cut..total)
            .map(|_| resumed.next_batch().unwrap())
            .collect();
        assert_eq!(
            rest[..],
            reference[cut..],
            "{kind:?}: resume continues exactly"
        );
    }
}

#[test]
fn epochs_reshuffle_and_validation_differs() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = trained(300);
    let prepared = Arc::new(prepared_corpus(dir.path(), "e", 15, 9, &tokenizer));
    let options = loader_options(2, DatasetKind::Packed);
    let specials = SpecialTokenIds::default();
    let dataset = TokenDataset::new(
        prepared.clone(),
        Split::Train,
        WindowOptions {
            kind: options.kind,
            seq_len: 16,
            seed: 5,
            val_fraction: 0.2,
            add_bos: false,
            specials,
        },
    )
    .unwrap();
    let n = dataset.samples_per_epoch();
    let row = |epoch: u64, k: u64| {
        let (mut w, mut i, mut t, mut m) = (vec![0; 17], vec![0; 16], vec![0; 16], vec![0.0; 16]);
        dataset.fill_sample(epoch, k, &mut w, &mut i, &mut t, &mut m);
        i
    };
    let epoch0: Vec<Vec<i32>> = (0..n).map(|k| row(0, k)).collect();
    let epoch1: Vec<Vec<i32>> = (0..n).map(|k| row(1, k)).collect();
    assert_ne!(epoch0, epoch1, "a new epoch has a new order");
    let (mut a, mut b) = (epoch0.clone(), epoch1.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same windows in both epochs");

    let mut train =
        DataLoader::start(prepared.clone(), Split::Train, &options, specials, None).unwrap();
    let mut val = DataLoader::start(prepared, Split::Validation, &options, specials, None).unwrap();
    assert_ne!(
        train.next_batch().unwrap().inputs,
        val.next_batch().unwrap().inputs
    );
    assert!(train.wait_time() >= train.take_wait_time());
}

/// The queue fills to its capacity (3 batches over 2 workers: 2 each) while nobody takes,
/// and a take leaves one slot that the worker fills again.
#[test]
fn queue_depth_counts_ready_batches() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = trained(300);
    let prepared = Arc::new(prepared_corpus(dir.path(), "q", 10, 3, &tokenizer));
    let options = loader_options(2, DatasetKind::Packed);
    let mut loader = DataLoader::start(
        prepared,
        Split::Train,
        &options,
        SpecialTokenIds::default(),
        None,
    )
    .unwrap();
    let full = 4;
    let wait_for = |loader: &DataLoader, depth: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while loader.queue_depth() != depth && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(loader.queue_depth(), depth);
    };
    wait_for(&loader, full);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        loader.queue_depth(),
        full,
        "never more than the queue holds"
    );
    loader.next_batch().unwrap();
    assert!(loader.queue_depth() >= full - 1);
    wait_for(&loader, full);
}

#[test]
fn mismatched_resume_state_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = trained(300);
    let prepared = Arc::new(prepared_corpus(dir.path(), "m", 10, 3, &tokenizer));
    let options = loader_options(1, DatasetKind::Packed);
    let specials = SpecialTokenIds::default();
    let loader =
        DataLoader::start(prepared.clone(), Split::Train, &options, specials, None).unwrap();
    let mut state = loader.state();
    state.batch_size = 8;
    let err = DataLoader::start(
        prepared.clone(),
        Split::Train,
        &options,
        specials,
        Some(&state),
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            DataError::LoaderStateMismatch {
                field: "batch_size",
                ..
            }
        ),
        "{err}"
    );
    let mut state = loader.state();
    state.data_fingerprint = "other".into();
    let err = DataLoader::start(prepared, Split::Train, &options, specials, Some(&state))
        .err()
        .unwrap();
    assert!(matches!(
        err,
        DataError::LoaderStateMismatch {
            field: "data fingerprint",
            ..
        }
    ));
}

#[test]
fn fingerprints_name_the_content_and_accept_legacy_path_fingerprints() {
    let current = "0123456789abcdef:sha256-00112233aabbccdd:57:1000:0.05:true";
    assert!(super::same_data(current, current));
    // Another content hash: other data, whatever else agrees.
    let other = "0123456789abcdef:sha256-ffffffffaabbccdd:57:1000:0.05:true";
    assert!(!super::same_data(other, current));
    // A fingerprint from before content hashes (paths and times): the other parts decide.
    let legacy = "0123456789abcdef:fedcba9876543210:57:1000:0.05:true";
    assert!(super::same_data(legacy, current));
    for changed in [
        "ffffffffffffffff:fedcba9876543210:57:1000:0.05:true",
        "0123456789abcdef:fedcba9876543210:58:1000:0.05:true",
        "0123456789abcdef:fedcba9876543210:57:1001:0.05:true",
        "0123456789abcdef:fedcba9876543210:57:1000:0.1:true",
        "0123456789abcdef:fedcba9876543210:57:1000:0.05:false",
        "other",
    ] {
        assert!(!super::same_data(changed, current), "{changed}");
    }
}

/// Every process of a job of 2 or 4 feeds its own rows of each global batch of 2
/// micro-batches: its block of every micro-batch. Put back in place, the processes' rows
/// are exactly the single-process batch (each row once), from the start and after resuming
/// from a saved position.
#[test]
fn per_process_slices_cover_the_global_batch_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = trained(300);
    let prepared = Arc::new(prepared_corpus(dir.path(), "p", 15, 8, &tokenizer));
    let specials = SpecialTokenIds::default();
    let mut options = loader_options(2, DatasetKind::RandomChunk);
    options.batch_size = 16;
    let micro = 8;
    let mut single =
        DataLoader::start(prepared.clone(), Split::Train, &options, specials, None).unwrap();
    let reference: Vec<Batch> = (0..6).map(|_| single.next_batch().unwrap()).collect();
    let mut resumed_at = single.state();
    resumed_at.next_batch = 3;
    let t = options.seq_len;
    for processes in [2, 4] {
        for resume in [None, Some(&resumed_at)] {
            let start = resume.map_or(0, |s| s.next_batch as usize);
            let slices: Vec<ProcessSlice> = (0..processes)
                .map(|p| ProcessSlice::of_process(16, micro, processes, p).unwrap())
                .collect();
            let mut loaders: Vec<DataLoader> = slices
                .iter()
                .map(|&slice| {
                    DataLoader::start_slice(
                        prepared.clone(),
                        Split::Train,
                        &options,
                        specials,
                        resume,
                        slice,
                    )
                    .unwrap()
                })
                .collect();
            for want in &reference[start..] {
                let mut seen = vec![0usize; 16];
                let mut rebuilt = Batch::zeros(16, t, want.index);
                for (loader, slice) in loaders.iter_mut().zip(&slices) {
                    let part = loader.next_batch().unwrap();
                    assert_eq!((part.batch_size, part.index), (16 / processes, want.index));
                    for (row, global) in slice.batch_rows(16).enumerate() {
                        seen[global] += 1;
                        let (from, to) = (row * t..(row + 1) * t, global * t..(global + 1) * t);
                        rebuilt.inputs[to.clone()].copy_from_slice(&part.inputs[from.clone()]);
                        rebuilt.targets[to.clone()].copy_from_slice(&part.targets[from.clone()]);
                        rebuilt.loss_mask[to].copy_from_slice(&part.loss_mask[from]);
                    }
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{processes} processes: {seen:?}"
                );
                assert_eq!(
                    &rebuilt, want,
                    "{processes} processes, batch {}",
                    want.index
                );
            }
            // Every process is at the same global position.
            let positions: Vec<u64> = loaders.iter().map(|l| l.state().next_batch).collect();
            assert!(positions.iter().all(|&p| p == 6), "{positions:?}");
        }
    }
    // Process 1 of 2 takes rows 4..8 and 12..16 of a batch of two micro-batches of 8.
    let rows: Vec<usize> = ProcessSlice::of_process(16, 8, 2, 1)
        .unwrap()
        .batch_rows(16)
        .collect();
    assert_eq!(rows, [4, 5, 6, 7, 12, 13, 14, 15]);
    let e = ProcessSlice::of_process(12, 6, 4, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a multiple of the 4 processes"), "{e}");
}
