//! Routing against a host reference (queue positions, capacity, dropping), and the
//! dispatch/combine custom VJPs against a dense masked formulation differentiated by autodiff.

use super::{rel_err, run_func};
use rand::{Rng, SeedableRng};
use vishwam::config::ModelConfig;
use vishwam::engine::HostArray;
use vishwam::model::{moe_ffn, route, ForwardOptions, MoeParams};
use vishwam_hlo::{nn, DType, DotDims, Graph, Tensor, TensorType};

/// What the host reference computes for one batch of logits.
struct HostRouting {
    experts: Vec<i32>,
    weights: Vec<f32>,
    slot_of_pair: Vec<i32>,
    pair_of_slot: Vec<i32>,
    counts: Vec<f32>,
    dropped: f32,
}

/// Top-k of `logits + bias` (first index wins ties), softmax weights renormalised over the
/// choices, token-major queues of `capacity` per expert per sequence.
fn host_route(logits: &[f32], bias: &[f32], dims: [usize; 3], k: usize, cap: usize) -> HostRouting {
    let [b, t, e] = dims;
    let slots = e * cap;
    let mut r = HostRouting {
        experts: vec![],
        weights: vec![],
        slot_of_pair: vec![],
        pair_of_slot: vec![-1; b * slots],
        counts: vec![0.0; e],
        dropped: 0.0,
    };
    for bi in 0..b {
        let mut queue = vec![0usize; e];
        for ti in 0..t {
            let row = &logits[(bi * t + ti) * e..][..e];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let probs: Vec<f32> = row.iter().map(|v| (v - max).exp() / z).collect();
            let mut taken = vec![false; e];
            let mut chosen = vec![];
            for _ in 0..k {
                let best = (0..e)
                    .filter(|&i| !taken[i])
                    .fold(None, |best: Option<usize>, i| match best {
                        Some(j) if row[j] + bias[j] >= row[i] + bias[i] => Some(j),
                        _ => Some(i),
                    })
                    .unwrap();
                taken[best] = true;
                chosen.push(best);
            }
            let total: f32 = chosen.iter().map(|&i| probs[i]).sum();
            for (c, &ex) in chosen.iter().enumerate() {
                r.experts.push(ex as i32);
                r.weights.push(probs[ex] / total);
                r.counts[ex] += 1.0;
                let pos = queue[ex];
                queue[ex] += 1;
                if pos < cap {
                    let slot = ex * cap + pos;
                    r.slot_of_pair.push(slot as i32);
                    r.pair_of_slot[bi * slots + slot] = (ti * k + c) as i32;
                } else {
                    r.slot_of_pair.push(slots as i32);
                    r.dropped += 1.0;
                }
            }
        }
    }
    r
}

fn check_routing(logits: &[f32], bias: &[f32], dims: [usize; 3], k: usize, cap: usize) -> f32 {
    let [b, t, e] = dims;
    let g = Graph::named("route");
    let l = g.param(
        "logits",
        TensorType::new(DType::F32, &[b as i64, t as i64, e as i64]),
    );
    let bs = g.param("bias", TensorType::new(DType::F32, &[e as i64]));
    let r = route(&l, Some(&bs), k, cap);
    let func = g
        .finish(&[
            ("experts", &r.experts),
            ("weights", &r.weights),
            ("slot_of_pair", &r.slot_of_pair),
            ("pair_of_slot", &r.pair_of_slot),
            ("counts", &r.counts),
            ("dropped", &r.dropped),
        ])
        .unwrap();
    let out = run_func(
        &func,
        &[
            HostArray::from_slice(&[b as i64, t as i64, e as i64], logits).unwrap(),
            HostArray::from_slice(&[e as i64], bias).unwrap(),
        ],
    );
    let want = host_route(logits, bias, dims, k, cap);
    assert_eq!(out[0].to_vec::<i32>().unwrap(), want.experts, "experts");
    assert!(rel_err(&out[1].to_vec::<f32>().unwrap(), &want.weights) < 1e-6);
    assert_eq!(out[2].to_vec::<i32>().unwrap(), want.slot_of_pair, "slots");
    assert_eq!(out[3].to_vec::<i32>().unwrap(), want.pair_of_slot, "pairs");
    assert_eq!(out[4].to_vec::<f32>().unwrap(), want.counts, "counts");
    let dropped = out[5].to_vec::<f32>().unwrap()[0];
    assert_eq!(dropped, want.dropped, "dropped");
    dropped
}

#[test]
fn routing_matches_the_host_reference_and_counts_overflow() {
    // Random logits and selection bias, 2 of 4 experts, 3 slots per expert for 8 tokens:
    // 16 pairs compete for 12 slots per sequence, so at least 4 per sequence are dropped.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let dims = [3, 8, 4];
    let logits: Vec<f32> = (0..96).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let bias: Vec<f32> = (0..4).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let dropped = check_routing(&logits, &bias, dims, 2, 3);
    println!("random routing: {dropped} of 48 pairs dropped");
    assert!(dropped >= 12.0);

    // Crafted: every token prefers expert 1, top-1, capacity 2: tokens 0 and 1 of each
    // sequence are kept in slots 2 and 3 (expert 1's queue), the other 6 are dropped.
    let dims = [2, 8, 4];
    let logits: Vec<f32> = (0..64)
        .map(|i| {
            if i % 4 == 1 {
                3.0
            } else {
                rng.gen_range(-1.0..1.0)
            }
        })
        .collect();
    let dropped = check_routing(&logits, &[0.0; 4], dims, 1, 2);
    assert_eq!(dropped, 12.0);
    // The bias alone can move the choice: +10 on expert 3 sends every token there.
    let dropped = check_routing(&logits, &[0.0, 0.0, 0.0, 10.0], dims, 1, 2);
    assert_eq!(dropped, 12.0);
    let none_dropped = check_routing(&logits, &[0.0; 4], dims, 1, 8);
    assert_eq!(none_dropped, 0.0);
}

/// The MoE layer written without dispatch or combine: every expert on every token, masked
/// by the same routing (kept choices only), differentiated by plain autodiff.
fn dense_masked_moe(cfg: &ModelConfig, x: &Tensor, p: &MoeParams) -> Tensor {
    let (e, k) = (cfg.num_experts as i64, cfg.experts_per_token);
    let t = x.shape()[1] as usize;
    let cap = vishwam::model::moe_capacity(cfg, t);
    let logits = x.matmul(&p.router);
    let r = route(&logits, p.router_bias.as_ref(), k, cap);
    let kept = r
        .slot_of_pair
        .lt(e * cap as i64)
        .reshape(r.weights.shape())
        .select(&r.weights, 0.0);
    let mix = (r.experts.one_hot(e, DType::F32) * kept.expand_dims(-1)).sum(&[2], false); // [B,T,E]
    let dims = |lb: Vec<usize>, rb: Vec<usize>, lc: usize, rc: usize| DotDims {
        lhs_batch: lb,
        rhs_batch: rb,
        lhs_contract: vec![lc],
        rhs_contract: vec![rc],
    };
    let gate = x.dot_general(&p.w_gate, dims(vec![], vec![], 2, 1)); // [B,T,E,Fe]
    let up = x.dot_general(&p.w_up, dims(vec![], vec![], 2, 1));
    let ys = (nn::silu(&gate) * up).dot_general(&p.w_down, dims(vec![2], vec![0], 3, 1)); // [E,B,T,H]
    let mut y = (ys * mix.transpose(&[2, 0, 1]).expand_dims(-1)).sum(&[0], false);
    if let Some([wg, wu, wd]) = &p.shared {
        y = y + (nn::silu(&x.matmul(wg)) * x.matmul(wu)).matmul(wd);
    }
    y
}

#[test]
fn dispatch_and_combine_gradients_match_a_dense_masked_formulation() {
    let cfg = ModelConfig {
        hidden_dim: 8,
        num_experts: 4,
        experts_per_token: 2,
        expert_dim: Some(6),
        capacity_factor: Some(0.5),
        use_moe: true,
        use_lossfreebalance: true,
        num_shared_experts: 1,
        ..ModelConfig::default()
    };
    let (b, t, h, e, fe) = (2i64, 8i64, 8i64, 4i64, 6i64);
    let shapes: [(&str, Vec<i64>); 9] = [
        ("x", vec![b, t, h]),
        ("probe", vec![b, t, h]),
        ("router", vec![h, e]),
        ("router_bias", vec![e]),
        ("w_gate", vec![e, h, fe]),
        ("w_up", vec![e, h, fe]),
        ("w_down", vec![e, fe, h]),
        ("shared.w_gate", vec![h, fe]),
        ("shared.w_up", vec![h, fe]),
    ];
    let shapes: Vec<(&str, Vec<i64>)> = shapes
        .into_iter()
        .chain([("shared.w_down", vec![fe, h])])
        .collect();
    let g = Graph::named("moe_grads");
    let xs: Vec<Tensor> = shapes
        .iter()
        .map(|(n, s)| g.param(n, TensorType::new(DType::F32, s)))
        .collect();
    let mut layer = vec![xs[2].clone(), xs[3].clone()];
    layer.extend(xs[4..].iter().cloned());
    let p = MoeParams::from_slice(&cfg, &layer);
    let (y, _) = moe_ffn(&cfg, &ForwardOptions::eval(), &xs[0], &p, None);
    let y_ref = dense_masked_moe(&cfg, &xs[0], &p);
    let wrt: Vec<Tensor> = std::iter::once(xs[0].clone())
        .chain(xs[2..3].iter().cloned())
        .chain(xs[4..].iter().cloned())
        .collect();
    let grads = g.grad(&(&y * &xs[1]).sum_all(), &wrt).unwrap();
    let grads_ref = g.grad(&(&y_ref * &xs[1]).sum_all(), &wrt).unwrap();
    let mut outs: Vec<(String, Tensor)> = vec![("y".into(), y), ("y_ref".into(), y_ref)];
    for (i, (a, r)) in grads.into_iter().zip(grads_ref).enumerate() {
        outs.push((format!("grad{i}"), a));
        outs.push((format!("grad{i}_ref"), r));
    }
    let refs: Vec<(&str, &Tensor)> = outs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let func = g.finish(&refs).unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let inputs: Vec<HostArray> = shapes
        .iter()
        .map(|(_, s)| {
            let n = s.iter().product::<i64>() as usize;
            let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            HostArray::from_slice(s, &v).unwrap()
        })
        .collect();
    let out = run_func(&func, &inputs);
    let names = ["y", "x", "router", "w_gate", "w_up", "w_down", "shared"];
    for (i, pair) in out.chunks(2).enumerate() {
        let (a, r) = (
            pair[0].to_vec::<f32>().unwrap(),
            pair[1].to_vec::<f32>().unwrap(),
        );
        assert!(
            r.iter().any(|v| v.abs() > 1e-3),
            "{i}: reference is all zeros"
        );
        let err = rel_err(&a, &r);
        let name = names.get(i).copied().unwrap_or("shared");
        assert!(err < 1e-5, "{name} (output {i}): relative error {err:e}");
    }
}
