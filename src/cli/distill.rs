//! `vishwam distill`: the training loop with a step that learns from a teacher.

use super::train::{init_from, log_model, open_data, run_loop, TrainArgs};
use std::path::Path;
use std::process::ExitCode;
use vishwam::train::distill::{layer_pairs, DistillError, Teacher};
use vishwam::train::{open_engine, Trainer};

/// Loads the teacher the config names, checks it against the student and its tokenizer,
/// then trains the student as `vishwam train` would (progress, metrics with `ce`, `kl` and
/// `intermediate`, evaluation, checkpoints, `--resume`, `--resume-from`, Ctrl-C). With
/// `--init-from` the student starts from those weights (its model section from theirs);
/// learned projections between student and teacher widths start from their initialisation.
pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    if super::multiprocess::spec_of(&args.process)?.is_some() {
        anyhow::bail!(
            "vishwam distill runs as a single process; the multi-process flags (--coordinator, \
             --num-processes, --process-id, or RANK / WORLD_SIZE, SLURM's) are for `vishwam \
             train` and `vishwam doctor`"
        );
    }
    if args.validate_setup {
        anyhow::bail!(
            "--validate-setup checks a `vishwam train` setup and has no distillation form yet; \
             run `vishwam train --validate-setup` with the student's config (teacher_model set \
             to null) to check the plugin, devices, data and the student's step"
        );
    }
    if args.plan.target_hours.is_some() {
        anyhow::bail!(
            "--target-hours plans `vishwam train` runs; `vishwam distill` takes a config"
        );
    }
    args.plan.refuse_without_target("vishwam distill")?;
    let (mut cfg, init) = args.load_run()?;
    let path = cfg
        .distillation
        .teacher_model
        .clone()
        .ok_or(DistillError::NoTeacher)?;
    if let Some(d) = &cfg.description {
        tracing::info!("{d}");
    }
    let teacher = Teacher::load(Path::new(&path))?;
    let t = &teacher.model;
    tracing::info!(
        "teacher: {} layers x {} wide, {:.2}M parameters, from {}",
        t.num_layers,
        t.hidden_dim,
        teacher.num_parameters() as f64 / 1e6,
        teacher.source
    );
    teacher.check_student(&cfg)?;
    let (engine, plan) = open_engine(&cfg, args.run.plugin.clone())?;
    args.apply_precision(&mut cfg, &engine.client)?;
    let mut data = open_data(&cfg, &plan)?;
    match &teacher.tokenizer {
        Some(_) => teacher.check_tokenizer(&data.tokenizer)?,
        None => tracing::warn!(
            "the teacher came without a tokenizer.json; make sure the student's tokenizer ({}) is the one the teacher was trained with",
            data.tokenizer.origin()
        ),
    }
    log_model(&cfg, &plan);
    let d = &cfg.distillation;
    let intermediate = if d.use_intermediate_distillation {
        let pairs = layer_pairs(
            &d.intermediate_layer_mapping,
            cfg.model.num_layers,
            t.num_layers,
        )?;
        format!(
            "; {} x {} on (student, teacher) layers {pairs:?}{}",
            d.intermediate_weight,
            d.intermediate_loss,
            if cfg.model.hidden_dim != t.hidden_dim {
                " through learned projections"
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    tracing::info!(
        "objective: {} x T² x KL (T = {}) + {} x CE{intermediate}",
        d.alpha,
        d.temperature,
        1.0 - d.alpha
    );
    let mut trainer = Trainer::with_teacher(&cfg, engine, plan, &teacher)?;
    init_from(&mut trainer, init.as_ref(), &data)?;
    run_loop(args, trainer, &mut data, None)
}
