//! `vishwam bench sharded-attention`: compiles the train step of a config for a sharded mesh
//! and counts, in XLA's optimised program, the cuDNN flash-attention calls it kept.
//!
//! On one GPU, `--mock-gpus N` opens the CUDA plugin as N hosts of one GPU each with mocked
//! NCCL (`enable_mock_nccl`), so the N-device program compiles exactly as for N real GPUs
//! (nothing is run). Every layer's attention must then be one `__cudnn$fmhaSoftmax` call
//! (two with gradient checkpointing, whose backward recomputes the forward) and one
//! `__cudnn$fmhaSoftmaxBackward`: attention per shard in a Shardy manual computation
//! (`model/sharded_attention.rs`). Composed attention expects none. The command fails when the
//! counts differ. On the CPU (`--platform cpu --devices N`) it checks the same program path
//! with the composed attention.

use anyhow::Context;
use std::process::ExitCode;
use vishwam::config::Config;
use vishwam::model::cudnn_attention::{BACKWARD_TARGET, FORWARD_TARGET};
use vishwam::model::AttentionKind;
use vishwam::runtime::{
    resolve_plugin, Api, Client, ClientOptions, CompileOptions, OptionValue, Platform,
};
use vishwam::train::{
    attention_kind, attention_summary, build_train_step, sharding_plan, PrecisionPolicy, StepLayout,
};

/// Arguments of `vishwam bench sharded-attention`.
#[derive(clap::Args, Debug)]
pub struct ShardedAttentionArgs {
    #[command(flatten)]
    config: super::ConfigArgs,
    /// CUDA only: compile for this many GPUs, mocked on the one visible GPU (mock NCCL); the
    /// mesh then has this many devices (it replaces --devices).
    #[arg(long)]
    mock_gpus: Option<usize>,
    /// Keep XLA's dump of the program (HLO before and after optimisation) in this new or
    /// empty directory instead of a temporary one.
    #[arg(long)]
    dump_to: Option<std::path::PathBuf>,
}

/// Runs the check.
pub fn run(args: &ShardedAttentionArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = args.config.load_config()?;
    let platform = Platform::parse(cfg.runtime.platform.as_str())?;
    if let Some(n) = args.mock_gpus {
        anyhow::ensure!(
            platform == Platform::Cuda,
            "--mock-gpus mocks GPUs of the CUDA plugin; pass --platform cuda (got {})",
            platform.name()
        );
        anyhow::ensure!(n >= 1, "--mock-gpus must be at least 1");
        cfg.runtime.devices = Some(n);
    }
    let devices = cfg.requested_devices().unwrap_or(1);
    let plugin = resolve_plugin(
        platform,
        args.config.plugin.as_deref(),
        cfg.runtime.plugin.as_deref().map(std::path::Path::new),
    )?;
    let client = Client::new(Api::shared(&plugin)?, &{
        let options = ClientOptions {
            cpu_device_count: (platform == Platform::Cpu).then_some(devices),
            ..ClientOptions::default()
        };
        match args.mock_gpus {
            Some(hosts) => options.mock_gpu_hosts(hosts),
            None => options,
        }
    })?;
    let plan = sharding_plan(&cfg, platform.name(), devices)?;
    println!("{plan}");
    println!("{}", attention_summary(&cfg, &plan));
    let layout = StepLayout::new(&cfg, &plan)?;
    // Printed as training prints it (f32 products of a narrower-precision step may use TF32).
    let print = PrecisionPolicy::from_config(&cfg)
        .compile_hints()
        .print_options(plan.mesh.clone());
    let text = build_train_step(&cfg, &plan, &layout)?.to_stablehlo(&print)?;
    let manual = text.matches("sdy.manual_computation(").count();
    println!("train step: {manual} sdy.manual_computation in the StableHLO");

    let temporary = tempfile::tempdir()?;
    let dump = match &args.dump_to {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            anyhow::ensure!(
                std::fs::read_dir(dir)?.next().is_none(),
                "--dump-to {}: the directory must be empty (the counts read every optimised \
                 module in it)",
                dir.display()
            );
            dir.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let mut options = CompileOptions::for_partitions(devices);
    options.device_assignment = (0..devices as i64).collect();
    options.overrides.push((
        "xla_dump_to".into(),
        OptionValue::Str(dump.to_string_lossy().into_owned()),
    ));
    options
        .overrides
        .push(("xla_dump_hlo_as_text".into(), OptionValue::Bool(true)));
    if args.mock_gpus.is_some() {
        // With several hosts, XLA splits autotuning between them and waits in the key-value
        // store for the others' results; mocked hosts never send any.
        options
            .overrides
            .push(("xla_gpu_shard_autotuning".into(), OptionValue::Bool(false)));
    }
    client
        .compile(&text, &options)
        .context("compiling the train step")?;
    let optimised = optimised_hlo(&dump)?;
    let count = |target: &str| {
        optimised
            .matches(&format!("custom_call_target=\"{target}\""))
            .count()
    };
    let (forward, backward) = (count(FORWARD_TARGET), count(BACKWARD_TARGET));
    let expected = expected_calls(&cfg, attention_kind(&cfg, &plan));
    println!(
        "optimised program on {devices} devices: {forward} {FORWARD_TARGET}, {backward} \
         {BACKWARD_TARGET} (expected {} and {} for {} layers)",
        expected.0, expected.1, cfg.model.num_layers
    );
    Ok(if (forward, backward) == expected {
        println!("ok: every attention is as chosen");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: the optimised program's attention is not the chosen one");
        ExitCode::FAILURE
    })
}

/// cuDNN forward and backward calls per step: one of each per layer, the forward twice with
/// gradient checkpointing; none for composed attention.
fn expected_calls(cfg: &Config, kind: AttentionKind) -> (usize, usize) {
    let cudnn = match &kind {
        AttentionKind::Cudnn => true,
        AttentionKind::PerShard(p) => p.inner == AttentionKind::Cudnn,
        AttentionKind::Full | AttentionKind::Blocked(_) => false,
    };
    let layers = cfg.model.num_layers;
    match (cudnn, cfg.memory.gradient_checkpointing) {
        (false, _) => (0, 0),
        (true, true) => (2 * layers, layers),
        (true, false) => (layers, layers),
    }
}

/// The text of the modules XLA wrote after optimisation (`*after_optimizations.txt`).
fn optimised_hlo(dir: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with("after_optimizations.txt") {
            text.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    anyhow::ensure!(
        !text.is_empty(),
        "XLA wrote no optimised module (*after_optimizations.txt) to {}",
        dir.display()
    );
    Ok(text)
}
