//! The learning-rate schedule of docs/model.md as a pure function of the step.

use crate::config::{LrSchedule, TrainingConfig};

/// Learning rate of optimizer step `t` (counted from 1): linear warmup to `learning_rate`
/// over `warmup_steps`, then `lr_schedule` down to `min_lr_ratio * learning_rate` at
/// `max_steps`; past `max_steps` the decay stays at its end value.
pub fn lr_at(t: usize, training: &TrainingConfig) -> f64 {
    let (lr_max, warmup) = (training.learning_rate, training.warmup_steps);
    if warmup > 0 && t <= warmup {
        return lr_max * t as f64 / warmup as f64;
    }
    let lr_min = training.min_lr_ratio * lr_max;
    let decay_steps = training.max_steps.saturating_sub(warmup).max(1);
    let progress = (t.saturating_sub(warmup) as f64 / decay_steps as f64).min(1.0);
    match training.lr_schedule {
        LrSchedule::Cosine => {
            lr_min + 0.5 * (lr_max - lr_min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        LrSchedule::Linear => lr_max - (lr_max - lr_min) * progress,
        LrSchedule::Constant => lr_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn training(schedule: LrSchedule, warmup: usize) -> TrainingConfig {
        TrainingConfig {
            learning_rate: 3e-3,
            min_lr_ratio: 0.1,
            lr_schedule: schedule,
            warmup_steps: warmup,
            max_steps: 110,
            ..TrainingConfig::default()
        }
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-14 * want.abs().max(1e-300)
    }

    /// t = 1, W, W+1 and max_steps for each schedule, values worked out by hand from
    /// docs/model.md (W = 10, max_steps = 110, lr_max = 3e-3, lr_min = 3e-4).
    #[test]
    fn documented_values_at_the_schedule_corners() {
        let (lr_max, lr_min) = (3e-3_f64, 3e-4_f64);
        // p at W+1 is 1/100.
        let cos_w1 =
            lr_min + 0.5 * (lr_max - lr_min) * (1.0 + (std::f64::consts::PI / 100.0).cos());
        let cases = [
            (LrSchedule::Cosine, [3e-4, lr_max, cos_w1, lr_min]),
            (
                LrSchedule::Linear,
                [3e-4, lr_max, lr_max - (lr_max - lr_min) / 100.0, lr_min],
            ),
            (LrSchedule::Constant, [3e-4, lr_max, lr_max, lr_max]),
        ];
        for (schedule, want) in cases {
            let c = training(schedule, 10);
            for (t, want) in [1, 10, 11, 110].into_iter().zip(want) {
                let got = lr_at(t, &c);
                assert!(close(got, want), "{schedule:?} t={t}: {got} vs {want}");
            }
        }
    }

    /// Without warmup step 1 is already in the decay (p = 1/max_steps), and the decay holds
    /// at its floor past max_steps instead of rising again.
    #[test]
    fn no_warmup_and_past_the_end() {
        let c = training(LrSchedule::Cosine, 0);
        let want = 3e-4 + 0.5 * 2.7e-3 * (1.0 + (std::f64::consts::PI / 110.0).cos());
        assert!(close(lr_at(1, &c), want));
        assert!(close(lr_at(500, &c), 3e-4));
        let linear = training(LrSchedule::Linear, 0);
        assert!(close(lr_at(500, &linear), 3e-4));
        // warmup == max_steps: the decay has length max(0, 1) = 1 and ends at lr_min.
        let c = TrainingConfig {
            warmup_steps: 110,
            ..training(LrSchedule::Linear, 0)
        };
        assert!(close(lr_at(110, &c), 3e-3));
        assert!(close(lr_at(111, &c), 3e-4));
    }
}
