//! The data benchmark behind `vishwam bench data`: tokenization MB/s on the Brown corpus
//! (compared with Python `tokenizers`) and loader batches/s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::brown::{BrownFetcher, BROWN_SOURCE_NAME};
use super::dataset::Split;
use super::error::{DataError, Result};
use super::loader::{DataLoader, LoaderOptions};
use super::prepare::{ensure_prepared, PrepareOptions};
use super::reader::documents;
use super::sources::SourceSpec;
use super::tokenizer::{TextTokenizer, TrainOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct DataBenchOptions {
    /// Tokenizer to use; `None` trains (once, cached under `work_dir`) a byte-level BPE of
    /// `vocab_size` on the Brown corpus.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of the tokenizer trained when `tokenizer` is `None`.
    pub vocab_size: usize,
    /// Threads for tokenization (the Python baseline gets the same number).
    pub threads: usize,
    /// Timed passes over the corpus; the fastest counts.
    pub repeats: usize,
    /// Loader settings for the batches/s measurement.
    pub loader: LoaderOptions,
    /// Batches timed (after one warm-up batch).
    pub loader_batches: usize,
    /// `scripts/bench_tokenizers.py`; when set and `python` has `tokenizers`, the baseline runs.
    pub python_script: Option<PathBuf>,
    /// The Python interpreter.
    pub python: String,
    /// Where the Brown corpus lives.
    pub brown: BrownFetcher,
    /// Where the benchmark keeps its tokenizer and prepared corpus.
    pub work_dir: PathBuf,
}

impl Default for DataBenchOptions {
    fn default() -> Self {
        DataBenchOptions {
            tokenizer: None,
            vocab_size: 16_384,
            threads: 2,
            repeats: 3,
            loader: LoaderOptions::default(),
            loader_batches: 200,
            python_script: Some(PathBuf::from("scripts/bench_tokenizers.py")),
            python: "python3".into(),
            brown: BrownFetcher::default(),
            work_dir: crate::paths::vishwam_home().join("bench"),
        }
    }
}

/// The measured figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataBenchReport {
    /// The tokenizer file used by both sides.
    pub tokenizer: PathBuf,
    /// Documents tokenized per pass.
    pub documents: usize,
    /// Bytes of text per pass.
    pub bytes: u64,
    /// Tokens per pass.
    pub tokens: u64,
    /// Threads used.
    pub threads: usize,
    /// vishwam's tokenization speed, fastest of `repeats` passes (MB = 1e6 bytes).
    pub tokenize_mb_per_s: f64,
    /// vishwam's first pass, with empty word memos.
    pub tokenize_first_pass_mb_per_s: f64,
    /// Whether the byte-level BPE fast path was used ([`super::fast_bpe`]).
    pub fast_path: bool,
    /// Whether every document's ids equal the `tokenizers` pipeline's (checked once).
    pub ids_match_library: bool,
    /// The `tokenizers` crate pipeline (`encode_batch_fast`) on the same threads, MB/s.
    pub library_mb_per_s: f64,
    /// Python `tokenizers` `encode_batch` on the same file, text and thread count (best pass).
    pub python_encode_batch_mb_per_s: Option<f64>,
    /// Python `encode_batch`, first pass.
    pub python_encode_batch_first_pass_mb_per_s: Option<f64>,
    /// Python `encode_batch_fast` (no offsets), when the installed version has it.
    pub python_encode_batch_fast_mb_per_s: Option<f64>,
    /// Why the Python baseline is missing, or its version.
    pub python_note: String,
    /// Loader throughput (rows of `seq_len` tokens).
    pub loader_batches_per_s: f64,
    /// Loader throughput in tokens.
    pub loader_tokens_per_s: f64,
    /// Batch size of the loader measurement.
    pub batch_size: usize,
    /// Sequence length of the loader measurement.
    pub seq_len: usize,
}

impl std::fmt::Display for DataBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "data benchmark ({} threads, tokenizer {})",
            self.threads,
            self.tokenizer.display()
        )?;
        writeln!(
            f,
            "  tokenization: {:.2} MB/s best, {:.2} MB/s first pass ({} documents, {:.2} MB, {} tokens)",
            self.tokenize_mb_per_s,
            self.tokenize_first_pass_mb_per_s,
            self.documents,
            self.bytes as f64 / 1e6,
            self.tokens
        )?;
        writeln!(
            f,
            "  tokenizers crate encode_batch_fast: {:.2} MB/s (fast path {}, same ids: {})",
            self.library_mb_per_s, self.fast_path, self.ids_match_library
        )?;
        match self.python_encode_batch_mb_per_s {
            Some(python) => {
                writeln!(
                f,
                "  python tokenizers encode_batch: {python:.2} MB/s best, {:.2} MB/s first pass \
                 -> vishwam is {:.2}x best, {:.2}x first pass ({})",
                self.python_encode_batch_first_pass_mb_per_s.unwrap_or(f64::NAN),
                self.tokenize_mb_per_s / python,
                self.tokenize_first_pass_mb_per_s
                    / self.python_encode_batch_first_pass_mb_per_s.unwrap_or(f64::NAN),
                self.python_note
            )?
            }
            None => writeln!(f, "  python baseline not run: {}", self.python_note)?,
        }
        if let Some(fast) = self.python_encode_batch_fast_mb_per_s {
            writeln!(f, "  python tokenizers encode_batch_fast: {fast:.2} MB/s")?;
        }
        writeln!(
            f,
            "  loader: {:.1} batches/s of {}x{} ({:.2} M tokens/s)",
            self.loader_batches_per_s,
            self.batch_size,
            self.seq_len,
            self.loader_tokens_per_s / 1e6
        )
    }
}

/// Loads `options.tokenizer`, or trains and caches the benchmark tokenizer on Brown.
fn bench_tokenizer(
    options: &DataBenchOptions,
    spec: &SourceSpec,
) -> Result<(TextTokenizer, PathBuf)> {
    if let Some(path) = &options.tokenizer {
        return Ok((TextTokenizer::from_file(path)?, path.clone()));
    }
    let path = options
        .work_dir
        .join(format!("brown-bpe-{}.json", options.vocab_size));
    if path.is_file() {
        return Ok((TextTokenizer::from_file(&path)?, path));
    }
    tracing::info!(
        "training a {}-token byte-level BPE on the Brown corpus for the benchmark",
        options.vocab_size
    );
    let sources = spec.resolve(&options.brown)?;
    let train = TrainOptions {
        vocab_size: options.vocab_size,
        ..TrainOptions::default()
    };
    let tokenizer = TextTokenizer::train_byte_level_bpe(documents(&sources), &train)?;
    tokenizer.save(&path)?;
    Ok((TextTokenizer::from_file(&path)?, path))
}

/// What the Python baseline script reported.
#[derive(Debug, Default)]
struct PythonFigures {
    encode_batch: Option<f64>,
    encode_batch_first_pass: Option<f64>,
    encode_batch_fast: Option<f64>,
    note: String,
}

impl PythonFigures {
    fn missing(note: String) -> Self {
        PythonFigures {
            note,
            ..PythonFigures::default()
        }
    }
}

/// Runs `scripts/bench_tokenizers.py` with the same tokenizer, text and thread count.
fn python_baseline(
    options: &DataBenchOptions,
    script: &Path,
    tokenizer: &Path,
    text_dir: &Path,
) -> PythonFigures {
    if !script.is_file() {
        return PythonFigures::missing(format!("{} not found", script.display()));
    }
    let output = Command::new(&options.python)
        .arg(script)
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--data")
        .arg(text_dir)
        .args(["--threads", &options.threads.to_string()])
        .args(["--repeats", &options.repeats.to_string()])
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => return PythonFigures::missing(format!("could not run {}: {e}", options.python)),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: Option<serde_json::Value> = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    match parsed {
        Some(v) if v.get("mb_per_s").is_some() => PythonFigures {
            encode_batch: v["mb_per_s"].as_f64(),
            encode_batch_first_pass: v.get("first_pass_mb_per_s").and_then(|x| x.as_f64()),
            encode_batch_fast: v.get("encode_batch_fast_mb_per_s").and_then(|x| x.as_f64()),
            note: format!(
                "python tokenizers {}",
                v["tokenizers_version"].as_str().unwrap_or("?")
            ),
        },
        Some(v) => PythonFigures::missing(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no result")
                .to_string(),
        ),
        None => PythonFigures::missing(format!(
            "the script failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// Measures tokenization MB/s over the Brown corpus and loader batches/s.
pub fn bench_data(options: &DataBenchOptions) -> Result<DataBenchReport> {
    let spec = SourceSpec::from_paths([BROWN_SOURCE_NAME]);
    let text_dir = options.brown.ensure_text()?;
    let (tokenizer, tokenizer_path) = bench_tokenizer(options, &spec)?;
    let sources = spec.resolve(&options.brown)?;
    let texts: Vec<String> = documents(&sources).collect::<Result<_>>()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .build()
        .map_err(|e| DataError::InvalidOption {
            name: "threads",
            value: options.threads.to_string(),
            expected: format!("a thread count the system allows ({e})"),
        })?;
    // Pass times; the first pass starts with empty word memos (what one `prepare` run sees).
    let mut seconds = Vec::new();
    let mut tokens = 0u64;
    for _ in 0..options.repeats.max(1) {
        let started = Instant::now();
        let encoded = pool.install(|| tokenizer.encode_batch(&refs))?;
        seconds.push(started.elapsed().as_secs_f64());
        tokens = encoded.iter().map(|e| e.len() as u64).sum();
    }
    let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let tokenize_mb_per_s = bytes as f64 / best / 1e6;
    let tokenize_first_pass_mb_per_s = bytes as f64 / seconds[0] / 1e6;
    let mut library_best = f64::INFINITY;
    let mut ids_match_library = true;
    for _ in 0..options.repeats.max(1) {
        let started = Instant::now();
        let encodings = pool
            .install(|| tokenizer.inner().encode_batch_fast(refs.clone(), false))
            .map_err(|e| DataError::tokenizer("encoding a batch", e))?;
        library_best = library_best.min(started.elapsed().as_secs_f64());
        let ours = pool.install(|| tokenizer.encode_batch(&refs))?;
        ids_match_library &= encodings
            .iter()
            .zip(&ours)
            .all(|(e, o)| e.get_ids() == o.as_slice());
    }
    let library_mb_per_s = bytes as f64 / library_best / 1e6;

    let python = match &options.python_script {
        Some(script) => python_baseline(options, script, &tokenizer_path, &text_dir),
        None => PythonFigures::missing("no baseline script given".into()),
    };

    let cache = options
        .work_dir
        .join(format!("brown-{}", &tokenizer.hash()[..12]));
    let prepare = PrepareOptions {
        brown: options.brown.clone(),
        ..PrepareOptions::default()
    };
    let prepared = Arc::new(ensure_prepared(&spec, &tokenizer, &cache, &prepare)?);
    let specials =
        tokenizer
            .conventional_special_ids()
            .ok_or_else(|| DataError::InvalidOption {
                name: "benchmark tokenizer",
                value: tokenizer_path.display().to_string(),
                expected:
                    "a tokenizer with an end-of-sequence special token (<eos>, </s>, <|endoftext|>)"
                        .into(),
            })?;
    let mut loader = DataLoader::start(prepared, Split::Train, &options.loader, specials, None)?;
    loader.next_batch()?;
    let started = Instant::now();
    for _ in 0..options.loader_batches.max(1) {
        loader.next_batch()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let batches_per_s = options.loader_batches.max(1) as f64 / seconds;
    Ok(DataBenchReport {
        tokenizer: tokenizer_path,
        documents: texts.len(),
        bytes,
        tokens,
        threads: options.threads,
        tokenize_mb_per_s,
        tokenize_first_pass_mb_per_s,
        fast_path: tokenizer.has_fast_path(),
        ids_match_library,
        library_mb_per_s,
        python_encode_batch_mb_per_s: python.encode_batch,
        python_encode_batch_first_pass_mb_per_s: python.encode_batch_first_pass,
        python_encode_batch_fast_mb_per_s: python.encode_batch_fast,
        python_note: python.note,
        loader_batches_per_s: batches_per_s,
        loader_tokens_per_s: batches_per_s
            * (options.loader.batch_size * options.loader.seq_len) as f64,
        batch_size: options.loader.batch_size,
        seq_len: options.loader.seq_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full benchmark; needs npm (or a cached Brown corpus) and takes about a minute.
    #[test]
    #[ignore = "benchmark: cargo test --release -p vishwam --lib bench_data_on_brown -- --ignored --nocapture"]
    fn bench_data_on_brown() {
        let options = DataBenchOptions {
            python_script: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_tokenizers.py"),
            ),
            ..DataBenchOptions::default()
        };
        let report = bench_data(&options).unwrap();
        println!("{report}");
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
        assert!(report.tokenize_mb_per_s > 0.0 && report.loader_batches_per_s > 0.0);
        assert!(report.ids_match_library);
    }
}
