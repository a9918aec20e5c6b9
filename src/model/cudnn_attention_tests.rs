//! Golden tests: the cuDNN custom calls vishwam prints against those jax lowers for CUDA
//! (`testdata/jax_cudnn_*.mlir`: jax 0.10.2 and 0.11.2 print them identically), plus the
//! operand wiring, casts and the CPU plugin's refusal.

use super::*;
use crate::runtime::{ClientSpec, CompileOptions};
use vishwam_hlo::{PrintOptions, TensorType};

const JAX_GQA_BF16: &str = include_str!("testdata/jax_cudnn_gqa_bf16.mlir");
const JAX_MHA_F16: &str = include_str!("testdata/jax_cudnn_mha_f16.mlir");

/// One printed `stablehlo.custom_call`, taken apart.
#[derive(Debug, PartialEq)]
struct Call {
    /// The `%name` (or `%name:k`) its results are bound to.
    results: String,
    target: String,
    operands: Vec<String>,
    backend_config: serde_json::Value,
    api_version: u32,
    has_side_effect: bool,
    operand_layouts: Vec<Vec<usize>>,
    result_layouts: Vec<Vec<usize>>,
    /// `(operand types) -> (result types)`.
    signature: String,
}

/// The custom calls of `target` in a module, in order.
fn calls(module: &str, target: &str) -> Vec<Call> {
    let marker = format!("stablehlo.custom_call @{target}(");
    module
        .lines()
        .filter(|l| l.contains(&marker))
        .map(|line| {
            let (lhs, rest) = line.split_once(" = ").expect("a bound custom call");
            let rest = rest
                .strip_prefix(&marker[..marker.len() - 1])
                .expect("call");
            let (operands, rest) = rest[1..].split_once(')').expect("operand list");
            let (attrs, signature) = rest.rsplit_once("} : ").expect("attributes");
            let config_start = attrs.find("backend_config = \"").expect("backend_config")
                + "backend_config = \"".len();
            let config = decode_mlir_string(&attrs[config_start..]);
            let number = |key: &str| -> Option<String> {
                let at = attrs.find(&format!("{key} = "))? + key.len() + 3;
                Some(
                    attrs[at..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric())
                        .collect(),
                )
            };
            Call {
                results: lhs.trim().to_string(),
                target: target.to_string(),
                operands: operands.split(", ").map(str::to_string).collect(),
                backend_config: serde_json::from_str(&config).expect("backend_config is JSON"),
                api_version: number("api_version").expect("api_version").parse().unwrap(),
                has_side_effect: number("has_side_effect").as_deref() == Some("true"),
                operand_layouts: layouts(attrs, "operand_layouts"),
                result_layouts: layouts(attrs, "result_layouts"),
                signature: signature.trim().to_string(),
            }
        })
        .collect()
}

/// The body of an MLIR string literal starting right after its opening quote: `\"`, `\\`,
/// `\n`, `\t` and two-hex-digit escapes decoded, up to the closing quote.
fn decode_mlir_string(s: &str) -> String {
    let bytes = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while bytes[i] != b'"' {
        if bytes[i] == b'\\' {
            let (byte, width) = match bytes[i + 1] {
                b'"' => (b'"', 2),
                b'\\' => (b'\\', 2),
                b'n' => (b'\n', 2),
                b't' => (b'\t', 2),
                _ => (
                    u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape"),
                    3,
                ),
            };
            out.push(byte);
            i += width;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// `name = [dense<[3, 2, 1, 0]> : tensor<4xindex>, dense<0> : tensor<1xindex>]` as lists.
fn layouts(attrs: &str, name: &str) -> Vec<Vec<usize>> {
    let Some(at) = attrs.find(&format!("{name} = [")) else {
        return Vec::new();
    };
    let list = &attrs[at + name.len() + 4..];
    let mut depth = 1;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            depth += match c {
                '[' => 1,
                ']' => -1,
                _ => 0,
            };
            depth == 0
        })
        .map(|(i, _)| i)
        .expect("closed list");
    list[..end]
        .split("dense<")
        .skip(1)
        .map(|item| {
            let body = item.split_once('>').expect("dense<...>").0;
            body.trim_matches(['[', ']'])
                .split(", ")
                .map(|x| x.parse().expect("a dim"))
                .collect()
        })
        .collect()
}

/// Prints the gradient of `sum(f32(attention(q, k, v))^2)` w.r.t. q, k and v, the function
/// the jax captures differentiate.
fn grad_module(q: TensorType, kv: TensorType) -> String {
    let g = Graph::named("grad");
    let (q, k, v) = (g.param("q", q), g.param("k", kv.clone()), g.param("v", kv));
    let out = cudnn_attention(&q, &k, &v);
    let loss = out.cast(DType::F32).square().sum_all();
    let grads = g.grad(&loss, &[q, k, v]).expect("differentiable");
    g.finish(&[("dq", &grads[0]), ("dk", &grads[1]), ("dv", &grads[2])])
        .expect("traced")
        .to_stablehlo(&PrintOptions::default())
        .expect("printed")
}

/// Compares everything but value names.
fn assert_same_call(ours: &Call, jax: &Call) {
    assert_eq!(ours.target, jax.target);
    assert_eq!(ours.signature, jax.signature, "{}", ours.target);
    assert_eq!(ours.operand_layouts, jax.operand_layouts, "{}", ours.target);
    assert_eq!(ours.result_layouts, jax.result_layouts, "{}", ours.target);
    assert_eq!(ours.api_version, jax.api_version, "{}", ours.target);
    assert_eq!(ours.has_side_effect, jax.has_side_effect, "{}", ours.target);
    assert_eq!(ours.operands.len(), jax.operands.len(), "{}", ours.target);
    assert_eq!(
        ours.backend_config, jax.backend_config,
        "{}: backend_config differs from jax's\nours: {}\njax:  {}",
        ours.target, ours.backend_config, jax.backend_config
    );
}

/// The forward and backward calls of a module (exactly one each).
fn fwd_bwd(module: &str) -> (Call, Call) {
    let mut fwd = calls(module, FORWARD_TARGET);
    let mut bwd = calls(module, BACKWARD_TARGET);
    assert_eq!((fwd.len(), bwd.len()), (1, 1), "{module}");
    (fwd.remove(0), bwd.remove(0))
}

fn check_against_jax(jax_module: &str, q: TensorType, kv: TensorType) {
    let ours = grad_module(q, kv);
    let (ours_fwd, ours_bwd) = fwd_bwd(&ours);
    let (jax_fwd, jax_bwd) = fwd_bwd(jax_module);
    assert_same_call(&ours_fwd, &jax_fwd);
    assert_same_call(&ours_bwd, &jax_bwd);

    // Operand wiring of the backward call, as jax has it: (q, k, v, stats, dO, O), with the
    // stats the forward call's second result and O its first result transposed to [B,T,N,D].
    let fwd_name = ours_fwd
        .results
        .split(':')
        .next()
        .expect("name")
        .to_string();
    assert_eq!(ours_bwd.operands[..3], ours_fwd.operands[..]);
    assert_eq!(ours_bwd.operands[3], format!("{fwd_name}#1"));
    let o = &ours_bwd.operands[5];
    let transposed = format!("{o} = stablehlo.transpose {fwd_name}#0, dims = [0, 2, 1, 3]");
    assert!(
        ours.contains(&transposed),
        "O is not the forward output:\n{ours}"
    );
    assert_eq!(jax_bwd.operands[3], "%1#1");
}

#[test]
fn gqa_bf16_calls_match_jax() {
    check_against_jax(
        JAX_GQA_BF16,
        TensorType::new(DType::BF16, &[2, 128, 12, 64]),
        TensorType::new(DType::BF16, &[2, 128, 4, 64]),
    );
}

#[test]
fn mha_f16_calls_match_jax() {
    check_against_jax(
        JAX_MHA_F16,
        TensorType::new(DType::F16, &[1, 256, 8, 128]),
        TensorType::new(DType::F16, &[1, 256, 8, 128]),
    );
}

#[test]
fn the_parser_sees_what_differs() {
    // A guard on the comparison itself: a different scale, mask or layout must show.
    let (jax_fwd, _) = fwd_bwd(JAX_GQA_BF16);
    let (f16_fwd, _) = fwd_bwd(JAX_MHA_F16);
    assert_ne!(jax_fwd.backend_config, f16_fwd.backend_config);
    assert_ne!(jax_fwd.signature, f16_fwd.signature);
    let cfg = &jax_fwd.backend_config["cudnn_fmha_backend_config"];
    assert_eq!(cfg["fmha_scale"], 0.125);
    assert_eq!(cfg["mask_type"], "CAUSAL");
    assert_eq!(
        jax_fwd.result_layouts,
        [vec![3, 1, 2, 0], vec![2, 1, 0], vec![0]]
    );
}

#[test]
fn f32_operands_run_the_kernel_in_bf16() {
    let g = Graph::named("cast");
    let q = g.param("q", TensorType::new(DType::F32, &[1, 16, 4, 32]));
    let kv = TensorType::new(DType::F32, &[1, 16, 2, 32]);
    let (k, v) = (g.param("k", kv.clone()), g.param("v", kv));
    let out = cudnn_attention(&q, &k, &v);
    assert_eq!(out.ty(), q.ty());
    let text = g
        .finish(&[("out", &out)])
        .expect("traced")
        .to_stablehlo(&PrintOptions::default())
        .expect("printed");
    let fwd = &calls(&text, FORWARD_TARGET)[0];
    assert!(
        fwd.signature
            .starts_with("(tensor<1x16x4x32xbf16>, tensor<1x16x2x32xbf16>"),
        "{}",
        fwd.signature
    );
    let cfg = &fwd.backend_config["cudnn_fmha_backend_config"];
    // serde_json's default float parsing may miss the last bit; the printed text is exact.
    let scale = cfg["fmha_scale"].as_f64().expect("a number");
    assert!((scale - 1.0 / 32f64.sqrt()).abs() < 1e-15, "{scale}");
    assert_eq!(
        cfg["intermediate_tensor_shape"]["dimensions"],
        serde_json::json!(["1", "4", "16", "16"])
    );
}

#[test]
fn the_cpu_plugin_refuses_the_kernel_by_name() {
    // Training never selects this path off CUDA (see train::attention_kind); a program that
    // holds it anyway fails to compile on the CPU plugin, which names the missing target.
    let g = Graph::named("cpu");
    let t = TensorType::new(DType::BF16, &[1, 8, 2, 16]);
    let (q, k, v) = (
        g.param("q", t.clone()),
        g.param("k", t.clone()),
        g.param("v", t),
    );
    let out = cudnn_attention(&q, &k, &v);
    let text = g
        .finish(&[("out", &out)])
        .expect("traced")
        .to_stablehlo(&PrintOptions::default())
        .expect("printed");
    let client = ClientSpec::cpu(1).open().expect("the CPU plugin");
    let err = client
        .compile(&text, &CompileOptions::for_partitions(1))
        .err()
        .expect("the CPU plugin has no cuDNN");
    assert!(err.to_string().contains(FORWARD_TARGET), "{err}");
}

#[test]
fn a_window_and_a_scale_reach_both_calls_and_nothing_else_changes() {
    // Gemma 2's local blocks: a window of 4096 and queries scaled by 144^-0.5; both calls
    // carry them, and every other field is jax's plain causal config.
    let q = TensorType::new(DType::BF16, &[2, 128, 12, 64]);
    let kv = TensorType::new(DType::BF16, &[2, 128, 4, 64]);
    let g = Graph::named("window");
    let (q, k, v) = (g.param("q", q), g.param("k", kv.clone()), g.param("v", kv));
    let spec = crate::model::AttentionSpec {
        scale: 1.0 / 144f64.sqrt(),
        softcap: None,
        window: Some(4096),
    };
    let out = cudnn_attention_with(&q, &k, &v, &spec);
    let loss = out.cast(DType::F32).square().sum_all();
    let grads = g.grad(&loss, &[q, k, v]).expect("differentiable");
    let text = g
        .finish(&[("dq", &grads[0]), ("dk", &grads[1]), ("dv", &grads[2])])
        .expect("traced")
        .to_stablehlo(&PrintOptions::default())
        .expect("printed");
    let (ours_fwd, ours_bwd) = fwd_bwd(&text);
    let (jax_fwd, jax_bwd) = fwd_bwd(JAX_GQA_BF16);
    for (ours, jax) in [(ours_fwd, jax_fwd), (ours_bwd, jax_bwd)] {
        let mut want = jax.backend_config.clone();
        let fmha = &mut want["cudnn_fmha_backend_config"];
        fmha["sliding_window_length"] = serde_json::json!(4096);
        let got = &ours.backend_config["cudnn_fmha_backend_config"];
        let scale = got["fmha_scale"].as_f64().expect("a number");
        assert!((scale - 1.0 / 12.0).abs() < 1e-15, "{scale}");
        fmha["fmha_scale"] = got["fmha_scale"].clone();
        assert_eq!(ours.backend_config, want, "{}", ours.target);
    }
}

#[test]
#[should_panic(expected = "cannot soft-cap")]
fn a_soft_cap_is_never_handed_to_the_kernels() {
    let g = Graph::named("softcap");
    let t = TensorType::new(DType::BF16, &[1, 8, 2, 16]);
    let (q, k, v) = (
        g.param("q", t.clone()),
        g.param("k", t.clone()),
        g.param("v", t),
    );
    let spec = crate::model::AttentionSpec {
        softcap: Some(50.0),
        ..crate::model::AttentionSpec::causal(16)
    };
    cudnn_attention_with(&q, &k, &v, &spec);
}
