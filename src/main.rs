//! The `vishwam` command.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use vishwam::data::cli::{run_data, run_tokenizer, DataArgs, TokenizerArgs};

/// vishwam: train language models on real XLA.
#[derive(Debug, Parser)]
#[command(name = "vishwam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train tokenizers.
    Tokenizer(TokenizerArgs),
    /// Prepare, merge and verify token datasets.
    Data(DataArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Tokenizer(args) => run_tokenizer(&args),
        Command::Data(args) => run_data(&args),
    }
}
