//! `vishwam train --validate-setup`: check everything a run needs, run one step, write nothing.
//!
//! One line per check (`✓` passed, `✗` failed, `-` skipped because an earlier check it needs
//! failed), then `setup valid` (exit 0) or `setup invalid: CHECK: PROBLEM` naming the first
//! failure (exit 1). Checks that do not depend on each other all run, so one pass reports the
//! config, the plugin and the data together; nothing is compiled without a plugin, and the
//! step only runs once its compiled memory is known to fit. Nothing is written into
//! `logging.output_dir`; the caches under `$VISHWAM_HOME` (compiled programs, tokenized
//! data, a trained tokenizer) fill as they do for a run.

use super::train::{init_from, TrainArgs};
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::plan::GIB;
use vishwam::runtime::{CacheOutcome, Client, ClientSpec, CompiledMemoryStats, Device};
use vishwam::train::{
    batch_geometry, compile_step, describe_data_inputs, engine_on, pin_platform, prepare_data,
    run_tokenizer, BatchSource, CompiledStep, InitWeights, PrecisionPolicy, Trainer, TrainingData,
    SUPPORTED,
};
use vishwam_mesh::ShardingPlan;

const MIB: f64 = (1u64 << 20) as f64;

/// The outcome of each check so far, printed as it is known.
#[derive(Default)]
struct Checks {
    first_failure: Option<String>,
}

impl Checks {
    /// Prints `result` as the line of check `name`; `Some(value)` when it passed.
    fn run<T>(&mut self, name: &str, result: anyhow::Result<(String, T)>) -> Option<T> {
        match result {
            Ok((summary, value)) => {
                println!("✓ {name}: {summary}");
                Some(value)
            }
            Err(e) => {
                let problem = format!("{e:#}");
                println!("✗ {name}: {problem}");
                self.first_failure
                    .get_or_insert_with(|| format!("{name}: {problem}"));
                None
            }
        }
    }

    /// Prints that check `name` did not run, and why.
    fn skip(&self, name: &str, why: &str) {
        println!("- {name}: skipped ({why})");
    }

    /// Prints the verdict line; the exit status of the whole check.
    fn verdict(self) -> ExitCode {
        match self.first_failure {
            None => {
                println!("setup valid");
                ExitCode::SUCCESS
            }
            Some(problem) => {
                println!("setup invalid: {problem}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs every check of `vishwam train --validate-setup` and prints the verdict.
pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    let flags = &args.plan;
    if flags.target_hours.is_some() || flags.memory_reserve.is_some() || flags.peak_tflops.is_some()
    {
        anyhow::bail!(
            "--validate-setup checks the run a config describes, and takes --memory-gib alone of \
             the planning flags; plan first (`vishwam plan --target-hours H --out plan.json`), \
             then `vishwam train --config plan.json --validate-setup`"
        );
    }
    let mut checks = Checks::default();
    let Some((mut cfg, init)) = checks.run("config", check_config(args)) else {
        return Ok(checks.verdict());
    };
    let opened = checks.run("plugin", open_plugin(args, &mut cfg));
    let devices = match opened {
        Some(client) => checks.run("devices", open_devices(&cfg, client)),
        None => {
            checks.skip("devices", "no plugin");
            None
        }
    };
    match &devices {
        Some((engine, _)) => {
            let precision = check_precision(args, &mut cfg, &engine.client);
            checks.run("precision", precision);
        }
        None => checks.skip("precision", "no devices"),
    }
    if cfg.training.batch_size_is_auto() {
        match &devices {
            Some((engine, plan)) => {
                if let Some(resolved) = checks.run("batch", resolve_batch(&cfg, engine, plan)) {
                    cfg = resolved;
                }
            }
            None => checks.skip("batch", "no devices"),
        }
    }
    let sources = checks.run("data sources", check_sources(&cfg));
    let tokenizer = match (&sources, &cfg.data.tokenizer) {
        (None, None) => {
            checks.skip("tokenizer", "it would be trained on the data sources");
            None
        }
        _ => checks.run("tokenizer", check_tokenizer(&cfg)),
    };
    let data = match (&sources, &tokenizer) {
        (Some(()), Some(())) => checks.run("data", check_data(&cfg)),
        _ => {
            checks.skip("data", "no data sources or no tokenizer");
            None
        }
    };
    let Some((engine, plan)) = devices else {
        for name in ["compile", "memory", "step"] {
            checks.skip(name, "no devices");
        }
        return Ok(checks.verdict());
    };
    if cfg.training.batch_size_is_auto() {
        for name in ["compile", "memory", "step"] {
            checks.skip(name, "training.batch_size \"auto\" was not resolved");
        }
        return Ok(checks.verdict());
    }
    let Some(step) = checks.run("compile", compile(&cfg, &engine, &plan)) else {
        checks.skip("memory", "no compiled step");
        checks.skip("step", "no compiled step");
        return Ok(checks.verdict());
    };
    let budget = memory_budget(args.plan.memory_gib, &engine.client.devices()[0]);
    let fits = checks.run("memory", check_memory(&step, &budget));
    match (fits, data) {
        (Some(()), Some(())) => {
            checks.run(
                "step",
                one_step(step, engine, plan, init.as_ref(), cfg.clone()),
            );
        }
        (None, _) => checks.skip("step", "the step does not fit in memory"),
        (_, None) => checks.skip("step", "no data"),
    }
    Ok(checks.verdict())
}

/// The config as `vishwam train` loads it (validated at load), with its platform as written.
fn check_config(args: &TrainArgs) -> anyhow::Result<(String, (Config, Option<InitWeights>))> {
    let (cfg, init) = args.load_run_as_written()?;
    if let Some(teacher) = &cfg.distillation.teacher_model {
        anyhow::bail!(
            "distillation.teacher_model is set ({teacher}): `vishwam train` does not distil; \
             set it to null to check the student's setup"
        );
    }
    cfg.require_features(SUPPORTED)?;
    let (total, _) = vishwam::model::param_counts(&cfg.model);
    let origin = match &args.run.config {
        Some(path) => path.display().to_string(),
        None => "the defaults".to_string(),
    };
    let summary = format!(
        "{origin}: {} layers x {} wide, {:.2}M parameters, {} steps",
        cfg.model.num_layers,
        cfg.model.hidden_dim,
        total as f64 / 1e6,
        cfg.training.max_steps
    );
    Ok((summary, (cfg, init)))
}

/// Resolves the platform (an "auto" one by the named plugin or what is installed) and loads
/// the plugin by opening its client.
fn open_plugin(args: &TrainArgs, cfg: &mut Config) -> anyhow::Result<(String, Client)> {
    vishwam::train::resolve_platform(cfg, args.run.plugin.as_deref())?;
    let platform = vishwam::train::platform(cfg)?;
    let spec = ClientSpec {
        platform,
        devices: cfg.requested_devices(),
        plugin: args.run.plugin.clone(),
        config_plugin: cfg.runtime.plugin.as_ref().map(Into::into),
    };
    let client = spec.open()?;
    let api = client.api();
    let (name, version) = (client.platform_name()?, client.platform_version()?);
    let summary = format!(
        "{} (PJRT C API {}.{}, platform {name}{})",
        api.path().display(),
        api.version().0,
        api.version().1,
        match version == name {
            true => String::new(),
            false => format!(" {version}"),
        }
    );
    Ok((summary, client))
}

/// The devices the config uses, laid out on its mesh, with their kind and memory; the
/// config is validated again with its platform known.
fn open_devices(cfg: &Config, client: Client) -> anyhow::Result<(String, (Engine, ShardingPlan))> {
    let platform = vishwam::runtime::Platform::parse(&client.platform_name()?)?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("on the platform {}: {e}", platform.name()))?;
    let present = client.num_devices();
    let first = client.devices()[0].clone();
    let kind = first.kind()?;
    let memory = match first.memory_stats() {
        Ok(stats) => match stats.bytes_limit {
            Some(limit) => format!("{:.1} GiB each", limit as f64 / GIB),
            None => "memory limit not reported by this plugin".to_string(),
        },
        Err(_) => "memory not reported by this plugin".to_string(),
    };
    let (engine, plan) = engine_on(cfg, client, platform)?;
    let batch = match cfg.training.batch_size_is_auto() {
        true => "training.batch_size \"auto\" (resolved below)".to_string(),
        false => format!("global batch {}", batch_geometry(cfg, &plan)),
    };
    let summary = format!(
        "{} of {present} {} device(s), kind {kind}, {memory}; mesh {}, {batch}",
        plan.mesh.num_devices(),
        platform.name(),
        plan.mesh,
    );
    Ok((summary, (engine, plan)))
}

/// `--precision` or the hardware-aware choice applied, and the policy that results.
fn check_precision(
    args: &TrainArgs,
    cfg: &mut Config,
    client: &Client,
) -> anyhow::Result<(String, ())> {
    let line = args.apply_precision(cfg, client)?;
    let policy = PrecisionPolicy::from_config(cfg);
    let source = match line {
        Some(line) => line.trim_start_matches("precision ").to_string(),
        None => "as the config's precision keys say".to_string(),
    };
    Ok((format!("{source}; compute {}", policy.compute), ()))
}

/// The data sources exist and have files of the configured format.
fn check_sources(cfg: &Config) -> anyhow::Result<(String, ())> {
    Ok((describe_data_inputs(cfg)?.join("; "), ()))
}

/// The tokenizer loads (or is trained once and cached) and fits the model's vocabulary.
fn check_tokenizer(cfg: &Config) -> anyhow::Result<(String, ())> {
    let chosen = run_tokenizer(cfg)?;
    let summary = format!(
        "{} ({} tokens, model vocab {})",
        chosen.description,
        chosen.tokenizer.vocab_size(),
        cfg.model.vocab_size
    );
    Ok((summary, ()))
}

/// Every source is read and tokenized (or its fresh cache reused).
fn check_data(cfg: &Config) -> anyhow::Result<(String, ())> {
    let (_, _, prepared) = prepare_data(cfg)?;
    let summary = format!(
        "{} tokens, {} per training window",
        prepared.num_tokens(),
        cfg.seq_len()
    );
    Ok((summary, ()))
}

/// `training.batch_size: "auto"` resolved as `vishwam train` resolves it: the largest
/// micro-batch whose compiled step fits the device memory less the reserve.
fn resolve_batch(
    cfg: &Config,
    engine: &Engine,
    plan: &ShardingPlan,
) -> anyhow::Result<(String, Config)> {
    let resolved = super::train::resolve_batch_size(cfg.clone(), engine, plan)?;
    let summary = format!("\"auto\": {}", batch_geometry(&resolved, plan));
    Ok((summary, resolved))
}

/// The step traced and compiled (no state is uploaded yet).
fn compile(
    cfg: &Config,
    engine: &Engine,
    plan: &ShardingPlan,
) -> anyhow::Result<(String, CompiledStep)> {
    let step = compile_step(&pin_platform(cfg, engine)?, engine, plan, None)?;
    let cache = match step.program.cache_outcome {
        CacheOutcome::Hit => "loaded from the compile cache",
        CacheOutcome::Miss => "compiled and stored in the compile cache",
        CacheOutcome::Replaced => "compiled; a broken compile-cache entry replaced",
        CacheOutcome::Disabled => "compiled; compile cache off",
    };
    let summary = format!("{:.1} s ({cache})", step.program.compile_seconds);
    Ok((summary, step))
}

/// The memory a device offers the step, and where that figure comes from.
struct MemoryBudget {
    bytes: Option<f64>,
    source: String,
}

/// `--memory-gib`, else the device's `bytes_limit` less what is in use, else nothing.
fn memory_budget(memory_gib: Option<f64>, device: &Device) -> MemoryBudget {
    if let Some(gib) = memory_gib {
        return MemoryBudget {
            bytes: Some(gib * GIB),
            source: format!("the {gib} GiB of --memory-gib"),
        };
    }
    match device.memory_stats() {
        Ok(stats) => match stats.bytes_limit {
            Some(limit) => MemoryBudget {
                bytes: Some((limit - stats.bytes_in_use) as f64),
                source: format!(
                    "the {:.2} GiB free of the device's {:.2} GiB limit",
                    (limit - stats.bytes_in_use) as f64 / GIB,
                    limit as f64 / GIB
                ),
            },
            None => MemoryBudget {
                bytes: None,
                source: "no limit reported by this plugin".to_string(),
            },
        },
        Err(_) => MemoryBudget {
            bytes: None,
            source: "device memory not reported by this plugin".to_string(),
        },
    }
}

/// `stats` in MiB, part by part.
fn describe_stats(stats: &CompiledMemoryStats) -> String {
    format!(
        "{:.1} MiB per device (arguments {:.1}, outputs {:.1}, aliased {:.1}, temporaries {:.1} MiB)",
        stats.total_bytes() as f64 / MIB,
        stats.argument_bytes as f64 / MIB,
        stats.output_bytes as f64 / MIB,
        stats.alias_bytes as f64 / MIB,
        stats.temp_bytes as f64 / MIB
    )
}

/// The step's compiled memory fits the budget (passes, saying so, where there is none).
fn check_memory(step: &CompiledStep, budget: &MemoryBudget) -> anyhow::Result<(String, ())> {
    let stats = step
        .program
        .memory_stats()
        .map_err(|e| anyhow::anyhow!("the plugin reports no compiled memory ({e})"))?;
    let needed = stats.total_bytes() as f64;
    let Some(available) = budget.bytes else {
        let summary = format!(
            "the step needs {}; not checked: {} (--memory-gib N checks a budget)",
            describe_stats(&stats),
            budget.source
        );
        return Ok((summary, ()));
    };
    if needed > available {
        anyhow::bail!(
            "the step needs {}, more than {}; lower training.batch_size (raising \
             training.grad_accum_steps keeps the global batch), set \
             memory.gradient_checkpointing, shard over more devices, or shrink the model",
            describe_stats(&stats),
            budget.source
        );
    }
    let summary = format!(
        "the step needs {} of {} ({:.1}%)",
        describe_stats(&stats),
        budget.source,
        100.0 * needed / available
    );
    Ok((summary, ()))
}

/// Uploads the initial state (or the --init-from weights), draws the first real batch and
/// runs one optimiser step; its loss must be finite and the update applied.
fn one_step(
    step: CompiledStep,
    engine: Engine,
    plan: ShardingPlan,
    init: Option<&InitWeights>,
    cfg: Config,
) -> anyhow::Result<(String, ())> {
    let cfg = pin_platform(&cfg, &engine)?;
    let mut data = TrainingData::open(&cfg, batch_geometry(&cfg, &plan))?;
    let mut trainer = Trainer::from_compiled(&cfg, engine, plan, step, None, None)?;
    init_from(&mut trainer, init, &data)?;
    let batch = data.next_train()?;
    let started = Instant::now();
    let m = trainer.step(&batch)?;
    let seconds = started.elapsed().as_secs_f64();
    if !m.loss.is_finite() || m.skipped {
        anyhow::bail!(
            "the first step's loss is {} and its gradient norm {}{}; check the learning rate, \
             the initialisation and the precision",
            m.loss,
            m.grad_norm,
            if m.skipped {
                " (the update was skipped)"
            } else {
                ""
            }
        );
    }
    let summary = format!(
        "loss {:.4}, gradient norm {:.3}, {} tokens, {:.2} s",
        m.loss, m.grad_norm, m.tokens, seconds
    );
    Ok((summary, ()))
}
