//! The plan of a run: model shape, batch, precision, remat, attention and mesh chosen by the
//! compiled memory of the real step (the probe) and the step time (measured or roofline),
//! so that the run fits the device memory less the reserve and ends within the time budget.

use super::auto_batch::largest_micro_batch;
use super::budget::MemoryBudget;
use super::probe::MemoryProbe;
use super::speed::{self, StepTimeModel, Throughput};
use super::{gib, PlanError};
use crate::config::{Config, DeviceStrategy, Platform};
use crate::train::auto_precision::{auto_precision, AutoPrecision, DeviceClass};
use std::collections::HashMap;

use super::ladder::{learning_rate, LADDER};
use super::report::Plan;

/// Training tokens per parameter the plan aims for (Chinchilla: about 20 tokens per
/// parameter is compute-optimal, Hoffmann et al. 2022).
pub const TOKENS_PER_PARAM: f64 = 20.0;
/// Fraction of the time budget kept for what is not training steps: start-up (data,
/// compiling or loading the step from the cache), evaluation, the checkpoint and the sample.
pub const OVERHEAD_FRACTION: f64 = 0.15;
/// Fraction of the budget at its end that `vishwam train --target-hours` keeps for the final
/// evaluation, checkpoint and sample: no training step starts in it, whatever the plan said.
pub const FINAL_FRACTION: f64 = 0.05;
/// Passes over the training data a plan makes at most. Repeating data up to about 4 epochs
/// trains about as well as fresh data, and beyond that the returns fall fast (Muennighoff et
/// al. 2023, "Scaling Data-Constrained Language Models"). Measured here: a 0.1 h H100 plan
/// without this cap looped Brown 280 times and ended at training loss 3.19 but validation
/// loss 6.99, worse than the default CPU run's 6.25 after a fifth of an epoch.
pub const MAX_EPOCHS: f64 = 4.0;
/// Optimizer steps the global batch leaves at least (within its 8..256 sequence bounds).
pub(super) const MIN_STEPS: f64 = 300.0;
/// The shape the measured step time is first calibrated on (4 x 256, the default CPU model).
const CALIBRATION_SHAPE: usize = 2;
/// Tokens per device in the calibration's micro-batch on the CPU.
const CALIBRATION_TOKENS: usize = 4096;
/// Real measurements per plan, the calibration on the smallest shape included (each
/// compiles a step and runs a few).
const MAX_MEASURED: usize = 4;

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// The config the plan starts from (data, tokenizer, vocabulary, optimiser, logging).
    pub base: Config,
    /// Wall-clock budget of the whole run in hours.
    pub target_hours: f64,
    /// Fraction of device memory kept free.
    pub memory_reserve: f64,
    /// Device memory per device.
    pub budget: MemoryBudget,
    /// How step time is estimated.
    pub time_model: StepTimeModel,
    /// Tokens of the training data, when known.
    pub dataset_tokens: Option<u64>,
    /// Token ids from the training data, to time the candidates' steps on (cycled to fill a
    /// batch); uniform random ids when `None`. Text's frequent ids make the embedding
    /// gradient's scatter-add slower than uniform ids do: on an H100, a 4 x 256 model's step
    /// took 8.3 ms on uniform ids, 15 to 20 ms on text and 45 ms on Zipf-distributed ids.
    pub sample_tokens: Option<std::sync::Arc<[i32]>>,
    /// When the budget started, if before planning (`vishwam train --target-hours`: the
    /// command's start): the time spent until the plan is made is taken off the training.
    pub started: Option<std::time::Instant>,
}

/// How a candidate's step fits in memory.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MemorySetup {
    /// Gradient checkpointing on.
    pub(super) remat: bool,
    /// Data parallel or FSDP.
    pub(super) strategy: DeviceStrategy,
    /// Blocked attention on.
    pub(super) blocked_attention: bool,
    /// Largest micro-batch per shard that fits (up to the cap asked).
    pub(super) micro: usize,
    bytes: i64,
}

impl MemorySetup {
    fn apply(&self, cfg: &mut Config) {
        cfg.memory.gradient_checkpointing = self.remat;
        cfg.tpu.device_strategy = self.strategy;
        cfg.memory.attention_memory_efficient = Some(self.blocked_attention);
        cfg.memory.use_memory_efficient_attention = Some(self.blocked_attention);
    }
}

/// The memory setups tried in order, cheapest in compute first: remat costs a forward pass,
/// sharding the weights costs communication, blocked attention costs speed (and saves
/// nothing unless the context is longer than its block).
fn setups(devices: usize, platform: Platform, context: usize) -> Vec<(bool, DeviceStrategy, bool)> {
    let mut out = vec![
        (false, DeviceStrategy::DataParallel, false),
        (true, DeviceStrategy::DataParallel, false),
    ];
    if devices > 1 {
        out.push((false, DeviceStrategy::Fsdp, false));
        out.push((true, DeviceStrategy::Fsdp, false));
    }
    if platform != Platform::Cuda && context > crate::config::DEFAULT_ATTENTION_BLOCK {
        let strategy = match devices {
            1 => DeviceStrategy::DataParallel,
            _ => DeviceStrategy::Fsdp,
        };
        out.push((true, strategy, true));
    }
    out
}

/// The searcher's state: the probe, the usable bytes and the setups found per candidate.
struct Search<'p> {
    probe: &'p mut MemoryProbe,
    usable: i64,
    fits: HashMap<(usize, usize), Option<MemorySetup>>,
    /// The smallest need of a candidate that did not fit (for the error).
    smallest_need: Option<i64>,
}

impl Search<'_> {
    /// The first setup in which one sequence per shard of `cfg` fits, with the largest
    /// micro-batch up to `cap` in it.
    fn fit(
        &mut self,
        index: usize,
        cfg: &Config,
        cap: usize,
    ) -> Result<Option<MemorySetup>, PlanError> {
        if let Some(known) = self.fits.get(&(index, cap)) {
            return Ok(known.clone());
        }
        let devices = self.probe.devices();
        let mut found = None;
        for (remat, strategy, blocked) in setups(devices, self.probe.platform(), cfg.seq_len()) {
            let mut c = cfg.clone();
            let mut setup = MemorySetup {
                remat,
                strategy,
                blocked_attention: blocked,
                micro: 1,
                bytes: 0,
            };
            setup.apply(&mut c);
            match largest_micro_batch(self.probe, &c, self.usable, cap)? {
                Ok((micro, bytes)) => {
                    setup.micro = micro;
                    setup.bytes = bytes;
                    found = Some(setup);
                    break;
                }
                Err(need) => {
                    self.smallest_need = Some(self.smallest_need.map_or(need, |n| n.min(need)));
                }
            }
        }
        self.fits.insert((index, cap), found.clone());
        Ok(found)
    }
}

/// Parameters of `cfg`'s model (all trained ones).
pub(super) fn params(cfg: &Config) -> f64 {
    crate::model::param_counts(&cfg.model).0 as f64
}

/// The largest power of two at most `x` (1 for x < 2).
fn pow2_floor(x: f64) -> usize {
    if x < 2.0 {
        1
    } else {
        1usize << (x.log2().floor() as u32)
    }
}

/// Plans a run of `request` on `probe`'s devices, in the precision their kind supports
/// ([`crate::train::auto_precision`], the rule of `--precision auto`).
pub fn plan_run(probe: &mut MemoryProbe, request: &PlanRequest) -> Result<Plan, PlanError> {
    let hours = request.target_hours;
    if !(hours.is_finite() && hours > 0.0) {
        return Err(PlanError::Invalid(format!(
            "--target-hours = {hours}: the time budget must be a positive number of hours"
        )));
    }
    if !(0.0..1.0).contains(&request.memory_reserve) {
        return Err(PlanError::Invalid(format!(
            "--memory-reserve = {}: the reserve is a fraction of device memory in [0, 1)",
            request.memory_reserve
        )));
    }
    let devices = probe.devices();
    let platform = probe.platform();
    let mut base = probe.pinned(&request.base);
    let precision = auto_precision(&DeviceClass::of(probe.client())?);
    precision.choice.apply(&mut base);
    base.memory.attention_backend = crate::config::AttentionBackend::Auto;
    let usable = request.budget.usable(request.memory_reserve);
    let spent = || request.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let budget_seconds = hours * 3600.0 * (1.0 - OVERHEAD_FRACTION);
    let train_seconds = budget_seconds - spent();
    if train_seconds <= 0.0 {
        return Err(PlanError::Invalid(format!(
            "--target-hours {hours}: nothing is left for training after {:.0} s of planning and \
             the {:.0}% start-up allowance",
            spent(),
            OVERHEAD_FRACTION * 100.0
        )));
    }
    let mut search = Search {
        probe,
        usable,
        fits: HashMap::new(),
        smallest_need: None,
    };
    let candidate = |i: usize| LADDER[i].apply(&base);
    // The most tokens the data supports (MAX_EPOCHS passes), when its size is known.
    let data_tokens = request
        .dataset_tokens
        .filter(|d| *d > 0)
        .map(|d| MAX_EPOCHS * d as f64);
    let token_budget =
        |tokens_in_time: f64| data_tokens.map_or(tokens_in_time, |d| d.min(tokens_in_time));
    // The global batch of candidate `i` at `throughput`: about MIN_STEPS steps or more,
    // 8..=256 sequences, a multiple of the batch shards.
    let global_batch = |i: usize, thr: &Throughput| -> usize {
        let c = candidate(i);
        let tokens = token_budget(train_seconds * thr.tokens_per_second(&c));
        let seqs = pow2_floor(tokens / MIN_STEPS / LADDER[i].context as f64).clamp(8, 256);
        seqs.div_ceil(devices) * devices
    };
    // The largest candidate below `ceiling` whose Chinchilla tokens fit the time at `thr`.
    let select = |thr: &Throughput, ceiling: usize| -> usize {
        (0..ceiling)
            .rev()
            .find(|&i| {
                let c = candidate(i);
                let wanted = TOKENS_PER_PARAM * params(&c);
                wanted / thr.tokens_per_second(&c) <= train_seconds
                    && data_tokens.is_none_or(|d| wanted <= d)
            })
            .unwrap_or(0)
    };

    let mut measured: HashMap<usize, (Throughput, f64)> = HashMap::new();
    let mut throughput = match request.time_model {
        StepTimeModel::Roofline { peak_tflops, mfu } => speed::roofline(peak_tflops, mfu, devices),
        StepTimeModel::Measure => {
            // Calibrate on a small shape with a micro-batch of about CALIBRATION_TOKENS, then
            // measure each candidate the search settles on.
            let i = CALIBRATION_SHAPE.min(LADDER.len() - 1);
            let c = candidate(i);
            let cap = calibration_micro(platform, LADDER[i].context);
            let fitted = match search.fit(i, &c, cap)? {
                Some(setup) => Some((i, c, setup)),
                None => {
                    let c = candidate(0);
                    search.fit(0, &c, cap)?.map(|setup| (0, c, setup))
                }
            };
            let Some((i, c, setup)) = fitted else {
                return Err(too_small(&search, request));
            };
            let mut m = c.clone();
            setup.apply(&mut m);
            m.training.batch_size = setup.micro;
            let (thr, seconds) =
                speed::measure(search.probe, &m, request.sample_tokens.as_deref())?;
            measured.insert(i, (thr.clone(), seconds));
            thr
        }
    };
    // The largest candidate that fits the memory and whose tokens fit the time, by the
    // throughput measured on it (or the roofline): select, fit, measure, select again.
    let fits_time = |i: usize, thr: &Throughput| {
        let c = candidate(i);
        let wanted = TOKENS_PER_PARAM * params(&c);
        wanted / thr.tokens_per_second(&c) <= train_seconds
            && data_tokens.is_none_or(|d| wanted <= d)
    };
    let mut ceiling = LADDER.len();
    let (index, setup, global) = loop {
        let i = select(&throughput, ceiling);
        let global = global_batch(i, &throughput);
        let c = candidate(i);
        let Some(setup) = search.fit(i, &c, global / devices)? else {
            if i == 0 {
                return Err(too_small(&search, request));
            }
            ceiling = i;
            continue;
        };
        if request.time_model == StepTimeModel::Measure {
            match measured.get(&i) {
                None if measured.len() < MAX_MEASURED => {
                    let mut m = c.clone();
                    setup.apply(&mut m);
                    m.training.batch_size =
                        measured_micro(platform, setup.micro, LADDER[i].context);
                    let (thr, seconds) =
                        speed::measure(search.probe, &m, request.sample_tokens.as_deref())?;
                    measured.insert(i, (thr.clone(), seconds));
                    throughput = thr;
                    continue;
                }
                Some((thr, _)) => {
                    throughput = thr.clone();
                    if i > 0 && !fits_time(i, thr) {
                        ceiling = i;
                        continue;
                    }
                }
                None => {}
            }
        }
        break (i, setup, global_batch(i, &throughput));
    };
    let spent_seconds = spent();
    let train_seconds = budget_seconds - spent_seconds;
    if train_seconds <= 0.0 {
        return Err(PlanError::Invalid(format!(
            "--target-hours {hours}: planning took {spent_seconds:.0} s, and nothing is left for \
             training; give a larger budget"
        )));
    }
    let times = (train_seconds, spent_seconds);
    finish(
        &mut search,
        request,
        &base,
        &precision,
        index,
        setup,
        global,
        &throughput,
        times,
    )
}

/// The largest micro-batch the calibration is measured at: about [`CALIBRATION_TOKENS`] on the
/// CPU (seconds, not minutes, per step); elsewhere the largest global batch a plan takes
/// (256 sequences), because an accelerator at a few thousand tokens per step runs far below
/// its rate at the batches it will train with (the kernels are too small to fill it), and a
/// rate measured there would rule out every larger model.
fn calibration_micro(platform: Platform, context: usize) -> usize {
    match platform {
        Platform::Cpu | Platform::Auto => (CALIBRATION_TOKENS / context).max(1),
        Platform::Cuda | Platform::Tpu => 256,
    }
}

/// The micro-batch a candidate's speed is measured at: the planned one, except on the CPU,
/// whose time per token no longer improves past a few thousand tokens per step, where it is
/// capped at [`CALIBRATION_TOKENS`] (the measurement then takes seconds, not minutes).
fn measured_micro(platform: Platform, planned: usize, context: usize) -> usize {
    match platform {
        Platform::Cpu => planned.min((CALIBRATION_TOKENS / context).max(1)),
        _ => planned,
    }
}

/// [`PlanError::DoesNotFit`] for the smallest shape.
fn too_small(search: &Search<'_>, request: &PlanRequest) -> PlanError {
    let s = LADDER[0];
    PlanError::DoesNotFit {
        what: format!(
            "the smallest model ({} layer x {} wide, context {}, vocabulary {}) with remat and \
             one sequence per device",
            s.layers, s.width, s.context, request.base.model.vocab_size
        ),
        needed_gib: gib(search.smallest_need.unwrap_or(0)),
        usable_gib: gib(search.usable),
        budget: request.budget.source.clone(),
        reserve_pct: request.memory_reserve * 100.0,
        remedy: "give more memory (--memory-gib), a smaller --memory-reserve, or a smaller \
                 vocabulary (model.vocab_size with a tokenizer of that size)"
            .into(),
    }
}

/// Builds the planned config and its table from the chosen candidate.
#[allow(clippy::too_many_arguments)]
fn finish(
    search: &mut Search<'_>,
    request: &PlanRequest,
    base: &Config,
    precision: &AutoPrecision,
    index: usize,
    setup: MemorySetup,
    global: usize,
    throughput: &Throughput,
    (train_seconds, spent_seconds): (f64, f64),
) -> Result<Plan, PlanError> {
    let devices = search.probe.devices();
    let shape = LADDER[index];
    let mut cfg = shape.apply(base);
    setup.apply(&mut cfg);
    // The micro-batch: the largest that fits and divides the per-shard batch; checked once
    // more with its accumulation.
    let shards = crate::train::sharding_plan(&cfg, search.probe.platform().as_str(), devices)?
        .batch_shards()
        .max(1);
    let per_shard_total = (global / shards).max(1);
    let mut micro = (1..=setup.micro.min(per_shard_total))
        .rev()
        .find(|b| per_shard_total.is_multiple_of(*b))
        .unwrap_or(1);
    let bytes = loop {
        cfg.training.batch_size = micro;
        cfg.training.grad_accum_steps = per_shard_total / micro;
        let bytes = search.probe.bytes(&cfg)?;
        if bytes <= search.usable || micro == 1 {
            break bytes;
        }
        micro = (1..micro)
            .rev()
            .find(|b| per_shard_total.is_multiple_of(*b))
            .unwrap_or(1);
    };
    if bytes > search.usable {
        return Err(PlanError::DoesNotFit {
            what: format!(
                "the planned step ({} layers x {} wide)",
                shape.layers, shape.width
            ),
            needed_gib: gib(bytes),
            usable_gib: gib(search.usable),
            budget: request.budget.source.clone(),
            reserve_pct: request.memory_reserve * 100.0,
            remedy: "plan again with more memory".into(),
        });
    }
    let accum = cfg.training.grad_accum_steps;
    let step_tokens = (micro * shards * accum * shape.context) as f64;
    let tokens_per_second = throughput.tokens_per_second(&cfg);
    let step_seconds = step_tokens / tokens_per_second;
    let steps_in_time = ((train_seconds / step_seconds).floor() as usize).max(1);
    // At most MAX_EPOCHS passes over the data: a small corpus ends the run early.
    let steps_in_data = request
        .dataset_tokens
        .filter(|d| *d > 0)
        .map(|d| ((MAX_EPOCHS * d as f64 / step_tokens).ceil() as usize).max(1));
    let max_steps = steps_in_data.map_or(steps_in_time, |s| s.min(steps_in_time));
    let train_tokens = max_steps as f64 * step_tokens;
    let t = &mut cfg.training;
    t.max_steps = max_steps;
    t.warmup_steps = (max_steps / 20).clamp(1, 1000).min(max_steps);
    t.learning_rate = learning_rate(shape.width);
    t.global_batch_size = None;
    t.memory_reserve = crate::config::DEFAULT_MEMORY_RESERVE;
    t.memory_gib = None;
    if t.optimizer == crate::config::Optimizer::Muon {
        t.momentum_warmup_steps = t.momentum_warmup_steps.min(max_steps);
    }
    let l = &mut cfg.logging;
    l.log_every = (max_steps / 50).max(1);
    l.eval_every = max_steps;
    l.save_every = max_steps;
    cfg.description = Some(format!(
        "vishwam plan: {} h on {} {} device(s), {} layers x {} wide, {:.2}M parameters, {:.1}M \
         tokens",
        request.target_hours,
        devices,
        cfg.runtime.platform,
        shape.layers,
        shape.width,
        params(&cfg) / 1e6,
        train_tokens / 1e6
    ));
    cfg.validate()
        .map_err(|e| PlanError::Invalid(format!("the planned config: {e}")))?;

    let rows = super::explain::rows(&super::explain::Choices {
        request,
        cfg: &cfg,
        index,
        setup: &setup,
        precision,
        devices,
        bytes,
        usable: search.usable,
        batch: [micro, shards, accum],
        step_seconds,
        throughput,
        steps: [steps_in_time, max_steps],
        steps_in_data,
        train_tokens,
        seconds: [train_seconds, spent_seconds],
    });
    Ok(Plan {
        config: cfg,
        rows,
        step_bytes: bytes,
        usable_bytes: search.usable,
        step_seconds,
        train_seconds: max_steps as f64 * step_seconds,
        compiles: search.probe.compiles,
    })
}
