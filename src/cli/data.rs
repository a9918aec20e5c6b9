//! Command-line front end of the data pipeline: `vishwam tokenizer ...` and `vishwam data ...`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use vishwam::data::merge::{merge, MergeOptions, MergeStrategy};
use vishwam::data::prepare::{ensure_prepared, PrepareOptions};
use vishwam::data::reader::documents;
use vishwam::data::sources::{InvalidUtf8, SourceSpec, TextDocuments};
use vishwam::data::tokenizer::{TextTokenizer, TrainOptions};
use vishwam::data::verify::verify;
use vishwam::data::BrownFetcher;

/// How text sources are read (shared by the commands that read text).
#[derive(Debug, Clone, Args)]
pub struct SourceFlags {
    /// Field holding the text in JSONL records, or the column holding it in CSV files
    /// (*.csv, with a header row; one document per row).
    #[arg(long = "text-field", alias = "text_field", default_value = "text")]
    pub text_field: String,
    /// How plain-text files are cut into documents.
    #[arg(long = "text-documents", alias = "text_documents", value_enum, default_value_t = TextDocuments::File)]
    pub text_documents: TextDocuments,
    /// Bytes that are not valid UTF-8: an error naming the file and offset, or replaced by
    /// U+FFFD. Binary files (NUL bytes, a shard header) are an error either way.
    #[arg(long = "invalid-utf8", alias = "invalid_utf8", value_enum, default_value_t = InvalidUtf8::Error)]
    pub invalid_utf8: InvalidUtf8,
}

impl SourceFlags {
    fn spec(&self, paths: &[String]) -> SourceSpec {
        SourceSpec {
            paths: paths.to_vec(),
            text_field: self.text_field.clone(),
            text_documents: self.text_documents,
            invalid_utf8: self.invalid_utf8,
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
    /// Print a tokenizer's size, hash, special tokens and pad/bos/eos ids, and optionally the
    /// tokens of a text.
    Inspect(TokenizerInspectArgs),
}

/// Arguments of `vishwam tokenizer inspect`.
#[derive(Debug, Args)]
pub struct TokenizerInspectArgs {
    /// A tokenizer.json path, or a name: o200k_base (tiktoken's encoding).
    pub tokenizer: String,
    /// Text to encode: its ids and their pieces are printed.
    #[arg(long)]
    pub text: Option<String>,
}

/// Arguments of `vishwam tokenizer train`.
#[derive(Debug, Args)]
pub struct TokenizerTrainArgs {
    /// Text files, directories, globs, JSONL or CSV files (*.jsonl, *.csv), or `brown`.
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
    /// sources, cache directory, text options), with its model.vocab_size and sequence.*
    /// special ids, exactly as `vishwam train` would. The flags that say the same things
    /// (--input_dir, --cache_dir, --tokenizer, --vocab-size, --text-field, --text-documents,
    /// --invalid-utf8, --shard-tokens, --force) cannot be given with it.
    #[arg(
        long,
        conflicts_with_all = [
            "input_dir", "cache_dir", "tokenizer", "vocab_size", "text_field",
            "text_documents", "invalid_utf8", "shard_tokens", "force",
        ]
    )]
    pub config: Option<PathBuf>,
    /// Text files, directories, globs, JSONL or CSV files (*.jsonl, *.csv), or `brown`.
    #[arg(long = "input_dir", alias = "input-dir", alias = "dataset", num_args = 1.., required_unless_present = "config")]
    pub input_dir: Vec<String>,
    /// Directory of the prepared dataset (replaced atomically); it holds the shards, the
    /// manifest and the tokenizer.json that made them, and `vishwam train --data_cache_dir`
    /// trains on it.
    #[arg(
        long = "cache_dir",
        alias = "cache-dir",
        alias = "data_cache_dir",
        required_unless_present = "config"
    )]
    pub cache_dir: Option<PathBuf>,
    /// A tokenizer.json path or o200k_base. Without it, the tokenizer `vishwam train` trains
    /// for these sources when its config sets no data.tokenizer and no sequence.*_token_id:
    /// a byte-level BPE of --vocab-size tokens with <pad>=0 <bos>=1 <eos>=2, trained once and
    /// cached in $VISHWAM_HOME/tokenizers (the output says which). For a config with other
    /// special ids, use --config.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// The model's vocab_size: checked against the tokenizer (it may be larger, not smaller),
    /// and the size of the tokenizer trained without --tokenizer (default: model.vocab_size
    /// of the default config).
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
        TokenizerCommand::Inspect(inspect) => run_tokenizer_inspect(inspect),
    }
}

/// Runs `vishwam tokenizer inspect`.
pub fn run_tokenizer_inspect(args: &TokenizerInspectArgs) -> anyhow::Result<()> {
    let tokenizer = TextTokenizer::load(&args.tokenizer)?;
    println!("tokenizer: {}", tokenizer.origin());
    println!(
        "tokens: {} (model.vocab_size must be at least this)",
        tokenizer.vocab_size()
    );
    println!("hash: {}", tokenizer.hash());
    let specials: Vec<String> = tokenizer
        .special_tokens()
        .iter()
        .map(|(text, id)| format!("{text}={id}"))
        .collect();
    println!("special tokens: {}", specials.join(" "));
    match tokenizer.conventional_special_ids() {
        Some(ids) => println!(
            "pad/bos/eos: {} {} {} (unless sequence.pad_token_id / bos_token_id / eos_token_id say otherwise)",
            ids.pad, ids.bos, ids.eos
        ),
        None => println!(
            "pad/bos/eos: none found by name; set sequence.pad_token_id / bos_token_id / eos_token_id"
        ),
    }
    if let Some(text) = &args.text {
        let ids = tokenizer.encode(text)?;
        let pieces = ids
            .iter()
            .map(|&id| tokenizer.decode(&[id], false).map(|p| format!("{p:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        println!("ids ({}): {ids:?}", ids.len());
        println!("pieces: {}", pieces.join(" "));
    }
    Ok(())
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
    let Some(cache_dir) = &args.cache_dir else {
        anyhow::bail!("give --config, or --input_dir with --cache_dir");
    };
    let spec = args.source.spec(&args.input_dir);
    let vocab_size = match args.vocab_size {
        Some(v) => v,
        None => vishwam::config::Config::load(None, &[])?.model.vocab_size,
    };
    let chosen = vishwam::train::choose_tokenizer(
        args.tokenizer.as_deref(),
        vocab_size,
        &[],
        std::slice::from_ref(&spec),
        // The default config asks for no ids: pad 0, bos 1, eos 2.
        vishwam::train::AskedSpecialIds::default(),
    )?;
    println!(
        "tokenizer: {} ({} tokens, hash {})",
        chosen.description,
        chosen.tokenizer.vocab_size(),
        &chosen.tokenizer.hash()[..12]
    );
    let tokenizer = chosen.tokenizer;
    if args.vocab_size.is_some() {
        tokenizer.check_model_vocab(vocab_size)?;
    }
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
