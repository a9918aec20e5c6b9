//! The per-matrix update: its formula, its sharded form, its momentum warmup and rate.

use super::*;

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

/// The Muon transformation, which orthogonalises same-shaped matrices stacked together,
/// gives each matrix `muon_update`'s update and momentum.
#[test]
fn stacking_same_shaped_matrices_gives_the_per_matrix_updates() {
    use std::collections::BTreeMap;
    use vishwam::train::optim::{GradientTransformation, OptState, ScaleByMuon, UpdateContext};
    let mut r = rng(11);
    let shapes: [(&str, [i64; 2]); 3] = [("a", [16, 48]), ("b", [16, 48]), ("c", [48, 16])];
    let training = TrainingConfig {
        momentum_warmup_steps: 4,
        muon_lr: 0.02,
        warmup_steps: 0,
        ..Default::default()
    };
    let muon = ScaleByMuon::new(
        &training,
        vishwam::config::ComputeDtype::F32,
        BTreeMap::new(),
    );
    let g = Graph::named("muon_stacked");
    let scalar = TensorType::new(DType::F32, &[]);
    let t = g.param("t", scalar.clone());
    let (mut grads, mut buffers, mut inputs) = (Vec::new(), BTreeMap::new(), Vec::new());
    for (name, shape) in &shapes {
        let ty = TensorType::new(DType::F32, shape);
        let (gp, bp) = (
            g.param(&format!("g.{name}"), ty.clone()),
            g.param(&format!("b.{name}"), ty),
        );
        grads.push((name.to_string(), gp));
        buffers.insert(name.to_string(), bp);
        let n = (shape[0] * shape[1]) as usize;
        inputs.push(Lit::f32(shape, &uniform(n, &mut r)));
        inputs.push(Lit::f32(shape, &uniform(n, &mut r)));
    }
    inputs.insert(0, Lit::f32(&[], &[3.0]));
    let ctx = UpdateContext {
        t: t.clone(),
        grad_norm: g.scalar(1.0, DType::F32),
    };
    let state = OptState::of_kind("momentum", buffers.clone());
    let (updates, next) = muon
        .update(
            grads.iter().cloned().collect(),
            &state,
            &Default::default(),
            &ctx,
        )
        .unwrap();
    let lr = muon_lr_traced(&training, &t);
    let mut outs = Vec::new();
    for (name, gp) in &grads {
        let one = muon_update(
            gp,
            &buffers[name],
            &lr,
            &t,
            &muon.settings,
            &PartitionSpec::replicated(),
        );
        outs.push((
            format!("stacked.{name}"),
            updates.get(name).unwrap().clone(),
        ));
        outs.push((format!("single.{name}"), one.update));
        outs.push((
            format!("momentum.{name}"),
            next.get("momentum", name).unwrap().clone(),
        ));
        outs.push((format!("single_momentum.{name}"), one.momentum));
    }
    let refs: Vec<(&str, &vishwam_hlo::Tensor)> =
        outs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = Program::new(g.finish(&refs).unwrap()).run(&inputs);
    for k in 0..shapes.len() {
        let (stacked, single) = (out[4 * k].values(), out[4 * k + 1].values());
        let err = relative_error(&stacked, &single);
        assert!(
            err < 1e-5,
            "{}: stacked vs single relative error {err}",
            shapes[k].0
        );
        assert_eq!(out[4 * k + 2].values(), out[4 * k + 3].values());
    }
}
