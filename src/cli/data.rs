//! Command-line front end of the data pipeline: `vishwam tokenizer ...` and `vishwam data ...`.
//!
//! `vishwam data prepare --config X` is the lead's to add once the config module exists: map
//! `data.paths/text_field/text_documents/cache_dir/tokenizer` onto [`SourceSpec`], a tokenizer
//! path and [`PrepareOptions`], then call [`ensure_prepared`] exactly as [`run_prepare`] does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use vishwam::data::merge::{merge, MergeOptions, MergeStrategy};
use vishwam::data::prepare::{ensure_prepared, PrepareOptions};
use vishwam::data::reader::documents;
use vishwam::data::sources::{SourceSpec, TextDocuments};
use vishwam::data::tokenizer::{TextTokenizer, TrainOptions};
use vishwam::data::verify::verify;
use vishwam::data::BrownFetcher;

/// How text sources are read (shared by the commands that read text).
#[derive(Debug, Clone, Args)]
pub struct SourceFlags {
    /// Field holding the text in JSONL records.
    #[arg(long = "text-field", alias = "text_field", default_value = "text")]
    pub text_field: String,
    /// How plain-text files are cut into documents.
    #[arg(long = "text-documents", alias = "text_documents", value_enum, default_value_t = TextDocuments::File)]
    pub text_documents: TextDocuments,
}

impl SourceFlags {
    fn spec(&self, paths: &[String]) -> SourceSpec {
        SourceSpec {
            paths: paths.to_vec(),
            text_field: self.text_field.clone(),
            text_documents: self.text_documents,
            ..SourceSpec::default()
        }
    }
}

/// `vishwam tokenizer`: tokenizer tools.
#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

/// Subcommands of `vishwam tokenizer`.
#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer (<pad>=0, <bos>=1, <eos>=2) and save it as tokenizer.json.
    Train(TokenizerTrainArgs),
}

/// Arguments of `vishwam tokenizer train`.
#[derive(Debug, Args)]
pub struct TokenizerTrainArgs {
    /// Text files, directories, globs, JSONL files, or `brown`.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<String>,
    /// Vocabulary size, including the 3 special tokens and 256 byte symbols.
    #[arg(long = "vocab-size", alias = "vocab_size")]
    pub vocab_size: usize,
    /// Where to write the HF tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Minimum pair frequency for a merge.
    #[arg(long = "min-frequency", default_value_t = 2)]
    pub min_frequency: u64,
    /// How sources are read.
    #[command(flatten)]
    pub source: SourceFlags,
}

/// `vishwam data`: token datasets.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DataCommand,
}

/// Subcommands of `vishwam data`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Tokenize text into token shards (index + manifest) in a cache directory.
    Prepare(PrepareArgs),
    /// Mix prepared datasets by weights into a new dataset.
    Merge(MergeArgs),
    /// Check a prepared dataset's integrity and print its statistics.
    Verify(VerifyArgs),
}

/// Arguments of `vishwam data prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Prepare what this training config's `data` / `datasets` sections name (tokenizer,
    /// sources, cache directory), exactly as `vishwam train` would.
    #[arg(long, conflicts_with_all = ["input_dir", "cache_dir", "tokenizer"])]
    pub config: Option<PathBuf>,
    /// Text files, directories, globs, JSONL files, or `brown`.
    #[arg(long = "input_dir", alias = "input-dir", num_args = 1.., required_unless_present = "config")]
    pub input_dir: Vec<String>,
    /// Directory of the prepared dataset (replaced atomically).
    #[arg(
        long = "cache_dir",
        alias = "cache-dir",
        required_unless_present = "config"
    )]
    pub cache_dir: Option<PathBuf>,
    /// HF tokenizer.json to tokenize with.
    #[arg(long, required_unless_present = "config")]
    pub tokenizer: Option<PathBuf>,
    /// The model's vocab_size, checked against the tokenizer (it may be larger, not smaller).
    #[arg(long = "vocab-size", alias = "vocab_size")]
    pub vocab_size: Option<usize>,
    /// Tokens per shard (a shard closes at the first document end past this).
    #[arg(long = "shard-tokens", default_value_t = 64 << 20)]
    pub shard_tokens: u64,
    /// Prepare even if the cache is up to date.
    #[arg(long)]
    pub force: bool,
    /// Verify the result and print its statistics.
    #[arg(long)]
    pub verify: bool,
    /// How sources are read.
    #[command(flatten)]
    pub source: SourceFlags,
}

/// Arguments of `vishwam data merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Prepared dataset directories to mix.
    #[arg(long, num_args = 1.., required = true)]
    pub datasets: Vec<PathBuf>,
    /// One weight per dataset (implies --strategy weighted).
    #[arg(long, num_args = 1..)]
    pub weights: Vec<f64>,
    /// weighted, equal or proportional (default: weighted with --weights, else proportional).
    #[arg(long, value_enum)]
    pub strategy: Option<MergeStrategy>,
    /// Seed of the document draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens in the result (default: the inputs' tokens added up).
    #[arg(long = "total-tokens")]
    pub total_tokens: Option<u64>,
    /// Tokens per output shard.
    #[arg(long = "shard-tokens", default_value_t = 64 << 20)]
    pub shard_tokens: u64,
    /// Verify the result (checksums, token ids, index) and print statistics.
    #[arg(long)]
    pub verify: bool,
    /// Output directory (replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `vishwam data verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Prepared dataset directory.
    pub dir: PathBuf,
}

/// Runs `vishwam tokenizer ...`.
pub fn run_tokenizer(args: &TokenizerArgs) -> anyhow::Result<()> {
    match &args.command {
        TokenizerCommand::Train(train) => run_tokenizer_train(train),
    }
}

/// Runs `vishwam tokenizer train`.
pub fn run_tokenizer_train(args: &TokenizerTrainArgs) -> anyhow::Result<()> {
    let spec = args.source.spec(&args.data);
    let sources = spec.resolve(&BrownFetcher::default())?;
    tracing::info!(
        "training a {}-token byte-level BPE on {}",
        args.vocab_size,
        sources.description
    );
    let options = TrainOptions {
        vocab_size: args.vocab_size,
        min_frequency: args.min_frequency,
        show_progress: true,
    };
    let tokenizer = TextTokenizer::train_byte_level_bpe(documents(&sources), &options)?;
    tokenizer
        .save(&args.out)
        .with_context(|| format!("saving the tokenizer to {}", args.out.display()))?;
    println!(
        "wrote {} ({} tokens; <pad>=0 <bos>=1 <eos>=2; hash {})",
        args.out.display(),
        tokenizer.vocab_size(),
        &tokenizer.hash()[..12]
    );
    Ok(())
}

/// Runs `vishwam data ...`.
pub fn run_data(args: &DataArgs) -> anyhow::Result<()> {
    match &args.command {
        DataCommand::Prepare(prepare) => run_prepare(prepare),
        DataCommand::Merge(merge) => run_merge(merge),
        DataCommand::Verify(v) => {
            print!("{}", verify(&v.dir)?);
            Ok(())
        }
    }
}

/// Runs `vishwam data prepare` with explicit flags.
pub fn run_prepare(args: &PrepareArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        let cfg = vishwam::config::Config::load(Some(path), &[])?;
        let (tokenizer, _, dataset) = vishwam::train::prepare_data(&cfg)?;
        println!(
            "{}: {} documents, {} tokens in {} shards (tokenizer {}, {} tokens)",
            dataset.dir().display(),
            dataset.num_documents(),
            dataset.num_tokens(),
            dataset.shards().len(),
            &tokenizer.hash()[..12],
            tokenizer.vocab_size()
        );
        if args.verify {
            print!("{}", verify(dataset.dir())?);
        }
        return Ok(());
    }
    let (Some(tokenizer), Some(cache_dir)) = (&args.tokenizer, &args.cache_dir) else {
        anyhow::bail!("give --config, or --input_dir with --cache_dir and --tokenizer");
    };
    let tokenizer = TextTokenizer::from_file(tokenizer)?;
    if let Some(vocab_size) = args.vocab_size {
        tokenizer.check_model_vocab(vocab_size)?;
    }
    let spec = args.source.spec(&args.input_dir);
    let options = PrepareOptions {
        max_shard_tokens: args.shard_tokens,
        force: args.force,
        ..PrepareOptions::default()
    };
    let dataset = ensure_prepared(&spec, &tokenizer, cache_dir, &options)?;
    println!(
        "{}: {} documents, {} tokens in {} shards",
        cache_dir.display(),
        dataset.num_documents(),
        dataset.num_tokens(),
        dataset.shards().len()
    );
    if args.verify {
        print!("{}", verify(cache_dir)?);
    }
    Ok(())
}

/// Runs `vishwam data merge`.
pub fn run_merge(args: &MergeArgs) -> anyhow::Result<()> {
    let strategy = args.strategy.unwrap_or(if args.weights.is_empty() {
        MergeStrategy::Proportional
    } else {
        MergeStrategy::Weighted
    });
    let options = MergeOptions {
        strategy,
        weights: args.weights.clone(),
        seed: args.seed,
        total_tokens: args.total_tokens,
        max_shard_tokens: args.shard_tokens,
    };
    let merged = merge(&args.datasets, &options, &args.out)?;
    println!(
        "{}: {} documents, {} tokens ({} merge)",
        args.out.display(),
        merged.num_documents(),
        merged.num_tokens(),
        strategy.name()
    );
    if args.verify {
        print!("{}", verify(&args.out)?);
    }
    Ok(())
}
