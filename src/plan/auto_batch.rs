//! `training.batch_size` = "auto": the largest micro-batch whose compiled step fits the
//! device memory less the reserve, then the configured global batch by accumulation.

use super::budget::MemoryBudget;
use super::probe::MemoryProbe;
use super::{gib, PlanError};
use crate::config::Config;
use crate::engine::Engine;
use vishwam_mesh::ShardingPlan;

/// Largest per-device micro-batch the search tries when no global batch caps it.
pub const MAX_AUTO_MICRO_BATCH: usize = 1024;

/// What the automatic batch size picked and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoBatch {
    /// Sequences per batch shard per micro-batch (the resolved `training.batch_size`).
    pub per_shard: usize,
    /// Micro-batches per step (the resolved `training.grad_accum_steps`).
    pub accum: usize,
    /// Batch shards of the mesh.
    pub shards: usize,
    /// The largest micro-batch per shard that fits (the pick is smaller when the global
    /// batch asks for a divisor of it).
    pub largest_fitting: usize,
    /// Compiled bytes per device of the chosen step.
    pub step_bytes: i64,
    /// Bytes usable after the reserve.
    pub usable_bytes: i64,
    /// The device budget.
    pub budget: MemoryBudget,
    /// The reserve fraction.
    pub reserve: f64,
    /// Steps compiled by the search.
    pub compiles: usize,
}

impl std::fmt::Display for AutoBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch_size \"auto\": {} sequences per shard x {} micro-batch(es) x {} shard(s); \
             the largest micro-batch that fits is {} per shard; the step needs {:.3} GiB per \
             device of {:.3} GiB usable ({}, less {:.0}% reserve), by {} compiled step(s)",
            self.per_shard,
            self.accum,
            self.shards,
            self.largest_fitting,
            gib(self.step_bytes),
            gib(self.usable_bytes),
            self.budget.source,
            self.reserve * 100.0,
            self.compiles
        )
    }
}

/// `cfg` with `batch` sequences per shard and `accum` micro-batches: a config with a fixed
/// batch, so the keys of the automatic batch size go back to their defaults (they do not
/// shape the step, and a fixed batch refuses them).
fn with_batch(cfg: &Config, batch: usize, accum: usize) -> Config {
    let mut c = cfg.clone();
    c.training.batch_size = batch;
    c.training.grad_accum_steps = accum;
    c.training.global_batch_size = None;
    c.training.memory_reserve = crate::config::DEFAULT_MEMORY_RESERVE;
    c.training.memory_gib = None;
    c
}

/// The largest micro-batch per shard in `1..=cap` whose step (with one micro-batch per
/// step) fits in `usable` bytes, with its bytes; `None` when not even 1 fits (its bytes in
/// the error branch of the caller). Sizes 1 and 2 give a line of memory against the batch;
/// its prediction is compiled, then the search gallops away from it until the answer is
/// bracketed and bisects the bracket (buffer assignment is not exactly linear): 4 compiles
/// when memory is linear in the batch, about 2 log2(error of the prediction) more when not.
pub fn largest_micro_batch(
    probe: &mut MemoryProbe,
    cfg: &Config,
    usable: i64,
    cap: usize,
) -> Result<Result<(usize, i64), i64>, PlanError> {
    let mut bytes_of = |b: usize| probe.bytes(&with_batch(cfg, b, 1));
    let one = bytes_of(1)?;
    if one > usable {
        return Ok(Err(one));
    }
    if cap <= 1 {
        return Ok(Ok((1, one)));
    }
    let two = bytes_of(2)?;
    if two > usable {
        return Ok(Ok((1, one)));
    }
    // lo fits, hi does not (or is past the cap). First the line through sizes 1 and 2...
    let (mut lo, mut lo_bytes, mut hi) = (2usize, two, cap + 1);
    if hi - lo > 1 {
        let per_sequence = (two - one).max(1);
        let predicted = 2 + ((usable - two) / per_sequence).max(0) as usize;
        let b = predicted.clamp(lo + 1, hi - 1);
        let bytes = bytes_of(b)?;
        let fitted = bytes <= usable;
        match fitted {
            true => (lo, lo_bytes) = (b, bytes),
            false => hi = b,
        }
        // ... then galloping away from it (one more compile when memory is linear in the
        // batch: the prediction fits and one more sequence does not) ...
        let mut step = 1;
        while hi - lo > 1 {
            let b = match fitted {
                true => (lo + step).min(hi - 1),
                false => hi.saturating_sub(step).max(lo + 1),
            };
            let bytes = bytes_of(b)?;
            step *= 2;
            match bytes <= usable {
                true => (lo, lo_bytes) = (b, bytes),
                false => hi = b,
            }
            if (bytes <= usable) != fitted {
                break;
            }
        }
    }
    // ... and bisection inside the bracket.
    while hi - lo > 1 {
        let b = lo + (hi - lo) / 2;
        let bytes = bytes_of(b)?;
        match bytes <= usable {
            true => (lo, lo_bytes) = (b, bytes),
            false => hi = b,
        }
    }
    Ok(Ok((lo, lo_bytes)))
}

/// Resolves `training.batch_size` "auto" of `cfg` for the engine's devices and `plan`'s
/// mesh: the largest micro-batch per shard that fits the budget (`training.memory_gib`, else
/// what the device reports, else on the CPU the host's available memory) less
/// `training.memory_reserve`, and with `training.global_batch_size` the largest divisor of
/// it that fits, reached by accumulation. The chosen step is compiled once more to check
/// that it fits with its accumulation.
pub fn resolve_auto_batch(
    cfg: &Config,
    engine: &Engine,
    plan: &ShardingPlan,
) -> Result<(Config, AutoBatch), PlanError> {
    let t = &cfg.training;
    let shards = plan.batch_shards().max(1);
    let devices = engine.mesh.num_devices();
    let budget = MemoryBudget::of(&engine.client, devices, t.memory_gib, "training.memory_gib")?;
    let usable = budget.usable(t.memory_reserve);
    let cap = match t.global_batch_size {
        Some(g) if !g.is_multiple_of(shards) => {
            return Err(PlanError::Invalid(format!(
                "training.global_batch_size = {g} does not split over the {shards} batch shards \
                 of the mesh; make it a multiple of {shards}"
            )))
        }
        Some(g) => g / shards,
        None => MAX_AUTO_MICRO_BATCH,
    };
    let mut probe = MemoryProbe::new(engine.client.clone(), devices, engine.cache.clone())?;
    let base = with_batch(cfg, 1, t.grad_accum_steps);
    let largest = match largest_micro_batch(&mut probe, &base, usable, cap)? {
        Ok((b, _)) => b,
        Err(needed) => {
            return Err(PlanError::DoesNotFit {
                what: format!(
                    "training.batch_size \"auto\": one sequence of {} tokens per device on this \
                     {} layers x {} wide model",
                    cfg.seq_len(),
                    cfg.model.num_layers,
                    cfg.model.hidden_dim
                ),
                needed_gib: gib(needed),
                usable_gib: gib(usable),
                budget: budget.source.clone(),
                reserve_pct: t.memory_reserve * 100.0,
                remedy: "turn on memory.gradient_checkpointing, a lower precision, or shard the \
                         weights (tpu.device_strategy \"fsdp\"), or use a smaller model or context"
                    .into(),
            })
        }
    };
    // With a global batch: the largest divisor of the per-shard total that fits, checked
    // with its accumulation (the accumulated gradients add to the step's memory).
    let mut candidates: Vec<(usize, usize)> = match t.global_batch_size {
        Some(g) => {
            let per_shard_total = g / shards;
            (1..=largest)
                .rev()
                .filter(|b| per_shard_total.is_multiple_of(*b))
                .map(|b| (b, per_shard_total / b))
                .collect()
        }
        None => vec![(largest, t.grad_accum_steps)],
    };
    if t.global_batch_size.is_none() {
        candidates.extend((1..largest).rev().map(|b| (b, t.grad_accum_steps)));
    }
    for (b, accum) in candidates {
        let resolved = with_batch(cfg, b, accum);
        let bytes = probe.bytes(&resolved)?;
        if bytes <= usable {
            let auto = AutoBatch {
                per_shard: b,
                accum,
                shards,
                largest_fitting: largest,
                step_bytes: bytes,
                usable_bytes: usable,
                budget,
                reserve: t.memory_reserve,
                compiles: probe.compiles,
            };
            tracing::info!("{auto}");
            return Ok((resolved, auto));
        }
    }
    Err(PlanError::Invalid(format!(
        "training.batch_size \"auto\": micro-batches up to {largest} per shard fit alone, but \
         none fits with the accumulation training.global_batch_size asks for"
    )))
}
