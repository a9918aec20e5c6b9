//! Tests of the reference against hand computations and finite differences.

mod gradcheck;
mod model;
mod naive;
mod optimizer;
mod throughput;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::params::{parameter_specs, standard_normal, Init};
use super::{Batch, ReferenceDtype, ReferenceModel};
use crate::config::ModelConfig;
use crate::engine::HostArray;

/// A tiny model: 2 layers, hidden 32, 4 query heads of width 8, vocab 64, seq 8.
fn tiny_config(kv_heads: usize, tie_embeddings: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        hidden_dim: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: Some(kv_heads),
        mlp_dim: Some(48),
        max_seq_len: 8,
        rope_theta: 100.0,
        tie_embeddings,
        ..ModelConfig::default()
    }
}

/// Seeded parameters far from the init (std 0.4 matrices, norm gains 1 ± 0.3), so that every
/// nonlinearity is exercised, as f64 host arrays.
fn random_host_parameters(config: &ModelConfig, seed: u64) -> BTreeMap<String, HostArray> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    parameter_specs(config)
        .into_iter()
        .map(|spec| {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f64> = (0..n)
                .map(|_| match spec.init {
                    Init::Ones => 1.0 + 0.3 * standard_normal(&mut rng),
                    Init::Normal { .. } => 0.4 * standard_normal(&mut rng),
                })
                .collect();
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
            (spec.name, HostArray::from_slice(&shape, &values).unwrap())
        })
        .collect()
}

/// The parameters as plain f64 vectors, for the loop implementation.
fn host_as_f64(params: &BTreeMap<String, HostArray>) -> BTreeMap<String, Vec<f64>> {
    params
        .iter()
        .map(|(name, a)| (name.clone(), a.to_vec::<f64>().unwrap()))
        .collect()
}

/// Random tokens and targets over the whole vocabulary; the mask zeroes a few positions.
fn random_batch(config: &ModelConfig, batch_size: usize, seq_len: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = batch_size * seq_len;
    let v = config.vocab_size as i32;
    let tokens = (0..n).map(|_| rng.gen_range(0..v)).collect();
    let targets = (0..n).map(|_| rng.gen_range(0..v)).collect();
    let mask = (0..n).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 }).collect();
    Batch::new(tokens, targets, mask, batch_size, seq_len).unwrap()
}

fn model(config: &ModelConfig, seed: u64, dtype: ReferenceDtype) -> ReferenceModel {
    ReferenceModel::from_host_arrays(config, &random_host_parameters(config, seed), dtype).unwrap()
}
