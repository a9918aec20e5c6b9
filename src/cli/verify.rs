//! `vishwam verify`: one batch through the XLA program and the Candle reference.

use super::ConfigArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use vishwam::reference::format_table;
use vishwam::train::{checkpoint, open_engine};
use vishwam::verify::{random_batch, verify, VerifyOptions};

/// Arguments of `vishwam verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    run: ConfigArgs,
    /// Start from this checkpoint's parameters (default: the seeded initialisation).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Optimizer steps to compare parameters after.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Tokens per LM-head chunk in the loss (default: automatic).
    #[arg(long)]
    loss_chunk: Option<usize>,
}

/// Prints the comparison table; fails when any tensor is out of tolerance.
pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut sets = vec!["model.dropout_rate=0".to_string()];
    sets.extend(args.run.sets.iter().cloned());
    let run = ConfigArgs {
        sets,
        ..args.run.clone()
    };
    let cfg = run.load_config()?;
    let (engine, plan) = open_engine(&cfg, run.plugin.clone())?;
    let params = match &args.checkpoint {
        Some(dir) => {
            let ck = checkpoint::load(dir)?;
            vishwam::train::state::params_of(&ck.state)
        }
        None => vishwam::model::init_params(&cfg.model, cfg.training.seed),
    };
    let batch = random_batch(&cfg, &plan, cfg.training.seed);
    let report = verify(
        &cfg,
        engine,
        plan,
        &params,
        &batch,
        VerifyOptions {
            steps: args.steps,
            loss_chunk: args.loss_chunk,
        },
    )?;
    print!("{}", format_table(&report.rows));
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
