//! The table of a plan: each choice (`vishwam plan`, `train --target-hours`) with the
//! figures behind it and the reason, in words a user can check.

use super::gib;
use super::ladder::{tier, LADDER};
use super::planner::{
    params, MemorySetup, PlanRequest, MAX_EPOCHS, MIN_STEPS, OVERHEAD_FRACTION, TOKENS_PER_PARAM,
};
use super::report::PlanRow;
use super::speed::Throughput;
use crate::config::{Config, DeviceStrategy, Platform};
use crate::train::auto_precision::AutoPrecision;

/// What the planner chose, and the figures it chose by.
pub(super) struct Choices<'a> {
    /// What was asked.
    pub request: &'a PlanRequest,
    /// The planned config.
    pub cfg: &'a Config,
    /// The model's index in [`LADDER`].
    pub index: usize,
    /// How the step fits in memory.
    pub setup: &'a MemorySetup,
    /// The precision and why.
    pub precision: &'a AutoPrecision,
    /// Devices planned for.
    pub devices: usize,
    /// Compiled bytes per device of the planned step.
    pub bytes: i64,
    /// Bytes usable per device after the reserve.
    pub usable: i64,
    /// Micro-batch per shard, batch shards, accumulation.
    pub batch: [usize; 3],
    /// Seconds per optimizer step.
    pub step_seconds: f64,
    /// The throughput the step time comes from.
    pub throughput: &'a Throughput,
    /// Steps that fill the time, and the steps planned.
    pub steps: [usize; 2],
    /// Steps of [`MAX_EPOCHS`] passes over the data, when its size is known.
    pub steps_in_data: Option<usize>,
    /// Tokens the planned steps train on.
    pub train_tokens: f64,
    /// Seconds of training in the budget, and seconds spent planning.
    pub seconds: [f64; 2],
}

/// The rows of the plan's table, one per choice.
pub(super) fn rows(c: &Choices<'_>) -> Vec<PlanRow> {
    let cfg = c.cfg;
    let shape = LADDER[c.index];
    let [micro, shards, accum] = c.batch;
    let [steps_in_time, max_steps] = c.steps;
    let [train_seconds, spent_seconds] = c.seconds;
    let (request, setup, devices, step_seconds, train_tokens) = (
        c.request,
        c.setup,
        c.devices,
        c.step_seconds,
        c.train_tokens,
    );
    let n = params(cfg);
    let chinchilla = TOKENS_PER_PARAM * n;
    let mut rows = Vec::new();
    let mut row = |item: &str, value: String, reason: String| {
        rows.push(PlanRow {
            item: item.into(),
            value,
            reason,
        })
    };
    row(
        "tier",
        tier(request.target_hours).into(),
        format!(
            "{} h budget; {:.0}% kept for start-up, evaluation and the checkpoint{}",
            request.target_hours,
            OVERHEAD_FRACTION * 100.0,
            match spent_seconds {
                s if s > 0.0 => format!(", {s:.0} s spent planning"),
                _ => String::new(),
            }
        ),
    );
    row(
        "memory",
        format!("{:.3} of {:.3} GiB", gib(c.bytes), gib(c.usable)),
        format!(
        "compiled step per device (arguments + outputs - donated + temporaries) within {} less \
         the {:.0}% reserve",
        request.budget.source,
        request.memory_reserve * 100.0
    ),
    );
    row(
        "model",
        format!(
            "{} layers x {} wide, {:.2}M params",
            shape.layers,
            shape.width,
            n / 1e6
        ),
        match (c.index, train_tokens < chinchilla) {
            (0, true) => format!(
                "the smallest shape of the ladder: even it gets fewer than {TOKENS_PER_PARAM:.0} \
             tokens/param ({:.1}M tokens) in the time and {MAX_EPOCHS:.0} epochs of the data",
                chinchilla / 1e6
            ),
            (i, _) if i + 1 == LADDER.len() => "the largest shape of the ladder".into(),
            _ => format!(
                "the largest shape of the ladder that fits the memory and whose \
             {TOKENS_PER_PARAM:.0} tokens/param ({:.1}M tokens, Chinchilla) fit the time and \
             {MAX_EPOCHS:.0} epochs of the data",
                chinchilla / 1e6
            ),
        },
    );
    row(
        "heads",
        format!(
            "{} query, {} kv, head dim {}, mlp {}",
            shape.heads,
            shape.kv_heads(),
            cfg.model.head_dim(),
            cfg.model.mlp_dim()
        ),
        "grouped-query attention, 4 (or 3, 2) query heads per KV head: a smaller KV projection"
            .into(),
    );
    row(
        "context",
        format!("{} tokens", shape.context),
        "the shape's context in the ladder".into(),
    );
    row(
        "precision",
        c.precision.choice.name().into(),
        c.precision.reason.clone(),
    );
    row(
        "remat",
        cfg.memory.gradient_checkpointing.to_string(),
        match setup.remat {
            true => "one sequence per device does not fit without recomputing activations".into(),
            false => "not needed: the step fits without it (remat costs an extra forward)".into(),
        },
    );
    row(
        "attention",
        match (setup.blocked_attention, cfg.runtime.platform) {
            (true, _) => "xla, blocked".into(),
            (false, Platform::Cuda) if devices == 1 => "cudnn flash (auto)".into(),
            _ => "xla (auto)".into(),
        },
        match setup.blocked_attention {
            true => {
                "the full T x T scores do not fit; blocked attention keeps them to a block".into()
            }
            false => {
                "memory.attention_backend \"auto\": cuDNN flash on one CUDA device, else XLA".into()
            }
        },
    );
    row(
        "mesh",
        format!("{} over {devices} device(s)", cfg.tpu.device_strategy),
        match setup.strategy {
            DeviceStrategy::Fsdp => {
                "the replicated weights and optimizer state do not fit; sharded".into()
            }
            _ => "data parallel: the whole model fits on each device".into(),
        },
    );
    row(
        "batch",
        format!(
            "{micro} per shard x {shards} shard(s) x {accum} accum = {} seqs",
            micro * shards * accum
        ),
        format!(
            "{} sequences per step (>= {MIN_STEPS:.0} steps, 8..256 sequences); the largest \
         micro-batch that fits and divides it is {micro} (up to {} fit)",
            micro * shards * accum,
            setup.micro
        ),
    );
    row(
        "step time",
        format!("{step_seconds:.3} s"),
        c.throughput.source.clone(),
    );
    let steps_reason = match c.steps_in_data {
        Some(s) if s < steps_in_time => format!(
            "{MAX_EPOCHS:.0} epochs of the data, about {:.0} s of training: the run ends before \
             the budget's {train_seconds:.0} s (more passes over the same data would overfit; \
             more data would use the time)",
            s as f64 * step_seconds
        ),
        _ => format!("{train_seconds:.0} s of training / {step_seconds:.3} s per step"),
    };
    row("steps", max_steps.to_string(), steps_reason);
    row(
        "tokens",
        format!("{:.2}M", train_tokens / 1e6),
        format!(
            "{:.1} tokens per parameter (compute-optimal: {TOKENS_PER_PARAM:.0})",
            train_tokens / n
        ),
    );
    if let Some(d) = request.dataset_tokens.filter(|d| *d > 0) {
        let epochs = train_tokens / d as f64;
        let (value, reason) = match epochs {
            e if e > 1.0 => (
                format!("{e:.2} epochs"),
                format!(
                    "the data ({:.2}M training tokens) is smaller than the token budget",
                    d as f64 / 1e6
                ),
            ),
            e => (
                format!("{:.1}% subset", e * 100.0),
                format!(
                    "the budget covers {:.1}% of the data ({:.2}M tokens) in shuffled windows",
                    e * 100.0,
                    d as f64 / 1e6
                ),
            ),
        };
        row("data", value, reason);
    }
    row(
        "learning rate",
        format!("{}", cfg.training.learning_rate),
        format!(
            "by width ({} wide); warmup {} steps (5%)",
            shape.width, cfg.training.warmup_steps
        ),
    );
    rows
}
