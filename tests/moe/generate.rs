//! Generation with the KV cache on an MoE model (router bias in use) against the training
//! side's greedy decoding, which recomputes the whole window per token.

use super::{tiny, trainer1};
use rand::{Rng, SeedableRng};
use vishwam::engine::Engine;
use vishwam::generate::{LoadedModel, SamplingOptions};
use vishwam_mesh::Mesh;

#[test]
fn kv_cache_generation_equals_greedy_over_the_window() {
    // Capacity 4.0 clamps to the whole window: the window forward drops nothing either, so
    // both sides route every pair (generation never drops; see src/model/decode.rs).
    let cfg = tiny(&[
        "model.use_lossfreebalance=true",
        "model.lossfree_update_rate=0.05",
        "model.capacity_factor=4.0",
        "model.num_shared_experts=1",
        "model.init_std=0.1",
    ]);
    // Weights large enough for varied greedy tokens, and a non-zero selection bias.
    let mut trainer = trainer1(&cfg);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut state = trainer.state_to_host().unwrap();
    for (name, array) in state.iter_mut() {
        if name.starts_with("params.") && !name.ends_with("scale") {
            let v: Vec<f32> = array
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| {
                    if name.ends_with("router_bias") {
                        rng.gen_range(-0.5..0.5)
                    } else {
                        4.0 * x
                    }
                })
                .collect();
            *array = vishwam::engine::HostArray::from_slice(&array.shape, &v).unwrap();
        }
    }
    trainer.load_state(&state).unwrap();
    let params = trainer.params_to_host().unwrap();
    let engine = Engine::new(super::client().clone(), Mesh::single(), super::cache()).unwrap();
    let mut model = LoadedModel::new(cfg.clone(), &params, engine).unwrap();
    // Different lengths: the shorter rows are left-padded in the cache.
    let prompts: Vec<Vec<i32>> = [7usize, 1, 4]
        .iter()
        .map(|&n| (0..n).map(|_| rng.gen_range(0..64)).collect())
        .collect();
    let options = SamplingOptions {
        max_length: 6,
        greedy: true,
        ..SamplingOptions::default()
    };
    let got = model.generate(&prompts, &options).unwrap();
    let distinct: std::collections::BTreeSet<i32> = got.iter().flatten().copied().collect();
    assert!(distinct.len() > 4, "greedy tokens should vary: {got:?}");
    // Two programs: equal up to a near-tie of two candidates (see `common::GREEDY_TIE`).
    for (prompt, tokens) in prompts.iter().zip(&got) {
        let want = trainer.greedy(prompt, 6).unwrap();
        super::common::assert_same_greedy(
            &format!("prompt {prompt:?}"),
            prompt,
            tokens,
            &want,
            |prefix| model.next_token_logits(&[prefix.to_vec()]).unwrap()[0].clone(),
        );
    }
    println!("MoE generation with the KV cache: {got:?}");
}
