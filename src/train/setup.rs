//! From a config to a client, a sharding plan and an engine.

use std::path::{Path, PathBuf};

use super::TrainError;
use crate::config::{self, BatchGeometry, Config, Feature, Features};
use crate::engine::Engine;
use crate::runtime::{
    named_plugin, platform_of_plugin, Accelerators, ClientSpec, CompileCache, Platform,
    PlatformChoice,
};
use vishwam_mesh::{DeviceStrategy, MeshSettings, RuleOverride, ShardingPlan, Topology};

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
    .with(Feature::Muon)
    .with(Feature::GradientAccumulation)
    .with(Feature::Fsdp)
    .with(Feature::TensorParallel)
    .with(Feature::HybridParallel)
    .with(Feature::ShardWeights)
    .with(Feature::LogicalAxisRules)
    .with(Feature::TpuTopology)
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

/// What keeps a run from starting on the devices present.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The config asks for more devices than the platform shows.
    #[error(
        "`{key}` = {requested} asks for more devices than the {present} {platform} device(s) \
         present; set {key} to at most {present} (or null for all of them), or run where \
         {requested} are visible"
    )]
    TooManyDevices {
        /// `runtime.devices`, `tpu.tpu_cores` or `tpu.mesh_shape`.
        key: &'static str,
        /// The devices asked for.
        requested: usize,
        /// The devices present.
        present: usize,
        /// The platform.
        platform: &'static str,
    },
    /// `runtime.platform` is "auto" and a plugin was named whose file name does not tell its
    /// platform.
    #[error(
        "runtime.platform is \"auto\", and the plugin {plugin} ({origin}) does not say by its \
         name which platform it drives; set runtime.platform (--platform) to cpu, cuda or tpu"
    )]
    UnknownPluginPlatform {
        /// The plugin path.
        plugin: String,
        /// Where it was named.
        origin: &'static str,
    },
}

/// The runtime platform of `cfg`; `auto` is resolved by [`choose_platform`] (logged).
pub fn platform(cfg: &Config) -> Result<Platform, SetupError> {
    Ok(match cfg.runtime.platform {
        config::Platform::Cpu => Platform::Cpu,
        config::Platform::Cuda => Platform::Cuda,
        config::Platform::Tpu => Platform::Tpu,
        config::Platform::Auto => log_choice(choose_platform(cfg, None)?),
    })
}

/// What `runtime.platform = "auto"` picks for `cfg`: the platform of an explicitly named
/// plugin (`--plugin`, `VISHWAM_PJRT_PLUGIN`, `runtime.plugin`, by its file name), else the
/// TPU, CUDA or the CPU as [`Accelerators::choose`] finds them.
pub fn choose_platform(
    cfg: &Config,
    explicit_plugin: Option<&Path>,
) -> Result<PlatformChoice, SetupError> {
    let from_config = cfg.runtime.plugin.as_ref().map(PathBuf::from);
    if let Some((plugin, origin)) = named_plugin(explicit_plugin, from_config.as_deref()) {
        return match platform_of_plugin(&plugin) {
            Some(platform) => Ok(PlatformChoice {
                platform,
                reason: format!("{origin} names the plugin {}", plugin.display()),
            }),
            None => Err(SetupError::UnknownPluginPlatform {
                plugin: plugin.display().to_string(),
                origin,
            }),
        };
    }
    Ok(Accelerators::probe().choose())
}

fn log_choice(choice: PlatformChoice) -> Platform {
    tracing::info!(
        "runtime.platform auto: running on {} ({})",
        choice.platform.name(),
        choice.reason
    );
    choice.platform
}

/// Replaces `runtime.platform = "auto"` in `cfg` by the platform it picks (see
/// [`choose_platform`]) and logs which and why, so that everything downstream sees a real
/// platform; other platforms are kept.
pub fn resolve_platform(
    cfg: &mut Config,
    explicit_plugin: Option<&Path>,
) -> Result<(), SetupError> {
    if cfg.runtime.platform == config::Platform::Auto {
        let chosen = log_choice(choose_platform(cfg, explicit_plugin)?);
        cfg.runtime.platform = config_platform(chosen);
    }
    Ok(())
}

/// The config's spelling of a resolved platform.
fn config_platform(platform: Platform) -> config::Platform {
    match platform {
        Platform::Cpu => config::Platform::Cpu,
        Platform::Cuda => config::Platform::Cuda,
        Platform::Tpu => config::Platform::Tpu,
    }
}

/// The platform `engine`'s client runs on, as the config spells it (never "auto").
pub fn engine_platform(engine: &Engine) -> Result<config::Platform, TrainError> {
    let name = engine.client.platform_name()?;
    let platform = Platform::parse(&name).map_err(|_| {
        TrainError::Other(format!(
            "the PJRT client reports the platform `{name}`, which is none of cpu, cuda, tpu"
        ))
    })?;
    Ok(config_platform(platform))
}

/// `cfg` with `runtime.platform` "auto" replaced by the platform `engine` runs on, so that
/// every choice made from the config (attention kind, loss row statistics, sampling) is the
/// one for the devices in use; an explicit platform is kept.
pub fn pin_platform(cfg: &Config, engine: &Engine) -> Result<Config, TrainError> {
    let mut pinned = cfg.clone();
    if pinned.runtime.platform == config::Platform::Auto {
        pinned.runtime.platform = engine_platform(engine)?;
    }
    Ok(pinned)
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

/// The batch of one optimizer step of `cfg` on `plan`'s mesh: `training.batch_size` per batch
/// shard x the batch shards x `training.grad_accum_steps`.
pub fn batch_geometry(cfg: &Config, plan: &ShardingPlan) -> BatchGeometry {
    cfg.batch_geometry(plan.batch_shards())
}

/// The sharding plan for `cfg` over `available` devices of `platform`; with
/// `tpu.tpu_topology` the devices are ordered over the mesh by the topology, taking device
/// `i` to sit at index `i` of it (x fastest), as for devices that report no coordinates.
pub fn sharding_plan(
    cfg: &Config,
    platform: &str,
    available: usize,
) -> Result<ShardingPlan, TrainError> {
    sharding_plan_on(cfg, platform, available, None)
}

/// Where the first `count` devices of `client` sit, read when `tpu.tpu_topology` is set:
/// `Some` when they all report `coords` (TPUs), `None` when none does (the CPU plugin's
/// virtual devices), an error when only some do.
fn physical_devices(
    cfg: &Config,
    client: &crate::runtime::Client,
    count: usize,
) -> Result<Option<vishwam_mesh::PhysicalDevices>, TrainError> {
    if cfg.tpu.tpu_topology.is_none() {
        return Ok(None);
    }
    let all = client.devices();
    let devices = &all[..count];
    let mut positions = Vec::with_capacity(count);
    for device in devices {
        positions.push(device.physical_position()?);
    }
    let reported = positions.iter().filter(|p| p.is_some()).count();
    if reported == 0 {
        return Ok(None);
    }
    if reported < count {
        return Err(TrainError::Other(format!(
            "tpu.tpu_topology: only {reported} of the {count} devices report their `coords`, \
             so they cannot be placed on the topology; set tpu.tpu_topology to null"
        )));
    }
    let positions = positions
        .into_iter()
        .flatten()
        .map(|(coords, core_on_chip)| vishwam_mesh::DevicePosition {
            coords,
            core_on_chip,
        })
        .collect();
    let kind = devices
        .first()
        .map(|d| d.kind())
        .transpose()?
        .unwrap_or_default();
    Ok(Some(vishwam_mesh::PhysicalDevices { kind, positions }))
}

/// [`sharding_plan`] over devices that report where they sit (`physical`): the topology is
/// checked against their coordinates and orders them as JAX's `create_device_mesh` does.
fn sharding_plan_on(
    cfg: &Config,
    platform: &str,
    available: usize,
    physical: Option<vishwam_mesh::PhysicalDevices>,
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
    if let Some(topology) = &cfg.tpu.tpu_topology {
        settings.topology = Some(Topology::parse(topology)?);
        settings.physical_devices = physical;
    }
    Ok(ShardingPlan::build(&settings, platform, available)?)
}

/// The key that sets the device count of `cfg`, if any ([`Config::requested_devices`]).
fn devices_key(cfg: &Config) -> &'static str {
    match (cfg.runtime.devices, cfg.tpu.tpu_cores) {
        (Some(_), _) => "runtime.devices",
        (None, Some(_)) => "tpu.tpu_cores",
        (None, None) => "tpu.mesh_shape",
    }
}

/// The devices a run of `cfg` uses when `present` devices of `platform` are visible: those
/// the config asks for, or all; more than are present is an error naming the key.
fn devices_to_use(cfg: &Config, platform: Platform, present: usize) -> Result<usize, SetupError> {
    match cfg.requested_devices() {
        Some(n) if n > present => Err(SetupError::TooManyDevices {
            key: devices_key(cfg),
            requested: n,
            present,
            platform: platform.name(),
        }),
        Some(n) => Ok(n),
        None => Ok(present),
    }
}

/// Opens the platform's client (CPU: as many virtual devices as the config asks for), builds
/// the sharding plan over the devices and returns the engine. "auto" is resolved here (and
/// the config validated again with the platform it picks); [`crate::train::Trainer`] takes
/// the platform from the engine. Asking for more devices than the platform shows is an error.
pub fn open_engine(
    cfg: &Config,
    plugin: Option<PathBuf>,
) -> Result<(Engine, ShardingPlan), TrainError> {
    cfg.require_features(SUPPORTED)
        .map_err(|e| TrainError::Other(e.to_string()))?;
    let platform = match cfg.runtime.platform {
        config::Platform::Auto => log_choice(choose_platform(cfg, plugin.as_deref())?),
        _ => self::platform(cfg)?,
    };
    // Rules that depend on the platform ("cudnn" needs CUDA) are checked now that it is known.
    let mut resolved = cfg.clone();
    resolved.runtime.platform = config_platform(platform);
    resolved.validate().map_err(|e| {
        let e = match e {
            config::ConfigError::Invalid { issues, .. } => config::ConfigError::Invalid {
                origin: format!("on the platform {}", platform.name()),
                issues,
            },
            other => other,
        };
        TrainError::Other(e.to_string())
    })?;
    let requested = cfg.requested_devices();
    let spec = ClientSpec {
        platform,
        devices: requested,
        plugin,
        config_plugin: cfg.runtime.plugin.as_ref().map(PathBuf::from),
    };
    engine_on(cfg, spec.open()?, platform)
}

/// The engine and sharding plan of `cfg` on an open `client` of `platform`: the devices the
/// config asks for (more than are present is an error naming the key) laid out on its mesh.
/// [`open_engine`] opens the client and checks the config first.
pub fn engine_on(
    cfg: &Config,
    client: crate::runtime::Client,
    platform: Platform,
) -> Result<(Engine, ShardingPlan), TrainError> {
    let available = devices_to_use(cfg, platform, client.num_devices())?;
    let physical = physical_devices(cfg, &client, available)?;
    let plan = sharding_plan_on(cfg, platform.name(), available, physical)?;
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!("{plan}");
    match cfg.training.batch_size_is_auto() {
        true => tracing::info!("global batch: training.batch_size \"auto\", resolved below"),
        false => {
            tracing::info!("global batch: {}", batch_geometry(cfg, &plan));
            // The attention of the platform in use (a config's "auto" is pinned later).
            let mut pinned = cfg.clone();
            pinned.runtime.platform = config_platform(platform);
            let attention = super::attention_choice::attention_summary(&pinned, &plan);
            tracing::info!("{attention}");
        }
    }
    let cache = if cfg.runtime.compile_cache {
        CompileCache::default_dir()
    } else {
        CompileCache::disabled()
    };
    let engine = Engine::new(client, plan.mesh.clone(), cache)?;
    Ok((engine, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(None, &sets).unwrap()
    }

    #[test]
    fn more_devices_than_present_is_an_error_naming_the_key() {
        let tpu = Platform::Tpu;
        assert_eq!(devices_to_use(&load(&[]), tpu, 4).unwrap(), 4);
        assert_eq!(
            devices_to_use(&load(&["runtime.devices=2"]), tpu, 4).unwrap(),
            2
        );
        let err = devices_to_use(&load(&["tpu.tpu_cores=8"]), tpu, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`tpu.tpu_cores` = 8 asks for more devices than the 4 tpu device(s) present; set \
             tpu.tpu_cores to at most 4 (or null for all of them), or run where 8 are visible"
        );
        let err = devices_to_use(&load(&["runtime.devices=2"]), Platform::Cuda, 1).unwrap_err();
        assert!(
            err.to_string().starts_with("`runtime.devices` = 2"),
            "{err}"
        );
        let mesh = load(&["tpu.mesh_shape={\"data\": 4, \"model\": 2}"]);
        let err = devices_to_use(&mesh, Platform::Cuda, 4).unwrap_err();
        assert!(err.to_string().starts_with("`tpu.mesh_shape` = 8"), "{err}");
    }

    #[test]
    fn a_named_plugin_decides_the_auto_platform() {
        let cfg = load(&["runtime.plugin=\"/opt/libtpu/libtpu.so\""]);
        let choice = choose_platform(&cfg, Some(Path::new("/x/xla_cuda_plugin.so"))).unwrap();
        assert_eq!(choice.platform, Platform::Cuda);
        assert!(choice.reason.contains("--plugin"), "{}", choice.reason);
        let err = choose_platform(&cfg, Some(Path::new("/x/mystery.so"))).unwrap_err();
        assert!(err.to_string().contains("/x/mystery.so"), "{err}");
    }

    #[test]
    fn the_topology_orders_the_mesh() {
        let cfg = load(&[
            "tpu.tpu_topology=\"2x2x2\"",
            "tpu.mesh_shape={\"data\": 2, \"model\": 4}",
            "tpu.device_strategy=\"hybrid\"",
        ]);
        let plan = sharding_plan(&cfg, "cpu", 8).unwrap();
        assert_eq!(plan.mesh.device_ids(), [0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(batch_geometry(&cfg, &plan).global_batch(), 16);
        let err = sharding_plan(&cfg, "cpu", 4).unwrap_err();
        assert!(
            err.to_string().contains("topology 2x2x2 holds 8 devices"),
            "{err}"
        );
        // Devices that report where they sit are ordered by it: a v3-8 (2x2 chips, 2 cores
        // each) listed chip (1,1) first reads in JAX's tray ring order by coordinates.
        let mut positions = Vec::new();
        for (x, y) in [(1, 1), (0, 1), (1, 0), (0, 0)] {
            for core in 0..2 {
                positions.push(vishwam_mesh::DevicePosition {
                    coords: vec![x, y, 0],
                    core_on_chip: core,
                });
            }
        }
        let v3 = vishwam_mesh::PhysicalDevices {
            kind: "TPU v3".to_string(),
            positions,
        };
        let plan = sharding_plan_on(&cfg, "tpu", 8, Some(v3.clone())).unwrap();
        // Ring: chips (0,0), (1,0), (1,1), (0,1), both cores each; list positions 6 7 4 5 0 1 2 3.
        assert_eq!(plan.mesh.device_ids(), [6, 7, 4, 5, 0, 1, 2, 3]);
        let cfg = load(&[
            "tpu.tpu_topology=\"4x2x1\"",
            "tpu.mesh_shape={\"data\": 2, \"model\": 4}",
            "tpu.device_strategy=\"hybrid\"",
        ]);
        let err = sharding_plan_on(&cfg, "tpu", 8, Some(v3)).unwrap_err();
        assert!(
            err.to_string()
                .contains("set tpu.tpu_topology to \"2x2x2\""),
            "{err}"
        );
    }
}
