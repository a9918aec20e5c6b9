//! The memory probe: the compiled memory of a config's real train step on a client's
//! devices, without allocating its parameters or optimizer state. Results are cached by the
//! step's shape, so a search asks XLA once per distinct program.

use super::PlanError;
use crate::config::{self, Config};
use crate::engine::Engine;
use crate::runtime::{Client, CompileCache, CompiledMemoryStats};
use crate::train::{compile_step, sharding_plan, CompiledStep};
use std::collections::HashMap;
use std::time::Instant;
use vishwam_mesh::ShardingPlan;

/// Compiles train steps on a client's devices and reports their memory per device.
pub struct MemoryProbe {
    client: Client,
    platform: config::Platform,
    devices: usize,
    cache: CompileCache,
    known: HashMap<String, CompiledMemoryStats>,
    /// Steps compiled by [`MemoryProbe::measure`], kept for [`MemoryProbe::compile`] to hand
    /// out (running a probed candidate needs no second compile).
    compiled: HashMap<String, (Engine, ShardingPlan, CompiledStep)>,
    /// Programs compiled so far (cache hits of the probe not counted).
    pub compiles: usize,
    /// Seconds spent tracing and compiling.
    pub compile_seconds: f64,
}

/// Device memory one step needs: arguments + outputs - aliased (donated) + temporaries,
/// per device ([`CompiledMemoryStats::total_bytes`], what the run's `compiled_memory`
/// record reports in parts).
pub fn step_bytes(stats: &CompiledMemoryStats) -> i64 {
    stats.total_bytes()
}

impl MemoryProbe {
    /// A probe on the first `devices` devices of `client` (its platform is the one the
    /// configs are pinned to), compiling through `cache`.
    pub fn new(client: Client, devices: usize, cache: CompileCache) -> Result<Self, PlanError> {
        let name = client.platform_name()?;
        let platform = match crate::runtime::Platform::parse(&name) {
            Ok(crate::runtime::Platform::Cpu) => config::Platform::Cpu,
            Ok(crate::runtime::Platform::Cuda) => config::Platform::Cuda,
            Ok(crate::runtime::Platform::Tpu) => config::Platform::Tpu,
            Err(_) => {
                return Err(PlanError::Invalid(format!(
                    "the PJRT client reports the platform `{name}`, which is none of cpu, cuda, tpu"
                )))
            }
        };
        Ok(MemoryProbe {
            client,
            platform,
            devices,
            cache,
            known: HashMap::new(),
            compiled: HashMap::new(),
            compiles: 0,
            compile_seconds: 0.0,
        })
    }

    /// The client the probe compiles on.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Devices the probed steps run on.
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// The platform the probe compiles for.
    pub fn platform(&self) -> config::Platform {
        self.platform
    }

    /// `cfg` with its platform and device count set to the probe's.
    pub fn pinned(&self, cfg: &Config) -> Config {
        let mut cfg = cfg.clone();
        cfg.runtime.platform = self.platform;
        cfg.runtime.devices = Some(self.devices);
        cfg
    }

    /// The sharding plan and an engine for `cfg`'s mesh on the probe's devices.
    pub fn engine_for(&self, cfg: &Config) -> Result<(Engine, ShardingPlan), PlanError> {
        let plan = sharding_plan(cfg, self.platform.as_str(), self.devices)?;
        let engine = Engine::new(self.client.clone(), plan.mesh.clone(), self.cache.clone())?;
        Ok((engine, plan))
    }

    /// Traces and compiles `cfg`'s train step (nothing is allocated on the devices), or hands
    /// out the one [`MemoryProbe::measure`] compiled for it.
    pub fn compile(
        &mut self,
        cfg: &Config,
    ) -> Result<(Engine, ShardingPlan, CompiledStep), PlanError> {
        let cfg = self.pinned(cfg);
        if let Some(done) = self.compiled.remove(&shape_key(&cfg)) {
            return Ok(done);
        }
        let (engine, plan) = self.engine_for(&cfg)?;
        let t = Instant::now();
        let step = compile_step(&cfg, &engine, &plan, None)?;
        self.compiles += 1;
        self.compile_seconds += t.elapsed().as_secs_f64();
        tracing::debug!(
            "probe: {} layers x {} wide, batch {} x {} accum, remat {}: {:.1} MiB in {:.1}s",
            cfg.model.num_layers,
            cfg.model.hidden_dim,
            cfg.training.batch_size,
            cfg.training.grad_accum_steps,
            cfg.memory.gradient_checkpointing,
            step.program
                .memory_stats()
                .map(|s| s.total_bytes() as f64 / (1u64 << 20) as f64)
                .unwrap_or(f64::NAN),
            t.elapsed().as_secs_f64()
        );
        Ok((engine, plan, step))
    }

    /// The compiled memory of `cfg`'s train step per device, cached by the step's shape.
    pub fn measure(&mut self, cfg: &Config) -> Result<CompiledMemoryStats, PlanError> {
        let key = shape_key(&self.pinned(cfg));
        if let Some(stats) = self.known.get(&key) {
            return Ok(*stats);
        }
        let compiled = self.compile(cfg)?;
        let stats = compiled.2.program.memory_stats()?;
        self.known.insert(key.clone(), stats);
        self.compiled.insert(key, compiled);
        Ok(stats)
    }

    /// [`step_bytes`] of `cfg`'s step.
    pub fn bytes(&mut self, cfg: &Config) -> Result<i64, PlanError> {
        Ok(step_bytes(&self.measure(cfg)?))
    }
}

/// What decides the step's memory: every section but the run's bookkeeping (logging, data,
/// description) and the schedule's numbers, which only change constants of the program.
fn shape_key(cfg: &Config) -> String {
    let mut value = serde_json::to_value(cfg).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for section in ["logging", "data", "datasets", "description"] {
            map.remove(section);
        }
        if let Some(training) = map.get_mut("training").and_then(|t| t.as_object_mut()) {
            for key in ["max_steps", "warmup_steps", "learning_rate"] {
                training.remove(key);
            }
        }
    }
    value.to_string()
}
