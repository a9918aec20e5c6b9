//! Muon's pieces: the traced Newton-Schulz against the Candle reference and against the
//! quintic's action on known singular values, its bf16/f16 paths, the per-matrix update,
//! the reference's Muon + AdamW step, and Muon runs through the binary (state, resume).

#[path = "../common/mod.rs"]
mod common;

mod newton_schulz;
mod reference_step;
mod train;
mod update;

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
