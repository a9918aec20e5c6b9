//! The PJRT runtime against the real CPU plugin: programs, element types, SPMD over 8 virtual
//! devices, donation, staged (zero-copy) host-to-device transfers, errors and the compile cache.

use rand::{Rng, SeedableRng};
use std::sync::OnceLock;
use vishwam::runtime::*;

const DEVICES: usize = 8;

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        ClientSpec::cpu(DEVICES)
            .open()
            .expect("open the CPU plugin")
    })
}

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(7)
}

fn random_f32(n: usize, rng: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

fn run1(mlir: &str, inputs: &[(&[f32], &[i64])]) -> Vec<f32> {
    let c = client();
    let exe = c
        .compile(mlir, &CompileOptions::for_partitions(1))
        .expect("compile");
    let bufs: Vec<Buffer> = inputs
        .iter()
        .map(|(d, s)| c.buffer_from_slice(d, s, 0).expect("upload"))
        .collect();
    let out = exe
        .execute(vec![bufs.iter().map(Arg::Keep).collect()])
        .expect("execute");
    out[0][0].to_vec::<f32>().expect("download")
}

fn assert_close(got: &[f32], want: &[f32], rtol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "element {i} is {g}");
        assert!(
            (g - w).abs() <= rtol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn plugin_reports_version_and_devices() {
    let c = client();
    assert_eq!(c.platform_name().unwrap(), "cpu");
    assert_eq!(c.api().version().0, 0);
    assert!(c.api().version().1 >= MIN_API_MINOR);
    let devices = c.devices();
    assert_eq!(devices.len(), DEVICES);
    let ids: Vec<i32> = devices.iter().map(|d| d.id().unwrap()).collect();
    assert_eq!(ids, (0..DEVICES as i32).collect::<Vec<_>>());
    assert_eq!(devices[0].kind().unwrap(), "cpu");
}

#[test]
fn elementwise_program_matches_host() {
    let mut r = rng();
    let (a, b) = (random_f32(64, &mut r), random_f32(64, &mut r));
    let mlir = r#"module @m {
  func.func public @main(%a: tensor<8x8xf32>, %b: tensor<8x8xf32>) -> tensor<8x8xf32> {
    %0 = stablehlo.multiply %a, %b : tensor<8x8xf32>
    %1 = stablehlo.tanh %0 : tensor<8x8xf32>
    %2 = stablehlo.add %1, %a : tensor<8x8xf32>
    return %2 : tensor<8x8xf32>
  }
}"#;
    let got = run1(mlir, &[(&a, &[8, 8]), (&b, &[8, 8])]);
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x * y).tanh() + x).collect();
    assert_close(&got, &want, 1e-6);
}

#[test]
fn matmul_program_matches_host() {
    let mut r = rng();
    let (a, b) = (random_f32(8 * 16, &mut r), random_f32(16 * 4, &mut r));
    let mlir = r#"module @m {
  func.func public @main(%a: tensor<8x16xf32>, %b: tensor<16x4xf32>) -> tensor<8x4xf32> {
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0], precision = [HIGHEST, HIGHEST] : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
    return %0 : tensor<8x4xf32>
  }
}"#;
    let got = run1(mlir, &[(&a, &[8, 16]), (&b, &[16, 4])]);
    let mut want = vec![0f32; 32];
    for i in 0..8 {
        for j in 0..4 {
            want[i * 4 + j] = (0..16).map(|k| a[i * 16 + k] * b[k * 4 + j]).sum();
        }
    }
    assert_close(&got, &want, 1e-5);
}

#[test]
fn reduction_program_matches_host() {
    let mut r = rng();
    let a = random_f32(6 * 10, &mut r);
    let mlir = r#"module @m {
  func.func public @main(%a: tensor<6x10xf32>) -> tensor<6xf32> {
    %z = stablehlo.constant dense<0.0> : tensor<f32>
    %0 = stablehlo.reduce(%a init: %z) applies stablehlo.add across dimensions = [1] : (tensor<6x10xf32>, tensor<f32>) -> tensor<6xf32>
    return %0 : tensor<6xf32>
  }
}"#;
    let got = run1(mlir, &[(&a, &[6, 10])]);
    let want: Vec<f32> = (0..6)
        .map(|i| a[i * 10..(i + 1) * 10].iter().sum())
        .collect();
    assert_close(&got, &want, 1e-6);
}

#[test]
fn every_element_type_round_trips() {
    let c = client();
    let mut r = rng();
    for t in ElementType::ALL {
        let dims = [3i64, 5];
        let mut bytes: Vec<u8> = (0..15 * t.size_in_bytes()).map(|_| r.gen()).collect();
        if t == ElementType::Pred {
            bytes.iter_mut().for_each(|b| *b &= 1);
        }
        for device in [0, DEVICES - 1] {
            let buf = c.buffer_from_bytes(&bytes, t, &dims, device).unwrap();
            assert_eq!(buf.element_type().unwrap(), t);
            assert_eq!(buf.dims().unwrap(), dims);
            assert_eq!(buf.device_index().unwrap(), device);
            assert_eq!(buf.to_bytes().unwrap(), bytes, "{t:?} on device {device}");
        }
    }
}

#[test]
fn several_buffers_download_at_once_bit_exact() {
    let c = client();
    let mut r = rng();
    let arrays: Vec<(ElementType, Vec<i64>, Vec<u8>)> = ElementType::ALL
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let dims = vec![1 + i as i64 % 3, 7];
            let count = dims.iter().product::<i64>() as usize;
            let mut bytes: Vec<u8> = (0..count * t.size_in_bytes()).map(|_| r.gen()).collect();
            if t == ElementType::Pred {
                bytes.iter_mut().for_each(|b| *b &= 1);
            }
            (t, dims, bytes)
        })
        .collect();
    let buffers: Vec<Buffer> = arrays
        .iter()
        .enumerate()
        .map(|(i, (t, dims, bytes))| c.buffer_from_bytes(bytes, *t, dims, i % DEVICES).unwrap())
        .collect();
    // Zero-size arrays come back empty among the others.
    let empty: Vec<Buffer> = [vec![0i64], vec![3, 0, 2]]
        .iter()
        .map(|dims| c.buffer_from_bytes(&[], ElementType::F32, dims, 1).unwrap())
        .collect();
    let refs: Vec<&Buffer> = buffers.iter().chain(&empty).collect();
    let got = Buffer::to_bytes_all(&refs).unwrap();
    assert_eq!(got.len(), arrays.len() + 2);
    for ((t, _, want), got) in arrays.iter().zip(&got) {
        assert_eq!(got, want, "{t:?}");
    }
    assert!(got[arrays.len()..].iter().all(Vec::is_empty));
    // A deleted buffer among them is a clear error (found before any copy starts).
    buffers[3].delete().unwrap();
    let err = Buffer::to_bytes_all(&refs).unwrap_err();
    assert!(matches!(err, RuntimeError::BufferDeleted), "{err}");
}

/// The CPU client's staging counters; every staged transfer so far must have been zero-copy
/// (one that the plugin copied would turn staging off for the whole client).
fn staging_stats() -> StagingStats {
    let stats = client()
        .staging_stats()
        .expect("the CPU client stages host-to-device transfers");
    assert!(
        stats.enabled && stats.copied_transfers == 0,
        "the plugin copied a staged transfer: {stats:?}"
    );
    stats
}

fn random_bytes(t: ElementType, count: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..count * t.size_in_bytes()).map(|_| rng.gen()).collect();
    if t == ElementType::Pred {
        bytes.iter_mut().for_each(|b| *b &= 1);
    }
    bytes
}

#[test]
fn staged_transfers_are_zero_copy_and_bit_exact() {
    let c = client();
    let mut r = rng();
    let before = staging_stats();
    let types = [
        ElementType::F32,
        ElementType::BF16,
        ElementType::F64,
        ElementType::S8,
        ElementType::Pred,
        ElementType::F8E4M3FN,
        ElementType::S64,
    ];
    // Byte sizes below, at and across the 64-byte staging alignment, most not a multiple of it.
    let shapes: [&[i64]; 6] = [&[1], &[3, 5], &[16], &[7, 9, 11], &[4099], &[2, 65537]];
    let mut staged = 0;
    for t in types {
        for dims in shapes {
            let count = dims.iter().product::<i64>() as usize;
            let bytes = random_bytes(t, count, &mut r);
            let buf = c.buffer_from_bytes(&bytes, t, dims, 0).unwrap();
            staged += 1;
            assert_eq!(buf.element_type().unwrap(), t);
            assert_eq!(buf.dims().unwrap(), dims);
            assert_eq!(buf.to_bytes().unwrap(), bytes, "{t:?}{dims:?}");
        }
    }
    let after = staging_stats();
    assert!(
        after.zero_copy_transfers - before.zero_copy_transfers >= staged,
        "{staged} transfers, stats before {before:?}, after {after:?}"
    );
    // Empty arrays take the plain path and round-trip too.
    for dims in [&[0i64][..], &[3, 0, 2]] {
        let buf = c.buffer_from_bytes(&[], ElementType::F32, dims, 0).unwrap();
        assert_eq!(buf.dims().unwrap(), dims);
        assert!(buf.to_bytes().unwrap().is_empty());
    }
}

#[test]
fn the_callers_slice_can_be_overwritten_right_after_a_transfer() {
    let c = client();
    let mut r = rng();
    let mut host = random_f32(5000, &mut r);
    let mut buffers = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..8 {
        buffers.push(c.buffer_from_slice(&host, &[5000], 0).unwrap());
        expected.push(host.clone());
        host.iter_mut().for_each(|x| *x = r.gen_range(-2.0..2.0));
    }
    for (buf, want) in buffers.iter().zip(&expected) {
        assert_eq!(&buf.to_vec::<f32>().unwrap(), want);
    }
}

#[test]
fn a_donated_staged_buffer_keeps_its_output_while_the_pool_is_reused() {
    // The output of an aliasing program lives in the donated input's staging block, so the
    // block must stay out of the pool until that output is freed, not when the input is.
    let c = client();
    let exe = c
        .compile(ALIASING, &CompileOptions::for_partitions(1))
        .unwrap();
    let mut r = rng();
    let a = random_f32(1024, &mut r);
    let mut a_buf = c.buffer_from_slice(&a, &[1024], 0).unwrap();
    let out = exe.execute(vec![vec![Arg::Donate(&mut a_buf)]]).unwrap();
    assert!(a_buf.is_deleted());
    drop(a_buf);
    for round in 0..64 {
        let b = random_f32(1024, &mut r);
        let mut b_buf = c.buffer_from_slice(&b, &[1024], 0).unwrap();
        if round % 2 == 0 {
            assert_eq!(b_buf.to_vec::<f32>().unwrap(), b);
        } else {
            let b_out = exe.execute(vec![vec![Arg::Donate(&mut b_buf)]]).unwrap();
            let want: Vec<f32> = b.iter().map(|x| x + x).collect();
            assert_eq!(b_out[0][0].to_vec::<f32>().unwrap(), want);
        }
    }
    let got = out[0][0].to_vec::<f32>().unwrap();
    let wrong = got.iter().zip(&a).filter(|(g, x)| **g != *x + *x).count();
    assert_eq!(
        wrong, 0,
        "the donated block was reused while its output lived"
    );
    assert!(staging_stats().blocks_in_use >= 1);
}

#[test]
fn many_staged_buffers_alive_at_once_stay_distinct_and_the_pool_stays_bounded() {
    let c = client();
    let mut r = rng();
    let count = MAX_FREE_BLOCKS + 16;
    let hosts: Vec<Vec<f32>> = (0..count).map(|_| random_f32(3001, &mut r)).collect();
    let buffers: Vec<Buffer> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| c.buffer_from_slice(h, &[3001], i % DEVICES).unwrap())
        .collect();
    assert!(staging_stats().blocks_in_use >= count);
    for (i, (buf, host)) in buffers.iter().zip(&hosts).enumerate() {
        assert_eq!(buf.device_index().unwrap(), i % DEVICES);
        assert_eq!(&buf.to_vec::<f32>().unwrap(), host, "buffer {i}");
    }
    drop(buffers);
    let stats = staging_stats();
    assert!(
        stats.free_blocks <= MAX_FREE_BLOCKS && stats.free_bytes <= MAX_FREE_BYTES,
        "{stats:?}"
    );
}

#[test]
fn devices_interpret_element_types_like_the_host() {
    // Convert each type to f64 on the device and compare with the host's decoding.
    let c = client();
    let mut r = rng();
    for t in ElementType::ALL {
        if t == ElementType::F64 {
            continue;
        }
        let n = 16usize;
        let mut bytes: Vec<u8> = (0..n * t.size_in_bytes()).map(|_| r.gen()).collect();
        if t == ElementType::Pred {
            bytes.iter_mut().for_each(|b| *b &= 1);
        }
        let host: Vec<f64> = (0..n)
            .map(|i| {
                let s = &bytes[i * t.size_in_bytes()..(i + 1) * t.size_in_bytes()];
                match t {
                    ElementType::Pred | ElementType::U8 => s[0] as f64,
                    ElementType::S8 => s[0] as i8 as f64,
                    ElementType::S32 => i32::from_le_bytes(s.try_into().unwrap()) as f64,
                    ElementType::S64 => i64::from_le_bytes(s.try_into().unwrap()) as f64,
                    ElementType::U32 => u32::from_le_bytes(s.try_into().unwrap()) as f64,
                    ElementType::U64 => u64::from_le_bytes(s.try_into().unwrap()) as f64,
                    ElementType::F16 => half::f16::from_le_bytes(s.try_into().unwrap()).to_f64(),
                    ElementType::BF16 => half::bf16::from_le_bytes(s.try_into().unwrap()).to_f64(),
                    ElementType::F32 => f32::from_le_bytes(s.try_into().unwrap()) as f64,
                    ElementType::F8E4M3FN => f8e4m3fn_to_f32(s[0]) as f64,
                    ElementType::F8E5M2 => f8e5m2_to_f32(s[0]) as f64,
                    ElementType::F64 => unreachable!(),
                }
            })
            .collect();
        let ty = t.mlir_name();
        let mlir = format!(
            "module @m {{ func.func public @main(%a: tensor<{n}x{ty}>) -> tensor<{n}xf64> {{ %0 = stablehlo.convert %a : (tensor<{n}x{ty}>) -> tensor<{n}xf64> return %0 : tensor<{n}xf64> }} }}"
        );
        let exe = c
            .compile(&mlir, &CompileOptions::for_partitions(1))
            .unwrap();
        let buf = c.buffer_from_bytes(&bytes, t, &[n as i64], 0).unwrap();
        let out = exe.execute(vec![vec![Arg::Keep(&buf)]]).unwrap();
        let got = out[0][0].to_vec::<f64>().unwrap();
        for (i, (g, h)) in got.iter().zip(&host).enumerate() {
            assert!(
                g == h || (g.is_nan() && h.is_nan()),
                "{t:?}[{i}]: device {g}, host {h}"
            );
        }
    }
}

#[test]
fn spmd_program_gives_each_of_8_devices_its_own_shard() {
    let c = client();
    let mlir = r#"module @m attributes {mhlo.num_partitions = 8 : i32, mhlo.num_replicas = 1 : i32} {
  sdy.mesh @mesh = <["x"=8]>
  func.func public @main(%a: tensor<8x4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>}) -> (tensor<8x4xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"x"}, {}]>}) {
    %0 = stablehlo.add %a, %a : tensor<8x4xf32>
    return %0 : tensor<8x4xf32>
  }
}"#;
    let mut opts = CompileOptions::for_partitions(DEVICES);
    opts.device_assignment = (0..DEVICES as i64).collect();
    let exe = c.compile(mlir, &opts).unwrap();
    assert_eq!(exe.num_devices(), DEVICES);
    assert_eq!(exe.device_indices(), (0..DEVICES).collect::<Vec<_>>());
    // Three rounds of distinct random shards: on the CPU each is a staged transfer, and later
    // rounds reuse the staging blocks of earlier ones.
    let mut r = rng();
    for _ in 0..3 {
        let hosts: Vec<Vec<f32>> = (0..DEVICES).map(|_| random_f32(4, &mut r)).collect();
        let shards: Vec<Buffer> = hosts
            .iter()
            .enumerate()
            .map(|(d, h)| c.buffer_from_slice(h, &[1, 4], d).unwrap())
            .collect();
        let out = exe
            .execute(shards.iter().map(|b| vec![Arg::Keep(b)]).collect())
            .unwrap();
        assert_eq!(out.len(), DEVICES);
        for (d, (outs, host)) in out.iter().zip(&hosts).enumerate() {
            assert_eq!(outs[0].device_index().unwrap(), d);
            assert_eq!(outs[0].dims().unwrap(), vec![1, 4]);
            let want: Vec<f32> = host.iter().map(|x| 2.0 * x).collect();
            assert_eq!(outs[0].to_vec::<f32>().unwrap(), want, "device {d}");
            assert_eq!(&shards[d].to_vec::<f32>().unwrap(), host, "input {d} kept");
        }
    }
}

const ALIASING: &str = r#"module @m {
  func.func public @main(%a: tensor<1024xf32> {tf.aliasing_output = 0 : i32}) -> tensor<1024xf32> {
    %0 = stablehlo.add %a, %a : tensor<1024xf32>
    return %0 : tensor<1024xf32>
  }
}"#;

#[test]
fn donated_buffer_is_consumed_and_cannot_be_used_again() {
    let c = client();
    let exe = c
        .compile(ALIASING, &CompileOptions::for_partitions(1))
        .unwrap();
    assert_eq!(exe.compiled_memory_stats().unwrap().alias_bytes, 4096);
    let data: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    let mut a = c.buffer_from_slice(&data, &[1024], 0).unwrap();
    let out = exe.execute(vec![vec![Arg::Donate(&mut a)]]).unwrap();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap()[3], 6.0);
    assert!(a.is_deleted());
    assert!(matches!(a.to_bytes(), Err(RuntimeError::BufferDeleted)));
    let again = exe.execute(vec![vec![Arg::Donate(&mut a)]]);
    let msg = again
        .expect_err("reusing a donated buffer must fail")
        .to_string();
    assert!(msg.contains("donated"), "{msg}");
}

#[test]
fn kept_buffer_survives_an_aliasing_program() {
    let c = client();
    let exe = c
        .compile(ALIASING, &CompileOptions::for_partitions(1))
        .unwrap();
    let data: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    let a = c.buffer_from_slice(&data, &[1024], 0).unwrap();
    let out = exe.execute(vec![vec![Arg::Keep(&a)]]).unwrap();
    assert!(!a.is_deleted());
    assert_eq!(a.to_vec::<f32>().unwrap(), data);
    assert_eq!(out[0][0].to_vec::<f32>().unwrap()[5], 10.0);
}

#[test]
fn malformed_mlir_is_a_clear_error() {
    let err = client()
        .compile(
            "module @m { func.func public @main( -> }",
            &CompileOptions::for_partitions(1),
        )
        .err()
        .expect("malformed MLIR must not compile");
    assert!(err.pjrt_code().is_some(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("PJRT_Client_Compile") && msg.contains("error: expected"),
        "{msg}"
    );
}

#[test]
fn type_errors_in_mlir_are_reported() {
    let mlir = "module @m { func.func public @main(%a: tensor<4xf32>) -> tensor<4xf32> { %0 = stablehlo.add %a, %a : tensor<5xf32> return %0 : tensor<4xf32> } }";
    let err = client()
        .compile(mlir, &CompileOptions::for_partitions(1))
        .err()
        .unwrap();
    assert!(err.pjrt_code().is_some(), "{err}");
}

#[test]
fn wrong_arguments_are_rejected_before_running() {
    let c = client();
    let exe = c
        .compile(ALIASING, &CompileOptions::for_partitions(1))
        .unwrap();
    assert!(exe
        .execute(vec![])
        .err()
        .unwrap()
        .to_string()
        .contains("1 devices but 0"));
    let bad = c.buffer_from_bytes(&[0u8; 7], ElementType::F32, &[2], 0);
    assert!(matches!(
        bad,
        Err(RuntimeError::HostSize {
            expected: 8,
            actual: 7,
            ..
        })
    ));
}

#[test]
fn missing_plugin_gives_a_clear_error() {
    let missing = std::path::Path::new("/nonexistent/pjrt_plugin.so");
    let err = Api::load(missing).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/pjrt_plugin.so") && err.contains("--plugin"),
        "{err}"
    );
    let err = resolve_plugin(Platform::Cpu, Some(missing), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--plugin names /nonexistent/pjrt_plugin.so"),
        "{err}"
    );
    let not_a_plugin = tempfile::NamedTempFile::new().unwrap();
    let err = Api::load(not_a_plugin.path()).unwrap_err().to_string();
    assert!(err.contains("cannot load PJRT plugin"), "{err}");
}

#[test]
fn compile_cache_hits_and_recovers_from_corruption() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path());
    let opts = CompileOptions::for_partitions(1);
    let run = |exe: &LoadedExecutable| {
        let a = c.buffer_from_slice(&[1.5f32; 1024], &[1024], 0).unwrap();
        exe.execute(vec![vec![Arg::Keep(&a)]]).unwrap()[0][0]
            .to_vec::<f32>()
            .unwrap()
    };
    let (first, outcome) = cache.compile(c, ALIASING, &opts).unwrap();
    assert_eq!(outcome, CacheOutcome::Miss);
    let (second, outcome) = cache.compile(c, ALIASING, &opts).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(run(&first), run(&second));

    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let (third, outcome) = cache.compile(c, ALIASING, &opts).unwrap();
    assert_eq!(outcome, CacheOutcome::Replaced);
    assert_eq!(run(&third), run(&first));
    assert_eq!(
        cache.compile(c, ALIASING, &opts).unwrap().1,
        CacheOutcome::Hit
    );

    // A different program or different options is a different entry.
    let other = CompileOptions {
        use_shardy_partitioner: false,
        ..opts
    };
    assert_eq!(
        cache.compile(c, ALIASING, &other).unwrap().1,
        CacheOutcome::Miss
    );
}

#[test]
fn the_compile_cache_key_covers_options_and_xla_flags() {
    let c = client();
    let base = CompileOptions::for_partitions(1);
    let key = |opts: &CompileOptions| CompileCache::key(c, ALIASING, opts).unwrap();
    let plain = key(&base);
    assert_eq!(plain, key(&base), "the key is deterministic");
    let mut hinted = base.clone();
    hinted.overrides.push((
        "xla_gpu_enable_command_buffer".into(),
        OptionValue::Str(String::new()),
    ));
    assert_ne!(plain, key(&hinted), "compile options are part of the key");
    // The plugin reads XLA_FLAGS too: the key of the same compilation under other flags differs.
    let under = |flags: &str| {
        CompileCache::key_for_flags(c, ALIASING, &base, std::ffi::OsStr::new(flags)).unwrap()
    };
    let unset = std::env::var_os("XLA_FLAGS").is_none();
    if unset {
        assert_eq!(plain, under(""));
    }
    assert_ne!(under(""), under("--xla_cpu_enable_fast_math=false"));
    assert_eq!(plain, key(&base));
}

#[test]
fn clients_can_be_dropped_and_opened_again_in_one_process() {
    // Each client shares the plugin loaded once; unloading it when a client dropped made the
    // next client crash the process at exit.
    for round in 0..2 {
        let c = ClientSpec::cpu(1).open().unwrap();
        let values: Vec<f32> = (0..1000).map(|i| (i + round) as f32).collect();
        let b = c.buffer_from_slice(&values, &[1000], 0).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), values);
        drop(b);
        drop(c);
    }
    assert!(std::sync::Arc::ptr_eq(
        ClientSpec::cpu(1).open().unwrap().api(),
        client().api()
    ));
}
