//! `vishwam generate`: continue prompts with a trained checkpoint, printing tokens as they come.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use vishwam::data::TextTokenizer;
use vishwam::generate::{self, LoadedModel, RuntimeSelection, SamplingOptions, TextStream};
use vishwam::runtime::Platform;

/// Where the model and its tokenizer come from, and where it runs (shared with `eval`).
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A checkpoint directory (step_NNNNNNNN), a run's output directory (its newest
    /// checkpoint), or `RUN/checkpoints/latest` (the newest checkpoint). `--model` is another
    /// name for it.
    #[arg(long, visible_alias = "model")]
    pub checkpoint: PathBuf,
    /// The tokenizer to use: a tokenizer.json path or a name (o200k_base); default: the one
    /// `vishwam train` saved with the run.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Platform (cpu, cuda, tpu); default: the run's runtime.platform.
    #[arg(long)]
    pub platform: Option<String>,
    /// PJRT plugin path, overriding discovery.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
}

impl ModelArgs {
    /// Loads the checkpoint onto one device and its tokenizer.
    pub fn open(&self) -> anyhow::Result<(LoadedModel, TextTokenizer)> {
        let runtime = RuntimeSelection {
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            plugin: self.plugin.clone(),
        };
        let model = LoadedModel::open(&self.checkpoint, &runtime)?;
        let (dir, step) = model.checkpoint().context("the model has no checkpoint")?;
        let path = match &self.tokenizer {
            Some(p) => PathBuf::from(p),
            None => generate::find_tokenizer(dir, model.config())?,
        };
        let tokenizer = TextTokenizer::load(&path.to_string_lossy())?;
        tokenizer.check_model_vocab(model.config().model.vocab_size)?;
        let m = &model.config().model;
        tracing::info!(
            "loaded {} (step {step}): {} layers x {} wide, vocab {}, {:?} compute, KV cache {:?}; tokenizer {}",
            dir.display(),
            m.num_layers,
            m.hidden_dim,
            m.vocab_size,
            model.compute_dtype(),
            model.kv_cache_format(),
            path.display()
        );
        Ok((model, tokenizer))
    }
}

/// Arguments of `vishwam generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text; repeat for a batch (an empty prompt starts a new document).
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// New tokens at most (default: the run's sequence.max_length); generation also stops
    /// when prompt plus new tokens fill model.max_seq_len.
    #[arg(long = "max_length", alias = "max-length")]
    max_length: Option<usize>,
    /// EOS cannot end generation before this many new tokens (default: sequence.min_length).
    #[arg(long = "min_length", alias = "min-length")]
    min_length: Option<usize>,
    /// Sampling temperature (> 0; 0 means greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep the smallest set of likeliest tokens with this much probability (0 < p <= 1).
    #[arg(long = "top_p", alias = "top-p", default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k likeliest tokens (0: off).
    #[arg(long = "top_k", alias = "top-k", default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pick the likeliest token every step.
    #[arg(long)]
    greedy: bool,
    /// Store the KV cache in f8E4M3 with per-head scales (true) or in the compute dtype
    /// (false); default: the run's memory.kv_cache_fp8.
    #[arg(long = "kv_cache_fp8", alias = "kv-cache-fp8")]
    kv_cache_fp8: Option<bool>,
}

/// Runs `vishwam generate`.
pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let (mut model, tokenizer) = args.model.open()?;
    if let Some(fp8) = args.kv_cache_fp8 {
        model.set_kv_cache_fp8(fp8);
    }
    let cfg = model.config().clone();
    let eos = generate::eos_id(&cfg, &tokenizer);
    let defaults = SamplingOptions::from_config(&cfg);
    let opts = SamplingOptions {
        max_length: args.max_length.unwrap_or(defaults.max_length),
        min_length: args.min_length.unwrap_or(defaults.min_length),
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        greedy: args.greedy,
        seed: args.seed,
        eos_token_id: eos,
    };
    let mut prompts = Vec::new();
    for text in &args.prompt {
        let mut ids = generate::encode(&tokenizer, text)?;
        if ids.is_empty() {
            ids.push(eos.context(
                "an empty prompt starts a new document, but the tokenizer names no EOS token; give some prompt text",
            )?);
        }
        prompts.push(ids);
    }
    let stdout = std::io::stdout();
    let (out, timings) = if prompts.len() == 1 {
        let mut lock = stdout.lock();
        write!(lock, "{}", args.prompt[0])?;
        lock.flush()?;
        let mut stream = TextStream::new(&tokenizer);
        let mut failure = None;
        let result =
            model.generate_streaming(&prompts, &opts, |_, token| match stream.push(token) {
                Ok(text) => {
                    let _ = write!(lock, "{text}").and_then(|_| lock.flush());
                }
                Err(e) => failure = Some(e),
            })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        writeln!(lock)?;
        result
    } else {
        let result = model.generate_streaming(&prompts, &opts, |_, _| {})?;
        let mut lock = stdout.lock();
        for (i, (text, tokens)) in args.prompt.iter().zip(&result.0).enumerate() {
            let mut stream = TextStream::new(&tokenizer);
            for &t in tokens {
                stream.push(t)?;
            }
            writeln!(lock, "[{i}] {text}{}", stream.text()?)?;
        }
        result
    };
    let generated: usize = out.iter().map(Vec::len).sum();
    let stopped = out
        .iter()
        .filter(|row| eos.is_some() && row.last().copied() == eos)
        .count();
    tracing::info!(
        "{generated} new tokens ({stopped} of {} rows ended at EOS); compile {:.2}s, prefill {:.1} ms, decode {:.1} tokens/s ({} steps)",
        out.len(),
        timings.compile,
        timings.prefill * 1e3,
        generated as f64 / timings.decode.max(1e-9),
        timings.decode_steps
    );
    Ok(ExitCode::SUCCESS)
}
