//! Expert utilisation of a model on given tokens, outside training (`vishwam inspect
//! --experts`): the forward pass without dropout or router noise, with the routing
//! statistics of every MoE block as the program's outputs.

use super::layout::{train_forward_options, StepLayout};
use super::moe_state::{moe_layers, MoeMetrics, MoeStepStats};
use super::TrainError;
use crate::config::Config;
use crate::engine::{Engine, HostArray, Input};
use crate::model::{self, ForwardOptions};
use std::collections::BTreeMap;
use vishwam_hlo::{DType, Func, Graph, PartitionSpec, Result, TensorType};
use vishwam_mesh::ShardingPlan;

/// Routing statistics `[counts [L, E], dropped [L], aux [L]]` of one `[micro_batch, seq_len]`
/// batch of tokens, from the parameters (and buffers) of `layout`.
pub fn build_expert_stats(
    cfg: &Config,
    layout: &StepLayout,
    train: &ForwardOptions,
) -> Result<Func> {
    let g = Graph::named("expert_stats");
    let params = layout.param_inputs(&g);
    let spec = PartitionSpec {
        dims: layout.batch_spec.dims.iter().skip(1).cloned().collect(),
    };
    let shape = [layout.micro_batch as i64, layout.seq_len as i64];
    let tokens = g.param_sharded("tokens", TensorType::new(DType::I32, &shape), spec);
    let opts = ForwardOptions {
        dropout: 0.0,
        remat: false,
        ..train.clone()
    };
    let positions = g.iota(&TensorType::new(DType::I32, &[shape[1]]), 0);
    let (_, stats) =
        model::hidden_states_with_moe(&cfg.model, &opts, &params, &tokens, &positions, None)?;
    let stats = MoeStepStats::stack(&stats).ok_or_else(|| vishwam_hlo::HloError::Shape {
        op: "expert statistics".into(),
        detail: "the model has no MoE blocks (model.use_moe is false)".into(),
    })?;
    g.finish(&[
        ("counts", &stats.counts),
        ("dropped", &stats.dropped),
        ("aux", &stats.aux),
    ])
}

/// Utilisation, dropped fraction and aux loss of every MoE block over `batches` (each
/// `micro_batch * seq_len` token ids, row-major), with the model's `params` (names without the
/// `params.` prefix, as [`super::Trainer::params_to_host`] or a checkpoint gives them).
pub fn expert_utilisation(
    engine: &Engine,
    plan: &ShardingPlan,
    cfg: &Config,
    params: &BTreeMap<String, HostArray>,
    batches: &[Vec<i32>],
) -> std::result::Result<MoeMetrics, TrainError> {
    let layout = StepLayout::new(cfg, plan)?;
    let func = build_expert_stats(cfg, &layout, &train_forward_options(cfg, plan))?;
    let program = engine.compile(&func)?;
    let arrays = layout.place_params(engine, params)?;
    let token_spec = &program.params[layout.params.len()].spec;
    let shape = [layout.micro_batch as i64, layout.seq_len as i64];
    let (layers, e) = (moe_layers(&cfg.model).len(), cfg.model.num_experts);
    let mut counts = vec![0f64; layers * e];
    let (mut dropped, mut aux) = (vec![0f64; layers], vec![0f64; layers]);
    for batch in batches {
        let host = HostArray::from_slice(&shape, batch).map_err(|e| {
            TrainError::Other(format!(
                "a batch of {} tokens does not fill [{}, {}]: {e}",
                batch.len(),
                shape[0],
                shape[1]
            ))
        })?;
        let tokens = engine.put(&host, token_spec)?;
        let mut inputs: Vec<Input<'_>> = arrays.iter().map(Input::Keep).collect();
        inputs.push(Input::Keep(&tokens));
        let out = program.run(inputs)?;
        let values = |i: usize| -> std::result::Result<Vec<f32>, TrainError> {
            engine
                .get(&out[i])?
                .to_vec::<f32>()
                .map_err(TrainError::Other)
        };
        let add =
            |acc: &mut [f64], v: Vec<f32>| acc.iter_mut().zip(v).for_each(|(a, x)| *a += x as f64);
        add(&mut counts, values(0)?);
        add(&mut dropped, values(1)?);
        add(&mut aux, values(2)?);
    }
    let n = batches.len().max(1) as f64;
    let pairs = n * (shape[0] * shape[1]) as f64 * cfg.model.experts_per_token as f64;
    let bias_norm = cfg.model.use_lossfreebalance.then(|| {
        moe_layers(&cfg.model)
            .iter()
            .map(|i| {
                params
                    .get(&format!("layers.{i}.moe.router_bias"))
                    .map(|b| b.to_f32().iter().map(|v| v * v).sum::<f32>().sqrt())
                    .unwrap_or(0.0)
            })
            .collect()
    });
    Ok(MoeMetrics {
        layers: moe_layers(&cfg.model),
        utilisation: counts
            .chunks(e.max(1))
            .map(|row| {
                let total: f64 = row.iter().sum::<f64>().max(1.0);
                row.iter().map(|c| (c / total) as f32).collect()
            })
            .collect(),
        dropped_fraction: dropped.iter().map(|d| (d / pairs) as f32).collect(),
        aux_loss: aux.iter().map(|a| (a / n) as f32).collect(),
        bias_norm,
    })
}
