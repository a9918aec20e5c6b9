//! Optional capabilities that a configuration may ask for, and the check that a build has them.
//!
//! The config module accepts every documented key. Whether the trainer can honour a value is a
//! separate question: the caller passes the [`Features`] it implements, and
//! [`super::Config::unsupported`] names each setting that needs a missing one. As features
//! land, the caller adds them to its set; nothing here changes.

use super::data::{DataFormat, DataSource, DatasetType};
use super::precision::ComputeDtype;
use super::tpu::DeviceStrategy;
use super::training::Optimizer;
use super::Config;

/// One optional capability of the trainer, switched on by one or more config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// Mixture-of-Experts blocks (`model.use_moe`).
    Moe,
    /// FP8 matmuls (`optimization.use_fp8` and its recipe keys).
    Fp8,
    /// An f8 KV cache in generation (`memory.kv_cache_fp8`).
    KvCacheFp8,
    /// Teacher-student distillation (`distillation.teacher_model`).
    Distillation,
    /// Hidden-state matching in distillation (`distillation.use_intermediate_distillation`).
    IntermediateDistillation,
    /// Dropout (`model.dropout_rate` > 0).
    Dropout,
    /// RoPE context scaling (`model.rope_scaling`).
    RopeScaling,
    /// Rematerialised blocks (`memory.gradient_checkpointing`).
    GradientCheckpointing,
    /// Blocked attention (`memory.attention_memory_efficient` / `use_memory_efficient_attention`).
    MemoryEfficientAttention,
    /// bf16 compute over f32 master weights (`tpu.use_bfloat16`, `optimization.mixed_precision`).
    Bf16Compute,
    /// A dynamic loss scale (`optimization.use_dynamic_scale`), with f16 compute unless
    /// `tpu.use_bfloat16`.
    F16DynamicScale,
    /// Several micro-batches per optimizer step (`training.grad_accum_steps` > 1).
    GradientAccumulation,
    /// The `fsdp` device strategy.
    Fsdp,
    /// The `tensor_parallel` device strategy.
    TensorParallel,
    /// The `hybrid` device strategy.
    HybridParallel,
    /// ZeRO-3 sharding of weights under data parallelism (`optimization.shard_weights`).
    ShardWeights,
    /// User overrides of the logical-axis rules (`tpu.logical_axis_rules`).
    LogicalAxisRules,
    /// An explicit TPU topology (`tpu.tpu_topology`).
    TpuTopology,
    /// A Hugging Face `tokenizer.json` (`data.tokenizer`).
    CustomTokenizer,
    /// Text from files, directories and globs (`data.source` paths).
    FileSources,
    /// JSONL sources (`data.format` = "jsonl").
    JsonlData,
    /// Mixtures of datasets (`datasets.paths`).
    DatasetMixture,
    /// Random windows (`data.dataset_type` = "random_chunk").
    RandomChunkDataset,
    /// Document-aware windows (`data.dataset_type` = "document").
    DocumentDataset,
    /// Timing and memory profiles and step traces (`logging.profile_every` > 0).
    Profiling,
    /// The on-disk compile cache (`runtime.compile_cache`).
    CompileCache,
    /// The Muon optimiser (`training.optimizer` = "muon").
    Muon,
}

impl Feature {
    /// Every feature, in declaration order.
    pub const ALL: &'static [Feature] = &[
        Feature::Moe,
        Feature::Fp8,
        Feature::KvCacheFp8,
        Feature::Distillation,
        Feature::IntermediateDistillation,
        Feature::Dropout,
        Feature::RopeScaling,
        Feature::GradientCheckpointing,
        Feature::MemoryEfficientAttention,
        Feature::Bf16Compute,
        Feature::F16DynamicScale,
        Feature::GradientAccumulation,
        Feature::Fsdp,
        Feature::TensorParallel,
        Feature::HybridParallel,
        Feature::ShardWeights,
        Feature::LogicalAxisRules,
        Feature::TpuTopology,
        Feature::CustomTokenizer,
        Feature::FileSources,
        Feature::JsonlData,
        Feature::DatasetMixture,
        Feature::RandomChunkDataset,
        Feature::DocumentDataset,
        Feature::Profiling,
        Feature::CompileCache,
        Feature::Muon,
    ];

    /// What the feature is, for messages ("Mixture-of-Experts layers").
    pub fn describe(self) -> &'static str {
        match self {
            Feature::Moe => "Mixture-of-Experts layers",
            Feature::Fp8 => "FP8 training",
            Feature::KvCacheFp8 => "an FP8 KV cache",
            Feature::Distillation => "distillation from a teacher",
            Feature::IntermediateDistillation => "intermediate-layer distillation",
            Feature::Dropout => "dropout",
            Feature::RopeScaling => "RoPE scaling",
            Feature::GradientCheckpointing => "gradient checkpointing",
            Feature::MemoryEfficientAttention => "memory-efficient (blocked) attention",
            Feature::Bf16Compute => "bf16 mixed precision",
            Feature::F16DynamicScale => "f16 compute with a dynamic loss scale",
            Feature::GradientAccumulation => "gradient accumulation",
            Feature::Fsdp => "the fsdp strategy",
            Feature::TensorParallel => "the tensor_parallel strategy",
            Feature::HybridParallel => "the hybrid strategy",
            Feature::ShardWeights => "weight sharding under data parallelism",
            Feature::LogicalAxisRules => "custom logical-axis rules",
            Feature::TpuTopology => "explicit TPU topologies",
            Feature::CustomTokenizer => "loading a tokenizer.json",
            Feature::FileSources => "training on files and directories",
            Feature::JsonlData => "JSONL sources",
            Feature::DatasetMixture => "dataset mixtures",
            Feature::RandomChunkDataset => "random_chunk windows",
            Feature::DocumentDataset => "document-aware windows",
            Feature::Profiling => "profiling",
            Feature::CompileCache => "the compile cache",
            Feature::Muon => "the Muon optimiser",
        }
    }

    const fn bit(self) -> u64 {
        1 << self as u32
    }

    /// The settings of `config` that ask for this feature: (key, value as JSON, remedy).
    fn settings(self, config: &Config) -> Vec<(&'static str, String, &'static str)> {
        let mut found = Vec::new();
        let mut when = |on: bool, key: &'static str, value: String, remedy: &'static str| {
            if on {
                found.push((key, value, remedy));
            }
        };
        let (m, o, t) = (&config.model, &config.optimization, &config.tpu);
        let strategy = |s: DeviceStrategy| t.device_strategy == s;
        let quoted = |s: &str| format!("\"{s}\"");
        match self {
            Feature::Moe => when(m.use_moe, "model.use_moe", "true".into(), "set it to false"),
            Feature::Fp8 => when(
                o.use_fp8,
                "optimization.use_fp8",
                "true".into(),
                "set it to false",
            ),
            Feature::KvCacheFp8 => when(
                config.memory.kv_cache_fp8,
                "memory.kv_cache_fp8",
                "true".into(),
                "set it to false",
            ),
            Feature::Distillation => {
                let teacher = &config.distillation.teacher_model;
                let value = teacher.as_deref().map(quoted).unwrap_or_default();
                when(
                    teacher.is_some(),
                    "distillation.teacher_model",
                    value,
                    "set it to null",
                )
            }
            Feature::IntermediateDistillation => when(
                config.distillation.use_intermediate_distillation,
                "distillation.use_intermediate_distillation",
                "true".into(),
                "set it to false",
            ),
            Feature::Dropout => when(
                m.dropout_rate > 0.0,
                "model.dropout_rate",
                m.dropout_rate.to_string(),
                "set it to 0",
            ),
            Feature::RopeScaling => when(
                m.rope_scaling.is_some(),
                "model.rope_scaling",
                m.rope_scaling
                    .map(|s| format!("{{\"type\": \"{}\", \"factor\": {}}}", s.kind, s.factor))
                    .unwrap_or_default(),
                "set it to null",
            ),
            Feature::GradientCheckpointing => when(
                config.memory.gradient_checkpointing,
                "memory.gradient_checkpointing",
                "true".into(),
                "set it to false",
            ),
            Feature::MemoryEfficientAttention => {
                let mem = &config.memory;
                when(
                    mem.memory_efficient_attention(),
                    "memory.attention_memory_efficient",
                    "true".into(),
                    "set it (and its alias) to false",
                );
                if let Some(block) = config.optimization.block_size {
                    when(
                        true,
                        "optimization.block_size",
                        block.to_string(),
                        "set it to null",
                    );
                }
            }
            Feature::Bf16Compute => {
                let bf16 = config.compute_dtype() == ComputeDtype::Bf16;
                when(
                    bf16 && t.use_bfloat16,
                    "tpu.use_bfloat16",
                    "true".into(),
                    "set it to false",
                );
                when(
                    bf16 && o.mixed_precision,
                    "optimization.mixed_precision",
                    "true".into(),
                    "set it to false",
                );
            }
            Feature::F16DynamicScale => when(
                o.use_dynamic_scale,
                "optimization.use_dynamic_scale",
                "true".into(),
                "set it to false",
            ),
            Feature::GradientAccumulation => when(
                config.training.grad_accum_steps > 1,
                "training.grad_accum_steps",
                config.training.grad_accum_steps.to_string(),
                "set it to 1 (and lower training.batch_size if memory is short)",
            ),
            Feature::Fsdp => when(
                strategy(DeviceStrategy::Fsdp),
                "tpu.device_strategy",
                quoted("fsdp"),
                "use \"data_parallel\"",
            ),
            Feature::TensorParallel => when(
                strategy(DeviceStrategy::TensorParallel),
                "tpu.device_strategy",
                quoted("tensor_parallel"),
                "use \"data_parallel\"",
            ),
            Feature::HybridParallel => when(
                strategy(DeviceStrategy::Hybrid),
                "tpu.device_strategy",
                quoted("hybrid"),
                "use \"data_parallel\"",
            ),
            Feature::ShardWeights => when(
                o.shard_weights,
                "optimization.shard_weights",
                "true".into(),
                "set it to false",
            ),
            Feature::LogicalAxisRules => when(
                t.logical_axis_rules.is_some(),
                "tpu.logical_axis_rules",
                "[...]".into(),
                "set it to null (the strategy's own rules)",
            ),
            Feature::TpuTopology => when(
                t.tpu_topology.is_some(),
                "tpu.tpu_topology",
                t.tpu_topology.as_deref().map(quoted).unwrap_or_default(),
                "set it to null",
            ),
            Feature::CustomTokenizer => when(
                config.data.tokenizer.is_some(),
                "data.tokenizer",
                config
                    .data
                    .tokenizer
                    .as_deref()
                    .map(quoted)
                    .unwrap_or_default(),
                "set it to null (the built-in tokenizer)",
            ),
            Feature::FileSources => when(
                matches!(config.data.source, Some(DataSource::Paths(_))),
                "data.source",
                "[...]".into(),
                "set it to \"brown\"",
            ),
            Feature::JsonlData => when(
                config.data.format == DataFormat::Jsonl,
                "data.format",
                quoted("jsonl"),
                "use \"text\"",
            ),
            Feature::DatasetMixture => when(
                !config.datasets.paths.is_empty(),
                "datasets.paths",
                "[...]".into(),
                "set it to [] and use data.source",
            ),
            Feature::RandomChunkDataset => when(
                config.data.dataset_type == DatasetType::RandomChunk,
                "data.dataset_type",
                quoted("random_chunk"),
                "use \"packed\"",
            ),
            Feature::DocumentDataset => when(
                config.data.dataset_type == DatasetType::Document,
                "data.dataset_type",
                quoted("document"),
                "use \"packed\"",
            ),
            Feature::Profiling => when(
                config.logging.profile_every > 0,
                "logging.profile_every",
                config.logging.profile_every.to_string(),
                "set it to 0",
            ),
            Feature::CompileCache => when(
                config.runtime.compile_cache,
                "runtime.compile_cache",
                "true".into(),
                "set it to false",
            ),
            Feature::Muon => when(
                config.training.optimizer == Optimizer::Muon,
                "training.optimizer",
                quoted("muon"),
                "use \"adamw\"",
            ),
        }
        found
    }
}

/// A set of [`Feature`]s: what a build (or a command) implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

impl Features {
    /// No optional feature.
    pub const NONE: Features = Features(0);

    /// Every feature.
    pub fn all() -> Features {
        Feature::ALL.iter().copied().collect()
    }

    /// This set plus `feature`.
    pub const fn with(self, feature: Feature) -> Features {
        Features(self.0 | feature.bit())
    }

    /// This set without `feature`.
    pub const fn without(self, feature: Feature) -> Features {
        Features(self.0 & !feature.bit())
    }

    /// Whether `feature` is in the set.
    pub const fn contains(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }
}

impl FromIterator<Feature> for Features {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        iter.into_iter().fold(Features::NONE, Features::with)
    }
}

/// A setting that asks for a feature the caller does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` = {value} needs {}, which this build of vishwam does not implement yet; {remedy}", feature.describe())]
pub struct UnsupportedSetting {
    /// Full key path.
    pub key: String,
    /// Its value, as JSON text.
    pub value: String,
    /// The missing feature.
    pub feature: Feature,
    /// What to change to run without it.
    pub remedy: String,
}

/// Every setting of `config` that needs a feature outside `supported`, in feature order.
pub(crate) fn unsupported(config: &Config, supported: Features) -> Vec<UnsupportedSetting> {
    Feature::ALL
        .iter()
        .filter(|&&feature| !supported.contains(feature))
        .flat_map(|&feature| {
            feature
                .settings(config)
                .into_iter()
                .map(move |(key, value, remedy)| UnsupportedSetting {
                    key: key.to_string(),
                    value,
                    feature,
                    remedy: remedy.to_string(),
                })
        })
        .collect()
}
