//! Teacher-student distillation as a variant of the train step.
//!
//! The teacher's forward pass is traced into the same step program as the student's: its
//! parameters are extra inputs of the step (uploaded once, matrices in the teacher's compute
//! dtype and vectors in f32, sharded by the same parameter rules, never donated, never
//! trained) and its outputs pass
//! through `stop_gradient`. Per micro-batch the objective is
//!
//! ```text
//! alpha * T² * KL(softmax(zt/T) || softmax(zs/T)) + (1 - alpha) * CE(zs, labels)
//!     + beta * mean over matched layers of d(proj_i(hs_i), ht_j)
//! ```
//!
//! summed over real (unmasked) tokens and divided by the step's token count like the plain
//! cross-entropy. `zs`/`zt` are the student's/teacher's logits (chunked, never materialised:
//! [`crate::model::masked_ce_kl_sums`]); `hs_i`/`ht_j` the residual streams after student
//! block i and teacher block j; `proj_i` the learned `[H_s, H_t]` matrix
//! `distill.proj.{i}` when the widths differ (a student parameter trained by AdamW, saved in
//! checkpoints), else the identity.

mod error;
mod mapping;
mod teacher;

pub use error::DistillError;
pub use mapping::layer_pairs;
pub use teacher::{Teacher, TeacherSource};

use super::attention_choice::teacher_attention_kind;
use super::TrainError;
use crate::config::{ComputeDtype, Config, IntermediateLoss, ModelConfig};
use crate::engine::{element_type, Engine, HostArray, ShardedArray};
use crate::model::{self, DistillHeads, ForwardOptions, Init, ParamSpec, RngStream};
use crate::runtime::ElementType;
use serde::Serialize;
use std::sync::Arc;
use vishwam_hlo::{DType, Graph, PartitionSpec, Result, Tensor, TensorMap, TensorType};
use vishwam_mesh::{LogicalAxis as L, ShardingPlan};

/// Names of the distillation outputs of the step, after [`super::METRICS`] (and before any
/// MoE metrics): the mean label cross-entropy, the mean KL divergence at temperature T, and
/// the mean intermediate distance (0 without intermediate distillation).
pub const DISTILL_METRICS: [&str; 3] = ["ce", "kl", "intermediate"];

/// One teacher parameter as a step input.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherSlot {
    /// Parameter name (docs/model.md); the step input is `teacher.<name>`.
    pub name: String,
    /// Its type: the shape in the teacher's compute dtype (matrices) or f32 (vectors).
    pub ty: TensorType,
    /// Its sharding over the mesh (the parameter rules).
    pub spec: PartitionSpec,
}

/// The hidden-state term of the objective.
#[derive(Debug, Clone, PartialEq)]
pub struct IntermediateTerm {
    /// `(student layer, teacher layer)` pairs.
    pub pairs: Vec<(usize, usize)>,
    /// The distance.
    pub loss: IntermediateLoss,
    /// Its weight (beta).
    pub weight: f64,
    /// Whether student hidden states pass through `distill.proj.{i}` (the widths differ).
    pub projected: bool,
}

/// Everything the step needs to distil from a teacher of a given architecture.
#[derive(Clone)]
pub struct DistillContext {
    /// The teacher's architecture.
    pub teacher: ModelConfig,
    /// How the teacher's forward pass is traced (no dropout, no remat); its `row_stats` also
    /// choose how the distillation loss finds its softmax statistics.
    pub forward: ForwardOptions,
    /// The teacher's parameters as step inputs, in `param_specs` order.
    pub slots: Vec<TeacherSlot>,
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight of the KL term; 1 - alpha weighs the label cross-entropy.
    pub alpha: f64,
    /// The hidden-state term, when asked for.
    pub intermediate: Option<IntermediateTerm>,
    student_hidden: usize,
    /// The student's `final_logit_softcapping`.
    student_softcap: Option<f64>,
}

/// What the student's forward pass gives the distillation terms.
pub struct StudentPass<'a> {
    /// Final hidden states `[N, H_s]`.
    pub hidden: &'a Tensor,
    /// LM head `[H_s, V]` in the compute dtype.
    pub head: &'a Tensor,
    /// Residual stream after each block, `[B, T, H_s]`.
    pub layers: &'a [Tensor],
    /// The student's parameters (for the projections).
    pub params: &'a TensorMap,
}

/// One micro-batch: tokens, targets and mask `[B, T]`, positions `[T]`.
pub struct MicroBatch<'a> {
    /// Input ids.
    pub tokens: &'a Tensor,
    /// Next-token targets.
    pub targets: &'a Tensor,
    /// 1 for real targets, 0 for padding.
    pub mask: &'a Tensor,
    /// Positions `0..T`.
    pub positions: &'a Tensor,
}

/// Sums over the real tokens of a micro-batch (f32 scalars).
pub struct DistillTerms {
    /// `alpha T² kl + (1 - alpha) ce + beta intermediate`.
    pub objective: Tensor,
    /// Label cross-entropy.
    pub ce: Tensor,
    /// KL divergence at temperature T.
    pub kl: Tensor,
    /// Mean over matched layers of the hidden-state distance (0 when off).
    pub intermediate: Tensor,
    /// Tokens whose target is the student's most likely token (token accuracy's numerator).
    pub correct: Tensor,
}

fn dtype_of(c: ComputeDtype) -> DType {
    match c {
        ComputeDtype::F32 => DType::F32,
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => DType::F16,
    }
}

impl DistillContext {
    /// The context for the student of `cfg` learning from a teacher of architecture
    /// `teacher` on `plan`'s mesh. The teacher computes in the config's compute dtype.
    pub fn new(
        cfg: &Config,
        plan: &ShardingPlan,
        teacher: &ModelConfig,
    ) -> std::result::Result<DistillContext, TrainError> {
        let d = &cfg.distillation;
        if cfg.optimization.fp8_head {
            return Err(DistillError::Fp8Head.into());
        }
        let compute = dtype_of(cfg.compute_dtype());
        let as_teacher = Config {
            model: teacher.clone(),
            ..cfg.clone()
        };
        let attention = teacher_attention_kind(&as_teacher, plan);
        let b = crate::train::batch_geometry(cfg, plan).micro_batch() as i64;
        let t = cfg.seq_len() as i64;
        let residual = plan
            .activation_spec(
                &[L::Batch, L::Length, L::Embed],
                &[b, t, teacher.hidden_dim as i64],
            )
            .ok()
            .map(|r| r.spec)
            .filter(|s| !s.is_replicated());
        // No remat, no dropout, and no FP8 (a training recipe for the student) for the teacher.
        let forward = ForwardOptions {
            compute,
            attention,
            residual_spec: residual,
            moe_sharding: teacher.use_moe.then(|| Arc::new(plan.clone())),
            row_stats: model::RowStats::for_platform(cfg.runtime.platform),
            loss_chunk: cfg.memory.loss_chunk_tokens,
            ..ForwardOptions::eval()
        };
        let mut slots = Vec::new();
        for p in model::param_specs(teacher) {
            let spec = plan.parameter_spec(&p.logical, &p.shape)?.spec;
            // Matrices are stored in the compute dtype (no per-step casts); vectors (norm
            // scales) stay f32 and are cast at use, as in training, which lets XLA fuse each
            // norm's scale into its normalisation (with a bf16 scale it materialised the
            // scaled activations once per consuming matmul).
            let dtype = if p.shape.len() >= 2 {
                compute
            } else {
                DType::F32
            };
            slots.push(TeacherSlot {
                ty: TensorType::new(dtype, &p.shape),
                name: p.name,
                spec,
            });
        }
        let intermediate = if d.use_intermediate_distillation {
            let pairs = layer_pairs(
                &d.intermediate_layer_mapping,
                cfg.model.num_layers,
                teacher.num_layers,
            )?;
            Some(IntermediateTerm {
                pairs,
                loss: d.intermediate_loss,
                weight: d.intermediate_weight,
                projected: cfg.model.hidden_dim != teacher.hidden_dim,
            })
        } else {
            None
        };
        Ok(DistillContext {
            teacher: teacher.clone(),
            forward,
            slots,
            temperature: d.temperature,
            alpha: d.alpha,
            intermediate,
            student_hidden: cfg.model.hidden_dim,
            student_softcap: cfg.model.final_logit_softcapping,
        })
    }

    /// The student parameters distillation adds: `distill.proj.{i}` `[H_s, H_t]` for each
    /// matched student layer i when the widths differ (none otherwise).
    pub fn projection_specs(&self) -> Vec<ParamSpec> {
        let Some(term) = self.intermediate.as_ref().filter(|t| t.projected) else {
            return Vec::new();
        };
        let (hs, ht) = (self.student_hidden, self.teacher.hidden_dim);
        term.pairs
            .iter()
            .map(|&(i, _)| ParamSpec {
                name: format!("distill.proj.{i}"),
                shape: vec![hs as i64, ht as i64],
                logical: vec![L::Embed, L::Embed],
                init: Init::Normal(1.0 / (hs as f64).sqrt()),
                decay: true,
                trainable: true,
            })
            .collect()
    }

    /// The teacher's parameters as inputs `teacher.<name>` of the function traced in `g`.
    pub fn teacher_inputs(&self, g: &Graph) -> TensorMap {
        self.slots
            .iter()
            .map(|s| {
                let input = format!("teacher.{}", s.name);
                (
                    s.name.clone(),
                    g.param_sharded(&input, s.ty.clone(), s.spec.clone()),
                )
            })
            .collect()
    }

    /// Places the teacher's parameters on `engine`'s mesh in the order and dtypes of
    /// [`DistillContext::slots`].
    pub fn upload(
        &self,
        engine: &Engine,
        teacher: &Teacher,
    ) -> std::result::Result<Vec<ShardedArray>, TrainError> {
        self.slots
            .iter()
            .map(|slot| {
                let host = teacher.params.get(&slot.name).ok_or_else(|| {
                    TrainError::Other(format!("the teacher lacks `{}`", slot.name))
                })?;
                let host = convert(host, element_type(slot.ty.dtype))?;
                Ok(engine.put(&host, &slot.spec)?)
            })
            .collect()
    }

    /// The teacher's forward pass on `batch` and the distillation terms against `student`.
    pub fn terms(
        &self,
        student: &StudentPass<'_>,
        teacher: &TensorMap,
        batch: &MicroBatch<'_>,
    ) -> Result<DistillTerms> {
        let (b, t) = (batch.tokens.shape()[0], batch.tokens.shape()[1]);
        let n = b * t;
        let out = model::hidden_states_with_layers(
            &self.teacher,
            &self.forward,
            teacher,
            batch.tokens,
            batch.positions,
            None::<&mut RngStream>,
        )?;
        let ht = self.teacher.hidden_dim as i64;
        let teacher_hidden = out.hidden.reshape(&[n, ht]).stop_gradient();
        let teacher_head = model::head_weight(&self.teacher, teacher)?
            .cast(self.forward.compute)
            .stop_gradient();
        let mask = batch.mask.reshape(&[n]);
        let vocab = self.teacher.vocab_size;
        let chunk = self
            .forward
            .loss_chunk
            .unwrap_or_else(|| model::default_chunk(n as usize, vocab));
        let heads = DistillHeads {
            student_hidden: student.hidden,
            student_head: student.head,
            teacher_hidden: &teacher_hidden,
            teacher_head: &teacher_head,
        };
        let t2 = self.temperature * self.temperature;
        let softcaps = [self.student_softcap, self.teacher.final_logit_softcapping];
        let [mut objective, ce, kl, correct] = model::masked_ce_kl_sums_capped(
            &heads,
            softcaps,
            &batch.targets.reshape(&[n]),
            &mask,
            self.temperature,
            [1.0 - self.alpha, self.alpha * t2],
            chunk,
            self.forward.row_stats,
        );
        let intermediate = match &self.intermediate {
            None => ce.zeros_like(),
            Some(term) => {
                let hs = self.student_hidden as i64;
                let mut total: Option<Tensor> = None;
                for &(i, j) in &term.pairs {
                    let mut s = student.layers[i].reshape(&[n, hs]);
                    if term.projected {
                        let proj = student.params.get(&format!("distill.proj.{i}"))?;
                        s = s.matmul(&proj.cast(s.dtype()));
                    }
                    let target = out.layers[j].reshape(&[n, ht]).stop_gradient();
                    let part = model::masked_hidden_distance_sum(&s, &target, &mask, term.loss);
                    total = Some(match total {
                        Some(acc) => acc + part,
                        None => part,
                    });
                }
                let total = total.unwrap_or_else(|| ce.zeros_like());
                let mean = total / term.pairs.len().max(1) as f64;
                objective = objective + &mean * term.weight;
                mean
            }
        };
        Ok(DistillTerms {
            objective,
            ce,
            kl,
            intermediate,
            correct,
        })
    }
}

/// An f32 host array in `target` (f32, bf16 or f16; round to nearest even).
fn convert(array: &HostArray, target: ElementType) -> std::result::Result<HostArray, TrainError> {
    let values = array.to_f32();
    let data: Vec<u8> = match target {
        ElementType::F32 => return Ok(array.clone()),
        ElementType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        ElementType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        other => {
            return Err(TrainError::Other(format!(
                "teacher parameters cannot be held as {}",
                other.mlir_name()
            )))
        }
    };
    HostArray::from_bytes(target, &array.shape, data).map_err(TrainError::Other)
}

/// The distillation metrics of a step, on the host.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DistillMetrics {
    /// Mean label cross-entropy of the student.
    pub ce: f32,
    /// Mean KL(teacher || student) at temperature T.
    pub kl: f32,
    /// Mean hidden-state distance over the matched layers (absent when off).
    pub intermediate: Option<f32>,
}
