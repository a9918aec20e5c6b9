//! `vishwam train`: the main job.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vishwam::config::Config;
use vishwam::train::{
    batch_geometry, open_engine, run_training, RunOptions, Trainer, TrainingData,
};
use vishwam_mesh::ShardingPlan;

/// Arguments of `vishwam train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// JSON config, merged over the defaults (configs/default.json lists every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key: `--set training.learning_rate=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Platform (auto, cpu, cuda, tpu); overrides runtime.platform (default auto).
    #[arg(long)]
    pub platform: Option<String>,
    /// Devices; overrides runtime.devices (cpu: virtual devices).
    #[arg(long)]
    pub devices: Option<usize>,
    /// PJRT plugin path, overriding discovery.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Continue from the newest checkpoint in <output_dir>/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainArgs {
    /// The config with the command-line overrides applied.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let mut sets = self.sets.clone();
        if let Some(p) = &self.platform {
            sets.push(format!("runtime.platform={p}"));
        }
        if let Some(d) = self.devices {
            sets.push(format!("runtime.devices={d}"));
        }
        let mut cfg = Config::load(self.config.as_deref(), &sets)?;
        vishwam::train::resolve_platform(&mut cfg, self.plugin.as_deref())?;
        Ok(cfg)
    }
}

/// Runs training as the config says, then prints validation perplexity and a sample.
pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.load_config()?;
    if let Some(teacher) = &cfg.distillation.teacher_model {
        anyhow::bail!(
            "distillation.teacher_model is set ({teacher}): run `vishwam distill` with the same arguments to distil it into this model, or set it to null to train without a teacher"
        );
    }
    if let Some(d) = &cfg.description {
        tracing::info!("{d}");
    }
    let (engine, plan) = open_engine(&cfg, args.plugin.clone())?;
    let mut data = open_data(&cfg, &plan)?;
    log_model(&cfg, &plan);
    let trainer = Trainer::new(&cfg, engine, plan)?;
    run_loop(args, trainer, &mut data)
}

/// The training data of `cfg` in batches for `plan`'s mesh, with its tokenizer saved into the
/// run's output directory.
pub fn open_data(cfg: &Config, plan: &ShardingPlan) -> anyhow::Result<TrainingData> {
    let data = TrainingData::open(cfg, batch_geometry(cfg, plan))?;
    let out = PathBuf::from(&cfg.logging.output_dir);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    data.tokenizer.save(&out.join("tokenizer.json"))?;
    Ok(data)
}

/// Logs the model's shape and size.
pub fn log_model(cfg: &Config, plan: &ShardingPlan) {
    let (total, non_embedding) = vishwam::model::param_counts(&cfg.model);
    tracing::info!(
        "model: {} layers x {} wide, {:.2}M parameters ({:.2}M without embeddings); {} tokens per step",
        cfg.model.num_layers,
        cfg.model.hidden_dim,
        total as f64 / 1e6,
        non_embedding as f64 / 1e6,
        batch_geometry(cfg, plan).global_batch() * cfg.seq_len()
    );
}

/// The loop with progress, metrics, evaluation, checkpoints and Ctrl-C, then the summary
/// and a greedy sample.
pub fn run_loop(
    args: &TrainArgs,
    mut trainer: Trainer,
    data: &mut TrainingData,
) -> anyhow::Result<ExitCode> {
    tracing::info!(
        "compiled the train step in {:.1}s ({:?})",
        trainer.program.compile_seconds,
        trainer.program.cache_outcome
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "Ctrl-C: finishing this step and saving a checkpoint (press again to quit at once)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    let opts = RunOptions {
        resume: args.resume,
        progress: !args.no_progress,
        stop,
    };
    let summary = run_training(&mut trainer, data, &opts)?;
    let first = summary.losses.first().copied().unwrap_or(f32::NAN);
    let last = summary.losses.last().copied().unwrap_or(f32::NAN);
    println!(
        "trained steps {}..{}: loss {first:.4} -> {last:.4}, {:.0} tokens/s",
        summary.start_step, summary.steps, summary.tokens_per_second
    );
    if let Some(v) = summary.validation {
        println!(
            "validation: loss {:.4}, perplexity {:.2} ({} tokens)",
            v.loss, v.perplexity, v.tokens
        );
    }
    if let Some(dir) = &summary.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
    if summary.interrupted {
        println!("stopped by Ctrl-C; continue with --resume");
        return Ok(ExitCode::from(130));
    }
    let prompt = data.sample_prompt(8);
    let continuation = trainer.greedy(&prompt, 40)?;
    let to_u32 = |v: &[i32]| v.iter().map(|&t| t as u32).collect::<Vec<_>>();
    println!(
        "sample (greedy): {}|{}",
        data.tokenizer.decode(&to_u32(&prompt), true)?,
        data.tokenizer.decode(&to_u32(&continuation), true)?
    );
    Ok(ExitCode::SUCCESS)
}
