//! NVIDIA GPU utilisation, power and temperature through NVML, loaded at run time.
//!
//! `nvml-wrapper` opens `libnvidia-ml` with `dlopen` when [`GpuTelemetry::open`] runs, so the
//! binary starts and trains where the library is absent; the monitor then says once that GPU
//! telemetry is unavailable and records `"gpu": null`. Each PJRT device is matched to its NVML
//! device through its CUDA ordinal (`PJRT_Device_LocalHardwareId`) and `CUDA_VISIBLE_DEVICES`:
//! entry `i` of that list (an NVML index, or a full `GPU-...`/`MIG-...` UUID) is ordinal `i`;
//! without the variable, ordinal `i` is NVML index `i` (CUDA's default order and NVML's
//! agree on machines of one GPU model, where both follow the PCI bus order).

use crate::runtime::Device;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use std::ffi::OsStr;

/// The library names tried in order: the driver installs the versioned name; the bare name
/// comes with development packages.
pub const NVML_LIBRARIES: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// Why GPU telemetry is unavailable, or one reading failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuTelemetryError {
    /// NVML could not be loaded or initialised from any of the names tried.
    #[error("NVML could not be loaded ({})", .attempts.join("; "))]
    Load {
        /// `name: error` for each library name tried.
        attempts: Vec<String>,
    },
    /// A `CUDA_VISIBLE_DEVICES` entry that is neither an index nor a full GPU/MIG UUID.
    #[error("CUDA_VISIBLE_DEVICES entry {entry:?} is neither an NVML index nor a GPU-/MIG- UUID")]
    VisibleDevice {
        /// The entry.
        entry: String,
    },
    /// A CUDA ordinal past the end of `CUDA_VISIBLE_DEVICES`.
    #[error("CUDA ordinal {ordinal} is past the {count} entries of CUDA_VISIBLE_DEVICES")]
    OrdinalOutOfRange {
        /// The ordinal.
        ordinal: i32,
        /// Entries in the variable.
        count: usize,
    },
    /// A PJRT device without a CUDA ordinal, or whose ordinal could not be read.
    #[error("PJRT device {device} reports no CUDA ordinal ({reason})")]
    NoOrdinal {
        /// Index of the PJRT device.
        device: usize,
        /// What the plugin said.
        reason: String,
    },
    /// An NVML call failed.
    #[error("NVML {call} on GPU {device}: {source}")]
    Nvml {
        /// The NVML function.
        call: &'static str,
        /// Index of the PJRT device.
        device: usize,
        /// NVML's error.
        source: NvmlError,
    },
}

/// How `CUDA_VISIBLE_DEVICES` names one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmlDeviceRef {
    /// An NVML index.
    Index(u32),
    /// A full UUID (`GPU-...` or `MIG-...`).
    Uuid(String),
}

/// The NVML device behind CUDA ordinal `ordinal`, given the value of `CUDA_VISIBLE_DEVICES`.
pub fn nvml_device_of(
    ordinal: i32,
    visible: Option<&str>,
) -> Result<NvmlDeviceRef, GpuTelemetryError> {
    let Some(visible) = visible.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(NvmlDeviceRef::Index(ordinal as u32));
    };
    let entries: Vec<&str> = visible.split(',').map(str::trim).collect();
    let entry = entries
        .get(ordinal as usize)
        .ok_or(GpuTelemetryError::OrdinalOutOfRange {
            ordinal,
            count: entries.len(),
        })?;
    if let Ok(index) = entry.parse::<u32>() {
        Ok(NvmlDeviceRef::Index(index))
    } else if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
        Ok(NvmlDeviceRef::Uuid(entry.to_string()))
    } else {
        Err(GpuTelemetryError::VisibleDevice {
            entry: entry.to_string(),
        })
    }
}

/// One GPU's readings; a field NVML does not report on this GPU is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    /// Percent of the last sample period in which a kernel ran.
    pub utilization_percent: Option<u32>,
    /// Power draw in watts.
    pub power_watts: Option<f64>,
    /// GPU die temperature in degrees Celsius.
    pub temperature_c: Option<u32>,
}

/// NVML opened, with the NVML device of each PJRT device.
pub struct GpuTelemetry {
    nvml: Nvml,
    devices: Vec<NvmlDeviceRef>,
}

impl GpuTelemetry {
    /// Loads NVML from the first of `libraries` that opens and matches every device of
    /// `devices` (PJRT devices of the CUDA plugin) to its NVML device.
    pub fn open(libraries: &[&str], devices: &[Device]) -> Result<GpuTelemetry, GpuTelemetryError> {
        let mut attempts = Vec::new();
        let mut nvml = None;
        for name in libraries {
            match Nvml::builder().lib_path(OsStr::new(name)).init() {
                Ok(n) => {
                    nvml = Some(n);
                    break;
                }
                Err(e) => attempts.push(format!("{name}: {e}")),
            }
        }
        let nvml = nvml.ok_or(GpuTelemetryError::Load { attempts })?;
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let devices = devices
            .iter()
            .map(|d| {
                let no_ordinal = |reason: String| GpuTelemetryError::NoOrdinal {
                    device: d.index(),
                    reason,
                };
                let ordinal = d
                    .local_hardware_id()
                    .map_err(|e| no_ordinal(e.to_string()))?
                    .ok_or_else(|| no_ordinal("it reported -1".into()))?;
                nvml_device_of(ordinal, visible.as_deref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuTelemetry { nvml, devices })
    }

    /// Number of GPUs read.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when there are no GPUs to read.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The readings of every GPU, in PJRT device order, with the errors of the readings that
    /// failed (their fields are `None`).
    pub fn read(&self) -> (Vec<GpuReading>, Vec<GpuTelemetryError>) {
        let mut errors = Vec::new();
        let readings = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let failed = |call, source| GpuTelemetryError::Nvml {
                    call,
                    device: i,
                    source,
                };
                let device = match r {
                    NvmlDeviceRef::Index(index) => self.nvml.device_by_index(*index),
                    NvmlDeviceRef::Uuid(uuid) => self.nvml.device_by_uuid(uuid.as_str()),
                };
                let device = match device {
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(failed("device handle", e));
                        return GpuReading::default();
                    }
                };
                let mut keep = |call, result: Result<_, NvmlError>| match result {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(failed(call, e));
                        None
                    }
                };
                GpuReading {
                    utilization_percent: keep(
                        "utilization_rates",
                        device.utilization_rates().map(|u| u.gpu),
                    ),
                    power_watts: keep("power_usage", device.power_usage())
                        .map(|mw| mw as f64 / 1000.0),
                    temperature_c: keep("temperature", device.temperature(TemperatureSensor::Gpu)),
                }
            })
            .collect();
        (readings, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_map_ordinals_to_nvml_devices() {
        assert_eq!(nvml_device_of(2, None).unwrap(), NvmlDeviceRef::Index(2));
        assert_eq!(
            nvml_device_of(1, Some("")).unwrap(),
            NvmlDeviceRef::Index(1)
        );
        assert_eq!(
            nvml_device_of(1, Some("6, 3")).unwrap(),
            NvmlDeviceRef::Index(3)
        );
        assert_eq!(
            nvml_device_of(0, Some("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6")).unwrap(),
            NvmlDeviceRef::Uuid("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6".into())
        );
        let err = nvml_device_of(2, Some("0,1")).unwrap_err();
        assert!(
            matches!(
                err,
                GpuTelemetryError::OrdinalOutOfRange {
                    ordinal: 2,
                    count: 2
                }
            ),
            "{err}"
        );
        let err = nvml_device_of(0, Some("first")).unwrap_err();
        assert!(err.to_string().contains("\"first\""), "{err}");
    }

    /// Where no NVML library opens, `open` fails naming every name it tried (the monitor then
    /// says once that GPU telemetry is unavailable and carries on).
    #[test]
    fn a_missing_library_is_reported_with_each_name_tried() {
        let missing = [
            "/nonexistent/libnvidia-ml.so.1",
            "/nonexistent/libnvidia-ml.so",
        ];
        let err = match GpuTelemetry::open(&missing, &[]) {
            Ok(_) => panic!("NVML opened from a path that does not exist"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(matches!(err, GpuTelemetryError::Load { ref attempts } if attempts.len() == 2));
        for name in missing {
            assert!(text.contains(name), "{text}");
        }
    }
}
