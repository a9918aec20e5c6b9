//! The train state on the devices and the compiled step that updates it.

use super::batch_slots::BatchSlots;
use super::distill::{DistillContext, DistillMetrics, Teacher};
use super::fp8::build_fp8_bootstrap_step;
use super::init::initial_state;
use super::layout::StepLayout;
use super::metrics_ring::{self, RingLayout};
use super::moe_state::MoeMetrics;
use super::precision::PrecisionPolicy;
use super::step::{build_distill_step, build_train_step};
use super::TrainError;
use crate::config::Config;
use crate::data::process_slice::ProcessSlice;
use crate::engine::{CompileHints, Engine, HostArray, Input, Program, ShardedArray};
use crate::runtime::HostCopy;
use std::collections::BTreeMap;
use std::time::Instant;
use vishwam_mesh::ShardingPlan;

/// A batch in host memory: `[accum, micro_batch, seq_len]` tokens, targets and loss mask.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Input token ids (i32).
    pub tokens: HostArray,
    /// Next-token targets (i32).
    pub targets: HostArray,
    /// 1.0 where the target counts, 0.0 for padding (f32).
    pub mask: HostArray,
}

impl HostBatch {
    /// From row-major `[rows, seq_len]` vectors, split into `accum` micro-batches.
    pub fn from_rows(
        accum: usize,
        seq_len: usize,
        tokens: &[i32],
        targets: &[i32],
        mask: &[f32],
    ) -> Result<HostBatch, TrainError> {
        let rows = tokens.len() / seq_len.max(1);
        if !rows.is_multiple_of(accum.max(1))
            || tokens.len() != rows * seq_len
            || targets.len() != tokens.len()
            || mask.len() != tokens.len()
        {
            return Err(TrainError::Other(format!(
                "a batch of {} tokens, {} targets and {} mask values does not split into {accum} micro-batches of sequences of {seq_len}",
                tokens.len(),
                targets.len(),
                mask.len()
            )));
        }
        let shape = [accum as i64, (rows / accum) as i64, seq_len as i64];
        let to = |r: Result<HostArray, String>| r.map_err(TrainError::Other);
        Ok(HostBatch {
            tokens: to(HostArray::from_slice(&shape, tokens))?,
            targets: to(HostArray::from_slice(&shape, targets))?,
            mask: to(HostArray::from_slice(&shape, mask))?,
        })
    }
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// Mean masked cross-entropy of the batch.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Tokens that counted towards the loss.
    pub tokens: f32,
    /// Fraction of those tokens whose target was the model's most likely token (exact ties
    /// with another token count as correct), before the update.
    pub accuracy: f32,
    /// True when the update was skipped (non-finite loss or gradient).
    pub skipped: bool,
    /// Activation and weight elements clipped to the FP8 range (0 without FP8).
    pub fp8_saturated_forward: f32,
    /// Gradient elements clipped to the FP8 range (0 without FP8).
    pub fp8_saturated_backward: f32,
    /// The distillation metrics (`None` without a teacher).
    pub distill: Option<DistillMetrics>,
    /// The MoE metrics (`None` for a dense model).
    pub moe: Option<MoeMetrics>,
    /// The f16 dynamic loss scale after the step (`None` without one).
    pub loss_scale: Option<f32>,
}

impl StepMetrics {
    /// The metrics every step reports, named as in the traced step (`super::step`), in the
    /// order of a row of the metrics ring ([`metrics_ring`]).
    pub const NAMES: [&'static str; 8] = [
        "loss",
        "grad_norm",
        "lr",
        "tokens",
        "accuracy",
        "skipped",
        "fp8_saturated_forward",
        "fp8_saturated_backward",
    ];

    /// From the values of the outputs named [`StepMetrics::NAMES`], in that order.
    pub(super) fn from_values(v: &[f32; 8]) -> StepMetrics {
        let [loss, grad_norm, lr, tokens, accuracy, skipped, fp8_saturated_forward, fp8_saturated_backward] =
            *v;
        StepMetrics {
            loss,
            grad_norm,
            lr,
            tokens,
            accuracy,
            skipped: skipped != 0.0,
            fp8_saturated_forward,
            fp8_saturated_backward,
            distill: None,
            moe: None,
            loss_scale: None,
        }
    }
}

/// Seconds spent in each phase of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// Uploading the batch.
    pub host_to_device: f64,
    /// Running the step program.
    pub compute: f64,
    /// The part of `compute` spent handing the program to the runtime (until it was
    /// enqueued).
    pub launch: f64,
    /// Downloading the metrics.
    pub device_to_host: f64,
}

/// The compiled step and the state it updates.
pub struct Trainer {
    /// Engine (client, mesh, cache).
    pub engine: Engine,
    /// The sharding plan.
    pub plan: ShardingPlan,
    /// Shapes of state and batch.
    pub layout: StepLayout,
    /// The compiled step.
    pub program: Program,
    /// The resolved configuration.
    pub config: Config,
    pub(super) state: Vec<ShardedArray>,
    /// The last [`metrics_ring::RING_STEPS`] steps' metrics, donated to every step.
    metrics_ring: ShardedArray,
    /// What a row of the ring holds.
    ring_layout: RingLayout,
    /// The metrics of the newest step read so far.
    pub(super) last_metrics: Option<StepMetrics>,
    /// Steps launched so far by this trainer (the newest row of the ring is the last).
    launched: u64,
    /// The FP8 bootstrap step (delayed scaling with empty histories), compiled when needed.
    fp8_bootstrap: Option<Program>,
    fp8_bootstrap_pending: bool,
    /// The teacher's side of a distillation step, when distilling.
    pub(super) distill: Option<DistillContext>,
    /// The teacher's parameters on the devices (inputs of every step, never donated).
    teacher: Vec<ShardedArray>,
    pub(super) eval_program: Option<Program>,
    pub(super) next_token_program: Option<Program>,
    /// The step's batch inputs, at the same addresses for every step.
    pub(super) batch_slots: BatchSlots,
    /// The rows of every micro-batch this process feeds ([`Trainer::feed_rows`]): all of
    /// them in a single-process run.
    pub(super) batch_rows: ProcessSlice,
}

impl Trainer {
    /// Traces and compiles the step for `cfg`, and initialises the state from `seed`. With
    /// `distillation.teacher_model` set, the teacher is loaded from there and the step
    /// distils it ([`Trainer::with_teacher`]).
    pub fn new(cfg: &Config, engine: Engine, plan: ShardingPlan) -> Result<Trainer, TrainError> {
        match &cfg.distillation.teacher_model {
            Some(path) => {
                let teacher = Teacher::load(std::path::Path::new(path))?;
                Trainer::with_teacher(cfg, engine, plan, &teacher)
            }
            None => Trainer::build(cfg, engine, plan, None),
        }
    }

    /// A trainer whose step distils `teacher` into the student of `cfg` as the config's
    /// `distillation` section says; the teacher's parameters are uploaded once and kept on
    /// the devices beside the train state.
    pub fn with_teacher(
        cfg: &Config,
        engine: Engine,
        plan: ShardingPlan,
        teacher: &Teacher,
    ) -> Result<Trainer, TrainError> {
        teacher.check_student(cfg)?;
        Trainer::build(cfg, engine, plan, Some(teacher))
    }

    fn build(
        cfg: &Config,
        engine: Engine,
        plan: ShardingPlan,
        teacher: Option<&Teacher>,
    ) -> Result<Trainer, TrainError> {
        // Every platform-dependent choice below is made for the devices the engine drives.
        let cfg = &super::setup::pin_platform(cfg, &engine)?;
        tracing::info!("precision: {}", PrecisionPolicy::from_config(cfg));
        if cfg.runtime.platform == crate::config::Platform::Cuda {
            for b in cfg.cudnn_attention_blockers() {
                tracing::info!(
                    "attention: composed, not cuDNN flash attention: {} = {}: {}",
                    b.key,
                    b.value,
                    b.rule
                );
            }
        }
        let distill = teacher
            .map(|t| DistillContext::new(cfg, &plan, &t.model))
            .transpose()?;
        let step = compile_step(cfg, &engine, &plan, distill.as_ref())?;
        Trainer::from_compiled(cfg, engine, plan, step, distill, teacher)
    }

    /// A trainer around a step already compiled by [`compile_step`] for `cfg` (its platform
    /// pinned) on `engine`: the state is initialised from `training.seed` and placed on the
    /// devices, and the teacher's parameters uploaded when distilling.
    pub fn from_compiled(
        cfg: &Config,
        engine: Engine,
        plan: ShardingPlan,
        step: CompiledStep,
        distill: Option<DistillContext>,
        teacher: Option<&Teacher>,
    ) -> Result<Trainer, TrainError> {
        let CompiledStep { layout, program } = step;
        let micro_batch = layout.micro_batch;
        let teacher_arrays = match (&distill, teacher) {
            (Some(context), Some(t)) => context.upload(&engine, t)?,
            _ => Vec::new(),
        };
        let ring_layout = RingLayout::of(cfg, distill.as_ref(), layout.state.loss_scale.is_some());
        let mut trainer = Trainer {
            metrics_ring: ring_layout.zeros(&engine)?,
            ring_layout,
            last_metrics: None,
            launched: 0,
            engine,
            plan,
            layout,
            program,
            config: cfg.clone(),
            state: Vec::new(),
            fp8_bootstrap: None,
            fp8_bootstrap_pending: false,
            distill,
            teacher: teacher_arrays,
            eval_program: None,
            next_token_program: None,
            batch_slots: BatchSlots::default(),
            batch_rows: ProcessSlice::whole(micro_batch),
        };
        let initial = initial_state(&trainer.config, &trainer.layout);
        trainer.load_state(&initial)?;
        Ok(trainer)
    }

    /// The distillation context of the step, when it distils a teacher.
    pub fn distillation(&self) -> Option<&DistillContext> {
        self.distill.as_ref()
    }

    /// Replaces the state with host arrays (by slot name), placed by the layout's shardings.
    pub fn load_state(&mut self, host: &BTreeMap<String, HostArray>) -> Result<(), TrainError> {
        let arrays = self.layout.state.from_named(host).map_err(|name| {
            TrainError::Other(format!(
                "the state to load lacks `{name}`, one of the {} arrays of this run's train state",
                self.layout.state.len()
            ))
        })?;
        let mut state = Vec::with_capacity(self.layout.state.len());
        for ((name, slot), array) in self
            .layout
            .state
            .as_ref()
            .into_named()
            .into_iter()
            .zip(arrays.into_named())
        {
            let want = crate::engine::element_type(slot.ty.dtype);
            if array.1.element_type != want || array.1.shape != slot.ty.shape {
                return Err(TrainError::Other(format!(
                    "state `{name}` must be {}{:?}, got {}{:?}",
                    want.mlir_name(),
                    slot.ty.shape,
                    array.1.element_type.mlir_name(),
                    array.1.shape
                )));
            }
            state.push(self.engine.put(&array.1, &slot.spec)?);
        }
        self.state = state;
        self.fp8_bootstrap_pending = self
            .layout
            .fp8
            .as_ref()
            .is_some_and(|f| f.needs_bootstrap(host));
        Ok(())
    }

    /// The whole state gathered to the host, by slot name.
    pub fn state_to_host(&self) -> Result<BTreeMap<String, HostArray>, TrainError> {
        let mut out = BTreeMap::new();
        for (name, array) in self.layout.state.names().into_iter().zip(&self.state) {
            out.insert(name, self.engine.get(array)?);
        }
        Ok(out)
    }

    /// The model's parameters only (trained ones and routing biases), by parameter name.
    pub fn params_to_host(&self) -> Result<BTreeMap<String, HostArray>, TrainError> {
        let mut out = BTreeMap::new();
        for ((name, _), array) in self.layout.param_slots().zip(self.param_arrays()) {
            out.insert(name.clone(), self.engine.get(array)?);
        }
        Ok(out)
    }

    /// Device arrays of the model's parameters, in [`StepLayout::param_slots`] order.
    pub fn param_arrays(&self) -> &[ShardedArray] {
        &self.state[..self.layout.param_count()]
    }

    /// Optimizer steps applied so far.
    pub fn step_count(&self) -> Result<i64, TrainError> {
        Ok(self
            .download_state("step")?
            .to_vec::<i32>()
            .map_err(TrainError::Other)?[0] as i64)
    }

    /// The f16 dynamic loss scale now (downloaded), or `None` when the run has none.
    pub fn loss_scale(&self) -> Result<Option<f32>, TrainError> {
        if self.layout.state.loss_scale.is_none() {
            return Ok(None);
        }
        let value = self.download_state("loss_scale")?.to_vec::<f32>();
        Ok(Some(value.map_err(TrainError::Other)?[0]))
    }

    /// The state array named `name`, downloaded.
    fn download_state(&self, name: &str) -> Result<HostArray, TrainError> {
        let names = self.layout.state.names();
        let i = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| TrainError::Other(format!("the train state has no `{name}`")))?;
        Ok(self.engine.get(&self.state[i])?)
    }

    /// Uploads a batch, runs one step in place, and returns its metrics.
    pub fn step(&mut self, batch: &HostBatch) -> Result<StepMetrics, TrainError> {
        Ok(self.timed_step(batch)?.0)
    }

    /// [`Trainer::step`] with a breakdown of where the time went.
    pub fn timed_step(
        &mut self,
        batch: &HostBatch,
    ) -> Result<(StepMetrics, StepTimings), TrainError> {
        let launched = self.launch(batch)?;
        launched.finish(self)
    }

    /// Starts copying the metrics of `steps` (launched by this trainer, the newest of them
    /// less than [`metrics_ring::RING_STEPS`] launches ago) to the host and returns at once.
    /// Call it before launching the next step, then [`MetricsRead::wait`] while that step
    /// runs: the host then waits for older steps only, and the devices never wait for it.
    pub fn read_metrics(&mut self, steps: Vec<LaunchedStep>) -> Result<MetricsRead, TrainError> {
        if let Some(old) = steps
            .iter()
            .find(|s| self.launched - s.seq >= metrics_ring::RING_STEPS as u64)
        {
            return Err(TrainError::Other(format!(
                "the metrics of launch {} were overwritten: {} steps were launched since, and \
                 the ring keeps {}",
                old.seq,
                self.launched - old.seq,
                metrics_ring::RING_STEPS
            )));
        }
        Ok(MetricsRead {
            copy: self.metrics_ring.shards[0].start_to_bytes()?,
            steps,
            newest: self.launched,
        })
    }

    /// Whether a step is enqueued only once the one before has finished: on the CPU, when the
    /// step spans several devices (see [`Trainer::launch`]).
    fn steps_must_not_overlap(&self) -> bool {
        self.config.runtime.platform == crate::config::Platform::Cpu
            && self.engine.mesh.num_devices() > 1
    }

    /// Whether the next step must wait for this one's metrics before it is launched: an FP8
    /// bootstrap step that the metrics may show skipped has to run again.
    pub fn needs_metrics_before_next_step(&self) -> bool {
        self.fp8_bootstrap_pending
    }

    /// Uploads a batch and enqueues one step, without waiting for it: the device runs it
    /// while the host prepares and launches the next ([`LaunchedStep::finish`] then waits for
    /// this one's metrics). Launch the next step before finishing this one only when
    /// [`Trainer::needs_metrics_before_next_step`] is false.
    ///
    /// On the CPU, a step over several devices is enqueued only after the step before has
    /// finished (its metrics are still read later). XLA's CPU runtime runs each device's part
    /// on a shared thread pool and blocks a thread in every collective until the other parts
    /// arrive; with two multi-device steps in flight, all threads can end up waiting for
    /// parts that have none left (seen on 2-core machines: an all-reduce waited 40 s and the
    /// process aborted).
    pub fn launch(&mut self, batch: &HostBatch) -> Result<LaunchedStep, TrainError> {
        if self.steps_must_not_overlap() {
            for shard in &self.metrics_ring.shards {
                shard.block_until_ready()?;
            }
        }
        let t0 = Instant::now();
        let spec = &self.layout.batch_spec;
        let fresh = [
            self.put_rows(&batch.tokens, spec, 1)?,
            self.put_rows(&batch.targets, spec, 1)?,
            self.put_rows(&batch.mask, spec, 1)?,
        ];
        for a in &fresh {
            a.shards[0].block_until_ready()?;
        }
        if self.fp8_bootstrap_pending && self.fp8_bootstrap.is_none() {
            let func = build_fp8_bootstrap_step(
                &self.config,
                &self.plan,
                &self.layout,
                self.distill.as_ref(),
            )?;
            self.fp8_bootstrap = Some(
                self.engine
                    .compile_with(&func, compile_hints(&self.config))?,
            );
        }
        let program = match &self.fp8_bootstrap {
            Some(bootstrap) if self.fp8_bootstrap_pending => bootstrap,
            _ => &self.program,
        };
        let batch = self
            .batch_slots
            .fill(&self.engine, &self.config, &self.layout, fresh)?;
        let t1 = Instant::now();
        let mut inputs: Vec<Input<'_>> = self.state.iter_mut().map(Input::Donate).collect();
        inputs.push(Input::Donate(&mut self.metrics_ring));
        inputs.extend(batch.iter().map(Input::Keep));
        inputs.extend(self.teacher.iter().map(Input::Keep));
        let mut outputs = program.run(inputs)?;
        let launched = Instant::now();
        // Every output is donated (the state and the metrics ring), and the batch is read
        // from fixed slots (`batch_slots`), so each step uses the same buffers: XLA replays a
        // program's CUDA graphs only while its buffers stay put; one moved buffer makes it
        // re-record them before the step runs (measured on an H100: 8 to 12 ms for each step
        // of a 124M student's distillation when its metrics were outputs of their own).
        self.metrics_ring = outputs
            .pop()
            .ok_or_else(|| TrainError::Other("the step returned no metrics ring".into()))?;
        self.state = outputs;
        self.launched += 1;
        Ok(LaunchedStep {
            seq: self.launched,
            bootstrap: self.fp8_bootstrap_pending,
            started: t0,
            uploaded: t1,
            launched,
        })
    }
}

/// A step enqueued on the devices by [`Trainer::launch`], whose metrics are still there
/// (in the trainer's metrics ring, until [`metrics_ring::RING_STEPS`] later steps are
/// launched).
pub struct LaunchedStep {
    /// The trainer's launch count after this step.
    seq: u64,
    /// Whether the step ran the FP8 bootstrap program.
    bootstrap: bool,
    started: Instant,
    uploaded: Instant,
    launched: Instant,
}

impl LaunchedStep {
    /// Waits for the step and downloads its metrics, before any later step is launched:
    /// `compute` in the timings runs from the launch to the step being done, and
    /// `device_to_host` is the copy of its metrics after that.
    pub fn finish(self, trainer: &mut Trainer) -> Result<(StepMetrics, StepTimings), TrainError> {
        if self.seq != trainer.launched {
            return Err(TrainError::Other(
                "LaunchedStep::finish after a later step was launched: read older steps with \
                 Trainer::read_metrics before the next launch"
                    .into(),
            ));
        }
        trainer.metrics_ring.shards[0].block_until_ready()?;
        let done = Instant::now();
        let uploaded = self.uploaded;
        let mut read = trainer.read_metrics(vec![self])?.wait(trainer)?;
        let copied = Instant::now();
        let (metrics, mut timings) = read.pop().expect("one step was read");
        timings.compute = (done - uploaded).as_secs_f64();
        timings.device_to_host = (copied - done).as_secs_f64();
        Ok((metrics, timings))
    }
}

/// The metrics of some launched steps being copied to the host ([`Trainer::read_metrics`]).
pub struct MetricsRead {
    copy: HostCopy,
    steps: Vec<LaunchedStep>,
    /// The trainer's launch count when the copy started (the ring's newest row).
    newest: u64,
}

impl MetricsRead {
    /// Waits for the copy and returns each step's metrics and timings, oldest first. A step's
    /// `compute` runs from its launch to the metrics being on the host, `device_to_host` is 0
    /// (the copy is in `compute`), and an FP8 bootstrap step that was skipped is run again by
    /// the next launch.
    pub fn wait(
        self,
        trainer: &mut Trainer,
    ) -> Result<Vec<(StepMetrics, StepTimings)>, TrainError> {
        let ring = self.copy.wait()?;
        let done = Instant::now();
        let mut out = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            let m = trainer
                .ring_layout
                .row(&ring, (self.newest - step.seq) as usize)?;
            if step.bootstrap {
                // A skipped step leaves the histories empty: bootstrap again.
                trainer.fp8_bootstrap_pending &= m.skipped;
            }
            let timings = StepTimings {
                host_to_device: (step.uploaded - step.started).as_secs_f64(),
                compute: (done - step.uploaded).as_secs_f64(),
                launch: (step.launched - step.uploaded).as_secs_f64(),
                device_to_host: 0.0,
            };
            out.push((m, timings));
        }
        trainer.last_metrics = out.last().map(|(m, _)| m.clone());
        Ok(out)
    }
}

/// The train step of a config traced and compiled on an engine's mesh, with the layout of
/// its state and batch; nothing is allocated on the devices.
pub struct CompiledStep {
    /// Shapes of state and batch.
    pub layout: StepLayout,
    /// The compiled step (its [`Program::memory_stats`] are the step's device memory).
    pub program: Program,
}

/// Traces and compiles the train step of `cfg` (its platform pinned to `engine`'s, see
/// [`super::setup::pin_platform`]) on `plan`'s mesh, distilling `distill`'s teacher when
/// given. [`Trainer`] runs it; the memory planner (`crate::plan`) reads its compiled memory
/// without allocating anything.
pub fn compile_step(
    cfg: &Config,
    engine: &Engine,
    plan: &ShardingPlan,
    distill: Option<&DistillContext>,
) -> Result<CompiledStep, TrainError> {
    if cfg.training.batch_size_is_auto() {
        return Err(TrainError::Other(
            "training.batch_size is \"auto\", which `vishwam train` resolves from the device \
             memory before it builds the step; this command needs a number: set \
             training.batch_size to a positive integer"
                .into(),
        ));
    }
    let (layout, func) = match distill {
        None => {
            let layout = StepLayout::new(cfg, plan)?;
            let func = build_train_step(cfg, plan, &layout)?;
            (layout, func)
        }
        Some(context) => {
            let mut params = crate::model::param_specs(&cfg.model);
            params.extend(context.projection_specs());
            let layout = StepLayout::with_params(cfg, plan, params)?;
            let func = build_distill_step(cfg, plan, &layout, context)?;
            (layout, func)
        }
    };
    let program = engine.compile_with(&func, compile_hints(cfg))?;
    Ok(CompiledStep { layout, program })
}

/// How to compile `cfg`'s programs (FP8 matmuls or not).
pub(super) fn compile_hints(cfg: &Config) -> CompileHints {
    PrecisionPolicy::from_config(cfg).compile_hints()
}
