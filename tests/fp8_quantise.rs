//! FP8 quantisation on the CPU plugin: scales, round trips against a host model of
//! round-to-nearest-even, saturation, and a matmul whose forward and backward run on
//! quantised operands with their dequantisation scales.

mod common;

use rand::{Rng, SeedableRng};
use std::sync::OnceLock;
use vishwam::engine::{Engine, HostArray, Input, Program};
use vishwam::model::fp8::{
    abs_max, clipped, dequantise, quantise, quantise_gradient, quantise_operand, scale_for,
};
use vishwam::model::{Fp8Formats, Fp8Type};
use vishwam::runtime::{f8e4m3fn_to_f32, f8e5m2_to_f32, Client, CompileCache};
use vishwam_hlo::{DType, Func, Graph, TensorType};
use vishwam_mesh::{Mesh, PartitionSpec};

fn client() -> &'static Client {
    common::cpu_client(1)
}

fn engine() -> Engine {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = CompileCache::new(DIR.get_or_init(|| tempfile::tempdir().unwrap()).path());
    Engine::new(client().clone(), Mesh::single(), cache).unwrap()
}

fn run(engine: &Engine, func: &Func, inputs: &[HostArray]) -> Vec<HostArray> {
    let program: Program = engine.compile(func).unwrap();
    let arrays: Vec<_> = inputs
        .iter()
        .map(|a| engine.put(a, &PartitionSpec::default()).unwrap())
        .collect();
    let out = program
        .run(arrays.iter().map(Input::Keep).collect())
        .unwrap();
    out.iter().map(|a| engine.get(a).unwrap()).collect()
}

fn f32s(a: &HostArray) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

fn decode(ty: Fp8Type, byte: u8) -> f32 {
    match ty {
        Fp8Type::E4M3 => f8e4m3fn_to_f32(byte),
        Fp8Type::E5M2 => f8e5m2_to_f32(byte),
    }
}

/// Round-to-nearest-even onto the format's finite values, by search over all 256 codes.
fn host_round(ty: Fp8Type, x: f32) -> f32 {
    let mut best: Option<(f64, u8)> = None;
    for code in 0..=255u8 {
        let v = decode(ty, code);
        if !v.is_finite() {
            continue;
        }
        let d = (v as f64 - x as f64).abs();
        let better = match best {
            None => true,
            Some((bd, bc)) => d < bd || (d == bd && code & 1 == 0 && bc & 1 == 1),
        };
        if better {
            best = Some((d, code));
        }
    }
    decode(ty, best.unwrap().1)
}

/// The scale `scale_for` must give: 2^floor(log2(max / amax)) within 2^-100..2^100, else 1.
fn host_scale(ty: Fp8Type, amax: f32) -> f32 {
    if !(amax > 0.0 && amax.is_finite()) {
        return 1.0;
    }
    let ratio = (ty.max() / amax as f64).clamp(2f64.powi(-100), 2f64.powi(100));
    2f64.powi(ratio.log2().floor() as i32) as f32
}

fn normal_min(ty: Fp8Type) -> f32 {
    match ty {
        Fp8Type::E4M3 => 2f32.powi(-6),
        Fp8Type::E5M2 => 2f32.powi(-14),
    }
}

/// Program: x f32[n], scale f32[] -> (q as f8, dequantised f32, saturated, scale_for(amax(x))).
fn quantise_program(ty: Fp8Type, n: i64) -> Func {
    let g = Graph::named("quantise");
    let x = g.param("x", TensorType::new(DType::F32, &[n]));
    let scale = g.param("scale", TensorType::new(DType::F32, &[]));
    let q = quantise(&x, &scale, ty);
    let saturated = clipped(&x, &scale, ty);
    let dq = dequantise(&q, &scale, DType::F32);
    let own = scale_for(&abs_max(&x), ty);
    g.finish(&[
        ("q", &q),
        ("dq", &dq),
        ("saturated", &saturated),
        ("own_scale", &own),
    ])
    .unwrap()
}

#[test]
fn scales_are_the_largest_power_of_two_inside_the_range() {
    let amax = [
        1.0f32,
        3.0,
        448.0,
        449.0,
        57344.0,
        0.02,
        1e-30,
        1e30,
        0.0,
        f32::INFINITY,
        f32::NAN,
    ];
    let engine = engine();
    for ty in [Fp8Type::E4M3, Fp8Type::E5M2] {
        let g = Graph::named("scales");
        let a = g.param("amax", TensorType::new(DType::F32, &[amax.len() as i64]));
        let func = g.finish(&[("scale", &scale_for(&a, ty))]).unwrap();
        let host = HostArray::from_slice(&[amax.len() as i64], &amax).unwrap();
        let got = f32s(&run(&engine, &func, &[host])[0]);
        let want: Vec<f32> = amax.iter().map(|&a| host_scale(ty, a)).collect();
        assert_eq!(got, want, "{ty:?}");
    }
    assert_eq!(host_scale(Fp8Type::E4M3, 1.0), 256.0);
    assert_eq!(host_scale(Fp8Type::E5M2, 1.0), 32768.0);
    assert_eq!(host_scale(Fp8Type::E4M3, 449.0), 0.5);
}

#[test]
fn round_trips_are_round_to_nearest_even_within_fp8_precision() {
    let engine = engine();
    let n = 4096usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (ty, bound) in [
        (Fp8Type::E4M3, 2f64.powi(-4)),
        (Fp8Type::E5M2, 2f64.powi(-3)),
    ] {
        // Magnitudes over 2^-12 .. 2^10 with random signs: the scale puts most in range and
        // the smallest ones below the normal range.
        let x: Vec<f32> = (0..n)
            .map(|_| {
                let m = 2f32.powf(rng.gen_range(-12.0..10.0));
                if rng.gen_bool(0.5) {
                    m
                } else {
                    -m
                }
            })
            .collect();
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = host_scale(ty, amax);
        let func = quantise_program(ty, n as i64);
        let out = run(
            &engine,
            &func,
            &[
                HostArray::from_slice(&[n as i64], &x).unwrap(),
                HostArray::scalar(scale),
            ],
        );
        let (q, dq) = (&out[0].data, f32s(&out[1]));
        assert_eq!(f32s(&out[2]), vec![0.0], "{ty:?}: nothing saturates");
        assert_eq!(f32s(&out[3]), vec![scale], "{ty:?}: scale_for(amax)");
        let mut checked = 0;
        let mut worst = 0f64;
        for i in 0..n {
            let scaled = x[i] * scale;
            let want = host_round(ty, scaled);
            assert_eq!(decode(ty, q[i]), want, "{ty:?}: {} * {scale}", x[i]);
            assert_eq!(dq[i], want / scale, "{ty:?}: dequantised {}", x[i]);
            if scaled.abs() >= normal_min(ty) {
                let rel = ((dq[i] - x[i]) / x[i]).abs() as f64;
                worst = worst.max(rel);
                checked += 1;
            }
        }
        assert!(worst <= bound, "{ty:?}: relative error {worst} > {bound}");
        assert!(checked > n / 2, "{ty:?}: only {checked} values in range");
        println!("{ty:?}: scale {scale}, worst relative error {worst:.4} over {checked} normal values (bound {bound})");
    }
}

#[test]
fn values_past_the_range_saturate_and_are_counted() {
    let engine = engine();
    for ty in [Fp8Type::E4M3, Fp8Type::E5M2] {
        let max = ty.max() as f32;
        let x = [
            max,
            -max,
            max * 1.001,
            -max * 2.0,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
        ];
        let func = quantise_program(ty, x.len() as i64);
        let out = run(
            &engine,
            &func,
            &[
                HostArray::from_slice(&[x.len() as i64], &x).unwrap(),
                HostArray::scalar(1f32),
            ],
        );
        let got: Vec<f32> = out[0].data.iter().map(|&b| decode(ty, b)).collect();
        assert_eq!(
            got,
            vec![max, -max, max, -max, max, max, -max, 1.0],
            "{ty:?}"
        );
        assert_eq!(f32s(&out[2]), vec![5.0], "{ty:?}: clipped count");
    }
}

fn matmul_host(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                out[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    out
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|i| a[(i % rows) * cols + i / rows])
        .collect()
}

/// Host fake-quantisation with scale `s` (as the program does it).
fn host_qdq(ty: Fp8Type, x: &[f32], s: f32) -> (Vec<f64>, usize) {
    let max = ty.max() as f32;
    let clipped = x.iter().filter(|v| (*v * s).abs() > max).count();
    let q = x
        .iter()
        .map(|v| (host_round(ty, (v * s).clamp(-max, max)) / s) as f64)
        .collect();
    (q, clipped)
}

/// `y = q(q(x) @ q(w))` (E4M3 operands, E5M2 gradient) and the gradients of `sum(y * r)`
/// with respect to x, w and the three probes; with `delayed`, a parameter `history_amax`
/// f32[3] sets the scales of x, w and the gradient.
fn matmul_program(m: usize, k: usize, n: usize, delayed: bool) -> Func {
    let g = Graph::named(if delayed {
        "fp8_matmul_delayed"
    } else {
        "fp8_matmul"
    });
    let f32_param = |name: &str, shape: &[i64]| g.param(name, TensorType::new(DType::F32, shape));
    let xt = f32_param("x", &[m as i64, k as i64]);
    let wt = f32_param("w", &[k as i64, n as i64]);
    let rt = f32_param("r", &[m as i64, n as i64]);
    let history = delayed.then(|| f32_param("history_amax", &[3]));
    let probes: Vec<_> = (0..3)
        .map(|_| g.zeros(&TensorType::new(DType::F32, &[2])))
        .collect();
    let row = |i: i64| {
        history
            .as_ref()
            .map(|h| h.slice_axis(0, i, i + 1).reshape(&[]))
    };
    let xq = quantise_operand(&xt, row(0).as_ref(), &probes[0], Fp8Type::E4M3, DType::F32);
    let wq = quantise_operand(&wt, row(1).as_ref(), &probes[1], Fp8Type::E4M3, DType::F32);
    let y = quantise_gradient(&xq.matmul(&wq), row(2).as_ref(), &probes[2], Fp8Type::E5M2);
    let loss = (&y * &rt).sum_all();
    let mut wrt = vec![xt.clone(), wt.clone()];
    wrt.extend(probes.iter().cloned());
    let grads = g.grad(&loss, &wrt).unwrap();
    g.finish(&[
        ("y", &y),
        ("dx", &grads[0]),
        ("dw", &grads[1]),
        ("stats_x", &grads[2]),
        ("stats_w", &grads[3]),
        ("stats_dy", &grads[4]),
    ])
    .unwrap()
}

#[test]
fn fp8_matmul_backward_uses_quantised_gradients_and_reports_statistics() {
    let (m, k, n) = (8usize, 16usize, 12usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut random =
        |len: usize, s: f32| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-s..s)).collect() };
    let (x, w, r) = (random(m * k, 3.0), random(k * n, 0.05), random(m * n, 1e-3));
    let engine = engine();
    let amax = |v: &[f32]| v.iter().fold(0f32, |a, b| a.max(b.abs()));
    let host = |shape: &[usize], v: &[f32]| {
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        HostArray::from_slice(&shape, v).unwrap()
    };

    // Current scaling: each tensor by its own amax. Delayed: by the given amaxes; x's is 4x
    // too small, so x's scale is 4x larger and the elements past 448 are clipped and counted.
    for delayed in [false, true] {
        let history = [amax(&x) / 4.0, amax(&w), amax(&r)];
        let mut inputs = vec![host(&[m, k], &x), host(&[k, n], &w), host(&[m, n], &r)];
        if delayed {
            inputs.push(host(&[3], &history));
        }
        let out = run(&engine, &matmul_program(m, k, n, delayed), &inputs);
        let x_amax = if delayed { history[0] } else { amax(&x) };
        let (xq, x_clipped) = host_qdq(Fp8Type::E4M3, &x, host_scale(Fp8Type::E4M3, x_amax));
        let (wq, _) = host_qdq(Fp8Type::E4M3, &w, host_scale(Fp8Type::E4M3, amax(&w)));
        let (rq, _) = host_qdq(Fp8Type::E5M2, &r, host_scale(Fp8Type::E5M2, amax(&r)));
        let want_y = matmul_host(&xq, &wq, m, k, n);
        let want_dx = matmul_host(&rq, &transpose(&wq, k, n), m, n, k);
        let want_dw = matmul_host(&transpose(&xq, m, k), &rq, k, m, n);
        let close = |name: &str, got: &HostArray, want: &[f64]| {
            let got = f32s(got);
            let scale = want.iter().fold(0f64, |a, b| a.max(b.abs()));
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * scale,
                    "{name}: {g} vs {w} (delayed {delayed})"
                );
            }
        };
        close("y", &out[0], &want_y);
        close("dx", &out[1], &want_dx);
        close("dw", &out[2], &want_dw);
        assert_eq!(x_clipped > 0, delayed, "only the small history clips x");
        assert_eq!(f32s(&out[3]), vec![amax(&x), x_clipped as f32]);
        assert_eq!(f32s(&out[4]), vec![amax(&w), 0.0]);
        assert_eq!(f32s(&out[5]), vec![amax(&r), 0.0]);
    }
}

/// `(loss, dh, dw)` of the FP8 head's cross-entropy, on the host in f64 from the operands
/// fake-quantised as the program does (`quantise` = false: the exact head).
fn host_head_ce(
    h: &[f32],
    w: &[f32],
    targets: &[i32],
    mask: &[f32],
    (n, hd, v): (usize, usize, usize),
    quantise: bool,
) -> (f64, Vec<f64>, Vec<f64>) {
    let amax = |x: &[f32]| x.iter().fold(0f32, |a, b| a.max(b.abs()));
    let operand = |x: &[f32]| -> Vec<f64> {
        if quantise {
            host_qdq(Fp8Type::E4M3, x, host_scale(Fp8Type::E4M3, amax(x))).0
        } else {
            x.iter().map(|&a| a as f64).collect()
        }
    };
    let (hq, wq) = (operand(h), operand(w));
    let logits = matmul_host(&hq, &wq, n, hd, v);
    let mut loss = 0.0;
    let mut d = vec![0f32; n * v];
    for i in 0..n {
        let row = &logits[i * v..(i + 1) * v];
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = row.iter().map(|z| (z - max).exp()).sum::<f64>().ln() + max;
        loss += mask[i] as f64 * (lse - row[targets[i] as usize]);
        for j in 0..v {
            let onehot = if j == targets[i] as usize { 1.0 } else { 0.0 };
            d[i * v + j] = (((row[j] - lse).exp() - onehot) * mask[i] as f64) as f32;
        }
    }
    let dq = if quantise {
        host_qdq(Fp8Type::E5M2, &d, 32768.0).0
    } else {
        d.iter().map(|&a| a as f64).collect()
    };
    let dh = matmul_host(&dq, &transpose(&wq, hd, v), n, v, hd);
    let dw = matmul_host(&transpose(&hq, n, hd), &dq, hd, n, v);
    (loss, dh, dw)
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (err / norm).sqrt()
}

#[test]
fn an_fp8_head_cross_entropy_runs_on_quantised_operands_and_gradients() {
    let (n, hd, v) = (16usize, 8usize, 24usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let h: Vec<f32> = (0..n * hd).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let w: Vec<f32> = (0..hd * v).map(|_| rng.gen_range(-0.7..0.7)).collect();
    let targets: Vec<i32> = (0..n).map(|_| rng.gen_range(0..v as i32)).collect();
    let mask: Vec<f32> = (0..n).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 }).collect();

    let g = Graph::named("fp8_head_ce");
    let ht = g.param("h", TensorType::new(DType::F32, &[n as i64, hd as i64]));
    let wt = g.param("w", TensorType::new(DType::F32, &[hd as i64, v as i64]));
    let tt = g.param("targets", TensorType::new(DType::I32, &[n as i64]));
    let mt = g.param("mask", TensorType::new(DType::F32, &[n as i64]));
    let loss = vishwam::model::masked_ce_sum(
        &ht,
        &wt,
        &tt,
        &mt,
        n / 2,
        Some(Fp8Formats::HYBRID),
        vishwam::model::RowStats::TwoPass,
    );
    let grads = g.grad(&loss, &[ht.clone(), wt.clone()]).unwrap();
    let func = g
        .finish(&[("loss", &loss), ("dh", &grads[0]), ("dw", &grads[1])])
        .unwrap();
    let out = run(
        &engine(),
        &func,
        &[
            HostArray::from_slice(&[n as i64, hd as i64], &h).unwrap(),
            HostArray::from_slice(&[hd as i64, v as i64], &w).unwrap(),
            HostArray::from_slice(&[n as i64], &targets).unwrap(),
            HostArray::from_slice(&[n as i64], &mask).unwrap(),
        ],
    );
    let (loss, dh, dw) = (f32s(&out[0])[0] as f64, f32s(&out[1]), f32s(&out[2]));
    let dims = (n, hd, v);
    let (q_loss, q_dh, q_dw) = host_head_ce(&h, &w, &targets, &mask, dims, true);
    let (x_loss, x_dh, x_dw) = host_head_ce(&h, &w, &targets, &mask, dims, false);
    let quantised = [
        ((loss - q_loss).abs() / q_loss, "loss"),
        (rel_l2(&dh, &q_dh), "dh"),
        (rel_l2(&dw, &q_dw), "dw"),
    ];
    let exact = [
        ((loss - x_loss).abs() / x_loss, "loss"),
        (rel_l2(&dh, &x_dh), "dh"),
        (rel_l2(&dw, &x_dw), "dw"),
    ];
    println!("FP8 head vs fake-quantised host: {quantised:?}; vs exact host: {exact:?}");
    for (err, what) in quantised {
        assert!(
            err < 1e-4,
            "{what}: {err} from the fake-quantised host model"
        );
    }
    // The rounding is real: the exact head is FP8 rounding away, and within it.
    for (err, what) in exact {
        assert!(err > 1e-4 && err < 0.1, "{what}: {err} from the exact head");
    }
}
