//! `vishwam bench ...`: performance measurements (never run as tests).

use super::RuntimeArgs;
use std::process::ExitCode;
use std::time::Instant;
use vishwam::runtime::{Arg, CacheOutcome, CompileCache, CompileOptions, ElementType};

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Compile time cold vs. cache hit, transfer bandwidth, per-execute overhead.
    Runtime(RuntimeBenchArgs),
    /// Time to trace, differentiate and print the train step of a deep, wide model.
    Trace(TraceBenchArgs),
    /// Train-step tokens/s of an MoE model against a dense model with the same active parameters.
    Moe(super::bench_moe::MoeBenchArgs),
    /// KV-cache generation: prefill ms and decode tokens/s at several batch sizes.
    Generate(super::bench_generate::GenerateBenchArgs),
    /// Train-step speed, MFU and memory on XLA or the Candle reference.
    Train(super::bench_train::TrainBenchArgs),
    /// Step-time overhead of distillation over plain training, against the teacher's forward.
    Distill(super::bench_distill::DistillBenchArgs),
    /// cuDNN flash attention vs. composed XLA attention on CUDA: correctness, then speed.
    Attention(super::bench_attention::AttentionBenchArgs),
    /// The train step for a sharded mesh (on one GPU: `--mock-gpus N`): counts the cuDNN
    /// attention calls in XLA's optimised program; fails unless every layer has them.
    ShardedAttention(super::bench_sharded_attention::ShardedAttentionArgs),
    /// GPU time per step by kind of kernel (GEMM, attention, fusions, copies, gaps) from
    /// `.xplane.pb` traces, vishwam's and JAX's side by side.
    Kernels(super::bench_kernels::KernelsBenchArgs),
    /// Compiled peak memory of the train step: f32 baseline, gradient checkpointing, mixed
    /// precision, GQA and all together (the Pufferfish table), at 12, 24 and 30 layers.
    Memory(super::bench_memory::MemoryBenchArgs),
    /// Tokenisation MB/s on the Brown corpus (vs. Python `tokenizers` when installed) and
    /// loader batches/s.
    Data(DataBenchArgs),
}

/// Arguments of `vishwam bench data`.
#[derive(clap::Args, Debug)]
pub struct DataBenchArgs {
    /// A tokenizer.json (default: a byte-level BPE trained on Brown, cached).
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Threads for tokenisation (the Python baseline gets the same).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed passes; the fastest counts.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the Python `tokenizers` baseline.
    #[arg(long)]
    no_python: bool,
}

/// Arguments of `vishwam bench trace`.
#[derive(clap::Args, Debug)]
pub struct TraceBenchArgs {
    /// Transformer layers.
    #[arg(long, default_value_t = 24)]
    layers: usize,
    /// Hidden width.
    #[arg(long, default_value_t = 1024)]
    hidden: usize,
    /// Rematerialise each block (gradient checkpointing).
    #[arg(long)]
    remat: bool,
    /// Repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

/// Arguments of `vishwam bench runtime`.
#[derive(clap::Args, Debug)]
pub struct RuntimeBenchArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Transfer size in MiB.
    #[arg(long, default_value_t = 256)]
    transfer_mib: usize,
    /// Executions to average for the per-execute overhead.
    #[arg(long, default_value_t = 2000)]
    executions: usize,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Runtime(args) => runtime(&args),
        BenchCommand::Trace(args) => trace(&args),
        BenchCommand::Moe(args) => super::bench_moe::run(&args),
        BenchCommand::Generate(args) => super::bench_generate::run(&args),
        BenchCommand::Train(args) => super::bench_train::run(&args),
        BenchCommand::Memory(args) => super::bench_memory::run(&args),
        BenchCommand::Kernels(args) => super::bench_kernels::run(&args),
        BenchCommand::Distill(args) => super::bench_distill::run(&args),
        BenchCommand::Data(args) => {
            let defaults = vishwam::data::bench::DataBenchOptions::default();
            let options = vishwam::data::bench::DataBenchOptions {
                tokenizer: args.tokenizer.clone(),
                threads: args.threads,
                repeats: args.repeats,
                python_script: if args.no_python {
                    None
                } else {
                    defaults.python_script.clone()
                },
                ..defaults
            };
            println!("{}", vishwam::data::bench::bench_data(&options)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Attention(args) => super::bench_attention::run(&args),
        BenchCommand::ShardedAttention(args) => super::bench_sharded_attention::run(&args),
    }
}

/// An MLP-shaped program big enough for compile time to matter: `layers` x (dot, add, tanh).
fn mlp_program(layers: usize, width: usize, salt: u64) -> String {
    let t = format!("tensor<{width}x{width}xf32>");
    let mut body = String::new();
    let mut cur = "%x".to_string();
    for l in 0..layers {
        body.push_str(&format!(
            "    %d{l} = stablehlo.dot_general {cur}, %w, contracting_dims = [1] x [0] : ({t}, {t}) -> {t}\n    %s{l} = stablehlo.add %d{l}, {cur} : {t}\n    %h{l} = stablehlo.tanh %s{l} : {t}\n"
        ));
        cur = format!("%h{l}");
    }
    format!("module @bench_{salt} {{\n  func.func public @main(%x: {t}, %w: {t}) -> {t} {{\n{body}    return {cur} : {t}\n  }}\n}}\n")
}

fn gbps(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

fn best_of<F: FnMut() -> anyhow::Result<f64>>(reps: usize, mut f: F) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        best = best.min(f()?);
    }
    Ok(best)
}

fn runtime(args: &RuntimeBenchArgs) -> anyhow::Result<ExitCode> {
    let client = args.runtime.open()?;
    println!(
        "platform {} ({}), plugin {}",
        client.platform_name()?,
        client.platform_version()?,
        client.api().path().display()
    );

    // Compile: cold vs. cache hit, on a fresh cache directory and a program never seen before.
    let dir = tempfile::tempdir()?;
    let cache = CompileCache::new(dir.path());
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let program = mlp_program(24, 256, salt);
    let options = CompileOptions::for_partitions(1);
    let t0 = Instant::now();
    let (_, outcome) = cache.compile(&client, &program, &options)?;
    let cold = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        outcome == CacheOutcome::Miss,
        "expected a cold compile, got {outcome:?}"
    );
    let hit = best_of(5, || {
        let t = Instant::now();
        let (_, outcome) = cache.compile(&client, &program, &options)?;
        anyhow::ensure!(
            outcome == CacheOutcome::Hit,
            "expected a cache hit, got {outcome:?}"
        );
        Ok(t.elapsed().as_secs_f64())
    })?;
    println!(
        "compile (24-layer MLP program): cold {:.1} ms, cache hit {:.2} ms -> {:.0}x faster",
        cold * 1e3,
        hit * 1e3,
        cold / hit
    );

    // Transfers of one large buffer, against a plain memcpy of the same size into a warm
    // destination and into a fresh allocation (which pays first-touch page faults).
    let bytes = args.transfer_mib << 20;
    let host: Vec<u8> = (0..bytes).map(|i| (i * 31) as u8).collect();
    let mut back = vec![1u8; bytes];
    let elems = (bytes / 4) as i64;
    let memcpy = best_of(5, || {
        let t = Instant::now();
        back.copy_from_slice(&host);
        std::hint::black_box(&back);
        Ok(t.elapsed().as_secs_f64())
    })?;
    let fresh = best_of(5, || {
        let t = Instant::now();
        let mut v: Vec<u8> = Vec::with_capacity(bytes);
        v.extend_from_slice(&host);
        std::hint::black_box(&v);
        Ok(t.elapsed().as_secs_f64())
    })?;
    println!(
        "transfer {} MiB: memcpy {:.2} GB/s (warm destination), {:.2} GB/s (fresh allocation)",
        args.transfer_mib,
        gbps(bytes, memcpy),
        gbps(bytes, fresh)
    );

    // Host to device. On the CPU the first transfer of a size stages through a new block (page
    // faults, as a fresh allocation); later ones reuse a warm block once the previous buffer
    // is gone. Each timed transfer waits for the buffer to be ready; the drop is not timed.
    let staged_before = client.staging_stats();
    let h2d = |label: &str, seconds: f64| {
        println!(
            "  host->device {label}: {:.2} GB/s = {:.2}x warm memcpy, {:.2}x fresh memcpy",
            gbps(bytes, seconds),
            memcpy / seconds,
            fresh / seconds
        );
    };
    let t = Instant::now();
    let first = client.buffer_from_bytes(&host, ElementType::F32, &[elems], 0)?;
    first.block_until_ready()?;
    let h2d_first = t.elapsed().as_secs_f64();
    drop(first);
    const STEADY_TRANSFERS: usize = 5;
    let h2d_steady = best_of(STEADY_TRANSFERS, || {
        let t = Instant::now();
        let b = client.buffer_from_bytes(&host, ElementType::F32, &[elems], 0)?;
        b.block_until_ready()?;
        let seconds = t.elapsed().as_secs_f64();
        drop(b);
        Ok(seconds)
    })?;
    h2d("first transfer", h2d_first);
    h2d(
        &format!("steady state (best of {STEADY_TRANSFERS})"),
        h2d_steady,
    );
    match (staged_before, client.staging_stats()) {
        (Some(before), Some(after)) => println!(
            "  staging: {} of {} transfers zero-copy, {} copied by the plugin; blocks {} allocated, {} reused",
            after.zero_copy_transfers - before.zero_copy_transfers,
            1 + STEADY_TRANSFERS,
            after.copied_transfers - before.copied_transfers,
            after.blocks_allocated - before.blocks_allocated,
            after.blocks_reused - before.blocks_reused
        ),
        _ => println!("  staging: off on this platform (the plugin copies)"),
    }

    let device_buf = client.buffer_from_bytes(&host, ElementType::F32, &[elems], 0)?;
    let d2h = best_of(5, || {
        let t = Instant::now();
        device_buf.copy_to_host(&mut back)?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    anyhow::ensure!(back == host, "device-to-host copy returned different bytes");
    println!(
        "  device->host {:.2} GB/s = {:.2}x warm memcpy (into a warm host buffer)",
        gbps(bytes, d2h),
        memcpy / d2h
    );

    // Per-execute overhead of a tiny program.
    let tiny = "module @tiny { func.func public @main(%a: tensor<4xf32>) -> tensor<4xf32> { %0 = stablehlo.add %a, %a : tensor<4xf32> return %0 : tensor<4xf32> } }";
    let exe = client.compile(tiny, &options)?;
    let a = client.buffer_from_slice(&[1f32, 2., 3., 4.], &[4], 0)?;
    for _ in 0..100 {
        exe.execute(vec![vec![Arg::Keep(&a)]])?[0][0].block_until_ready()?;
    }
    let t = Instant::now();
    for _ in 0..args.executions {
        exe.execute(vec![vec![Arg::Keep(&a)]])?[0][0].block_until_ready()?;
    }
    let per = t.elapsed().as_secs_f64() / args.executions as f64;
    println!(
        "execute overhead (tensor<4xf32> add, {} runs, each awaited): {:.1} us per execution",
        args.executions,
        per * 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// Traces, differentiates and prints the full train step (forward, chunked loss, backward,
/// AdamW) of a `layers` x `hidden` model; reports each phase and the module size.
fn trace(args: &TraceBenchArgs) -> anyhow::Result<ExitCode> {
    use vishwam::config::Config;
    use vishwam::train::{build_train_step, sharding_plan, StepLayout};
    let measure = |layers: usize| -> anyhow::Result<(f64, f64, usize, usize)> {
        let heads = (args.hidden / 64).max(1);
        let sets: Vec<String> = [
            format!("model.num_layers={layers}"),
            format!("model.hidden_dim={}", args.hidden),
            format!("model.num_heads={heads}"),
            "model.vocab_size=32000".to_string(),
            "model.max_seq_len=1024".to_string(),
            format!("memory.gradient_checkpointing={}", args.remat),
        ]
        .into();
        let cfg = Config::load(None, &sets)?;
        let plan = sharding_plan(&cfg, "cpu", 1)?;
        let mut best = (f64::INFINITY, f64::INFINITY, 0, 0);
        for _ in 0..args.repeat.max(1) {
            let t0 = Instant::now();
            let layout = StepLayout::new(&cfg, &plan)?;
            let func = build_train_step(&cfg, &plan, &layout)?;
            let traced = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let text =
                func.to_stablehlo(&vishwam_hlo::PrintOptions::with_mesh(plan.mesh.clone()))?;
            let printed = t1.elapsed().as_secs_f64();
            if traced + printed < best.0 + best.1 {
                best = (traced, printed, func.eqns.len(), text.len());
            }
        }
        Ok(best)
    };
    let (traced, printed, eqns, bytes) = measure(args.layers)?;
    println!(
        "train step of {} layers x {} wide (remat {}): trace + differentiate + check {:.1} ms, print {:.1} ms, total {:.1} ms; {} equations, {:.2} MB of StableHLO",
        args.layers, args.hidden, args.remat, traced * 1e3, printed * 1e3, (traced + printed) * 1e3, eqns, bytes as f64 / 1e6
    );
    let half = (args.layers / 2).max(1);
    let (_, _, eqns_half, bytes_half) = measure(half)?;
    println!(
        "linearity: {half} layers -> {eqns_half} equations, {:.2} MB; ratio {:.3} equations and {:.3} bytes for {:.1}x the layers",
        bytes_half as f64 / 1e6,
        eqns as f64 / eqns_half as f64,
        bytes as f64 / bytes_half as f64,
        args.layers as f64 / half as f64
    );
    Ok(ExitCode::SUCCESS)
}
