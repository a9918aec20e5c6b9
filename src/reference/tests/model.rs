//! Forward, loss and mask against the loop implementation; loading and refusals.

use std::collections::BTreeMap;

use super::super::{Batch, ReferenceDtype, ReferenceError, ReferenceModel};
use super::{host_as_f64, model, naive, random_batch, random_host_parameters, tiny_config};
use crate::config::{ModelConfig, RopeScaling, RopeScalingType};
use crate::engine::HostArray;

fn one_layer(kv_heads: usize, tie: bool, scaling: Option<RopeScaling>) -> ModelConfig {
    ModelConfig {
        num_layers: 1,
        rope_scaling: scaling,
        ..tiny_config(kv_heads, tie)
    }
}

fn scaling(kind: RopeScalingType) -> Option<RopeScaling> {
    Some(RopeScaling { kind, factor: 3.0 })
}

/// On one layer the f64 loss equals the loop computation of docs/model.md to rounding, for
/// MHA, GQA and MQA, tied and untied, and each RoPE scaling.
#[test]
fn loss_equals_the_hand_computation_on_one_layer() {
    let cases = [
        (4, true, None),
        (2, false, None),
        (1, true, scaling(RopeScalingType::Linear)),
        (2, true, scaling(RopeScalingType::Ntk)),
        (4, false, scaling(RopeScalingType::Ntk)),
    ];
    for (seed, (kv, tie, rope)) in cases.into_iter().enumerate() {
        let config = one_layer(kv, tie, rope);
        let params = random_host_parameters(&config, seed as u64);
        let m = ReferenceModel::from_host_arrays(&config, &params, ReferenceDtype::F64).unwrap();
        let batch = random_batch(&config, 2, 8, 100 + seed as u64);
        let got = m.loss(&batch).unwrap();
        let want = naive::loss(&config, &host_as_f64(&params), &batch);
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "kv={kv} tie={tie} rope={rope:?}: {got} vs {want}"
        );
    }
}

/// Two layers, f32: logits [B, T, V] agree with the f64 loops to f32 rounding.
#[test]
fn f32_logits_match_the_loops() {
    let config = tiny_config(2, false);
    let params = random_host_parameters(&config, 3);
    let m = ReferenceModel::from_host_arrays(&config, &params, ReferenceDtype::F32).unwrap();
    let batch = random_batch(&config, 2, 8, 4);
    let logits = m.logits(&batch.tokens, 2, 8).unwrap();
    assert_eq!(logits.dims(), &[2, 8, 64]);
    let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let want = naive::logits(&config, &host_as_f64(&params), &batch.tokens, 2, 8);
    let scale = want.iter().fold(0.0_f64, |a, w| a.max(w.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0_f64, |a, (g, w)| a.max((*g as f64 - w).abs()));
    assert!(err <= 1e-5 * scale, "max abs error {err}, scale {scale}");
}

/// Padded positions do not count: the loss is the mean cross-entropy over unmasked
/// positions, and neither it nor any gradient depends on a padded position's target.
#[test]
fn mask_excludes_padded_positions() {
    let config = tiny_config(2, true);
    let m = model(&config, 5, ReferenceDtype::F64);
    let batch = random_batch(&config, 2, 8, 6);
    let logits: Vec<f64> = m
        .logits(&batch.tokens, 2, 8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let ce = naive::cross_entropy(&logits, &batch.targets, 64);
    let kept: Vec<f64> = ce
        .iter()
        .zip(&batch.mask)
        .filter(|(_, &m)| m == 1.0)
        .map(|(ce, _)| *ce)
        .collect();
    assert!(kept.len() < 16, "the batch must have padded positions");
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let (loss, grads) = m.loss_and_grads(&batch).unwrap();
    assert!((loss - mean).abs() <= 1e-13 * mean, "{loss} vs {mean}");

    let mut repadded = batch.clone();
    for (i, target) in repadded.targets.iter_mut().enumerate() {
        if batch.mask[i] == 0.0 {
            *target = if i % 2 == 0 { -1 } else { (*target + 17) % 64 };
        }
    }
    let (loss2, grads2) = m.loss_and_grads(&repadded).unwrap();
    assert_eq!(loss, loss2);
    assert_eq!(grads.to_host().unwrap(), grads2.to_host().unwrap());

    // An all-padding batch has loss 0 (denominator max(0, 1)) and zero gradients.
    let empty = Batch {
        mask: vec![0.0; 16],
        ..batch.clone()
    };
    let (loss, grads) = m.loss_and_grads(&empty).unwrap();
    assert_eq!(loss, 0.0);
    assert_eq!(grads.global_norm().unwrap(), 0.0);
}

#[test]
fn safetensors_round_trip_keeps_the_parameters() {
    let config = tiny_config(1, false);
    let m = model(&config, 8, ReferenceDtype::F32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("params.safetensors");
    m.save_safetensors(&path).unwrap();
    let loaded = ReferenceModel::from_safetensors(&config, &path, ReferenceDtype::F32).unwrap();
    assert_eq!(
        m.parameters_to_host().unwrap(),
        loaded.parameters_to_host().unwrap()
    );
    // The file of a tied model lacks lm_head.
    let tied = tiny_config(1, true);
    let err = ReferenceModel::from_safetensors(&tied, &path, ReferenceDtype::F32).unwrap_err();
    assert!(matches!(err, ReferenceError::UnexpectedParameter { ref name } if name == "lm_head"));
}

#[test]
fn loading_refuses_wrong_sets_shapes_and_dropout() {
    let config = tiny_config(2, true);
    let params = random_host_parameters(&config, 9);
    let load = |p: &BTreeMap<String, HostArray>, c: &ModelConfig| {
        ReferenceModel::from_host_arrays(c, p, ReferenceDtype::F32).unwrap_err()
    };
    let mut missing = params.clone();
    missing.remove("layers.1.mlp.w_up");
    assert!(
        matches!(load(&missing, &config), ReferenceError::MissingParameter { ref name, .. } if name == "layers.1.mlp.w_up")
    );

    let mut wrong = params.clone();
    wrong.insert(
        "layers.0.attn.wk".into(),
        HostArray::from_slice(&[32, 32], &vec![0.5f64; 32 * 32]).unwrap(),
    );
    assert!(
        matches!(load(&wrong, &config), ReferenceError::ShapeMismatch { ref expected, .. } if expected == &vec![32, 16])
    );

    let dropout = ModelConfig {
        dropout_rate: 0.1,
        ..config.clone()
    };
    let err = load(&params, &dropout);
    assert!(matches!(err, ReferenceError::Unsupported { .. }));
    assert!(err.to_string().contains("dropout_rate"), "{err}");
}

#[test]
fn batches_with_bad_ids_or_lengths_are_refused() {
    let config = tiny_config(4, true);
    let m = model(&config, 10, ReferenceDtype::F32);
    let batch = random_batch(&config, 2, 8, 11);
    let mut bad = batch.clone();
    bad.tokens[5] = 64;
    assert!(matches!(
        m.loss(&bad),
        Err(ReferenceError::TokenOutOfRange { position: 5, .. })
    ));
    let mut bad = batch.clone();
    bad.targets[0] = -1; // mask[0] is 1
    assert!(matches!(
        m.loss(&bad),
        Err(ReferenceError::TokenOutOfRange { what: "target", .. })
    ));
    let mut bad = batch.clone();
    bad.mask[1] = f32::NAN;
    assert!(matches!(
        m.loss(&bad),
        Err(ReferenceError::InvalidMask { position: 1, .. })
    ));
    assert!(Batch::new(vec![1; 15], vec![1; 16], vec![1.0; 16], 2, 8).is_err());
    let long = random_batch(&config, 1, 9, 12);
    assert!(matches!(
        m.loss(&long),
        Err(ReferenceError::BatchSize { .. })
    ));
}
