//! Command-line interface: argument parsing and the subcommands.

mod bench;
mod bench_attention;
mod bench_distill;
mod bench_generate;
mod bench_kernels;
mod bench_memory;
mod bench_moe;
mod bench_sharded_attention;
mod bench_train;
mod data;
mod distill;
mod doctor;
mod eval;
mod export;
mod generate;
mod inspect;
mod multiprocess;
mod multiprocess_train;
mod plan;
mod plot;
mod train;
mod validate_setup;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vishwam::runtime::{Client, ClientSpec, Platform};

/// vishwam: train language models on real XLA, from a laptop CPU to a GPU box or a TPU slice.
#[derive(Parser, Debug)]
#[command(name = "vishwam", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (the main job): `vishwam train --config configs/tpu_v3_8.json`.
    Train(train::TrainArgs),
    /// Distil a teacher into the configured student: `vishwam distill --config configs/distill_tiny.json`.
    Distill(train::TrainArgs),
    /// Continue prompts with a checkpoint, printing tokens as they are produced.
    Generate(generate::GenerateArgs),
    /// Mean loss, perplexity and token accuracy of a checkpoint on some text.
    Eval(eval::EvalArgs),
    /// Compare the XLA program with the Candle reference on one batch.
    Verify(verify::VerifyArgs),
    /// Write a checkpoint as a Hugging Face Llama directory.
    Export(export::ExportArgs),
    /// Turn a Hugging Face Llama directory into a vishwam run (step-0 checkpoint).
    Import(export::ImportArgs),
    /// Check the XLA plugin: version, devices, and a smoke-test matmul.
    Doctor(doctor::DoctorArgs),
    /// Benchmarks (not tests): runtime, trace, data, ...
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// What a checkpoint holds; with --experts, MoE expert utilisation per block.
    Inspect(inspect::InspectArgs),
    /// Train or inspect tokenizers.
    Tokenizer(data::TokenizerArgs),
    /// Prepare, merge and verify token datasets.
    Data(data::DataArgs),
    /// Training curves of runs as a PNG: `vishwam plot RUN1 RUN2 --out compare.png`.
    Plot(plot::PlotArgs),
    /// Plan a run for the devices' memory and a time budget (model, batch, precision, remat,
    /// mesh, steps) by the compiled step: `vishwam plan --target-hours 1 --out plan.json`.
    Plan(plan::PlanArgs),
}

/// The config and the runtime of a command that builds a model from a config but runs no
/// training loop (`verify`, `bench train`, `bench distill`): the config-related flags of
/// `vishwam train` without `--resume` and `--no-progress`, which only the loop honours.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// JSON config, merged over the defaults (configs/default.json lists every key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key: `--set training.learning_rate=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Platform (auto, cpu, cuda, tpu); overrides runtime.platform (default auto).
    #[arg(long)]
    pub platform: Option<String>,
    /// Devices; overrides runtime.devices (cpu: virtual devices).
    #[arg(long)]
    pub devices: Option<usize>,
    /// PJRT plugin path, overriding discovery.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config with the command-line overrides applied (`--platform` and `--devices` after
    /// every `--set`, as `vishwam train` applies them), its platform "auto" resolved (logged).
    pub fn load_config(&self) -> anyhow::Result<vishwam::config::Config> {
        let mut cfg = vishwam::config::Config::load(self.config.as_deref(), &self.all_sets())?;
        vishwam::train::resolve_platform(&mut cfg, self.plugin.as_deref())?;
        Ok(cfg)
    }

    /// The `--set` overrides, then `--platform` and `--devices` as overrides of their keys.
    pub fn all_sets(&self) -> Vec<String> {
        self.sets_with_devices(self.devices)
    }

    /// [`ConfigArgs::all_sets`] with `devices` in place of `--devices`.
    pub fn sets_with_devices(&self, devices: Option<usize>) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(p) = &self.platform {
            sets.push(format!("runtime.platform={p}"));
        }
        if let Some(d) = devices {
            sets.push(format!("runtime.devices={d}"));
        }
        sets
    }
}

/// Which platform and plugin to run on (shared by every command that runs programs).
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Platform: auto, cpu, cuda or tpu. auto picks the TPU when libtpu is installed and a
    /// TPU is attached, else CUDA GPUs when their plugin and driver are present, else the CPU.
    #[arg(long, default_value = "auto")]
    pub platform: String,
    /// Number of devices (for cpu: virtual devices).
    #[arg(long)]
    pub devices: Option<usize>,
    /// Path to a PJRT plugin (.so), overriding discovery.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
}

impl RuntimeArgs {
    /// The platform these arguments name; `auto` is resolved as for `vishwam train` (logged).
    pub fn platform(&self) -> anyhow::Result<Platform> {
        if !self.platform.eq_ignore_ascii_case("auto") {
            return Ok(Platform::parse(&self.platform)?);
        }
        let mut cfg = vishwam::config::Config::default();
        vishwam::train::resolve_platform(&mut cfg, self.plugin.as_deref())?;
        Ok(Platform::parse(cfg.runtime.platform.as_str())?)
    }

    /// Opens a client as these arguments say.
    pub fn open(&self) -> anyhow::Result<Client> {
        self.open_on(self.platform()?)
    }

    /// Opens a client on `platform` (what [`RuntimeArgs::platform`] resolved, so that "auto"
    /// is resolved and logged once) with these arguments' devices and plugin.
    pub fn open_on(&self, platform: Platform) -> anyhow::Result<Client> {
        let spec = ClientSpec {
            platform,
            devices: self.devices,
            plugin: self.plugin.clone(),
            config_plugin: None,
        };
        Ok(spec.open()?)
    }
}

/// Parses the command line, runs the command, and maps errors to an exit code.
pub fn main() -> std::process::ExitCode {
    quiet_xla_logs();
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Distill(args) => distill::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Export(args) => export::export(&args),
        Command::Import(args) => export::import(&args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Inspect(args) => inspect::run(&args),
        Command::Tokenizer(args) => {
            data::run_tokenizer(&args).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Data(args) => data::run_data(&args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Plot(args) => plot::run(&args),
        Command::Plan(args) => plan::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// XLA logs through absl to stderr; unless the user chose a level (`TF_CPP_MIN_LOG_LEVEL`) or
/// asked for debug logs, only its errors are shown. Runs first, before any thread exists.
fn quiet_xla_logs() {
    let debug =
        std::env::var("VISHWAM_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"));
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() && !debug {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VISHWAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
