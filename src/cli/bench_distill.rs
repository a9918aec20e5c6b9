//! `vishwam bench distill`: what distillation adds to a training step. In one process, on
//! the same seeded batches: the student's plain train step, the distillation step (teacher
//! forward + KL inside the step), and the teacher's forward pass alone (its evaluation step
//! over the same tokens), optionally with the teacher's own train step for scale. The
//! programs take turns in blocks of back-to-back steps, as a training run executes its step,
//! and medians over the rounds are reported.

use super::bench_train::random_rows;
use super::ConfigArgs;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vishwam::config::Config;
use vishwam::engine::{Engine, HostArray, Input, Program};
use vishwam::train::distill::{Teacher, TeacherSource};
use vishwam::train::{
    build_eval_step, open_engine, train_forward_options, HostBatch, StepLayout, Trainer,
};
use vishwam_mesh::{PartitionSpec, ShardingPlan};

/// Arguments of `vishwam bench distill`.
#[derive(clap::Args, Debug)]
pub struct DistillBenchArgs {
    /// The student's configuration (and the distillation section).
    #[command(flatten)]
    run: ConfigArgs,
    /// Override a key of the teacher's configuration, which is the student's with these
    /// applied: `--teacher-set model.num_layers=24` (repeatable). Ignored with --teacher.
    #[arg(long = "teacher-set", value_name = "KEY=VALUE")]
    teacher_sets: Vec<String>,
    /// A trained teacher (run, checkpoint or HF directory) instead of a randomly initialised
    /// one.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Measured rounds (after one warm-up round); each round runs every program `--block`
    /// times in a row.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Back-to-back steps of each program per round; the first of each block, which follows
    /// another program, is not timed (so with 1, every step follows another program).
    #[arg(long, default_value_t = 3)]
    block: usize,
    /// Also time the teacher's own train step (compiles it: slow for a big teacher).
    #[arg(long)]
    teacher_train: bool,
}

/// The median of some timings.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => 0.5 * (xs[n / 2 - 1] + xs[n / 2]),
    }
}

fn batches(cfg: &Config, rows: usize) -> anyhow::Result<Vec<HostBatch>> {
    (0..2)
        .map(|i| {
            let (t, y) = random_rows(cfg, rows, i);
            let mask = vec![1.0; t.len()];
            HostBatch::from_rows(cfg.training.grad_accum_steps, cfg.seq_len(), &t, &y, &mask)
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// The teacher's forward pass over one step's tokens: its evaluation program (forward and
/// chunked head loss) once per micro-batch, with its parameters on the mesh.
struct TeacherForward {
    engine: Engine,
    program: Program,
    params: Vec<vishwam::engine::ShardedArray>,
    batch_spec: PartitionSpec,
}

impl TeacherForward {
    fn new(
        cfg: &Config,
        plan: &ShardingPlan,
        engine: Engine,
        teacher: &Teacher,
    ) -> anyhow::Result<Self> {
        let layout = StepLayout::new(cfg, plan)?;
        let func = build_eval_step(cfg, &layout, &train_forward_options(cfg, plan))?;
        let program = engine.compile(&func)?;
        let params = layout.place_params(&engine, &teacher.params)?;
        let batch_spec = program.params[layout.param_count()].spec.clone();
        Ok(TeacherForward {
            engine,
            program,
            params,
            batch_spec,
        })
    }

    /// Runs the program on every micro-batch of `batch` and waits for the last result.
    fn run(&self, batch: &HostBatch) -> anyhow::Result<()> {
        let micro = |a: &HostArray, i: usize| -> anyhow::Result<HostArray> {
            let rows = a.shape[1] * a.shape[2];
            let size = rows as usize * a.element_type.size_in_bytes();
            let data = a.data[i * size..(i + 1) * size].to_vec();
            HostArray::from_bytes(a.element_type, &a.shape[1..], data).map_err(anyhow::Error::msg)
        };
        let mut last = None;
        for i in 0..batch.tokens.shape[0] as usize {
            let arrays = [&batch.tokens, &batch.targets, &batch.mask]
                .into_iter()
                .map(|a| Ok(self.engine.put(&micro(a, i)?, &self.batch_spec)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut inputs: Vec<Input<'_>> = self.params.iter().map(Input::Keep).collect();
            inputs.extend(arrays.iter().map(Input::Keep));
            last = Some(self.program.run(inputs)?);
        }
        if let Some(out) = last {
            out[0].shards[0].block_until_ready()?;
        }
        Ok(())
    }
}

/// Runs the benchmark.
pub fn run(args: &DistillBenchArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = args.run.load_config()?;
    let teacher = match &args.teacher {
        Some(dir) => Teacher::load(dir)?,
        None => {
            let mut sets = args.run.sets.clone();
            sets.extend(args.teacher_sets.iter().cloned());
            let tcfg = Config::load(args.run.config.as_deref(), &sets)
                .context("the teacher's configuration (the student's with --teacher-set)")?;
            let params = vishwam::model::init_params(&tcfg.model, tcfg.training.seed + 1);
            Teacher::new(TeacherSource::Memory, tcfg.model, params, None)?
        }
    };
    cfg.distillation.teacher_model = None;
    let tcfg = Config {
        model: teacher.model.clone(),
        ..cfg.clone()
    };
    let describe = |c: &Config| {
        let (total, _) = vishwam::model::param_counts(&c.model);
        format!(
            "{} layers x {} wide, {} heads / {} kv, mlp {} ({:.1}M params)",
            c.model.num_layers,
            c.model.hidden_dim,
            c.model.num_heads,
            c.model.kv_heads(),
            c.model.mlp_dim(),
            total as f64 / 1e6
        )
    };
    println!(
        "student: {}; teacher: {} from {}; {} per shard x {} tokens (accum {}), vocab {}, compute {:?}; alpha {}, T {}, intermediate {}",
        describe(&cfg),
        describe(&tcfg),
        teacher.source,
        cfg.training.batch_size,
        cfg.seq_len(),
        cfg.training.grad_accum_steps,
        cfg.model.vocab_size,
        cfg.compute_dtype(),
        cfg.distillation.alpha,
        cfg.distillation.temperature,
        cfg.distillation.use_intermediate_distillation
    );
    let (engine, plan) = open_engine(&cfg, args.run.plugin.clone())?;
    let global = vishwam::train::batch_geometry(&cfg, &plan).global_batch();
    let tokens = global * cfg.seq_len();
    let share = |e: &Engine| Engine::new(e.client.clone(), e.mesh.clone(), e.cache.clone());
    let batches = batches(&cfg, global)?;
    let ms = |s: f64| s * 1e3;

    // All programs stay loaded and take turns, one block of steps each per round, so that a
    // busy machine slows them alike; medians over the rounds are reported. Within a block the
    // steps run back to back, as in a training run: a step that follows another program pays
    // for the switch (several ms on a GPU), so the first of each block is not timed.
    let mut student = Trainer::new(&cfg, share(&engine)?, plan.clone())?;
    let t0 = Instant::now();
    let mut distiller = Trainer::with_teacher(&cfg, share(&engine)?, plan.clone(), &teacher)?;
    let compile = t0.elapsed().as_secs_f64();
    let forward = TeacherForward::new(&tcfg, &plan, share(&engine)?, &teacher)?;
    let mut own = if args.teacher_train {
        Some(Trainer::new(&tcfg, share(&engine)?, plan.clone())?)
    } else {
        None
    };
    let mut times: [Vec<f64>; 4] = Default::default();
    // In-program and launch time of the student's and the distillation step.
    let mut programs: [Vec<(f64, f64)>; 2] = Default::default();
    // Runs one block of `f` (which returns its in-program and launch time, if it knows them).
    // Returns the median wall time of the block's timed steps (all of them when the block is
    // one step), and the program timings of those same steps.
    type StepFn<'a> = dyn FnMut(&HostBatch) -> anyhow::Result<Option<(f64, f64)>> + 'a;
    let block = |f: &mut StepFn<'_>, round: usize| -> anyhow::Result<(f64, Vec<(f64, f64)>)> {
        let (mut wall, mut program) = (Vec::new(), Vec::new());
        for i in 0..args.block.max(1) {
            let batch = &batches[(round + i) % batches.len()];
            let start = Instant::now();
            let timings = f(batch)?;
            let dt = start.elapsed().as_secs_f64();
            if i > 0 || args.block <= 1 {
                wall.push(dt);
                program.extend(timings);
            }
        }
        Ok((median(wall), program))
    };
    let program_timings = |t: vishwam::train::StepTimings| Some((t.compute, t.launch));
    for round in 0..=args.steps {
        let (student_wall, student_program) = block(
            &mut |b| Ok(program_timings(student.timed_step(b)?.1)),
            round,
        )?;
        let (distill_wall, distill_program) = block(
            &mut |b| Ok(program_timings(distiller.timed_step(b)?.1)),
            round,
        )?;
        let (forward_wall, _) = block(&mut |b| forward.run(b).map(|()| None), round)?;
        let own_wall = match own.as_mut() {
            Some(own) => block(&mut |b| Ok(own.step(b).map(|_| None)?), round)?.0,
            None => f64::NAN,
        };
        if round > 0 {
            let t = [student_wall, distill_wall, forward_wall, own_wall];
            for (all, t) in times.iter_mut().zip(t) {
                all.push(t);
            }
            programs[0].extend(student_program);
            programs[1].extend(distill_program);
        }
    }
    let [plain, distill, teacher_forward, teacher_step] = times.map(median);
    let [(plain_program, plain_launch), (distill_program, distill_launch)] = programs.map(|p| {
        let (compute, launch): (Vec<f64>, Vec<f64>) = p.into_iter().unzip();
        (median(compute), median(launch))
    });
    println!(
        "student train step: {:.2} ms ({:.0} tokens/s; {:.2} ms in the program, {:.2} ms of it to launch)",
        ms(plain),
        tokens as f64 / plain,
        ms(plain_program),
        ms(plain_launch)
    );
    let memory = distiller.program.memory_stats().ok();
    println!(
        "distillation step: {:.2} ms ({:.0} tokens/s; {:.2} ms in the program, {:.2} ms of it to launch; built and compiled in {compile:.1}s){}",
        ms(distill),
        tokens as f64 / distill,
        ms(distill_program),
        ms(distill_launch),
        memory
            .map(|m| format!(
                "; compiled memory: arguments {:.2} GiB, temporaries {:.2} GiB",
                m.argument_bytes as f64 / (1u64 << 30) as f64,
                m.temp_bytes as f64 / (1u64 << 30) as f64
            ))
            .unwrap_or_default()
    );
    println!(
        "teacher forward (its evaluation step over the same tokens): {:.2} ms",
        ms(teacher_forward)
    );
    if own.is_some() {
        println!(
            "teacher train step: {:.2} ms (forward / train step = {:.2})",
            ms(teacher_step),
            teacher_forward / teacher_step
        );
    }
    let overhead = distill - plain;
    let ratio = overhead / teacher_forward;
    println!(
        "overhead of distillation: {:.2} ms per step (+{:.0}% over the student's step) = {ratio:.2}x the teacher's forward pass; target <= 1.00x: {}",
        ms(overhead),
        100.0 * overhead / plain,
        if ratio <= 1.0 { "met" } else { "missed" }
    );
    Ok(ExitCode::SUCCESS)
}
