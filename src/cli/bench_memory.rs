//! `vishwam bench memory`: the Pufferfish memory table, measured by compiled memory.

use super::RuntimeArgs;
use std::process::ExitCode;
use vishwam::config::Config;
use vishwam::plan::techniques::{format_table, memory_table};
use vishwam::plan::MemoryProbe;
use vishwam::runtime::CompileCache;

/// Arguments of `vishwam bench memory`.
#[derive(clap::Args, Debug)]
pub struct MemoryBenchArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Depths to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [12, 24, 30])]
    layers: Vec<usize>,
    /// Hidden width.
    #[arg(long, default_value_t = 768)]
    hidden: usize,
    /// Query heads (GQA keeps a quarter of them as KV heads).
    #[arg(long, default_value_t = 16)]
    heads: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 32000)]
    vocab: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

/// Runs the benchmark.
pub fn run(args: &MemoryBenchArgs) -> anyhow::Result<ExitCode> {
    let platform = args.runtime.platform()?;
    let client = args.runtime.open_on(platform)?;
    let mut cfg = Config::default();
    cfg.runtime.platform = match platform {
        vishwam::runtime::Platform::Cpu => vishwam::config::Platform::Cpu,
        vishwam::runtime::Platform::Cuda => vishwam::config::Platform::Cuda,
        vishwam::runtime::Platform::Tpu => vishwam::config::Platform::Tpu,
    };
    let m = &mut cfg.model;
    m.hidden_dim = args.hidden;
    m.num_heads = args.heads;
    m.vocab_size = args.vocab;
    m.max_seq_len = args.seq_len;
    cfg.training.batch_size = args.batch_size;
    cfg.validate()?;
    println!(
        "compiled train-step memory per device on {} ({}): {} wide, {} heads, mlp {}, vocab {}, \
         {} sequences of {} tokens, AdamW",
        platform.name(),
        client
            .devices()
            .first()
            .map(|d| d.kind())
            .transpose()?
            .unwrap_or_default(),
        args.hidden,
        args.heads,
        cfg.model.mlp_dim(),
        args.vocab,
        args.batch_size,
        args.seq_len
    );
    let mut probe = MemoryProbe::new(client, 1, CompileCache::default_dir())?;
    let rows = memory_table(&mut probe, &cfg, &args.layers)?;
    print!("{}", format_table(&rows));
    println!(
        "({} steps compiled in {:.1}s; arguments + outputs - donated + temporaries)",
        probe.compiles, probe.compile_seconds
    );
    Ok(ExitCode::SUCCESS)
}
