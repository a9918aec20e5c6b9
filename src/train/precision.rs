//! The precision policy: the dtype of each class of tensor in training and generation,
//! derived from the configuration.
//!
//! | class | dtype | keys |
//! |---|---|---|
//! | parameters (masters) | f32 | always |
//! | compute: activations, embedding lookup, attention P·V | f32, bf16 or f16 | `tpu.use_bfloat16`, `optimization.mixed_precision` (bf16); `optimization.use_dynamic_scale` without `use_bfloat16` (f16) |
//! | block projections (attention q/k/v/o, MLP gate/up/down) | the compute dtype, or FP8 | `optimization.use_fp8`, `fp8_format`, `fp8_recipe`, `amax_history_len` |
//! | LM head (logits and their gradients) | the compute dtype, or FP8 with current scaling | `optimization.fp8_head` (with `use_fp8`) |
//! | attention scores and softmax statistics | f32 (per block of `block_size` keys with memory-efficient attention) | `optimization.block_size`, `memory.attention_memory_efficient` |
//! | activation gradients | the compute dtype (FP8 at the projections: E5M2, or E4M3 with `fp8_format` "e4m3") | as compute |
//! | parameter gradients (accumulated over micro-batches, clipped) | f32 | always |
//! | optimizer state (AdamW moments) | f32 | always |
//! | loss scale | dynamic with `use_dynamic_scale` (f16 compute, or bf16 with `use_bfloat16`), none otherwise | `optimization.use_dynamic_scale` |
//! | generation KV cache | f8E4M3FN, else the compute dtype | `memory.kv_cache_fp8` |
//!
//! FP8 projections use E4M3 for activations and weights, and E5M2 (hybrid) or E4M3 for output
//! gradients, each tensor with its own power-of-two scale (`crate::model::fp8`). With the
//! `delayed` recipe the scale comes from the largest amax of the last `amax_history_len`
//! steps (kept in the train state); with `current` from the tensor itself. Evaluation programs
//! run the same FP8 projections with current scaling.
//!
//! The embedding lookup is a gather, not a matmul, so it has no FP8 form; with tied embeddings
//! the head's matmuls read the embedding table, quantised like any head weight.

use super::state::INITIAL_LOSS_SCALE;
use crate::config::{ComputeDtype, Config, Fp8Format, Fp8Recipe};
use crate::model::Fp8Formats;
use std::fmt;
use vishwam_hlo::DType;

/// How FP8 scales are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Scaling {
    /// From the largest amax of the last `history_len` steps (state slots, donated and
    /// checkpointed); the tensor's own amax while the history is empty.
    Delayed {
        /// Steps of amax history per FP8 tensor.
        history_len: usize,
    },
    /// From the tensor's own amax, computed in the step.
    Current,
}

/// FP8 projections: formats and scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp8Policy {
    /// Forward and gradient formats.
    pub formats: Fp8Formats,
    /// The scaling recipe.
    pub scaling: Fp8Scaling,
}

/// How the block projections multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionPrecision {
    /// In the compute dtype.
    Compute,
    /// In FP8 with per-tensor scales.
    Fp8(Fp8Policy),
}

/// Loss scaling of the backward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossScaling {
    /// None (f32 and bf16 have the range of f32).
    None,
    /// A dynamic scale for f16: halved on a non-finite step (which is skipped), doubled after
    /// a run of good steps.
    Dynamic {
        /// The scale at step 0.
        initial: f64,
    },
}

/// The dtype of each class of tensor (see the module docs for the table).
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionPolicy {
    /// Master parameters.
    pub params: DType,
    /// Activations and the matmuls outside the block projections.
    pub compute: DType,
    /// The attention and MLP projections.
    pub projections: ProjectionPrecision,
    /// The LM head's matmuls in FP8 in these formats (current scaling), or `None` for the
    /// compute dtype.
    pub lm_head_fp8: Option<Fp8Formats>,
    /// Attention scores and softmax statistics.
    pub attention_scores: DType,
    /// Key block of memory-efficient attention (the online softmax's unit), if it is on.
    pub attention_block: Option<usize>,
    /// Cotangents of activations in the backward pass (outside the FP8 projections).
    pub activation_gradients: DType,
    /// Parameter gradients, as accumulated, clipped and applied.
    pub gradients: DType,
    /// AdamW moments.
    pub optimizer_state: DType,
    /// Loss scaling.
    pub loss_scaling: LossScaling,
    /// Generation KV cache.
    pub kv_cache: DType,
}

impl PrecisionPolicy {
    /// The policy that `cfg` asks for.
    pub fn from_config(cfg: &Config) -> PrecisionPolicy {
        let compute = match cfg.compute_dtype() {
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
            ComputeDtype::F16 => DType::F16,
        };
        let o = &cfg.optimization;
        let projections = if o.use_fp8 {
            ProjectionPrecision::Fp8(Fp8Policy {
                formats: match o.fp8_format {
                    Fp8Format::Hybrid => Fp8Formats::HYBRID,
                    Fp8Format::E4m3 => Fp8Formats::E4M3,
                },
                scaling: match o.fp8_recipe {
                    Fp8Recipe::Delayed => Fp8Scaling::Delayed {
                        history_len: o.amax_history_len,
                    },
                    Fp8Recipe::Current => Fp8Scaling::Current,
                },
            })
        } else {
            ProjectionPrecision::Compute
        };
        let lm_head_fp8 = match projections {
            ProjectionPrecision::Fp8(p) if o.fp8_head => Some(p.formats),
            _ => None,
        };
        PrecisionPolicy {
            params: DType::F32,
            compute,
            projections,
            lm_head_fp8,
            attention_scores: DType::F32,
            attention_block: cfg.attention_block(),
            activation_gradients: compute,
            gradients: DType::F32,
            optimizer_state: DType::F32,
            loss_scaling: if o.use_dynamic_scale {
                LossScaling::Dynamic {
                    initial: INITIAL_LOSS_SCALE,
                }
            } else {
                LossScaling::None
            },
            kv_cache: if cfg.memory.kv_cache_fp8 {
                DType::F8E4M3FN
            } else {
                compute
            },
        }
    }

    /// The FP8 policy, when the projections are FP8.
    pub fn fp8(&self) -> Option<Fp8Policy> {
        match self.projections {
            ProjectionPrecision::Fp8(p) => Some(p),
            ProjectionPrecision::Compute => None,
        }
    }

    /// What the compiler should know about programs under this policy: whether their
    /// matmuls take FP8 operands, and whether f32 matmuls may use TF32 (only when the
    /// compute dtype is narrower than f32: an f32 policy gets f32 products).
    pub fn compile_hints(&self) -> crate::engine::CompileHints {
        crate::engine::CompileHints {
            fp8_matmuls: self.fp8().is_some(),
            tf32_f32_matmuls: self.compute != DType::F32,
        }
    }
}

impl fmt::Display for PrecisionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "params {}, compute {}, projections ",
            self.params, self.compute
        )?;
        match self.projections {
            ProjectionPrecision::Compute => write!(f, "{}", self.compute)?,
            ProjectionPrecision::Fp8(p) => {
                write!(
                    f,
                    "fp8 ({} forward, {} gradients, ",
                    p.formats.forward.dtype(),
                    p.formats.backward.dtype()
                )?;
                match p.scaling {
                    Fp8Scaling::Delayed { history_len } => {
                        write!(f, "delayed scaling over {history_len} steps)")?
                    }
                    Fp8Scaling::Current => write!(f, "current scaling)")?,
                }
            }
        }
        match self.lm_head_fp8 {
            Some(formats) => write!(
                f,
                ", LM head fp8 ({} forward, {} gradients, current scaling)",
                formats.forward.dtype(),
                formats.backward.dtype()
            )?,
            None => write!(f, ", LM head {}", self.compute)?,
        }
        write!(f, ", attention scores {}", self.attention_scores)?;
        if let Some(block) = self.attention_block {
            write!(f, " in blocks of {block}")?;
        }
        write!(
            f,
            ", gradients {} (activations {}), optimizer state {}, loss scale {}, KV cache {}",
            self.gradients,
            self.activation_gradients,
            self.optimizer_state,
            match self.loss_scaling {
                LossScaling::None => "none",
                LossScaling::Dynamic { .. } => "dynamic",
            },
            self.kv_cache
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fp8Type;

    fn policy(overrides: &[&str]) -> PrecisionPolicy {
        let all: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        PrecisionPolicy::from_config(&Config::load(None, &all).unwrap())
    }

    #[test]
    fn defaults_are_f32_everywhere() {
        let p = policy(&[]);
        assert_eq!(
            (
                p.params,
                p.compute,
                p.gradients,
                p.optimizer_state,
                p.kv_cache
            ),
            (DType::F32, DType::F32, DType::F32, DType::F32, DType::F32)
        );
        assert_eq!(p.projections, ProjectionPrecision::Compute);
        assert_eq!(p.loss_scaling, LossScaling::None);
        assert_eq!(p.attention_block, None);
    }

    #[test]
    fn mixed_precision_keys_pick_the_compute_dtype_and_loss_scale() {
        for key in ["tpu.use_bfloat16=true", "optimization.mixed_precision=true"] {
            let p = policy(&[key]);
            assert_eq!(
                (p.compute, p.activation_gradients),
                (DType::BF16, DType::BF16)
            );
            assert_eq!((p.params, p.gradients), (DType::F32, DType::F32));
            assert_eq!(p.loss_scaling, LossScaling::None);
        }
        let dynamic = LossScaling::Dynamic {
            initial: INITIAL_LOSS_SCALE,
        };
        let p = policy(&["optimization.use_dynamic_scale=true"]);
        assert_eq!((p.compute, p.loss_scaling), (DType::F16, dynamic));
        let p = policy(&[
            "optimization.use_dynamic_scale=true",
            "optimization.mixed_precision=true",
        ]);
        assert_eq!((p.compute, p.loss_scaling), (DType::F16, dynamic));
        // The guide's listing: bf16 compute, FP8 projections, and a dynamic loss scale.
        let p = policy(&[
            "optimization.use_dynamic_scale=true",
            "tpu.use_bfloat16=true",
            "optimization.use_fp8=true",
        ]);
        assert_eq!((p.compute, p.loss_scaling), (DType::BF16, dynamic));
        assert!(p.fp8().is_some());
    }

    #[test]
    fn fp8_keys_give_formats_and_scaling() {
        let p = policy(&[
            "optimization.use_fp8=true",
            "optimization.mixed_precision=true",
            "optimization.amax_history_len=4",
        ]);
        let fp8 = p.fp8().unwrap();
        assert_eq!(fp8.formats.forward, Fp8Type::E4M3);
        assert_eq!(fp8.formats.backward, Fp8Type::E5M2);
        assert_eq!(fp8.scaling, Fp8Scaling::Delayed { history_len: 4 });
        assert_eq!(p.compute, DType::BF16);
        let text = p.to_string();
        assert!(
            text.contains("fp8 (f8E4M3FN forward, f8E5M2 gradients, delayed scaling over 4 steps)"),
            "{text}"
        );

        let p = policy(&[
            "optimization.use_fp8=true",
            "optimization.fp8_recipe=current",
            "optimization.fp8_format=e4m3",
        ]);
        let fp8 = p.fp8().unwrap();
        assert_eq!(fp8.formats, Fp8Formats::E4M3);
        assert_eq!(fp8.scaling, Fp8Scaling::Current);
        assert_eq!(p.compute, DType::F32);
    }

    #[test]
    fn kv_cache_and_attention_blocks_follow_the_memory_keys() {
        let p = policy(&[
            "memory.kv_cache_fp8=true",
            "memory.attention_memory_efficient=true",
            "optimization.block_size=64",
            "tpu.use_bfloat16=true",
        ]);
        assert_eq!(p.kv_cache, DType::F8E4M3FN);
        assert_eq!(p.attention_block, Some(64));
        assert_eq!(p.attention_scores, DType::F32);
        assert_eq!(policy(&["tpu.use_bfloat16=true"]).kv_cache, DType::BF16);
    }
}
