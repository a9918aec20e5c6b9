//! Training: the step program, the schedule, the loop, metrics and checkpoints.

mod error;
mod schedule;
mod step;
mod trainer;

pub use error::TrainError;
pub use trainer::{initial_state, HostBatch, StepMetrics, Trainer};

pub use schedule::{lr_at, lr_traced};
pub use step::{
    build_train_step, train_forward_options, StateSlot, StepLayout, INITIAL_LOSS_SCALE, METRICS,
};
