//! The model's parameters: names, shapes, logical axes and initialisation (docs/model.md).

use crate::config::ModelConfig;
use crate::engine::HostArray;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use vishwam_mesh::LogicalAxis as L;

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All ones (norm gains).
    Ones,
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// All zeros (the MoE router bias).
    Zeros,
}

/// One parameter of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Name, e.g. `layers.3.attn.wq`.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Logical axis of each dimension, mapped onto the mesh by the sharding rules.
    pub logical: Vec<L>,
    /// Initialisation.
    pub init: Init,
    /// Whether AdamW applies weight decay to it (matrices except the embedding).
    pub decay: bool,
    /// Whether it is trained by gradient (false: a buffer such as the MoE router bias, kept
    /// in the train state and updated by its own rule, with no gradient or optimizer state).
    pub trainable: bool,
}

impl ParamSpec {
    pub(super) fn new(name: String, shape: &[usize], logical: &[L], init: Init) -> ParamSpec {
        let decay = shape.len() >= 2 && name != "embed.tokens";
        ParamSpec {
            name,
            shape: shape.iter().map(|&d| d as i64).collect(),
            logical: logical.to_vec(),
            init,
            decay,
            trainable: true,
        }
    }

    /// A zero-initialised buffer: part of the model, not trained by gradient.
    pub(super) fn buffer(name: String, shape: &[usize], logical: &[L]) -> ParamSpec {
        ParamSpec {
            decay: false,
            trainable: false,
            ..ParamSpec::new(name, shape, logical, Init::Zeros)
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }
}

/// Every parameter of the model described by `cfg`, in a stable order (sorted by name).
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (h, v, nh, kv, d, f) = (
        cfg.hidden_dim,
        cfg.vocab_size,
        cfg.num_heads,
        cfg.kv_heads(),
        cfg.head_dim(),
        cfg.mlp_dim(),
    );
    let std = cfg.init_std;
    let out_std = std / (2.0 * cfg.num_layers as f64).sqrt();
    // Gains start so that each norm starts as a plain normalisation: 1, or 0 under `1 + gain`.
    let norm = if cfg.norm_offset == 0.0 {
        Init::Ones
    } else {
        Init::Zeros
    };
    let mut specs = vec![
        ParamSpec::new(
            "embed.tokens".into(),
            &[v, h],
            &[L::Vocab, L::Embed],
            Init::Normal(std),
        ),
        ParamSpec::new("final_norm.scale".into(), &[h], &[L::Embed], norm),
    ];
    if !cfg.tie_embeddings {
        specs.push(ParamSpec::new(
            "lm_head".into(),
            &[h, v],
            &[L::Embed, L::Vocab],
            Init::Normal(std),
        ));
    }
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("layers.{i}.{s}");
        specs.extend([
            ParamSpec::new(p("attn_norm.scale"), &[h], &[L::Embed], norm),
            ParamSpec::new(
                p("attn.wq"),
                &[h, nh * d],
                &[L::Embed, L::Heads],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("attn.wk"),
                &[h, kv * d],
                &[L::Embed, L::KvHeads],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("attn.wv"),
                &[h, kv * d],
                &[L::Embed, L::KvHeads],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("attn.wo"),
                &[nh * d, h],
                &[L::Heads, L::Embed],
                Init::Normal(out_std),
            ),
            ParamSpec::new(p("mlp_norm.scale"), &[h], &[L::Embed], norm),
        ]);
        if cfg.post_norms {
            for name in super::forward::POST_NORM_PARAMS {
                specs.push(ParamSpec::new(p(name), &[h], &[L::Embed], norm));
            }
        }
        if cfg.is_moe_layer(i) {
            specs.extend(super::moe::param_specs(cfg, i));
            continue;
        }
        specs.extend([
            ParamSpec::new(
                p("mlp.w_gate"),
                &[h, f],
                &[L::Embed, L::Mlp],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("mlp.w_up"),
                &[h, f],
                &[L::Embed, L::Mlp],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("mlp.w_down"),
                &[f, h],
                &[L::Mlp, L::Embed],
                Init::Normal(out_std),
            ),
        ]);
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

/// Parameter count, and the count without the embedding and an untied head (buffers such as
/// the MoE router bias are not parameters and not counted).
pub fn param_counts(cfg: &ModelConfig) -> (usize, usize) {
    let specs: Vec<ParamSpec> = param_specs(cfg)
        .into_iter()
        .filter(|s| s.trainable)
        .collect();
    let total = specs.iter().map(ParamSpec::numel).sum();
    let embedding: usize = specs
        .iter()
        .filter(|s| s.name == "embed.tokens" || s.name == "lm_head")
        .map(ParamSpec::numel)
        .sum();
    (total, total - embedding)
}

/// Initial f32 parameters. Each parameter has its own random stream seeded by (seed, name),
/// so adding a layer never changes the others.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> BTreeMap<String, HostArray> {
    param_specs(cfg)
        .into_iter()
        .map(|spec| (spec.name.clone(), init_param(&spec, seed)))
        .collect()
}

/// The initial f32 value of one parameter, from its own random stream seeded by
/// (seed, name).
pub fn init_param(spec: &ParamSpec, seed: u64) -> HostArray {
    let n = spec.numel();
    let values: Vec<f32> = match spec.init {
        Init::Ones => vec![1.0; n],
        Init::Zeros => vec![0.0; n],
        Init::Normal(std) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream_seed(seed, &spec.name));
            let normal =
                Normal::new(0.0, std).unwrap_or_else(|_| Normal::new(0.0, 0.02).expect("valid"));
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        }
    };
    HostArray::from_slice(&spec.shape, &values).expect("shape matches count")
}

/// FNV-1a over the seed and the name: a stable per-parameter seed.
fn stream_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_follow_the_contract() {
        let cfg = ModelConfig {
            num_layers: 2,
            tie_embeddings: false,
            ..Default::default()
        };
        let specs = param_specs(&cfg);
        assert_eq!(specs.len(), 3 + 2 * 9);
        let wk = specs.iter().find(|s| s.name == "layers.1.attn.wk").unwrap();
        assert_eq!(
            wk.shape,
            vec![
                cfg.hidden_dim as i64,
                (cfg.kv_heads() * cfg.head_dim()) as i64
            ]
        );
        assert!(wk.decay);
        assert!(
            !specs
                .iter()
                .find(|s| s.name == "embed.tokens")
                .unwrap()
                .decay
        );
        assert!(
            !specs
                .iter()
                .find(|s| s.name == "final_norm.scale")
                .unwrap()
                .decay
        );
        assert!(specs.iter().find(|s| s.name == "lm_head").unwrap().decay);
    }

    #[test]
    fn init_is_deterministic_and_scaled() {
        let cfg = ModelConfig::default();
        let a = init_params(&cfg, 1);
        let b = init_params(&cfg, 1);
        assert_eq!(a, b);
        assert_ne!(
            a["layers.0.attn.wq"],
            init_params(&cfg, 2)["layers.0.attn.wq"]
        );
        let wq = a["layers.0.attn.wq"].to_vec::<f32>().unwrap();
        let std = (wq.iter().map(|v| v * v).sum::<f32>() / wq.len() as f32).sqrt();
        assert!(
            (std - cfg.init_std as f32).abs() < 0.1 * cfg.init_std as f32,
            "{std}"
        );
        let wo = a["layers.0.attn.wo"].to_vec::<f32>().unwrap();
        let std_o = (wo.iter().map(|v| v * v).sum::<f32>() / wo.len() as f32).sqrt();
        assert!(std_o < std * 0.6, "{std_o} vs {std}");
        assert!(a["final_norm.scale"]
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|&v| v == 1.0));
    }
}
