//! `vishwam train` as one process of a multi-process job: join, check that the mesh puts
//! this process's rows on its own devices and that the plugin runs a program over every
//! process's devices, then train with this process's rows and shards.

use super::multiprocess::{check_cross_process_program, join, Job, LINGER};
use anyhow::{bail, Context};
use vishwam::distributed::{ProcessSpec, Session};
use vishwam::runtime::ClientSpec;

/// `vishwam train` as one process of a job: joins it, opens this process's client, lays the
/// config's mesh over the job's global device list (the config's `runtime.devices` and mesh
/// shape count the job's devices, `--devices` each process's), checks that the plugin runs a program over the whole mesh (on
/// the CPU plugin that check fails with the plugin's message: no cross-process programs on
/// the CPU backend), then trains: every process feeds its rows of each batch to its own
/// devices and saves its shards of each checkpoint; process 0 alone writes the metrics and
/// prints the progress and the summary.
pub fn train(
    args: &super::train::TrainArgs,
    mut cfg: vishwam::config::Config,
    init: Option<vishwam::train::InitWeights>,
    spec: &ProcessSpec,
) -> anyhow::Result<std::process::ExitCode> {
    if args.plan.target_hours.is_some() {
        bail!(
            "--target-hours is for a single-process run (its time budget is measured by one \
             process); plan once with `vishwam plan --out plan.json`, then run the job with \
             --config plan.json"
        );
    }
    if cfg.training.batch_size_is_auto() {
        bail!(
            "training.batch_size \"auto\" is resolved by a single-process run; a \
             multi-process job needs a number (find one with `vishwam train --validate-setup` \
             on one host)"
        );
    }
    let platform = vishwam::train::platform(&cfg)?;
    // The config counts the job's devices; each process opens its share of them.
    let per_process = match cfg.requested_devices() {
        Some(total) if !total.is_multiple_of(spec.num_processes) => bail!(
            "the job has {total} devices (runtime.devices, tpu.tpu_cores or the mesh shape), \
             which do not divide over its {} processes; --devices counts each process's",
            spec.num_processes
        ),
        total => total.map(|t| t / spec.num_processes),
    };
    let client_spec = ClientSpec {
        platform,
        devices: per_process,
        plugin: args.run.plugin.clone(),
        config_plugin: cfg.runtime.plugin.as_ref().map(std::path::PathBuf::from),
    };
    let job = join(spec, &args.process, &client_spec)?;
    let outcome = (|| -> anyhow::Result<std::process::ExitCode> {
        let plan = vishwam::train::sharding_plan(&cfg, platform.name(), job.devices.len())?;
        tracing::info!(
            "process {} of {}: {} devices in the job; {plan}",
            spec.process_id,
            spec.num_processes,
            job.devices.len()
        );
        let shards = plan.batch_shards();
        if !shards.is_multiple_of(spec.num_processes) {
            bail!(
                "the mesh splits the batch into {shards} shards, which do not divide evenly \
                 over the {} processes (each process feeds whole shards of its devices)",
                spec.num_processes
            );
        }
        let geometry = vishwam::train::batch_geometry(&cfg, &plan);
        let slice = vishwam::data::process_slice::ProcessSlice::of_process(
            geometry.global_batch(),
            geometry.micro_batch(),
            spec.num_processes,
            spec.process_id,
        )?;
        tracing::info!(
            "process {} feeds rows {}..{} of every micro-batch of {} ({geometry})",
            spec.process_id,
            slice.first_row,
            slice.first_row + slice.rows,
            geometry.micro_batch()
        );
        args.apply_precision(&mut cfg, &job.client)?;
        check_same_config(&job.session, &cfg)?;
        // The mesh must put this process's rows on its own devices: checked before the
        // program over every process's devices, so the CPU plugin reaches this check too.
        let client_ids = job
            .client
            .devices()
            .iter()
            .map(|d| d.id())
            .collect::<Result<Vec<i32>, _>>()?;
        let placement = vishwam::engine::MeshPlacement::of_job(
            &plan.mesh,
            &job.devices,
            spec.num_processes,
            spec.process_id,
            &client_ids,
        )?;
        let layout = vishwam::train::StepLayout::new(&cfg, &plan)?;
        vishwam::train::check_process_rows(&placement, &plan.mesh, &layout, slice)?;
        check_cross_process_program(&job)?;
        train_as_process(args, &cfg, init.as_ref(), &job, plan, slice)
    })();
    match outcome {
        Ok(code) => {
            job.session.finish()?;
            Ok(code)
        }
        Err(e) => {
            job.session.abort(&format!("{e:#}"), LINGER);
            Err(e)
        }
    }
}

/// Checks that this process runs the same config as process 0 (all but its `runtime`
/// section, whose plugin path may differ between hosts): each process reads its own config
/// and flags, and a process started with others would compile another program.
fn check_same_config(session: &Session, cfg: &vishwam::config::Config) -> anyhow::Result<()> {
    let mut config = cfg.to_value();
    if let Some(map) = config.as_object_mut() {
        map.remove("runtime");
    }
    check_same_as_process_zero(session, "config", &config)
}

/// Checks that this process reads the same data stream as process 0: the loader's starting
/// position (tokenizer hash, data fingerprint, seed, batch, sequence length). Each process
/// prepares its data itself, so a host with another corpus or tokenizer would otherwise
/// train on other tokens.
fn check_same_data(session: &Session, data: &vishwam::train::TrainingData) -> anyhow::Result<()> {
    use vishwam::train::BatchSource;
    check_same_as_process_zero(session, "data", &data.position())
}

/// Process 0 publishes `ours` under `what`; every other process compares its own with it.
fn check_same_as_process_zero(
    session: &Session,
    what: &str,
    ours: &serde_json::Value,
) -> anyhow::Result<()> {
    let key = format!("vishwam/train/{what}");
    if session.process_id() == 0 {
        session
            .store()
            .put(key.as_bytes(), &serde_json::to_vec(ours)?)?;
        return Ok(());
    }
    let bytes = session
        .store()
        .get(key.as_bytes(), session.spec().join_timeout)?;
    let theirs: serde_json::Value = serde_json::from_slice(&bytes)?;
    if &theirs != ours {
        bail!(
            "process {} runs with another {what} than process 0: {} here, {} there; start \
             every process with the same config and flags, on the same corpus and tokenizer \
             (prepare the data once on a shared filesystem, or the same way on every host)",
            session.process_id(),
            first_difference(ours, &theirs),
            first_difference(&theirs, ours),
        );
    }
    Ok(())
}

/// The first value of `a` that differs from `b`, as `path = value` (depth first).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                match y.get(key) {
                    Some(other) if other == value => {}
                    Some(other) if value.is_object() && other.is_object() => {
                        return format!("{key}.{}", first_difference(value, other))
                    }
                    _ => return format!("{key} = {value}"),
                }
            }
            match y.keys().find(|k| !x.contains_key(*k)) {
                Some(key) => format!("{key} absent"),
                None => "(same)".into(),
            }
        }
        _ => a.to_string(),
    }
}

/// The training of one process of a joined job, after the cross-process check passed.
fn train_as_process(
    args: &super::train::TrainArgs,
    cfg: &vishwam::config::Config,
    init: Option<&vishwam::train::InitWeights>,
    job: &Job,
    plan: vishwam_mesh::ShardingPlan,
    slice: vishwam::data::process_slice::ProcessSlice,
) -> anyhow::Result<std::process::ExitCode> {
    use vishwam::train::{run_training_in, RunOptions, Trainer, TrainingData};
    let leader = job.session.process_id() == 0;
    let cache = match cfg.runtime.compile_cache {
        true => vishwam::runtime::CompileCache::default_dir(),
        false => vishwam::runtime::CompileCache::disabled(),
    };
    let engine = vishwam::engine::Engine::for_job(
        job.client.clone(),
        plan.mesh.clone(),
        cache,
        &job.devices,
        job.session.num_processes(),
    )?;
    tracing::info!(
        "process {} drives mesh positions {:?}",
        job.session.process_id(),
        engine.placement().local_positions()
    );
    let geometry = vishwam::train::batch_geometry(cfg, &plan);
    let mut data = TrainingData::open_rows(cfg, geometry, slice)?;
    check_same_data(&job.session, &data)?;
    if leader {
        let out = std::path::PathBuf::from(&cfg.logging.output_dir);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        data.tokenizer.save(&out.join("tokenizer.json"))?;
        super::train::log_model(cfg, &plan);
    }
    let mut trainer = Trainer::new(cfg, engine, plan)?;
    trainer.feed_rows(slice)?;
    super::train::init_from(&mut trainer, init, &data)?;
    tracing::info!(
        "compiled the train step in {:.1}s ({:?})",
        trainer.program.compile_seconds,
        trainer.program.cache_outcome
    );
    // No Ctrl-C handler: a graceful stop would have to be agreed by every process at the same
    // step. Ctrl-C ends this process; the others stop through the job's failure detection.
    let opts = RunOptions {
        resume: args.resume,
        resume_from: args.resume_from.clone(),
        progress: !args.no_progress,
        profile_steps: args.profile_steps,
        ..RunOptions::default()
    };
    let summary = run_training_in(&mut trainer, &mut data, &opts, Some(&job.session))?;
    if !leader {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let plot = super::plot::write_loss_plot(&trainer.config);
    let first = summary.losses.first().copied().unwrap_or(f32::NAN);
    let last = summary.losses.last().copied().unwrap_or(f32::NAN);
    println!(
        "trained steps {}..{} as {} processes: loss {first:.4} -> {last:.4}, {:.0} tokens/s",
        summary.start_step,
        summary.steps,
        job.session.num_processes(),
        summary.tokens_per_second
    );
    super::train::print_validation_and_checkpoint(&summary);
    println!(
        "sample: not drawn by a multi-process run (the parameters are spread over the \
         processes); run `vishwam generate` on the checkpoint"
    );
    match &plot {
        Ok(png) => {
            println!("loss plot: {}", png.display());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: drawing the loss plot: {e:#}; the run is saved (draw it again with \
                 `vishwam plot {}`)",
                trainer.config.logging.output_dir
            );
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_difference;
    use serde_json::json;

    #[test]
    fn the_first_difference_names_its_path() {
        let a = json!({"model": {"hidden_dim": 64}, "training": {"seed": 1, "lr": 0.1}});
        let b = json!({"model": {"hidden_dim": 64}, "training": {"seed": 2, "lr": 0.1}});
        assert_eq!(first_difference(&a, &b), "training.seed = 1");
        assert_eq!(first_difference(&b, &a), "training.seed = 2");
        let c = json!({"model": {"hidden_dim": 64}, "training": {"seed": 1, "lr": 0.1}, "x": 1});
        assert_eq!(first_difference(&a, &c), "x absent");
    }
}
