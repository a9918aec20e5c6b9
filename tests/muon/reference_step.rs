//! The reference's Muon + AdamW: which parameters take Muon, one step, training through
//! `train_steps`; and the CLI's refusal until the train step runs Muon.

use super::*;

fn tiny_model_config(use_moe: bool, tie_embeddings: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 64,
        hidden_dim: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: Some(2),
        mlp_dim: Some(48),
        max_seq_len: 8,
        tie_embeddings,
        use_moe,
        num_experts: 4,
        experts_per_token: 2,
        moe_layer_frequency: 2,
        num_shared_experts: usize::from(use_moe),
        ..ModelConfig::default()
    }
}

/// The XLA path classifies by logical axes, the reference by docs/model.md's names: the same
/// parameters on dense, MoE, tied and untied models.
#[test]
fn the_reference_and_the_step_give_muon_the_same_parameters() {
    for (moe, tied) in [(false, true), (false, false), (true, true), (true, false)] {
        let cfg = tiny_model_config(moe, tied);
        let ours: Vec<String> = param_specs(&cfg)
            .into_iter()
            .filter(uses_muon)
            .map(|s| s.name)
            .collect();
        let mut theirs: Vec<String> = reference::parameter_specs(&cfg)
            .into_iter()
            .filter(is_muon_parameter)
            .map(|s| s.name)
            .collect();
        theirs.sort();
        assert_eq!(ours, theirs, "moe {moe}, tied {tied}");
        assert!(!ours.is_empty());
    }
}

fn random_batch(cfg: &ModelConfig, seed: u64) -> Batch {
    let mut r = rng(seed);
    let (b, t) = (2, cfg.max_seq_len);
    let ids = |r: &mut rand_chacha::ChaCha8Rng| -> Vec<i32> {
        (0..b * t)
            .map(|_| r.gen_range(0..cfg.vocab_size as i32))
            .collect()
    };
    let tokens = ids(&mut r);
    let targets = ids(&mut r);
    Batch::new(tokens, targets, vec![1.0; b * t], b, t).unwrap()
}

fn muon_training() -> TrainingConfig {
    TrainingConfig {
        optimizer: Optimizer::Muon,
        learning_rate: 1e-2,
        muon_lr: 0.05,
        warmup_steps: 2,
        max_steps: 10,
        momentum_warmup_steps: 3,
        max_grad_norm: 0.5,
        ..TrainingConfig::default()
    }
}

/// One reference Muon step: AdamW parameters move exactly as under ReferenceAdamW (same
/// clip over all gradients, same schedule), Muon matrices by lr_muon x scale x NS of the
/// Nesterov momentum, and their buffers hold (1 - mu) g at step 1.
#[test]
fn the_reference_muon_step_splits_the_parameters_between_muon_and_adamw() {
    let cfg = tiny_model_config(true, false);
    let training = muon_training();
    let muon_model = ReferenceModel::init_random(&cfg, 5, ReferenceDtype::F32).unwrap();
    let adam_model = ReferenceModel::init_random(&cfg, 5, ReferenceDtype::F32).unwrap();
    let before = muon_model.parameters_to_host().unwrap();
    let batch = random_batch(&cfg, 1);
    let (_, grads) = muon_model.loss_and_grads(&batch).unwrap();
    let mut muon = ReferenceMuon::new(&muon_model, &training).unwrap();
    let mut adam = ReferenceAdamW::new(&adam_model, &training).unwrap();
    let update = muon.step(&muon_model, &grads, 1).unwrap();
    let adam_update = adam.step(&adam_model, &grads, 1).unwrap();
    assert_eq!(update.clip_scale, adam_update.clip_scale);
    assert!(update.clip_scale < 1.0, "the test exercises clipping");
    let muon_lr = update.muon_lr.expect("a Muon step reports its rate");
    assert!(
        (muon_lr / update.lr - 5.0).abs() < 1e-12,
        "one schedule, two peaks"
    );
    let mu = 0.85;
    for spec in muon_model.specs() {
        let name = &spec.name;
        let after = muon_model.get_f32(name);
        if !is_muon_parameter(spec) {
            assert_eq!(after, adam_model.get_f32(name), "{name}");
            assert!(muon.momentum_buffer(name).is_none());
            continue;
        }
        let g = grads
            .get(name)
            .unwrap()
            .affine(update.clip_scale, 0.0)
            .unwrap();
        let buffer = g.affine(1.0 - mu, 0.0).unwrap();
        let stored = flat(muon.momentum_buffer(name).unwrap());
        assert!(relative_error(&stored, &flat(&buffer)) < 1e-6, "{name}");
        let nesterov =
            (g.affine(1.0 - mu, 0.0).unwrap() + buffer.affine(mu, 0.0).unwrap()).unwrap();
        let orth = flat(&reference::newton_schulz(&nesterov, 5).unwrap());
        let scale = shape_scale(&spec.shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        let start = before[name].to_vec::<f32>().unwrap();
        let moved: Vec<f64> = start
            .iter()
            .zip(&after)
            .map(|(b, a)| (b - a) as f64)
            .collect();
        let want: Vec<f64> = orth.iter().map(|o| o * muon_lr * scale).collect();
        assert!(relative_error(&moved, &want) < 1e-4, "{name}");
    }
}

trait HostValues {
    fn get_f32(&self, name: &str) -> Vec<f32>;
}

impl HostValues for ReferenceModel {
    fn get_f32(&self, name: &str) -> Vec<f32> {
        self.parameters()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }
}

/// The optimiser a config names trains the reference: Muon lowers the loss on a repeated
/// batch through `train_steps`, and `steps_done` continues.
#[test]
fn the_configured_reference_optimizer_trains_with_muon() {
    let cfg = tiny_model_config(false, true);
    let model = ReferenceModel::init_random(&cfg, 9, ReferenceDtype::F32).unwrap();
    let mut optimizer = ReferenceOptimizer::new(&model, &muon_training()).unwrap();
    assert!(matches!(optimizer, ReferenceOptimizer::Muon(_)));
    let batch = random_batch(&cfg, 2);
    let stats = train_steps(&model, &mut optimizer, std::iter::repeat(batch), 8).unwrap();
    assert_eq!(optimizer.steps_done(), 8);
    let (first, last) = (stats[0].loss, stats[7].loss);
    assert!(last < first - 0.5, "loss {first} -> {last}");
    let adamw = TrainingConfig {
        optimizer: Optimizer::AdamW,
        ..TrainingConfig::default()
    };
    let other = ReferenceOptimizer::new(&model, &adamw).unwrap();
    assert!(matches!(other, ReferenceOptimizer::AdamW(_)));
}

/// A Muon key under AdamW is a configuration error naming both keys.
#[test]
fn the_cli_refuses_a_muon_key_under_adamw() {
    let home = tempfile::tempdir().unwrap();
    let err = failed(vishwam_cli(
        home.path(),
        &["train", "--set", "training.muon_lr=0.05", "--no-progress"],
    ));
    assert!(
        err.contains("`training.muon_lr` = 0.05 contradicts `training.optimizer` = \"adamw\""),
        "{err}"
    );
}
