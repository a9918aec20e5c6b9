//! The model of docs/model.md in Candle: parameters as `Var`s, forward, loss, gradients.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::attention::layer_attention;
use super::error::{ReferenceError, Result};
use super::kernels::softmax_cross_entropy;
use super::layers::{gated_mlp, post_norm, rms_norm, scale_embeddings};
use super::moe::moe_ffn;
use super::params::{
    check_names, host_to_tensor, parameter_specs, random_parameters, tensor_to_host, ParameterSpec,
};
use super::rope::RopeTables;
use super::{Batch, ReferenceDtype};
use crate::config::ModelConfig;
use crate::engine::HostArray;

/// The reference model: a configuration and its parameters, keyed as in docs/model.md.
/// Cloning is not offered: `Var`s share storage, so a clone would alias the parameters.
#[derive(Debug)]
pub struct ReferenceModel {
    config: ModelConfig,
    dtype: ReferenceDtype,
    specs: Vec<ParameterSpec>,
    params: BTreeMap<String, Var>,
}

/// What one forward pass yields.
struct ForwardOutput {
    /// `[B*T, V]`.
    logits: Tensor,
    /// The mean load-balancing loss of the MoE blocks (none without MoE blocks).
    aux: Option<Tensor>,
    /// Per MoE block, (token, choice) pairs routed to each expert before dropping.
    loads: Vec<Vec<f64>>,
    /// The residual stream `[B*T, H]` after each block.
    layers: Vec<Tensor>,
}

/// Gradients of the loss for every parameter, keyed like the parameters.
#[derive(Debug, Clone)]
pub struct Gradients(pub BTreeMap<String, Tensor>);

impl Gradients {
    /// The gradient of one parameter.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }

    /// All gradients as host arrays (f32 or f64 like the model).
    pub fn to_host(&self) -> Result<BTreeMap<String, HostArray>> {
        self.0
            .iter()
            .map(|(name, g)| Ok((name.clone(), tensor_to_host(g)?)))
            .collect()
    }

    /// One gradient flattened to f32, e.g. for [`super::compare`].
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let g = self
            .get(name)
            .ok_or_else(|| ReferenceError::MissingGradient {
                name: name.to_string(),
            })?;
        Ok(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// `sqrt(sum over all parameters of sum(g²))`, accumulated in f64 across tensors.
    pub fn global_norm(&self) -> Result<f64> {
        let mut sum = 0.0;
        for g in self.0.values() {
            sum += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(sum.sqrt())
    }
}

fn check_config(config: &ModelConfig) -> Result<()> {
    if config.dropout_rate > 0.0 {
        return Err(ReferenceError::Unsupported {
            feature: "model.dropout_rate > 0",
            hint: "parity is checked with dropout off; set model.dropout_rate to 0",
        });
    }
    if config.use_moe && config.router_noise > 0.0 {
        return Err(ReferenceError::Unsupported {
            feature: "model.router_noise > 0",
            hint: "parity is checked without router noise; set model.router_noise to 0",
        });
    }
    let invalid = |key, expected: &str, got: usize| ReferenceError::InvalidConfig {
        key,
        expected: expected.to_string(),
        got: got.to_string(),
    };
    for (key, value) in [
        ("model.vocab_size", config.vocab_size),
        ("model.hidden_dim", config.hidden_dim),
        ("model.num_layers", config.num_layers),
        ("model.num_heads", config.num_heads),
        ("model.num_kv_heads", config.kv_heads()),
        ("model.mlp_dim", config.mlp_dim()),
    ] {
        if value == 0 {
            return Err(invalid(key, "positive", value));
        }
    }
    if !config.num_heads.is_multiple_of(config.kv_heads()) {
        let expected = format!("a divisor of model.num_heads ({})", config.num_heads);
        return Err(invalid("model.num_kv_heads", &expected, config.kv_heads()));
    }
    let head_dim = config.head_dim();
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(invalid(
            "model.head_dim",
            "even and positive (RoPE)",
            head_dim,
        ));
    }
    Ok(())
}

impl ReferenceModel {
    /// Loads parameters from host arrays (f32, f64, bf16 or f16), converted to `dtype`. The
    /// map must hold exactly the parameters of docs/model.md with their shapes.
    pub fn from_host_arrays(
        config: &ModelConfig,
        arrays: &BTreeMap<String, HostArray>,
        dtype: ReferenceDtype,
    ) -> Result<ReferenceModel> {
        check_config(config)?;
        let specs = parameter_specs(config);
        check_names(&specs, arrays.keys())?;
        let tensors = specs
            .iter()
            .map(|s| {
                Ok((
                    s.name.clone(),
                    host_to_tensor(&s.name, &arrays[&s.name], dtype.candle())?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        ReferenceModel::from_tensors(config, specs, tensors, dtype)
    }

    /// Loads parameters from a safetensors file whose tensor names are those of docs/model.md.
    pub fn from_safetensors(
        config: &ModelConfig,
        path: &Path,
        dtype: ReferenceDtype,
    ) -> Result<ReferenceModel> {
        check_config(config)?;
        let loaded = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| {
            ReferenceError::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let specs = parameter_specs(config);
        check_names(&specs, loaded.keys())?;
        let tensors = loaded
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_dtype(dtype.candle())?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        ReferenceModel::from_tensors(config, specs, tensors, dtype)
    }

    /// A model initialised as docs/model.md says, from the reference's own seeded draws
    /// ([`super::random_parameters`]); for benchmarks, not for parity with XLA's init.
    pub fn init_random(
        config: &ModelConfig,
        seed: u64,
        dtype: ReferenceDtype,
    ) -> Result<ReferenceModel> {
        check_config(config)?;
        ReferenceModel::from_host_arrays(config, &random_parameters(config, seed), dtype)
    }

    fn from_tensors(
        config: &ModelConfig,
        specs: Vec<ParameterSpec>,
        tensors: BTreeMap<String, Tensor>,
        dtype: ReferenceDtype,
    ) -> Result<ReferenceModel> {
        let mut params = BTreeMap::new();
        for spec in &specs {
            let tensor = &tensors[&spec.name];
            if tensor.dims() != spec.shape.as_slice() {
                return Err(ReferenceError::ShapeMismatch {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: tensor.dims().to_vec(),
                });
            }
            params.insert(spec.name.clone(), Var::from_tensor(&tensor.contiguous()?)?);
        }
        Ok(ReferenceModel {
            config: config.clone(),
            dtype,
            specs,
            params,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> ReferenceDtype {
        self.dtype
    }

    /// The parameter table (names, shapes, decay, init) in docs/model.md order.
    pub fn specs(&self) -> &[ParameterSpec] {
        &self.specs
    }

    /// The parameters, keyed by name.
    pub fn parameters(&self) -> &BTreeMap<String, Var> {
        &self.params
    }

    /// Total number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// The parameters as host arrays (f32 or f64 like the model).
    pub fn parameters_to_host(&self) -> Result<BTreeMap<String, HostArray>> {
        self.params
            .iter()
            .map(|(name, v)| Ok((name.clone(), tensor_to_host(v.as_tensor())?)))
            .collect()
    }

    /// Writes the parameters to a safetensors file (names as in docs/model.md).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<&str, Tensor> = self
            .params
            .iter()
            .map(|(name, v)| (name.as_str(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path).map_err(|source| {
            ReferenceError::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn param(&self, name: &str) -> &Tensor {
        // Every name used by `forward` is in the table `from_tensors` checked.
        self.params[name].as_tensor()
    }

    fn check_shape(&self, batch_size: usize, seq_len: usize) -> Result<()> {
        let reason = if batch_size == 0 || seq_len == 0 {
            "both must be positive".to_string()
        } else if seq_len > self.config.max_seq_len {
            format!(
                "seq_len exceeds model.max_seq_len ({})",
                self.config.max_seq_len
            )
        } else {
            return Ok(());
        };
        Err(ReferenceError::BatchSize {
            batch_size,
            seq_len,
            reason,
        })
    }

    fn token_ids(&self, tokens: &[i32], batch_size: usize, seq_len: usize) -> Result<Tensor> {
        self.check_shape(batch_size, seq_len)?;
        if tokens.len() != batch_size * seq_len {
            return Err(ReferenceError::BatchShape {
                what: "tokens",
                expected: batch_size * seq_len,
                got: tokens.len(),
            });
        }
        let vocab_size = self.config.vocab_size;
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(position, &id)| match u32::try_from(id) {
                Ok(u) if (u as usize) < vocab_size => Ok(u),
                _ => Err(ReferenceError::TokenOutOfRange {
                    what: "token",
                    position,
                    id: id.into(),
                    vocab_size,
                }),
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Tensor::from_vec(ids, tokens.len(), &Device::Cpu)?)
    }

    /// Logits `[B*T, V]` for token ids `[B*T]`, with the MoE blocks' aux loss and loads.
    fn forward(&self, ids: &Tensor, b: usize, t: usize) -> Result<ForwardOutput> {
        let c = &self.config;
        let (nh, kv, d) = (c.num_heads, c.kv_heads(), c.head_dim());
        let dtype = self.dtype.candle();
        let rope = RopeTables::new(c, t, dtype)?;
        let h = self.param("embed.tokens").index_select(ids, 0)?; // [N, H]
        let mut h = scale_embeddings(c, h)?;
        let (mut aux, mut loads, mut layers) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..c.num_layers {
            let p = |s: &str| self.param(&format!("layers.{i}.{s}"));
            let x = rms_norm(c, &h, p("attn_norm.scale"))?;
            let q = rope.apply(&x.matmul(p("attn.wq"))?.reshape((b, t, nh, d))?)?;
            let k = rope.apply(&x.matmul(p("attn.wk"))?.reshape((b, t, kv, d))?)?;
            let v = x.matmul(p("attn.wv"))?.reshape((b, t, kv, d))?;
            let o = layer_attention(c, i, &q, &k, &v)?; // [N, NH*D]
            let o = post_norm(c, o.matmul(p("attn.wo"))?, || p("attn_post_norm.scale"))?;
            h = (h + o)?;
            let x = rms_norm(c, &h, p("mlp_norm.scale"))?;
            if c.is_moe_layer(i) {
                let out = moe_ffn(c, &x, t, p)?;
                h = (h + post_norm(c, out.y, || p("mlp_post_norm.scale"))?)?;
                aux.push(out.aux);
                loads.push(out.loads);
                layers.push(h.clone());
                continue;
            }
            let y = gated_mlp(c, &x, p("mlp.w_gate"), p("mlp.w_up"), p("mlp.w_down"))?;
            h = (h + post_norm(c, y, || p("mlp_post_norm.scale"))?)?;
            layers.push(h.clone());
        }
        let h = rms_norm(c, &h, self.param("final_norm.scale"))?;
        let logits = if c.tie_embeddings {
            h.matmul(&self.param("embed.tokens").t()?)?
        } else {
            h.matmul(self.param("lm_head"))?
        };
        let logits = match c.final_logit_softcapping {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        };
        let aux_mean = match aux.len() {
            0 => None,
            count => Some((Tensor::stack(&aux, 0)?.sum_all()? / count as f64)?),
        };
        Ok(ForwardOutput {
            logits,
            aux: aux_mean,
            loads,
            layers,
        })
    }

    /// Logits `[B*T, V]` and the residual stream `[B*T, H]` after each block for `tokens`
    /// `[B, T]`, as part of the backprop graph (for distillation).
    pub(crate) fn logits_and_layers(
        &self,
        tokens: &[i32],
        batch_size: usize,
        seq_len: usize,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let ids = self.token_ids(tokens, batch_size, seq_len)?;
        let out = self.forward(&ids, batch_size, seq_len)?;
        Ok((out.logits, out.layers))
    }

    /// Logits `[B, T, V]` for `tokens` `[B, T]` (row-major).
    pub fn logits(&self, tokens: &[i32], batch_size: usize, seq_len: usize) -> Result<Tensor> {
        let ids = self.token_ids(tokens, batch_size, seq_len)?;
        let logits = self.forward(&ids, batch_size, seq_len)?.logits;
        Ok(logits.reshape((batch_size, seq_len, self.config.vocab_size))?)
    }

    /// The masked mean cross-entropy as a scalar tensor (part of the backprop graph), and for
    /// MoE models the mean over MoE blocks of the load-balancing loss.
    fn loss_tensor(&self, batch: &Batch) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t) = (batch.batch_size, batch.seq_len);
        let ids = self.token_ids(&batch.tokens, b, t)?;
        let n = b * t;
        for (what, got) in [("targets", batch.targets.len()), ("mask", batch.mask.len())] {
            if got != n {
                return Err(ReferenceError::BatchShape {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let vocab_size = self.config.vocab_size;
        let mut targets = Vec::with_capacity(n);
        for (position, (&target, &weight)) in batch.targets.iter().zip(&batch.mask).enumerate() {
            if !weight.is_finite() || weight < 0.0 {
                return Err(ReferenceError::InvalidMask {
                    position,
                    value: weight,
                });
            }
            targets.push(match u32::try_from(target) {
                Ok(u) if (u as usize) < vocab_size => u,
                // A padded position contributes 0 whatever its target; gather any valid row.
                _ if weight == 0.0 => 0,
                _ => {
                    return Err(ReferenceError::TokenOutOfRange {
                        what: "target",
                        position,
                        id: target.into(),
                        vocab_size,
                    })
                }
            });
        }
        let dtype = self.dtype.candle();
        let ForwardOutput { logits, aux, .. } = self.forward(&ids, b, t)?; // [N, V]
        let targets = Tensor::from_vec(targets, n, &Device::Cpu)?;
        let ce = softmax_cross_entropy(&logits, &targets)?; // [N]
        let mask = Tensor::from_slice(&batch.mask, n, &Device::Cpu)?.to_dtype(dtype)?;
        let denominator = batch.mask.iter().map(|&m| m as f64).sum::<f64>().max(1.0);
        Ok(((ce.mul(&mask)?.sum_all()? / denominator)?, aux))
    }

    /// `sum(ce * mask) / max(sum(mask), 1)` over the batch.
    pub fn loss(&self, batch: &Batch) -> Result<f64> {
        Ok(self
            .loss_tensor(batch)?
            .0
            .to_dtype(DType::F64)?
            .to_scalar()?)
    }

    /// Per MoE block, the (token, choice) pairs of `tokens` `[B, T]` routed to each expert
    /// before dropping (the loads of loss-free balancing); empty for a dense model.
    pub fn router_loads(
        &self,
        tokens: &[i32],
        batch_size: usize,
        seq_len: usize,
    ) -> Result<Vec<Vec<f64>>> {
        let ids = self.token_ids(tokens, batch_size, seq_len)?;
        Ok(self.forward(&ids, batch_size, seq_len)?.loads)
    }

    /// Loss-free balancing (docs/model.md): `router_bias += lossfree_update_rate *
    /// sign(mean(load) - load)` for each MoE block, with `loads` from [`Self::router_loads`]
    /// of the step's batch before the optimizer update. A no-op without the bias.
    pub fn apply_lossfree_update(&self, loads: &[Vec<f64>]) -> Result<()> {
        let c = &self.config;
        if !c.use_moe || !c.use_lossfreebalance {
            return Ok(());
        }
        let blocks: Vec<usize> = (0..c.num_layers).filter(|&i| c.is_moe_layer(i)).collect();
        for (i, load) in blocks.iter().zip(loads) {
            let var = &self.params[&format!("layers.{i}.moe.router_bias")];
            let mean = load.iter().sum::<f64>() / load.len().max(1) as f64;
            let sign = |d: f64| match d.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => 1.0,
                Some(std::cmp::Ordering::Less) => -1.0,
                _ => 0.0,
            };
            let step: Vec<f64> = load
                .iter()
                .map(|l| c.lossfree_update_rate * sign(mean - l))
                .collect();
            let step = Tensor::from_vec(step, load.len(), &Device::Cpu)?.to_dtype(var.dtype())?;
            var.set(&(var.as_tensor() + step)?)?;
        }
        Ok(())
    }

    /// The loss and the gradient of the training objective for every parameter, by Candle's
    /// backprop. For MoE models the objective adds `aux_loss_coef` times the mean aux loss
    /// of the MoE blocks (docs/model.md); the returned loss is the cross-entropy alone.
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(f64, Gradients)> {
        let (loss, aux) = self.loss_tensor(batch)?;
        let objective = match aux {
            Some(aux) if self.config.aux_loss_coef > 0.0 => {
                (&loss + (aux * self.config.aux_loss_coef)?)?
            }
            _ => loss.clone(),
        };
        let store = objective.backward()?;
        let mut grads = BTreeMap::new();
        for (name, var) in &self.params {
            let grad = match store.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            grads.insert(name.clone(), grad);
        }
        let loss = loss.to_dtype(DType::F64)?.to_scalar()?;
        Ok((loss, Gradients(grads)))
    }
}
