//! How much memory one device has for a train step: what the device reports, a budget the
//! user gives, or on the CPU plugin (which reports none) the host's available memory.

use super::{PlanError, GIB};
use crate::runtime::Client;

/// Memory per device for planning, and where the figure came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBudget {
    /// Bytes per device.
    pub bytes: i64,
    /// Where the figure came from, for logs and tables.
    pub source: String,
}

impl MemoryBudget {
    /// The budget of one of `devices` devices of `client`: `gib` when given (`flag` names
    /// it in messages), else the device's `bytes_limit`, else on the CPU the host's
    /// `MemAvailable` shared by the `devices` virtual devices. Anything else is
    /// [`PlanError::UnknownMemory`] naming `flag`.
    pub fn of(
        client: &Client,
        devices: usize,
        gib: Option<f64>,
        flag: &str,
    ) -> Result<MemoryBudget, PlanError> {
        if let Some(g) = gib {
            if !(g.is_finite() && g > 0.0) {
                return Err(PlanError::Invalid(format!(
                    "{flag} = {g}: the memory budget must be a positive number of GiB"
                )));
            }
            return Ok(MemoryBudget {
                bytes: (g * GIB) as i64,
                source: format!("{g} GiB per device ({flag})"),
            });
        }
        let platform = client.platform_name()?;
        let first = client.devices().into_iter().next();
        let reported = first.as_ref().map(|d| d.memory_stats());
        if let Some(Ok(stats)) = reported {
            if let Some(limit) = stats.bytes_limit {
                let kind = first.and_then(|d| d.kind().ok()).unwrap_or_default();
                return Ok(MemoryBudget {
                    bytes: limit,
                    source: format!(
                        "{:.1} GiB reported by the {kind} device",
                        limit as f64 / GIB
                    ),
                });
            }
        }
        if platform.eq_ignore_ascii_case("cpu") {
            let available = host_available_bytes().ok_or_else(|| PlanError::UnknownMemory {
                reason: "the CPU plugin reports no device memory and /proc/meminfo has no \
                         MemAvailable line"
                    .into(),
                remedy: flag.to_string(),
            })?;
            let per_device = available / devices.max(1) as i64;
            return Ok(MemoryBudget {
                bytes: per_device,
                source: format!(
                    "host MemAvailable {:.1} GiB / {} virtual device(s) (the CPU plugin reports no device memory)",
                    available as f64 / GIB,
                    devices.max(1)
                ),
            });
        }
        Err(PlanError::UnknownMemory {
            reason: format!("the {platform} plugin reports no memory limit for its devices"),
            remedy: flag.to_string(),
        })
    }

    /// Bytes usable after keeping `reserve` (a fraction in [0, 1)) free.
    pub fn usable(&self, reserve: f64) -> i64 {
        (self.bytes as f64 * (1.0 - reserve)) as i64
    }
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux), if readable.
fn host_available_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
