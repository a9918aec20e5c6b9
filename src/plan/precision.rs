//! The precision a device supports, by the rule of issue 25: FP8 matmuls on Hopper and
//! newer GPUs, bf16 on Ampere-class GPUs and TPUs, f16 with a dynamic loss scale on older
//! GPUs, f32 on the CPU. One function, so that `--precision auto` can share it.

use crate::config::{Config, Platform};

/// A precision and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionChoice {
    /// "fp8", "bf16", "f16" or "f32".
    pub name: &'static str,
    /// Why, naming the device.
    pub reason: String,
}

/// CUDA compute capability (major) of a device kind as PJRT names it ("NVIDIA H100 80GB
/// HBM3"), from the product name; `None` for names not known here.
fn compute_capability_major(kind: &str) -> Option<u32> {
    let k = kind.to_ascii_lowercase();
    let has = |names: &[&str]| names.iter().any(|n| k.contains(n));
    if has(&[
        "b100",
        "b200",
        "gb200",
        "b300",
        "rtx 50",
        "rtx pro 6000 blackwell",
    ]) {
        Some(10)
    } else if has(&["h100", "h200", "h800", "gh200"]) {
        Some(9)
    } else if has(&["l4", "l40", "rtx 40", "rtx 6000 ada"]) {
        // Ada is 8.9: the rule gives FP8 to Hopper and newer only.
        Some(8)
    } else if has(&[
        "a100", "a800", "a10", "a30", "a40", "a16", "rtx 30", "rtx a",
    ]) {
        Some(8)
    } else if has(&["v100", "t4", "titan v", "rtx 20", "quadro rtx"]) {
        Some(7)
    } else if has(&["p100", "p40", "p4", "gtx 10"]) {
        Some(6)
    } else {
        None
    }
}

/// The precision for `platform`'s devices of kind `kind` (the PJRT device kind).
pub fn device_precision(platform: Platform, kind: &str) -> PrecisionChoice {
    match platform {
        Platform::Cpu | Platform::Auto => PrecisionChoice {
            name: "f32",
            reason: "the CPU computes in f32 (no fast half-precision matmuls)".into(),
        },
        Platform::Tpu => PrecisionChoice {
            name: "bf16",
            reason: format!("{kind}: TPUs compute matmuls in bf16"),
        },
        Platform::Cuda => match compute_capability_major(kind) {
            Some(major) if major >= 9 => PrecisionChoice {
                name: "fp8",
                reason: format!("{kind}: Hopper or newer, FP8 tensor cores (bf16 elsewhere)"),
            },
            Some(8) => PrecisionChoice {
                name: "bf16",
                reason: format!("{kind}: Ampere/Ada-class, bf16 tensor cores"),
            },
            Some(_) => PrecisionChoice {
                name: "f16",
                reason: format!("{kind}: older than Ampere, f16 with a dynamic loss scale"),
            },
            None => PrecisionChoice {
                name: "bf16",
                reason: format!("{kind}: GPU not in the table; bf16 (Ampere or newer assumed)"),
            },
        },
    }
}

/// Sets `cfg`'s precision keys to `choice` (configs/README.md: `tpu.use_bfloat16`,
/// `optimization.mixed_precision`, `optimization.use_dynamic_scale`, `optimization.use_fp8`).
pub fn apply_precision(cfg: &mut Config, choice: &PrecisionChoice) {
    let o = &mut cfg.optimization;
    let (bf16, mixed, dynamic, fp8) = match choice.name {
        "fp8" => (false, true, false, true),
        "bf16" => (cfg.runtime.platform == Platform::Tpu, true, false, false),
        "f16" => (false, false, true, false),
        _ => (false, false, false, false),
    };
    cfg.tpu.use_bfloat16 = bf16;
    o.mixed_precision = mixed;
    o.use_dynamic_scale = dynamic;
    o.use_fp8 = fp8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_follows_the_device_generation() {
        let p = |platform, kind| device_precision(platform, kind).name;
        assert_eq!(p(Platform::Cpu, "cpu"), "f32");
        assert_eq!(p(Platform::Tpu, "TPU v3"), "bf16");
        assert_eq!(p(Platform::Cuda, "NVIDIA H100 80GB HBM3"), "fp8");
        assert_eq!(p(Platform::Cuda, "NVIDIA A100-SXM4-40GB"), "bf16");
        assert_eq!(p(Platform::Cuda, "Tesla V100-SXM2-16GB"), "f16");
        let mut cfg = Config::default();
        apply_precision(&mut cfg, &device_precision(Platform::Cuda, "Tesla T4"));
        assert_eq!(cfg.compute_dtype(), crate::config::ComputeDtype::F16);
    }
}
