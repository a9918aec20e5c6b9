//! AdamW against a scalar loop; the training driver.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::super::params::standard_normal;
use super::super::{lr_at, train_steps, Gradients, ReferenceAdamW, ReferenceDtype, ReferenceError};
use super::{model, random_batch, tiny_config};
use crate::config::{LrSchedule, TrainingConfig};

fn training(max_grad_norm: f64) -> TrainingConfig {
    TrainingConfig {
        learning_rate: 1e-2,
        min_lr_ratio: 0.1,
        lr_schedule: LrSchedule::Cosine,
        warmup_steps: 2,
        max_steps: 5,
        weight_decay: 0.1,
        adam_beta1: 0.9,
        adam_beta2: 0.95,
        adam_eps: 1e-8,
        max_grad_norm,
        ..TrainingConfig::default()
    }
}

/// docs/model.md's update as a scalar loop over plain vectors.
struct ScalarAdamW {
    theta: BTreeMap<String, Vec<f64>>,
    m: BTreeMap<String, Vec<f64>>,
    v: BTreeMap<String, Vec<f64>>,
}

impl ScalarAdamW {
    fn step(
        &mut self,
        grads: &BTreeMap<String, Vec<f64>>,
        decay: &BTreeMap<String, bool>,
        t: usize,
        c: &TrainingConfig,
    ) {
        let norm = grads.values().flatten().map(|g| g * g).sum::<f64>().sqrt();
        let scale = if c.max_grad_norm > 0.0 {
            (c.max_grad_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let lr = lr_at(t, c);
        for (name, g) in grads {
            let wd = if decay[name] { c.weight_decay } else { 0.0 };
            let (theta, m, v) = (
                self.theta.get_mut(name).unwrap(),
                self.m.get_mut(name).unwrap(),
                self.v.get_mut(name).unwrap(),
            );
            for i in 0..g.len() {
                let g = g[i] * scale;
                m[i] = c.adam_beta1 * m[i] + (1.0 - c.adam_beta1) * g;
                v[i] = c.adam_beta2 * v[i] + (1.0 - c.adam_beta2) * g * g;
                let m_hat = m[i] / (1.0 - c.adam_beta1.powi(t as i32));
                let v_hat = v[i] / (1.0 - c.adam_beta2.powi(t as i32));
                theta[i] -= lr * (m_hat / (v_hat.sqrt() + c.adam_eps) + wd * theta[i]);
            }
        }
    }
}

/// Three steps with seeded gradients, clipped (max_grad_norm 0.5 against norms ~ 20) and
/// unclipped (0 turns clipping off): parameters and moments equal the scalar loop's.
#[test]
fn adamw_matches_a_scalar_loop() {
    for max_grad_norm in [0.5, 0.0] {
        let c = training(max_grad_norm);
        let m = model(&tiny_config(2, false), 21, ReferenceDtype::F64);
        let mut optimizer = ReferenceAdamW::new(&m, &c).unwrap();
        let to_vec = |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let mut scalar = ScalarAdamW {
            theta: m
                .parameters()
                .iter()
                .map(|(n, v)| (n.clone(), to_vec(v.as_tensor())))
                .collect(),
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        };
        for (name, theta) in &scalar.theta {
            scalar.m.insert(name.clone(), vec![0.0; theta.len()]);
            scalar.v.insert(name.clone(), vec![0.0; theta.len()]);
        }
        let decay: BTreeMap<String, bool> = m
            .specs()
            .iter()
            .map(|s| (s.name.clone(), s.decay))
            .collect();
        assert!(decay["lm_head"] && decay["layers.0.attn.wq"]);
        assert!(!decay["embed.tokens"] && !decay["final_norm.scale"]);
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        for t in 1..=3 {
            let grads: BTreeMap<String, Vec<f64>> = m
                .specs()
                .iter()
                .map(|s| {
                    let n: usize = s.shape.iter().product();
                    (
                        s.name.clone(),
                        (0..n).map(|_| standard_normal(&mut rng)).collect(),
                    )
                })
                .collect();
            let tensors = m
                .specs()
                .iter()
                .map(|s| {
                    let t = Tensor::from_slice(&grads[&s.name], s.shape.as_slice(), &Device::Cpu)
                        .unwrap();
                    (s.name.clone(), t)
                })
                .collect();
            let update = optimizer.step(&m, &Gradients(tensors), t).unwrap();
            scalar.step(&grads, &decay, t, &c);
            assert_eq!(update.lr, lr_at(t, &c));
            assert_eq!(update.clip_scale < 1.0, max_grad_norm > 0.0);
            for (name, var) in m.parameters() {
                let pairs = [
                    (to_vec(var.as_tensor()), &scalar.theta[name]),
                    (
                        to_vec(optimizer.first_moment(name).unwrap()),
                        &scalar.m[name],
                    ),
                    (
                        to_vec(optimizer.second_moment(name).unwrap()),
                        &scalar.v[name],
                    ),
                ];
                for (got, want) in pairs {
                    for (g, w) in got.iter().zip(want) {
                        assert!(
                            (g - w).abs() <= 1e-12 * w.abs().max(1e-3),
                            "{name} t={t}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        assert_eq!(optimizer.steps_done(), 3);
    }
}

#[test]
fn adamw_refuses_step_zero_and_foreign_gradients() {
    let m = model(&tiny_config(4, true), 23, ReferenceDtype::F32);
    let mut optimizer = ReferenceAdamW::new(&m, &training(1.0)).unwrap();
    let batch = random_batch(m.config(), 2, 8, 24);
    let (_, grads) = m.loss_and_grads(&batch).unwrap();
    assert!(matches!(
        optimizer.step(&m, &grads, 0),
        Err(ReferenceError::InvalidStep { t: 0 })
    ));
    let mut partial = grads.clone();
    partial.0.remove("final_norm.scale");
    assert!(matches!(
        optimizer.step(&m, &partial, 1),
        Err(ReferenceError::MissingGradient { .. })
    ));
}

/// Repeating one batch, the loss falls; steps continue from the optimizer's count.
#[test]
fn training_driver_lowers_the_loss() {
    let config = tiny_config(2, true);
    let m = super::super::ReferenceModel::init_random(&config, 25, ReferenceDtype::F32).unwrap();
    let c = TrainingConfig {
        warmup_steps: 0,
        max_steps: 10,
        ..training(1.0)
    };
    let mut optimizer = ReferenceAdamW::new(&m, &c).unwrap();
    let batch = random_batch(&config, 2, 8, 26);
    let stats = train_steps(&m, &mut optimizer, std::iter::repeat(batch.clone()), 8).unwrap();
    assert_eq!(stats.len(), 8);
    assert_eq!(
        stats.iter().map(|s| s.step).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert!(stats.iter().all(|s| s.tokens == 16 && s.seconds > 0.0));
    assert!(
        stats[7].loss < stats[0].loss - 0.1,
        "{:?}",
        stats.iter().map(|s| s.loss).collect::<Vec<_>>()
    );
    let more = train_steps(&m, &mut optimizer, vec![batch], 5).unwrap();
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].step, 9);
}
