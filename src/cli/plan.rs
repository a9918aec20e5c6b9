//! `vishwam plan`: a run planned from the devices' memory and a time budget, printed as a
//! table and written as a config; and the `--target-hours` side of `vishwam train`.

use super::ConfigArgs;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::plan::{plan_run, MemoryBudget, MemoryProbe, Plan, PlanRequest, StepTimeModel};
use vishwam::runtime::{ClientSpec, CompileCache, Platform};

/// MFU the roofline assumes when `--mfu` is not given (vishwam reaches 40-50% on an H100).
const DEFAULT_MFU: f64 = 0.4;

/// The planning flags shared by `vishwam plan` and `vishwam train --target-hours`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlanFlags {
    /// Plan the run to end within this many hours: model shape, batch, precision, remat,
    /// attention, mesh and steps are chosen by compiled memory and step time (see `vishwam
    /// plan`). With `vishwam train` the plan is logged, then trained, and no step starts in
    /// the budget's last 5% (kept for the final evaluation and checkpoint).
    #[arg(long = "target-hours", value_name = "H")]
    pub target_hours: Option<f64>,
    /// Plan for this much memory per device (GiB) instead of what the device reports (on the
    /// CPU plugin, which reports none: instead of the host's available memory). With
    /// `vishwam train --validate-setup`: the memory the compiled step must fit in.
    #[arg(long = "memory-gib", value_name = "N", value_parser = parse_gib)]
    pub memory_gib: Option<f64>,
    /// Fraction of device memory the plan keeps free [default: 0.1].
    #[arg(long = "memory-reserve", value_name = "F")]
    pub memory_reserve: Option<f64>,
    /// Estimate step time with a roofline at this peak TFLOP/s per device instead of running
    /// a few real steps of the candidates on the devices.
    #[arg(long = "peak-tflops", value_name = "T")]
    pub peak_tflops: Option<f64>,
    /// Fraction of the peak the roofline assumes [default: 0.4]; needs --peak-tflops.
    #[arg(long, requires = "peak_tflops")]
    pub mfu: Option<f64>,
}

/// A positive number of GiB.
fn parse_gib(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive number of GiB")),
    }
}

impl PlanFlags {
    /// An error when a planning flag is given without --target-hours (it would change nothing).
    pub fn refuse_without_target(&self, command: &str) -> anyhow::Result<()> {
        if self.target_hours.is_some() {
            return Ok(());
        }
        let given = [
            ("--memory-gib", self.memory_gib.is_some()),
            ("--memory-reserve", self.memory_reserve.is_some()),
            ("--peak-tflops", self.peak_tflops.is_some()),
            ("--mfu", self.mfu.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "{flag} plans a run and applies only with --target-hours in `{command}`; for a \
                 memory budget of training.batch_size \"auto\" set training.memory_gib and \
                 training.memory_reserve instead"
            );
        }
        Ok(())
    }
}

/// Arguments of `vishwam plan`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// The base config (data, tokenizer, vocabulary, optimiser, output directory) and the
    /// platform and devices to plan for.
    #[command(flatten)]
    pub run: ConfigArgs,
    /// Memory, reserve, time budget and step-time model.
    #[command(flatten)]
    pub flags: PlanFlags,
    /// Write the planned config here (`vishwam train --config FILE` runs it unchanged).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Plans `cfg` (platform resolved) with `flags`; the budget counts from `started` when given
/// (planning inside the run).
pub fn plan_config(
    cfg: &Config,
    flags: &PlanFlags,
    plugin: Option<PathBuf>,
    started: Option<Instant>,
) -> anyhow::Result<Plan> {
    let hours = flags
        .target_hours
        .context("--target-hours is required: the plan fits the run into that budget")?;
    let platform = Platform::parse(cfg.runtime.platform.as_str())?;
    let client = ClientSpec {
        platform,
        devices: cfg.requested_devices(),
        plugin,
        config_plugin: cfg.runtime.plugin.as_ref().map(PathBuf::from),
    }
    .open()?;
    let devices = cfg.requested_devices().unwrap_or(client.num_devices());
    let kind = client
        .devices()
        .first()
        .map(|d| d.kind())
        .transpose()?
        .unwrap_or_default();
    let budget = MemoryBudget::of(&client, devices, flags.memory_gib, "--memory-gib")?;
    let (_, _, prepared) = vishwam::train::prepare_data(cfg)?;
    let dataset_tokens = (prepared.num_tokens() as f64 * (1.0 - cfg.data.val_fraction)) as u64;
    let sample_tokens = vishwam::plan::sample_tokens(&prepared);
    let cache = match cfg.runtime.compile_cache {
        true => CompileCache::default_dir(),
        false => CompileCache::disabled(),
    };
    let mut probe = MemoryProbe::new(client, devices, cache)?;
    let time_model = match flags.peak_tflops {
        Some(peak_tflops) => StepTimeModel::Roofline {
            peak_tflops,
            mfu: flags.mfu.unwrap_or(DEFAULT_MFU),
        },
        None => StepTimeModel::Measure,
    };
    let request = PlanRequest {
        base: cfg.clone(),
        target_hours: hours,
        memory_reserve: flags
            .memory_reserve
            .unwrap_or(vishwam::config::DEFAULT_MEMORY_RESERVE),
        budget,
        time_model,
        dataset_tokens: Some(dataset_tokens),
        sample_tokens: Some(sample_tokens.into()),
        started,
    };
    let t = Instant::now();
    let plan = plan_run(&mut probe, &request)?;
    tracing::info!(
        "planned in {:.1}s ({} step(s) compiled, {:.1}s compiling) for {} {} device(s) ({kind})",
        t.elapsed().as_secs_f64(),
        plan.compiles,
        probe.compile_seconds,
        devices,
        cfg.runtime.platform
    );
    Ok(plan)
}

/// Runs `vishwam plan`.
pub fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.run.load_config()?;
    let plan = plan_config(&cfg, &args.flags, args.run.plugin.clone(), None)?;
    print!("{}", plan.table());
    if let Some(out) = &args.out {
        std::fs::write(out, plan.config.to_json_pretty() + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!(
            "plan written to {}; run it with `vishwam train --config {}`",
            out.display(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
