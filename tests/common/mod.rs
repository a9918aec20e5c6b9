//! Shared support for the integration tests: a CPU client and a private compile cache per test
//! binary, running the `vishwam` binary, and for the hlo tests host values, programs compiled
//! once from traced functions, and row-major host arrays for reference computations.
//!
//! A test file includes it with `mod common;`, a test directory's `main.rs` with
//! `#[path = "../common/mod.rs"] mod common;`.

#![allow(dead_code)]

/// The tiny Brown model that the binary-level tests train (`--set` assignments): 2 layers x
/// 32 wide, 4 query and 2 KV heads, a 512-token vocabulary, 64-token windows. Each test file
/// adds its own run settings.
pub const TINY_MODEL: &[&str] = &[
    "model.vocab_size=512",
    "model.hidden_dim=32",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.max_seq_len=64",
];

mod greedy;
mod hf_fixture;
pub mod model_family;
mod sample;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use greedy::{assert_same_greedy, GREEDY_TIE};
#[allow(unused_imports)]
pub use hf_fixture::write_random_bf16_safetensors;
#[allow(unused_imports)]
pub use sample::assert_sample_is_nucleus_sampling;

use rand::{Rng, SeedableRng};
use std::sync::OnceLock;
use vishwam::runtime::{
    Arg, Buffer, Client, ClientSpec, CompileCache, CompileOptions, LoadedExecutable,
};
use vishwam_hlo::{DType, Func, PrintOptions, TensorType};

/// Virtual CPU devices of the shared client (enough for a 2x2 mesh).
pub const DEVICES: usize = 4;

/// The CPU client shared by every test of a binary, with [`DEVICES`] virtual devices.
pub fn client() -> &'static Client {
    cpu_client(DEVICES)
}

/// The CPU client shared by every test of a binary, with `devices` virtual devices (opened
/// on first use; every call in one binary must ask for the same count).
pub fn cpu_client(devices: usize) -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        ClientSpec::cpu(devices)
            .open()
            .expect("open the CPU plugin")
    });
    assert_eq!(
        client.num_devices(),
        devices,
        "one device count per test binary"
    );
    client
}

/// A compile cache private to this test binary, so a program compiled twice compiles once.
pub fn private_cache() -> CompileCache {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    CompileCache::new(DIR.get_or_init(|| tempfile::tempdir().unwrap()).path())
}

/// The `vishwam` binary with `args`, its home in `home`, the CPU plugin found the way the
/// tests find it and warnings logged; a test may set more of its environment before running it.
pub fn vishwam_command(home: &std::path::Path, args: &[&str]) -> std::process::Command {
    let plugin =
        vishwam::runtime::resolve_plugin(vishwam::runtime::Platform::Cpu, None, None).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vishwam"));
    command
        .args(args)
        .env("VISHWAM_HOME", home)
        .env("VISHWAM_PJRT_PLUGIN", plugin)
        .env("VISHWAM_LOG", "warn");
    command
}

/// Runs the `vishwam` binary with `args`, its home in `home` ([`vishwam_command`]).
pub fn vishwam_cli(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    vishwam_command(home, args)
        .output()
        .expect("running the vishwam binary")
}

/// The stdout of a command that must have succeeded (else its output is the panic message).
pub fn succeeded(output: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The stderr of a command that must have failed.
pub fn failed(output: std::process::Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A seeded random generator.
pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

pub use vishwam::engine::element_type;

/// Graph parameters named after `specs`, each f32 of its spec's shape, in `specs`' order.
pub fn param_map(
    g: &vishwam_hlo::Graph,
    specs: &[vishwam::model::ParamSpec],
) -> vishwam_hlo::TensorMap {
    specs
        .iter()
        .map(|s| {
            let ty = TensorType::new(DType::F32, &s.shape);
            (s.name.clone(), g.param(&s.name, ty))
        })
        .collect()
}

/// Graph parameters for a batch: `tokens` and `targets` (i32 `[b, t]`), then `mask` (f32).
pub fn batch_params(g: &vishwam_hlo::Graph, b: i64, t: i64) -> [vishwam_hlo::Tensor; 3] {
    [
        g.param("tokens", TensorType::new(DType::I32, &[b, t])),
        g.param("targets", TensorType::new(DType::I32, &[b, t])),
        g.param("mask", TensorType::new(DType::F32, &[b, t])),
    ]
}

/// A typed host value: little-endian element bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Lit {
    pub ty: TensorType,
    pub bytes: Vec<u8>,
}

impl Lit {
    pub fn f64(shape: &[i64], data: &[f64]) -> Lit {
        assert_eq!(data.len() as i64, shape.iter().product::<i64>());
        Lit {
            ty: TensorType::new(DType::F64, shape),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    pub fn f32(shape: &[i64], data: &[f32]) -> Lit {
        Lit {
            ty: TensorType::new(DType::F32, shape),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    pub fn i32(shape: &[i64], data: &[i32]) -> Lit {
        Lit {
            ty: TensorType::new(DType::I32, shape),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    pub fn u32(shape: &[i64], data: &[u32]) -> Lit {
        Lit {
            ty: TensorType::new(DType::U32, shape),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    pub fn u64(shape: &[i64], data: &[u64]) -> Lit {
        Lit {
            ty: TensorType::new(DType::U64, shape),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    /// Host array of f64 values.
    pub fn from_host(h: &Host) -> Lit {
        Lit::f64(&h.shape, &h.data)
    }
    /// The elements as `f64` (booleans as 0/1).
    pub fn values(&self) -> Vec<f64> {
        let n = self.ty.dtype.size_bytes();
        self.bytes
            .chunks(n)
            .map(|c| match self.ty.dtype {
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
                DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::BF16 => half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::F16 => half::f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::F8E4M3FN => vishwam::runtime::f8e4m3fn_to_f32(c[0]) as f64,
                DType::F8E5M2 => vishwam::runtime::f8e5m2_to_f32(c[0]) as f64,
                DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U64 => u64::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::U8 | DType::I1 => c[0] as f64,
            })
            .collect()
    }
    /// The value as a host array.
    pub fn host(&self) -> Host {
        Host {
            shape: self.ty.shape.clone(),
            data: self.values(),
        }
    }
    /// Raw u32 elements.
    pub fn u32s(&self) -> Vec<u32> {
        self.bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    /// Raw u64 elements.
    pub fn u64s(&self) -> Vec<u64> {
        self.bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// A traced function compiled once for one device.
pub struct Program {
    pub func: Func,
    pub text: String,
    exe: LoadedExecutable,
}

impl Program {
    pub fn new(func: Func) -> Program {
        Program::with_options(func, &PrintOptions::default(), 1)
    }

    pub fn with_options(func: Func, opts: &PrintOptions, partitions: usize) -> Program {
        let text = func
            .to_stablehlo(opts)
            .unwrap_or_else(|e| panic!("print {}: {e}", func.name));
        let exe = client()
            .compile(&text, &CompileOptions::for_partitions(partitions))
            .unwrap_or_else(|e| panic!("compile {}: {e}\n{text}", func.name));
        Program { func, text, exe }
    }

    /// Runs on device 0 and returns every output.
    pub fn run(&self, inputs: &[Lit]) -> Vec<Lit> {
        assert_eq!(
            inputs.len(),
            self.func.params.len(),
            "{}: argument count",
            self.func.name
        );
        let bufs: Vec<Buffer> = inputs
            .iter()
            .zip(&self.func.params)
            .map(|(l, p)| {
                assert_eq!(l.ty, p.ty, "{}: argument `{}`", self.func.name, p.name);
                client()
                    .buffer_from_bytes(&l.bytes, element_type(l.ty.dtype), &l.ty.shape, 0)
                    .expect("upload")
            })
            .collect();
        let out = self
            .exe
            .execute(vec![bufs.iter().map(Arg::Keep).collect()])
            .expect("execute");
        out[0]
            .iter()
            .zip(&self.func.outputs)
            .map(|(b, o)| Lit {
                ty: self.func.value_type(o.value).clone(),
                bytes: b.to_bytes().expect("download"),
            })
            .collect()
    }

    /// Runs over several devices with one argument list per device; outputs per device.
    pub fn run_devices(&self, per_device: Vec<Vec<(Lit, bool)>>) -> Vec<Vec<Lit>> {
        let mut bufs: Vec<Vec<(Buffer, bool)>> = per_device
            .iter()
            .enumerate()
            .map(|(d, args)| {
                args.iter()
                    .map(|(l, donate)| {
                        let b = client()
                            .buffer_from_bytes(&l.bytes, element_type(l.ty.dtype), &l.ty.shape, d)
                            .expect("upload");
                        (b, *donate)
                    })
                    .collect()
            })
            .collect();
        let args: Vec<Vec<Arg>> = bufs
            .iter_mut()
            .map(|dev| {
                dev.iter_mut()
                    .map(|(b, donate)| {
                        if *donate {
                            Arg::Donate(b)
                        } else {
                            Arg::Keep(b)
                        }
                    })
                    .collect()
            })
            .collect();
        let out = self.exe.execute(args).expect("execute");
        out.iter()
            .map(|dev| {
                dev.iter()
                    .map(|b| {
                        let dims = b.dims().expect("dims");
                        let et = b.element_type().expect("type");
                        let dtype = DType::ALL
                            .into_iter()
                            .find(|&d| element_type(d) == et)
                            .expect("dtype");
                        Lit {
                            ty: TensorType::new(dtype, &dims),
                            bytes: b.to_bytes().expect("download"),
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// A row-major host array of f64 values for reference computations.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub shape: Vec<i64>,
    pub data: Vec<f64>,
}

impl Host {
    /// Uniform random values in `[lo, hi)`.
    pub fn random(shape: &[i64], lo: f64, hi: f64, r: &mut impl Rng) -> Host {
        let n = shape.iter().product::<i64>() as usize;
        Host {
            shape: shape.to_vec(),
            data: (0..n).map(|_| r.gen_range(lo..hi)).collect(),
        }
    }

    /// Random integers in `[0, hi)` (as f64).
    pub fn random_ints(shape: &[i64], hi: i64, r: &mut impl Rng) -> Host {
        let n = shape.iter().product::<i64>() as usize;
        Host {
            shape: shape.to_vec(),
            data: (0..n).map(|_| r.gen_range(0..hi) as f64).collect(),
        }
    }

    /// Builds an array whose element at each multi-index is `f(index)`.
    pub fn from_fn(shape: &[i64], mut f: impl FnMut(&[i64]) -> f64) -> Host {
        let n = shape.iter().product::<i64>() as usize;
        let mut idx = vec![0i64; shape.len()];
        let mut data = Vec::with_capacity(n);
        for _ in 0..n {
            data.push(f(&idx));
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Host {
            shape: shape.to_vec(),
            data,
        }
    }

    /// The element at a multi-index.
    pub fn at(&self, idx: &[i64]) -> f64 {
        let mut flat = 0i64;
        for (d, &i) in idx.iter().enumerate() {
            assert!(
                i >= 0 && i < self.shape[d],
                "index {idx:?} out of {:?}",
                self.shape
            );
            flat = flat * self.shape[d] + i;
        }
        self.data[flat as usize]
    }

    /// Elementwise map.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Host {
        Host {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// As i32 values.
    pub fn ints(&self) -> Vec<i32> {
        self.data.iter().map(|&v| v as i32).collect()
    }
}

/// `erf` to about 1e-15 for |x| <= 3 (Taylor series; the tests stay in that range).
pub fn erf(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-18 {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// Asserts that `got` matches `want` elementwise within `tol` (relative to magnitude, 1 floor).
pub fn assert_close(what: &str, got: &Lit, want: &Host, tol: f64) {
    assert_eq!(got.ty.shape, want.shape, "{what}: shape");
    for (i, (g, w)) in got.values().iter().zip(&want.data).enumerate() {
        let ok = (g - w).abs() <= tol * w.abs().max(1.0) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{what}[{i}]: device {g}, host {w}");
    }
}

/// Seeded batches for the training loop, built by `make(index, eval)`: train batch `index`,
/// or with `eval` the evaluation micro-batch `index` (`1_000_000 + i` for the i-th, the same
/// every time). Raises `stop_after.1` once `stop_after.0` train batches are served, as
/// Ctrl-C would; its position is the number served.
pub struct SyntheticBatches {
    make: Box<dyn Fn(u64, bool) -> vishwam::train::HostBatch>,
    served: u64,
    stop_after: Option<(u64, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
}

impl SyntheticBatches {
    /// A source whose batches come from `make`.
    pub fn new(
        make: impl Fn(u64, bool) -> vishwam::train::HostBatch + 'static,
        stop_after: Option<(u64, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
    ) -> SyntheticBatches {
        SyntheticBatches {
            make: Box::new(make),
            served: 0,
            stop_after,
        }
    }
}

impl vishwam::train::BatchSource for SyntheticBatches {
    fn next_train(&mut self) -> Result<vishwam::train::HostBatch, vishwam::train::TrainError> {
        let b = (self.make)(self.served, false);
        self.served += 1;
        if let Some((n, flag)) = &self.stop_after {
            if self.served >= *n {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Ok(b)
    }
    fn eval_batches(
        &mut self,
        count: usize,
    ) -> Result<Vec<vishwam::train::HostBatch>, vishwam::train::TrainError> {
        Ok((0..count as u64)
            .map(|i| (self.make)(1_000_000 + i, true))
            .collect())
    }
    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "served": self.served })
    }
    fn restore(&mut self, position: &serde_json::Value) -> Result<(), vishwam::train::TrainError> {
        self.served = position["served"]
            .as_u64()
            .ok_or_else(|| vishwam::train::TrainError::Other("bad position".into()))?;
        Ok(())
    }
}

/// `rows` windows of `seq` uniformly random tokens below `vocab` (targets shifted by one, no
/// padding), seeded by `seed`, as `accum` micro-batches.
pub fn random_token_batch(
    seed: u64,
    rows: usize,
    accum: usize,
    seq: usize,
    vocab: i32,
) -> vishwam::train::HostBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut tokens, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let s: Vec<i32> = (0..=seq).map(|_| rng.gen_range(0..vocab)).collect();
        tokens.extend_from_slice(&s[..seq]);
        targets.extend_from_slice(&s[1..]);
    }
    vishwam::train::HostBatch::from_rows(accum, seq, &tokens, &targets, &vec![1.0; rows * seq])
        .unwrap()
}

/// Asserts that a run stopped after `first` and resumed as `resumed` reproduces the
/// uninterrupted `full` run: the resume starts where `first` stopped, and the joined losses
/// and the final validation loss equal the uninterrupted run's bit for bit.
pub fn assert_resumed_exactly(
    first: &vishwam::train::RunSummary,
    resumed: &vishwam::train::RunSummary,
    full: &vishwam::train::RunSummary,
) {
    assert_eq!(resumed.start_step, first.steps);
    let joined: Vec<f32> = first
        .losses
        .iter()
        .chain(&resumed.losses)
        .copied()
        .collect();
    assert_eq!(
        joined, full.losses,
        "resumed losses must equal the uninterrupted run bit for bit"
    );
    let loss = |s: &vishwam::train::RunSummary| s.validation.as_ref().map(|v| v.loss);
    assert_eq!(loss(resumed), loss(full));
}
