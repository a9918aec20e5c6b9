//! Traces of chosen training steps: the plugin's device and host activity through the PJRT
//! profiler extension ([`crate::runtime::Profiler`]) plus vishwam's own host spans of each
//! traced step (data wait, host to device, compute and its launch, device to host).
//!
//! Which steps: every `logging.profile_every` steps a window of `logging.profile_steps` steps
//! starting at that multiple, and `vishwam train --profile-steps N:M` once. Each window
//! writes, in the run directory,
//! - `plugins/profile/<YYYY_MM_DD_HH_MM_SS>/<host>.xplane.pb`: the `XSpace` as TensorBoard's
//!   profile plugin opens it (`tensorboard --logdir RUN`, Profile tab): the plugin's planes,
//!   with vishwam's spans as a line `vishwam train loop` of the `/host:CPU` plane;
//! - `profile/steps_N-M.trace.json.gz`: the same as a Chrome trace for ui.perfetto.dev or
//!   `chrome://tracing`.
//!
//! Steps outside windows cost one comparison. A plugin without the profiler extension (jax
//! 0.11.2's CPU plugin) gets one warning, and its traces hold vishwam's host spans only.

pub mod chrome;
mod files;
pub mod host_plane;
pub mod kernels;
pub mod protobuf;
mod tracer;
pub mod xspace;

pub use files::{write_trace, TraceFiles};

/// Directories of a run that hold its traces (a fresh run moves an earlier run's aside with
/// its checkpoints and metrics).
pub const TRACE_DIRS: [&str; 2] = ["plugins/profile", "profile"];
pub use tracer::{HostStep, StepTracer};

/// Inclusive range of 1-based optimizer steps, written `N:M` (`--profile-steps 2:3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRange {
    /// First step traced (>= 1).
    pub first: u64,
    /// Last step traced (>= `first`).
    pub last: u64,
}

/// A `--profile-steps` value that is not `N:M` with `M >= N >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--profile-steps {value:?}: {problem}; expected N:M, the first and last step to trace with M >= N >= 1 (e.g. 10:12)")]
pub struct StepRangeError {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl std::str::FromStr for StepRange {
    type Err = StepRangeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |problem| StepRangeError {
            value: value.to_string(),
            problem,
        };
        let (first, last) = value.split_once(':').ok_or(fail("no `:`"))?;
        let number = |s: &str| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u64>().ok()
            } else {
                None
            }
        };
        let first = number(first).ok_or(fail("N is not a whole number"))?;
        let last = number(last).ok_or(fail("M is not a whole number"))?;
        if first == 0 {
            return Err(fail("steps count from 1"));
        }
        if last < first {
            return Err(fail("M is before N"));
        }
        Ok(StepRange { first, last })
    }
}

impl StepRange {
    /// Fails unless the range overlaps the steps a run from step `start` (0, or the step it
    /// resumes at) to `max_steps` takes.
    pub fn check_within(&self, start: u64, max_steps: u64) -> Result<(), crate::train::TrainError> {
        if self.first <= max_steps && self.last > start {
            return Ok(());
        }
        let resumed = if start > 0 {
            format!(", resumed at step {start}")
        } else {
            String::new()
        };
        Err(crate::train::TrainError::Other(format!(
            "--profile-steps {self}: this run takes steps {}..={max_steps} (training.max_steps \
             = {max_steps}{resumed}); choose steps within them",
            start + 1,
        )))
    }
}

impl std::fmt::Display for StepRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.first, self.last)
    }
}

/// Which steps are traced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceSchedule {
    /// `logging.profile_every` (0 = no periodic windows).
    pub every: u64,
    /// `logging.profile_steps`: length of each periodic window.
    pub length: u64,
    /// `--profile-steps N:M`.
    pub once: Option<StepRange>,
}

impl TraceSchedule {
    /// The schedule of `logging` and an optional `--profile-steps` range.
    pub fn new(logging: &crate::config::LoggingConfig, once: Option<StepRange>) -> Self {
        TraceSchedule {
            every: logging.profile_every as u64,
            length: logging.profile_steps as u64,
            once,
        }
    }

    /// True when nothing is ever traced.
    pub fn is_empty(&self) -> bool {
        self.every == 0 && self.once.is_none()
    }

    /// True when 1-based `step` lies in a window.
    pub fn traces(&self, step: u64) -> bool {
        let periodic = self.every > 0 && step >= self.every && step % self.every < self.length;
        let once = self
            .once
            .is_some_and(|r| (r.first..=r.last).contains(&step));
        periodic || once
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ranges_parse_and_bad_ones_say_why() {
        assert_eq!(
            "2:3".parse::<StepRange>(),
            Ok(StepRange { first: 2, last: 3 })
        );
        assert_eq!(
            "7:7".parse::<StepRange>().map(|r| r.to_string()),
            Ok("7:7".into())
        );
        for (value, problem) in [
            ("3", "no `:`"),
            ("0:2", "count from 1"),
            ("3:2", "M is before N"),
            ("a:2", "N is not a whole number"),
            ("2:", "M is not a whole number"),
            ("-1:2", "N is not a whole number"),
            ("1:2:3", "M is not a whole number"),
            ("+1:2", "N is not a whole number"),
        ] {
            let err = value.parse::<StepRange>().unwrap_err().to_string();
            assert!(err.contains(problem), "{value}: {err}");
            assert!(
                err.contains(&format!("{value:?}")) && err.contains("M >= N >= 1"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_range_must_overlap_the_steps_the_run_takes() {
        let range = StepRange { first: 5, last: 6 };
        assert!(range.check_within(0, 5).is_ok());
        assert!(range.check_within(5, 10).is_ok());
        let err = range.check_within(0, 4).unwrap_err().to_string();
        assert!(
            err.contains("takes steps 1..=4 (training.max_steps = 4)"),
            "{err}"
        );
        let err = range.check_within(6, 10).unwrap_err().to_string();
        assert!(
            err.contains("steps 7..=10") && err.contains("resumed at step 6"),
            "{err}"
        );
    }

    #[test]
    fn windows_start_at_multiples_and_the_range_adds_its_steps() {
        let schedule = TraceSchedule {
            every: 10,
            length: 3,
            once: Some(StepRange { first: 4, last: 5 }),
        };
        let traced: Vec<u64> = (1..=32).filter(|&s| schedule.traces(s)).collect();
        assert_eq!(traced, [4, 5, 10, 11, 12, 20, 21, 22, 30, 31, 32]);
        assert!(TraceSchedule::default().is_empty());
        assert!(!TraceSchedule::default().traces(1));
    }

    #[test]
    fn profile_options_are_version_1_with_host_and_device_tracing() {
        use protobuf::{FieldReader, WireValue};
        let bytes = crate::runtime::PROFILE_OPTIONS;
        let mut r = FieldReader::new(bytes, "ProfileOptions");
        let mut fields = Vec::new();
        while let Some(field) = r.next_field().unwrap() {
            fields.push(field);
        }
        // version = 5, host_tracer_level = 2, device_tracer_level = 3.
        let expected = [(5, 1), (2, 2), (3, 1)].map(|(f, v)| (f, WireValue::Varint(v)));
        assert_eq!(fields, expected);
    }
}
