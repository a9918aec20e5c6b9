//! The Mixture-of-Experts feed-forward layer (docs/model.md, "Mixture of Experts"): router,
//! top-k with renormalised weights, capacity-based dispatch, batched SwiGLU experts sharded
//! over the `expert` mesh axis, combine, optional shared experts.

use super::forward::{ForwardOptions, RngStream};
use super::moe_routing::{combine, dispatch, route};
use super::params::{Init, ParamSpec};
use crate::config::ModelConfig;
use vishwam_hlo::{nn, DType, DotDims, Tensor};
use vishwam_mesh::LogicalAxis as L;

/// Parameter names of an MoE block's feed-forward part, relative to `layers.{i}.`, in the
/// order [`MoeParams::from_slice`] takes them.
pub fn param_names(cfg: &ModelConfig) -> Vec<&'static str> {
    let mut names = vec!["moe.router"];
    if cfg.use_lossfreebalance {
        names.push("moe.router_bias");
    }
    names.extend(["moe.w_gate", "moe.w_up", "moe.w_down"]);
    if cfg.num_shared_experts > 0 {
        names.extend(["moe.shared.w_gate", "moe.shared.w_up", "moe.shared.w_down"]);
    }
    names
}

/// The specs of layer `i`'s MoE parameters (its dense `mlp.*` weights are absent).
pub fn param_specs(cfg: &ModelConfig, i: usize) -> Vec<ParamSpec> {
    let (h, e, fe) = (cfg.hidden_dim, cfg.num_experts, cfg.expert_dim());
    let std = cfg.init_std;
    let out_std = std / (2.0 * cfg.num_layers as f64).sqrt();
    let p = |s: &str| format!("layers.{i}.{s}");
    let mut specs = vec![
        ParamSpec::new(
            p("moe.router"),
            &[h, e],
            &[L::Embed, L::Expert],
            Init::Normal(std),
        ),
        ParamSpec::new(
            p("moe.w_gate"),
            &[e, h, fe],
            &[L::Expert, L::Embed, L::Mlp],
            Init::Normal(std),
        ),
        ParamSpec::new(
            p("moe.w_up"),
            &[e, h, fe],
            &[L::Expert, L::Embed, L::Mlp],
            Init::Normal(std),
        ),
        ParamSpec::new(
            p("moe.w_down"),
            &[e, fe, h],
            &[L::Expert, L::Mlp, L::Embed],
            Init::Normal(out_std),
        ),
    ];
    if cfg.use_lossfreebalance {
        specs.push(ParamSpec::buffer(p("moe.router_bias"), &[e], &[L::Expert]));
    }
    if cfg.num_shared_experts > 0 {
        let fs = cfg.num_shared_experts * fe;
        specs.extend([
            ParamSpec::new(
                p("moe.shared.w_gate"),
                &[h, fs],
                &[L::Embed, L::Mlp],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("moe.shared.w_up"),
                &[h, fs],
                &[L::Embed, L::Mlp],
                Init::Normal(std),
            ),
            ParamSpec::new(
                p("moe.shared.w_down"),
                &[fs, h],
                &[L::Mlp, L::Embed],
                Init::Normal(out_std),
            ),
        ]);
    }
    specs
}

/// One MoE layer's parameters as traced tensors.
pub struct MoeParams {
    /// `[H, E]` router.
    pub router: Tensor,
    /// `[E]` loss-free balancing bias (selection only), when enabled.
    pub router_bias: Option<Tensor>,
    /// `[E, H, Fe]`.
    pub w_gate: Tensor,
    /// `[E, H, Fe]`.
    pub w_up: Tensor,
    /// `[E, Fe, H]`.
    pub w_down: Tensor,
    /// Shared experts `(w_gate [H, S·Fe], w_up [H, S·Fe], w_down [S·Fe, H])`, when any.
    pub shared: Option<[Tensor; 3]>,
}

impl MoeParams {
    /// From tensors in [`param_names`] order.
    pub fn from_slice(cfg: &ModelConfig, p: &[Tensor]) -> MoeParams {
        let mut it = p.iter().cloned();
        let mut next = || it.next().expect("one tensor per MoE parameter name");
        let router = next();
        let router_bias = cfg.use_lossfreebalance.then(&mut next);
        let (w_gate, w_up, w_down) = (next(), next(), next());
        let shared = (cfg.num_shared_experts > 0).then(|| [next(), next(), next()]);
        MoeParams {
            router,
            router_bias,
            w_gate,
            w_up,
            w_down,
            shared,
        }
    }
}

/// What one MoE layer reports about its routing (all f32).
#[derive(Clone)]
pub struct MoeStats {
    /// Load-balancing loss `E * sum_e f_e * p_e` (1 at perfect balance); differentiable.
    pub aux_loss: Tensor,
    /// (token, choice) pairs routed to each expert, before dropping: `[E]`.
    pub counts: Tensor,
    /// Pairs dropped because the expert's queue was full: `[]`.
    pub dropped: Tensor,
}
vishwam_hlo::tree_struct!(MoeStats {
    aux_loss,
    counts,
    dropped
});

/// Slots per expert per routing group of `tokens` tokens: the configured capacity, at most
/// `tokens` (no expert can receive more pairs than there are tokens).
pub fn capacity(cfg: &ModelConfig, tokens: usize) -> usize {
    cfg.expert_capacity_for(tokens).clamp(1, tokens.max(1))
}

/// The MoE feed-forward of normalised `x: [B, T, H]` (compute dtype). `rng`, given in
/// training, adds `router_noise` Gaussian noise to the router logits.
pub fn moe_ffn(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    x: &Tensor,
    p: &MoeParams,
    rng: Option<&mut RngStream>,
) -> (Tensor, MoeStats) {
    let c = opts.compute;
    let (b, t, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (e, k) = (cfg.num_experts as i64, cfg.experts_per_token);
    let constrain = |v: Tensor, logical: &[L]| constrain(opts, v, logical);

    // Router logits in f32 from compute-dtype operands (f32 accumulation): an f32 copy of
    // `x` would cost a [B, T, H] round trip through memory in each direction.
    let to_logits = DotDims {
        lhs_contract: vec![2],
        rhs_contract: vec![0],
        ..Default::default()
    };
    let mut logits = x.dot_general_to(&p.router.cast(x.dtype()), to_logits, DType::F32); // [B, T, E]
    if let Some(rng) = rng.filter(|_| cfg.router_noise > 0.0) {
        logits = logits + standard_normal(rng, &[b, t, e]) * cfg.router_noise;
    }
    let logits = constrain(logits, &[L::Batch, L::Length, L::Expert]);
    let cap = capacity(cfg, t as usize) as i64;
    let bias = p.router_bias.as_ref().map(|b| b.cast(DType::F32));
    let routing = route(&logits, bias.as_ref(), k, cap as usize);

    // [B, E*C, H] -> [E, B, C, H]: the reshard from batch-split to expert-split is the
    // all-to-all of expert parallelism.
    let buf = dispatch(x, &routing, k).reshape(&[b, e, cap, h]);
    let buf = constrain(buf, &[L::Batch, L::Expert, L::Length, L::Embed]).transpose(&[1, 0, 2, 3]);
    let buf = constrain(buf, &[L::Expert, L::Batch, L::Length, L::Embed]);
    let per_expert = DotDims {
        lhs_batch: vec![0],
        rhs_batch: vec![0],
        lhs_contract: vec![3],
        rhs_contract: vec![1],
    };
    let hidden_axes = [L::Expert, L::Batch, L::Length, L::Mlp];
    let gate = constrain(
        buf.dot_general(&p.w_gate.cast(c), per_expert.clone()),
        &hidden_axes,
    );
    let up = constrain(
        buf.dot_general(&p.w_up.cast(c), per_expert.clone()),
        &hidden_axes,
    );
    let out = (super::forward::gate_activation(cfg, &gate) * up)
        .dot_general(&p.w_down.cast(c), per_expert); // [E,B,C,H]
    let out = constrain(out, &[L::Expert, L::Batch, L::Length, L::Embed]).transpose(&[1, 0, 2, 3]);
    let out = constrain(out, &[L::Batch, L::Expert, L::Length, L::Embed]).reshape(&[b, e * cap, h]);
    let mut y = combine(&out, &routing, k);
    if let Some([wg, wu, wd]) = &p.shared {
        let shared = (super::forward::gate_activation(cfg, &x.matmul(&wg.cast(c)))
            * x.matmul(&wu.cast(c)))
        .matmul(&wd.cast(c));
        y = y + shared;
    }
    let pairs = (b * t * k as i64) as f64;
    let aux_loss = (&routing.counts / pairs * &routing.mean_probs).sum_all() * e as f64;
    let stats = MoeStats {
        aux_loss,
        counts: routing.counts,
        dropped: routing.dropped,
    };
    (y, stats)
}

/// `v` under a sharding constraint from the plan's activation rules, when there is a plan
/// and the rules split it.
fn constrain(opts: &ForwardOptions, v: Tensor, logical: &[L]) -> Tensor {
    let spec = opts
        .moe_sharding
        .as_ref()
        .and_then(|plan| plan.activation_spec(logical, v.shape()).ok())
        .map(|r| r.spec);
    match spec {
        Some(spec) if !spec.is_replicated() => v.sharding_constraint(spec),
        _ => v,
    }
}

/// Standard normal samples of `shape` (Box-Muller), advancing `rng`.
fn standard_normal(rng: &mut RngStream, shape: &[i64]) -> Tensor {
    let mut both = vec![2];
    both.extend_from_slice(shape);
    let u = nn::uniform_from_bits(&rng.bits(&both), DType::F32);
    let u1 = u.slice_axis(0, 0, 1).reshape(shape);
    let u2 = u.slice_axis(0, 1, 2).reshape(shape);
    let radius = ((1.0 - u1).log() * -2.0).sqrt();
    radius * (u2 * std::f64::consts::TAU).cos()
}

#[cfg(test)]
mod tests {
    use super::super::params::{param_counts, param_specs};
    use super::*;

    #[test]
    fn moe_blocks_replace_the_mlp_and_shard_experts() {
        let cfg = ModelConfig {
            num_layers: 4,
            use_moe: true,
            moe_layer_frequency: 2,
            num_experts: 8,
            expert_dim: Some(96),
            num_shared_experts: 2,
            use_lossfreebalance: true,
            ..ModelConfig::default()
        };
        let specs = param_specs(&cfg);
        let find = |n: &str| specs.iter().find(|s| s.name == n);
        // Blocks 1 and 3 are MoE; 0 and 2 keep their dense MLP.
        assert!(find("layers.0.mlp.w_gate").is_some() && find("layers.0.moe.router").is_none());
        assert!(find("layers.1.mlp.w_gate").is_none() && find("layers.1.mlp_norm.scale").is_some());
        let h = cfg.hidden_dim as i64;
        let w_down = find("layers.3.moe.w_down").unwrap();
        assert_eq!(w_down.shape, vec![8, 96, h]);
        assert_eq!(w_down.logical, vec![L::Expert, L::Mlp, L::Embed]);
        assert!(w_down.decay && w_down.trainable);
        assert_eq!(
            find("layers.1.moe.shared.w_up").unwrap().shape,
            vec![h, 192]
        );
        let bias = find("layers.1.moe.router_bias").unwrap();
        assert_eq!(
            (bias.init, bias.trainable, bias.decay),
            (Init::Zeros, false, false)
        );
        assert_eq!(
            param_names(&cfg).len(),
            specs
                .iter()
                .filter(|s| s.name.starts_with("layers.1.moe."))
                .count()
        );
        // Buffers are not parameters.
        let all: usize = specs.iter().map(ParamSpec::numel).sum();
        assert_eq!(param_counts(&cfg).0, all - 2 * 8);
    }

    #[test]
    fn capacity_is_clamped_to_the_group() {
        let cfg = ModelConfig {
            num_experts: 4,
            experts_per_token: 2,
            ..ModelConfig::default()
        };
        assert_eq!(capacity(&cfg, 16), 10); // ceil(1.25 * 16 * 2 / 4)
        let one = ModelConfig {
            num_experts: 1,
            experts_per_token: 1,
            ..cfg.clone()
        };
        assert_eq!(capacity(&one, 16), 16); // ceil(1.25 * 16) = 20 slots could never fill
        let fixed = ModelConfig {
            expert_capacity: Some(3),
            ..cfg
        };
        assert_eq!(capacity(&fixed, 16), 3);
    }
}
