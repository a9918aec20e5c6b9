//! The train state on the devices and the compiled step that updates it.

use super::step::{build_train_step, StepLayout, INITIAL_LOSS_SCALE, METRICS};
use super::TrainError;
use crate::config::Config;
use crate::engine::{Engine, HostArray, Input, Program, ShardedArray};
use std::collections::BTreeMap;
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
        if rows % accum.max(1) != 0
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    /// Mean masked cross-entropy of the batch.
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Tokens that counted towards the loss.
    pub tokens: f32,
    /// True when the update was skipped (non-finite loss or gradient).
    pub skipped: bool,
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
    state: Vec<ShardedArray>,
}

impl Trainer {
    /// Traces and compiles the step for `cfg`, and initialises the state from `seed`.
    pub fn new(cfg: &Config, engine: Engine, plan: ShardingPlan) -> Result<Trainer, TrainError> {
        let layout = StepLayout::new(cfg, &plan)?;
        let func = build_train_step(cfg, &plan, &layout)?;
        let program = engine.compile(&func)?;
        let mut trainer = Trainer {
            engine,
            plan,
            layout,
            program,
            state: Vec::new(),
        };
        trainer.load_state(&initial_state(cfg, &trainer.layout))?;
        Ok(trainer)
    }

    /// Replaces the state with host arrays (by slot name), placed by the layout's shardings.
    pub fn load_state(&mut self, host: &BTreeMap<String, HostArray>) -> Result<(), TrainError> {
        let mut state = Vec::with_capacity(self.layout.state.len());
        for slot in &self.layout.state {
            let array = host.get(&slot.name).ok_or_else(|| {
                TrainError::Other(format!("the train state lacks `{}`", slot.name))
            })?;
            let want = crate::engine::element_type(slot.ty.dtype);
            if array.element_type != want || array.shape != slot.ty.shape {
                return Err(TrainError::Other(format!(
                    "state `{}` must be {}{:?}, got {}{:?}",
                    slot.name,
                    want.mlir_name(),
                    slot.ty.shape,
                    array.element_type.mlir_name(),
                    array.shape
                )));
            }
            state.push(self.engine.put(array, &slot.spec)?);
        }
        self.state = state;
        Ok(())
    }

    /// The whole state gathered to the host, by slot name.
    pub fn state_to_host(&self) -> Result<BTreeMap<String, HostArray>, TrainError> {
        let mut out = BTreeMap::new();
        for (slot, array) in self.layout.state.iter().zip(&self.state) {
            out.insert(slot.name.clone(), self.engine.get(array)?);
        }
        Ok(out)
    }

    /// The parameters only (names without the `params.` prefix).
    pub fn params_to_host(&self) -> Result<BTreeMap<String, HostArray>, TrainError> {
        let mut out = BTreeMap::new();
        for (slot, array) in self.layout.state.iter().zip(&self.state) {
            if let Some(name) = slot.name.strip_prefix("params.") {
                out.insert(name.to_string(), self.engine.get(array)?);
            }
        }
        Ok(out)
    }

    /// Device arrays of the parameters, in [`StepLayout::params`] order.
    pub fn param_arrays(&self) -> &[ShardedArray] {
        &self.state[..self.layout.params.len()]
    }

    /// Optimizer steps applied so far.
    pub fn step_count(&self) -> Result<i64, TrainError> {
        let i = self
            .layout
            .state
            .iter()
            .position(|s| s.name == "step")
            .unwrap_or(0);
        Ok(self
            .engine
            .get(&self.state[i])?
            .to_vec::<i32>()
            .map_err(TrainError::Other)?[0] as i64)
    }

    /// Uploads a batch, runs one step in place, and returns its metrics.
    pub fn step(&mut self, batch: &HostBatch) -> Result<StepMetrics, TrainError> {
        let spec = &self.layout.batch_spec;
        let tokens = self.engine.put(&batch.tokens, spec)?;
        let targets = self.engine.put(&batch.targets, spec)?;
        let mask = self.engine.put(&batch.mask, spec)?;
        let mut inputs: Vec<Input<'_>> = self.state.iter_mut().map(Input::Donate).collect();
        inputs.extend([
            Input::Keep(&tokens),
            Input::Keep(&targets),
            Input::Keep(&mask),
        ]);
        let mut outputs = self.program.run(inputs)?;
        let metrics = outputs.split_off(self.layout.state.len());
        self.state = outputs;
        let mut values = [0f32; METRICS.len()];
        for (v, m) in values.iter_mut().zip(&metrics) {
            *v = self
                .engine
                .get(m)?
                .to_vec::<f32>()
                .map_err(TrainError::Other)?[0];
        }
        Ok(StepMetrics {
            loss: values[0],
            grad_norm: values[1],
            lr: values[2],
            tokens: values[3],
            skipped: values[4] != 0.0,
        })
    }
}

/// The state at step 0: initial parameters, zero moments, the seeded random state.
pub fn initial_state(cfg: &Config, layout: &StepLayout) -> BTreeMap<String, HostArray> {
    let seed = cfg.training.seed;
    let params = crate::model::init_params(&cfg.model, seed);
    let mut state = BTreeMap::new();
    for (name, array) in params {
        let zeros = HostArray {
            data: vec![0; array.data.len()],
            ..array.clone()
        };
        state.insert(format!("opt.m.{name}"), zeros.clone());
        state.insert(format!("opt.v.{name}"), zeros);
        state.insert(format!("params.{name}"), array);
    }
    state.insert("step".into(), HostArray::scalar(0i32));
    let rng = HostArray::from_slice(
        &[2],
        &[
            seed ^ 0x9e37_79b9_7f4a_7c15,
            seed.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        ],
    )
    .expect("two values");
    state.insert("rng".into(), rng);
    if layout.dynamic_scale {
        state.insert(
            "loss_scale".into(),
            HostArray::scalar(INITIAL_LOSS_SCALE as f32),
        );
        state.insert("good_steps".into(), HostArray::scalar(0i32));
    }
    state
}
