//! Planning a run from the devices' memory and a time budget, by the compiled memory of the
//! real train step (XLA reports a program's arguments, outputs and temporaries before it
//! runs): the memory probe ([`probe`]), the automatic micro-batch (`training.batch_size`
//! "auto", [`auto_batch`]), the device budget ([`budget`]), the precision the device
//! supports ([`crate::train::auto_precision`]), the plan of `vishwam plan` and `vishwam train --target-hours`
//! ([`planner`] over the shapes of [`ladder`], step time from [`speed`], the result in
//! [`report`]) and the memory table of `vishwam bench memory` ([`techniques`]).

pub mod auto_batch;
pub mod budget;
mod explain;
pub mod ladder;
pub mod planner;
pub mod probe;
pub mod report;
pub mod speed;
pub mod techniques;

pub use auto_batch::{resolve_auto_batch, AutoBatch};
pub use budget::MemoryBudget;
pub use planner::{plan_run, PlanRequest, FINAL_FRACTION};
pub use probe::MemoryProbe;
pub use report::{Plan, PlanRow};
pub use speed::sample_tokens;
pub use speed::StepTimeModel;

use crate::train::TrainError;

/// Bytes in a GiB.
pub const GIB: f64 = (1u64 << 30) as f64;

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// From tracing, compiling or running the step (boxed: the error is large).
    #[error(transparent)]
    Train(Box<TrainError>),
    /// From the engine.
    #[error(transparent)]
    Engine(Box<crate::engine::EngineError>),
    /// From the runtime.
    #[error(transparent)]
    Runtime(Box<crate::runtime::RuntimeError>),
    /// The device memory cannot be known.
    #[error("the device memory is unknown: {reason}; give it with {remedy}")]
    UnknownMemory {
        /// Why it is unknown.
        reason: String,
        /// The flag or key that gives it.
        remedy: String,
    },
    /// Not even the smallest candidate fits the memory left after the reserve.
    #[error(
        "{what} needs {needed_gib:.3} GiB per device by its compiled step, more than the \
         {usable_gib:.3} GiB usable ({budget}, less the {reserve_pct:.0}% reserve); {remedy}"
    )]
    DoesNotFit {
        /// What was tried.
        what: String,
        /// Compiled need per device.
        needed_gib: f64,
        /// Budget after the reserve.
        usable_gib: f64,
        /// Where the budget came from.
        budget: String,
        /// The reserve in percent.
        reserve_pct: f64,
        /// What to do.
        remedy: String,
    },
    /// A request that cannot be planned (bad numbers, conflicting keys).
    #[error("{0}")]
    Invalid(String),
}

impl From<TrainError> for PlanError {
    fn from(e: TrainError) -> Self {
        PlanError::Train(Box::new(e))
    }
}

impl From<crate::engine::EngineError> for PlanError {
    fn from(e: crate::engine::EngineError) -> Self {
        PlanError::Engine(Box::new(e))
    }
}

impl From<crate::runtime::RuntimeError> for PlanError {
    fn from(e: crate::runtime::RuntimeError) -> Self {
        PlanError::Runtime(Box::new(e))
    }
}

/// `bytes` in GiB.
pub fn gib(bytes: i64) -> f64 {
    bytes as f64 / GIB
}

/// `bytes` as GiB with two decimals, or MiB below 1 GiB.
pub fn show_bytes(bytes: i64) -> String {
    match bytes as f64 {
        b if b >= GIB => format!("{:.2} GiB", b / GIB),
        b => format!("{:.1} MiB", b / (1u64 << 20) as f64),
    }
}
