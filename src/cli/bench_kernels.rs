//! `vishwam bench kernels --trace A.xplane.pb --trace B.xplane.pb --steps 3`: where traced
//! steps spend their GPU time, by kind of kernel, side by side (vishwam against JAX: both
//! traces come from XLA's GPU profiler), and each trace's costliest kernels.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use vishwam::train::trace::kernels::{summarize, KernelKind, KernelSummary};
use vishwam::train::trace::xspace::XSpace;

/// Arguments of `vishwam bench kernels`.
#[derive(clap::Args, Debug)]
pub struct KernelsBenchArgs {
    /// An `.xplane.pb` trace (a vishwam run's `plugins/profile/*/*.xplane.pb`, or JAX's
    /// `jax.profiler.trace` output), as `LABEL=PATH` or `PATH`; repeat to compare.
    #[arg(long = "trace", required = true)]
    traces: Vec<String>,
    /// Steps each trace covers, one value for all or one per trace in order; figures are
    /// per step.
    #[arg(long, default_values_t = [1usize])]
    steps: Vec<usize>,
    /// Costliest kernels listed per trace.
    #[arg(long, default_value_t = 15)]
    top: usize,
}

/// Runs `vishwam bench kernels`.
pub fn run(args: &KernelsBenchArgs) -> anyhow::Result<ExitCode> {
    let n = args.traces.len();
    if args.steps.len() != 1 && args.steps.len() != n {
        anyhow::bail!(
            "--steps takes one value or one per --trace ({n} traces, {} values)",
            args.steps.len()
        );
    }
    if args.steps.contains(&0) {
        anyhow::bail!("--steps must be at least 1");
    }
    let mut labels = Vec::with_capacity(n);
    let mut summaries = Vec::with_capacity(n);
    for (i, spec) in args.traces.iter().enumerate() {
        let (label, path) = match spec.split_once('=') {
            Some((l, p)) => (l.to_string(), PathBuf::from(p)),
            None => (format!("trace {}", i + 1), PathBuf::from(spec)),
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let space = XSpace::decode(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not an XSpace trace: {e}", path.display()))?;
        let summary = summarize(&space).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        labels.push(label);
        summaries.push(summary);
    }
    let steps: Vec<f64> = (0..n)
        .map(|i| args.steps[if args.steps.len() == 1 { 0 } else { i }] as f64)
        .collect();
    let ms = |ps: i64, i: usize| ps as f64 / 1e9 / steps[i];

    print!("{:<24}", "ms per step");
    for l in &labels {
        print!("{l:>14}");
    }
    if n == 2 {
        print!("{:>14}", "difference");
    }
    println!();
    let row = |name: &str, value: &dyn Fn(&KernelSummary) -> i64| {
        print!("{name:<24}");
        let v: Vec<f64> = (0..n).map(|i| ms(value(&summaries[i]), i)).collect();
        for x in &v {
            print!("{x:>14.3}");
        }
        if n == 2 {
            print!("{:>+14.3}", v[0] - v[1]);
        }
        println!();
    };
    for kind in KernelKind::ALL {
        row(kind.label(), &|s| {
            s.by_kind.get(&kind).map_or(0, |t| t.total_ps)
        });
    }
    row("all kernels", &|s| s.kernel_ps());
    row("device busy", &|s| s.busy_ps);
    row("idle between kernels", &|s| s.idle_ps());
    row("first to last kernel", &|s| s.span_ps);
    for (i, s) in summaries.iter().enumerate() {
        println!(
            "\n{}: {} GPU(s); costliest kernels (launches and ms per step):",
            labels[i], s.devices
        );
        for (name, kind, time) in s.top(args.top) {
            println!(
                "  {:>9.3} ms {:>6.1}x  {:<20} {}",
                ms(time.total_ps, i),
                time.count as f64 / steps[i],
                kind.label(),
                name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
