//! `vishwam plot`: training curves of one or more runs as a PNG, and the loss plot that
//! `vishwam train` and `vishwam distill` write at the end of a run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::plot::{plot_runs, LOSS_PLOT};

/// Arguments of `vishwam plot`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// Run directories (each holding metrics.jsonl) or metrics files; one colour per run,
    /// named in the legends by its directory's name.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The PNG to write. Default for one run: RUN/loss.png; with several runs it must be
    /// given.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

/// Draws the runs' curves and prints where the image went.
pub fn run(args: &PlotArgs) -> anyhow::Result<ExitCode> {
    let out = match (&args.out, args.runs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [run]) => run_dir(run).join(LOSS_PLOT),
        (None, _) => anyhow::bail!(
            "{} runs given: name the image to write with --out FILE.png",
            args.runs.len()
        ),
    };
    plot_runs(&args.runs, &out)?;
    println!("plot: {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The directory of a run given as a directory or as its metrics file.
fn run_dir(run: &Path) -> PathBuf {
    if run.is_dir() {
        return run.to_path_buf();
    }
    match run.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Draws the loss plot of the run `cfg` describes into `<output_dir>/loss.png` from its
/// metrics file, logging how long it took; returns the image's path.
pub fn write_loss_plot(cfg: &Config) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(&cfg.logging.output_dir);
    let out = dir.join(LOSS_PLOT);
    let started = Instant::now();
    plot_runs(&[dir.join(&cfg.logging.metrics_file)], &out)?;
    tracing::info!(
        "drew {} in {:.3}s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}
