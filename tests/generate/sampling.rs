//! The traced top-k/top-p filter and the draw, on crafted inputs.

use super::engine;
use vishwam::engine::Engine;
use vishwam::generate::Bisection;

/// Host reference of top-k then top-p (ties with a threshold kept), by sorting; `None` when
/// a cumulative mass lies within rounding of the top-p target (f32 and f64 may disagree).
fn reference_keep(p: &[f32], top_k: usize, top_p: f32) -> Option<Vec<bool>> {
    let mut sorted: Vec<f32> = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let t_k = if top_k > 0 && top_k < p.len() {
        sorted[top_k - 1]
    } else {
        0.0
    };
    let kept: Vec<f32> = sorted.iter().copied().filter(|&x| x >= t_k).collect();
    let z: f64 = kept.iter().map(|&x| x as f64).sum();
    let mut t_p = 0.0;
    if top_p < 1.0 {
        let mut mass = 0.0;
        let target = top_p as f64 * z;
        for &x in &kept {
            mass += x as f64;
            t_p = x;
            if (mass - target).abs() < 1e-6 && mass != target {
                return None;
            }
            if mass >= target {
                break;
            }
        }
    }
    Some(p.iter().map(|&x| x >= t_k.max(t_p)).collect())
}

fn run(
    engine: &Engine,
    program: &vishwam::engine::Program,
    inputs: &[vishwam::engine::HostArray],
) -> Vec<vishwam::engine::HostArray> {
    use vishwam::engine::Input;
    let arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &Default::default()).unwrap())
        .collect();
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    out.iter().map(|a| engine.get(a).unwrap()).collect()
}

#[test]
fn the_traced_top_k_top_p_filter_matches_a_sorting_reference() {
    use vishwam::engine::HostArray;
    use vishwam_hlo::{DType, Graph, TensorType};
    let rows: Vec<Vec<f32>> = vec![
        [1.0, 6.0, 2.0, 4.0, 3.0, 0.5, 1.5, 2.0]
            .iter()
            .map(|x| x / 20.0)
            .collect(),
        vec![
            0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0078125,
        ],
        vec![0.125; 8],
    ];
    // Both ways of tracing the bisections (loops on CPUs, unrolled on GPUs) must keep the
    // same tokens.
    for bisection in [Bisection::Loop, Bisection::Unrolled] {
        let g = Graph::named("filter");
        let probs = g.param("probs", TensorType::new(DType::F32, &[3, 8]));
        let top_k = g.param("top_k", TensorType::new(DType::I32, &[]));
        let top_p = g.param("top_p", TensorType::new(DType::F32, &[]));
        let keep =
            vishwam::generate::keep_mask(&probs, Some(&top_k), Some(&top_p), bisection).unwrap();
        let func = g.finish(&[("keep", &keep)]).unwrap();
        let engine = engine();
        let program = engine.compile(&func).unwrap();
        let flat: Vec<f32> = rows.concat();
        let probs = HostArray::from_slice(&[3, 8], &flat).unwrap();
        let mut checked = 0;
        for k in [0usize, 1, 2, 3, 4, 5, 8] {
            for p in [1.0f32, 0.05, 0.3, 0.5, 0.6, 0.8, 0.9] {
                let out = run(
                    &engine,
                    &program,
                    &[
                        probs.clone(),
                        HostArray::scalar(k as i32),
                        HostArray::scalar(p),
                    ],
                );
                let got: Vec<bool> = out[0].to_f32().iter().map(|&x| x != 0.0).collect();
                for (r, row) in rows.iter().enumerate() {
                    let Some(want) = reference_keep(row, k, p) else {
                        continue;
                    };
                    assert_eq!(
                        &got[r * 8..(r + 1) * 8],
                        want.as_slice(),
                        "row {r}, top_k {k}, top_p {p}, {bisection:?}"
                    );
                    checked += 1;
                }
                if (k, p) == (4, 1.0) {
                    // Ties with the 4th largest (2/20 twice) are both kept.
                    assert_eq!(
                        &got[..8],
                        &[false, true, true, true, true, false, false, true],
                        "{bisection:?}"
                    );
                }
                if (k, p) == (0, 0.8) {
                    assert_eq!(
                        &got[8..16],
                        &[true, true, true, false, false, false, false, false],
                        "{bisection:?}"
                    );
                }
            }
        }
        assert!(
            checked >= 7 * 7 * 3 - 8,
            "only {checked} cases away from rounding ties ({bisection:?})"
        );
    }
}

#[test]
fn sampling_draws_from_the_filtered_renormalised_distribution() {
    use vishwam::engine::HostArray;
    use vishwam::model::RngStream;
    use vishwam_hlo::{DType, Graph, TensorType};
    const N: usize = 4096;
    // Loops and unrolled rounds draw the same tokens from the same random state.
    let mut first_draws: Vec<Vec<i32>> = Vec::new();
    for bisection in [Bisection::Loop, Bisection::Unrolled] {
        let g = Graph::named("sample");
        let logits = g.param("logits", TensorType::new(DType::F32, &[N as i64, 4]));
        let params = vishwam::generate::SamplingParams {
            temperature: g.param("temperature", TensorType::new(DType::F32, &[])),
            top_k: Some(g.param("top_k", TensorType::new(DType::I32, &[]))),
            top_p: Some(g.param("top_p", TensorType::new(DType::F32, &[]))),
            bisection,
        };
        let mut rng = RngStream {
            state: g.param("rng", TensorType::new(DType::U64, &[2])),
        };
        let tokens = vishwam::generate::sample(&logits, &params, &mut rng);
        let func = g.finish(&[("tokens", &tokens)]).unwrap();
        let engine = engine();
        let program = engine.compile(&func).unwrap();
        let p = [0.5f64, 0.3, 0.15, 0.05];
        let row: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
        let logits = HostArray::from_slice(&[N as i64, 4], &row.repeat(N)).unwrap();
        let state = HostArray::from_slice(&[2], &vishwam::generate::rng_state(9)).unwrap();
        let cases: [(f32, i32, f32, [f64; 4]); 3] = [
            (1.0, 0, 1.0, [0.5, 0.3, 0.15, 0.05]),
            (1.0, 2, 1.0, [0.625, 0.375, 0.0, 0.0]),
            // T = 0.5 squares the probabilities; top_p 0.9 then keeps the two largest.
            (0.5, 0, 0.9, [0.25 / 0.34, 0.09 / 0.34, 0.0, 0.0]),
        ];
        for (case, (t, k, top_p, want)) in cases.into_iter().enumerate() {
            let out = run(
                &engine,
                &program,
                &[
                    logits.clone(),
                    HostArray::scalar(t),
                    HostArray::scalar(k),
                    HostArray::scalar(top_p),
                    state.clone(),
                ],
            );
            let drawn = out[0].to_vec::<i32>().unwrap();
            match first_draws.get(case) {
                Some(first) => assert_eq!(&drawn, first, "case {case}: {bisection:?} draws differ"),
                None => first_draws.push(drawn.clone()),
            }
            let mut counts = [0f64; 4];
            for tok in drawn {
                counts[tok as usize] += 1.0;
            }
            for (i, (&c, &w)) in counts.iter().zip(&want).enumerate() {
                let sd = (N as f64 * w * (1.0 - w)).sqrt();
                assert!(
                    (c - N as f64 * w).abs() <= 5.0 * sd + 1e-9,
                    "T {t} top_k {k} top_p {top_p}: token {i} drawn {c} times, expected {:.0} ± {sd:.0}",
                    N as f64 * w
                );
            }
        }
    }
}
