//! From a config to a client, a sharding plan and an engine.

use super::TrainError;
use crate::config::{self, Config, Feature, Features};
use crate::engine::Engine;
use crate::runtime::{ClientSpec, CompileCache, Platform};
use vishwam_mesh::{DeviceStrategy, MeshSettings, RuleOverride, ShardingPlan};

/// What this build of vishwam can honour: every config key outside this set is rejected
/// with a message naming it.
pub const SUPPORTED: Features = Features::NONE
    .with(Feature::Moe)
    .with(Feature::Dropout)
    .with(Feature::RopeScaling)
    .with(Feature::GradientCheckpointing)
    .with(Feature::MemoryEfficientAttention)
    .with(Feature::Bf16Compute)
    .with(Feature::F16DynamicScale)
    .with(Feature::Fp8)
    .with(Feature::GradientAccumulation)
    .with(Feature::Fsdp)
    .with(Feature::TensorParallel)
    .with(Feature::HybridParallel)
    .with(Feature::ShardWeights)
    .with(Feature::LogicalAxisRules)
    .with(Feature::CustomTokenizer)
    .with(Feature::FileSources)
    .with(Feature::JsonlData)
    .with(Feature::DatasetMixture)
    .with(Feature::RandomChunkDataset)
    .with(Feature::DocumentDataset)
    .with(Feature::Profiling)
    .with(Feature::CompileCache)
    .with(Feature::KvCacheFp8)
    .with(Feature::Distillation)
    .with(Feature::IntermediateDistillation);

/// The runtime platform named by the config.
pub fn platform(cfg: &Config) -> Platform {
    match cfg.runtime.platform {
        config::Platform::Cpu => Platform::Cpu,
        config::Platform::Cuda => Platform::Cuda,
        config::Platform::Tpu => Platform::Tpu,
    }
}

/// The mesh strategy named by the config.
pub fn strategy(cfg: &Config) -> DeviceStrategy {
    match cfg.tpu.device_strategy {
        config::DeviceStrategy::DataParallel => DeviceStrategy::DataParallel,
        config::DeviceStrategy::Fsdp => DeviceStrategy::Fsdp,
        config::DeviceStrategy::TensorParallel => DeviceStrategy::TensorParallel,
        config::DeviceStrategy::Hybrid => DeviceStrategy::Hybrid,
    }
}

/// The sharding plan for `cfg` over `available` devices of `platform`.
pub fn sharding_plan(
    cfg: &Config,
    platform: &str,
    available: usize,
) -> Result<ShardingPlan, TrainError> {
    let mut settings = MeshSettings::new(
        strategy(cfg),
        cfg.optimization.shard_weights || strategy(cfg) == DeviceStrategy::Fsdp,
    );
    settings.mesh_shape = cfg.tpu.mesh_shape.axes().to_vec();
    if let Some(rules) = &cfg.tpu.logical_axis_rules {
        for rule in rules {
            let axes: Vec<&str> = rule.1.iter().map(String::as_str).collect();
            settings
                .rule_overrides
                .push(RuleOverride::parse(&rule.0, &axes)?);
        }
    }
    Ok(ShardingPlan::build(&settings, platform, available)?)
}

/// Opens the platform's client (CPU: as many virtual devices as the config asks for), builds
/// the sharding plan over the devices and returns the engine.
pub fn open_engine(
    cfg: &Config,
    plugin: Option<std::path::PathBuf>,
) -> Result<(Engine, ShardingPlan), TrainError> {
    cfg.require_features(SUPPORTED)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let platform = platform(cfg);
    let requested = cfg.requested_devices();
    let spec = ClientSpec {
        platform,
        devices: requested,
        plugin,
        config_plugin: cfg.runtime.plugin.as_ref().map(std::path::PathBuf::from),
    };
    let client = spec.open()?;
    let available = match (platform, requested) {
        (Platform::Cpu, _) => client.num_devices(),
        (_, Some(n)) if n <= client.num_devices() => n,
        (_, _) => client.num_devices(),
    };
    let plan = sharding_plan(cfg, platform.name(), available)?;
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!("{plan}");
    let cache = if cfg.runtime.compile_cache {
        CompileCache::default_dir()
    } else {
        CompileCache::disabled()
    };
    let engine = Engine::new(client, plan.mesh.clone(), cache)?;
    Ok((engine, plan))
}
