//! Who this process is in a multi-process job: from flags or the usual environment variables.

use super::{DistributedError, Result};
use std::time::Duration;

/// The multi-process flags of `vishwam train` and `vishwam doctor`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ProcessFlags {
    /// Run as one process of a multi-process job: HOST:PORT where process 0 serves the job's
    /// key-value store (process 0 listens on that port; the others connect to it). Also read
    /// from JAX_COORDINATOR_ADDRESS, or MASTER_ADDR and MASTER_PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// The number of processes of the job. Also read from WORLD_SIZE or SLURM_NTASKS.
    #[arg(long = "num-processes", alias = "num_processes", value_name = "N")]
    pub num_processes: Option<usize>,
    /// This process's index, 0 to N-1 (process 0 serves the store and alone writes logs,
    /// metrics and the checkpoint manifest). Also read from RANK or SLURM_PROCID.
    #[arg(long = "process-id", alias = "process_id", value_name = "R")]
    pub process_id: Option<usize>,
    /// CUDA only: the local GPU ordinals this process uses, e.g. `0` or `0,1` (the CUDA
    /// plugin's `visible_devices`); by default every GPU the process can see.
    #[arg(long = "visible-devices", value_name = "LIST", value_delimiter = ',')]
    pub visible_devices: Option<Vec<i64>>,
    /// A further named create option for this process's PJRT client, NAME=VALUE
    /// (repeatable): an integer, a float (with a '.'), true/false, or else a string; e.g.
    /// the CUDA plugin's `preallocate=false` or `memory_fraction=0.4`, so that two
    /// processes can share one GPU. The plugin rejects a name it does not know.
    #[arg(long = "client-option", value_name = "NAME=VALUE", value_parser = parse_client_option)]
    pub client_options: Vec<(String, crate::runtime::CreateOption)>,
    /// How long the processes wait for each other to start and join, in seconds.
    #[arg(long = "join-timeout", value_name = "SECONDS", default_value_t = 300)]
    pub join_timeout: u64,
    /// A process whose heartbeats stop for this long (hung, or its host unreachable) fails
    /// the job, in seconds; a process that exits or is killed fails it at once.
    #[arg(
        long = "heartbeat-timeout",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub heartbeat_timeout: u64,
}

/// This process's place in a multi-process job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// HOST:PORT of process 0's store.
    pub coordinator: String,
    /// Processes in the job.
    pub num_processes: usize,
    /// This process, 0-based.
    pub process_id: usize,
    /// How long to wait for the others to join.
    pub join_timeout: Duration,
    /// How long a silent process is tolerated.
    pub heartbeat_timeout: Duration,
}

/// Parses `--client-option NAME=VALUE`.
fn parse_client_option(
    raw: &str,
) -> std::result::Result<(String, crate::runtime::CreateOption), String> {
    use crate::runtime::CreateOption;
    let (name, value) = raw
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{raw:?} is not NAME=VALUE"))?;
    let parsed = if let Ok(v) = value.parse::<i64>() {
        CreateOption::Int64(v)
    } else if value.contains('.') && value.parse::<f32>().is_ok() {
        CreateOption::Float(value.parse().expect("checked"))
    } else if value == "true" || value == "false" {
        CreateOption::Bool(value == "true")
    } else {
        CreateOption::Str(value.to_string())
    };
    Ok((name.to_string(), parsed))
}

/// One value and where it came from (a flag or an environment variable).
struct Sourced<T> {
    source: String,
    value: T,
}

/// Agrees the candidates for one quantity: none, one, or several equal values; two that
/// differ are an error naming both sources.
fn agree<T: PartialEq + std::fmt::Display + Clone>(
    what: &str,
    candidates: Vec<Sourced<T>>,
) -> Result<Option<T>> {
    let mut chosen: Option<&Sourced<T>> = None;
    for c in &candidates {
        match chosen {
            Some(first) if first.value != c.value => {
                return Err(DistributedError::Spec(format!(
                    "the {what} is {} from {} but {} from {}; make them agree or unset one",
                    first.value, first.source, c.value, c.source
                )))
            }
            Some(_) => {}
            None => chosen = Some(c),
        }
    }
    Ok(chosen.map(|c| c.value.clone()))
}

fn parse_count(name: &str, raw: &str) -> Result<usize> {
    raw.trim().parse::<usize>().map_err(|_| {
        DistributedError::Spec(format!(
            "environment variable {name}={raw:?} is not a non-negative integer"
        ))
    })
}

impl ProcessSpec {
    /// The job this process belongs to from `flags` and the process environment; `None` for
    /// a single-process run (no flag given, and no WORLD_SIZE / SLURM_NTASKS above 1).
    pub fn from_flags(flags: &ProcessFlags) -> Result<Option<ProcessSpec>> {
        ProcessSpec::resolve(flags, &|name| std::env::var(name).ok())
    }

    /// As [`ProcessSpec::from_flags`] with the environment read through `env`.
    pub fn resolve(
        flags: &ProcessFlags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ProcessSpec>> {
        let flag = |name: &str| format!("--{name}");
        let var = |name: &str, value: &str| format!("{name}={value}");

        let mut coordinators = Vec::new();
        if let Some(c) = &flags.coordinator {
            coordinators.push(Sourced {
                source: flag("coordinator"),
                value: c.clone(),
            });
        }
        if let Some(c) = env("JAX_COORDINATOR_ADDRESS") {
            coordinators.push(Sourced {
                source: var("JAX_COORDINATOR_ADDRESS", &c),
                value: c,
            });
        }
        match (env("MASTER_ADDR"), env("MASTER_PORT")) {
            (Some(host), Some(port)) => {
                let value = format!("{host}:{port}");
                coordinators.push(Sourced {
                    source: format!("MASTER_ADDR={host} MASTER_PORT={port}"),
                    value,
                });
            }
            (Some(_), None) => {
                return Err(DistributedError::Spec(
                    "MASTER_ADDR is set but MASTER_PORT is not; set both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(DistributedError::Spec(
                    "MASTER_PORT is set but MASTER_ADDR is not; set both".into(),
                ))
            }
            (None, None) => {}
        }

        let mut counts = Vec::new();
        if let Some(n) = flags.num_processes {
            counts.push(Sourced {
                source: flag("num-processes"),
                value: n,
            });
        }
        for name in ["WORLD_SIZE", "SLURM_NTASKS"] {
            if let Some(raw) = env(name) {
                let value = parse_count(name, &raw)?;
                counts.push(Sourced {
                    source: var(name, &raw),
                    value,
                });
            }
        }

        let mut ids = Vec::new();
        if let Some(r) = flags.process_id {
            ids.push(Sourced {
                source: flag("process-id"),
                value: r,
            });
        }
        for name in ["RANK", "SLURM_PROCID"] {
            if let Some(raw) = env(name) {
                let value = parse_count(name, &raw)?;
                ids.push(Sourced {
                    source: var(name, &raw),
                    value,
                });
            }
        }

        let any_flag = flags.coordinator.is_some()
            || flags.num_processes.is_some()
            || flags.process_id.is_some();
        let coordinator = agree("coordinator address", coordinators)?;
        let num_processes = agree("number of processes", counts)?;
        let process_id = agree("process id", ids)?;
        // A scheduler's one-task job (WORLD_SIZE=1, SLURM_NTASKS=1) is a single-process run.
        if !any_flag && num_processes.unwrap_or(1) <= 1 {
            return Ok(None);
        }
        let missing = |what: &str, how: &str| {
            DistributedError::Spec(format!("a multi-process run needs the {what}: {how}"))
        };
        let coordinator = coordinator.ok_or_else(|| {
            missing(
                "coordinator address",
                "pass --coordinator HOST:PORT (or set JAX_COORDINATOR_ADDRESS, or MASTER_ADDR and MASTER_PORT)",
            )
        })?;
        let num_processes = num_processes.ok_or_else(|| {
            missing(
                "number of processes",
                "pass --num-processes N (or set WORLD_SIZE or SLURM_NTASKS)",
            )
        })?;
        let process_id = process_id.ok_or_else(|| {
            missing(
                "process id",
                "pass --process-id R (or set RANK or SLURM_PROCID)",
            )
        })?;
        if num_processes == 0 {
            return Err(DistributedError::Spec(
                "the number of processes is 0; it must be at least 1".into(),
            ));
        }
        if process_id >= num_processes {
            return Err(DistributedError::Spec(format!(
                "process id {process_id} is not below the number of processes {num_processes} \
                 (ids are 0 to {})",
                num_processes - 1
            )));
        }
        match coordinator.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(DistributedError::Spec(format!(
                    "coordinator address {coordinator:?} is not HOST:PORT (e.g. 10.0.0.1:7777)"
                )))
            }
        }
        for (name, seconds) in [
            ("--join-timeout", flags.join_timeout),
            ("--heartbeat-timeout", flags.heartbeat_timeout),
        ] {
            if seconds == 0 {
                return Err(DistributedError::Spec(format!(
                    "{name} 0: a timeout must be at least 1 second"
                )));
            }
        }
        Ok(Some(ProcessSpec {
            coordinator,
            num_processes,
            process_id,
            join_timeout: Duration::from_secs(flags.join_timeout),
            heartbeat_timeout: Duration::from_secs(flags.heartbeat_timeout),
        }))
    }

    /// The address process 0 listens on: the coordinator's port on every interface of this
    /// host when the coordinator is not a loopback name (other hosts must reach it).
    pub fn listen_address(&self) -> String {
        let (host, port) = self
            .coordinator
            .rsplit_once(':')
            .expect("checked HOST:PORT");
        match host {
            "localhost" | "127.0.0.1" | "[::1]" => self.coordinator.clone(),
            _ => format!("0.0.0.0:{port}"),
        }
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
