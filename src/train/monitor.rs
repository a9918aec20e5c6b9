//! Resource monitoring, read only at the steps that log: the memory of every device (PJRT
//! allocator statistics), on the CUDA platform each GPU's utilisation, power and temperature
//! (NVML, [`super::gpu_telemetry`]), the host's resident memory, and the data loader's queue
//! depth. [`ResourceSnapshot::record`] puts them into a `metrics.jsonl` record and
//! [`ResourceSnapshot::summary`] onto the progress bar. What a platform does not report is
//! recorded as `null` (never as 0) and said once in the log, not at every step.

use super::gpu_telemetry::{GpuReading, GpuTelemetry, GpuTelemetryError, NVML_LIBRARIES};
use crate::runtime::{Client, Device, MemoryStats, PjrtCode, Platform, RuntimeError};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// Why the host's resident memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostRssError {
    /// `/proc/self/status` could not be read.
    #[error("reading /proc/self/status: {0}")]
    Read(#[from] std::io::Error),
    /// The file has no `VmRSS:` line.
    #[error("/proc/self/status has no VmRSS line")]
    Missing,
    /// A `VmRSS:` line not of the form `VmRSS: <integer> kB`.
    #[error("/proc/self/status: {line:?} is not `VmRSS: <integer> kB`")]
    Format {
        /// The line.
        line: String,
    },
    /// Not Linux: there is no `/proc/self/status` to read.
    #[error("host RSS is read from /proc/self/status, which only Linux has")]
    Unsupported,
}

/// The resident set size in bytes from the text of `/proc/self/status` (`VmRSS: N kB`).
pub fn parse_vm_rss(status: &str) -> Result<u64, HostRssError> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or(HostRssError::Missing)?;
    let bad = || HostRssError::Format {
        line: line.to_string(),
    };
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = fields.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    match (fields.next(), fields.next()) {
        (Some("kB"), None) => Ok(kib * 1024),
        _ => Err(bad()),
    }
}

/// The host process's resident set size in bytes.
pub fn host_rss_bytes() -> Result<u64, HostRssError> {
    if cfg!(target_os = "linux") {
        parse_vm_rss(&std::fs::read_to_string("/proc/self/status")?)
    } else {
        Err(HostRssError::Unsupported)
    }
}

/// The memory of one device as its plugin reports it (`None`: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes allocated now.
    pub in_use: i64,
    /// Peak bytes allocated.
    pub peak: Option<i64>,
    /// Bytes the allocator may use.
    pub limit: Option<i64>,
}

impl From<MemoryStats> for DeviceMemory {
    fn from(s: MemoryStats) -> Self {
        DeviceMemory {
            in_use: s.bytes_in_use,
            peak: s.peak_bytes_in_use,
            limit: s.bytes_limit,
        }
    }
}

/// The resources at one logged step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSnapshot {
    /// Each device's memory, in client order; `None` where the plugin reports none.
    pub memory: Vec<Option<DeviceMemory>>,
    /// Each GPU's readings (the CUDA platform only; `None` elsewhere).
    pub gpu: Option<GpuSnapshot>,
    /// The host process's resident memory in bytes, where it could be read.
    pub host_rss_bytes: Option<u64>,
    /// Ready batches in the data loader's queue (`None` for sources without one).
    pub data_queue_depth: Option<usize>,
}

/// GPU readings of a CUDA run.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuSnapshot {
    /// NVML could not be used (said once in the log).
    Unavailable,
    /// One reading per device.
    Read(Vec<GpuReading>),
}

const GIB: f64 = (1u64 << 30) as f64;

impl ResourceSnapshot {
    /// Adds `memory` (`{"device0": {"in_use", "peak", "limit"}, ...}`, bytes; `null` when no
    /// device reports), `gpu` on CUDA (`{"device0": {"utilization", "power_w",
    /// "temperature_c"}}`, `null` without NVML), `host_rss_bytes` and `data_queue_depth`
    /// (each `null` where absent) to `line`. Fields a device does not report are left out.
    pub fn record(&self, line: &mut Value) {
        let per_device = |values: Vec<Value>| -> Value {
            let map: Map<String, Value> = values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("device{i}"), v))
                .collect();
            Value::Object(map)
        };
        line["memory"] = if self.memory.iter().all(Option::is_none) {
            Value::Null
        } else {
            per_device(
                self.memory
                    .iter()
                    .map(|m| match m {
                        None => Value::Null,
                        Some(m) => {
                            let mut o = json!({"in_use": m.in_use});
                            if let Some(p) = m.peak {
                                o["peak"] = json!(p);
                            }
                            if let Some(l) = m.limit {
                                o["limit"] = json!(l);
                            }
                            o
                        }
                    })
                    .collect(),
            )
        };
        match &self.gpu {
            None => {}
            Some(GpuSnapshot::Unavailable) => line["gpu"] = Value::Null,
            Some(GpuSnapshot::Read(readings)) => {
                line["gpu"] = per_device(
                    readings
                        .iter()
                        .map(|r| {
                            let mut o = json!({});
                            if let Some(u) = r.utilization_percent {
                                o["utilization"] = json!(u);
                            }
                            if let Some(p) = r.power_watts {
                                o["power_w"] = json!(p);
                            }
                            if let Some(t) = r.temperature_c {
                                o["temperature_c"] = json!(t);
                            }
                            o
                        })
                        .collect(),
                )
            }
        }
        line["host_rss_bytes"] = json!(self.host_rss_bytes);
        line["data_queue_depth"] = json!(self.data_queue_depth);
    }

    /// A few words for the progress bar: the largest device memory in use (over its limit
    /// where known), else the host's resident memory, and the mean GPU utilisation.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let busiest = self.memory.iter().flatten().max_by_key(|m| m.in_use);
        match (busiest, self.host_rss_bytes) {
            (Some(m), _) => parts.push(match m.limit {
                Some(limit) => format!(
                    "mem {:.2}/{:.1} GiB",
                    m.in_use as f64 / GIB,
                    limit as f64 / GIB
                ),
                None => format!("mem {:.2} GiB", m.in_use as f64 / GIB),
            }),
            (None, Some(rss)) => parts.push(format!("rss {:.2} GiB", rss as f64 / GIB)),
            (None, None) => {}
        }
        if let Some(GpuSnapshot::Read(readings)) = &self.gpu {
            let used: Vec<u32> = readings
                .iter()
                .filter_map(|r| r.utilization_percent)
                .collect();
            if !used.is_empty() {
                let mean = used.iter().sum::<u32>() as f64 / used.len() as f64;
                parts.push(format!("gpu {mean:.0}%"));
            }
        }
        parts.join(" ")
    }
}

/// Reads the resources of a run's devices and host, saying once what is not available.
pub struct ResourceMonitor {
    devices: Vec<Device>,
    /// False for a device whose plugin answered `Unimplemented`: it is not asked again.
    memory_implemented: Vec<bool>,
    platform: String,
    gpu: Option<Result<GpuTelemetry, ()>>,
    said: HashSet<String>,
}

impl ResourceMonitor {
    /// A monitor of `client`'s devices; on the CUDA platform it opens NVML now (saying once
    /// in the log when it cannot).
    pub fn new(client: &Client) -> ResourceMonitor {
        let platform = client
            .platform_name()
            .unwrap_or_else(|e| format!("<unknown platform: {e}>"));
        let devices = client.devices();
        let gpu = (Platform::parse(&platform).ok() == Some(Platform::Cuda)).then(|| {
            GpuTelemetry::open(NVML_LIBRARIES, &devices).map_err(|e| {
                tracing::warn!(
                    "GPU telemetry is unavailable (utilisation, power and temperature are \
                     recorded as \"gpu\": null): {e}"
                );
            })
        });
        if let Some(Ok(t)) = &gpu {
            tracing::info!(
                "GPU telemetry through NVML: utilisation, power and temperature of {} GPU(s) at every logged step",
                t.len()
            );
        }
        ResourceMonitor {
            memory_implemented: vec![true; devices.len()],
            devices,
            platform,
            gpu,
            said: HashSet::new(),
        }
    }

    /// Logs `message` the first time `key` is seen.
    fn once(&mut self, key: String, message: impl FnOnce() -> String) {
        if self.said.insert(key) {
            tracing::info!("{}", message());
        }
    }

    /// Reads everything now; `data_queue_depth` comes from the data source.
    pub fn sample(&mut self, data_queue_depth: Option<usize>) -> ResourceSnapshot {
        let mut memory = Vec::with_capacity(self.devices.len());
        for i in 0..self.devices.len() {
            if !self.memory_implemented[i] {
                memory.push(None);
                continue;
            }
            match self.devices[i].memory_stats() {
                Ok(stats) => memory.push(Some(DeviceMemory::from(stats))),
                Err(e) => {
                    if let RuntimeError::Pjrt {
                        code: PjrtCode::Unimplemented,
                        ..
                    } = e
                    {
                        self.memory_implemented[i] = false;
                    }
                    let platform = self.platform.clone();
                    self.once(format!("memory {i}"), || {
                        format!(
                            "device {i}: the {platform} plugin reports no memory statistics \
                             ({e}); metrics record its memory as null"
                        )
                    });
                    memory.push(None);
                }
            }
        }
        if let Some(Some(m)) = memory.first() {
            let platform = self.platform.clone();
            let missing: Vec<&str> = [("peak", m.peak.is_none()), ("limit", m.limit.is_none())]
                .into_iter()
                .filter_map(|(name, absent)| absent.then_some(name))
                .collect();
            if !missing.is_empty() {
                self.once("memory fields".into(), || {
                    format!(
                        "the {platform} plugin reports device memory in use but not its {}; those are left out of the metrics",
                        missing.join(" or ")
                    )
                });
            }
        }
        let host_rss_bytes = match host_rss_bytes() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.once("rss".into(), || {
                    format!("host RSS is not recorded (null): {e}")
                });
                None
            }
        };
        let gpu = match &self.gpu {
            None => None,
            Some(Err(())) => Some(GpuSnapshot::Unavailable),
            Some(Ok(telemetry)) => {
                let (readings, errors) = telemetry.read();
                for e in errors {
                    let key = match &e {
                        GpuTelemetryError::Nvml { call, device, .. } => format!("{call} {device}"),
                        other => other.to_string(),
                    };
                    self.once(key, || {
                        format!("GPU telemetry: {e} (left out of the metrics)")
                    });
                }
                Some(GpuSnapshot::Read(readings))
            }
        };
        ResourceSnapshot {
            memory,
            gpu,
            host_rss_bytes,
            data_queue_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ClientSpec;

    #[test]
    fn vm_rss_is_parsed_and_odd_lines_are_errors() {
        let status = "Name:\tvishwam\nVmPeak:\t  300 kB\nVmRSS:\t  123456 kB\nThreads: 9\n";
        assert_eq!(parse_vm_rss(status).unwrap(), 123456 * 1024);
        assert!(matches!(
            parse_vm_rss("Name: x\n"),
            Err(HostRssError::Missing)
        ));
        for line in [
            "VmRSS: 12 MB",
            "VmRSS: twelve kB",
            "VmRSS: 12",
            "VmRSS: 12 kB x",
        ] {
            let err = parse_vm_rss(line).unwrap_err();
            assert!(
                matches!(err, HostRssError::Format { .. }) && err.to_string().contains(line),
                "{line}: {err}"
            );
        }
        if cfg!(target_os = "linux") {
            assert!(
                host_rss_bytes().unwrap() > 1 << 20,
                "this process uses over 1 MiB"
            );
        }
    }

    #[test]
    fn records_leave_out_what_is_not_reported_and_null_what_is_absent() {
        let snapshot = ResourceSnapshot {
            memory: vec![
                Some(DeviceMemory {
                    in_use: 3 << 30,
                    peak: Some(4 << 30),
                    limit: Some(80 << 30),
                }),
                Some(DeviceMemory {
                    in_use: 1 << 30,
                    peak: None,
                    limit: None,
                }),
            ],
            gpu: Some(GpuSnapshot::Read(vec![
                GpuReading {
                    utilization_percent: Some(90),
                    power_watts: Some(650.5),
                    temperature_c: Some(61),
                },
                GpuReading {
                    utilization_percent: Some(70),
                    power_watts: None,
                    temperature_c: None,
                },
            ])),
            host_rss_bytes: Some(5 << 20),
            data_queue_depth: Some(3),
        };
        let mut line = json!({"step": 1});
        snapshot.record(&mut line);
        assert_eq!(
            line,
            json!({
                "step": 1,
                "memory": {
                    "device0": {"in_use": 3i64 << 30, "peak": 4i64 << 30, "limit": 80i64 << 30},
                    "device1": {"in_use": 1i64 << 30},
                },
                "gpu": {
                    "device0": {"utilization": 90, "power_w": 650.5, "temperature_c": 61},
                    "device1": {"utilization": 70},
                },
                "host_rss_bytes": 5 << 20,
                "data_queue_depth": 3,
            })
        );
        assert_eq!(snapshot.summary(), "mem 3.00/80.0 GiB gpu 80%");

        let absent = ResourceSnapshot {
            memory: vec![None, None],
            gpu: Some(GpuSnapshot::Unavailable),
            host_rss_bytes: Some(1 << 30),
            data_queue_depth: None,
        };
        let mut line = json!({});
        absent.record(&mut line);
        assert_eq!(
            line,
            json!({"memory": null, "gpu": null, "host_rss_bytes": 1 << 30, "data_queue_depth": null})
        );
        assert_eq!(absent.summary(), "rss 1.00 GiB");
    }

    /// On the CPU plugin: no GPU section, one memory entry per device (whatever the plugin
    /// reports, or none), and the host RSS.
    #[test]
    fn cpu_devices_are_sampled() {
        let client = ClientSpec::cpu(2).open().unwrap();
        let mut monitor = ResourceMonitor::new(&client);
        let first = monitor.sample(Some(2));
        let second = monitor.sample(None);
        println!("CPU plugin memory statistics: {:?}", first.memory);
        assert_eq!(first.memory.len(), 2);
        assert_eq!(first.gpu, None);
        assert_eq!(first.data_queue_depth, Some(2));
        assert_eq!(second.data_queue_depth, None);
        if cfg!(target_os = "linux") {
            assert!(first.host_rss_bytes.unwrap() > 0);
        }
        let mut line = json!({});
        first.record(&mut line);
        assert!(line.get("gpu").is_none(), "{line}");
    }
}
