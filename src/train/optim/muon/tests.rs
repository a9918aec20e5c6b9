//! Host-side checks of the Muon pieces: which parameters take Muon, the shape factor, the
//! momentum warmup and the flop count (the traced math runs in tests/muon.rs).

use super::*;
use crate::config::{Config, ModelConfig};
use crate::model::{param_counts, param_specs};

fn muon_names(cfg: &ModelConfig) -> Vec<String> {
    param_specs(cfg)
        .into_iter()
        .filter(uses_muon)
        .map(|s| s.name)
        .collect()
}

fn layer_matrices(i: usize, ffn: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = ["attn.wk", "attn.wo", "attn.wq", "attn.wv"]
        .iter()
        .chain(ffn)
        .map(|s| format!("layers.{i}.{s}"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_default_model_gives_muon_exactly_its_block_matrices() {
    let cfg = ModelConfig::default();
    let want: Vec<String> = (0..cfg.num_layers)
        .flat_map(|i| layer_matrices(i, &["mlp.w_down", "mlp.w_gate", "mlp.w_up"]))
        .collect();
    let mut got = muon_names(&cfg);
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    // The tied embedding, the norms: AdamW.
    for spec in param_specs(&cfg) {
        if spec.name == "embed.tokens" || spec.name.ends_with(".scale") {
            assert!(!uses_muon(&spec), "{}", spec.name);
        }
    }
}

#[test]
fn an_untied_head_stays_with_adamw() {
    let cfg = ModelConfig {
        tie_embeddings: false,
        num_layers: 2,
        ..Default::default()
    };
    let specs = param_specs(&cfg);
    let head = specs.iter().find(|s| s.name == "lm_head").expect("untied");
    assert!(!uses_muon(head));
    assert_eq!(muon_names(&cfg).len(), 2 * 7);
}

#[test]
fn moe_experts_take_muon_per_expert_and_routers_and_their_bias_take_adamw() {
    let cfg = ModelConfig {
        num_layers: 2,
        use_moe: true,
        num_experts: 4,
        num_shared_experts: 1,
        use_lossfreebalance: true,
        moe_layer_frequency: 2,
        ..Default::default()
    };
    let specs = param_specs(&cfg);
    let by_name = |n: &str| {
        specs.iter().find(|s| s.name == n).unwrap_or_else(|| {
            panic!(
                "{n} in {:?}",
                specs.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let moe_layer = (0..cfg.num_layers)
        .find(|&i| cfg.is_moe_layer(i))
        .expect("an MoE layer");
    let p = |s: &str| format!("layers.{moe_layer}.{s}");
    for stacked in ["moe.w_gate", "moe.w_up", "moe.w_down"] {
        let spec = by_name(&p(stacked));
        assert_eq!(spec.shape.len(), 3);
        assert!(uses_muon(spec), "{stacked}");
    }
    for shared in ["moe.shared.w_gate", "moe.shared.w_up", "moe.shared.w_down"] {
        assert!(uses_muon(by_name(&p(shared))), "{shared}");
    }
    assert!(!uses_muon(by_name(&p("moe.router"))));
    let bias = by_name(&p("moe.router_bias"));
    assert!(!bias.trainable && !uses_muon(bias));
    // Attention of every layer, the dense MLP of the dense layer.
    let count = muon_names(&cfg).len();
    assert_eq!(count, 2 * 4 + 3 + 6);
}

#[test]
fn distillation_projections_take_adamw() {
    let proj = ParamSpec {
        name: "distill.proj.1".into(),
        shape: vec![256, 512],
        logical: vec![L::Embed, L::Embed],
        init: crate::model::Init::Normal(0.05),
        decay: true,
        trainable: true,
    };
    assert!(!uses_muon(&proj));
}

#[test]
fn the_shape_factor_uses_fan_out_over_fan_in_of_the_in_out_layout() {
    // [in, out] = [256, 1024]: an up projection, fan_out / fan_in = 4.
    assert_eq!(shape_scale(&[256, 1024]), 2.0);
    // A down projection [1024, 256] and square matrices: 1.
    assert_eq!(shape_scale(&[1024, 256]), 1.0);
    assert_eq!(shape_scale(&[64, 64]), 1.0);
    // Expert stacks use their last two dims.
    assert_eq!(shape_scale(&[8, 100, 900]), 3.0);
    assert_eq!(shape_scale(&[7]), 1.0);
}

#[test]
fn momentum_warms_up_linearly_from_0_85_as_blueberry() {
    let training = TrainingConfig {
        muon_momentum: 0.95,
        momentum_warmup_steps: 100,
        ..Default::default()
    };
    let s = MuonSettings::new(&training, ComputeDtype::Bf16);
    assert_eq!(s.ns_dtype, DType::BF16);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(s.momentum_at_step(1), 0.85));
    assert!(close(s.momentum_at_step(51), 0.90));
    assert!(close(s.momentum_at_step(101), 0.95));
    assert!(close(s.momentum_at_step(5000), 0.95));
    let none = MuonSettings {
        momentum_warmup_steps: 0,
        ..s
    };
    assert_eq!(none.momentum_at_step(1), 0.95);
    assert_eq!(ns_dtype(ComputeDtype::F32), DType::F32);
    assert_eq!(ns_dtype(ComputeDtype::F16), DType::F16);
}

#[test]
fn muon_schedule_keeps_the_shape_with_muon_lr_as_its_peak() {
    let training = TrainingConfig {
        learning_rate: 1e-3,
        muon_lr: 0.02,
        ..Default::default()
    };
    let muon = muon_schedule(&training);
    for t in [1, 15, 30, 31, 150, 300] {
        let ratio = crate::train::lr_at(&muon, t) / crate::train::lr_at(&training, t);
        assert!((ratio - 20.0).abs() < 1e-9, "t={t}: {ratio}");
    }
}

/// The figure quoted in the module docs: five NS iterations over the block matrices of the
/// 124M preset against 6 x parameters x tokens of its step.
#[test]
fn newton_schulz_costs_about_a_seventh_of_the_124m_step() {
    let cfg = Config::load(Some(std::path::Path::new("configs/gpu_h100.json")), &[]).unwrap();
    let ns: f64 = param_specs(&cfg.model)
        .iter()
        .filter(|s| uses_muon(s))
        .map(|s| newton_schulz_flops(&s.shape, cfg.training.ns_steps))
        .sum();
    // Per layer: wq, wo [768, 768]; wk, wv [768, 256]; w_gate, w_up [768, 2048];
    // w_down [2048, 768].
    let per = |m: f64, n: f64| 5.0 * (4.0 * m * m * n + 2.0 * m * m * m);
    let hand =
        12.0 * (2.0 * per(768.0, 768.0) + 2.0 * per(256.0, 768.0) + 3.0 * per(768.0, 2048.0));
    assert_eq!(ns, hand);
    assert_eq!(ns, 1_387_140_218_880.0);
    let (params, _) = param_counts(&cfg.model);
    assert_eq!(params, 100_092_672);
    let tokens = (cfg.training.batch_size * cfg.seq_len()) as f64;
    let share = ns / (6.0 * params as f64 * tokens);
    assert!((share - 0.141).abs() < 5e-4, "{share}");
}
