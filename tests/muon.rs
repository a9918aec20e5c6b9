//! Muon's pieces: the traced Newton-Schulz against the Candle reference and against the
//! quintic's action on known singular values, its bf16/f16 paths, the per-matrix update,
//! the reference's Muon + AdamW step, and the CLI's refusal until the train step runs Muon.

mod common;

use candle_core::{Device, Tensor as CTensor};
use common::{client, failed, rng, vishwam_cli, Lit, Program};
use rand::Rng;
use vishwam::config::{ModelConfig, Optimizer, TrainingConfig};
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::model::param_specs;
use vishwam::reference::{
    self, is_muon_parameter, train_steps, Batch, OptimizerStep, ReferenceAdamW, ReferenceDtype,
    ReferenceModel, ReferenceMuon, ReferenceOptimizer,
};
use vishwam::runtime::CompileCache;
use vishwam::train::lr_at;
use vishwam::train::optim::muon::{
    momentum_at, muon_lr_traced, muon_schedule, muon_update, newton_schulz, shape_scale, uses_muon,
    MuonSettings, NS_COEFFICIENTS,
};
use vishwam_hlo::{DType, Graph, PartitionSpec, TensorType};
use vishwam_mesh::{DeviceStrategy, LogicalAxis as L, MeshSettings, ShardingPlan};

/// Traces `newton_schulz` for `shape` in `dtype`, compiles it and runs it on `data` (f32).
fn traced_ns(shape: &[i64], data: &[f32], steps: usize, dtype: DType) -> Vec<f64> {
    let _ = client();
    let g = Graph::named("newton_schulz");
    let x = g.param("g", TensorType::new(DType::F32, shape));
    let out = newton_schulz(&x, steps, dtype);
    assert_eq!(out.dtype(), DType::F32);
    assert_eq!(out.shape(), shape);
    let program = Program::new(g.finish(&[("o", &out)]).expect("traces"));
    program.run(&[Lit::f32(shape, data)])[0].values()
}

fn candle(shape: &[i64], data: &[f32]) -> CTensor {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    CTensor::from_vec(data.to_vec(), dims, &Device::Cpu).unwrap()
}

fn flat(t: &CTensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn uniform(n: usize, r: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect()
}

/// Largest elementwise difference over the largest magnitude of `want`.
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    diff / scale
}

/// f32 NS on XLA and in Candle compute the same maths with different summation orders; five
/// iterations amplify a rounding difference by at most |p'(s)| <= 3.45 per iteration on the
/// smallest singular values (3.45^5 ~ 490 x f32's 6e-8 ~ 3e-5), so 1e-4 of the largest entry
/// bounds it with margin on any machine.
#[test]
fn traced_newton_schulz_matches_the_candle_reference_in_f32() {
    let mut r = rng(19);
    for shape in [
        vec![48i64, 20],
        vec![20, 48],
        vec![32, 32],
        vec![3, 24, 40],
        vec![2, 40, 24],
    ] {
        let n = shape.iter().product::<i64>() as usize;
        let data = uniform(n, &mut r);
        let got = traced_ns(&shape, &data, 5, DType::F32);
        let want = flat(&reference::newton_schulz(&candle(&shape, &data), 5).unwrap());
        let err = relative_error(&got, &want);
        eprintln!("{shape:?}: XLA vs Candle NS, relative error {err:.2e}");
        assert!(err < 1e-4, "{shape:?}: relative error {err}");
    }
}

/// Orthonormal columns `[n, k]` (row-major) by Gram-Schmidt on Gaussian-ish draws, in f64.
fn orthonormal(n: usize, k: usize, r: &mut impl Rng) -> Vec<f64> {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < k {
        let mut v: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-3 {
            cols.push(v.iter().map(|a| a / norm).collect());
        }
    }
    (0..n * k).map(|i| cols[i % k][i / k]).collect()
}

/// The quintic applied `steps` times to one singular value.
fn quintic(mut s: f64, steps: usize) -> f64 {
    let [a, b, c] = NS_COEFFICIENTS;
    for _ in 0..steps {
        s = a * s + b * s.powi(3) + c * s.powi(5);
    }
    s
}

/// A matrix `[rows, cols]` with known singular vectors `u` `[rows, k]`, `v` `[cols, k]` and
/// singular values spread evenly over [0.05, 1].
struct KnownSpectrum {
    rows: usize,
    cols: usize,
    u: Vec<f64>,
    v: Vec<f64>,
    s: Vec<f64>,
}

impl KnownSpectrum {
    fn new(rows: usize, cols: usize, r: &mut impl Rng) -> KnownSpectrum {
        let k = rows.min(cols);
        KnownSpectrum {
            rows,
            cols,
            u: orthonormal(rows, k, r),
            v: orthonormal(cols, k, r),
            s: (0..k)
                .map(|i| 0.05 + 0.95 * i as f64 / (k - 1) as f64)
                .collect(),
        }
    }

    fn k(&self) -> usize {
        self.s.len()
    }

    /// U diag(sv) Vᵀ, row-major.
    fn compose(&self, sv: &[f64]) -> Vec<f64> {
        let (k, cols) = (self.k(), self.cols);
        let mut out = vec![0.0; self.rows * cols];
        for i in 0..self.rows {
            for j in 0..cols {
                out[i * cols + j] = (0..k)
                    .map(|c| self.u[i * k + c] * sv[c] * self.v[j * k + c])
                    .sum();
            }
        }
        out
    }

    /// G itself, as f32.
    fn matrix(&self) -> Vec<f32> {
        self.compose(&self.s).iter().map(|&x| x as f32).collect()
    }

    /// Uᵀ O V: the singular values of O on its diagonal when O keeps G's singular vectors.
    fn project(&self, o: &[f64]) -> Vec<Vec<f64>> {
        let (k, cols) = (self.k(), self.cols);
        (0..k)
            .map(|a| {
                (0..k)
                    .map(|b| {
                        (0..self.rows)
                            .flat_map(|i| (0..cols).map(move |j| (i, j)))
                            .map(|(i, j)| self.u[i * k + a] * o[i * cols + j] * self.v[j * k + b])
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}

/// NS keeps the singular vectors and maps each singular value s / ||G||_F by the quintic:
/// G = U diag(s) Vᵀ with s spread over [0.05, 1] must give U diag(p⁵(s / ||s||)) Vᵀ, and
/// those values lie in the band the coefficients give for inputs >= 0.01 of the norm:
/// [0.68, 1.135] (worked out on the host: p⁵ over [0.01, 1] spans 0.6818..1.1344).
#[test]
fn newton_schulz_maps_singular_values_by_the_quintic_into_its_band() {
    let mut r = rng(7);
    for (rows, cols) in [(40usize, 16usize), (16, 40), (24, 24)] {
        let known = KnownSpectrum::new(rows, cols, &mut r);
        let norm = known.s.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mapped: Vec<f64> = known.s.iter().map(|x| quintic(x / norm, 5)).collect();
        for &m in &mapped {
            assert!((0.68..=1.135).contains(&m), "{m}");
        }
        let got = traced_ns(&[rows as i64, cols as i64], &known.matrix(), 5, DType::F32);
        let err = relative_error(&got, &known.compose(&mapped));
        eprintln!("{rows}x{cols}: XLA NS vs U p5(s) Vt, relative error {err:.2e}");
        assert!(err < 1e-4, "{rows}x{cols}: relative error {err}");
        let projected = known.project(&got);
        for (c, row) in projected.iter().enumerate() {
            let sv = row[c];
            assert!(
                (0.679..=1.136).contains(&sv),
                "{rows}x{cols} singular value {sv}"
            );
        }
    }
}

/// bf16 and f16 iterations still orthogonalise: the result keeps G's singular vectors (the
/// off-diagonal of Uᵀ O V stays small) and its singular values stay in a band around 1.
/// Bounds: rounding each product to 8 (bf16) or 11 (f16) significant bits moves a singular
/// value by a few times 2^-8 = 0.004 (bf16) or 2^-11 (f16) per iteration; the margins leave
/// room for that on any machine.
#[test]
fn half_precision_newton_schulz_still_orthogonalises() {
    let mut r = rng(11);
    let known = KnownSpectrum::new(24, 64, &mut r);
    for (dtype, margin) in [(DType::BF16, 0.1), (DType::F16, 0.02)] {
        let got = traced_ns(&[24, 64], &known.matrix(), 5, dtype);
        let projected = known.project(&got);
        let mut worst_off: f64 = 0.0;
        let (mut low, mut high) = (f64::MAX, f64::MIN);
        for (a, row) in projected.iter().enumerate() {
            for (b, &x) in row.iter().enumerate() {
                if a == b {
                    low = low.min(x);
                    high = high.max(x);
                } else {
                    worst_off = worst_off.max(x.abs());
                }
            }
        }
        eprintln!("{dtype:?}: singular values {low}..{high}, off-diagonal {worst_off}");
        assert!(
            low > 0.68 - margin && high < 1.135 + margin,
            "{dtype:?}: {low}..{high}"
        );
        assert!(worst_off < margin, "{dtype:?}: off-diagonal {worst_off}");
    }
}

/// `muon_update` against the formula on the host with the reference's NS: momentum and
/// Nesterov lerps at the warmed-up momentum of step 3, the shape factor 2 of a [16, 64]
/// matrix, and the rate.
#[test]
fn the_per_matrix_update_follows_the_documented_formula() {
    let mut r = rng(3);
    let shape = [16i64, 64];
    let n = 16 * 64;
    let (grad, buffer) = (uniform(n, &mut r), uniform(n, &mut r));
    let training = TrainingConfig {
        muon_momentum: 0.95,
        momentum_warmup_steps: 4,
        ns_steps: 5,
        ..Default::default()
    };
    let settings = MuonSettings::new(&training, vishwam::config::ComputeDtype::F32);
    let (lr, t) = (0.02f32, 3.0f32);
    let g = Graph::named("muon_update");
    let scalar = TensorType::new(DType::F32, &[]);
    let mat = TensorType::new(DType::F32, &shape);
    let (gp, bp) = (g.param("grad", mat.clone()), g.param("buffer", mat));
    let (lp, tp) = (g.param("lr", scalar.clone()), g.param("t", scalar));
    let step = muon_update(&gp, &bp, &lp, &tp, &settings, &PartitionSpec::replicated());
    let program = Program::new(
        g.finish(&[("update", &step.update), ("momentum", &step.momentum)])
            .unwrap(),
    );
    let out = program.run(&[
        Lit::f32(&shape, &grad),
        Lit::f32(&shape, &buffer),
        Lit::f32(&[], &[lr]),
        Lit::f32(&[], &[t]),
    ]);
    // Step 3 of a 4-step warmup: 0.85 + 0.1 * 2 / 4.
    let mu = 0.9;
    assert!((settings.momentum_at_step(3) - mu).abs() < 1e-12);
    let momentum: Vec<f32> = buffer
        .iter()
        .zip(&grad)
        .map(|(b, g)| mu as f32 * b + (1.0 - mu as f32) * g)
        .collect();
    let nesterov: Vec<f32> = grad
        .iter()
        .zip(&momentum)
        .map(|(g, m)| (1.0 - mu as f32) * g + mu as f32 * m)
        .collect();
    let orth = flat(&reference::newton_schulz(&candle(&shape, &nesterov), 5).unwrap());
    assert_eq!(shape_scale(&shape), 2.0);
    let want: Vec<f64> = orth.iter().map(|o| o * lr as f64 * 2.0).collect();
    let m64: Vec<f64> = momentum.iter().map(|&m| m as f64).collect();
    assert!(relative_error(&out[1].values(), &m64) < 1e-6);
    let err = relative_error(&out[0].values(), &want);
    assert!(err < 1e-4, "update: relative error {err}");
}

/// `muon_update` of a `[32, 64]` (embed, mlp) matrix under `plan`, with the inputs and
/// outputs sharded as the plan shards such a parameter: (update, momentum) on the host.
fn sharded_update(plan: &ShardingPlan, grad: &[f32], buffer: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let shape = [32i64, 64];
    let spec = plan
        .parameter_spec(&[L::Embed, L::Mlp], &shape)
        .unwrap()
        .spec;
    let training = TrainingConfig::default();
    let settings = MuonSettings::new(&training, vishwam::config::ComputeDtype::F32);
    let g = Graph::named("muon_sharded");
    let mat = TensorType::new(DType::F32, &shape);
    let scalar = TensorType::new(DType::F32, &[]);
    let gp = g.param_sharded("grad", mat.clone(), spec.clone());
    let bp = g.param_sharded("buffer", mat, spec.clone());
    let lr = g.param("lr", scalar.clone());
    let t = g.param("t", scalar);
    let step = muon_update(&gp, &bp, &lr, &t, &settings, &spec);
    let mut func = g
        .finish(&[("update", &step.update), ("momentum", &step.momentum)])
        .unwrap();
    func.set_output_sharding("update", spec.clone()).unwrap();
    func.set_output_sharding("momentum", spec.clone()).unwrap();
    let engine = Engine::new(
        client().clone(),
        plan.mesh.clone(),
        CompileCache::disabled(),
    )
    .unwrap();
    let program = engine.compile(&func).unwrap();
    let put = |v: &[f32], shape: &[i64], s: &PartitionSpec| {
        engine
            .put(&HostArray::from_slice(shape, v).unwrap(), s)
            .unwrap()
    };
    let replicated = PartitionSpec::replicated();
    let args = [
        put(grad, &shape, &spec),
        put(buffer, &shape, &spec),
        put(&[0.02], &[], &replicated),
        put(&[7.0], &[], &replicated),
    ];
    let out = program.run(args.iter().map(Input::Keep).collect()).unwrap();
    let host = |i: usize| engine.get(&out[i]).unwrap().to_vec::<f32>().unwrap();
    (host(0), host(1))
}

fn plan(
    strategy: DeviceStrategy,
    mesh: &[(&str, i64)],
    devices: usize,
    shard: bool,
) -> ShardingPlan {
    let mut settings = MeshSettings::new(strategy, shard);
    settings.mesh_shape = mesh.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    ShardingPlan::build(&settings, "cpu", devices).unwrap()
}

/// Under fsdp, tensor parallelism and both, the gathered NS gives the one-device update: the
/// gather is exact, so only the matmuls' summation order may differ (1e-4 as above).
#[test]
fn sharded_muon_updates_match_one_device() {
    let mut r = rng(23);
    let (grad, buffer) = (uniform(32 * 64, &mut r), uniform(32 * 64, &mut r));
    let one = sharded_update(
        &plan(DeviceStrategy::DataParallel, &[("data", 1)], 1, false),
        &grad,
        &buffer,
    );
    for (name, plan) in [
        (
            "fsdp x4",
            plan(DeviceStrategy::Fsdp, &[("fsdp", 4)], 4, true),
        ),
        (
            "tensor-parallel x4",
            plan(DeviceStrategy::TensorParallel, &[("model", 4)], 4, false),
        ),
        (
            "fsdp x model 2x2",
            plan(
                DeviceStrategy::Hybrid,
                &[("fsdp", 2), ("model", 2)],
                4,
                true,
            ),
        ),
    ] {
        let spec = plan
            .parameter_spec(&[L::Embed, L::Mlp], &[32, 64])
            .unwrap()
            .spec;
        assert!(!spec.is_replicated(), "{name}: the matrix is sharded");
        let (update, momentum) = sharded_update(&plan, &grad, &buffer);
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let err = relative_error(&f64s(&update), &f64s(&one.0));
        eprintln!("{name} ({spec:?}): update relative error {err:.2e}");
        assert!(err < 1e-4, "{name}: update relative error {err}");
        assert!(
            relative_error(&f64s(&momentum), &f64s(&one.1)) < 1e-6,
            "{name}: momentum"
        );
    }
}

/// The traced momentum warmup and Muon rate against their host twins, through the warmup,
/// at its end and past it (f32 rounding of values near 1: 1e-6).
#[test]
fn traced_momentum_and_rate_follow_their_host_twins() {
    let training = TrainingConfig {
        muon_lr: 0.03,
        muon_momentum: 0.97,
        momentum_warmup_steps: 40,
        ..TrainingConfig::default()
    };
    let settings = MuonSettings::new(&training, vishwam::config::ComputeDtype::F32);
    let g = Graph::named("muon_schedule");
    let t = g.param("t", TensorType::new(DType::F32, &[]));
    let mu = momentum_at(&t, &settings);
    let lr = muon_lr_traced(&training, &t);
    let program = Program::new(g.finish(&[("mu", &mu), ("lr", &lr)]).unwrap());
    for step in [1usize, 2, 20, 41, 42, 150, 300, 400] {
        let out = program.run(&[Lit::f32(&[], &[step as f32])]);
        let (got_mu, got_lr) = (out[0].values()[0], out[1].values()[0]);
        let want_lr = lr_at(&muon_schedule(&training), step);
        assert!(
            (got_mu - settings.momentum_at_step(step)).abs() < 1e-6,
            "t={step}: mu {got_mu}"
        );
        assert!(
            (got_lr - want_lr).abs() <= 1e-6 * want_lr,
            "t={step}: lr {got_lr} vs {want_lr}"
        );
    }
}

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

/// Until the train step runs Muon, a Muon run stops at setup naming the key, and a Muon key
/// under AdamW is a configuration error naming both keys.
#[test]
fn the_cli_refuses_muon_until_the_step_runs_it() {
    let home = tempfile::tempdir().unwrap();
    let err = failed(vishwam_cli(
        home.path(),
        &["train", "--set", "training.optimizer=muon", "--no-progress"],
    ));
    assert!(
        err.contains("`training.optimizer` = \"muon\" needs the Muon optimiser in the train step (not yet wired)"),
        "{err}"
    );
    let err = failed(vishwam_cli(
        home.path(),
        &["train", "--set", "training.muon_lr=0.05", "--no-progress"],
    ));
    assert!(
        err.contains("`training.muon_lr` = 0.05 contradicts `training.optimizer` = \"adamw\""),
        "{err}"
    );
}
