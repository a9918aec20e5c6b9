//! The traced programs of generation and evaluation: cache initialisation, one prefill chunk,
//! one decode step (forward plus on-device token selection), and the evaluation loss and
//! accuracy.
//!
//! Arguments come in a fixed order: the parameters (`params.<name>` in
//! [`crate::model::param_specs`] order, in the compute dtype), then the cache arrays
//! ([`KvCacheShape::arrays`] order), then the per-call inputs. Caches, the decode step's token
//! history, the slot counter and the random state are donated to the outputs of the same
//! name, so they are updated in place on the device.

use super::sampling::{sample, Bisection, SamplingParams};
use crate::config::ModelConfig;
use crate::model::{self, ForwardOptions, KvCacheShape, LayerCache, RngStream};
use vishwam_hlo::{DType, Func, Graph, Result, Tensor, TensorMap, TensorType};

/// How the decode step picks the next token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeMode {
    /// Argmax of the logits.
    Greedy,
    /// Temperature, the filters that are on, and a draw from the random stream.
    Sample {
        /// The program takes `top_k` and filters by it.
        top_k: bool,
        /// The program takes `top_p` and filters by it.
        top_p: bool,
    },
}

/// Parameter inputs in `dtype`, keyed by parameter name.
fn param_inputs(g: &Graph, cfg: &ModelConfig, dtype: DType) -> TensorMap {
    let mut params = TensorMap::new();
    for spec in model::param_specs(cfg) {
        let t = g.param(
            &crate::train::state::param_leaf(&spec.name),
            TensorType::new(dtype, &spec.shape),
        );
        params.insert(spec.name, t);
    }
    params
}

fn cache_inputs(g: &Graph, cfg: &ModelConfig, shape: &KvCacheShape) -> Vec<LayerCache> {
    let tensors: Vec<Tensor> = shape
        .arrays(cfg)
        .into_iter()
        .map(|(name, ty)| g.param(&name, ty))
        .collect();
    LayerCache::group(&tensors, shape.format)
}

fn cache_outputs(
    cfg: &ModelConfig,
    shape: &KvCacheShape,
    caches: &[LayerCache],
) -> Vec<(String, Tensor)> {
    shape
        .arrays(cfg)
        .into_iter()
        .map(|(name, _)| name)
        .zip(LayerCache::flatten(caches))
        .collect()
}

fn finish(g: &Graph, outputs: &[(String, Tensor)], donated: &[String]) -> Result<Func> {
    let refs: Vec<(&str, &Tensor)> = outputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut func = g.finish(&refs)?;
    for name in donated {
        func.donate(name, name)?;
    }
    Ok(func)
}

/// A program with no arguments returning a zeroed cache.
pub fn build_init_cache(cfg: &ModelConfig, shape: &KvCacheShape) -> Result<Func> {
    let g = Graph::named("kv_cache_init");
    let outputs: Vec<(String, Tensor)> = shape
        .arrays(cfg)
        .into_iter()
        .map(|(name, ty)| {
            let zeros = g.zeros(&ty);
            (name, zeros)
        })
        .collect();
    finish(&g, &outputs, &[])
}

/// One prefill chunk: `tokens: i32 [B, chunk]` in slots `start..start + chunk` (`start`:
/// i32 `[]`), rows starting at `row_start: i32 [B]`. Returns the updated cache only.
pub fn build_prefill(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    shape: &KvCacheShape,
    chunk: usize,
) -> Result<Func> {
    let g = Graph::named("prefill");
    let params = param_inputs(&g, cfg, opts.compute);
    let mut caches = cache_inputs(&g, cfg, shape);
    let b = shape.batch as i64;
    let tokens = g.param("tokens", TensorType::new(DType::I32, &[b, chunk as i64]));
    let start = g.param("start", TensorType::new(DType::I32, &[]));
    let row_start = g.param("row_start", TensorType::new(DType::I32, &[b]));
    model::hidden_states_cached(cfg, opts, &params, &tokens, &start, &row_start, &mut caches)?;
    let outputs = cache_outputs(cfg, shape, &caches);
    let donated: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
    finish(&g, &outputs, &donated)
}

/// One decode step for the whole batch. `history: i32 [B, len + 1]` holds each row's token in
/// every slot; the step feeds the tokens in slot `slot: i32 []` to the model, which writes
/// their keys and values, and writes each row's next token into slot `slot + 1`.
///
/// Further arguments: `rng: u64 [2]`, `row_start: i32 [B]`, `eos: i32 []` (-1 for none),
/// `eos_from_slot: i32 []` (EOS is suppressed while `slot` is below it), and in
/// [`DecodeMode::Sample`] `temperature: f32 []`, then `top_k: i32 []` and `top_p: f32 []`
/// when those filters are on.
/// Outputs: the cache, `history`, `slot + 1` and the advanced `rng`, each aliasing the donated
/// input of the same name, and with `with_logits` (for inspecting one step) the step's
/// `logits: f32 [B, V]` (before EOS suppression). `bisection` says how sampling's bisections
/// are traced. Without logits every buffer of a step is updated in place, so consecutive
/// steps touch the same addresses (a GPU then replays the step's recorded CUDA graph rather
/// than recording it again) and the host reads `history` only every few steps.
pub fn build_decode(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    shape: &KvCacheShape,
    mode: DecodeMode,
    with_logits: bool,
    bisection: Bisection,
) -> Result<Func> {
    let g = Graph::named(match (mode, with_logits) {
        (DecodeMode::Greedy, false) => "decode_greedy",
        (DecodeMode::Greedy, true) => "decode_greedy_logits",
        (DecodeMode::Sample { .. }, false) => "decode_sample",
        (DecodeMode::Sample { .. }, true) => "decode_sample_logits",
    });
    let params = param_inputs(&g, cfg, opts.compute);
    let mut caches = cache_inputs(&g, cfg, shape);
    let (b, h, v) = (
        shape.batch as i64,
        cfg.hidden_dim as i64,
        cfg.vocab_size as i64,
    );
    let scalar = |name: &str, dtype| g.param(name, TensorType::new(dtype, &[]));
    let history = g.param(
        "history",
        TensorType::new(DType::I32, &[b, shape.len as i64 + 1]),
    );
    let slot = scalar("slot", DType::I32);
    let rng_state = g.param("rng", TensorType::new(DType::U64, &[2]));
    let row_start = g.param("row_start", TensorType::new(DType::I32, &[b]));
    let eos = scalar("eos", DType::I32);
    let eos_from_slot = scalar("eos_from_slot", DType::I32);
    let sampling = match mode {
        DecodeMode::Greedy => None,
        DecodeMode::Sample { top_k, top_p } => Some(SamplingParams {
            temperature: scalar("temperature", DType::F32),
            top_k: top_k.then(|| scalar("top_k", DType::I32)),
            top_p: top_p.then(|| scalar("top_p", DType::F32)),
            bisection,
        }),
    };

    let first_row = g.scalar_i64(0, DType::I32);
    let tokens = history.dynamic_slice(&[first_row.clone(), slot.clone()], &[b, 1]);
    let hidden =
        model::hidden_states_cached(cfg, opts, &params, &tokens, &slot, &row_start, &mut caches)?;
    let w = model::head_weight(cfg, &params)?.cast(opts.compute);
    let logits = model::softcap_logits(cfg, hidden.reshape(&[b, h]).matmul(&w).cast(DType::F32));
    let vocab = g.iota(&TensorType::new(DType::I32, &[v]), 0);
    let suppress = vocab
        .eq(eos.broadcast_in_dim(&[v], &[]))
        .and(slot.lt(&eos_from_slot).broadcast_in_dim(&[v], &[]))
        .broadcast_in_dim(&[b, v], &[1]);
    let allowed = suppress.select(f64::NEG_INFINITY, &logits);
    let mut rng = RngStream { state: rng_state };
    let next = match &sampling {
        None => allowed.argmax(-1, DType::I32),
        Some(params) => sample(&allowed, params, &mut rng),
    };
    let mut outputs = cache_outputs(cfg, shape, &caches);
    let mut donated: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
    let next_slot = &slot + 1i64;
    let history =
        history.dynamic_update_slice(&next.reshape(&[b, 1]), &[first_row, next_slot.clone()]);
    outputs.extend([
        ("history".to_string(), history),
        ("slot".to_string(), next_slot),
        ("rng".to_string(), rng.state),
    ]);
    donated.extend(["history", "slot", "rng"].map(String::from));
    if with_logits {
        outputs.push(("logits".to_string(), logits));
    }
    finish(&g, &outputs, &donated)
}

/// Sum of the masked cross-entropy, the count of target tokens and the count of correctly
/// predicted ones (the target's logit the largest, [`model::LmPass::ce_and_correct_sums`]) over one batch `tokens`,
/// `targets: i32 [B, T]`, `mask: f32 [B, T]`: the model's objective ([`model::lm_pass`])
/// without dropout, its cross-entropy alone, as the training evaluation computes it. Outputs
/// `loss_sum`, `tokens`, `correct`.
pub fn build_eval(
    cfg: &ModelConfig,
    opts: &ForwardOptions,
    batch: usize,
    seq_len: usize,
) -> Result<Func> {
    let g = Graph::named("eval_loss");
    let params = param_inputs(&g, cfg, opts.compute);
    let shape = [batch as i64, seq_len as i64];
    let tokens = g.param("tokens", TensorType::new(DType::I32, &shape));
    let targets = g.param("targets", TensorType::new(DType::I32, &shape));
    let mask = g.param("mask", TensorType::new(DType::F32, &shape));
    let pass = model::lm_pass(cfg, opts, &params, &tokens, None)?;
    let (loss_sum, correct) = pass.ce_and_correct_sums(&targets, &mask, None);
    g.finish(&[
        ("loss_sum", &loss_sum),
        ("tokens", &mask.sum_all()),
        ("correct", &correct),
    ])
}
