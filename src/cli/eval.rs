//! `vishwam eval`: mean loss, perplexity and token accuracy of a checkpoint on some text.

use super::generate::ModelArgs;
use std::process::ExitCode;
use vishwam::config::InvalidUtf8Policy;
use vishwam::data::sources::InvalidUtf8;
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
    /// Files, directories or globs to evaluate (`.jsonl`: the run's data.text_field of each
    /// record; `.csv`: that column, one document per row; other files: one document each).
    #[arg(long, num_args = 1..)]
    data: Vec<String>,
    /// Bytes in --data that are not valid UTF-8: an error naming the file and offset, or
    /// replaced by U+FFFD (default: the run's data.invalid_utf8).
    #[arg(
        long = "invalid-utf8",
        alias = "invalid_utf8",
        value_enum,
        requires = "data"
    )]
    invalid_utf8: Option<InvalidUtf8>,
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
        None => {
            let invalid_utf8 = args.invalid_utf8.unwrap_or(match cfg.data.invalid_utf8 {
                InvalidUtf8Policy::Error => InvalidUtf8::Error,
                InvalidUtf8Policy::Replace => InvalidUtf8::Replace,
            });
            generate::read_documents(&args.data, &cfg.data.text_field, invalid_utf8)?
        }
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
                "accuracy": result.accuracy,
                "tokens": result.tokens,
                "correct": result.correct,
                "window": cfg.seq_len(),
            })
        );
    } else {
        println!(
            "{dir} (step {step}): loss {:.4}, perplexity {:.3}, token accuracy {:.4} ({} of {} tokens; windows of {})",
            result.loss,
            result.perplexity,
            result.accuracy,
            result.correct,
            result.tokens,
            cfg.seq_len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
