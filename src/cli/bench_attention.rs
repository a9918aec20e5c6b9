//! `vishwam bench attention`: cuDNN flash attention against the attention composed from XLA
//! primitives, on one CUDA device. First correctness: outputs and gradients of both on a small
//! random causal GQA problem, each against an f32 reference computed on the same device. Then
//! speed: forward + backward of each at the training shapes (default: the 124M benchmark).

use super::RuntimeArgs;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::process::ExitCode;
use std::time::Instant;
use vishwam::engine::{Engine, HostArray, Input, Program, ShardedArray};
use vishwam::model::{attention_with, blocked_attention_with, cudnn_attention_with, AttentionSpec};
use vishwam::runtime::{CompileCache, Platform};
use vishwam_hlo::{DType, Func, Graph, Tensor, TensorType};
use vishwam_mesh::{Mesh, PartitionSpec};

/// Element type the kernels compute in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfType {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl HalfType {
    fn dtype(self) -> DType {
        match self {
            HalfType::Bf16 => DType::BF16,
            HalfType::F16 => DType::F16,
        }
    }

    /// Rounds to the nearest value of this type.
    fn round(self, x: f32) -> f32 {
        match self {
            HalfType::Bf16 => half::bf16::from_f32(x).to_f32(),
            HalfType::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// Largest relative L2 error (against the f32 reference) the check accepts.
    fn tolerance(self) -> f64 {
        match self {
            HalfType::Bf16 => 2e-2,
            HalfType::F16 => 5e-3,
        }
    }
}

/// Arguments of `vishwam bench attention`.
#[derive(clap::Args, Debug)]
pub struct AttentionBenchArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Sequences per batch of the timed problem.
    #[arg(long, default_value_t = 16)]
    batch: i64,
    /// Sequence length of the timed problem.
    #[arg(long, default_value_t = 1024)]
    seq: i64,
    /// Query heads.
    #[arg(long, default_value_t = 12)]
    heads: i64,
    /// Key/value heads (dividing the query heads).
    #[arg(long, default_value_t = 4)]
    kv_heads: i64,
    /// Width of one head.
    #[arg(long, default_value_t = 64)]
    head_dim: i64,
    /// Compute dtype of the kernels.
    #[arg(long, value_enum, default_value_t = HalfType::Bf16)]
    dtype: HalfType,
    /// Sliding window (every implementation, the check's reference included): query t sees
    /// keys t - window < s <= t (cuDNN's `sliding_window_length`). Default: none.
    #[arg(long)]
    window: Option<usize>,
    /// Block size of the blocked (memory-efficient) XLA attention.
    #[arg(long, default_value_t = 128)]
    block: usize,
    /// Layers, to scale the per-layer time to one train step's attention.
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Timed forward + backward runs per implementation (after warm-up runs).
    #[arg(long, default_value_t = 20)]
    iters: usize,
}

/// Problem sizes.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: i64,
    seq: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    window: Option<usize>,
}

impl Shape {
    fn q(&self, dtype: DType) -> TensorType {
        TensorType::new(dtype, &[self.batch, self.seq, self.heads, self.head_dim])
    }

    fn kv(&self, dtype: DType) -> TensorType {
        TensorType::new(dtype, &[self.batch, self.seq, self.kv_heads, self.head_dim])
    }

    /// Matmul FLOPs of forward + backward with the causal half skipped: 2 GEMMs forward and
    /// 4 backward (the recomputation of the scores not counted), each 2*B*NH*T*T*D / 2.
    fn flops(&self) -> f64 {
        let gemm = (self.batch * self.heads * self.seq * self.seq * self.head_dim) as f64;
        6.0 * gemm
    }
}

/// The attention implementations compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Implementation {
    Cudnn,
    XlaFull,
    XlaBlocked(usize),
}

impl Implementation {
    fn name(self) -> String {
        match self {
            Implementation::Cudnn => "cudnn flash attention".into(),
            Implementation::XlaFull => "xla full (f32 scores)".into(),
            Implementation::XlaBlocked(b) => format!("xla blocked ({b})"),
        }
    }

    fn apply(self, q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Tensor {
        let spec = AttentionSpec {
            window,
            ..AttentionSpec::causal(q.shape()[3])
        };
        match self {
            Implementation::Cudnn => cudnn_attention_with(q, k, v, &spec),
            Implementation::XlaFull => {
                let g = q.graph();
                let pos = g.iota(&TensorType::new(DType::I32, &[q.shape()[1]]), 0);
                attention_with(q, k, v, &pos, &pos, &spec)
            }
            Implementation::XlaBlocked(block) => blocked_attention_with(q, k, v, block, &spec),
        }
    }
}

/// Outputs and gradients of `sum(attention(q, k, v) * d_o)` for the cuDNN kernels and the
/// composed attention (both in `half`), and for the composed attention in f32: the reference.
/// Inputs are f32 holding values of `half`, so every path sees the same numbers.
fn check_program(shape: Shape, half: DType) -> vishwam_hlo::Result<Func> {
    let g = Graph::named("attention_check");
    let q = g.param("q", shape.q(DType::F32));
    let k = g.param("k", shape.kv(DType::F32));
    let v = g.param("v", shape.kv(DType::F32));
    let d_o = g.param("d_o", shape.q(DType::F32));
    let mut outputs: Vec<(String, Tensor)> = Vec::new();
    for (name, imp, dtype) in [
        ("cudnn", Implementation::Cudnn, half),
        ("xla", Implementation::XlaFull, half),
        ("reference", Implementation::XlaFull, DType::F32),
    ] {
        let out = imp
            .apply(&q.cast(dtype), &k.cast(dtype), &v.cast(dtype), shape.window)
            .cast(DType::F32);
        let loss = (&out * &d_o).sum_all();
        let grads = g.grad(&loss, &[q.clone(), k.clone(), v.clone()])?;
        outputs.push((format!("{name}.out"), out));
        for (what, grad) in ["dq", "dk", "dv"].iter().zip(grads) {
            outputs.push((format!("{name}.{what}"), grad));
        }
    }
    let refs: Vec<(&str, &Tensor)> = outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    g.finish(&refs)
}

/// Output and gradients of `sum(attention(q, k, v) * d_o)`, all in `half`.
fn timed_program(imp: Implementation, shape: Shape, half: DType) -> vishwam_hlo::Result<Func> {
    let g = Graph::named("attention_fwd_bwd");
    let q = g.param("q", shape.q(half));
    let k = g.param("k", shape.kv(half));
    let v = g.param("v", shape.kv(half));
    let d_o = g.param("d_o", shape.q(half));
    let out = imp.apply(&q, &k, &v, shape.window);
    let loss = (out.cast(DType::F32) * d_o.cast(DType::F32)).sum_all();
    let grads = g.grad(&loss, &[q, k, v])?;
    g.finish(&[
        ("out", &out),
        ("dq", &grads[0]),
        ("dk", &grads[1]),
        ("dv", &grads[2]),
    ])
}

/// Seeded normal values of `ty` rounded to `half`, placed on the device as `ty.dtype`.
fn random_input(
    engine: &Engine,
    ty: &TensorType,
    half: HalfType,
    seed: u64,
) -> anyhow::Result<ShardedArray> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = ty.num_elements() as usize;
    let values: Vec<f32> = (0..n)
        .map(|_| half.round(StandardNormal.sample(&mut rng)))
        .collect();
    let host = match ty.dtype {
        DType::F32 => HostArray::from_slice(&ty.shape, &values),
        DType::BF16 => HostArray::from_slice(
            &ty.shape,
            &values
                .iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect::<Vec<_>>(),
        ),
        DType::F16 => HostArray::from_slice(
            &ty.shape,
            &values
                .iter()
                .map(|&x| half::f16::from_f32(x))
                .collect::<Vec<_>>(),
        ),
        other => return Err(anyhow::anyhow!("no random inputs of {other}")),
    }
    .map_err(anyhow::Error::msg)?;
    Ok(engine.put(&host, &PartitionSpec::default())?)
}

/// The program's inputs (q, k, v, d_o), seeded.
fn inputs(engine: &Engine, program: &Program, half: HalfType) -> anyhow::Result<Vec<ShardedArray>> {
    program
        .params
        .iter()
        .enumerate()
        .map(|(i, slot)| random_input(engine, &slot.ty, half, 1 + i as u64))
        .collect()
}

/// Relative L2 error and the largest absolute error relative to the reference's largest value.
fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    let (mut diff, mut norm, mut max_diff, mut max_ref) = (0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in got.iter().zip(want) {
        let d = (a as f64 - b as f64).abs();
        diff += d * d;
        norm += (b as f64) * (b as f64);
        max_diff = max_diff.max(if d.is_nan() { f64::INFINITY } else { d });
        max_ref = max_ref.max((b as f64).abs());
    }
    let rel = if diff.is_nan() {
        f64::INFINITY
    } else {
        (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
    };
    (rel, max_diff / max_ref.max(f64::MIN_POSITIVE))
}

/// Compares the cuDNN path (and, for scale, the composed half-precision path) with the f32
/// reference; true when every cuDNN output is within tolerance.
fn check(engine: &Engine, half: HalfType, shape: Shape) -> anyhow::Result<bool> {
    let program = engine.compile(&check_program(shape, half.dtype())?)?;
    let args = inputs(engine, &program, half)?;
    let results = program.run(args.iter().map(Input::Keep).collect())?;
    let fetch = |name: &str| -> anyhow::Result<Vec<f32>> {
        let i = program
            .output_index(name)
            .ok_or_else(|| anyhow::anyhow!("no output {name}"))?;
        Ok(engine.get(&results[i])?.to_f32())
    };
    println!(
        "correctness: B={} T={} heads={} kv_heads={} head_dim={} window={:?} in {:?}, against f32 composed attention (tolerance: relative L2 <= {:.0e})",
        shape.batch, shape.seq, shape.heads, shape.kv_heads, shape.head_dim, shape.window, half, half.tolerance()
    );
    println!(
        "  {:<6} {:>22} {:>22} {:>22}",
        "", "cudnn rel L2 / max", "xla-half rel L2 / max", "verdict"
    );
    let mut ok = true;
    for what in ["out", "dq", "dk", "dv"] {
        let reference = fetch(&format!("reference.{what}"))?;
        let (c_rel, c_max) = errors(&fetch(&format!("cudnn.{what}"))?, &reference);
        let (x_rel, x_max) = errors(&fetch(&format!("xla.{what}"))?, &reference);
        let pass = c_rel <= half.tolerance();
        ok &= pass;
        println!(
            "  {what:<6} {:>22} {:>22} {:>22}",
            format!("{c_rel:.2e} / {c_max:.2e}"),
            format!("{x_rel:.2e} / {x_max:.2e}"),
            if pass { "ok" } else { "FAIL" }
        );
    }
    Ok(ok)
}

/// Mean seconds of one forward + backward, and XLA's memory estimate for the program.
fn time(
    engine: &Engine,
    imp: Implementation,
    half: HalfType,
    shape: Shape,
    iters: usize,
) -> anyhow::Result<(f64, f64)> {
    // A half-precision program, timed as training compiles one: its f32 cotangent
    // products may use TF32.
    let hints = vishwam::engine::CompileHints {
        tf32_f32_matmuls: true,
        ..Default::default()
    };
    let program = engine.compile_with(&timed_program(imp, shape, half.dtype())?, hints)?;
    let args = inputs(engine, &program, half)?;
    let run = || -> anyhow::Result<Vec<ShardedArray>> {
        Ok(program.run(args.iter().map(Input::Keep).collect())?)
    };
    let wait = |outs: &[ShardedArray]| -> anyhow::Result<()> {
        for out in outs {
            for shard in &out.shards {
                shard.block_until_ready()?;
            }
        }
        Ok(())
    };
    for _ in 0..3 {
        wait(&run()?)?;
    }
    let start = Instant::now();
    let mut pending = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        pending.push(run()?);
    }
    for outs in &pending {
        wait(outs)?;
    }
    let seconds = start.elapsed().as_secs_f64() / iters.max(1) as f64;
    let memory = program.memory_stats()?.total_bytes() as f64 / (1u64 << 20) as f64;
    Ok((seconds, memory))
}

/// Runs the benchmark.
pub fn run(args: &AttentionBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.runtime.platform()? == Platform::Cuda,
        "`bench attention` measures cuDNN flash attention, which only the XLA CUDA plugin runs: \
         pass --platform cuda (got --platform {})",
        args.runtime.platform
    );
    anyhow::ensure!(
        args.kv_heads >= 1 && args.heads % args.kv_heads == 0,
        "--kv-heads ({}) must divide --heads ({})",
        args.kv_heads,
        args.heads
    );
    let client = args.runtime.open()?;
    let device = client
        .devices()
        .first()
        .and_then(|d| d.kind().ok())
        .unwrap_or_default();
    println!(
        "platform {} ({}), device {device}",
        client.platform_name()?,
        client.platform_version()?
    );
    let engine = Engine::new(client, Mesh::single(), CompileCache::disabled())?;

    let small = Shape {
        batch: 2,
        seq: 256,
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        window: args.window,
    };
    let correct = check(&engine, args.dtype, small)?;

    let shape = Shape {
        batch: args.batch,
        seq: args.seq,
        heads: args.heads,
        kv_heads: args.kv_heads,
        head_dim: args.head_dim,
        window: args.window,
    };
    println!(
        "speed: forward + backward of one layer's attention, B={} T={} heads={} kv_heads={} head_dim={} window={:?} in {:?}, mean of {} runs",
        shape.batch, shape.seq, shape.heads, shape.kv_heads, shape.head_dim, shape.window, args.dtype, args.iters
    );
    let mut cudnn_seconds = None;
    for imp in [
        Implementation::Cudnn,
        Implementation::XlaFull,
        Implementation::XlaBlocked(args.block),
    ] {
        match time(&engine, imp, args.dtype, shape, args.iters) {
            Ok((seconds, memory)) => {
                let speedup = cudnn_seconds
                    .map(|c: f64| format!("; cudnn is {:.2}x faster", seconds / c))
                    .unwrap_or_default();
                println!(
                    "  {:<24} {:>8.3} ms ({:.1} TFLOP/s, causal); x{} layers {:.1} ms; XLA memory {:.0} MiB{speedup}",
                    imp.name(),
                    seconds * 1e3,
                    shape.flops() / seconds / 1e12,
                    args.layers,
                    seconds * 1e3 * args.layers as f64,
                    memory
                );
                if imp == Implementation::Cudnn {
                    cudnn_seconds = Some(seconds);
                }
            }
            Err(e) => println!("  {:<24} failed: {e:#}", imp.name()),
        }
    }
    if !correct {
        eprintln!("error: cuDNN attention disagrees with the f32 reference beyond tolerance");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Shape = Shape {
        batch: 1,
        seq: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        window: None,
    };

    #[test]
    fn the_programs_trace_with_one_kernel_pair_each() {
        let text = |f: Func| f.to_stablehlo(&Default::default()).expect("printed");
        let check = text(check_program(SMALL, DType::BF16).expect("traced"));
        assert_eq!(check.matches("@__cudnn$fmhaSoftmax(").count(), 1);
        assert_eq!(check.matches("@__cudnn$fmhaSoftmaxBackward(").count(), 1);
        for imp in [
            Implementation::Cudnn,
            Implementation::XlaFull,
            Implementation::XlaBlocked(8),
        ] {
            let timed = text(timed_program(imp, SMALL, DType::F16).expect("traced"));
            let cudnn = usize::from(imp == Implementation::Cudnn);
            assert_eq!(
                timed.matches("@__cudnn$fmhaSoftmax(").count(),
                cudnn,
                "{imp:?}"
            );
        }
    }

    #[test]
    fn errors_are_relative_and_catch_nan() {
        let (rel, max) = errors(&[1.0, 2.0, 2.0], &[1.0, 2.0, 2.2]);
        assert!((rel - (0.04f64 / 9.84).sqrt()).abs() < 1e-6, "{rel}");
        assert!((max - 0.2 / 2.2).abs() < 1e-6, "{max}");
        assert_eq!(errors(&[f32::NAN], &[1.0]).0, f64::INFINITY);
        assert_eq!(errors(&[1.0], &[1.0]), (0.0, 0.0));
    }
}
