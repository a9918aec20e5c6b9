//! Model FLOPs utilisation: the training FLOPs of a token and the dense peak of known devices.

use crate::config::{ComputeDtype, Config};

/// Training FLOPs per token: 6 x non-embedding parameters + 12 x layers x hidden x seq.
pub fn flops_per_token(cfg: &Config) -> f64 {
    let (_, non_embedding) = crate::model::param_counts(&cfg.model);
    6.0 * non_embedding as f64
        + 12.0 * (cfg.model.num_layers * cfg.model.hidden_dim * cfg.seq_len()) as f64
}

/// Dense peak TFLOP/s of one device of a known kind (its PJRT device kind) for the compute
/// dtype; `None` for kinds not in the table (CPUs among them).
pub fn known_peak_tflops(kind: &str, compute: ComputeDtype) -> Option<f64> {
    let k = kind.to_ascii_lowercase();
    let half = compute != ComputeDtype::F32;
    if k.contains("h100") || k.contains("h200") {
        Some(if half { 989.0 } else { 494.0 })
    } else if k.contains("a100") {
        Some(if half { 312.0 } else { 156.0 })
    } else if k.contains("v3") && k.contains("tpu") {
        Some(123.0)
    } else {
        None
    }
}

/// The fraction of `peak_tflops` per device that `tokens_per_second` over `devices` devices
/// reaches for `cfg`'s model.
pub fn mfu(cfg: &Config, tokens_per_second: f64, devices: usize, peak_tflops: f64) -> f64 {
    tokens_per_second * flops_per_token(cfg) / devices.max(1) as f64 / 1e12 / peak_tflops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfu_is_achieved_over_peak_flops() {
        let cfg = Config::default();
        let per_token = flops_per_token(&cfg);
        // A rate that achieves exactly 1 TFLOP/s per device on 2 devices.
        let rate = 2.0 * 1e12 / per_token;
        assert!((mfu(&cfg, rate, 2, 4.0) - 0.25).abs() < 1e-12);
        assert_eq!(
            known_peak_tflops("NVIDIA H100 80GB HBM3", ComputeDtype::Bf16),
            Some(989.0)
        );
        assert_eq!(known_peak_tflops("cpu", ComputeDtype::F32), None);
    }
}
