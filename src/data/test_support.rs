//! Shared helpers for the data pipeline's unit tests: seeded random text and small tokenizers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tokenizer::{TextTokenizer, TrainOptions};

/// Random English-like text of `words` words: syllables, punctuation and some newlines.
pub fn random_text(rng: &mut ChaCha8Rng, words: usize) -> String {
    let syllables = ["ka", "lo", "mi", "ter", "an", "so", "ru", "vel", "di", "ne"];
    let mut text = String::new();
    for i in 0..words {
        if i > 0 {
            text.push(if rng.gen_bool(0.05) { '\n' } else { ' ' });
        }
        for _ in 0..rng.gen_range(1..4) {
            text.push_str(syllables[rng.gen_range(0..syllables.len())]);
        }
        if rng.gen_bool(0.1) {
            text.push_str([",", ".", "!", "?"][rng.gen_range(0..4)]);
        }
    }
    text
}

/// A byte-level BPE tokenizer of `vocab_size` trained on seeded random text.
pub fn trained(vocab_size: usize) -> TextTokenizer {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let docs: Vec<String> = (0..40).map(|_| random_text(&mut rng, 200)).collect();
    let options = TrainOptions {
        vocab_size,
        min_frequency: 1,
        show_progress: false,
    };
    TextTokenizer::train_byte_level_bpe(docs.into_iter().map(Ok), &options)
        .expect("training a small tokenizer")
}

/// Writes `documents` seeded random text files `doc0000.txt`.. into `dir`; returns their texts.
pub fn write_corpus(dir: &std::path::Path, documents: usize, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    std::fs::create_dir_all(dir).expect("creating the corpus directory");
    (0..documents)
        .map(|i| {
            let text = random_text(&mut rng, 20 + (i * 37) % 150);
            std::fs::write(dir.join(format!("doc{i:04}.txt")), &text).expect("writing a document");
            text
        })
        .collect()
}

/// A prepared dataset of `documents` random documents under `root/name`.
pub fn prepared_corpus(
    root: &std::path::Path,
    name: &str,
    documents: usize,
    seed: u64,
    tokenizer: &TextTokenizer,
) -> super::prepare::PreparedDataset {
    let corpus = root.join(format!("{name}-text"));
    write_corpus(&corpus, documents, seed);
    let spec = super::sources::SourceSpec::from_paths([corpus.to_string_lossy()]);
    let options = super::prepare::PrepareOptions {
        max_shard_tokens: 3000,
        batch_bytes: 8192,
        brown: super::brown::BrownFetcher::unavailable_for_tests(),
        force: false,
        verify_checksums: true,
    };
    super::prepare::ensure_prepared(&spec, tokenizer, &root.join(name), &options)
        .expect("preparing a test corpus")
}

/// The documents of `spec` and the statistics of streaming it (Brown unavailable).
pub fn collect_source(
    spec: &super::sources::SourceSpec,
) -> (Vec<String>, super::reader::SourceStats) {
    let fetcher = super::brown::BrownFetcher::unavailable_for_tests();
    let resolved = spec.resolve(&fetcher).unwrap();
    let docs: Vec<String> = super::reader::documents(&resolved)
        .map(|d| d.unwrap())
        .collect();
    let stats = super::reader::PieceStream::start(&resolved, 4)
        .finish()
        .unwrap();
    (docs, stats)
}
