//! Causal grouped-query attention through cuDNN's fused flash-attention kernels (CUDA only).
//!
//! The forward pass is one `stablehlo.custom_call @__cudnn$fmhaSoftmax`, the backward pass one
//! `@__cudnn$fmhaSoftmaxBackward`, with the operands, results, layouts and JSON
//! `backend_config` that `jax.nn.dot_product_attention(..., is_causal=True,
//! implementation="cudnn")` emits when lowered for CUDA (jax 0.10.2 and 0.11.2 print the same;
//! the golden tests compare with those captures, `testdata/jax_cudnn_*.mlir`). The XLA CUDA
//! plugin compiles these calls into cuDNN flash attention; no other plugin knows the targets,
//! so the composed attention (`attention.rs`, `blocked.rs`) serves every other platform.
//!
//! What cuDNN accepts (the checks of jax's `fused_attention_stablehlo.py`): rank-4 `[B, T, N,
//! D]` operands in bf16 or f16, one dtype for q, k and v; head dim a multiple of 8 and at most
//! 128 (256 on Hopper and later); kv heads dividing the query heads (GQA is native: k and v
//! keep their `KV` heads). `Config::cudnn_attention_blockers` applies these rules before a
//! training run selects this path.
//!
//! A sliding window is the backend config's `sliding_window_length` L, with which cuDNN lets
//! query `t` see keys `t - L < s <= t` (with the causal mask; jax's `dot_product_attention`
//! documents the same window, `(pos - sliding_window_length, pos]`), and the score scale is
//! `fmha_scale`. The kernels have no soft-cap of the scores: a soft-capped model
//! (`model.attn_logit_softcapping`) is a cuDNN blocker, and [`cudnn_attention_with`] is never
//! given one.

use super::attention::AttentionSpec;
use vishwam_hlo::{CustomCallSpec, DType, Graph, Tensor, TensorType};

/// The forward kernel: `(q, k, v) -> (o [B,N,T,D], softmax stats f32 [B,N,T], workspace)`.
pub const FORWARD_TARGET: &str = "__cudnn$fmhaSoftmax";
/// The backward kernel: `(q, k, v, stats, do, o) -> (dq, dk, dv, workspace)`.
pub const BACKWARD_TARGET: &str = "__cudnn$fmhaSoftmaxBackward";

/// `q: [B,T,NH,D]`, `k`, `v: [B,T,KV,D]` -> `[B,T,NH,D]`: causal softmax attention with scale
/// `1/sqrt(D)`, where query `t` sees keys `0..=t` (array order; positions are not consulted).
/// Differentiable (a custom vjp over the two kernels). Operands that are not bf16 or f16 are
/// cast to bf16 and the result cast back. Runs only on the XLA CUDA plugin.
pub fn cudnn_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let spec = AttentionSpec::causal(q.shape()[3]);
    cudnn_attention_with(q, k, v, &spec)
}

/// [`cudnn_attention`] with the scale and sliding window of `spec`, whose `softcap` must be
/// `None` (the kernels cannot soft-cap; callers compose attention for such layers).
pub fn cudnn_attention_with(q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Tensor {
    assert!(
        spec.softcap.is_none(),
        "cuDNN flash attention cannot soft-cap scores; compose attention for this layer"
    );
    let mask = Mask {
        scale: spec.scale,
        window: spec.window,
    };
    let inputs = kernel_inputs(q, k, v);
    let g = q.graph().clone();
    let outs = g.custom_vjp(
        "cudnn_attention",
        &inputs,
        move |g, xs| forward(g, &xs[0], &xs[1], &xs[2], mask),
        move |g, xs, outs, cts| backward(g, xs, &outs[0], &outs[1], &cts[0], mask),
    );
    outs[0].cast(q.dtype())
}

/// q, k and v in the kernels' dtype: bf16 or f16 as given, anything else as bf16 (the result
/// is cast back to q's dtype).
pub(crate) fn kernel_inputs(q: &Tensor, k: &Tensor, v: &Tensor) -> [Tensor; 3] {
    let kernel = match q.dtype() {
        DType::BF16 => DType::BF16,
        DType::F16 => DType::F16,
        _ => DType::BF16,
    };
    [q.cast(kernel), k.cast(kernel), v.cast(kernel)]
}

/// `[o [B,T,N,D], stats [B,N,T]]`: the kernel writes `o` as `[B,N,T,D]` laid out as
/// `[B,T,N,D]` in memory, so the transpose back is free.
pub(crate) fn forward(g: &Graph, q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask) -> Vec<Tensor> {
    let dims = Dims::of(q, k);
    let mut spec = CustomCallSpec::new(
        FORWARD_TARGET,
        vec![
            TensorType::new(dims.dtype, &[dims.b, dims.n, dims.t, dims.d]),
            TensorType::new(DType::F32, &[dims.b, dims.n, dims.t]),
            workspace(),
        ],
    );
    spec.backend_config = backend_config(&dims, Pass::Forward, mask);
    spec.operand_layouts = vec![ROW_MAJOR_4.to_vec(); 3];
    spec.result_layouts = vec![BTND_AS_BNTD.to_vec(), vec![2, 1, 0], vec![0]];
    let results = g.custom_call(spec, &[q.clone(), k.clone(), v.clone()]);
    vec![results[0].transpose(&[0, 2, 1, 3]), results[1].clone()]
}

/// `[dq, dk, dv]` from the inputs, the forward output `o`, its softmax `stats` and `d_o`.
pub(crate) fn backward(
    g: &Graph,
    qkv: &[Tensor],
    o: &Tensor,
    stats: &Tensor,
    d_o: &Tensor,
    mask: Mask,
) -> Vec<Tensor> {
    let (q, k) = (&qkv[0], &qkv[1]);
    let dims = Dims::of(q, k);
    let mut spec = CustomCallSpec::new(
        BACKWARD_TARGET,
        vec![
            TensorType::new(dims.dtype, &[dims.b, dims.n, dims.t, dims.d]),
            TensorType::new(dims.dtype, &[dims.b, dims.kv, dims.s, dims.d]),
            TensorType::new(dims.dtype, &[dims.b, dims.kv, dims.s, dims.d]),
            workspace(),
        ],
    );
    spec.backend_config = backend_config(&dims, Pass::Backward, mask);
    let row_major = ROW_MAJOR_4.to_vec();
    spec.operand_layouts = vec![
        row_major.clone(),
        row_major.clone(),
        row_major.clone(),
        vec![2, 1, 0],
        row_major.clone(),
        row_major,
    ];
    spec.result_layouts = vec![
        BTND_AS_BNTD.to_vec(),
        BTND_AS_BNTD.to_vec(),
        BTND_AS_BNTD.to_vec(),
        vec![0],
    ];
    let operands = [
        q.clone(),
        k.clone(),
        qkv[2].clone(),
        stats.clone(),
        d_o.clone(),
        o.clone(),
    ];
    let grads = g.custom_call(spec, &operands);
    grads[..3]
        .iter()
        .map(|x| x.transpose(&[0, 2, 1, 3]))
        .collect()
}

/// Minor-to-major order of a row-major rank-4 array.
const ROW_MAJOR_4: [usize; 4] = [3, 2, 1, 0];
/// Minor-to-major order that stores a `[B,N,T,D]` result as `[B,T,N,D]` in memory.
const BTND_AS_BNTD: [usize; 4] = [3, 1, 2, 0];

/// The scratch result every cuDNN custom call declares (XLA sizes it when compiling).
fn workspace() -> TensorType {
    TensorType::new(DType::U8, &[0])
}

/// Problem sizes: batch, query heads, kv heads, query and key lengths, head dim, dtype.
struct Dims {
    b: i64,
    n: i64,
    kv: i64,
    t: i64,
    s: i64,
    d: i64,
    dtype: DType,
}

impl Dims {
    fn of(q: &Tensor, k: &Tensor) -> Dims {
        let (qs, ks) = (q.shape(), k.shape());
        let at = |s: &[i64], i: usize| s.get(i).copied().unwrap_or(0);
        Dims {
            b: at(qs, 0),
            t: at(qs, 1),
            n: at(qs, 2),
            d: at(qs, 3),
            s: at(ks, 1),
            kv: at(ks, 2),
            dtype: q.dtype(),
        }
    }
}

/// The score scale and causal window the kernels apply.
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct Mask {
    /// `fmha_scale`.
    pub(crate) scale: f64,
    /// `sliding_window_length` (0 in the config when `None`: no window).
    pub(crate) window: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Forward,
    Backward,
}

/// The `backend_config` JSON, field for field as jax writes it for causal attention on
/// `[B,T,N,D]` operands without bias, dropout, padding or packing, with `mask`'s scale and
/// sliding window.
fn backend_config(dims: &Dims, pass: Pass, mask: Mask) -> String {
    use serde_json::{json, Map, Value};
    let dot = |lc: usize, rc: usize, lb: [usize; 2], rb: [usize; 2]| {
        let strs = |xs: &[usize]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        json!({
            "lhs_contracting_dimensions": strs(&[lc]),
            "rhs_contracting_dimensions": strs(&[rc]),
            "lhs_batch_dimensions": strs(&lb),
            "rhs_batch_dimensions": strs(&rb),
        })
    };
    // Q, K, V, O are [B,T,N,D]; P = QK^T is [B,N,T,S]. BMM1: Q.K -> P, BMM2: P.V -> O; the
    // gradient GEMMs: dP.Q -> dK, dP.K -> dQ, P.dO -> dV, dO.V -> dP.
    let gemms: Vec<(&str, Value)> = match pass {
        Pass::Forward => vec![
            ("bmm1_dot_dimension_numbers", dot(3, 3, [0, 2], [0, 2])),
            ("bmm2_dot_dimension_numbers", dot(3, 1, [0, 1], [0, 2])),
        ],
        Pass::Backward => vec![
            (
                "bmm1_grad_gemm1_dot_dimension_numbers",
                dot(2, 1, [0, 1], [0, 2]),
            ),
            (
                "bmm1_grad_gemm2_dot_dimension_numbers",
                dot(3, 1, [0, 1], [0, 2]),
            ),
            (
                "bmm2_grad_gemm1_dot_dimension_numbers",
                dot(2, 1, [0, 1], [0, 2]),
            ),
            (
                "bmm2_grad_gemm2_dot_dimension_numbers",
                dot(3, 3, [0, 2], [0, 2]),
            ),
        ],
    };
    let element_type = if dims.dtype == DType::F16 {
        "F16"
    } else {
        "BF16"
    };
    let mut fmha = Map::new();
    fmha.insert(
        "algorithm".into(),
        json!({
            "algo_id": "0",
            "math_type": "TENSOR_OP_MATH",
            "tuning_knobs": {"17": "1", "24": "0"},
            "is_cudnn_frontend": true,
            "workspace_size": "0",
        }),
    );
    fmha.insert("fmha_scale".into(), json!(mask.scale));
    let scores_dims = [dims.b, dims.n, dims.t, dims.s].map(|x| x.to_string());
    fmha.insert(
        "intermediate_tensor_shape".into(),
        json!({
            "element_type": element_type,
            "dimensions": scores_dims,
            "tuple_shapes": [],
            "layout": {
                "dim_level_types": [],
                "dim_unique": [],
                "dim_ordered": [],
                "minor_to_major": ["3", "2", "1", "0"],
                "tiles": [],
                "element_size_in_bits": "0",
                "memory_space": "0",
                "index_primitive_type": "PRIMITIVE_TYPE_INVALID",
                "pointer_primitive_type": "PRIMITIVE_TYPE_INVALID",
                "dynamic_shape_metadata_prefix_bytes": "0",
            },
            "is_dynamic_dimension": [false, false, false, false],
        }),
    );
    fmha.insert("is_flash_attention".into(), json!(true));
    fmha.insert("mask_type".into(), json!("CAUSAL"));
    for (key, value) in gemms {
        fmha.insert(key.into(), value);
    }
    fmha.insert("dropout_rate".into(), json!(0.0));
    fmha.insert("seed".into(), json!(42));
    fmha.insert(
        "sliding_window_length".into(),
        json!(mask.window.unwrap_or(0)),
    );
    fmha.insert("max_seg_per_batch".into(), json!(1));
    fmha.insert("is_paged_attention".into(), json!(false));
    json!({"operation_queue_id": "0", "cudnn_fmha_backend_config": fmha}).to_string()
}

#[cfg(test)]
#[path = "cudnn_attention_tests.rs"]
mod tests;
