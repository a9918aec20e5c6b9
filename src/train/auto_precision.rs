//! Hardware-aware precision: `vishwam train --precision auto`, and the same rule for a
//! config that names no precision key at all.
//!
//! | device | choice | why |
//! |---|---|---|
//! | NVIDIA GPU, compute capability >= 9.0 (Hopper, Blackwell) | bf16 + FP8 matmuls | FP8 tensor cores |
//! | NVIDIA GPU, compute capability 8.x (Ampere, Ada) | bf16 | bf16 tensor cores |
//! | NVIDIA GPU, compute capability < 8.0 (Volta, Turing) | f16 + dynamic loss scale | f16 tensor cores, no bf16 |
//! | TPU | bf16 | the MXU multiplies bf16 |
//! | CPU | f32 | no faster low-precision matmul; today's default |
//!
//! The rule is [`auto_precision`], a pure function of a [`DeviceClass`], so a planner can ask
//! it about a device that is not present. [`DeviceClass::of`] reads the class of a client's
//! first device: the CUDA plugin reports `compute_capability` ("9.0") among the PJRT device
//! description's attributes. A choice is written into the config's own keys
//! ([`PrecisionChoice::apply`]), so the resolved config (saved with every checkpoint) says what
//! ran.

use super::TrainError;
use crate::config::{Config, NamedKeys};
use crate::runtime::{AttributeValue, Client, Platform};
use std::fmt;

/// The keys that choose the precision policy ([`crate::train::PrecisionPolicy`]). A config
/// (file or `--set`) that names none of them gets the hardware-aware choice; one that names
/// any of them is run as written.
pub const PRECISION_KEYS: [&str; 8] = [
    "tpu.use_bfloat16",
    "optimization.mixed_precision",
    "optimization.use_dynamic_scale",
    "optimization.use_fp8",
    "optimization.fp8_format",
    "optimization.fp8_recipe",
    "optimization.amax_history_len",
    "optimization.fp8_head",
];

/// The precision keys that `named` names (itself or through a whole section).
pub fn named_precision_keys(named: &NamedKeys) -> Vec<&'static str> {
    PRECISION_KEYS
        .into_iter()
        .filter(|k| named.contains(k))
        .collect()
}

/// A precision policy as one word, mapped onto the config's keys by [`PrecisionChoice::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionChoice {
    /// f32 everywhere (the default).
    F32,
    /// bf16 compute (`optimization.mixed_precision`).
    Bf16,
    /// f16 compute with a dynamic loss scale (`optimization.use_dynamic_scale`).
    F16,
    /// bf16 compute with FP8 block projections (`optimization.use_fp8` + `mixed_precision`).
    Fp8,
}

impl PrecisionChoice {
    /// Every choice, as `--precision` spells them.
    pub const ALL: [PrecisionChoice; 4] = [
        PrecisionChoice::F32,
        PrecisionChoice::Bf16,
        PrecisionChoice::F16,
        PrecisionChoice::Fp8,
    ];

    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::Bf16 => "bf16",
            PrecisionChoice::F16 => "f16",
            PrecisionChoice::Fp8 => "fp8",
        }
    }

    /// What it means, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::Bf16 => "bf16",
            PrecisionChoice::F16 => "f16 + dynamic loss scale",
            PrecisionChoice::Fp8 => "bf16 + FP8 matmuls",
        }
    }

    /// Sets the four keys that pick the compute dtype, loss scaling and FP8 projections
    /// (`tpu.use_bfloat16`, `optimization.mixed_precision`, `use_dynamic_scale`, `use_fp8`)
    /// to this choice; the FP8 refinements (`fp8_format`, `fp8_recipe`, `amax_history_len`,
    /// `fp8_head`) keep their values.
    pub fn apply(self, cfg: &mut Config) {
        let (mixed, dynamic, fp8) = match self {
            PrecisionChoice::F32 => (false, false, false),
            PrecisionChoice::Bf16 => (true, false, false),
            PrecisionChoice::F16 => (false, true, false),
            PrecisionChoice::Fp8 => (true, false, true),
        };
        cfg.tpu.use_bfloat16 = false;
        cfg.optimization.mixed_precision = mixed;
        cfg.optimization.use_dynamic_scale = dynamic;
        cfg.optimization.use_fp8 = fp8;
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `--precision` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionRequest {
    /// The hardware-aware choice ([`auto_precision`]).
    Auto,
    /// This choice, whatever the device.
    Fixed(PrecisionChoice),
}

impl PrecisionRequest {
    /// Parses `auto`, `f32`, `bf16`, `f16` or `fp8`; anything else is an error listing them.
    pub fn parse(text: &str) -> Result<PrecisionRequest, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "auto" {
            return Ok(PrecisionRequest::Auto);
        }
        PrecisionChoice::ALL
            .into_iter()
            .find(|c| c.name() == lower)
            .map(PrecisionRequest::Fixed)
            .ok_or_else(|| {
                format!("unknown precision `{text}`; expected one of auto, f32, bf16, f16, fp8")
            })
    }
}

/// A CUDA compute capability, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ComputeCapability {
    /// 9 on Hopper.
    pub major: u32,
    /// 0 on the H100.
    pub minor: u32,
}

impl ComputeCapability {
    /// Parses the CUDA plugin's `compute_capability` attribute, e.g. "9.0".
    pub fn parse(text: &str) -> Option<ComputeCapability> {
        let (major, minor) = text.trim().split_once('.')?;
        Some(ComputeCapability {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What the precision rule needs to know about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceClass {
    /// The host CPU.
    Cpu,
    /// An NVIDIA GPU.
    CudaGpu {
        /// The device kind, e.g. "NVIDIA H100 80GB HBM3".
        kind: String,
        /// Its compute capability.
        capability: ComputeCapability,
    },
    /// A TPU core.
    Tpu {
        /// The device kind, e.g. "TPU v4".
        kind: String,
    },
}

impl DeviceClass {
    /// The class of `client`'s first device (a client's devices are of one kind). On CUDA a
    /// missing or unreadable `compute_capability` attribute is an error naming what the
    /// plugin reported.
    pub fn of(client: &Client) -> Result<DeviceClass, TrainError> {
        let platform_name = client.platform_name()?;
        let platform = Platform::parse(&platform_name).map_err(|_| {
            TrainError::Other(format!(
                "the PJRT client reports the platform `{platform_name}`, which is none of cpu, \
                 cuda, tpu; choose the precision with --precision f32|bf16|f16|fp8"
            ))
        })?;
        let devices = client.devices();
        let Some(device) = devices.first() else {
            return Err(TrainError::Other(format!(
                "the {platform_name} client shows no devices"
            )));
        };
        Ok(match platform {
            Platform::Cpu => DeviceClass::Cpu,
            Platform::Tpu => DeviceClass::Tpu {
                kind: device.kind()?,
            },
            Platform::Cuda => {
                let attributes = device.attributes()?;
                let reported = attributes.iter().find(|(k, _)| k == "compute_capability");
                let capability = match reported {
                    Some((_, AttributeValue::String(s))) => ComputeCapability::parse(s),
                    _ => None,
                };
                let Some(capability) = capability else {
                    return Err(TrainError::Other(format!(
                        "--precision auto needs the GPU's compute capability, and the CUDA \
                         plugin reports {} for device 0 (expected a string like \"9.0\"); \
                         choose the precision with --precision f32|bf16|f16|fp8 or the \
                         config's precision keys",
                        match reported {
                            Some((_, v)) => format!("compute_capability = {v:?}"),
                            None => "no compute_capability attribute".to_string(),
                        }
                    )));
                };
                DeviceClass::CudaGpu {
                    kind: device.kind()?,
                    capability,
                }
            }
        })
    }
}

/// A choice and the reason for it, as logged at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPrecision {
    /// The choice.
    pub choice: PrecisionChoice,
    /// Why, naming the device.
    pub reason: String,
}

impl fmt::Display for AutoPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.choice.describe(), self.reason)
    }
}

/// The precision for `device`: FP8 matmuls (with bf16 compute) from compute capability 9.0
/// (Hopper) on, bf16 on 8.x (Ampere-class) and TPUs, f16 with a dynamic loss scale on older
/// GPUs, f32 on the CPU. Ada (8.9) has FP8 tensor cores too but gets bf16 here: XLA's FP8
/// GEMM rewrite was measured on Hopper only; `--precision fp8` asks for it anywhere.
pub fn auto_precision(device: &DeviceClass) -> AutoPrecision {
    let (choice, reason) = match device {
        DeviceClass::Cpu => (
            PrecisionChoice::F32,
            "CPU: no faster low-precision matmul, so f32 as by default".to_string(),
        ),
        DeviceClass::Tpu { kind } => (
            PrecisionChoice::Bf16,
            format!("{kind}: TPUs multiply in bf16 natively"),
        ),
        DeviceClass::CudaGpu { kind, capability } if capability.major >= 9 => (
            PrecisionChoice::Fp8,
            format!(
                "{kind}, compute capability {capability}: Hopper and newer have FP8 tensor cores"
            ),
        ),
        DeviceClass::CudaGpu { kind, capability } if capability.major == 8 => (
            PrecisionChoice::Bf16,
            format!(
                "{kind}, compute capability {capability}: Ampere-class GPUs have bf16 tensor cores"
            ),
        ),
        DeviceClass::CudaGpu { kind, capability } => (
            PrecisionChoice::F16,
            format!(
                "{kind}, compute capability {capability}: GPUs before Ampere have f16 but no \
                 bf16 tensor cores"
            ),
        ),
    };
    AutoPrecision { choice, reason }
}

/// Applies `--precision` (`request`), or the hardware-aware rule where there is no flag and
/// `named` (the keys the config file and `--set` name) names no precision key, to `cfg` for
/// the devices of `client`, and validates the result. Returns the line to log, or `None` when
/// the config's own precision keys stand.
pub fn resolve_precision(
    cfg: &mut Config,
    request: Option<PrecisionRequest>,
    named: &NamedKeys,
    client: &Client,
) -> Result<Option<String>, TrainError> {
    let named_keys = named_precision_keys(named);
    let overridden = match named_keys.is_empty() {
        true => String::new(),
        false => format!("; replaces the config's {}", named_keys.join(", ")),
    };
    let line = match request {
        Some(PrecisionRequest::Fixed(choice)) => {
            choice.apply(cfg);
            format!("precision {} (--precision){overridden}", choice.describe())
        }
        Some(PrecisionRequest::Auto) => {
            let auto = auto_precision(&DeviceClass::of(client)?);
            auto.choice.apply(cfg);
            format!("precision auto: {auto}{overridden}")
        }
        None if named_keys.is_empty() => {
            let auto = auto_precision(&DeviceClass::of(client)?);
            auto.choice.apply(cfg);
            format!("precision auto (the config names no precision key): {auto}")
        }
        None => return Ok(None),
    };
    cfg.validate()
        .map_err(|e| TrainError::Other(format!("with {line}: {e}")))?;
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ComputeDtype;
    use crate::train::PrecisionPolicy;

    fn gpu(kind: &str, cc: &str) -> DeviceClass {
        DeviceClass::CudaGpu {
            kind: kind.to_string(),
            capability: ComputeCapability::parse(cc).unwrap(),
        }
    }

    #[test]
    fn the_rule_follows_the_device() {
        let cases = [
            (gpu("NVIDIA H100 80GB HBM3", "9.0"), PrecisionChoice::Fp8),
            (gpu("NVIDIA B200", "10.0"), PrecisionChoice::Fp8),
            (gpu("NVIDIA A100-SXM4-80GB", "8.0"), PrecisionChoice::Bf16),
            (gpu("NVIDIA GeForce RTX 3090", "8.6"), PrecisionChoice::Bf16),
            (gpu("Tesla V100-SXM2-16GB", "7.0"), PrecisionChoice::F16),
            (gpu("Tesla T4", "7.5"), PrecisionChoice::F16),
            (
                DeviceClass::Tpu {
                    kind: "TPU v4".into(),
                },
                PrecisionChoice::Bf16,
            ),
            (DeviceClass::Cpu, PrecisionChoice::F32),
        ];
        for (device, want) in cases {
            let auto = auto_precision(&device);
            assert_eq!(auto.choice, want, "{device:?}: {auto}");
        }
        let h100 = auto_precision(&gpu("NVIDIA H100 80GB HBM3", "9.0")).to_string();
        assert_eq!(
            h100,
            "bf16 + FP8 matmuls (NVIDIA H100 80GB HBM3, compute capability 9.0: Hopper and \
             newer have FP8 tensor cores)"
        );
        assert!(auto_precision(&gpu("Tesla V100", "7.0"))
            .to_string()
            .starts_with("f16 + dynamic loss scale (Tesla V100, compute capability 7.0"));
    }

    #[test]
    fn compute_capabilities_parse_and_order() {
        assert_eq!(
            ComputeCapability::parse("9.0"),
            Some(ComputeCapability { major: 9, minor: 0 })
        );
        assert!(ComputeCapability::parse("12.0") > ComputeCapability::parse("9.0"));
        for bad in ["", "9", "gfx90a", "9.x"] {
            assert_eq!(ComputeCapability::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn choices_map_onto_the_config_keys() {
        let dtype = |choice: PrecisionChoice, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let mut cfg = Config::load(None, &sets).unwrap();
            choice.apply(&mut cfg);
            cfg.validate().unwrap();
            let policy = PrecisionPolicy::from_config(&cfg);
            (
                cfg.compute_dtype(),
                policy.fp8().is_some(),
                cfg.optimization.use_dynamic_scale,
            )
        };
        // Whatever the config said before, the choice decides.
        let bf16_fp8 = ["tpu.use_bfloat16=true", "optimization.use_fp8=true"];
        for sets in [&[][..], &bf16_fp8[..]] {
            assert_eq!(
                dtype(PrecisionChoice::F32, sets),
                (ComputeDtype::F32, false, false)
            );
            assert_eq!(
                dtype(PrecisionChoice::Bf16, sets),
                (ComputeDtype::Bf16, false, false)
            );
            assert_eq!(
                dtype(PrecisionChoice::F16, sets),
                (ComputeDtype::F16, false, true)
            );
            assert_eq!(
                dtype(PrecisionChoice::Fp8, sets),
                (ComputeDtype::Bf16, true, false)
            );
        }
        // f32 is exactly the default config.
        let mut cfg = Config::default();
        PrecisionChoice::F32.apply(&mut cfg);
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn requests_parse_and_unknown_ones_list_the_allowed() {
        assert_eq!(PrecisionRequest::parse("auto"), Ok(PrecisionRequest::Auto));
        assert_eq!(
            PrecisionRequest::parse("BF16"),
            Ok(PrecisionRequest::Fixed(PrecisionChoice::Bf16))
        );
        let err = PrecisionRequest::parse("fp4").unwrap_err();
        assert_eq!(
            err,
            "unknown precision `fp4`; expected one of auto, f32, bf16, f16, fp8"
        );
    }

    #[test]
    fn only_configs_naming_no_precision_key_are_auto() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"model": {"num_layers": 2}, "optimization": {"block_size": 64}}"#,
        )
        .unwrap();
        let named = NamedKeys::of(Some(&path), &["training.max_steps=3".into()]).unwrap();
        assert!(named_precision_keys(&named).is_empty());
        let named = NamedKeys::of(Some(&path), &["optimization.use_fp8=false".into()]).unwrap();
        assert_eq!(named_precision_keys(&named), ["optimization.use_fp8"]);
        let default_json = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join("default.json");
        let named = NamedKeys::of(Some(&default_json), &[]).unwrap();
        assert!(
            named_precision_keys(&named).contains(&"tpu.use_bfloat16"),
            "configs/default.json lists every key, so it is run as written"
        );
    }
}
