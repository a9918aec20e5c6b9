//! Steps launched ahead of their metrics: the host enqueues step N+1 while step N runs and
//! reads metrics only when asked (or when the ring would overflow), starting the copy before
//! the next launch and waiting for it while that step runs. The devices then never wait for
//! the host between steps, and the host waits only for steps older than the one running.

use super::metrics_ring::RING_STEPS;
use super::{HostBatch, LaunchedStep, StepMetrics, StepTimings, TrainError, Trainer};

/// A step's metrics and timings, as the pipeline returns them.
pub type StepResult = (StepMetrics, StepTimings);

/// Launches steps and reads their metrics in order (see the module documentation).
pub struct StepPipeline {
    /// Steps launched whose metrics have not been read yet, oldest first.
    unread: Vec<LaunchedStep>,
    /// Read at the latest when this many steps are unread.
    read_every: usize,
    /// Whether the newest unread step was launched with `report`.
    report_pending: bool,
}

impl StepPipeline {
    /// A pipeline that reads metrics at least every `read_every` steps (at most the ring's
    /// [`RING_STEPS`], at least 1).
    pub fn new(read_every: usize) -> StepPipeline {
        StepPipeline {
            unread: Vec::new(),
            read_every: read_every.clamp(1, RING_STEPS),
            report_pending: false,
        }
    }

    /// Launches a step on `batch` and returns the metrics of earlier steps that were read
    /// meanwhile, oldest first. With `report`, this step's metrics are read by the next
    /// launch. An FP8 bootstrap step in flight is waited for first (a skipped bootstrap must
    /// run again).
    pub fn launch(
        &mut self,
        trainer: &mut Trainer,
        batch: &HostBatch,
        report: bool,
    ) -> Result<Vec<StepResult>, TrainError> {
        let mut done = Vec::new();
        if trainer.needs_metrics_before_next_step() {
            done = self.drain(trainer)?;
        }
        let read = match self.report_pending || self.unread.len() >= self.read_every {
            true => Some(trainer.read_metrics(std::mem::take(&mut self.unread))?),
            false => None,
        };
        self.unread.push(trainer.launch(batch)?);
        self.report_pending = report;
        if let Some(read) = read {
            done.extend(read.wait(trainer)?);
        }
        Ok(done)
    }

    /// Waits for every launched step and returns the metrics not returned yet, oldest first.
    /// A single unread step is finished as [`Trainer::timed_step`] would (its copy timed
    /// apart from its compute).
    pub fn drain(&mut self, trainer: &mut Trainer) -> Result<Vec<StepResult>, TrainError> {
        self.report_pending = false;
        let mut unread = std::mem::take(&mut self.unread);
        match unread.len() {
            0 => Ok(Vec::new()),
            1 => Ok(vec![unread.remove(0).finish(trainer)?]),
            _ => trainer.read_metrics(unread)?.wait(trainer),
        }
    }
}
