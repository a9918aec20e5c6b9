//! `vishwam bench train`: compile time, step time, tokens/s, MFU and memory of the train
//! step, on XLA or on the Candle reference, with seeded random token batches.

use super::ConfigArgs;
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::reference::{train_steps, Batch, ReferenceDtype, ReferenceModel, ReferenceOptimizer};
use vishwam::train::{open_engine, HostBatch, StepPipeline, Trainer};

/// Which implementation trains.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchEngine {
    /// The compiled XLA train step.
    Xla,
    /// The Candle CPU reference.
    Candle,
    /// Both, one after the other in this process, with their ratio.
    Both,
}

/// How the benchmark draws its token ids.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenDistribution {
    /// Uniform over the vocabulary.
    #[default]
    Uniform,
    /// Zipf's law (token k drawn with weight 1 / (k + 1)), as in text: a few ids make up most
    /// of the batch, which is what the embedding gradient's scatter-add meets in training.
    Zipf,
}

/// Arguments of `vishwam bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    run: ConfigArgs,
    /// Which engine to measure.
    #[arg(long, value_enum, default_value_t = BenchEngine::Xla)]
    engine: BenchEngine,
    /// Measured steps (after two warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Peak TFLOP/s of one device for MFU (default: from a table of known devices).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Enqueue each step before reading earlier steps' metrics, reading them every
    /// `logging.log_every` steps as `vishwam train` does, so that the device never waits for
    /// the host between steps (the step time is then wall time per step).
    #[arg(long, conflicts_with = "compare_loops")]
    pipeline: bool,
    /// Measure both loops on the one compiled step: `--rounds` rounds, each running `--steps`
    /// steps waiting for every step and then `--steps` steps pipelined (`--pipeline`); prints
    /// every round and the ratio of the medians.
    #[arg(long)]
    compare_loops: bool,
    /// Rounds of `--compare-loops`.
    #[arg(long, default_value_t = 3, requires = "compare_loops")]
    rounds: usize,
    /// How the random token ids are drawn.
    #[arg(long, value_enum, default_value_t = TokenDistribution::Uniform)]
    tokens: TokenDistribution,
}

/// Seeded random token and target rows filling one step's batch of `rows` sequences, uniform
/// over the vocabulary.
pub fn random_rows(cfg: &Config, rows: usize, seed: u64) -> (Vec<i32>, Vec<i32>) {
    distributed_rows(cfg, rows, seed, TokenDistribution::Uniform)
}

/// [`random_rows`] drawn from `distribution`.
pub fn distributed_rows(
    cfg: &Config,
    rows: usize,
    seed: u64,
    distribution: TokenDistribution,
) -> (Vec<i32>, Vec<i32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = rows * cfg.seq_len();
    let v = cfg.model.vocab_size;
    let mut draw: Box<dyn FnMut() -> i32> = match distribution {
        TokenDistribution::Uniform => Box::new(move || rng.gen_range(0..v as i32)),
        TokenDistribution::Zipf => {
            // Inverse CDF of weights 1 / (k + 1) over the vocabulary.
            let mut cumulative = Vec::with_capacity(v);
            let mut total = 0.0f64;
            for k in 0..v {
                total += 1.0 / (k + 1) as f64;
                cumulative.push(total);
            }
            Box::new(move || {
                let u = rng.gen::<f64>() * total;
                cumulative.partition_point(|&c| c < u).min(v - 1) as i32
            })
        }
    };
    let tokens = (0..n).map(|_| draw()).collect();
    let targets = (0..n).map(|_| draw()).collect();
    (tokens, targets)
}

/// Seconds per step of `steps` steps on `batches` in turn (wall time), and of those the mean
/// time from a step's launch to its end (0 when pipelined). With `read_every`, each step is
/// launched before earlier ones are read, reading every `read_every` steps as `vishwam train`
/// does; without, each step is waited for.
fn measure_loop(
    trainer: &mut Trainer,
    batches: &[HostBatch],
    steps: usize,
    read_every: Option<usize>,
) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut compute = 0.0;
    match read_every {
        Some(every) => {
            let mut pipeline = StepPipeline::new(every);
            for i in 0..steps {
                let report = (i + 1) % every == 0;
                pipeline.launch(trainer, &batches[i % batches.len()], report)?;
            }
            pipeline.drain(trainer)?;
        }
        None => {
            for i in 0..steps {
                let (_, timing) = trainer.timed_step(&batches[i % batches.len()])?;
                compute += timing.compute;
            }
        }
    }
    let steps = steps.max(1) as f64;
    Ok((t0.elapsed().as_secs_f64() / steps, compute / steps))
}

/// "1 round", "3 rounds".
fn rounds(n: usize) -> String {
    format!("{n} round{}", if n == 1 { "" } else { "s" })
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n % 2 {
        1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs the benchmark.
pub fn run(args: &TrainBenchArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.run.load_config()?;
    let (total, non_embedding) = vishwam::model::param_counts(&cfg.model);
    println!(
        "model: {} layers x {} wide, {} heads / {} kv heads, mlp {}, vocab {}, seq {}, batch {} per shard ({:.1}M params, {:.1}M non-embedding), compute {:?}",
        cfg.model.num_layers,
        cfg.model.hidden_dim,
        cfg.model.num_heads,
        cfg.model.kv_heads(),
        cfg.model.mlp_dim(),
        cfg.model.vocab_size,
        cfg.seq_len(),
        cfg.training.batch_size,
        total as f64 / 1e6,
        non_embedding as f64 / 1e6,
        cfg.compute_dtype()
    );
    let mut xla_rate = None;
    let mut candle_rate = None;
    // Sequences per step of the XLA run (the global batch over all batch shards), which the
    // Candle run (one CPU) then also trains on, so that the tokens/s ratio compares like work.
    let mut xla_rows = None;
    if args.engine != BenchEngine::Candle {
        let (engine, plan) = open_engine(&cfg, args.run.plugin.clone())?;
        let devices = plan.mesh.num_devices();
        let rows = vishwam::train::batch_geometry(&cfg, &plan).global_batch();
        xla_rows = Some(rows);
        let tokens_per_step = (rows * cfg.seq_len()) as f64;
        let kind = engine
            .client
            .devices()
            .first()
            .and_then(|d| d.kind().ok())
            .unwrap_or_default();
        let t0 = Instant::now();
        let mut trainer = Trainer::new(&cfg, engine, plan)?;
        let compile = t0.elapsed().as_secs_f64();
        let batches: Vec<HostBatch> = (0..2)
            .map(|i| {
                let (t, y) = distributed_rows(&cfg, rows, i, args.tokens);
                HostBatch::from_rows(
                    cfg.training.grad_accum_steps,
                    cfg.seq_len(),
                    &t,
                    &y,
                    &vec![1.0; t.len()],
                )
                .map_err(anyhow::Error::from)
            })
            .collect::<anyhow::Result<_>>()?;
        // Two warm-up steps: a delayed-scaling FP8 run's first step is its bootstrap
        // program, and a program's first execution on a GPU also loads its kernels.
        for batch in &batches {
            trainer.step(batch)?;
        }
        let log_every = cfg.logging.log_every.max(1);
        let measure = |trainer: &mut Trainer, pipelined: bool| {
            measure_loop(
                trainer,
                &batches,
                args.steps,
                pipelined.then_some(log_every),
            )
        };
        let (per_step, in_program) = if args.compare_loops {
            anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
            let (mut waiting, mut pipelined) = (Vec::new(), Vec::new());
            for round in 1..=args.rounds {
                let (wait, in_program) = measure(&mut trainer, false)?;
                let (ahead, _) = measure(&mut trainer, true)?;
                println!(
                    "round {round}: waiting {:.2} ms ({:.2} in the program); pipelined {:.2} ms",
                    wait * 1e3,
                    in_program * 1e3,
                    ahead * 1e3
                );
                waiting.push(wait);
                pipelined.push(ahead);
            }
            let (wait, ahead) = (median(&mut waiting), median(&mut pipelined));
            println!(
                "loops: waiting {:.2} ms, pipelined {:.2} ms (medians of {}): pipelined runs at {:.3}x the speed of waiting",
                wait * 1e3,
                ahead * 1e3,
                rounds(args.rounds),
                wait / ahead
            );
            (
                ahead,
                format!("pipelined, median of {}", rounds(args.rounds)),
            )
        } else {
            let (per_step, in_program) = measure(&mut trainer, args.pipeline)?;
            let label = match args.pipeline {
                true => "pipelined".to_string(),
                false => format!("{:.1} ms in the program", in_program * 1e3),
            };
            (per_step, label)
        };
        let rate = tokens_per_step / per_step;
        let achieved = rate * vishwam::train::flops::flops_per_token(&cfg) / devices as f64 / 1e12;
        let mfu = match args
            .peak_tflops
            .or_else(|| vishwam::train::flops::known_peak_tflops(&kind, cfg.compute_dtype()))
        {
            Some(peak) => format!("{:.1}% of {peak} TFLOP/s", 100.0 * achieved / peak),
            None => "n/a (pass --peak-tflops)".to_string(),
        };
        let memory = match trainer.engine.client.devices()[0].memory_stats() {
            Ok(s) => format!(
                "{:.2} GiB peak in use (allocator)",
                s.peak_bytes_in_use.unwrap_or(s.bytes_in_use) as f64 / (1u64 << 30) as f64
            ),
            Err(_) => {
                let m = trainer.program.memory_stats()?;
                format!(
                    "{:.2} GiB (XLA compiled: arguments + outputs - aliased + temporaries)",
                    m.total_bytes() as f64 / (1u64 << 30) as f64
                )
            }
        };
        println!("xla ({kind} x{devices}): compile {compile:.1}s ({:?}); step {:.1} ms ({in_program}); {:.0} tokens/s; {achieved:.1} TFLOP/s per device; MFU {mfu}; memory {memory}", trainer.program.cache_outcome, per_step * 1e3, rate);
        xla_rate = Some(rate);
    }
    if args.engine != BenchEngine::Xla {
        anyhow::ensure!(
            cfg.training.grad_accum_steps == 1,
            "the Candle engine runs without gradient accumulation: set training.grad_accum_steps=1"
        );
        // One device: training.batch_size sequences alone, or as many as the XLA run's global
        // batch when it ran (its batch_size per shard x its batch shards).
        let rows = xla_rows.unwrap_or(cfg.training.batch_size);
        let tokens_per_step = (rows * cfg.seq_len()) as f64;
        let model =
            ReferenceModel::init_random(&cfg.model, cfg.training.seed, ReferenceDtype::F32)?;
        let mut opt = ReferenceOptimizer::new(&model, &cfg.training)?;
        let batches: Vec<Batch> = (0..=args.steps as u64)
            .map(|i| {
                let (t, y) = distributed_rows(&cfg, rows, i % 2, args.tokens);
                Batch::new(t.clone(), y, vec![1.0; t.len()], rows, cfg.seq_len())
            })
            .collect::<Result<_, _>>()?;
        let stats = train_steps(&model, &mut opt, batches, args.steps + 1)?;
        let measured = &stats[1..];
        let seconds: f64 = measured.iter().map(|s| s.seconds).sum();
        let rate = tokens_per_step * measured.len() as f64 / seconds;
        println!(
            "candle (cpu, f32, {rows} sequences per step): step {:.1} ms; {rate:.0} tokens/s",
            seconds / measured.len() as f64 * 1e3
        );
        candle_rate = Some(rate);
    }
    if let (Some(x), Some(c)) = (xla_rate, candle_rate) {
        println!("xla / candle tokens/s ratio: {:.2}x", x / c);
    }
    Ok(ExitCode::SUCCESS)
}
