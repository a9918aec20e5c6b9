//! Training: the step program, the precision policy and FP8 state, the schedule, the loop,
//! metrics and checkpoints; `distill` makes the step learn from a teacher.

mod accumulate;
mod attention_choice;
pub mod auto_precision;
mod batch_slots;
pub mod checkpoint;
mod data_inputs;
mod data_source;
pub mod distill;
mod error;
mod eval;
pub mod flops;
mod fp8;
pub mod gpu_telemetry;
pub mod init;
mod job;
mod layout;
mod metrics_ring;
mod micro_step;
mod moe_inspect;
pub mod moe_state;
pub mod monitor;
pub mod optim;
mod pipeline;
mod precision;
mod resume;
mod run;
mod schedule;
mod setup;
pub mod state;
mod step;
mod step_recorder;
pub mod tensorboard;
pub mod trace;
mod trainer;
mod trainer_programs;
pub mod weights;

pub use attention_choice::{attention_kind, attention_shards, attention_summary};
pub use data_inputs::describe_data_inputs;
pub use data_source::{
    choose_tokenizer, prepare_data, run_tokenizer, AskedSpecialIds, ChosenTokenizer, TrainingData,
};
pub use error::TrainError;
pub use eval::{build_eval_step, build_next_token};
pub use fp8::{build_fp8_bootstrap_step, combine_stats, Fp8Step};
pub use init::{initial_state, InitWeights};
pub use job::{check_process_rows, save_sharded_state};
pub use moe_inspect::{build_expert_stats, expert_utilisation};
pub use moe_state::MoeMetrics;
pub use pipeline::{StepPipeline, StepResult};
pub use precision::{Fp8Policy, Fp8Scaling, LossScaling, PrecisionPolicy, ProjectionPrecision};
pub use trainer::{
    compile_step, CompiledStep, HostBatch, LaunchedStep, MetricsRead, StepMetrics, StepTimings,
    Trainer,
};
pub use trainer_programs::EvalResult;
pub use weights::WeightsSource;

pub use layout::{train_forward_options, StepLayout};
pub use run::{
    checkpoint_root, run_training, run_training_in, save, BatchSource, RunOptions, RunSummary,
};
pub use schedule::{lr_at, lr_traced};
pub use setup::{
    batch_geometry, choose_platform, engine_on, engine_platform, open_engine, pin_platform,
    platform, resolve_platform, sharding_plan, strategy, SetupError, SUPPORTED,
};
pub use state::{amax_history_name, SlotInit, StateSlot, TrainState, INITIAL_LOSS_SCALE};
pub use step::{build_distill_step, build_train_step};
