//! A 2-layer MLP, forward and backward, under every parallelism strategy on 4 and 8 virtual
//! CPU devices gives the loss and gradients of one device; sharding parameters shrinks each
//! device's compiled memory.

use rand::{Rng, SeedableRng};
use std::sync::OnceLock;
use vishwam::engine::{Engine, HostArray, Input};
use vishwam::runtime::{Client, ClientSpec, CompileCache};
use vishwam_hlo::{DType, Graph, TensorType};
use vishwam_mesh::{DeviceStrategy, LogicalAxis as L, MeshSettings, ShardingPlan};

const B: i64 = 16;
const D: i64 = 32;
const F: i64 = 64;

/// The CPU with 8 virtual devices, or every device of `VISHWAM_TEST_PLATFORM` (e.g. `cuda`
/// on a 2-GPU machine: the cases that fit its devices run there).
fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let spec = match std::env::var("VISHWAM_TEST_PLATFORM") {
            Ok(p) if !p.is_empty() && p != "cpu" => ClientSpec {
                platform: vishwam::runtime::Platform::parse(&p).expect("a platform name"),
                devices: None,
                plugin: None,
                config_plugin: None,
            },
            _ => ClientSpec::cpu(8),
        };
        spec.open().expect("open the plugin")
    })
}

struct Run {
    loss: f32,
    grads: Vec<Vec<f32>>,
    argument_bytes: i64,
}

fn random(n: i64, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Traces loss = mean((tanh(x @ w1) @ w2 - y)^2) with its gradients, sharded by `plan`.
fn run(plan: &ShardingPlan) -> Run {
    let spec = |logical: &[L], shape: &[i64], param: bool| {
        let r = if param {
            plan.parameter_spec(logical, shape)
        } else {
            plan.activation_spec(logical, shape)
        };
        r.unwrap().spec
    };
    let (x_spec, w1_spec, w2_spec) = (
        spec(&[L::Batch, L::Embed], &[B, D], false),
        spec(&[L::Embed, L::Mlp], &[D, F], true),
        spec(&[L::Mlp, L::Embed], &[F, D], true),
    );
    let g = Graph::named("mlp");
    let f32 = |s: &[i64]| TensorType::new(DType::F32, s);
    let x = g.param_sharded("x", f32(&[B, D]), x_spec.clone());
    let y = g.param_sharded("y", f32(&[B, D]), x_spec.clone());
    let w1 = g.param_sharded("w1", f32(&[D, F]), w1_spec.clone());
    let w2 = g.param_sharded("w2", f32(&[F, D]), w2_spec.clone());
    let h = x.matmul(&w1).tanh();
    let loss = (h.matmul(&w2) - &y).square().mean_all();
    let grads = g.grad(&loss, &[w1.clone(), w2.clone()]).unwrap();
    let mut func = g
        .finish(&[
            ("loss", &loss),
            ("grad.w1", &grads[0]),
            ("grad.w2", &grads[1]),
        ])
        .unwrap();
    func.set_output_sharding("grad.w1", w1_spec.clone())
        .unwrap();
    func.set_output_sharding("grad.w2", w2_spec.clone())
        .unwrap();

    let engine = Engine::new(
        client().clone(),
        plan.mesh.clone(),
        CompileCache::disabled(),
    )
    .unwrap();
    let program = engine.compile(&func).unwrap();
    let put = |v: Vec<f32>, shape: &[i64], s| {
        engine
            .put(&HostArray::from_slice(shape, &v).unwrap(), s)
            .unwrap()
    };
    let xs = put(random(B * D, 1), &[B, D], &x_spec);
    let ys = put(random(B * D, 2), &[B, D], &x_spec);
    let w1s = put(
        random(D * F, 3).iter().map(|v| v * 0.3).collect(),
        &[D, F],
        &w1_spec,
    );
    let w2s = put(
        random(F * D, 4).iter().map(|v| v * 0.3).collect(),
        &[F, D],
        &w2_spec,
    );
    let out = program
        .run(vec![
            Input::Keep(&xs),
            Input::Keep(&ys),
            Input::Keep(&w1s),
            Input::Keep(&w2s),
        ])
        .unwrap();
    let host: Vec<Vec<f32>> = out
        .iter()
        .map(|a| engine.get(a).unwrap().to_vec::<f32>().unwrap())
        .collect();
    Run {
        loss: host[0][0],
        grads: host[1..].to_vec(),
        argument_bytes: program.memory_stats().unwrap().argument_bytes,
    }
}

fn plan(
    strategy: DeviceStrategy,
    mesh: &[(&str, i64)],
    devices: usize,
    shard_weights: bool,
) -> ShardingPlan {
    let mut settings = MeshSettings::new(strategy, shard_weights);
    settings.mesh_shape = mesh.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    ShardingPlan::build(&settings, "cpu", devices).unwrap()
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0f32, f32::max)
}

#[test]
fn every_strategy_matches_one_device() {
    let reference = run(&plan(
        DeviceStrategy::DataParallel,
        &[("data", 1)],
        1,
        false,
    ));
    assert!(reference.loss.is_finite() && reference.loss > 0.0);
    let cases = [
        (
            "data-parallel x4",
            plan(DeviceStrategy::DataParallel, &[("data", 4)], 4, false),
        ),
        (
            "data-parallel x8",
            plan(DeviceStrategy::DataParallel, &[("data", 8)], 8, false),
        ),
        (
            "fsdp x4",
            plan(DeviceStrategy::Fsdp, &[("fsdp", 4)], 4, true),
        ),
        (
            "fsdp x8",
            plan(DeviceStrategy::Fsdp, &[("fsdp", 8)], 8, true),
        ),
        (
            "tensor-parallel x4",
            plan(DeviceStrategy::TensorParallel, &[("model", 4)], 4, false),
        ),
        (
            "data x model 2x2",
            plan(
                DeviceStrategy::Hybrid,
                &[("data", 2), ("model", 2)],
                4,
                false,
            ),
        ),
        (
            "data x model 2x4",
            plan(
                DeviceStrategy::Hybrid,
                &[("data", 2), ("model", 4)],
                8,
                false,
            ),
        ),
        (
            "fsdp + model 2x4",
            plan(
                DeviceStrategy::Hybrid,
                &[("fsdp", 2), ("model", 4)],
                8,
                true,
            ),
        ),
    ];
    let mut report = vec![format!(
        "1 device: argument bytes per device {}",
        reference.argument_bytes
    )];
    let available = client().num_devices();
    let two = [
        (
            "data-parallel x2",
            plan(DeviceStrategy::DataParallel, &[("data", 2)], 2, false),
        ),
        (
            "fsdp x2",
            plan(DeviceStrategy::Fsdp, &[("fsdp", 2)], 2, true),
        ),
        (
            "tensor-parallel x2",
            plan(DeviceStrategy::TensorParallel, &[("model", 2)], 2, false),
        ),
    ];
    let runnable: Vec<_> = two
        .iter()
        .chain(&cases)
        .filter(|(_, p)| p.mesh.num_devices() <= available)
        .collect();
    assert!(runnable.len() >= 3, "only {available} devices");
    for (name, plan) in runnable {
        let r = run(plan);
        let loss_err = (r.loss - reference.loss).abs() / reference.loss;
        assert!(
            loss_err < 1e-5,
            "{name}: loss {} vs {} (rel {loss_err:e})",
            r.loss,
            reference.loss
        );
        for (i, (g, w)) in r.grads.iter().zip(&reference.grads).enumerate() {
            let e = max_rel(g, w);
            assert!(e < 1e-5, "{name}: grad {i} max relative error {e:e}");
        }
        report.push(format!(
            "{name}: argument bytes per device {}",
            r.argument_bytes
        ));
        if plan.shard_weights || plan.strategy.splits_model() {
            assert!(
                r.argument_bytes < reference.argument_bytes,
                "{name}: {} >= {}",
                r.argument_bytes,
                reference.argument_bytes
            );
        }
    }
    println!("{}", report.join("\n"));
}
