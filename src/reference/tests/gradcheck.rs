//! Candle's gradients against central finite differences, in f64.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::{ReferenceDtype, ReferenceModel};
use super::{model, random_batch, tiny_config};
use crate::config::{ModelConfig, RopeScaling, RopeScalingType};

const STEP: f64 = 1e-5;
const ENTRIES_PER_TENSOR: usize = 12;

/// For a sample of entries of every parameter: max |fd - grad| over the sample divided by
/// the largest |grad| or |fd| in the sample; returns the worst tensor and its error.
fn worst_relative_error(config: &ModelConfig, seed: u64) -> (String, f64) {
    let m: ReferenceModel = model(config, seed, ReferenceDtype::F64);
    let batch = random_batch(config, 2, 8, seed + 1000);
    let (_, grads) = m.loss_and_grads(&batch).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 2000);
    let mut worst = (String::new(), 0.0_f64);
    for (name, var) in m.parameters() {
        let original: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let grad: Vec<f64> = grads
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = original.len();
        let h = config.hidden_dim;
        let mut entries: Vec<usize> = (0..ENTRIES_PER_TENSOR)
            .map(|_| rng.gen_range(0..n))
            .collect();
        if name == "embed.tokens" {
            // Rows of tokens in the batch: the untied embedding is zero elsewhere.
            let rows = batch.tokens.iter().take(ENTRIES_PER_TENSOR);
            entries.extend(rows.map(|&tok| tok as usize * h + rng.gen_range(0..h)));
        }
        let set = |values: &[f64]| {
            let t = Tensor::from_slice(values, var.as_tensor().shape(), var.device()).unwrap();
            var.set(&t).unwrap();
        };
        let (mut max_err, mut scale) = (0.0_f64, 0.0_f64);
        for &i in &entries {
            let mut perturbed = original.clone();
            perturbed[i] = original[i] + STEP;
            set(&perturbed);
            let up = m.loss(&batch).unwrap();
            perturbed[i] = original[i] - STEP;
            set(&perturbed);
            let down = m.loss(&batch).unwrap();
            let fd = (up - down) / (2.0 * STEP);
            max_err = max_err.max((fd - grad[i]).abs());
            scale = scale.max(fd.abs()).max(grad[i].abs());
        }
        set(&original);
        assert!(
            scale > 1e-8,
            "{name}: sampled gradients are all ~0, the check is vacuous"
        );
        let rel = max_err / scale;
        if rel > worst.1 {
            worst = (name.clone(), rel);
        }
    }
    worst
}

fn check(config: ModelConfig, seed: u64) {
    let (name, rel) = worst_relative_error(&config, seed);
    assert!(
        rel < 1e-6,
        "kv_heads={} tied={}: {name} relative error {rel:e}",
        config.kv_heads(),
        config.tie_embeddings
    );
}

#[test]
fn mha_untied_gradients_match_finite_differences() {
    check(tiny_config(4, false), 1);
}

#[test]
fn mha_tied_gradients_match_finite_differences() {
    check(tiny_config(4, true), 2);
}

#[test]
fn gqa_untied_gradients_match_finite_differences() {
    check(tiny_config(2, false), 3);
}

#[test]
fn gqa_tied_gradients_match_finite_differences() {
    check(tiny_config(2, true), 4);
}

#[test]
fn mqa_untied_gradients_match_finite_differences() {
    check(tiny_config(1, false), 5);
}

#[test]
fn mqa_tied_ntk_gradients_match_finite_differences() {
    let config = ModelConfig {
        rope_scaling: Some(RopeScaling {
            kind: RopeScalingType::Ntk,
            factor: 2.0,
        }),
        ..tiny_config(1, true)
    };
    check(config, 6);
}
