//! A model whose parameters are on a device, with its compiled programs.

use super::programs::{build_decode, build_eval, build_init_cache, build_prefill, DecodeMode};
use super::sampling::Bisection;
use super::GenerateError;
use crate::config::{ComputeDtype, Config};
use crate::engine::{Engine, HostArray, Input, Program, ShardedArray};
use crate::model::{param_specs, ForwardOptions, KvCacheFormat, KvCacheShape};
use crate::runtime::{ClientSpec, CompileCache, ElementType, Platform};
use crate::train::checkpoint::{self, Checkpoint};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use vishwam_hlo::DType;
use vishwam_mesh::{Mesh, PartitionSpec};

/// Which compiled program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ProgramKey {
    /// Zeroes a cache.
    InitCache(KvCacheShape),
    /// One prefill chunk of this many tokens.
    Prefill(KvCacheShape, usize),
    /// One decode step.
    Decode(KvCacheShape, DecodeMode),
    /// One greedy decode step that also returns the logits.
    DecodeWithLogits(KvCacheShape),
    /// Evaluation loss over `[batch, seq_len]`.
    Eval(usize, usize),
}

/// Where to run: the platform (default: the config's `runtime.platform`) and plugin.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSelection {
    /// Overrides the config's platform.
    pub platform: Option<Platform>,
    /// Path to a PJRT plugin, overriding discovery.
    pub plugin: Option<PathBuf>,
}

/// A model loaded onto one device: its config, its parameters in the compute dtype, and the
/// programs compiled so far (each compiled on first use and kept).
pub struct LoadedModel {
    engine: Engine,
    config: Config,
    opts: ForwardOptions,
    /// How the decode programs trace sampling's bisections (by platform).
    bisection: Bisection,
    kv_cache: KvCacheFormat,
    params: Vec<ShardedArray>,
    programs: HashMap<ProgramKey, Program>,
    checkpoint: Option<(PathBuf, u64)>,
}

/// The name that stands for the newest checkpoint of a directory: `RUN/checkpoints/latest`
/// (as the Pufferfish README writes it) is the newest `RUN/checkpoints/step_*`.
pub const LATEST_CHECKPOINT: &str = "latest";

/// The checkpoint directory `dir` names: `dir` itself when it holds a `manifest.json`, else
/// the newest `step_*` under `dir/checkpoints` or `dir`. A path ending in `latest` that does
/// not exist ([`LATEST_CHECKPOINT`]) names the newest `step_*` of its parent directory (or of
/// the parent's `checkpoints/`).
pub fn find_checkpoint(dir: &Path) -> Result<PathBuf, GenerateError> {
    let not_found = |detail: &str| GenerateError::CheckpointNotFound {
        path: dir.display().to_string(),
        detail: detail.to_string(),
    };
    if !dir.exists() && dir.file_name().is_some_and(|n| n == LATEST_CHECKPOINT) {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return [parent.clone(), parent.join("checkpoints")]
            .iter()
            .find_map(|root| checkpoint::latest(root))
            .ok_or_else(|| {
                not_found(&format!(
                    "`{LATEST_CHECKPOINT}` stands for the newest step_NNNNNNNN checkpoint of {}, and it holds none",
                    parent.display()
                ))
            });
    }
    if !dir.is_dir() {
        return Err(not_found("no such directory; pass a checkpoint directory (step_NNNNNNNN) or the run's output directory"));
    }
    if dir.join("manifest.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    for root in [dir.join("checkpoints"), dir.to_path_buf()] {
        if let Some(latest) = checkpoint::latest(&root) {
            return Ok(latest);
        }
    }
    Err(not_found(
        "it holds no manifest.json and no step_NNNNNNNN checkpoints (directly or under checkpoints/); \
         pass a checkpoint directory or the output_dir of a training run that saved one",
    ))
}

/// The compute dtype a config asks for.
pub(crate) fn compute_dtype(cfg: &Config) -> DType {
    match cfg.compute_dtype() {
        ComputeDtype::F32 => DType::F32,
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => DType::F16,
    }
}

/// `array` (f32) converted to `dtype` (f32, bf16 or f16, round to nearest even).
fn convert(array: &HostArray, dtype: DType) -> Result<HostArray, GenerateError> {
    let values = array.to_vec::<f32>().map_err(GenerateError::HostArray)?;
    let (element_type, data): (ElementType, Vec<u8>) = match dtype {
        DType::BF16 => (
            ElementType::BF16,
            values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            ElementType::F16,
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
        _ => return Ok(array.clone()),
    };
    HostArray::from_bytes(element_type, &array.shape, data).map_err(GenerateError::HostArray)
}

/// An engine on one device of the platform `runtime` (else `config`) names, with the
/// config's compile cache.
pub fn open_engine(config: &Config, runtime: &RuntimeSelection) -> Result<Engine, GenerateError> {
    let platform = match runtime.platform {
        Some(platform) => platform,
        None => crate::train::platform(config)
            .map_err(|e| GenerateError::Checkpoint(Box::new(e.into())))?,
    };
    let client = ClientSpec {
        platform,
        devices: (platform == Platform::Cpu).then_some(1),
        plugin: runtime.plugin.clone(),
        config_plugin: config.runtime.plugin.as_ref().map(PathBuf::from),
    }
    .open()?;
    let cache = if config.runtime.compile_cache {
        CompileCache::default_dir()
    } else {
        CompileCache::disabled()
    };
    Ok(Engine::new(client, Mesh::single(), cache)?)
}

impl LoadedModel {
    /// Loads the checkpoint that `dir` names (see [`find_checkpoint`]) onto one device of the
    /// platform its config (or `runtime`) names.
    pub fn open(dir: &Path, runtime: &RuntimeSelection) -> Result<LoadedModel, GenerateError> {
        let dir = find_checkpoint(dir)?;
        let ck = checkpoint::load(&dir)?;
        let config = Config::from_json_str(&ck.manifest.config.to_string())?;
        let engine = open_engine(&config, runtime)?;
        let mut model = LoadedModel::from_checkpoint(&ck, config, engine)?;
        model.checkpoint = Some((dir, ck.manifest.step));
        Ok(model)
    }

    /// The checkpoint directory and step the model was opened from, if any.
    pub fn checkpoint(&self) -> Option<(&Path, u64)> {
        self.checkpoint.as_ref().map(|(d, s)| (d.as_path(), *s))
    }

    /// The parameters (`params.<name>`) of `checkpoint` under `config`, on `engine` (whose mesh
    /// should be one device: every array is replicated).
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        config: Config,
        engine: Engine,
    ) -> Result<LoadedModel, GenerateError> {
        let params: BTreeMap<String, HostArray> = crate::train::state::params_of(&checkpoint.state);
        LoadedModel::new(config, &params, engine)
    }

    /// A model from f32 parameters by name (as [`crate::model::init_params`] returns them).
    pub fn new(
        config: Config,
        params: &BTreeMap<String, HostArray>,
        engine: Engine,
    ) -> Result<LoadedModel, GenerateError> {
        config.validate()?;
        let compute = compute_dtype(&config);
        let mut arrays = Vec::new();
        for spec in param_specs(&config.model) {
            let bad = |detail: String| GenerateError::Parameter {
                name: spec.name.clone(),
                detail,
            };
            let host = params.get(&spec.name).ok_or_else(|| {
                bad("missing; the checkpoint does not match its own model config".into())
            })?;
            if host.element_type != ElementType::F32 || host.shape != spec.shape {
                return Err(bad(format!(
                    "is {}{:?}, the model config needs f32{:?}",
                    host.element_type.mlir_name(),
                    host.shape,
                    spec.shape
                )));
            }
            arrays.push(engine.put(&convert(host, compute)?, &PartitionSpec::default())?);
        }
        let kv_cache = if config.memory.kv_cache_fp8 {
            KvCacheFormat::Fp8
        } else {
            KvCacheFormat::Plain(compute)
        };
        // The engine's platform, not the config's (which may say "auto" or another machine's).
        let platform = crate::train::engine_platform(&engine)
            .map_err(|e| GenerateError::Checkpoint(Box::new(e)))?;
        Ok(LoadedModel {
            engine,
            opts: ForwardOptions {
                compute,
                row_stats: crate::model::RowStats::for_platform(platform),
                ..ForwardOptions::eval()
            },
            bisection: Bisection::for_platform(platform),
            config,
            kv_cache,
            params: arrays,
            programs: HashMap::new(),
            checkpoint: None,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engine the model runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How the KV cache stores keys and values.
    pub fn kv_cache_format(&self) -> KvCacheFormat {
        self.kv_cache
    }

    /// Stores the KV cache in f8E4M3FN with per-head scales (`true`) or in the compute dtype.
    pub fn set_kv_cache_fp8(&mut self, fp8: bool) {
        self.kv_cache = if fp8 {
            KvCacheFormat::Fp8
        } else {
            KvCacheFormat::Plain(self.opts.compute)
        };
    }

    /// The compute dtype of matmuls and activations.
    pub fn compute_dtype(&self) -> DType {
        self.opts.compute
    }

    /// Compiles the program `key` unless it already is; returns its compile time in seconds
    /// (0 when it was compiled before).
    pub(crate) fn ensure_program(&mut self, key: ProgramKey) -> Result<f64, GenerateError> {
        if self.programs.contains_key(&key) {
            return Ok(0.0);
        }
        let cfg = &self.config.model;
        let func = match key {
            ProgramKey::InitCache(shape) => build_init_cache(cfg, &shape)?,
            ProgramKey::Prefill(shape, chunk) => build_prefill(cfg, &self.opts, &shape, chunk)?,
            ProgramKey::Decode(shape, mode) => {
                build_decode(cfg, &self.opts, &shape, mode, false, self.bisection)?
            }
            ProgramKey::DecodeWithLogits(shape) => build_decode(
                cfg,
                &self.opts,
                &shape,
                DecodeMode::Greedy,
                true,
                self.bisection,
            )?,
            ProgramKey::Eval(batch, seq) => build_eval(cfg, &self.opts, batch, seq)?,
        };
        let program = self.engine.compile(&func)?;
        let seconds = program.compile_seconds;
        if let Ok(m) = program.memory_stats() {
            tracing::debug!(
                "compiled {} in {seconds:.2}s: {} argument bytes, {} aliased by outputs, {} temporary",
                program.name,
                m.argument_bytes,
                m.alias_bytes,
                m.temp_bytes
            );
        }
        self.programs.insert(key, program);
        Ok(seconds)
    }

    /// A compiled program (after [`LoadedModel::ensure_program`]).
    pub(crate) fn program(&self, key: &ProgramKey) -> &Program {
        &self.programs[key]
    }

    /// The parameters as program inputs (kept).
    pub(crate) fn param_inputs(&self) -> Vec<Input<'_>> {
        self.params.iter().map(Input::Keep).collect()
    }

    /// Uploads a host array, replicated.
    pub(crate) fn put(&self, host: &HostArray) -> Result<ShardedArray, GenerateError> {
        Ok(self.engine.put(host, &PartitionSpec::default())?)
    }
}
