//! JSON configuration: sections, defaults, merging, `--set` overrides, validation.
//!
//! A config file is parsed as a JSON value and deep-merged over the value of
//! [`Config::default`] (objects merge key by key; scalars, lists and `tpu.mesh_shape` are
//! replaced whole), `--set section.key=value` overrides are applied on top, and the result is
//! read into typed sections. Every key is either read or reported as unknown; wrong types and
//! impossible values are collected and reported together, each naming the key path, the value
//! and the rule. Keys that need a capability the trainer lacks are not refused here: see
//! [`Config::unsupported`]. The key table for users is `configs/README.md`.

mod checks;
mod data;
mod distill;
mod document;
mod error;
mod features;
mod model;
mod named;
mod precision;
mod reader;
mod runtime;
mod tpu;
mod training;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::Value;

pub use data::{
    DataConfig, DataFormat, DataSource, DatasetType, DatasetsConfig, InvalidUtf8Policy,
    MergeStrategy, SequenceConfig,
};
pub use distill::{DistillationConfig, IntermediateLoss, LayerMapping};
pub use error::{ConfigError, ConfigIssue};
pub use features::{Feature, Features, UnsupportedSetting};
pub use model::{
    MlpActivation, ModelConfig, RopeScaling, RopeScalingType, DEFAULT_CAPACITY_FACTOR,
};
pub use named::NamedKeys;
pub use precision::{
    AttentionBackend, ComputeDtype, CudnnAttentionBlocker, Fp8Format, Fp8Recipe, MemoryConfig,
    OptimizationConfig, CUDNN_MAX_HEAD_DIM, DEFAULT_ATTENTION_BLOCK,
};
pub use runtime::{Platform, RuntimeConfig};
pub use tpu::{
    DeviceStrategy, LogicalAxisRule, MeshShape, TpuConfig, DEFAULT_BATCH_AXES, LOGICAL_AXES,
};
pub use training::{
    BatchGeometry, LoggingConfig, LrSchedule, Optimizer, TrainingConfig, BATCH_SIZE_AUTO,
    DEFAULT_MEMORY_RESERVE,
};

use checks::Checks;
use document::{apply_override, merge, parse_document};
use error::show;
use reader::ObjectReader;

/// The whole configuration of a run; `Config::default()` trains a small model on the CPU.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    /// Free text describing the configuration, printed in the logs. Default null.
    pub description: Option<String>,
    /// The transformer.
    pub model: ModelConfig,
    /// Optimiser, schedule, batch, step budget.
    pub training: TrainingConfig,
    /// Device mesh and parallelism.
    pub tpu: TpuConfig,
    /// Rematerialisation, blocked attention, KV cache.
    pub memory: MemoryConfig,
    /// Precision policy, FP8, attention blocks, weight sharding.
    pub optimization: OptimizationConfig,
    /// Teacher-student distillation.
    pub distillation: DistillationConfig,
    /// Lengths and special token ids.
    pub sequence: SequenceConfig,
    /// Logging, evaluation, checkpoint and profile cadences; output paths.
    pub logging: LoggingConfig,
    /// Training text, tokenizer, loader.
    pub data: DataConfig,
    /// Mixtures of several datasets.
    pub datasets: DatasetsConfig,
    /// Platform, devices, plugin, compile cache.
    pub runtime: RuntimeConfig,
}

impl Config {
    /// Loads `path` (or only the defaults when `None`), applies `--set` overrides in order, and
    /// validates. Errors name the file, the key path, the value and the rule.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        let (origin, file) = read_config_file(path, overrides)?;
        Config::resolve(None, file, overrides, &origin)
    }

    /// Parses a JSON document, merges it over the defaults and validates it.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let origin = "config text";
        let value = parse_document(text, origin)?;
        Config::resolve(None, Some(value), &[], origin)
    }

    /// The fully resolved configuration as pretty JSON (every key, defaults included); loading
    /// it gives back an equal `Config`.
    pub fn to_json_pretty(&self) -> String {
        // Plain structs with string keys cannot fail to serialise (serde_json writes a
        // non-finite number as null, which `validate` refuses anyway).
        serde_json::to_string_pretty(self).expect("a Config always serialises to JSON")
    }

    /// Checks values and cross-key rules; every problem found is reported at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let issues = self.collect_issues();
        match issues.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Invalid {
                origin: "configuration".to_string(),
                issues,
            }),
        }
    }

    /// Settings that need a [`Feature`] outside `supported`, each naming its key and remedy.
    /// The trainer calls this with what it implements and refuses to start when it is not empty.
    pub fn unsupported(&self, supported: Features) -> Vec<UnsupportedSetting> {
        features::unsupported(self, supported)
    }

    /// [`Config::unsupported`] as a `Result` whose error lists every unsupported setting.
    pub fn require_features(&self, supported: Features) -> Result<(), ConfigError> {
        let settings = self.unsupported(supported);
        match settings.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Unsupported { settings }),
        }
    }

    /// Compute dtype: bf16 with `use_bfloat16`, else f16 with `use_dynamic_scale`, else bf16
    /// with `mixed_precision`, else f32. Master weights are f32 in every case.
    pub fn compute_dtype(&self) -> ComputeDtype {
        precision::compute_dtype(self.tpu.use_bfloat16, &self.optimization)
    }

    /// The block length of blocked (memory-efficient) attention, when attention runs blocked:
    /// with `memory.attention_memory_efficient` or an explicit `optimization.block_size`
    /// (null: [`DEFAULT_ATTENTION_BLOCK`]).
    pub fn attention_block(&self) -> Option<usize> {
        precision::attention_block(&self.memory, &self.optimization)
    }

    /// The settings that keep cuDNN flash attention from running (empty when it can).
    pub fn cudnn_attention_blockers(&self) -> Vec<CudnnAttentionBlocker> {
        precision::cudnn_attention_blockers(self)
    }

    /// Devices asked for: `runtime.devices`, else `tpu.tpu_cores`, else the mesh's fixed size;
    /// `None` means every device the platform shows (one on the CPU).
    pub fn requested_devices(&self) -> Option<usize> {
        runtime::requested_devices(&self.tpu, &self.runtime)
    }

    /// The batch of one optimizer step over `batch_shards` batch shards (the product of the
    /// sizes of the mesh axes that split the batch, known once the mesh is built).
    pub fn batch_geometry(&self, batch_shards: usize) -> BatchGeometry {
        BatchGeometry::new(&self.training, batch_shards)
    }

    /// Tokens per training window: `sequence.max_length`, or `model.max_seq_len`.
    pub fn seq_len(&self) -> usize {
        self.sequence.max_length_or(self.model.max_seq_len)
    }

    /// The training data is the `datasets` mixture rather than `data.source`.
    pub fn uses_dataset_mixture(&self) -> bool {
        !self.datasets.paths.is_empty()
    }

    /// Merges `file` and `overrides` over `base` (the defaults when `None`) and validates.
    fn resolve(
        base: Option<Value>,
        file: Option<Value>,
        overrides: &[String],
        origin: &str,
    ) -> Result<Config, ConfigError> {
        let mut merged = base.unwrap_or_else(|| Config::default().to_value());
        if let Some(file) = file {
            merge(&mut merged, file, "");
        }
        for arg in overrides {
            apply_override(&mut merged, arg)?;
        }
        let mut config = Config::from_merged(&merged).map_err(|issues| ConfigError::Invalid {
            origin: origin.to_string(),
            issues,
        })?;
        config.fit_warmup_to_shortened_run(overrides);
        let issues = config.collect_issues();
        match issues.is_empty() {
            true => Ok(config),
            false => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                issues,
            }),
        }
    }

    /// A run shortened on the command line (`--set training.max_steps=5`) keeps the file's
    /// schedule shape: its warmup is cut to the new length (with a warning) instead of being
    /// rejected. Warmup longer than max_steps written in a file, or set together on the
    /// command line, is still an error.
    fn fit_warmup_to_shortened_run(&mut self, overrides: &[String]) {
        let sets = |key: &str| {
            overrides
                .iter()
                .any(|o| o.trim_start().starts_with(&format!("{key}=")))
        };
        let t = &mut self.training;
        if sets("training.max_steps")
            && !sets("training.warmup_steps")
            && t.warmup_steps > t.max_steps
        {
            tracing::warn!(
                "training.warmup_steps {} exceeds the --set training.max_steps {}; warming up for {} steps",
                t.warmup_steps,
                t.max_steps,
                t.max_steps
            );
            t.warmup_steps = t.max_steps;
        }
    }

    /// The config as a JSON value (what [`Config::to_json_pretty`] prints).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a Config always serialises to JSON")
    }

    /// Reads every section from a merged document; collects type errors and unknown keys.
    fn from_merged(value: &Value) -> Result<Config, Vec<ConfigIssue>> {
        let mut config = Config::default();
        let mut issues = Vec::new();
        let Value::Object(map) = value else {
            // `parse_document` only lets objects through; keep the error typed all the same.
            issues.push(ConfigIssue::Invalid {
                key: "(document)".into(),
                expected: "an object of sections".into(),
                got: show(value),
            });
            return Err(issues);
        };
        let mut root = ObjectReader::new("", map, &mut issues);
        root.opt_text("description", &mut config.description);
        const SECTION: &str = "an object of section keys";
        root.object("model", SECTION, |r| config.model.read(r));
        root.object("training", SECTION, |r| config.training.read(r));
        root.object("tpu", SECTION, |r| config.tpu.read(r));
        root.object("memory", SECTION, |r| config.memory.read(r));
        root.object("optimization", SECTION, |r| config.optimization.read(r));
        root.object("distillation", SECTION, |r| config.distillation.read(r));
        root.object("sequence", SECTION, |r| config.sequence.read(r));
        root.object("logging", SECTION, |r| config.logging.read(r));
        root.object("data", SECTION, |r| config.data.read(r));
        root.object("datasets", SECTION, |r| config.datasets.read(r));
        root.object("runtime", SECTION, |r| config.runtime.read(r));
        root.finish();
        match issues.is_empty() {
            true => Ok(config),
            false => Err(issues),
        }
    }

    fn collect_issues(&self) -> Vec<ConfigIssue> {
        let mut c = Checks::default();
        self.model.validate(&mut c);
        self.training.validate(&mut c);
        self.tpu.validate(&mut c);
        self.memory.validate(&mut c);
        self.optimization.validate(&mut c);
        self.distillation.validate(self.model.num_layers, &mut c);
        self.sequence
            .validate(self.model.max_seq_len, self.model.vocab_size, &mut c);
        self.logging.validate(&mut c);
        self.data.validate(&mut c);
        self.datasets.validate(&mut c);
        self.runtime.validate(&mut c);
        self.validate_across_sections(&mut c);
        c.issues
    }

    fn validate_across_sections(&self, c: &mut Checks) {
        runtime::validate_devices(&self.tpu, &self.runtime, c);
        precision::validate_attention_backend(self, c);
        precision::validate_attention_block(&self.memory, &self.optimization, c);
        if self.logging.eval_every > 0 && self.data.val_fraction <= 0.0 {
            c.conflict(
                "logging.eval_every",
                self.logging.eval_every,
                "data.val_fraction",
                self.data.val_fraction,
                "evaluation needs held-out data; set val_fraction above 0, or eval_every to 0",
            );
        }
        if let (Some(source), false) = (&self.data.source, self.datasets.paths.is_empty()) {
            c.conflict(
                "data.source",
                show(&serde_json::to_value(source).unwrap_or(Value::Null)),
                "datasets.paths",
                show(&serde_json::json!(self.datasets.paths)),
                "both name the training data; set data.source to null to train on the mixture, \
                 or datasets.paths to []",
            );
        }
    }
}

/// Every key of every section as `section.key`, from the serialised defaults.
pub(crate) fn schema_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        if let Value::Object(sections) = Config::default().to_value() {
            for (section, value) in sections {
                match value {
                    Value::Object(fields) => {
                        keys.extend(fields.keys().map(|k| format!("{section}.{k}")))
                    }
                    _ => keys.push(section),
                }
            }
        }
        keys
    })
}

/// The JSON document at `path` (None: only the defaults), parsed, with the origin that
/// errors name: the file, and how many `--set` overrides apply on top of it.
pub(crate) fn read_config_file(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<(String, Option<serde_json::Value>), ConfigError> {
    let (origin, file) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            let value = parse_document(&text, &origin)?;
            (origin, Some(value))
        }
        None => ("defaults".to_string(), None),
    };
    let origin = match overrides.len() {
        0 => origin,
        1 => format!("{origin} with 1 --set override"),
        n => format!("{origin} with {n} --set overrides"),
    };
    Ok((origin, file))
}
