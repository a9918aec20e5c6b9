//! How fast a planned step runs: measured on the devices (a few real steps of the compiled
//! program on random tokens), or a stated roofline model (training FLOPs per token from
//! [`crate::train::flops`] over an assumed fraction of the device's peak).

use super::probe::MemoryProbe;
use super::PlanError;
use crate::config::Config;
use crate::train::flops;
use crate::train::{HostBatch, Trainer};
use std::time::Instant;

/// Steps run before timing (the first runs pay for allocation, warm-up and, with FP8, the
/// statistics' bootstrap program).
const WARMUP_STEPS: usize = 3;
/// Steps timed at least.
const MIN_TIMED_STEPS: usize = 3;
/// Steps timed at most.
const MAX_TIMED_STEPS: usize = 50;
/// Seconds of timed steps aimed for (fast steps are timed more often, within the bounds
/// above): two steps of a small model on an H100 measured 22 ms each where the run's steps
/// took 14 ms.
const TIMED_SECONDS: f64 = 1.0;

/// How the planner estimates step time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepTimeModel {
    /// Run a few real steps of the candidate on the devices.
    Measure,
    /// Roofline: training FLOPs per token over `peak_tflops` per device x `mfu`.
    Roofline {
        /// Dense peak of one device in TFLOP/s for the compute dtype.
        peak_tflops: f64,
        /// The fraction of the peak assumed reached.
        mfu: f64,
    },
}

/// Sustained FLOP/s over all devices of the probe, measured on one config or assumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Achieved model FLOP/s over all devices.
    pub flops_per_second: f64,
    /// How the figure was obtained, for the table.
    pub source: String,
}

impl Throughput {
    /// Tokens per second of `cfg`'s model at this FLOP rate.
    pub fn tokens_per_second(&self, cfg: &Config) -> f64 {
        self.flops_per_second / flops_per_token(cfg)
    }
}

/// Training FLOPs per token for time estimates: [`flops::flops_per_token`] (6 x non-embedding
/// parameters + attention) plus the LM head's matmul, 6 x vocabulary x width, which MFU
/// leaves out but which dominates the step of a small model with a large vocabulary.
pub fn flops_per_token(cfg: &Config) -> f64 {
    flops::flops_per_token(cfg) + 6.0 * (cfg.model.vocab_size * cfg.model.hidden_dim) as f64
}

/// The roofline throughput of `devices` devices.
pub fn roofline(peak_tflops: f64, mfu: f64, devices: usize) -> Throughput {
    Throughput {
        flops_per_second: peak_tflops * 1e12 * mfu * devices as f64,
        source: format!(
            "roofline: {peak_tflops} TFLOP/s peak x {:.0}% MFU x {devices} device(s); FLOPs per \
             token 6 x params (LM head included) + 12 x layers x width x context",
            mfu * 100.0
        ),
    }
}

/// Runs real steps of `cfg` on `sample`'s token ids (the training data's, cycled), or on
/// uniform random ids without one (after [`WARMUP_STEPS`]; at least [`MIN_TIMED_STEPS`], and
/// more up to [`TIMED_SECONDS`] or [`MAX_TIMED_STEPS`]) and returns the model FLOP/s they
/// reached (over all devices) and the seconds per step.
pub fn measure(
    probe: &mut MemoryProbe,
    cfg: &Config,
    sample: Option<&[i32]>,
) -> Result<(Throughput, f64), PlanError> {
    let cfg = probe.pinned(cfg);
    let (engine, plan, step) = probe.compile(&cfg)?;
    let cfg = crate::train::pin_platform(&cfg, &engine)?;
    let mut trainer = Trainer::from_compiled(&cfg, engine, plan, step, None, None)?;
    let layout = trainer.layout.clone();
    let (accum, seq) = (layout.accum, layout.seq_len);
    let rows = accum * layout.micro_batch;
    let n = rows * seq;
    let vocab = cfg.model.vocab_size as u64;
    let (tokens, source): (Vec<i32>, &str) = match sample.filter(|s| !s.is_empty()) {
        Some(sample) => (
            sample.iter().copied().cycle().take(n + 1).collect(),
            "the training data's tokens",
        ),
        None => {
            // Random tokens (a small LCG).
            let mut state = cfg
                .training
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
            let tokens = (0..n + 1)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab) as i32
                })
                .collect();
            (tokens, "uniform random tokens")
        }
    };
    let batch = HostBatch::from_rows(accum, seq, &tokens[..n], &tokens[1..], &vec![1.0; n])?;
    for _ in 0..WARMUP_STEPS {
        trainer.step(&batch)?;
    }
    let t = Instant::now();
    let mut timed = 0;
    while timed < MIN_TIMED_STEPS
        || (timed < MAX_TIMED_STEPS && t.elapsed().as_secs_f64() < TIMED_SECONDS)
    {
        trainer.step(&batch)?;
        timed += 1;
    }
    let seconds = t.elapsed().as_secs_f64() / timed as f64;
    let flops = n as f64 * flops_per_token(&cfg) / seconds;
    Ok((
        Throughput {
            flops_per_second: flops,
            source: format!(
                "measured: {timed} steps of {} x {} sequences of {source} on the {} layers x \
                 {} wide model, {:.3} s each ({:.2} GFLOP/s, LM head included; other shapes \
                 scaled by FLOPs per token)",
                layout.micro_batch,
                layout.accum,
                cfg.model.num_layers,
                cfg.model.hidden_dim,
                seconds,
                flops / 1e9
            ),
        },
        seconds,
    ))
}

/// Tokens of the training data the planner times its candidates on: the first
/// [`SAMPLE_TOKENS`] of the prepared dataset's first shard (fewer when it holds fewer).
pub fn sample_tokens(prepared: &crate::data::PreparedDataset) -> Vec<i32> {
    let Some(shard) = prepared.shards().first() else {
        return Vec::new();
    };
    let mut tokens = vec![0; shard.num_tokens().min(SAMPLE_TOKENS) as usize];
    shard.copy_tokens(0, &mut tokens);
    tokens
}

/// Tokens read by [`sample_tokens`]: a calibration batch of 256 sequences of 2048 tokens,
/// the largest the planner times, without repeating.
pub const SAMPLE_TOKENS: u64 = 256 * 2048 + 1;
