//! `vishwam inspect --checkpoint DIR [--experts]`: what a checkpoint holds and, for MoE
//! models, how its routers use the experts.

use super::RuntimeArgs;
use anyhow::Context;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray};
use vishwam::runtime::CompileCache;
use vishwam::train::{checkpoint, expert_utilisation, BatchSource, MoeMetrics, TrainingData};
use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

/// Arguments of `vishwam inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A checkpoint directory (`.../checkpoints/step_NNNNNNNN`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Route tokens through the model and show each MoE block's expert utilisation, dropped
    /// fraction, aux loss and loss-free bias norm.
    #[arg(long)]
    experts: bool,
    /// With --experts: route the token ids of this file (whitespace-separated) instead of
    /// the run's validation data.
    #[arg(long, conflicts_with = "random")]
    tokens: Option<PathBuf>,
    /// With --experts: route seeded random tokens instead of the run's validation data.
    #[arg(long)]
    random: bool,
    /// With --experts: batches of `micro_batch x seq_len` tokens to route (validation or
    /// random; a --tokens file is routed whole).
    #[arg(long, default_value_t = 4)]
    batches: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Runs `vishwam inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let ck = checkpoint::load(&args.checkpoint)?;
    let cfg = Config::from_json_str(&ck.manifest.config.to_string())
        .context("the checkpoint's manifest holds no valid configuration")?;
    let params: BTreeMap<String, HostArray> = vishwam::train::state::params_of(&ck.state);
    let m = &cfg.model;
    let count: usize = params
        .iter()
        .filter(|(n, _)| !n.ends_with(".moe.router_bias"))
        .map(|(_, a)| a.len())
        .sum();
    println!(
        "checkpoint {}: step {}, {} tensors; model {} blocks x {} wide, vocabulary {}, {:.2}M parameters",
        args.checkpoint.display(),
        ck.manifest.step,
        ck.state.len(),
        m.num_layers,
        m.hidden_dim,
        m.vocab_size,
        count as f64 / 1e6
    );
    if m.use_moe {
        let blocks: Vec<String> = (0..m.num_layers)
            .filter(|&i| m.is_moe_layer(i))
            .map(|i| i.to_string())
            .collect();
        println!(
            "MoE blocks {}: {} experts of width {}, top-{}, {} shared, loss-free balancing {}",
            blocks.join(", "),
            m.num_experts,
            m.expert_dim(),
            m.experts_per_token,
            m.num_shared_experts,
            if m.use_lossfreebalance { "on" } else { "off" }
        );
    }
    if !args.experts {
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        m.use_moe,
        "--experts needs an MoE model, and this checkpoint's model.use_moe is false"
    );
    let client = args.runtime.open()?;
    let settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
    let platform = client.platform_name()?;
    let plan = ShardingPlan::build(&settings, &platform, client.num_devices())?;
    let engine = Engine::new(client, plan.mesh.clone(), CompileCache::default_dir())?;
    let batch = vishwam::train::batch_geometry(&cfg, &plan);
    let rows = batch.micro_batch();
    let seq = cfg.seq_len();
    let (batches, source) = match (&args.tokens, args.random) {
        (Some(path), _) => (
            token_file_batches(path, rows * seq, m.vocab_size)?,
            format!("tokens of {}", path.display()),
        ),
        (None, true) => (
            random_batches(args.batches, rows * seq, m.vocab_size),
            "seeded random tokens".to_string(),
        ),
        (None, false) => (
            validation_batches(&cfg, batch, args.batches)?,
            "validation tokens of the run's data".to_string(),
        ),
    };
    let metrics = expert_utilisation(&engine, &plan, &cfg, &params, &batches)?;
    println!(
        "expert utilisation over {} batches of {rows} x {seq} {source}:",
        batches.len()
    );
    print_metrics(&metrics);
    Ok(ExitCode::SUCCESS)
}

/// One line per MoE block.
fn print_metrics(metrics: &MoeMetrics) {
    let spread = metrics.utilisation_spread();
    for (r, layer) in metrics.layers.iter().enumerate() {
        let shares: Vec<String> = metrics.utilisation[r]
            .iter()
            .map(|u| format!("{u:.3}"))
            .collect();
        let bias = metrics
            .bias_norm
            .as_ref()
            .map(|b| format!(", bias norm {:.4}", b[r]))
            .unwrap_or_default();
        println!(
            "  block {layer}: [{}] spread {:.3}, dropped {:.2}%, aux loss {:.4}{bias}",
            shares.join(" "),
            spread[r],
            100.0 * metrics.dropped_fraction[r],
            metrics.aux_loss[r]
        );
    }
}

/// The run's first `count` validation batches (the ones its evaluation uses).
fn validation_batches(
    cfg: &Config,
    batch: vishwam::config::BatchGeometry,
    count: usize,
) -> anyhow::Result<Vec<Vec<i32>>> {
    anyhow::ensure!(
        cfg.data.val_fraction > 0.0,
        "the run held out no validation data (data.val_fraction is 0); pass --tokens FILE or --random"
    );
    let mut data = TrainingData::open(cfg, batch).context(
        "opening the run's data for validation batches (pass --tokens FILE or --random to route other tokens)",
    )?;
    let batches = data.eval_batches(count.max(1))?;
    batches
        .iter()
        .map(|b| b.tokens.to_vec::<i32>().map_err(anyhow::Error::msg))
        .collect()
}

/// Seeded random token batches.
fn random_batches(count: usize, size: usize, vocab: usize) -> Vec<Vec<i32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x1f5e_c7ed);
    (0..count.max(1))
        .map(|_| (0..size).map(|_| rng.gen_range(0..vocab as i32)).collect())
        .collect()
}

/// Whole batches of `size` ids from a file of whitespace-separated token ids.
fn token_file_batches(path: &PathBuf, size: usize, vocab: usize) -> anyhow::Result<Vec<Vec<i32>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ids = text
        .split_whitespace()
        .map(|w| {
            w.parse::<i32>()
                .ok()
                .filter(|&id| id >= 0 && (id as usize) < vocab)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: `{w}` is not a token id in 0..{vocab} (the model's vocabulary)",
                        path.display()
                    )
                })
        })
        .collect::<anyhow::Result<Vec<i32>>>()?;
    anyhow::ensure!(
        ids.len() >= size,
        "{} holds {} token ids; one batch needs {size} (training.batch_size x the batch shards x the sequence length)",
        path.display(),
        ids.len()
    );
    Ok(ids.chunks_exact(size).map(<[i32]>::to_vec).collect())
}
