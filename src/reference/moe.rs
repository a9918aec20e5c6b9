//! The Mixture-of-Experts feed-forward of docs/model.md in Candle, written independently of
//! the XLA layer: the routing decisions (top-k of logits + bias, token-major queues, capacity)
//! are made on the host from the logits' values, then each expert gathers its kept tokens,
//! applies its SwiGLU, scales by the combine weights and `index_add`s the rows back.

use candle_core::{DType, Device, Tensor, D};

use super::error::Result;
use super::layers::gated_mlp;
use crate::config::ModelConfig;

/// One MoE block's output `[N, H]`, its load-balancing loss (a scalar tensor) and the
/// (token, choice) pairs routed to each expert before dropping.
pub(crate) struct MoeOutput {
    pub y: Tensor,
    pub aux: Tensor,
    pub loads: Vec<f64>,
}

/// Which (row, choice) pairs each expert keeps, from the logits' host values.
struct HostRouting {
    /// Chosen experts, `[N * k]` (row-major over rows, then choices).
    chosen: Vec<u32>,
    /// Per expert, the kept pairs as flat indices `n * k + c`.
    kept: Vec<Vec<u32>>,
    /// Pairs routed to each expert before dropping.
    counts: Vec<f64>,
}

fn host_routing(
    logits: &[Vec<f64>],
    bias: &[f64],
    seq_len: usize,
    k: usize,
    capacity: usize,
) -> HostRouting {
    let e = bias.len();
    let mut r = HostRouting {
        chosen: Vec::with_capacity(logits.len() * k),
        kept: vec![Vec::new(); e],
        counts: vec![0.0; e],
    };
    let mut queue = vec![0usize; e];
    for (n, row) in logits.iter().enumerate() {
        if n % seq_len == 0 {
            queue.iter_mut().for_each(|q| *q = 0); // a new sequence: a new routing group
        }
        let score = |i: usize| row[i] + bias[i];
        let mut taken = vec![false; e];
        for c in 0..k {
            // The highest score not yet taken; the lowest index wins ties.
            let mut best = None;
            for i in (0..e).filter(|&i| !taken[i]) {
                if best.is_none_or(|b| score(i) > score(b)) {
                    best = Some(i);
                }
            }
            let best = best.expect("k <= num_experts");
            taken[best] = true;
            r.chosen.push(best as u32);
            r.counts[best] += 1.0;
            if queue[best] < capacity {
                r.kept[best].push((n * k + c) as u32);
            }
            queue[best] += 1;
        }
    }
    r
}

/// The MoE FFN of `x: [N, H]` (`N = B * seq_len`, sequences contiguous). `p` returns the
/// block's tensors by their name after `layers.{i}.`.
pub(crate) fn moe_ffn<'a>(
    config: &ModelConfig,
    x: &Tensor,
    seq_len: usize,
    p: impl Fn(&str) -> &'a Tensor,
) -> Result<MoeOutput> {
    let (e, k) = (config.num_experts, config.experts_per_token);
    let n = x.dim(0)?;
    let capacity = config.expert_capacity_for(seq_len).clamp(1, seq_len);
    let logits = x.matmul(p("moe.router"))?; // [N, E]
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    let probs = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?;

    let host_logits = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let bias = if config.use_lossfreebalance {
        p("moe.router_bias")
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
    } else {
        vec![0.0; e]
    };
    let routing = host_routing(&host_logits, &bias, seq_len, k, capacity);

    let chosen = Tensor::from_vec(routing.chosen.clone(), (n, k), &Device::Cpu)?;
    let gates = probs.gather(&chosen, 1)?; // [N, k]
    let weights = gates.broadcast_div(&gates.sum_keepdim(1)?)?.flatten_all()?; // [N * k]
    let mut y = x.zeros_like()?;
    let (w_gate, w_up, w_down) = (p("moe.w_gate"), p("moe.w_up"), p("moe.w_down"));
    for (expert, pairs) in routing.kept.iter().enumerate() {
        if pairs.is_empty() {
            continue;
        }
        let rows: Vec<u32> = pairs.iter().map(|&j| j / k as u32).collect();
        let rows = Tensor::from_vec(rows, pairs.len(), &Device::Cpu)?;
        let pair_ids = Tensor::from_vec(pairs.clone(), pairs.len(), &Device::Cpu)?;
        let out = gated_mlp(
            config,
            &x.index_select(&rows, 0)?,
            &w_gate.get(expert)?,
            &w_up.get(expert)?,
            &w_down.get(expert)?,
        )?;
        let w = weights.index_select(&pair_ids, 0)?.unsqueeze(1)?;
        y = y.index_add(&rows, &out.broadcast_mul(&w)?, 0)?;
    }
    if config.num_shared_experts > 0 {
        let shared = gated_mlp(
            config,
            x,
            p("moe.shared.w_gate"),
            p("moe.shared.w_up"),
            p("moe.shared.w_down"),
        )?;
        y = (y + shared)?;
    }
    let f: Vec<f64> = routing.counts.iter().map(|c| c / (n * k) as f64).collect();
    let f = Tensor::from_vec(f, e, &Device::Cpu)?.to_dtype(x.dtype())?;
    let aux = ((probs.mean(0)? * f)?.sum_all()? * e as f64)?;
    Ok(MoeOutput {
        y,
        aux,
        loads: routing.counts,
    })
}
