//! The parameter table of docs/model.md: names, shapes, weight decay and initialisation.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::{ReferenceError, Result};
use crate::config::ModelConfig;
use crate::engine::HostArray;
use crate::runtime::ElementType;

/// How a parameter is initialised (docs/model.md, column `init`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All ones (RMSNorm gains).
    Ones,
    /// N(0, std²).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros (the MoE router bias, a buffer without gradient).
    Zeros,
}

/// One row of the parameter table.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSpec {
    /// Name, e.g. `layers.0.attn.wq`.
    pub name: String,
    /// Shape, `[in, out]` for matrices.
    pub shape: Vec<usize>,
    /// Whether AdamW weight decay applies (rank >= 2 except `embed.tokens`).
    pub decay: bool,
    /// Initial distribution.
    pub init: Init,
}

/// Every parameter of the model in docs/model.md, in table order.
pub fn parameter_specs(config: &ModelConfig) -> Vec<ParameterSpec> {
    let (v, h, f) = (config.vocab_size, config.hidden_dim, config.mlp_dim());
    let (q_width, kv_width) = (
        config.num_heads * config.head_dim(),
        config.kv_heads() * config.head_dim(),
    );
    let std = config.init_std;
    let residual_std = std / (2.0 * config.num_layers as f64).sqrt();
    // Norm gains start as a plain normalisation: 1, or 0 under `1 + gain` (norm_offset 1).
    let norm = if config.norm_offset == 0.0 {
        Init::Ones
    } else {
        Init::Zeros
    };
    let mut specs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init| {
        let decay = shape.len() >= 2 && name != "embed.tokens";
        specs.push(ParameterSpec {
            name,
            shape,
            decay,
            init,
        });
    };
    push("embed.tokens".into(), vec![v, h], Init::Normal { std });
    for i in 0..config.num_layers {
        let p = |s: &str| format!("layers.{i}.{s}");
        push(p("attn_norm.scale"), vec![h], norm);
        push(p("attn.wq"), vec![h, q_width], Init::Normal { std });
        push(p("attn.wk"), vec![h, kv_width], Init::Normal { std });
        push(p("attn.wv"), vec![h, kv_width], Init::Normal { std });
        let residual = Init::Normal { std: residual_std };
        push(p("attn.wo"), vec![q_width, h], residual);
        push(p("mlp_norm.scale"), vec![h], norm);
        if config.post_norms {
            push(p("attn_post_norm.scale"), vec![h], norm);
            push(p("mlp_post_norm.scale"), vec![h], norm);
        }
        if config.is_moe_layer(i) {
            let (e, fe, s) = (
                config.num_experts,
                config.expert_dim(),
                config.num_shared_experts,
            );
            push(p("moe.router"), vec![h, e], Init::Normal { std });
            push(p("moe.w_gate"), vec![e, h, fe], Init::Normal { std });
            push(p("moe.w_up"), vec![e, h, fe], Init::Normal { std });
            push(p("moe.w_down"), vec![e, fe, h], residual);
            if s > 0 {
                push(
                    p("moe.shared.w_gate"),
                    vec![h, s * fe],
                    Init::Normal { std },
                );
                push(p("moe.shared.w_up"), vec![h, s * fe], Init::Normal { std });
                push(p("moe.shared.w_down"), vec![s * fe, h], residual);
            }
            if config.use_lossfreebalance {
                push(p("moe.router_bias"), vec![e], Init::Zeros);
            }
            continue;
        }
        push(p("mlp.w_gate"), vec![h, f], Init::Normal { std });
        push(p("mlp.w_up"), vec![h, f], Init::Normal { std });
        push(p("mlp.w_down"), vec![f, h], residual);
    }
    push("final_norm.scale".into(), vec![h], norm);
    if !config.tie_embeddings {
        push("lm_head".into(), vec![h, v], Init::Normal { std });
    }
    specs
}

/// Draws every parameter from its `init` distribution with a ChaCha8 stream seeded by `seed`,
/// as f32 host arrays. The draws are the reference's own (Box-Muller over the stream, one
/// parameter after another in table order); they are not the XLA model's draws.
pub fn random_parameters(config: &ModelConfig, seed: u64) -> BTreeMap<String, HostArray> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    parameter_specs(config)
        .into_iter()
        .map(|spec| {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f32> = match spec.init {
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Normal { std } => (0..n)
                    .map(|_| (std * standard_normal(&mut rng)) as f32)
                    .collect(),
            };
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            let array = HostArray {
                element_type: ElementType::F32,
                shape,
                data: bytemuck::cast_slice(&values).to_vec(),
            };
            (spec.name, array)
        })
        .collect()
}

/// One N(0, 1) draw (Box-Muller).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Checks that `names` are exactly the parameters of `specs` (no more, no fewer).
pub(crate) fn check_names<'a>(
    specs: &[ParameterSpec],
    names: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let expected: BTreeMap<&str, &ParameterSpec> =
        specs.iter().map(|s| (s.name.as_str(), s)).collect();
    let given: Vec<&String> = names.collect();
    if let Some(extra) = given.iter().find(|n| !expected.contains_key(n.as_str())) {
        return Err(ReferenceError::UnexpectedParameter {
            name: extra.to_string(),
        });
    }
    if let Some(missing) = specs.iter().find(|s| !given.contains(&&s.name)) {
        return Err(ReferenceError::MissingParameter {
            name: missing.name.clone(),
            expected: missing.shape.clone(),
        });
    }
    Ok(())
}

/// A host array as a CPU tensor of `dtype`; f64 arrays keep their full precision.
pub(crate) fn host_to_tensor(name: &str, array: &HostArray, dtype: DType) -> Result<Tensor> {
    let malformed = |reason: String| ReferenceError::MalformedArray {
        name: name.to_string(),
        reason,
    };
    let shape: Vec<usize> = array
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| malformed(format!("negative dimension {d}"))))
        .collect::<Result<_>>()?;
    let expected_bytes = array.len() * array.element_type.size_in_bytes();
    if array.data.len() != expected_bytes {
        return Err(malformed(format!(
            "{} bytes for shape {shape:?}, expected {expected_bytes}",
            array.data.len()
        )));
    }
    let tensor = match array.element_type {
        ElementType::F64 => {
            let values: Vec<f64> = array.to_vec().map_err(malformed)?;
            Tensor::from_vec(values, shape, &Device::Cpu)?
        }
        ElementType::F32 | ElementType::BF16 | ElementType::F16 => {
            Tensor::from_vec(array.to_f32(), shape, &Device::Cpu)?
        }
        other => {
            return Err(ReferenceError::UnsupportedElementType {
                name: name.to_string(),
                element_type: other,
            })
        }
    };
    Ok(tensor.to_dtype(dtype)?)
}

/// A CPU tensor (f32 or f64) as a host array of the same element type.
pub(crate) fn tensor_to_host(tensor: &Tensor) -> Result<HostArray> {
    let shape: Vec<i64> = tensor.dims().iter().map(|&d| d as i64).collect();
    let flat = tensor.flatten_all()?;
    let (element_type, data) = match tensor.dtype() {
        DType::F64 => (
            ElementType::F64,
            bytemuck::cast_slice(&flat.to_vec1::<f64>()?).to_vec(),
        ),
        _ => (
            ElementType::F32,
            bytemuck::cast_slice(&flat.to_dtype(DType::F32)?.to_vec1::<f32>()?).to_vec(),
        ),
    };
    Ok(HostArray {
        element_type,
        shape,
        data,
    })
}
