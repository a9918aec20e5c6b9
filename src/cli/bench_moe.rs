//! `vishwam bench moe`: train-step throughput of an MoE model against a dense model with the
//! same active parameters per token.
//!
//! Matching: the dense model's MLP has width `--mlp` (F); each of the `--experts` experts has
//! width F / top_k, so the top_k experts a token uses hold exactly the dense MLP's parameters
//! (3·H·F) and cost its FLOPs; the router adds H·E. With `--capacity-factor 1.0` the expert
//! matmuls run over exactly T·k slots per sequence (the dense FLOPs); a larger factor pads
//! every expert to more slots and the bench reports that FLOP ratio too.

use super::RuntimeArgs;
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::runtime::CompileCache;
use vishwam::train::{sharding_plan, HostBatch, Trainer};

/// Arguments of `vishwam bench moe`.
#[derive(clap::Args, Debug)]
pub struct MoeBenchArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Transformer blocks (all MoE in the MoE model).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Hidden width.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Dense MLP width; each expert is `mlp / top_k` wide.
    #[arg(long, default_value_t = 1024)]
    mlp: usize,
    /// Routed experts.
    #[arg(long, default_value_t = 8)]
    experts: usize,
    /// Experts per token.
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Expert capacity factor (1.0: expert FLOPs equal the dense MLP's).
    #[arg(long, default_value_t = 1.0)]
    capacity_factor: f64,
    /// Sequence length.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Sequences per device (data shard) per step (`training.batch_size`).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 2048)]
    vocab: usize,
    /// bf16 compute (f32 master weights).
    #[arg(long)]
    bf16: bool,
    /// Timed steps per model (after two warm-up steps); fewer than about 20 leave the ratio
    /// noisy by a few percent on a GPU.
    #[arg(long, default_value_t = 20)]
    steps: usize,
}

/// Runs the benchmark.
pub fn run(args: &MoeBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.top_k >= 1 && args.mlp.is_multiple_of(args.top_k),
        "--mlp ({}) must be a multiple of --top-k ({}) so the active experts match the dense MLP",
        args.mlp,
        args.top_k
    );
    // Resolved once: "auto" probes the machine and logs its choice.
    let platform = args.runtime.platform()?;
    let heads = (args.hidden / 64).max(1);
    let common = vec![
        format!("model.num_layers={}", args.layers),
        format!("model.hidden_dim={}", args.hidden),
        format!("model.num_heads={heads}"),
        format!("model.mlp_dim={}", args.mlp),
        format!("model.vocab_size={}", args.vocab),
        format!("model.max_seq_len={}", args.seq),
        format!("training.batch_size={}", args.batch),
        format!("tpu.use_bfloat16={}", args.bf16),
        format!("runtime.platform={}", platform.name()),
    ];
    let dense = Config::load(None, &common)?;
    let mut moe_sets = common.clone();
    moe_sets.extend([
        "model.use_moe=true".to_string(),
        format!("model.num_experts={}", args.experts),
        format!("model.experts_per_token={}", args.top_k),
        format!("model.expert_dim={}", args.mlp / args.top_k),
        format!("model.capacity_factor={}", args.capacity_factor),
    ]);
    let moe = Config::load(None, &moe_sets)?;
    let client = args.runtime.open_on(platform)?;
    println!(
        "platform {} ({} devices); {} blocks x {} wide, seq {}, batch {} per device, vocab {}, {}",
        client.platform_name()?,
        client.num_devices(),
        args.layers,
        args.hidden,
        args.seq,
        args.batch,
        args.vocab,
        if args.bf16 { "bf16" } else { "f32" }
    );
    let mut results = Vec::new();
    for (name, cfg) in [("dense", &dense), ("moe", &moe)] {
        let plan = sharding_plan(cfg, cfg.runtime.platform.as_str(), client.num_devices())?;
        let engine = Engine::new(client.clone(), plan.mesh.clone(), CompileCache::disabled())?;
        let t0 = Instant::now();
        let mut trainer = Trainer::new(cfg, engine, plan)?;
        let compile = t0.elapsed().as_secs_f64();
        let rows = vishwam::train::batch_geometry(cfg, &trainer.plan).global_batch();
        let batch = random_batch(cfg, rows)?;
        for _ in 0..2 {
            trainer.step(&batch)?;
        }
        let t1 = Instant::now();
        for _ in 0..args.steps.max(1) {
            trainer.step(&batch)?;
        }
        let per_step = t1.elapsed().as_secs_f64() / args.steps.max(1) as f64;
        let tokens_per_second = (rows * args.seq) as f64 / per_step;
        let (total, non_embedding) = vishwam::model::param_counts(&cfg.model);
        println!(
            "{name:>5}: {:.1} ms/step, {tokens_per_second:.0} tokens/s; {:.2}M parameters ({:.2}M outside the embedding); compile {compile:.1} s",
            per_step * 1e3,
            total as f64 / 1e6,
            non_embedding as f64 / 1e6
        );
        results.push(per_step);
    }
    let m = &moe.model;
    let slots = m.num_experts * vishwam::model::moe_capacity(m, args.seq);
    let ffn_ratio = slots as f64 / (args.seq * args.top_k) as f64;
    let active = 3 * args.hidden * args.mlp;
    println!(
        "active FFN parameters per token: dense {active}, MoE {} + router {}; expert FLOPs {ffn_ratio:.3}x the dense MLP's ({slots} slots per sequence of {})",
        args.top_k * 3 * args.hidden * m.expert_dim(),
        args.hidden * args.experts,
        args.seq
    );
    println!(
        "MoE / dense step time: {:.3}x (tokens/s ratio {:.3})",
        results[1] / results[0],
        results[0] / results[1]
    );
    Ok(ExitCode::SUCCESS)
}

/// A fixed batch of `rows` sequences of pseudo-random tokens for `cfg`.
fn random_batch(cfg: &Config, rows: usize) -> anyhow::Result<HostBatch> {
    let (b, t, v) = (rows, cfg.seq_len(), cfg.model.vocab_size as u64);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % v) as i32
    };
    let tokens: Vec<i32> = (0..b * t).map(|_| next()).collect();
    let targets: Vec<i32> = (0..b * t).map(|_| next()).collect();
    Ok(HostBatch::from_rows(
        cfg.training.grad_accum_steps,
        t,
        &tokens,
        &targets,
        &vec![1.0; b * t],
    )?)
}
