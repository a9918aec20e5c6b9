//! The training loop's bookkeeping of each step whose metrics were read: the non-finite
//! check, the losses and throughput of the summary, the trace's host spans, the progress bar,
//! and at `log_every` the metrics record and the log line. Steps arrive in order, one or
//! several at a time (the loop launches steps ahead of reading them, see
//! [`super::StepPipeline`]).

use super::monitor::ResourceMonitor;
use super::run::{write_metrics, BatchSource, Profile, RunSummary, StepReport};
use super::tensorboard::MetricsLog;
use super::trace::{HostStep, StepTracer};
use super::{StepResult, TrainError, Trainer};
use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

/// What the loop keeps between steps (see the module documentation).
pub(super) struct StepRecorder<'a> {
    pub summary: &'a mut RunSummary,
    /// The metrics file (process 0 only).
    pub metrics: &'a mut Option<MetricsLog>,
    pub tracer: &'a mut StepTracer,
    pub bar: &'a indicatif::ProgressBar,
    pub monitor: ResourceMonitor,
    /// The last resource summary shown on the progress bar.
    pub resources: String,
    /// Time per phase since the last profile report.
    pub profile: Profile,
    /// Tokens and seconds of the steps after the first (the throughput of the summary).
    pub timed_tokens: f64,
    pub timed_seconds: f64,
    pub tokens_per_step: f64,
    /// When the last steps were recorded: a read's steps share the wall time since.
    pub last_read: Instant,
    pub leader: bool,
    pub log_every: u64,
    pub max_steps: u64,
    /// Where the checkpoints are (named in the non-finite error).
    pub root: &'a Path,
    /// For each launched step not yet recorded, oldest first: when the loop began waiting
    /// for its batch, and how long it waited.
    pub waits: VecDeque<(Instant, f64)>,
}

impl StepRecorder<'_> {
    /// Records `done`, the next steps in order; `step` counts the steps recorded.
    pub fn record(
        &mut self,
        trainer: &Trainer,
        data: &dyn BatchSource,
        step: &mut u64,
        done: Vec<StepResult>,
    ) -> Result<(), TrainError> {
        if done.is_empty() {
            return Ok(());
        }
        let wall = self.last_read.elapsed().as_secs_f64() / done.len() as f64;
        for (m, mut timings) in done {
            let (started, data_wait) = self.waits.pop_front().ok_or_else(|| {
                TrainError::Other("a step's metrics arrived that the loop never launched".into())
            })?;
            if m.skipped && !trainer.layout.dynamic_scale {
                self.bar.abandon();
                return Err(TrainError::NonFinite(format!(
                    "step {}: loss {} / gradient norm {} is not finite; the update was not applied and training stopped. The last good checkpoint is in {}. Lower training.learning_rate, set training.max_grad_norm, or use f32 compute.",
                    *step + 1,
                    m.loss,
                    m.grad_norm,
                    self.root.display()
                )));
            }
            *step += 1;
            let step = *step;
            // The step's share of the wall time since the last read, less its batch's wait.
            let seconds = (wall - data_wait).max(0.0);
            // Steps read together ran back to back on the devices, each launched before the
            // one ahead of it was done: a step's compute is then its share of the wall time.
            let others = timings.host_to_device + timings.device_to_host;
            timings.compute = timings.compute.min((seconds - others).max(0.0));
            let host = HostStep {
                started,
                data_wait,
                timings,
            };
            self.tracer.after_step(step, &host)?;
            self.summary.losses.push(m.loss);
            if step > self.summary.start_step + 1 {
                self.timed_tokens += self.tokens_per_step;
                self.timed_seconds += seconds + data_wait;
            }
            self.profile.add(data_wait, &timings);
            let tokens_per_second = self.tokens_per_step / (seconds + data_wait).max(1e-9);
            self.bar.set_position(step);
            let logged =
                self.leader && (step.is_multiple_of(self.log_every) || step == self.max_steps);
            let bookkeeping = Instant::now();
            let snapshot = logged.then(|| self.monitor.sample(data.queue_depth()));
            if let Some(s) = &snapshot {
                self.resources = s.summary();
            }
            self.bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s {}",
                m.loss, m.lr, tokens_per_second, self.resources
            ));
            if let (Some(snapshot), Some(metrics)) = (&snapshot, self.metrics.as_mut()) {
                let report = StepReport {
                    metrics: &m,
                    tokens_per_second,
                    seconds,
                    data_wait,
                    timings: &timings,
                };
                write_metrics(metrics, step, &report, trainer, snapshot)?;
                tracing::info!(
                    "step {step}/{} loss {:.4} acc {:.4} grad_norm {:.3} lr {:.3e} {:.0} tok/s",
                    self.max_steps,
                    m.loss,
                    m.accuracy,
                    m.grad_norm,
                    m.lr,
                    tokens_per_second
                );
            }
            if step > self.summary.start_step + 1 {
                self.summary.logging_seconds += bookkeeping.elapsed().as_secs_f64();
            }
        }
        self.last_read = Instant::now();
        Ok(())
    }
}
