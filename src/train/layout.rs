//! The shape of one training step: the train state's slots (from [`TrainState`]), how a batch
//! is laid out over the mesh, and the forward options of training.

use super::fp8::Fp8Step;
use super::optim::{self, GradientTransformation};
use super::precision::{LossScaling, PrecisionPolicy};
use super::state::{
    param_leaf, LossScaleState, SlotInit, StateSlot, TrainState, INITIAL_LOSS_SCALE,
};
use super::TrainError;
use crate::config::Config;
use crate::engine::{Engine, HostArray, ShardedArray};
use crate::model::{self, ForwardOptions, ParamSpec};
use std::collections::BTreeMap;
use std::sync::Arc;
use vishwam_hlo::{DType, Graph, HloError, PartitionSpec, Result, TensorMap, TensorType};
use vishwam_mesh::{LogicalAxis as L, ShardingPlan};

/// The shape of one training step: what the state holds and how a batch is laid out.
#[derive(Debug, Clone)]
pub struct StepLayout {
    /// The model's parameters and any the objective adds (`distill.proj.*`), trained or not.
    pub params: Vec<ParamSpec>,
    /// The train state's slots.
    pub state: TrainState<StateSlot>,
    /// Micro-batches per step.
    pub accum: usize,
    /// Sequences per micro-batch.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Sharding of a batch array `[accum, micro_batch, seq_len]`.
    pub batch_spec: PartitionSpec,
    /// Whether the f16 dynamic loss scale is part of the state.
    pub dynamic_scale: bool,
    /// FP8 projections, if on (with delayed scaling, their histories are in the state).
    pub fp8: Option<Fp8Step>,
}

/// The forward options the config asks for in training.
pub fn train_forward_options(cfg: &Config, plan: &ShardingPlan) -> ForwardOptions {
    let policy = PrecisionPolicy::from_config(cfg);
    let (b, t, h) = (
        super::batch_geometry(cfg, plan).micro_batch() as i64,
        cfg.seq_len() as i64,
        cfg.model.hidden_dim as i64,
    );
    let residual = plan
        .activation_spec(&[L::Batch, L::Length, L::Embed], &[b, t, h])
        .ok()
        .map(|r| r.spec);
    ForwardOptions {
        compute: policy.compute,
        remat: cfg.memory.gradient_checkpointing,
        attention: super::attention_choice::attention_kind(cfg, plan),
        dropout: cfg.model.dropout_rate,
        residual_spec: residual.filter(|s| !s.is_replicated()),
        moe_sharding: cfg.model.use_moe.then(|| Arc::new(plan.clone())),
        fp8: policy.fp8().map(|p| p.formats),
        head_fp8: policy.lm_head_fp8,
        merge_projections: projection_outputs_unsplit(cfg, plan),
        row_stats: model::RowStats::for_platform(cfg.runtime.platform),
        loss_chunk: Some(cfg.memory.loss_chunk_tokens.unwrap_or_else(|| {
            model::default_chunk_on(cfg.runtime.platform, (b * t) as usize, cfg.model.vocab_size)
        })),
    }
}

/// Whether the plan leaves the output dimension of the projections that share an input
/// (`wq`/`wk`/`wv`, `w_gate`/`w_up`) whole, so that they can run as one GEMM on their concatenated
/// weights. Tensor parallelism splits it, and a concatenation across its shards
/// would cost the partitioner a reshuffle of the weights and the output in every step.
fn projection_outputs_unsplit(cfg: &Config, plan: &ShardingPlan) -> bool {
    use model::Projection;
    let shares_input = |p: &Projection| {
        Projection::ALL
            .iter()
            .any(|q| q != p && q.input() == p.input())
    };
    let grouped: Vec<String> = Projection::ALL
        .iter()
        .filter(|p| shares_input(p))
        .map(|p| format!("layers.0.{}", p.param()))
        .collect();
    model::param_specs(&cfg.model)
        .iter()
        .filter(|p| grouped.contains(&p.name))
        .all(|p| match plan.parameter_spec(&p.logical, &p.shape) {
            Ok(r) => r.spec.dims.get(1).is_none_or(|d| {
                d.axes
                    .iter()
                    .all(|a| plan.mesh.axis_size(a).unwrap_or(1) == 1)
            }),
            Err(_) => false,
        })
}

fn shape_error(op: &str, detail: impl ToString) -> HloError {
    HloError::Shape {
        op: op.to_string(),
        detail: detail.to_string(),
    }
}

impl StepLayout {
    /// The layout for `cfg` on `plan`'s mesh.
    pub fn new(cfg: &Config, plan: &ShardingPlan) -> Result<StepLayout> {
        StepLayout::with_params(cfg, plan, model::param_specs(&cfg.model))
    }

    /// The layout of a step that trains `params`: the model's, and any the objective adds
    /// (distillation projections).
    pub fn with_params(
        cfg: &Config,
        plan: &ShardingPlan,
        params: Vec<ParamSpec>,
    ) -> Result<StepLayout> {
        let slot = |p: &ParamSpec| -> Result<StateSlot> {
            let r = plan
                .parameter_spec(&p.logical, &p.shape)
                .map_err(|e| shape_error(&format!("sharding of {}", p.name), e))?;
            for note in &r.notes {
                tracing::debug!("{}: {note}", p.name);
            }
            Ok(StateSlot {
                ty: TensorType::new(DType::F32, &p.shape),
                spec: r.spec,
                init: SlotInit::Param(p.clone()),
            })
        };
        let (mut trained, mut router_bias) = (BTreeMap::new(), BTreeMap::new());
        for p in &params {
            let target = if p.trainable {
                &mut trained
            } else {
                &mut router_bias
            };
            target.insert(p.name.clone(), slot(p)?);
        }
        let trainable: Vec<ParamSpec> = params.iter().filter(|p| p.trainable).cloned().collect();
        let opt = optim::from_config(cfg, &trainable, &trained).init(&trained);
        let policy = PrecisionPolicy::from_config(cfg);
        let dynamic_scale = matches!(policy.loss_scaling, LossScaling::Dynamic { .. });
        let fp8 = policy.fp8().map(|policy| Fp8Step {
            policy,
            layers: cfg.model.num_layers,
        });
        let seed = cfg.training.seed;
        let rng = HostArray::from_slice(
            &[2],
            &[
                seed ^ 0x9e37_79b9_7f4a_7c15,
                seed.wrapping_mul(0xbf58_476d_1ce4_e5b9),
            ],
        )
        .expect("two values");
        let state = TrainState {
            params: trained,
            router_bias,
            opt,
            step: StateSlot::scalar(DType::I32, HostArray::scalar(0i32)),
            rng: StateSlot {
                ty: TensorType::new(DType::U64, &[2]),
                spec: PartitionSpec::default(),
                init: SlotInit::Value(rng),
            },
            loss_scale: dynamic_scale.then(|| LossScaleState {
                scale: StateSlot::scalar(DType::F32, HostArray::scalar(INITIAL_LOSS_SCALE as f32)),
                good_steps: StateSlot::scalar(DType::I32, HostArray::scalar(0i32)),
            }),
            fp8_history: fp8.iter().flat_map(Fp8Step::history_slots).collect(),
        };
        let batch = super::batch_geometry(cfg, plan);
        let (accum, micro_batch, seq_len) =
            (batch.grad_accum_steps, batch.micro_batch(), cfg.seq_len());
        let micro = plan
            .activation_spec(
                &[L::Batch, L::Length],
                &[micro_batch as i64, seq_len as i64],
            )
            .map_err(|e| shape_error("batch sharding", e))?
            .spec;
        let mut dims = vec![Default::default()];
        dims.extend(micro.dims.iter().cloned());
        Ok(StepLayout {
            params,
            state,
            accum,
            micro_batch,
            seq_len,
            batch_spec: PartitionSpec { dims },
            dynamic_scale,
            fp8,
        })
    }

    /// Type of a batch array.
    pub fn batch_type(&self, dtype: DType) -> TensorType {
        TensorType::new(
            dtype,
            &[
                self.accum as i64,
                self.micro_batch as i64,
                self.seq_len as i64,
            ],
        )
    }

    /// The trained parameters that the step's optimiser updates.
    pub fn trained_params(&self) -> Vec<ParamSpec> {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .cloned()
            .collect()
    }

    /// The slots of every model parameter (trained ones, then the routing biases), in state
    /// order: the first [`StepLayout::param_count`] leaves of the state.
    pub fn param_slots(&self) -> impl Iterator<Item = (&String, &StateSlot)> {
        self.state.params.iter().chain(&self.state.router_bias)
    }

    /// The number of model parameters (trained and routing biases).
    pub fn param_count(&self) -> usize {
        self.state.params.len() + self.state.router_bias.len()
    }

    /// Every model parameter as an input of `g` (named `params.<name>`, sharded like its
    /// slot), keyed by parameter name, in [`StepLayout::param_slots`] order.
    pub fn param_inputs(&self, g: &Graph) -> TensorMap {
        self.param_slots()
            .map(|(name, slot)| {
                let input = g.param_sharded(&param_leaf(name), slot.ty.clone(), slot.spec.clone());
                (name.clone(), input)
            })
            .collect()
    }

    /// The model parameters `host` (by parameter name) placed on `engine`'s devices, in
    /// [`StepLayout::param_slots`] order (the inputs of [`StepLayout::param_inputs`]).
    pub fn place_params(
        &self,
        engine: &Engine,
        host: &BTreeMap<String, HostArray>,
    ) -> std::result::Result<Vec<ShardedArray>, TrainError> {
        self.param_slots()
            .map(|(name, slot)| {
                let array = host.get(name).ok_or_else(|| {
                    TrainError::Other(format!(
                        "the parameters lack `{name}`; were they written for this configuration?"
                    ))
                })?;
                Ok(engine.put(array, &slot.spec)?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(sets: &[&str], devices: usize) -> bool {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load(None, &sets).unwrap();
        let plan = super::super::sharding_plan(&cfg, "cpu", devices).unwrap();
        projection_outputs_unsplit(&cfg, &plan)
    }

    #[test]
    fn projections_merge_unless_tensor_parallelism_splits_their_outputs() {
        assert!(merged(&[], 1));
        let fsdp = [
            "tpu.device_strategy=\"fsdp\"",
            "tpu.mesh_shape={\"fsdp\": 4}",
            "optimization.shard_weights=true",
        ];
        assert!(merged(&fsdp, 4));
        let hybrid = [
            "tpu.device_strategy=\"hybrid\"",
            "tpu.mesh_shape={\"data\": 2, \"model\": 2}",
        ];
        assert!(!merged(&hybrid, 4));
        let one_wide_model = [
            "tpu.device_strategy=\"hybrid\"",
            "tpu.mesh_shape={\"data\": 4, \"model\": 1}",
        ];
        assert!(merged(&one_wide_model, 4));
    }

    #[test]
    fn the_loss_takes_one_pass_for_its_row_statistics_on_gpus_and_tpus_and_two_on_cpus() {
        let stats = |platform: &str| {
            let sets = vec![format!("runtime.platform=\"{platform}\"")];
            let cfg = Config::load(None, &sets).unwrap();
            let plan = super::super::sharding_plan(&cfg, platform, 1).unwrap();
            train_forward_options(&cfg, &plan).row_stats
        };
        assert_eq!(stats("cpu"), model::RowStats::TwoPass);
        assert_eq!(stats("cuda"), model::RowStats::Online);
        assert_eq!(stats("tpu"), model::RowStats::Online);
    }

    #[test]
    fn the_loss_chunk_is_the_platforms_unless_the_config_gives_one() {
        let chunk = |platform: &str, extra: &[&str]| {
            let mut sets = vec![
                format!("runtime.platform=\"{platform}\""),
                "model.vocab_size=32000".to_string(),
                "model.max_seq_len=1024".to_string(),
                "training.batch_size=16".to_string(),
            ];
            sets.extend(extra.iter().map(|s| s.to_string()));
            let cfg = Config::load(None, &sets).unwrap();
            let plan = super::super::sharding_plan(&cfg, platform, 1).unwrap();
            train_forward_options(&cfg, &plan).loss_chunk
        };
        // 64 Mi and 256 Mi logits per chunk at a 32000 vocabulary, out of 16384 tokens.
        assert_eq!(chunk("cpu", &[]), Some(2097));
        assert_eq!(chunk("cuda", &[]), Some(8388));
        assert_eq!(chunk("tpu", &[]), Some(8388));
        let given = ["memory.loss_chunk_tokens=512"];
        assert_eq!(chunk("cuda", &given), Some(512));
        assert_eq!(chunk("cpu", &given), Some(512));
    }
}
