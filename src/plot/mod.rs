//! Training curves as a PNG: train and validation loss against step and against tokens seen,
//! the learning rate and the throughput, one colour per run, read from each run's
//! `metrics.jsonl` (`vishwam plot`, and `RUN/loss.png` at the end of `vishwam train`).
//!
//! Drawn with `plotters` on its bitmap backend; text is set in DejaVu Sans, embedded in the
//! binary (the `dejavu` crate) and rasterised by `ab_glyph`, so plots need no system fonts.

mod draw;
mod metrics;

pub use draw::{draw_runs, HEIGHT, WIDTH};
pub use metrics::{EvalPoint, RunMetrics, TrainPoint};

use std::path::{Path, PathBuf};

/// The name of the loss plot `vishwam train` writes into the run directory.
pub const LOSS_PLOT: &str = "loss.png";

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A metrics file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a metrics file is not a record the plot understands.
    #[error("{} line {line}: {detail}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A metrics file holds no train record with a finite loss.
    #[error(
        "{}: no training loss to plot (no record with a finite `loss`; the run has not logged a step yet?)",
        path.display()
    )]
    NoLoss {
        /// The file.
        path: PathBuf,
    },
    /// The output is not a `.png` file.
    #[error("plot output {}: expected a file name ending in .png", path.display())]
    NotPng {
        /// The path given.
        path: PathBuf,
    },
    /// Drawing or writing the image failed.
    #[error("drawing {}: {detail}", path.display())]
    Draw {
        /// The image file.
        path: PathBuf,
        /// The backend's error.
        detail: String,
    },
}

/// Reads every run (a run directory or a metrics file, see [`RunMetrics::read`]) and draws
/// them into the PNG `out`, named in the legends as [`legend_names`] says.
pub fn plot_runs(runs: &[PathBuf], out: &Path) -> Result<(), PlotError> {
    let mut metrics = runs
        .iter()
        .map(|r| RunMetrics::read(r))
        .collect::<Result<Vec<_>, _>>()?;
    let names = legend_names(&metrics.iter().map(|m| m.path.as_path()).collect::<Vec<_>>());
    for (m, name) in metrics.iter_mut().zip(names) {
        m.name = name;
    }
    draw_runs(&metrics, out)
}

/// The legend names of runs read from the metrics files `paths`: each run's directory name,
/// with as many parent directories as it takes to tell apart runs whose names would be the
/// same (`before/default`, `after/default`).
pub fn legend_names(paths: &[&Path]) -> Vec<String> {
    let dirs: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let dir = p.parent().unwrap_or(&p);
            let parts = dir.components().rev();
            parts
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .collect();
    let suffix = |parts: &[String], depth: usize| {
        let mut kept: Vec<&str> = parts.iter().take(depth).map(String::as_str).collect();
        kept.reverse();
        kept.join("/").replace("//", "/")
    };
    let longest = dirs.iter().map(Vec::len).max().unwrap_or(1);
    dirs.iter()
        .map(|parts| {
            let depth = (1..=longest)
                .find(|&depth| {
                    let mine = suffix(parts, depth);
                    let same = dirs.iter().filter(|other| suffix(other, depth) == mine);
                    same.count() == 1 || depth >= parts.len()
                })
                .unwrap_or(longest);
            suffix(parts, depth)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_names_take_parent_directories_only_where_names_collide() {
        let paths = [
            Path::new("/runs/before/default/metrics.jsonl"),
            Path::new("/runs/after/default/metrics.jsonl"),
            Path::new("/runs/after/moe/metrics.jsonl"),
        ];
        assert_eq!(
            legend_names(&paths),
            ["before/default", "after/default", "moe"]
        );
        // The same run twice: its whole path for both, not an endless search.
        let same = [paths[2], paths[2]];
        assert_eq!(legend_names(&same), ["/runs/after/moe"; 2]);
    }
}
