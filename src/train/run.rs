//! The training loop: steps, logging, metrics, evaluation, checkpoints, profiling, Ctrl-C.

use super::checkpoint;
use super::checkpoint::sharded::CheckpointJob;
use super::job::{agree_on_resume, save_sharded_state};
use super::monitor::{DeviceMemory, ResourceMonitor, ResourceSnapshot};
use super::resume::{
    check_batch, check_compatible, refuse_newer_checkpoints, set_earlier_run_aside,
};
use super::step_recorder::StepRecorder;
use super::tensorboard::MetricsLog;
use super::trace::{StepRange, StepTracer, TraceSchedule};
use super::{EvalResult, HostBatch, StepMetrics, StepPipeline, StepTimings, TrainError, Trainer};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where training batches come from.
pub trait BatchSource {
    /// The next training batch (`[accum, micro_batch, seq_len]`).
    fn next_train(&mut self) -> Result<HostBatch, TrainError>;
    /// `count` validation micro-batches (`[1, micro_batch, seq_len]`), the same ones every time.
    fn eval_batches(&mut self, count: usize) -> Result<Vec<HostBatch>, TrainError>;
    /// The position in the stream, saved in checkpoints.
    fn position(&self) -> serde_json::Value;
    /// Continues from a saved position.
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), TrainError>;
    /// Ready batches waiting in a background loader's queue now; `None` for a source that
    /// builds batches on demand (recorded as `data_queue_depth: null`).
    fn queue_depth(&self) -> Option<usize> {
        None
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Continue from the newest checkpoint in `<output_dir>/checkpoints` if there is one. A
    /// run that resumes nothing first moves an earlier run's checkpoints and metrics in the
    /// output directory to `<output_dir>/earlier-<UTC time>/` (logged).
    pub resume: bool,
    /// Continue exactly from this checkpoint directory (`step_NNNNNNNN`), any step of any run
    /// with the same model, data and sequence sections; takes precedence over `resume`.
    pub resume_from: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current step, saving a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Trace these steps once (`--profile-steps N:M`), besides `logging.profile_every`'s.
    pub profile_steps: Option<StepRange>,
    /// A time budget's end for the loop (`vishwam train --target-hours`): no step starts
    /// after it. The run then ends as at `training.max_steps`, with a checkpoint and the
    /// final evaluation, and the summary says so. The plan's step count normally ends the
    /// loop first; this holds the budget when the steps run slower than the plan measured.
    pub deadline: Option<Instant>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            resume: false,
            resume_from: None,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            profile_steps: None,
            deadline: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Optimizer steps completed in total (including those before a resume).
    pub steps: u64,
    /// Step the run started from.
    pub start_step: u64,
    /// Every step's loss in this run, in order.
    pub losses: Vec<f32>,
    /// The last validation result.
    pub validation: Option<EvalResult>,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Mean training tokens per second over the run (excluding the first step).
    pub tokens_per_second: f64,
    /// True when stopped early by the stop flag.
    pub interrupted: bool,
    /// True when the loop ended at [`RunOptions::deadline`] before `training.max_steps`.
    pub reached_deadline: bool,
    /// Seconds the loop spent on logged steps' bookkeeping after the first step: sampling the
    /// resources and writing the records (metrics file, TensorBoard, log line).
    pub logging_seconds: f64,
    /// Seconds of the loop after the first step: the steps, their data waits and the logging.
    pub loop_seconds: f64,
}

impl RunSummary {
    /// The share of the loop's time (after the first step) spent on logging: the overhead of
    /// watching the run.
    pub fn logging_fraction(&self) -> f64 {
        self.logging_seconds / self.loop_seconds.max(1e-9)
    }
}

/// The checkpoint directory of a run.
pub fn checkpoint_root(trainer: &Trainer) -> PathBuf {
    PathBuf::from(&trainer.config.logging.output_dir).join("checkpoints")
}

/// Trains until `training.max_steps`, as the config's `logging` section says.
pub fn run_training(
    trainer: &mut Trainer,
    data: &mut dyn BatchSource,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    run_training_in(trainer, data, opts, None)
}

/// [`run_training`] as one process of a multi-process `job` (`None`: a single-process run).
/// Every process runs every step, evaluation and save with its own rows and shards
/// ([`Trainer::feed_rows`]); only process 0 writes the metrics file, TensorBoard and step
/// traces, logs the steps and shows the progress bar. Process 0 chooses the checkpoint to
/// resume from and tells the others (every process then loads it and places its own
/// shards); checkpoints are written by every process through [`save_sharded`], each distinct
/// shard by the process of its first replica.
pub fn run_training_in(
    trainer: &mut Trainer,
    data: &mut dyn BatchSource,
    opts: &RunOptions,
    job: Option<&dyn CheckpointJob>,
) -> Result<RunSummary, TrainError> {
    let cfg = trainer.config.clone();
    let log = &cfg.logging;
    let leader = job.is_none_or(|j| j.process_id() == 0);
    let out_dir = PathBuf::from(&log.output_dir);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| TrainError::io(format!("creating {}", out_dir.display()), e))?;
    let root = checkpoint_root(trainer);
    let mut summary = RunSummary::default();

    let chosen = match (&opts.resume_from, job) {
        (Some(dir), _) => Some(dir.clone()),
        (None, _) if !opts.resume => None,
        (None, None) => checkpoint::latest(&root),
        // Process 0 chooses (its view of the shared checkpoint directory decides).
        (None, Some(job)) => {
            agree_on_resume(job, leader.then(|| checkpoint::latest(&root)).flatten())?
        }
    };
    let mut resumed = false;
    if opts.resume || opts.resume_from.is_some() {
        if let Some(dir) = chosen {
            let ck = checkpoint::load(&dir)?;
            if opts.resume_from.is_some() {
                refuse_newer_checkpoints(&root, ck.manifest.step)?;
            }
            check_compatible(&ck.manifest.config, &trainer.config.to_json_pretty(), &dir)?;
            let current = super::batch_geometry(&trainer.config, &trainer.plan);
            check_batch(&ck.manifest, current, &dir)?;
            resumed = true;
            trainer.load_state(&ck.state)?;
            data.restore(&ck.manifest.data_position)?;
            summary.start_step = ck.manifest.step;
            tracing::info!("resumed from {} (step {})", dir.display(), ck.manifest.step);
        } else {
            tracing::info!(
                "--resume: no checkpoint in {}; starting from step 0",
                root.display()
            );
        }
    }
    let metrics_path = out_dir.join(&log.metrics_file);
    if !resumed && leader {
        set_earlier_run_aside(&out_dir, &root, &metrics_path)?;
    }
    if let Some(job) = job {
        // No process writes into the output directory before process 0 has set aside an
        // earlier run's files.
        job.barrier("vishwam/train/start")?;
    }
    let mut metrics = match leader {
        true => Some(MetricsLog::open(
            &metrics_path,
            &out_dir,
            summary.start_step,
            log.tensorboard,
        )?),
        false => None,
    };

    let max_steps = cfg.training.max_steps as u64;
    if let Some(range) = opts.profile_steps {
        range.check_within(summary.start_step, max_steps)?;
    }
    let schedule = match leader {
        true => TraceSchedule::new(log, opts.profile_steps),
        false => TraceSchedule::default(),
    };
    let mut tracer = StepTracer::new(schedule, trainer.engine.client.api(), out_dir.clone());
    let bar = progress_bar(opts.progress && leader, summary.start_step, max_steps);
    let tokens_per_step =
        (trainer.layout.accum * trainer.layout.micro_batch * cfg.seq_len()) as f64;
    // Steps are launched ahead of their metrics (`StepPipeline`): the device runs step N+1
    // while the host reads step N's. `step` counts the steps whose metrics were read,
    // `launched` those enqueued; the pipeline is drained (`launched == step`) wherever the
    // state itself is used: checkpoints, evaluation, profile reports, traced steps, the end.
    let mut step = summary.start_step;
    let mut launched = step;
    let mut pipeline = StepPipeline::new(log.log_every);
    let first_step = summary.start_step + 1;
    // Steps after which the loop waits for every launched step: `traced` when the step is
    // in a trace window.
    let drains_at = |s: u64, traced: bool| {
        let every = |n: usize| n > 0 && s.is_multiple_of(n as u64);
        !cfg.runtime.launch_ahead
            || traced
            || s == first_step
            || s == max_steps
            || (every(log.eval_every) || every(log.save_every)) && s < max_steps
            || every(log.profile_every)
    };
    let mut loop_state = StepRecorder {
        summary: &mut summary,
        metrics: &mut metrics,
        tracer: &mut tracer,
        bar: &bar,
        monitor: ResourceMonitor::new(&trainer.engine.client),
        resources: String::new(),
        profile: Profile::default(),
        timed_tokens: 0.0,
        timed_seconds: 0.0,
        tokens_per_step,
        last_read: Instant::now(),
        leader,
        log_every: log.log_every as u64,
        max_steps,
        root: &root,
        waits: Default::default(),
    };
    while launched < max_steps {
        if opts.stop.load(Ordering::SeqCst) {
            loop_state.summary.interrupted = true;
            break;
        }
        if opts.deadline.is_some_and(|d| Instant::now() >= d) {
            loop_state.summary.reached_deadline = true;
            tracing::warn!(
                "the time budget ends the run at step {launched} of {max_steps}: the steps ran \
                 slower than planned"
            );
            break;
        }
        let next = launched + 1;
        if loop_state.tracer.traces(next) && launched > step {
            // A traced step runs alone: its host spans are those of a synchronous step.
            let done = pipeline.drain(trainer)?;
            loop_state.record(trainer, data, &mut step, done)?;
        }
        loop_state.tracer.before_step(next);
        let wait = Instant::now();
        let batch = data.next_train()?;
        loop_state
            .waits
            .push_back((wait, wait.elapsed().as_secs_f64()));
        let report = next % log.log_every as u64 == 0;
        let done = pipeline.launch(trainer, &batch, report)?;
        launched = next;
        loop_state.record(trainer, data, &mut step, done)?;
        if !drains_at(launched, loop_state.tracer.traces(launched)) {
            continue;
        }
        let done = pipeline.drain(trainer)?;
        loop_state.record(trainer, data, &mut step, done)?;
        let StepRecorder {
            summary,
            metrics,
            bar,
            profile,
            ..
        } = &mut loop_state;
        if log.eval_every > 0 && step % log.eval_every as u64 == 0 && step < max_steps {
            let eval = evaluate(trainer, data)?;
            write_json(metrics.as_mut(), validation_record(step, &eval))?;
            bar.println(format!(
                "step {step}: validation loss {:.4}, perplexity {:.2}, token accuracy {:.4}",
                eval.loss, eval.perplexity, eval.accuracy
            ));
            summary.validation = Some(eval);
        }
        if log.profile_every > 0 && step % log.profile_every as u64 == 0 {
            let line = profile.report(trainer);
            write_json(
                metrics.as_mut(),
                json!({"step": step, "profile": line.clone()}),
            )?;
            bar.println(format!(
                "step {step} profile: {}",
                line["summary"].as_str().unwrap_or_default()
            ));
            *profile = Profile::default();
        }
        if log.save_every > 0 && step % log.save_every as u64 == 0 && step < max_steps {
            summary.checkpoint = Some(save_in(trainer, data, step, job)?);
        }
        // Time spent on evaluation and checkpoints is no step's.
        loop_state.last_read = Instant::now();
    }
    let done = pipeline.drain(trainer)?;
    loop_state.record(trainer, data, &mut step, done)?;
    let (timed_tokens, timed_seconds) = (loop_state.timed_tokens, loop_state.timed_seconds);
    drop(loop_state);
    bar.finish_and_clear();
    tracer.finish()?;
    summary.steps = step;
    summary.loop_seconds = timed_seconds + summary.logging_seconds;
    summary.tokens_per_second = if timed_seconds > 0.0 {
        timed_tokens / timed_seconds
    } else {
        0.0
    };
    if step > summary.start_step || summary.interrupted {
        summary.checkpoint = Some(save_in(trainer, data, step, job)?);
    }
    if !summary.interrupted && cfg.data.val_fraction > 0.0 {
        let eval = evaluate(trainer, data)?;
        write_json(metrics.as_mut(), validation_record(step, &eval))?;
        summary.validation = Some(eval);
    }
    Ok(summary)
}

/// The metrics record of a validation pass.
fn validation_record(step: u64, eval: &EvalResult) -> serde_json::Value {
    json!({
        "step": step, "val_loss": eval.loss, "val_perplexity": eval.perplexity,
        "val_accuracy": eval.accuracy,
    })
}

fn evaluate(trainer: &mut Trainer, data: &mut dyn BatchSource) -> Result<EvalResult, TrainError> {
    let batches = data.eval_batches(trainer.config.training.eval_steps)?;
    trainer.evaluate(&batches)
}

/// Where a trainer's checkpoints go and what each records beside the state: the config, the
/// data position, the batch geometry, and how many checkpoints to keep.
pub(super) struct CheckpointRecord {
    pub root: PathBuf,
    pub config: serde_json::Value,
    pub position: serde_json::Value,
    pub geometry: Option<crate::config::BatchGeometry>,
    pub keep: usize,
}

impl CheckpointRecord {
    /// The record of `trainer`'s run at `data`'s current position.
    pub fn of(trainer: &Trainer, data: &dyn BatchSource) -> CheckpointRecord {
        CheckpointRecord {
            root: checkpoint_root(trainer),
            config: trainer.config.to_value(),
            position: data.position(),
            geometry: Some(super::batch_geometry(&trainer.config, &trainer.plan)),
            keep: trainer.config.logging.keep_checkpoints,
        }
    }
}

/// Saves the current state as the checkpoint of `step`.
pub fn save(trainer: &Trainer, data: &dyn BatchSource, step: u64) -> Result<PathBuf, TrainError> {
    let state = trainer.state_to_host()?;
    let r = CheckpointRecord::of(trainer, data);
    let dir = checkpoint::save_with_batch(
        &r.root, step, &state, r.config, r.position, r.geometry, r.keep,
    )?;
    tracing::info!("saved checkpoint {}", dir.display());
    Ok(dir)
}

/// [`save`], or in a multi-process job every process's part of one sharded checkpoint.
fn save_in(
    trainer: &Trainer,
    data: &dyn BatchSource,
    step: u64,
    job: Option<&dyn CheckpointJob>,
) -> Result<PathBuf, TrainError> {
    match job {
        None => save(trainer, data, step),
        Some(job) => save_sharded_state(trainer, data, step, job),
    }
}

/// Every record goes through here: the JSONL file and, with `logging.tensorboard`,
/// TensorBoard (`None`: a process other than 0 of a multi-process job, which writes none).
fn write_json(log: Option<&mut MetricsLog>, value: serde_json::Value) -> Result<(), TrainError> {
    match log {
        Some(log) => log.record(&value),
        None => Ok(()),
    }
}

/// What the loop measured of one step.
pub(super) struct StepReport<'a> {
    pub metrics: &'a StepMetrics,
    pub tokens_per_second: f64,
    pub seconds: f64,
    pub data_wait: f64,
    pub timings: &'a StepTimings,
}

pub(super) fn write_metrics(
    file: &mut MetricsLog,
    step: u64,
    report: &StepReport<'_>,
    trainer: &Trainer,
    resources: &ResourceSnapshot,
) -> Result<(), TrainError> {
    let (m, t) = (report.metrics, report.timings);
    // Device 0 as the resource monitor read it at this step (no second query).
    let memory = device_memory(trainer, resources.memory.first().copied().flatten());
    let mut line = json!({
        "step": step, "loss": m.loss, "accuracy": m.accuracy, "lr": m.lr, "grad_norm": m.grad_norm,
        "tokens_per_second": report.tokens_per_second, "step_time": report.seconds,
        "tokens": m.tokens, "device_memory_bytes": memory,
        "step_seconds": {
            "data_wait": report.data_wait, "host_to_device": t.host_to_device,
            "compute": t.compute, "device_to_host": t.device_to_host,
        },
    });
    if let Some(mfu) = model_flops_utilisation(trainer, report.tokens_per_second) {
        line["mfu"] = json!(mfu);
    }
    if let Some(scale) = m.loss_scale {
        line["loss_scale"] = json!(scale);
    }
    resources.record(&mut line);
    if let Some(d) = &m.distill {
        line["ce"] = json!(d.ce);
        line["kl"] = json!(d.kl);
        if let Some(intermediate) = d.intermediate {
            line["intermediate"] = json!(intermediate);
        }
    }
    if let Some(moe) = &m.moe {
        line["moe"] = serde_json::to_value(moe).unwrap_or(serde_json::Value::Null);
    }
    if trainer.layout.fp8.is_some() {
        line["fp8_saturated_forward"] = json!(m.fp8_saturated_forward);
        line["fp8_saturated_backward"] = json!(m.fp8_saturated_backward);
    }
    write_json(Some(file), line)
}

/// The step's model FLOPs utilisation, where the devices' peak is known.
fn model_flops_utilisation(trainer: &Trainer, tokens_per_second: f64) -> Option<f64> {
    let kind = trainer.engine.client.devices().first()?.kind().ok()?;
    let cfg = &trainer.config;
    let peak = super::flops::known_peak_tflops(&kind, cfg.compute_dtype())?;
    let devices = trainer.engine.mesh.num_devices();
    Some(super::flops::mfu(cfg, tokens_per_second, devices, peak))
}

/// Bytes on device 0: the peak (else in use) of `reading` where the plugin reports memory,
/// else XLA's compiled estimate of the step.
fn device_memory(trainer: &Trainer, reading: Option<DeviceMemory>) -> i64 {
    match reading {
        Some(m) => m.peak.unwrap_or(m.in_use),
        None => trainer
            .program
            .memory_stats()
            .map(|s| s.total_bytes())
            .unwrap_or(0),
    }
}

/// Device 0's memory as the plugin reports it now, where it does.
fn read_device0(trainer: &Trainer) -> Option<DeviceMemory> {
    let devices = trainer.engine.client.devices();
    let stats = devices.first()?.memory_stats().ok()?;
    Some(DeviceMemory::from(stats))
}

fn progress_bar(show: bool, start: u64, max: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(max);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {msg} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_position(start);
    bar
}

/// Accumulated time per phase since the last profile report.
#[derive(Default)]
pub(super) struct Profile {
    steps: u32,
    data_wait: f64,
    timings: StepTimings,
}

impl Profile {
    pub fn add(&mut self, data_wait: f64, t: &StepTimings) {
        self.steps += 1;
        self.data_wait += data_wait;
        self.timings.host_to_device += t.host_to_device;
        self.timings.compute += t.compute;
        self.timings.device_to_host += t.device_to_host;
    }

    pub fn report(&self, trainer: &Trainer) -> serde_json::Value {
        let n = self.steps.max(1) as f64;
        let ms = |s: f64| s / n * 1e3;
        let total = self.data_wait
            + self.timings.host_to_device
            + self.timings.compute
            + self.timings.device_to_host;
        let mem = trainer.program.memory_stats().ok();
        let summary = format!(
            "per step: data wait {:.2} ms ({:.1}%), host->device {:.2} ms, step {:.2} ms, device->host {:.2} ms; device memory {:.1} MiB",
            ms(self.data_wait),
            100.0 * self.data_wait / total.max(1e-12),
            ms(self.timings.host_to_device),
            ms(self.timings.compute),
            ms(self.timings.device_to_host),
            device_memory(trainer, read_device0(trainer)) as f64 / (1u64 << 20) as f64
        );
        json!({
            "data_wait_ms": ms(self.data_wait), "host_to_device_ms": ms(self.timings.host_to_device),
            "step_ms": ms(self.timings.compute), "device_to_host_ms": ms(self.timings.device_to_host),
            "compiled_memory": mem.map(|m| json!({"arguments": m.argument_bytes, "outputs": m.output_bytes, "aliased": m.alias_bytes, "temporaries": m.temp_bytes})),
            "summary": summary,
        })
    }
}
