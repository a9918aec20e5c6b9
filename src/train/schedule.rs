//! The learning-rate schedule (docs/model.md): linear warmup, then cosine, linear or constant.
//! One pure host function and its traced twin, kept side by side.

use crate::config::{LrSchedule, TrainingConfig};
use vishwam_hlo::{DType, Tensor};

/// Learning rate of optimizer step `t` (1-based).
pub fn lr_at(cfg: &TrainingConfig, t: usize) -> f64 {
    let (peak, w) = (cfg.learning_rate, cfg.warmup_steps);
    let floor = cfg.min_lr_ratio * peak;
    if w > 0 && t <= w {
        return peak * t as f64 / w as f64;
    }
    let p = ((t - w.min(t)) as f64 / (cfg.max_steps.saturating_sub(w)).max(1) as f64).min(1.0);
    match cfg.lr_schedule {
        LrSchedule::Cosine => {
            floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * p).cos())
        }
        LrSchedule::Linear => peak - (peak - floor) * p,
        LrSchedule::Constant => peak,
    }
}

/// [`lr_at`] traced: `t` is an f32 scalar step (1-based); returns an f32 scalar.
pub fn lr_traced(cfg: &TrainingConfig, t: &Tensor) -> Tensor {
    let (peak, w) = (cfg.learning_rate, cfg.warmup_steps as f64);
    let floor = cfg.min_lr_ratio * peak;
    let span = (cfg.max_steps as f64 - w).max(1.0);
    let p = ((t - w) / span).maximum(0.0).minimum(1.0);
    let decayed = match cfg.lr_schedule {
        LrSchedule::Cosine => {
            ((p * std::f64::consts::PI).cos() + 1.0) * (0.5 * (peak - floor)) + floor
        }
        LrSchedule::Linear => p * (floor - peak) + peak,
        LrSchedule::Constant => t.graph().full(peak, t.ty()),
    };
    if w > 0.0 {
        let warm = t * (peak / w);
        t.le(w).select(&warm, &decayed)
    } else {
        decayed.cast(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_hits_its_landmarks() {
        let mut cfg = TrainingConfig {
            learning_rate: 1.0,
            warmup_steps: 10,
            max_steps: 110,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((lr_at(&cfg, 1) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 60) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 110) - 0.1).abs() < 1e-12);
        cfg.lr_schedule = LrSchedule::Linear;
        assert!((lr_at(&cfg, 60) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 35) - 0.775).abs() < 1e-12);
        cfg.lr_schedule = LrSchedule::Constant;
        assert_eq!(lr_at(&cfg, 100), 1.0);
        cfg.warmup_steps = 0;
        assert_eq!(lr_at(&cfg, 1), 1.0);
    }
}
