//! The forward pass over a KV cache, for generation: new tokens write their keys and values
//! into the cache, then attend to every cached slot their row may see.
//!
//! Cache layout, per layer: `k`, `v: [B, KV, L, D]` (L slots). Heads come before slots so
//! that both attention products contract the cache in its stored layout; with
//! `[B, L, KV, D]` XLA transposed the whole cache every step (decode at batch 8 measured 1.8x
//! slower on the CPU).
//!
//! Rows are **left-padded**: a row's tokens occupy slots `row_start[b]..`, and the slots
//! before are padding that no query attends to. A token in slot `s` of row `b` has position
//! `s - row_start[b]`, so each row computes what it would compute alone. All rows share one
//! write slot per step.
//!
//! With [`KvCacheFormat::Fp8`] the cache holds f8E4M3FN values (their bytes, see
//! [`FP8_STORAGE`]) and, per layer, f32 scales `k_scale`, `v_scale: [B, KV, L]`: one scale
//! per written token and KV head, `scale = max|x| / 448` over the head dimension, so each
//! head vector uses the full E4M3 range and nothing is clipped (values are clamped to ±448
//! before the cast to guard rounding). Attention dequantises without materialising a dequantised cache: the key scale
//! multiplies the scores after `q·k` (it is constant over the contracted `D`), and the value
//! scale multiplies the probabilities before `p·v`.
//!
//! MoE blocks route every (token, choice) pair here: the capacity is the call's whole length,
//! so nothing is dropped and a left-padded row's padding cannot take a real token's place in
//! an expert's queue (training drops pairs beyond `capacity_factor`; docs/model.md).

use super::attention::{window_mask, AttentionSpec};
use super::forward::{block_param_names, block_with_attention};
use super::ForwardOptions;
use crate::config::ModelConfig;
use vishwam_hlo::{nn, DType, DotDims, Result, Tensor, TensorMap, TensorType};

/// The largest finite f8E4M3FN value.
pub const FP8_E4M3_MAX: f64 = 448.0;

/// The array dtype that holds f8E4M3FN cache values: their bytes, as `u8`. XLA's CPU backend
/// has no f8 arithmetic and widens every f8 array an op touches to f16 and back, so a
/// `dynamic_update_slice` on an f8 cache rewrote the whole cache each step; on bytes it is an
/// in-place write. Attention bitcasts the bytes to f8E4M3FN and converts them.
pub const FP8_STORAGE: DType = DType::U8;

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvCacheFormat {
    /// Unscaled, in this dtype (the compute dtype).
    Plain(DType),
    /// f8E4M3FN with an f32 scale per (row, slot, KV head).
    Fp8,
}

impl KvCacheFormat {
    /// Bytes of cache per token per layer (keys and values, scales included).
    pub fn bytes_per_token_layer(self, kv_heads: usize, head_dim: usize) -> usize {
        match self {
            KvCacheFormat::Plain(d) => 2 * kv_heads * head_dim * d.size_bytes(),
            KvCacheFormat::Fp8 => 2 * kv_heads * (head_dim + 4),
        }
    }
}

/// The shape of a whole KV cache: rows, slots and storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KvCacheShape {
    /// Rows (sequences decoded together).
    pub batch: usize,
    /// Slots per row.
    pub len: usize,
    /// Storage format.
    pub format: KvCacheFormat,
}

impl KvCacheShape {
    /// Name and type of every cache array, layer by layer: `cache.{i}.k`, `cache.{i}.v`, and
    /// for fp8 `cache.{i}.k_scale`, `cache.{i}.v_scale`.
    pub fn arrays(&self, cfg: &ModelConfig) -> Vec<(String, TensorType)> {
        let (b, l) = (self.batch as i64, self.len as i64);
        let (kv, d) = (cfg.kv_heads() as i64, cfg.head_dim() as i64);
        let mut out = Vec::new();
        for i in 0..cfg.num_layers {
            let values = match self.format {
                KvCacheFormat::Plain(dtype) => dtype,
                KvCacheFormat::Fp8 => FP8_STORAGE,
            };
            for part in ["k", "v"] {
                out.push((
                    format!("cache.{i}.{part}"),
                    TensorType::new(values, &[b, kv, l, d]),
                ));
            }
            if self.format == KvCacheFormat::Fp8 {
                for part in ["k_scale", "v_scale"] {
                    out.push((
                        format!("cache.{i}.{part}"),
                        TensorType::new(DType::F32, &[b, kv, l]),
                    ));
                }
            }
        }
        out
    }
}

/// One layer's cache inside a traced function.
#[derive(Clone)]
pub struct LayerCache {
    /// Keys `[B, KV, L, D]`.
    pub k: Tensor,
    /// Values `[B, KV, L, D]`.
    pub v: Tensor,
    /// fp8 only: key scales `[B, KV, L]`.
    pub k_scale: Option<Tensor>,
    /// fp8 only: value scales `[B, KV, L]`.
    pub v_scale: Option<Tensor>,
}

impl LayerCache {
    /// Groups tensors in [`KvCacheShape::arrays`] order into layers.
    pub fn group(tensors: &[Tensor], format: KvCacheFormat) -> Vec<LayerCache> {
        let per_layer = match format {
            KvCacheFormat::Plain(_) => 2,
            KvCacheFormat::Fp8 => 4,
        };
        tensors
            .chunks(per_layer)
            .map(|c| LayerCache {
                k: c[0].clone(),
                v: c[1].clone(),
                k_scale: c.get(2).cloned(),
                v_scale: c.get(3).cloned(),
            })
            .collect()
    }

    /// The storage format of this cache.
    pub fn format(&self) -> KvCacheFormat {
        match self.k_scale {
            Some(_) => KvCacheFormat::Fp8,
            None => KvCacheFormat::Plain(self.k.dtype()),
        }
    }

    /// The tensors in [`KvCacheShape::arrays`] order.
    pub fn flatten(layers: &[LayerCache]) -> Vec<Tensor> {
        let mut out = Vec::new();
        for l in layers {
            out.extend([l.k.clone(), l.v.clone()]);
            out.extend(l.k_scale.iter().cloned());
            out.extend(l.v_scale.iter().cloned());
        }
        out
    }

    /// The cache with `k`, `v: [B, T, KV, D]` written at slots `start..start + T` (the
    /// caller keeps `start + T <= L`; the write would otherwise be shifted to fit).
    pub fn write(&self, k: &Tensor, v: &Tensor, start: &Tensor) -> LayerCache {
        let zero = start.zeros_like();
        let at4 = [zero.clone(), zero.clone(), start.clone(), zero.clone()];
        let at3 = [zero.clone(), zero, start.clone()];
        // [B, T, KV, D] -> [B, KV, T, D], and scales [B, T, KV] -> [B, KV, T].
        let heads_first = |x: &Tensor| x.swap_axes(1, 2);
        match (&self.k_scale, &self.v_scale) {
            (Some(ks), Some(vs)) => {
                let (k8, k_s) = quantize_fp8(k);
                let (v8, v_s) = quantize_fp8(v);
                LayerCache {
                    k: self
                        .k
                        .dynamic_update_slice(&heads_first(&k8.bitcast(FP8_STORAGE)), &at4),
                    v: self
                        .v
                        .dynamic_update_slice(&heads_first(&v8.bitcast(FP8_STORAGE)), &at4),
                    k_scale: Some(ks.dynamic_update_slice(&heads_first(&k_s), &at3)),
                    v_scale: Some(vs.dynamic_update_slice(&heads_first(&v_s), &at3)),
                }
            }
            _ => LayerCache {
                k: self
                    .k
                    .dynamic_update_slice(&heads_first(&k.cast(self.k.dtype())), &at4),
                v: self
                    .v
                    .dynamic_update_slice(&heads_first(&v.cast(self.v.dtype())), &at4),
                k_scale: None,
                v_scale: None,
            },
        }
    }
}

/// `x: [B, T, KV, D]` as f8E4M3FN values and f32 scales `[B, T, KV]` with
/// `x ≈ values * scale` (`scale = max|x| / 448` over `D`).
pub fn quantize_fp8(x: &Tensor) -> (Tensor, Tensor) {
    let xf = x.cast(DType::F32);
    let amax = xf.abs().max(&[-1], false);
    let scale = (amax * (1.0 / FP8_E4M3_MAX)).maximum(f32::MIN_POSITIVE as f64);
    let scaled = &xf / scale.expand_dims(-1);
    let values = scaled
        .maximum(-FP8_E4M3_MAX)
        .minimum(FP8_E4M3_MAX)
        .cast(DType::F8E4M3FN);
    (values, scale)
}

/// Attention of `q: [B, T, NH, D]` (queries in slots `q_slots: i32 [T]`) to every slot of
/// `cache` that row `b` may see: slots `s` with `row_start[b] <= s <= q_slot`.
/// Scores and softmax in f32; the result has `q`'s dtype.
pub fn cached_attention(
    q: &Tensor,
    cache: &LayerCache,
    q_slots: &Tensor,
    row_start: &Tensor,
) -> Tensor {
    let spec = AttentionSpec::causal(q.shape()[3]);
    cached_attention_with(q, cache, q_slots, row_start, &spec)
}

/// [`cached_attention`] with the scale, soft-cap and window of `spec`: with a window, slot
/// `s` is seen only when `q_slot - s < window` (slots and positions differ by the row's
/// start, so the distance is the same).
pub fn cached_attention_with(
    q: &Tensor,
    cache: &LayerCache,
    q_slots: &Tensor,
    row_start: &Tensor,
    spec: &AttentionSpec,
) -> Tensor {
    let s = q.shape();
    let (b, t, nh, d) = (s[0], s[1], s[2], s[3]);
    let (kv, len) = (cache.k.shape()[1], cache.k.shape()[2]);
    let groups = nh / kv.max(1);
    let c = q.dtype();
    let q5 = q.reshape(&[b, t, kv, groups, d]);
    // scores[b, kv, t, g, s]
    let values = |x: &Tensor| match cache.k_scale {
        Some(_) => x.bitcast(DType::F8E4M3FN).cast(c),
        None => x.cast(c),
    };
    let mut scores = q5.dot_general_to(
        &values(&cache.k),
        DotDims {
            lhs_batch: vec![0, 2],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![4],
            rhs_contract: vec![3],
        },
        DType::F32,
    ) * spec.scale;
    let per_slot = |scale: &Tensor| scale.broadcast_in_dim(&[b, kv, t, groups, len], &[0, 1, 4]);
    if let Some(ks) = &cache.k_scale {
        scores = scores * per_slot(ks);
    }
    let scores = spec.cap(scores);
    let g = q.graph();
    let slots = g.iota(&TensorType::new(DType::I32, &[len]), 0);
    let causal = window_mask(q_slots, &slots, spec.window).broadcast_in_dim(&[b, t, len], &[1, 2]);
    let own = slots
        .broadcast_in_dim(&[b, len], &[1])
        .ge(row_start.broadcast_in_dim(&[b, len], &[0]))
        .broadcast_in_dim(&[b, t, len], &[0, 2]);
    let allowed = causal
        .and(&own)
        .broadcast_in_dim(scores.shape(), &[0, 2, 4]);
    let scores = allowed.select(&scores, super::attention::MASKED);
    let mut probs = nn::softmax(&scores, -1);
    if let Some(vs) = &cache.v_scale {
        probs = probs * per_slot(vs);
    }
    // o[b, kv, t, g, d]
    let out = probs.cast(c).dot_general(
        &values(&cache.v),
        DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![4],
            rhs_contract: vec![2],
        },
    );
    out.transpose(&[0, 2, 1, 3, 4]).reshape(&[b, t, nh, d])
}

/// The final hidden states `[B, T, H]` of `tokens: i32 [B, T]` placed in slots
/// `start..start + T` (`start`: i32 scalar), writing their keys and values into `caches`
/// (one per layer, replaced by the updated caches). `row_start: i32 [B]` is each row's
/// first slot (see the module docs). Dropout is off.
pub fn hidden_states_cached(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    params: &TensorMap,
    tokens: &Tensor,
    start: &Tensor,
    row_start: &Tensor,
    caches: &mut [LayerCache],
) -> Result<Tensor> {
    let g = tokens.graph().clone();
    let (b, t) = (tokens.shape()[0], tokens.shape()[1]);
    let slots = g.iota(&TensorType::new(DType::I32, &[t]), 0) + start.broadcast_in_dim(&[t], &[]);
    let positions = (slots.broadcast_in_dim(&[b, t], &[1])
        - row_start.broadcast_in_dim(&[b, t], &[0]))
    .maximum(0i64);
    let opts = ForwardOptions {
        dropout: 0.0,
        remat: false,
        residual_spec: None,
        ..opts.clone()
    };
    let no_drop = ModelConfig {
        expert_capacity: Some(t as usize),
        capacity_factor: None,
        ..cfg.clone()
    };
    let mut h = super::forward::embed(cfg, opts.compute, params.get("embed.tokens")?, tokens);
    for (i, cache) in caches.iter_mut().enumerate() {
        let p = block_param_names(cfg, i)
            .into_iter()
            .map(|n| params.get(&format!("layers.{i}.{n}")).cloned())
            .collect::<Result<Vec<Tensor>>>()?;
        let mut updated = None;
        let spec = AttentionSpec::for_layer(cfg, i);
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor| {
            // The barrier makes attention read the very arrays that are returned: without it
            // XLA may duplicate a write into two fusions (one per reader) and copy the cache.
            let written = LayerCache::group(
                &g.optimization_barrier(&LayerCache::flatten(&[cache.write(k, v, start)])),
                cache.format(),
            )
            .remove(0);
            let o = cached_attention_with(q, &written, &slots, row_start, &spec);
            updated = Some(written);
            o
        };
        let is_moe = cfg.is_moe_layer(i);
        h = block_with_attention(&no_drop, &opts, &h, &positions, &p, is_moe, attend, None).0;
        if let Some(c) = updated {
            *cache = c;
        }
    }
    Ok(super::forward::rms_norm(
        cfg,
        &h,
        params.get("final_norm.scale")?,
    ))
}
