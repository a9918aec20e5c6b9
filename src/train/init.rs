//! `--init-from`: the weights a run starts from instead of a random initialisation, read from
//! a vishwam checkpoint, a run directory (its newest checkpoint) or a Hugging Face Llama
//! directory, with the architecture they were trained with (the checkpoint's manifest or
//! `config.json`), as the Pufferfish guide's "automatic architecture detection" asks.
//!
//! The run's `model` section comes from the weights wherever the user's config names no model
//! key; every architecture key the user does name must equal the weights' value. Keys that
//! leave the trained function unchanged on the training windows may differ (see
//! [`RUN_SETTINGS`]). The optimiser state, the step and the random state start fresh, as
//! [`initial_state`] (the state of a run started from a random initialisation) makes them.

use super::layout::StepLayout;
use super::weights::{self, WeightsError, WeightsSource};
use super::{TrainError, Trainer};
use crate::config::{Config, ModelConfig, NamedKeys};
use crate::data::TextTokenizer;
use crate::engine::HostArray;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Model keys a fine-tuning run may set to other values than the weights': dropout and the
/// initialisation of parameters the weights do not hold (distillation projections), the MoE
/// routing regularisers, the context length and RoPE context scaling (RoPE has no weights;
/// `max_seq_len` and `rope_scaling` are how a model is fine-tuned for a longer context).
pub const RUN_SETTINGS: &[&str] = &[
    "dropout_rate",
    "init_std",
    "max_seq_len",
    "rope_scaling",
    "router_noise",
    "aux_loss_coef",
    "use_lossfreebalance",
    "lossfree_update_rate",
    "expert_capacity",
    "capacity_factor",
];

/// Weights to start a run from, with the architecture and tokenizer they came with.
#[derive(Debug, Clone)]
pub struct InitWeights {
    /// Where they were read from.
    pub source: WeightsSource,
    /// The architecture they were trained with.
    pub model: ModelConfig,
    /// Every parameter of `model` (f32), by vishwam name.
    pub params: BTreeMap<String, HostArray>,
    /// Parameters the source holds beyond `model`'s (e.g. a distilled run's projections).
    pub extra: Vec<String>,
    /// The tokenizer.json that came with them, if any.
    pub tokenizer: Option<PathBuf>,
}

fn init_error(path: &Path, detail: impl Into<String>) -> TrainError {
    TrainError::InitFrom {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl InitWeights {
    /// Reads the weights at `path` ([`weights::read`]): a checkpoint directory
    /// (`.../checkpoints/step_N`), a run directory (its newest checkpoint), an HF Llama
    /// directory (config.json + *.safetensors), or a model id or short name in the local
    /// Hugging Face cache.
    pub fn load(path: &Path) -> Result<InitWeights, TrainError> {
        let stored = weights::read(path).map_err(|e| match e {
            WeightsError::Missing | WeightsError::NotADirectory => init_error(path, "no such directory; name a vishwam run directory, a checkpoint directory (step_NNNNNNNN), a Hugging Face Llama directory or a model id in the local Hugging Face cache (google/gemma-7b)"),
            WeightsError::NoWeights => init_error(path, "holds neither a vishwam checkpoint (manifest.json, or step_NNNNNNNN directories directly or under checkpoints/) nor a Hugging Face Llama model (config.json and *.safetensors)"),
            WeightsError::Checkpoint(e) => *e,
            WeightsError::Hf(e) => TrainError::Hf(*e),
            WeightsError::Cache(e) => init_error(path, e.to_string()),
            WeightsError::Config { dir, detail } => init_error(&dir, detail),
        })?;
        let (params, extra) = weights::model_params(&stored.model, stored.params)
            .map_err(|detail| init_error(stored.source.dir(), detail))?;
        Ok(InitWeights {
            source: stored.source,
            model: stored.model,
            params,
            extra,
            tokenizer: stored.tokenizer,
        })
    }

    /// The run's config: the user's file and overrides loaded over `base` whose model section
    /// is the weights' (and whose tokenizer is theirs, when they came with one); every model key
    /// the user names outside [`RUN_SETTINGS`] must equal the weights' value.
    pub fn resolve_config(
        &self,
        file: Option<&Path>,
        overrides: &[String],
    ) -> Result<(Config, NamedKeys), TrainError> {
        let mut base = Config {
            model: self.model.clone(),
            ..Config::default()
        };
        base.data.tokenizer = self.tokenizer.as_ref().map(|p| p.display().to_string());
        let (cfg, named) = Config::load_over(&base, file, overrides)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        self.check_model(&cfg.model, &named)?;
        if self.tokenizer.is_none() && !named.contains("data.tokenizer") {
            return Err(init_error(
                self.source_dir(),
                "came without a tokenizer.json, and a tokenizer trained afresh would give its embeddings other meanings; set data.tokenizer to the tokenizer these weights were trained with",
            ));
        }
        Ok((cfg, named))
    }

    /// Checks every architecture key `named` names against the weights' model.
    pub fn check_model(&self, run: &ModelConfig, named: &NamedKeys) -> Result<(), TrainError> {
        let ours = architecture(run);
        let theirs = architecture(&self.model);
        let mut mismatches = Vec::new();
        for (key, value) in &ours {
            let full = format!("model.{key}");
            if named.contains(&full) && theirs.get(key) != Some(value) {
                mismatches.push(format!(
                    "{full} = {value} in the config, {} in the weights",
                    theirs.get(key).map_or("absent".into(), Value::to_string)
                ));
            }
        }
        if mismatches.is_empty() {
            return Ok(());
        }
        Err(init_error(
            self.source_dir(),
            format!(
                "its architecture does not match the config's model section: {}; leave these keys out of the config (the model section comes from the weights) or start from weights of that shape",
                mismatches.join("; ")
            ),
        ))
    }

    /// Checks that the run reads text with the tokenizer that came with the weights.
    pub fn check_tokenizer(&self, run: &TextTokenizer) -> Result<(), TrainError> {
        let Some(path) = &self.tokenizer else {
            return Ok(());
        };
        let theirs = TextTokenizer::from_file(path)
            .map_err(|e| init_error(path, format!("its tokenizer: {e}")))?;
        if theirs.hash() != run.hash() {
            return Err(init_error(
                self.source_dir(),
                format!(
                    "the weights were trained with the tokenizer {} (hash {}), but the run reads its data with {} (hash {}); leave data.tokenizer unset to use theirs",
                    path.display(),
                    &theirs.hash()[..16],
                    run.origin(),
                    &run.hash()[..16]
                ),
            ));
        }
        Ok(())
    }

    fn source_dir(&self) -> &Path {
        match &self.source {
            WeightsSource::Checkpoint { dir, .. } | WeightsSource::HuggingFace { dir } => dir,
        }
    }
}

/// The model section a checkpoint's manifest records.
/// The architecture keys of a model (every model key outside [`RUN_SETTINGS`]) with their
/// resolved values (`num_kv_heads`, `head_dim`, `mlp_dim` and `expert_dim` as computed).
fn architecture(m: &ModelConfig) -> BTreeMap<String, Value> {
    let mut keys: BTreeMap<String, Value> = match serde_json::to_value(m) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    keys.retain(|k, _| !RUN_SETTINGS.contains(&k.as_str()));
    keys.insert("num_kv_heads".into(), m.kv_heads().into());
    keys.insert("head_dim".into(), m.head_dim().into());
    keys.insert("mlp_dim".into(), m.mlp_dim().into());
    keys.insert("expert_dim".into(), m.expert_dim().into());
    if !m.use_moe {
        // The MoE keys have no effect on a dense model.
        for k in [
            "num_experts",
            "experts_per_token",
            "moe_layer_frequency",
            "num_shared_experts",
            "expert_dim",
        ] {
            keys.remove(k);
        }
    }
    keys
}

impl InitWeights {
    /// Fine-tuning into the directory the weights come from would mix the two runs'
    /// checkpoints and metrics: an error naming `logging.output_dir` when the weights lie
    /// inside `output_dir`. [`Trainer::init_from`] checks it too; a command calls it before
    /// it writes anything into the output directory.
    pub fn check_outside(&self, output_dir: &Path) -> Result<(), TrainError> {
        refuse_source_in_output_dir(self, output_dir)
    }
}

fn refuse_source_in_output_dir(weights: &InitWeights, output_dir: &Path) -> Result<(), TrainError> {
    let (Ok(source), Ok(output)) = (
        weights.source.dir().canonicalize(),
        output_dir.canonicalize(),
    ) else {
        return Ok(()); // An output directory that does not exist yet holds nothing.
    };
    if !source.starts_with(&output) {
        return Ok(());
    }
    Err(TrainError::InitFrom {
        path: weights.source.dir().to_path_buf(),
        detail: format!(
            "lies inside this run's logging.output_dir {}, whose checkpoints and metrics a \
             fresh run replaces; write the fine-tuned run elsewhere with --set \
             logging.output_dir=NEW_DIR",
            output_dir.display()
        ),
    })
}

impl Trainer {
    /// Starts from `weights` instead of the initialisation: their parameters are placed by
    /// the current mesh's shardings (whatever mesh or program wrote them); the optimiser
    /// moments, the step, the random state and any loss-scale or FP8 state are those of step
    /// 0. Parameters the run has beyond the weights' (distillation projections) keep their
    /// initialisation.
    ///
    /// Weights read from inside the run's own `logging.output_dir` are refused: the fresh run
    /// would set the run they came from aside (or, before, prune its checkpoints).
    pub fn init_from(&mut self, weights: &InitWeights) -> Result<(), TrainError> {
        refuse_source_in_output_dir(weights, Path::new(&self.config.logging.output_dir))?;
        let mut state = initial_state(&self.config, &self.layout);
        for (name, array) in &weights.params {
            let key = super::state::param_leaf(name);
            let fits = state.get(&key).is_some_and(|init| {
                init.shape == array.shape && init.element_type == array.element_type
            });
            if !fits {
                return Err(TrainError::InitFrom {
                    path: PathBuf::from(weights.source.to_string()),
                    detail: format!(
                        "`{name}` ({}{:?}) has no place of that shape in the run's model",
                        array.element_type.mlir_name(),
                        array.shape
                    ),
                });
            }
            state.insert(key, array.clone());
        }
        self.load_state(&state)
    }
}

/// The state at step 0 of `layout` (initial parameters, zero optimiser state, the seeded
/// random state, ...), by name.
pub fn initial_state(cfg: &Config, layout: &StepLayout) -> BTreeMap<String, HostArray> {
    layout.state.initial_values(cfg.training.seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(model: ModelConfig) -> InitWeights {
        InitWeights {
            source: WeightsSource::HuggingFace {
                dir: PathBuf::from("hf"),
            },
            model,
            params: BTreeMap::new(),
            extra: Vec::new(),
            tokenizer: None,
        }
    }

    fn named(sets: &[&str]) -> NamedKeys {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load_over(&Config::default(), None, &sets)
            .unwrap()
            .1
    }

    #[test]
    fn named_architecture_keys_must_match_and_run_settings_may_differ() {
        let theirs = ModelConfig {
            num_kv_heads: None,
            ..ModelConfig::default()
        };
        let w = weights(theirs.clone());
        // Spelled differently, resolved the same: accepted.
        let run = ModelConfig {
            num_kv_heads: Some(theirs.num_heads),
            dropout_rate: 0.1,
            max_seq_len: 4 * theirs.max_seq_len,
            ..theirs.clone()
        };
        w.check_model(
            &run,
            &named(&[
                "model.num_kv_heads=8",
                "model.dropout_rate=0.1",
                "model.max_seq_len=512",
            ]),
        )
        .unwrap();
        // A different width, named: refused with both values.
        let wider = ModelConfig {
            hidden_dim: 512,
            ..theirs.clone()
        };
        let err = w
            .check_model(&wider, &named(&["model.hidden_dim=512"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.hidden_dim = 512 in the config, 256 in the weights"),
            "{err}"
        );
        // Not named: not the user's, so not checked here (the run takes the weights' value).
        w.check_model(&wider, &named(&["training.max_steps=3"]))
            .unwrap();
    }

    #[test]
    fn weights_without_a_tokenizer_need_data_tokenizer() {
        let w = weights(ModelConfig::default());
        let err = w.resolve_config(None, &[]).unwrap_err().to_string();
        assert!(err.contains("set data.tokenizer"), "{err}");
        let (cfg, _) = w
            .resolve_config(None, &["data.tokenizer=t.json".into()])
            .unwrap();
        assert_eq!(cfg.data.tokenizer.as_deref(), Some("t.json"));
    }
}
