//! Programs over the parameters alone: evaluation loss and greedy next-token prediction.

use super::layout::StepLayout;
use crate::config::Config;
use crate::model::{self, ForwardOptions};
use vishwam_hlo::{DType, Func, Graph, PartitionSpec, Result, Tensor, TensorMap, TensorType};

fn param_inputs(g: &Graph, layout: &StepLayout) -> TensorMap {
    layout.param_inputs(g)
}

fn eval_options(train: &ForwardOptions) -> ForwardOptions {
    ForwardOptions {
        dropout: 0.0,
        remat: false,
        ..train.clone()
    }
}

/// Sum of masked cross-entropy and the token count over one `[micro_batch, seq_len]` batch.
pub fn build_eval_step(cfg: &Config, layout: &StepLayout, train: &ForwardOptions) -> Result<Func> {
    let g = Graph::named("eval_step");
    let params = param_inputs(&g, layout);
    let spec = PartitionSpec {
        dims: layout.batch_spec.dims.iter().skip(1).cloned().collect(),
    };
    let shape = [layout.micro_batch as i64, layout.seq_len as i64];
    let tokens = g.param_sharded("tokens", TensorType::new(DType::I32, &shape), spec.clone());
    let targets = g.param_sharded("targets", TensorType::new(DType::I32, &shape), spec.clone());
    let mask = g.param_sharded("mask", TensorType::new(DType::F32, &shape), spec);
    let opts = eval_options(train);
    let positions = g.iota(&TensorType::new(DType::I32, &[shape[1]]), 0);
    let h = model::hidden_states(&cfg.model, &opts, &params, &tokens, &positions, None)?;
    let w = model::head_weight(&cfg.model, &params)?.cast(opts.compute);
    let n = shape[0] * shape[1];
    let chunk = model::default_chunk(n as usize, cfg.model.vocab_size);
    let loss_sum = model::masked_ce_sum(
        &h.reshape(&[n, cfg.model.hidden_dim as i64]),
        &w,
        &targets.reshape(&[n]),
        &mask.reshape(&[n]),
        chunk,
        opts.head_fp8,
        opts.row_stats,
    );
    g.finish(&[("loss_sum", &loss_sum), ("tokens", &mask.sum_all())])
}

/// The greedy next token after `tokens[0, ..length]` for a `[1, seq_len]` window
/// (positions past `length` are ignored by causality).
pub fn build_next_token(cfg: &Config, layout: &StepLayout, train: &ForwardOptions) -> Result<Func> {
    let g = Graph::named("next_token");
    let params = param_inputs(&g, layout);
    let t = layout.seq_len as i64;
    let tokens = g.param("tokens", TensorType::new(DType::I32, &[1, t]));
    let length = g.param("length", TensorType::new(DType::I32, &[]));
    let opts = ForwardOptions {
        residual_spec: None,
        ..eval_options(train)
    };
    let positions = g.iota(&TensorType::new(DType::I32, &[t]), 0);
    let h = model::hidden_states(&cfg.model, &opts, &params, &tokens, &positions, None)?;
    let last: Tensor = {
        let zero = length.zeros_like();
        h.dynamic_slice(
            &[zero.clone(), &length - 1i64, zero],
            &[1, 1, cfg.model.hidden_dim as i64],
        )
        .reshape(&[1, cfg.model.hidden_dim as i64])
    };
    let w = model::head_weight(&cfg.model, &params)?.cast(opts.compute);
    let next = last
        .matmul(&w)
        .cast(DType::F32)
        .argmax(-1, DType::I32)
        .reshape(&[]);
    g.finish(&[("next", &next)])
}
