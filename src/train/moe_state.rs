//! The Mixture-of-Experts parts of the train step: routing statistics summed over the
//! micro-batches, the loss-free balancing bias update (outside the gradient, once per step)
//! and the MoE metrics. The aux-loss term of the objective is the model's
//! ([`crate::model::moe_aux_term`]).

use crate::config::ModelConfig;
use crate::model::MoeStats;
use serde::Serialize;
use std::collections::BTreeMap;
use vishwam_hlo::{tree_struct, DType, Graph, HloError, Tensor, TensorMap, TensorType};

/// Indices of the MoE blocks, in order; row `r` of every per-block statistic is block
/// `moe_layers(cfg)[r]`.
pub fn moe_layers(cfg: &ModelConfig) -> Vec<usize> {
    (0..cfg.num_layers)
        .filter(|&i| cfg.is_moe_layer(i))
        .collect()
}

/// Routing statistics of a micro-batch or a step, one row per MoE block (all f32).
#[derive(Clone)]
pub struct MoeStepStats {
    /// (token, choice) pairs routed to each expert before dropping, `[L, E]`.
    pub counts: Tensor,
    /// Pairs dropped for lack of capacity, `[L]`.
    pub dropped: Tensor,
    /// Aux loss of each block, `[L]` (summed over micro-batches).
    pub aux: Tensor,
}
tree_struct!(MoeStepStats {
    counts,
    dropped,
    aux
});

impl MoeStepStats {
    /// The statistics of the MoE blocks of one forward pass; `None` without MoE blocks.
    pub fn stack(layers: &[MoeStats]) -> Option<MoeStepStats> {
        let cat = |parts: Vec<Tensor>| match parts.split_first() {
            Some((first, rest)) if !rest.is_empty() => first.concat(rest, 0),
            Some((first, _)) => first.clone(),
            None => unreachable!("checked non-empty"),
        };
        if layers.is_empty() {
            return None;
        }
        Some(MoeStepStats {
            counts: cat(layers.iter().map(|s| s.counts.expand_dims(0)).collect()),
            dropped: cat(layers.iter().map(|s| s.dropped.reshape(&[1])).collect()),
            aux: cat(layers.iter().map(|s| s.aux_loss.reshape(&[1])).collect()),
        })
    }

    /// Zeros to accumulate into; `None` when the model has no MoE blocks.
    pub fn zeros(g: &Graph, cfg: &ModelConfig) -> Option<MoeStepStats> {
        let l = moe_layers(cfg).len() as i64;
        let f32 = |shape: &[i64]| g.zeros(&TensorType::new(DType::F32, shape));
        (l > 0).then(|| MoeStepStats {
            counts: f32(&[l, cfg.num_experts as i64]),
            dropped: f32(&[l]),
            aux: f32(&[l]),
        })
    }

    /// Elementwise sum (micro-batch accumulation).
    pub fn add(&self, other: &MoeStepStats) -> MoeStepStats {
        MoeStepStats {
            counts: &self.counts + &other.counts,
            dropped: &self.dropped + &other.dropped,
            aux: &self.aux + &other.aux,
        }
    }
}

/// The row (index into [`moe_layers`]) of a loss-free bias buffer `layers.{i}.moe.router_bias`.
pub fn bias_row(cfg: &ModelConfig, name: &str) -> Option<usize> {
    let layer: usize = name
        .strip_prefix("layers.")?
        .strip_suffix(".moe.router_bias")?
        .parse()
        .ok()?;
    moe_layers(cfg).iter().position(|&i| i == layer)
}

/// Loss-free balancing (DeepSeek-V3): `bias + rate * sign(mean_e load - load_e)`, with the
/// loads of block `row` over the whole step (`counts: [L, E]`).
pub fn updated_router_bias(
    cfg: &ModelConfig,
    bias: &Tensor,
    counts: &Tensor,
    row: usize,
) -> Tensor {
    let load = counts
        .slice_axis(0, row as i64, row as i64 + 1)
        .reshape(&[cfg.num_experts as i64]);
    let mean = load.mean(&[0], true);
    bias + (mean - load).sign() * cfg.lossfree_update_rate
}

/// The new value of the non-trainable parameter `name` after a step with routing statistics
/// `moe`: the loss-free bias update (the only buffer there is).
pub fn buffer_update(
    cfg: &ModelConfig,
    name: &str,
    value: &Tensor,
    moe: Option<&MoeStepStats>,
) -> Result<Tensor, HloError> {
    match (bias_row(cfg, name), moe) {
        (Some(row), Some(stats)) => Ok(updated_router_bias(cfg, value, &stats.counts, row)),
        _ => Err(HloError::Shape {
            op: "train step".into(),
            detail: format!("no update rule for the non-trainable parameter `{name}`"),
        }),
    }
}

/// Names of the MoE step outputs, after [`super::METRICS`]; `moe.bias_norm` only with
/// loss-free balancing.
pub const MOE_METRICS: [&str; 4] = [
    "moe.utilisation",
    "moe.dropped_fraction",
    "moe.aux_loss",
    "moe.bias_norm",
];

/// The routing biases after a step with routing statistics `moe` (the loss-free balancing
/// update of each, by parameter name).
pub fn updated_router_biases(
    cfg: &ModelConfig,
    biases: &BTreeMap<String, Tensor>,
    moe: Option<&MoeStepStats>,
) -> Result<BTreeMap<String, Tensor>, HloError> {
    biases
        .iter()
        .map(|(name, bias)| Ok((name.clone(), buffer_update(cfg, name, bias, moe)?)))
        .collect()
}

/// The MoE metric outputs of a step, by name: utilisation `[L, E]`, dropped fraction `[L]`,
/// aux loss `[L]` (mean over micro-batches) and, with loss-free balancing, the L2 norm of each
/// block's updated bias `[L]` (`new_biases`, by parameter name). `pairs` is the number of
/// (token, choice) pairs of one micro-batch.
pub fn metric_outputs(
    cfg: &ModelConfig,
    stats: &MoeStepStats,
    accum: usize,
    pairs: usize,
    new_biases: &BTreeMap<String, Tensor>,
) -> TensorMap {
    let utilisation = &stats.counts / stats.counts.sum(&[-1], true).maximum(1.0);
    let mut out = TensorMap::new();
    out.insert(MOE_METRICS[0], utilisation);
    out.insert(MOE_METRICS[1], &stats.dropped / (accum * pairs) as f64);
    out.insert(MOE_METRICS[2], &stats.aux / accum as f64);
    // One norm per MoE block, in block order (names sort `layers.10` before `layers.2`).
    let mut biases: Vec<(Option<usize>, &Tensor)> = new_biases
        .iter()
        .map(|(n, b)| (bias_row(cfg, n), b))
        .collect();
    biases.sort_by_key(|(row, _)| *row);
    let norms: Vec<Tensor> = biases
        .iter()
        .map(|(_, b)| b.square().sum_all().sqrt().reshape(&[1]))
        .collect();
    if let Some((first, rest)) = norms.split_first() {
        let norms = if rest.is_empty() {
            first.clone()
        } else {
            first.concat(rest, 0)
        };
        out.insert(MOE_METRICS[3], norms);
    }
    out
}

/// The MoE metrics of a step, on the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeMetrics {
    /// The MoE blocks the rows describe.
    pub layers: Vec<usize>,
    /// Per block, the fraction of routed (token, choice) pairs each expert received.
    pub utilisation: Vec<Vec<f32>>,
    /// Per block, the fraction of pairs dropped for lack of capacity.
    pub dropped_fraction: Vec<f32>,
    /// Per block, the load-balancing loss `E * sum_e f_e p_e` (1 when balanced).
    pub aux_loss: Vec<f32>,
    /// Per block, the L2 norm of the loss-free balancing bias (absent when it is off).
    pub bias_norm: Option<Vec<f32>>,
}

impl MoeMetrics {
    /// Per block, the largest minus the smallest expert utilisation (0 when uniform).
    pub fn utilisation_spread(&self) -> Vec<f32> {
        self.utilisation.iter().map(|u| spread(u)).collect()
    }
}

/// Largest minus smallest value.
pub fn spread(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    max - min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_rows_follow_the_moe_blocks() {
        let cfg = ModelConfig {
            num_layers: 6,
            use_moe: true,
            moe_layer_frequency: 3,
            ..ModelConfig::default()
        };
        assert_eq!(moe_layers(&cfg), vec![2, 5]);
        assert_eq!(bias_row(&cfg, "layers.5.moe.router_bias"), Some(1));
        assert_eq!(bias_row(&cfg, "layers.4.moe.router_bias"), None);
        assert_eq!(bias_row(&cfg, "layers.5.moe.router"), None);
        assert_eq!(spread(&[0.5, 0.25, 0.125, 0.125]), 0.375);
    }
}
