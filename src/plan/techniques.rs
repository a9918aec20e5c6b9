//! The memory techniques of the Pufferfish table, measured: the compiled peak of a step with
//! gradient checkpointing, mixed precision, grouped-query attention and all of them, against
//! the f32 baseline (`vishwam bench memory`).

use super::probe::{step_bytes, MemoryProbe};
use super::PlanError;
use crate::config::Config;

/// The techniques, in table order: name and how it changes the baseline config.
pub const TECHNIQUES: [&str; 5] = [
    "baseline (f32)",
    "gradient checkpointing",
    "mixed precision (bf16)",
    "GQA (kv heads = heads / 4)",
    "all together",
];

/// `base` (the f32 baseline) with technique `i` of [`TECHNIQUES`].
pub fn with_technique(base: &Config, i: usize) -> Config {
    let mut cfg = base.clone();
    let remat = i == 1 || i == 4;
    let mixed = i == 2 || i == 4;
    let gqa = i == 3 || i == 4;
    cfg.memory.gradient_checkpointing = remat;
    cfg.optimization.mixed_precision = mixed;
    if gqa {
        cfg.model.num_kv_heads = Some((cfg.model.num_heads / 4).max(1));
    }
    cfg
}

/// One row of the table: the compiled bytes per device of each technique for one depth.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRow {
    /// Blocks of the model.
    pub layers: usize,
    /// Bytes per device, in [`TECHNIQUES`] order.
    pub bytes: [i64; 5],
}

impl MemoryRow {
    /// The reduction of technique `i` against the baseline, in percent.
    pub fn reduction_pct(&self, i: usize) -> f64 {
        100.0 * (1.0 - self.bytes[i] as f64 / self.bytes[0].max(1) as f64)
    }
}

/// Compiles the step of `base` at each depth of `layers` with each technique and returns
/// the compiled memory per device.
pub fn memory_table(
    probe: &mut MemoryProbe,
    base: &Config,
    layers: &[usize],
) -> Result<Vec<MemoryRow>, PlanError> {
    let mut rows = Vec::new();
    for &n in layers {
        let mut cfg = base.clone();
        cfg.model.num_layers = n;
        let mut bytes = [0i64; 5];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = step_bytes(&probe.measure(&with_technique(&cfg, i))?);
        }
        rows.push(MemoryRow { layers: n, bytes });
    }
    Ok(rows)
}

/// The table as text: GiB per technique and its reduction against the baseline.
pub fn format_table(rows: &[MemoryRow]) -> String {
    let mut out = format!("{:<8}", "layers");
    for name in TECHNIQUES {
        out.push_str(&format!("  {name:>28}"));
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!("{:<8}", r.layers));
        for i in 0..TECHNIQUES.len() {
            let cell = match i {
                0 => super::show_bytes(r.bytes[0]),
                _ => match r.reduction_pct(i) {
                    p if p >= 0.0 => format!("{} (-{p:.0}%)", super::show_bytes(r.bytes[i])),
                    p => format!("{} (+{:.0}%)", super::show_bytes(r.bytes[i]), -p),
                },
            };
            out.push_str(&format!("  {cell:>28}"));
        }
        out.push('\n');
    }
    out
}
