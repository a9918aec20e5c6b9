//! The training loop's side of tracing: start the plugin's profiler before the first step of
//! a window, record vishwam's host spans of each traced step, and write the window when its
//! last step is done.

use super::files::{write_trace, TraceFiles};
use super::host_plane::Span;
use super::{StepRange, TraceSchedule};
use crate::runtime::{Api, Profiler, PROFILE_OPTIONS};
use crate::train::{StepTimings, TrainError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What the loop measured of one step, for its host spans.
#[derive(Debug, Clone, Copy)]
pub struct HostStep {
    /// When the loop began waiting for the step's batch.
    pub started: Instant,
    /// Seconds spent waiting for the batch.
    pub data_wait: f64,
    /// The step's phases after the batch arrived (back to back, in this order: host to
    /// device, compute with its launch at the start, device to host).
    pub timings: StepTimings,
}

/// An open window.
struct Window {
    first: u64,
    last: u64,
    profiler: Option<Profiler>,
    spans: Vec<Span>,
}

/// Traces the steps of a [`TraceSchedule`] (see the module documentation).
pub struct StepTracer {
    schedule: TraceSchedule,
    api: Arc<Api>,
    has_profiler: bool,
    run_dir: PathBuf,
    /// The same moment on the monotonic and the Unix clock: host spans in the profiler's
    /// time base.
    anchor: (Instant, SystemTime),
    window: Option<Window>,
}

impl StepTracer {
    /// A tracer of `schedule` for the plugin of `api`, writing under `run_dir`. With a
    /// schedule that traces something and a plugin without the profiler extension, logs one
    /// warning.
    pub fn new(schedule: TraceSchedule, api: &Arc<Api>, run_dir: PathBuf) -> StepTracer {
        let has_profiler = api.has_profiler();
        if !schedule.is_empty() && !has_profiler {
            tracing::warn!(
                "the PJRT plugin {} has no profiler extension: step traces hold vishwam's host \
                 spans only (data wait, host to device, compute, device to host), no device \
                 activity",
                api.path().display()
            );
        }
        StepTracer {
            schedule,
            api: api.clone(),
            has_profiler,
            run_dir,
            anchor: (Instant::now(), SystemTime::now()),
            window: None,
        }
    }

    /// Whether 1-based `step` is in a trace window.
    pub fn traces(&self, step: u64) -> bool {
        self.schedule.traces(step)
    }

    /// Call before 1-based `step` runs: opens a window (starting the plugin's profiler) when
    /// `step` is traced and none is open. Costs one comparison otherwise.
    pub fn before_step(&mut self, step: u64) {
        if self.window.is_some() || !self.schedule.traces(step) {
            return;
        }
        let profiler = if self.has_profiler {
            match Profiler::start(&self.api, PROFILE_OPTIONS) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(
                        "step {step}: the plugin's profiler did not start ({e}); this trace \
                         holds vishwam's host spans only"
                    );
                    None
                }
            }
        } else {
            None
        };
        self.window = Some(Window {
            first: step,
            last: step,
            profiler,
            spans: Vec::new(),
        });
    }

    /// Call after `step` ran: records its host spans if it is traced, and writes the window
    /// if `step` is its last (the next step is not traced).
    pub fn after_step(&mut self, step: u64, host: &HostStep) -> Result<(), TrainError> {
        let Some(window) = &mut self.window else {
            return Ok(());
        };
        window.last = step;
        let ns = |t: Instant| {
            let since = t.saturating_duration_since(self.anchor.0);
            let unix = self
                .anchor
                .1
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (unix + since).as_nanos() as i64
        };
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
        let t = host.timings;
        let mut at = host.started;
        let mut span = |name: &str, start: Instant, seconds: f64| {
            window.spans.push(Span {
                name: name.to_string(),
                start_ns: ns(start),
                duration_ns: secs(seconds).as_nanos() as i64,
            });
        };
        let total = host.data_wait + t.host_to_device + t.compute + t.device_to_host;
        span(&format!("step {step}"), at, total);
        span("data wait", at, host.data_wait);
        at += secs(host.data_wait);
        span("host to device", at, t.host_to_device);
        at += secs(t.host_to_device);
        span("compute", at, t.compute);
        span("launch", at, t.launch);
        at += secs(t.compute);
        span("device to host", at, t.device_to_host);
        if !self.schedule.traces(step + 1) {
            self.finish()?;
        }
        Ok(())
    }

    /// Writes the open window, if any (at the end of a window, and when the run stops inside
    /// one).
    pub fn finish(&mut self) -> Result<Option<TraceFiles>, TrainError> {
        let Some(window) = self.window.take() else {
            return Ok(None);
        };
        let steps = StepRange {
            first: window.first,
            last: window.last,
        };
        let collected = match window.profiler.map(Profiler::stop_and_collect) {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => {
                tracing::warn!("steps {steps}: collecting the plugin's trace failed ({e})");
                Vec::new()
            }
            None => Vec::new(),
        };
        let files = write_trace(&self.run_dir, steps, &collected, &window.spans)?;
        if let Some(problem) = &files.undecodable {
            tracing::warn!(
                "steps {steps}: the plugin's trace ({} bytes, kept as collected in {}) is not a \
                 readable XSpace: {problem}",
                collected.len(),
                files.xplane.display()
            );
        }
        tracing::info!(
            "trace of steps {steps} ({} planes, {} events, {} of them from the plugin): {} \
             (open with `tensorboard --logdir {}`, Profile tab) and {} (open in \
             https://ui.perfetto.dev or chrome://tracing)",
            files.planes,
            files.events,
            files.plugin_events,
            files.xplane.display(),
            self.run_dir.display(),
            files.chrome.display()
        );
        Ok(Some(files))
    }
}
