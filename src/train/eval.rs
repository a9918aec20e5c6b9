//! Programs over the parameters alone: evaluation loss and token accuracy, and greedy
//! next-token prediction, both
//! on the model's objective pass ([`crate::model::lm_pass`]).

use super::layout::StepLayout;
use crate::config::Config;
use crate::model::{self, ForwardOptions};
use vishwam_hlo::{DType, Func, Graph, PartitionSpec, Result, TensorMap, TensorType};

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

/// Sum of masked cross-entropy, the token count and the count of correctly predicted tokens
/// (the target's logit the largest, [`model::LmPass::ce_and_correct_sums`]) over one
/// `[micro_batch, seq_len]` batch: the model's objective ([`model::lm_pass`]) with dropout
/// off, its cross-entropy alone as the train step reports it. Outputs `loss_sum`, `tokens`,
/// `correct` (f32 scalars).
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
    let pass = model::lm_pass(&cfg.model, &opts, &params, &tokens, None)?;
    let (loss_sum, correct) = pass.ce_and_correct_sums(&targets, &mask, None);
    g.finish(&[
        ("loss_sum", &loss_sum),
        ("tokens", &mask.sum_all()),
        ("correct", &correct),
    ])
}

/// The greedy next token after `tokens[0, ..length]` for a `[1, seq_len]` window
/// (positions past `length` are ignored by causality): the head of [`model::lm_pass`] at
/// position `length - 1`.
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
    let pass = model::lm_pass(&cfg.model, &opts, &params, &tokens, None)?;
    let zero = length.zeros_like();
    let last = pass
        .hidden
        .dynamic_slice(&[&length - 1i64, zero], &[1, cfg.model.hidden_dim as i64]);
    let next = last
        .matmul(&pass.head)
        .cast(DType::F32)
        .argmax(-1, DType::I32)
        .reshape(&[]);
    g.finish(&[("next", &next)])
}
