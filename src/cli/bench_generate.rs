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
    /// Also decode greedily with the Candle CPU reference (no KV cache: it recomputes the
    /// sequence for every token) and report the tokens/s ratio.
    #[arg(long)]
    candle: bool,
}

/// Greedy decoding with the Candle reference: prefill seconds, decode seconds per step.
fn candle_greedy(
    model: &vishwam::reference::ReferenceModel,
    prompts: &[Vec<i32>],
    new_tokens: usize,
) -> anyhow::Result<(f64, f64)> {
    let b = prompts.len();
    let mut seqs: Vec<Vec<i32>> = prompts.to_vec();
    let (mut prefill, mut decode) = (0.0, 0.0);
    for step in 0..new_tokens {
        let len = seqs[0].len();
        let flat: Vec<i32> = seqs.iter().flatten().copied().collect();
        let t = std::time::Instant::now();
        let logits = model.logits(&flat, b, len)?;
        let last = logits
            .narrow(1, len - 1, 1)?
            .squeeze(1)?
            .argmax(1)?
            .to_vec1::<u32>()?;
        let dt = t.elapsed().as_secs_f64();
        if step == 0 {
            prefill = dt;
        } else {
            decode += dt;
        }
        for (s, &tok) in seqs.iter_mut().zip(&last) {
            s.push(tok as i32);
        }
    }
    Ok((prefill, decode / (new_tokens.max(2) - 1) as f64))
}

/// Runs the benchmark: for each batch size, greedy and sampled decoding.
pub fn run(args: &GenerateBenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = RuntimeSelection {
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        plugin: args.plugin.clone(),
    };
    let (mut model, host_params) = match &args.checkpoint {
        Some(dir) => {
            let model = LoadedModel::open(dir, &runtime)?;
            let params: std::collections::BTreeMap<String, vishwam::engine::HostArray> = if args
                .candle
            {
                let ck =
                    vishwam::train::checkpoint::load(&vishwam::generate::find_checkpoint(dir)?)?;
                vishwam::train::state::params_of(&ck.state)
            } else {
                Default::default()
            };
            (model, params)
        }
        None => {
            let cfg = Config::load(args.config.as_deref(), &args.sets)?;
            let params = vishwam::model::init_params(&cfg.model, cfg.training.seed);
            let engine = open_engine(&cfg, &runtime)?;
            (LoadedModel::new(cfg, &params, engine)?, params)
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
    let candle = if args.candle {
        Some(vishwam::reference::ReferenceModel::from_host_arrays(
            m,
            &host_params,
            vishwam::reference::ReferenceDtype::F32,
        )?)
    } else {
        None
    };
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
            if let (Some(reference), true) = (&candle, name == "greedy") {
                let (c_prefill, c_step) = candle_greedy(reference, &prompts, new_tokens)?;
                println!(
                    "batch {b}, greedy, candle reference (cpu, f32, no KV cache): prefill {:.2} ms; decode {:.3} ms/step, {:.0} tokens/s -> vishwam decode is {:.2}x faster",
                    c_prefill * 1e3,
                    c_step * 1e3,
                    b as f64 / c_step,
                    c_step / per_step
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
