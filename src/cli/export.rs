//! `vishwam export` and `vishwam import`: checkpoints to and from Hugging Face Llama
//! directories.

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vishwam::config::Config;
use vishwam::engine::HostArray;
use vishwam::model::hf;
use vishwam::train::checkpoint;

/// Output formats of `vishwam export`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Llama-architecture HF directory (Gemma, `model_type: "gemma"`, for a model with
    /// `activation` gelu_tanh, `norm_offset` 1 and `scale_embeddings`; Gemma 2, `"gemma2"`,
    /// when it also has `post_norms`; Mistral for a Llama with a sliding window in every
    /// block): config.json (read by
    /// transformers 4 and 5: it holds `rope_theta`, `rope_scaling` and `torch_dtype` for 4 and
    /// `rope_parameters` and `dtype` for 5, with equal values), model.safetensors (f32),
    /// tokenizer.json.
    Hf,
}

/// Arguments of `vishwam export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint directory (`.../checkpoints/step_NNNNNNNN`) or a run's output_dir (its newest
    /// checkpoint is used).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Hf)]
    format: ExportFormat,
    /// Directory to write.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `vishwam import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// An HF Llama-architecture directory (model_type llama, mistral, gemma or gemma2; config.json +
    /// *.safetensors [+ tokenizer.json]), in the config.json layout of transformers 4 or 5; a key that changes the computation in
    /// a way vishwam does not implement is an error naming it. Sharded checkpoints
    /// (model.safetensors.index.json) load. A model id (`google/gemma-7b`) or a short name
    /// (`gemma-7b`, when one cached model has it) that is not a directory is looked up in the
    /// local Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub); nothing is downloaded.
    #[arg(long)]
    hf: PathBuf,
    /// A run directory to create: the weights become its step-0 checkpoint, with config.json
    /// (the resolved config) and tokenizer.json beside it. Fine-tune with
    /// `vishwam train --init-from OUT [--config FT.json]`, which takes the model section and
    /// the tokenizer from OUT and the data and training sections from FT.json
    /// (`vishwam train --init-from HF_DIR` reads the HF directory directly).
    #[arg(long)]
    out: PathBuf,
}

/// A checkpoint directory from either a checkpoint path or a run directory.
pub fn resolve_checkpoint(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("manifest.json").is_file() {
        return Ok(path.to_path_buf());
    }
    checkpoint::latest(&path.join("checkpoints")).with_context(|| {
        format!("{} is neither a checkpoint directory (with manifest.json) nor a run directory with checkpoints/", path.display())
    })
}

/// The run directory holding a checkpoint (`<run>/checkpoints/step_N`).
pub fn run_dir_of(checkpoint: &Path) -> Option<PathBuf> {
    checkpoint
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// Writes the HF directory.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let dir = resolve_checkpoint(&args.checkpoint)?;
    let ck = checkpoint::load(&dir)?;
    let cfg = Config::from_json_str(&ck.manifest.config.to_string())
        .context("the checkpoint's config")?;
    let params: BTreeMap<String, HostArray> = vishwam::train::state::params_of(&ck.state);
    let tokenizer = run_dir_of(&dir)
        .map(|r| r.join("tokenizer.json"))
        .filter(|p| p.is_file());
    let special = match &tokenizer {
        Some(t) => vishwam::data::TextTokenizer::from_file(t)?
            .conventional_special_ids()
            .map(|s| (s.pad, s.bos, s.eos)),
        None => None,
    };
    match args.format {
        ExportFormat::Hf => hf::export(&cfg.model, &params, special, &args.out)?,
    }
    if let Some(t) = tokenizer {
        std::fs::copy(&t, args.out.join("tokenizer.json"))
            .with_context(|| format!("copying {}", t.display()))?;
    } else {
        tracing::warn!(
            "no tokenizer.json next to {}; the HF directory has none",
            dir.display()
        );
    }
    println!(
        "exported step {} of {} to {}",
        ck.manifest.step,
        dir.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates a run directory whose step-0 checkpoint holds the HF weights.
pub fn import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let hf_dir = hf::cache::local_dir(&args.hf)?;
    let (model, params) = hf::import(&hf_dir)?;
    let mut cfg = Config {
        model,
        ..Config::default()
    };
    cfg.logging.output_dir = args.out.display().to_string();
    cfg.validate().context("the imported model's config")?;
    let plan = vishwam::train::sharding_plan(&cfg, "cpu", 1)?;
    let layout = vishwam::train::StepLayout::new(&cfg, &plan)?;
    let mut state = vishwam::train::initial_state(&cfg, &layout);
    for (name, array) in params {
        state.insert(vishwam::train::state::param_leaf(&name), array);
    }
    let tok = hf_dir.join("tokenizer.json");
    if tok.is_file() {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        std::fs::copy(&tok, args.out.join("tokenizer.json"))?;
        cfg.data.tokenizer = Some(args.out.join("tokenizer.json").display().to_string());
    } else {
        tracing::warn!(
            "{} has no tokenizer.json; fine-tuning needs data.tokenizer set to the one the weights were trained with",
            hf_dir.display()
        );
    }
    let config = cfg.to_value();
    let dir = checkpoint::save(
        &args.out.join("checkpoints"),
        0,
        &state,
        config,
        serde_json::Value::Null,
        1,
    )?;
    std::fs::write(args.out.join("config.json"), cfg.to_json_pretty())?;
    println!(
        "imported {} into {} (config at {}); fine-tune with `vishwam train --init-from {} [--config FILE]`",
        hf_dir.display(),
        dir.display(),
        args.out.join("config.json").display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
