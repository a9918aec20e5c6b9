//! Section `runtime` (platform, devices, plugin) and the rules joining devices, mesh and batch.

use serde::Serialize;

use super::checks::Checks;
use super::reader::{config_enum, ObjectReader};
use super::tpu::TpuConfig;

config_enum! {
    /// Which PJRT plugin runs the program.
    pub enum Platform {
        /// Picked when the run starts, as JAX picks its backend: the TPU when libtpu is
        /// installed and a TPU is attached, else CUDA GPUs when their plugin is installed and
        /// an NVIDIA driver is loaded, else the CPU. A start-up line says which and why.
        #[default]
        Auto => "auto",
        /// The XLA CPU plugin; `runtime.devices` gives virtual devices.
        Cpu => "cpu",
        /// The XLA CUDA plugin.
        Cuda => "cuda",
        /// libtpu.
        Tpu => "tpu",
    }
}

/// Section `runtime`: which plugin, how many devices, compile cache, how steps are launched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// PJRT platform. Default "auto" (TPU, else CUDA, else CPU).
    pub platform: Platform,
    /// Devices to use (on "cpu": virtual devices; elsewhere at most the devices present).
    /// Default null = `tpu.tpu_cores`, else the mesh's fixed size, else every device the
    /// platform shows (one on the CPU).
    pub devices: Option<usize>,
    /// Path of the PJRT plugin (.so); null = discovered by platform. Default null.
    pub plugin: Option<String>,
    /// Reuse compiled executables from the on-disk cache. Default true.
    pub compile_cache: bool,
    /// Launch each train step before reading the metrics of the one before, reading them
    /// every `logging.log_every` steps (`train::StepPipeline`); false waits for every step
    /// before launching the next. Losses are the same either way. Default true.
    pub launch_ahead: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            platform: Platform::Auto,
            devices: None,
            plugin: None,
            compile_cache: true,
            launch_ahead: true,
        }
    }
}

impl RuntimeConfig {
    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.choice("platform", &mut self.platform);
        r.opt_integer("devices", &mut self.devices, "a positive integer");
        r.opt_text("plugin", &mut self.plugin);
        r.flag("compile_cache", &mut self.compile_cache);
        r.flag("launch_ahead", &mut self.launch_ahead);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        if let Some(devices) = self.devices {
            c.positive("runtime.devices", devices);
        }
        if let Some(plugin) = &self.plugin {
            c.non_empty("runtime.plugin", plugin);
        }
    }
}

/// Devices asked for: `runtime.devices`, else `tpu.tpu_cores`, else the mesh's fixed size.
pub(crate) fn requested_devices(tpu: &TpuConfig, runtime: &RuntimeConfig) -> Option<usize> {
    runtime
        .devices
        .or(tpu.tpu_cores)
        .or_else(|| tpu.mesh_shape.fixed_product())
}

/// Cross-section rules: device counts against the mesh.
pub(crate) fn validate_devices(tpu: &TpuConfig, runtime: &RuntimeConfig, c: &mut Checks) {
    if let (Some(devices), Some(cores)) = (runtime.devices, tpu.tpu_cores) {
        if devices != cores {
            c.conflict(
                "runtime.devices",
                devices,
                "tpu.tpu_cores",
                cores,
                "both give the number of devices; give one of them, or the same number",
            );
        }
    }
    let (count_key, count) = match (runtime.devices, tpu.tpu_cores) {
        (Some(d), _) => ("runtime.devices", d),
        (None, Some(t)) => ("tpu.tpu_cores", t),
        (None, None) => ("", 0),
    };
    if let (Some(dims), true) = (tpu.topology_dims(), count >= 1) {
        let holds: usize = dims.iter().product();
        if holds != count {
            c.conflict(
                "tpu.tpu_topology",
                format!("{:?}", tpu.tpu_topology.as_deref().unwrap_or_default()),
                count_key,
                count,
                format!("the topology holds {holds} devices; they must be the run's devices"),
            );
        }
    }
    let sizes_ok = tpu
        .mesh_shape
        .axes()
        .iter()
        .all(|&(_, s)| s >= 1 || s == -1);
    if count >= 1 && sizes_ok {
        let known: usize = tpu
            .mesh_shape
            .axes()
            .iter()
            .filter(|&&(_, s)| s >= 1)
            .map(|&(_, s)| s as usize)
            .product();
        let has_fill = tpu.mesh_shape.axes().iter().any(|&(_, s)| s == -1);
        let rule = if has_fill && !count.is_multiple_of(known) {
            Some(format!(
                "the fixed axes multiply to {known}, which does not divide {count} devices"
            ))
        } else if !has_fill && known != count {
            Some(format!(
                "the axes multiply to {known} devices; make their product {count}, or set one axis to -1"
            ))
        } else {
            None
        };
        if let Some(rule) = rule {
            c.conflict("tpu.mesh_shape", &tpu.mesh_shape, count_key, count, rule);
        }
    }
}
