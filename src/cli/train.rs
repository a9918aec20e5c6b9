//! `vishwam train`: the main job.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::generate::{eos_id, LoadedModel, SamplingOptions};
use vishwam::runtime::Client;
use vishwam::train::auto_precision::{resolve_precision, PrecisionRequest};
use vishwam::train::{
    batch_geometry, open_engine, run_training, InitWeights, RunOptions, Trainer, TrainingData,
};
use vishwam_mesh::{Mesh, ShardingPlan};

use super::ConfigArgs;

/// Arguments of `vishwam train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The config, its overrides and the runtime (shared with `verify` and the benchmarks).
    #[command(flatten)]
    pub run: ConfigArgs,
    /// Continue from the newest checkpoint in <output_dir>/checkpoints (exactly: the
    /// optimiser state, step, random state and data position are restored). With
    /// --init-from: continue the fine-tuning run if it has a checkpoint, else start it.
    /// A run that starts fresh (no --resume, or nothing to resume) first moves an earlier
    /// run's checkpoints and metrics in the output directory to OUTPUT_DIR/earlier-<UTC time>/.
    #[arg(long, conflicts_with = "resume_from")]
    pub resume: bool,
    /// Continue exactly from this checkpoint directory (RUN/checkpoints/step_NNNNNNNN), not
    /// only the newest; the config's model, data and sequence sections must be those it was
    /// written with. The output directory must hold no later checkpoints.
    #[arg(
        long = "resume-from",
        alias = "resume_from",
        value_name = "CHECKPOINT_DIR"
    )]
    pub resume_from: Option<PathBuf>,
    /// Start from these weights instead of a random initialisation: a vishwam run directory
    /// (its newest checkpoint), a checkpoint directory, a Hugging Face Llama directory, or a
    /// model id (`google/gemma-7b`, or `gemma-7b` when one cached model has that name) looked
    /// up offline in the local Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub). The model section comes from the weights where the config names no model key (a
    /// named architecture key must match them; dropout, max_seq_len, rope_scaling and the MoE
    /// routing regularisers may differ); the tokenizer is theirs unless data.tokenizer is set;
    /// the weights are resharded onto this run's mesh; the optimiser state and the step
    /// start fresh; the data and training sections are this config's. The model's
    /// max_seq_len also comes from the weights (from a Hugging Face directory:
    /// max_position_embeddings, e.g. 131072), and sequence.max_length defaults to it, so the
    /// training windows are the full context unless you set a shorter one with
    /// `--set sequence.max_length=N`. PATH must lie outside this run's logging.output_dir.
    #[arg(
        long = "init-from",
        alias = "init_from",
        value_name = "PATH",
        conflicts_with = "resume_from"
    )]
    pub init_from: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Trace optimizer steps N to M (1-based, inclusive) once, besides logging.profile_every's
    /// windows: the plugin's device and host activity (PJRT profiler extension, where the
    /// plugin has one) and vishwam's host spans, written to
    /// OUTPUT_DIR/plugins/profile/<time>/<host>.xplane.pb (tensorboard --logdir OUTPUT_DIR,
    /// Profile tab) and OUTPUT_DIR/profile/steps_N-M.trace.json.gz (Perfetto).
    #[arg(long = "profile-steps", alias = "profile_steps", value_name = "N:M")]
    pub profile_steps: Option<vishwam::train::trace::StepRange>,
    /// Train on this prepared dataset (made by `vishwam data prepare` or `vishwam data merge`,
    /// recognised by its manifest.json) instead of data.source / datasets.paths; its own
    /// tokenizer.json is the run's tokenizer unless data.tokenizer names one with the same hash.
    #[arg(long = "data_cache_dir", alias = "data-cache-dir", value_name = "DIR")]
    pub data_cache_dir: Option<PathBuf>,
    /// The precision, overriding the config's precision keys: auto (by the device: bf16 +
    /// FP8 matmuls on NVIDIA compute capability 9.0 and newer, bf16 on 8.x and on TPUs, f16
    /// with a dynamic loss scale on older GPUs, f32 on the CPU), f32, bf16, f16 (dynamic loss
    /// scale) or fp8 (bf16 + FP8 matmuls). Without it, a config that names none of the
    /// precision keys (tpu.use_bfloat16, optimization.mixed_precision, use_dynamic_scale,
    /// use_fp8 and the fp8_* keys) gets auto; one that names any runs as written.
    #[arg(long, value_name = "auto|f32|bf16|f16|fp8", value_parser = PrecisionRequest::parse)]
    pub precision: Option<PrecisionRequest>,
    /// Check the setup and exit without training: the config, the plugin, the devices, the
    /// precision, the data and the tokenizer; then compile the step, compare its compiled
    /// memory with the device's, and run one optimiser step on a real batch. One line per
    /// check, then `setup valid` (exit 0) or `setup invalid: ...` (exit 1). Writes nothing
    /// into logging.output_dir (no checkpoint, metrics or tokenizer); the compile cache and
    /// the tokenized-data cache under $VISHWAM_HOME fill as for any run.
    #[arg(
        long = "validate-setup",
        alias = "validate_setup",
        conflicts_with_all = ["resume", "resume_from"]
    )]
    pub validate_setup: bool,
    /// `--target-hours H`: plan the run (as `vishwam plan`) and train the plan. Its
    /// `--memory-gib N` also sets the budget that `--validate-setup` checks the step against.
    #[command(flatten)]
    pub plan: super::plan::PlanFlags,
    /// Run as one process of a multi-process job (--coordinator, --num-processes,
    /// --process-id, or RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, SLURM_PROCID /
    /// SLURM_NTASKS, JAX_COORDINATOR_ADDRESS). The processes join through process 0's store
    /// and the mesh spans every process's devices; each process feeds its rows of every
    /// batch to its own devices and writes its shards of each checkpoint (the output
    /// directory must be on a filesystem every process sees); process 0 alone writes the
    /// metrics and prints the progress. Ctrl-C ends a process at once (the others stop with
    /// an error): resume from the last checkpoint. On the CPU plugin the run stops at the
    /// check that the plugin can run a program over every process's devices (it cannot).
    #[command(flatten)]
    pub process: vishwam::distributed::ProcessFlags,
}

impl TrainArgs {
    /// Finishes a loaded config: `--data_cache_dir`'s prepared dataset replaces the training
    /// data.
    fn finish_config(&self, cfg: &mut Config) -> anyhow::Result<()> {
        match &self.data_cache_dir {
            Some(dir) => train_on_prepared_dataset(cfg, dir),
            None => Ok(()),
        }
    }

    /// The config of a training run and, with --init-from, the weights it starts from (the
    /// model section and the tokenizer come from them where the config names none);
    /// `runtime.platform` "auto" becomes the platform it picks (logged).
    pub fn load_run(&self) -> anyhow::Result<(Config, Option<InitWeights>)> {
        let (mut cfg, init) = self.load_run_as_written()?;
        vishwam::train::resolve_platform(&mut cfg, self.run.plugin.as_deref())?;
        Ok((cfg, init))
    }

    /// The `--set` overrides with `--platform` and `--devices`. In a multi-process job the
    /// config describes the whole job, so `--devices` (each process's devices) becomes
    /// `runtime.devices` = that times the processes.
    fn run_sets(&self) -> anyhow::Result<Vec<String>> {
        let devices = match super::multiprocess::spec_of(&self.process)? {
            Some(spec) => self.run.devices.map(|d| d * spec.num_processes),
            None => self.run.devices,
        };
        Ok(self.run.sets_with_devices(devices))
    }

    /// [`TrainArgs::load_run`] with `runtime.platform` as written ("auto" stays).
    pub fn load_run_as_written(&self) -> anyhow::Result<(Config, Option<InitWeights>)> {
        let Some(path) = &self.init_from else {
            let sets = self.run_sets()?;
            let mut cfg = Config::load(self.run.config.as_deref(), &sets)?;
            self.finish_config(&mut cfg)?;
            return Ok((cfg, None));
        };
        let weights = InitWeights::load(path)?;
        let (mut cfg, named) =
            weights.resolve_config(self.run.config.as_deref(), &self.run_sets()?)?;
        weights.check_outside(std::path::Path::new(&cfg.logging.output_dir))?;
        self.finish_config(&mut cfg)?;
        let m = &weights.model;
        tracing::info!(
            "--init-from {}: {} layers x {} wide, vocab {}; model section from the weights{}",
            weights.source,
            m.num_layers,
            m.hidden_dim,
            m.vocab_size,
            match named.in_section("model").count() {
                0 => String::new(),
                n => format!(" ({n} model key(s) named by the config, checked against them)"),
            }
        );
        if !weights.extra.is_empty() {
            tracing::info!(
                "--init-from: not part of the model, left out: {}",
                weights.extra.join(", ")
            );
        }
        Ok((cfg, Some(weights)))
    }

    /// Applies `--precision`, or the hardware-aware choice where the config file and `--set`
    /// name no precision key, for the devices of `client`, and logs what was chosen and why;
    /// returns that line (`None`: the config's precision keys stand).
    pub fn apply_precision(
        &self,
        cfg: &mut Config,
        client: &Client,
    ) -> anyhow::Result<Option<String>> {
        let named = vishwam::config::NamedKeys::of(self.run.config.as_deref(), &self.run_sets()?)?;
        let line = resolve_precision(cfg, self.precision, &named, client)?;
        if let Some(line) = &line {
            tracing::info!("{line}");
        }
        Ok(line)
    }
}

/// Makes the prepared dataset `dir` the training data of `cfg` (`--data_cache_dir`).
fn train_on_prepared_dataset(cfg: &mut Config, dir: &std::path::Path) -> anyhow::Result<()> {
    if !vishwam::data::manifest::is_prepared_dataset(dir) {
        anyhow::bail!(
            "--data_cache_dir {} is not a prepared dataset (it has no manifest.json written by \
             `vishwam data prepare` or `vishwam data merge`); prepare one with \
             `vishwam data prepare --input_dir TEXT --cache_dir {}`",
            dir.display(),
            dir.display()
        );
    }
    if cfg.data.source.is_some() || !cfg.datasets.paths.is_empty() {
        tracing::info!(
            "--data_cache_dir {} replaces the config's data.source / datasets.paths",
            dir.display()
        );
    }
    cfg.data.source = Some(vishwam::config::DataSource::Paths(vec![dir
        .to_string_lossy()
        .into_owned()]));
    cfg.datasets = vishwam::config::DatasetsConfig::default();
    Ok(())
}

/// Runs training as the config says, then prints validation perplexity and a sample.
pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let job = super::multiprocess::spec_of(&args.process)?;
    if args.validate_setup {
        if job.is_some() {
            anyhow::bail!(
                "--validate-setup checks a single-process run; for a multi-process job, run \
                 `vishwam doctor` with the same --coordinator / --num-processes / --process-id"
            );
        }
        return super::validate_setup::run(args);
    }
    let started = std::time::Instant::now();
    let (cfg, init) = args.load_run()?;
    let mut cfg = planned(args, cfg, init.is_some(), started)?;
    if let Some(range) = args.profile_steps {
        range.check_within(0, cfg.training.max_steps as u64)?;
    }
    if let Some(teacher) = &cfg.distillation.teacher_model {
        anyhow::bail!(
            "distillation.teacher_model is set ({teacher}): run `vishwam distill` with the same arguments to distil it into this model, or set it to null to train without a teacher"
        );
    }
    let distillation_keys = cfg.distillation.keys_set();
    if !distillation_keys.is_empty() {
        tracing::warn!(
            "{} set without distillation.teacher_model: the distillation keys apply only to \
             `vishwam distill` with a teacher; `vishwam train` trains on the labels alone",
            distillation_keys.join(", ")
        );
    }
    if let Some(d) = &cfg.description {
        tracing::info!("{d}");
    }
    if let Some(spec) = &job {
        return super::multiprocess_train::train(args, cfg, init, spec);
    }
    let (engine, plan) = open_engine(&cfg, args.run.plugin.clone())?;
    args.apply_precision(&mut cfg, &engine.client)?;
    let cfg = resolve_batch_size(cfg, &engine, &plan)?;
    let mut data = open_data(&cfg, &plan)?;
    log_model(&cfg, &plan);
    let mut trainer = Trainer::new(&cfg, engine, plan)?;
    init_from(&mut trainer, init.as_ref(), &data)?;
    let deadline = args.plan.target_hours.map(|hours| {
        let budget = hours * 3600.0 * (1.0 - vishwam::plan::FINAL_FRACTION);
        started + std::time::Duration::from_secs_f64(budget)
    });
    run_loop(args, trainer, &mut data, deadline)
}

/// With `--target-hours`, the planned config in place of `cfg` (the plan's table logged);
/// without it, `cfg` (a planning flag alone is an error).
fn planned(
    args: &TrainArgs,
    cfg: Config,
    init_from: bool,
    started: std::time::Instant,
) -> anyhow::Result<Config> {
    args.plan.refuse_without_target("vishwam train")?;
    if args.plan.target_hours.is_none() {
        return Ok(cfg);
    }
    if init_from || args.resume || args.resume_from.is_some() {
        anyhow::bail!(
            "--target-hours plans a new model from scratch; it cannot be combined with \
             --init-from, --resume or --resume-from (plan once with `vishwam plan --out \
             plan.json`, then resume with `vishwam train --config plan.json --resume`)"
        );
    }
    let plan = super::plan::plan_config(&cfg, &args.plan, args.run.plugin.clone(), Some(started))?;
    for line in plan.table().lines() {
        tracing::info!("plan: {line}");
    }
    Ok(plan.config)
}

/// `cfg` with `training.batch_size` "auto" resolved on the engine's devices (logged), or
/// `cfg` as it is.
pub fn resolve_batch_size(
    cfg: Config,
    engine: &Engine,
    plan: &ShardingPlan,
) -> anyhow::Result<Config> {
    if !cfg.training.batch_size_is_auto() {
        return Ok(cfg);
    }
    let (resolved, _) = vishwam::plan::resolve_auto_batch(&cfg, engine, plan)?;
    tracing::info!("global batch: {}", batch_geometry(&resolved, plan));
    Ok(resolved)
}

/// With --init-from, checks the tokenizer and puts the weights in place of the
/// initialisation (a later --resume or --resume-from replaces them with the checkpoint's).
pub fn init_from(
    trainer: &mut Trainer,
    weights: Option<&InitWeights>,
    data: &TrainingData,
) -> anyhow::Result<()> {
    if let Some(w) = weights {
        w.check_tokenizer(&data.tokenizer)?;
        trainer.init_from(w)?;
        tracing::info!(
            "initialised from {}; optimiser state and step start fresh",
            w.source
        );
    }
    Ok(())
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
/// and a sample (seeded nucleus sampling, see [`print_sample`]).
pub fn run_loop(
    args: &TrainArgs,
    mut trainer: Trainer,
    data: &mut TrainingData,
    deadline: Option<std::time::Instant>,
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
        resume_from: args.resume_from.clone(),
        progress: !args.no_progress,
        stop,
        profile_steps: args.profile_steps,
        deadline,
    };
    let summary = run_training(&mut trainer, data, &opts)?;
    // Drawn after the checkpoint is saved: a failure loses nothing, is printed with the
    // summary and makes the exit status 1 (130 after a Ctrl-C).
    let plot = super::plot::write_loss_plot(&trainer.config);
    let first = summary.losses.first().copied().unwrap_or(f32::NAN);
    let last = summary.losses.last().copied().unwrap_or(f32::NAN);
    println!(
        "trained steps {}..{}: loss {first:.4} -> {last:.4}, {:.0} tokens/s",
        summary.start_step, summary.steps, summary.tokens_per_second
    );
    println!(
        "logging and monitoring: {:.3}% of the step loop ({:.1} ms in {:.1} s after the first step)",
        100.0 * summary.logging_fraction(),
        1e3 * summary.logging_seconds,
        summary.loop_seconds
    );
    print_validation_and_checkpoint(&summary);
    if summary.reached_deadline {
        println!(
            "stopped at the time budget after {} of {} planned steps: the steps ran slower \
             than the plan measured",
            summary.steps, trainer.config.training.max_steps
        );
    }
    match &plot {
        Ok(png) => println!("loss plot: {}", png.display()),
        Err(e) => eprintln!(
            "error: drawing the loss plot: {e:#}; the run is saved (draw it again with `vishwam plot {}`)",
            trainer.config.logging.output_dir
        ),
    }
    if summary.interrupted {
        println!("stopped by Ctrl-C; continue with --resume");
        return Ok(ExitCode::from(130));
    }
    print_sample(trainer, data)?;
    Ok(match plot {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

/// Nucleus sampling for the sample printed after a run: the smallest set of tokens holding
/// 90% of the probability, at temperature 0.8 (a greedy loop repeats itself on small models:
/// `the same of the same of ...`).
const SAMPLE_TOP_P: f32 = 0.9;
/// Temperature of the printed sample.
const SAMPLE_TEMPERATURE: f32 = 0.8;
/// New tokens in the printed sample (fewer when the prompt plus these would pass
/// `model.max_seq_len`, or at EOS).
const SAMPLE_TOKENS: usize = 40;

/// Prints `sample (top-p 0.9, T 0.8, seed S): PROMPT|CONTINUATION`: the first tokens of the
/// validation text (or BOS) continued by the generation module's seeded nucleus sampling on
/// one device, seeded from `training.seed` so the same run prints the same sample.
fn print_sample(trainer: Trainer, data: &TrainingData) -> anyhow::Result<()> {
    let config = trainer.config.clone();
    let prompt_tokens = 8.min(config.seq_len() / 2).max(1);
    let prompt = data.sample_prompt(prompt_tokens);
    let params = trainer.params_to_host()?;
    let engine = Engine::new(
        trainer.engine.client.clone(),
        Mesh::single(),
        trainer.engine.cache.clone(),
    )?;
    // The sharded training state is no longer needed; free it before the sampler's copy.
    drop(trainer);
    let options = SamplingOptions {
        max_length: SAMPLE_TOKENS,
        temperature: SAMPLE_TEMPERATURE,
        top_p: SAMPLE_TOP_P,
        seed: config.training.seed,
        eos_token_id: eos_id(&config, &data.tokenizer),
        ..SamplingOptions::default()
    };
    let mut model = LoadedModel::new(config, &params, engine)?;
    let continuation = model
        .generate(std::slice::from_ref(&prompt), &options)?
        .pop()
        .unwrap_or_default();
    let to_u32 = |v: &[i32]| v.iter().map(|&t| t as u32).collect::<Vec<_>>();
    println!(
        "sample (top-p {SAMPLE_TOP_P}, T {SAMPLE_TEMPERATURE}, seed {}): {}|{}",
        options.seed,
        data.tokenizer.decode(&to_u32(&prompt), true)?,
        data.tokenizer.decode(&to_u32(&continuation), true)?
    );
    Ok(())
}

/// The closing lines of a run: the final validation and the last checkpoint, where there are.
pub(super) fn print_validation_and_checkpoint(summary: &vishwam::train::RunSummary) {
    if let Some(v) = summary.validation {
        println!(
            "validation: loss {:.4}, perplexity {:.2}, token accuracy {:.4} ({} tokens)",
            v.loss, v.perplexity, v.accuracy, v.tokens
        );
    }
    if let Some(dir) = &summary.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
}
