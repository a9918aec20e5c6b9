//! `vishwam bench generate`: prefill time and decode throughput of the KV-cache generator.

use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;
use vishwam::config::Config;
use vishwam::generate::{open_engine, LoadedModel, RuntimeSelection, SamplingOptions};
use vishwam::runtime::Platform;

/// Arguments of `vishwam bench generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateBenchArgs {
    /// JSON config of the model, with seeded initial parameters (default: the built-in
    /// default model).
    #[arg(long, conflicts_with = "checkpoint")]
    config: Option<PathBuf>,
    /// Override a config key: `--set memory.kv_cache_fp8=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "checkpoint")]
    sets: Vec<String>,
    /// A checkpoint (or run) directory to load instead of a config.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Platform (cpu, cuda, tpu); default: the config's runtime.platform.
    #[arg(long)]
    platform: Option<String>,
    /// PJRT plugin path, overriding discovery.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Prompt tokens per row.
    #[arg(long = "prompt-len", default_value_t = 64)]
    prompt_len: usize,
    /// New tokens per row (EOS never stops a row here).
    #[arg(long = "new-tokens", default_value_t = 64)]
    new_tokens: usize,
    /// Timed repetitions after one warm-up run (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Runs the benchmark: for each batch size, greedy and sampled decoding.
pub fn run(args: &GenerateBenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = RuntimeSelection {
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        plugin: args.plugin.clone(),
    };
    let mut model = match &args.checkpoint {
        Some(dir) => LoadedModel::open(dir, &runtime)?,
        None => {
            let cfg = Config::load(args.config.as_deref(), &args.sets)?;
            let params = vishwam::model::init_params(&cfg.model, cfg.training.seed);
            let engine = open_engine(&cfg, &runtime)?;
            LoadedModel::new(cfg, &params, engine)?
        }
    };
    let cfg = model.config().clone();
    let m = &cfg.model;
    let (total, _) = vishwam::model::param_counts(m);
    println!(
        "model: {} layers x {} wide, {} heads ({} KV), vocab {}, {:.1}M parameters; {:?} compute, KV cache {:?}; platform {}",
        m.num_layers,
        m.hidden_dim,
        m.num_heads,
        m.kv_heads(),
        m.vocab_size,
        total as f64 / 1e6,
        model.compute_dtype(),
        model.kv_cache_format(),
        model.engine().client.platform_name()?,
    );
    anyhow::ensure!(
        args.prompt_len >= 1 && args.prompt_len < m.max_seq_len,
        "--prompt-len must be in [1, {}) (model.max_seq_len)",
        m.max_seq_len
    );
    let new_tokens = args.new_tokens.min(m.max_seq_len - args.prompt_len);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for &b in &args.batch {
        let prompts: Vec<Vec<i32>> = (0..b)
            .map(|_| {
                (0..args.prompt_len)
                    .map(|_| rng.gen_range(0..m.vocab_size as i32))
                    .collect()
            })
            .collect();
        let layout = model.layout(&prompts, new_tokens)?;
        for (name, opts) in [
            (
                "greedy",
                SamplingOptions {
                    max_length: new_tokens,
                    greedy: true,
                    ..SamplingOptions::default()
                },
            ),
            (
                "sampled (T 0.8, top_k 50, top_p 0.95)",
                SamplingOptions {
                    max_length: new_tokens,
                    temperature: 0.8,
                    top_k: 50,
                    top_p: 0.95,
                    ..SamplingOptions::default()
                },
            ),
        ] {
            let (_, warm) = model.generate_streaming(&prompts, &opts, |_, _| {})?;
            let (mut prefill, mut decode) = (f64::INFINITY, f64::INFINITY);
            let mut steps = 0;
            for _ in 0..args.repeat.max(1) {
                let (_, t) = model.generate_streaming(&prompts, &opts, |_, _| {})?;
                prefill = prefill.min(t.prefill);
                decode = decode.min(t.decode);
                steps = t.decode_steps;
            }
            let per_step = decode / steps.max(1) as f64;
            println!(
                "batch {b}, {name}: prefill {} x {} tokens in {:.2} ms ({:.0} tokens/s, chunks of {}); decode {} steps: {:.3} ms/step, {:.0} tokens/s (cache {} slots; compile {:.1}s)",
                b,
                args.prompt_len,
                prefill * 1e3,
                (b * args.prompt_len) as f64 / prefill,
                layout.chunk,
                steps,
                per_step * 1e3,
                b as f64 / per_step,
                layout.cache.len,
                warm.compile,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
