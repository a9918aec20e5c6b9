//! `vishwam doctor`: what plugin and devices vishwam sees, and whether a matmul runs right.

use super::RuntimeArgs;
use rand::{Rng, SeedableRng};
use std::process::ExitCode;
use std::time::Instant;
use vishwam::runtime::{Arg, CompileOptions};

/// Arguments of `vishwam doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// As one process of a multi-process job: print the job's devices as this process sees
    /// them and run one program over all of them.
    #[command(flatten)]
    process: vishwam::distributed::ProcessFlags,
}

const M: usize = 64;
const K: usize = 128;
const N: usize = 32;

/// Prints the plugin, API version, platform and devices, then runs a smoke-test matmul.
pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    if let Some(spec) = super::multiprocess::spec_of(&args.process)? {
        return super::multiprocess::doctor(&args.runtime, &args.process, &spec);
    }
    let client = args.runtime.open()?;
    let api = client.api();
    println!("plugin:        {}", api.path().display());
    println!("PJRT C API:    {}.{}", api.version().0, api.version().1);
    for (k, v) in api.attributes()? {
        println!("  {k:<22} {v}");
    }
    println!(
        "platform:      {} ({})",
        client.platform_name()?,
        client.platform_version()?
    );
    println!("devices:       {}", client.num_devices());
    for d in client.devices() {
        let memory = match d.memory_stats() {
            Ok(s) => match s.bytes_limit {
                Some(limit) => format!(
                    "{:.1} GiB limit, {:.1} MiB in use",
                    limit as f64 / (1u64 << 30) as f64,
                    s.bytes_in_use as f64 / (1u64 << 20) as f64
                ),
                None => format!(
                    "{:.1} MiB in use",
                    s.bytes_in_use as f64 / (1u64 << 20) as f64
                ),
            },
            Err(_) => "memory: not reported by this plugin".to_string(),
        };
        println!(
            "  [{}] id={} kind={:<24} {}",
            d.index(),
            d.id()?,
            d.kind()?,
            memory
        );
    }

    let mlir = format!(
        "module @doctor {{\n  func.func public @main(%a: tensor<{M}x{K}xf32>, %b: tensor<{K}x{N}xf32>) -> tensor<{M}x{N}xf32> {{\n    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0], precision = [HIGHEST, HIGHEST] : (tensor<{M}x{K}xf32>, tensor<{K}x{N}xf32>) -> tensor<{M}x{N}xf32>\n    %1 = stablehlo.tanh %0 : tensor<{M}x{N}xf32>\n    return %1 : tensor<{M}x{N}xf32>\n  }}\n}}"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let a: Vec<f32> = (0..M * K).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..K * N).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let start = Instant::now();
    let exe = client.compile(&mlir, &CompileOptions::for_partitions(1))?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let da = client.buffer_from_slice(&a, &[M as i64, K as i64], 0)?;
    let db = client.buffer_from_slice(&b, &[K as i64, N as i64], 0)?;
    let out = exe.execute(vec![vec![Arg::Keep(&da), Arg::Keep(&db)]])?;
    let got = out[0][0].to_vec::<f32>()?;
    let mut max_err = 0f64;
    for i in 0..M {
        for j in 0..N {
            let want: f64 = (0..K)
                .map(|k| a[i * K + k] as f64 * b[k * N + j] as f64)
                .sum::<f64>()
                .tanh();
            let g = got[i * N + j] as f64;
            max_err = if g.is_finite() {
                max_err.max((g - want).abs())
            } else {
                f64::INFINITY
            };
        }
    }
    let ok = max_err < 1e-4;
    println!(
        "smoke test:    tanh({M}x{K} @ {K}x{N}) compiled in {compile_ms:.1} ms, max |error| vs host f64 = {max_err:.2e} -> {}",
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
