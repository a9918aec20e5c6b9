//! `vishwam eval`: mean loss and perplexity of a checkpoint on some text.

use super::generate::ModelArgs;
use std::process::ExitCode;
use vishwam::generate;

/// Arguments of `vishwam eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to evaluate (one document).
    #[arg(
        long = "eval_text",
        alias = "eval-text",
        conflicts_with = "data",
        required_unless_present = "data"
    )]
    eval_text: Option<String>,
    /// Files, directories or globs to evaluate (`.jsonl`: the config's data.text_field of
    /// each record; other files: one document each).
    #[arg(long, num_args = 1..)]
    data: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `vishwam eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let (mut model, tokenizer) = args.model.open()?;
    let cfg = model.config().clone();
    let eos = generate::eos_id(&cfg, &tokenizer);
    let documents = match &args.eval_text {
        Some(text) => vec![text.clone()],
        None => generate::read_documents(&args.data, &cfg.data.text_field)?,
    };
    let stream = generate::document_stream(&tokenizer, documents, eos)?;
    let result = model.evaluate(&stream)?;
    let (dir, step) = model
        .checkpoint()
        .map(|(d, s)| (d.display().to_string(), s))
        .unwrap_or_default();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "checkpoint": dir,
                "step": step,
                "loss": result.loss,
                "perplexity": result.perplexity,
                "tokens": result.tokens,
                "window": cfg.seq_len(),
            })
        );
    } else {
        println!(
            "{dir} (step {step}): loss {:.4}, perplexity {:.3} over {} tokens (windows of {})",
            result.loss,
            result.perplexity,
            result.tokens,
            cfg.seq_len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
