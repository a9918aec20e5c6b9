//! Rotary position embedding, rotate-half convention (HF Llama), with linear or NTK scaling.

use candle_core::{DType, Device, Tensor, D};

use super::error::{ReferenceError, Result};
use crate::config::{ModelConfig, RopeScalingType};

/// `cos` and `sin` tables for positions 0..T, shaped `[T, 1, D]` to broadcast over
/// `[B, T, heads, D]`.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

/// Base frequency and position divisor after `rope_scaling`: NTK raises the base to
/// `theta * factor^(D / (D - 2))`, linear divides positions by `factor`.
pub fn scaled_theta_and_position_divisor(config: &ModelConfig) -> Result<(f64, f64)> {
    let d = config.head_dim() as f64;
    Ok(match config.rope_scaling {
        None => (config.rope_theta, 1.0),
        Some(s) => match s.kind {
            RopeScalingType::Linear => (config.rope_theta, s.factor),
            RopeScalingType::Ntk => {
                if config.head_dim() <= 2 {
                    return Err(ReferenceError::InvalidConfig {
                        key: "model.head_dim",
                        expected: "> 2 with NTK RoPE scaling (the exponent is D / (D - 2))".into(),
                        got: config.head_dim().to_string(),
                    });
                }
                (config.rope_theta * s.factor.powf(d / (d - 2.0)), 1.0)
            }
        },
    })
}

impl RopeTables {
    /// Tables for `seq_len` positions, computed in f64 and rounded once to `dtype`.
    pub fn new(config: &ModelConfig, seq_len: usize, dtype: DType) -> Result<RopeTables> {
        let head_dim = config.head_dim();
        let half = head_dim / 2;
        let (theta, divisor) = scaled_theta_and_position_divisor(config)?;
        let mut cos = Vec::with_capacity(seq_len * head_dim);
        let mut sin = Vec::with_capacity(seq_len * head_dim);
        for t in 0..seq_len {
            let pos = t as f64 / divisor;
            // Both halves of the head dimension use the same frequencies: [f_0..f_{D/2}, f_0..].
            for j in (0..half).chain(0..half) {
                let inv_freq = theta.powf(-2.0 * j as f64 / head_dim as f64);
                let angle = pos * inv_freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |values: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(values, (seq_len, 1, head_dim), &Device::Cpu)?.to_dtype(dtype)?)
        };
        Ok(RopeTables {
            cos: table(cos)?,
            sin: table(sin)?,
        })
    }

    /// `x * cos + rotate_half(x) * sin` for `x` of shape `[B, T, heads, D]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&self.cos)? + rotated.broadcast_mul(&self.sin)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    fn config(scaling: Option<RopeScaling>) -> ModelConfig {
        ModelConfig {
            hidden_dim: 32,
            num_heads: 4,
            rope_theta: 100.0,
            rope_scaling: scaling,
            ..ModelConfig::default()
        }
    }

    /// Rotating the unit vector e_0 at position t gives cos/sin of t * inv_freq[0] = t in
    /// dims 0 and D/2; checked against the formulas by hand for each scaling.
    #[test]
    fn rotation_of_a_unit_vector_matches_the_formula() {
        let cases = [
            (None, 3.0_f64, 100.0_f64),
            (
                Some(RopeScaling {
                    kind: RopeScalingType::Linear,
                    factor: 4.0,
                }),
                0.75,
                100.0,
            ),
            (
                Some(RopeScaling {
                    kind: RopeScalingType::Ntk,
                    factor: 4.0,
                }),
                3.0,
                100.0 * 4.0_f64.powf(8.0 / 6.0),
            ),
        ];
        for (scaling, pos_at_3, theta) in cases {
            let c = config(scaling);
            let d = c.head_dim();
            let tables = RopeTables::new(&c, 4, DType::F64).unwrap();
            // x[b=0, t, h=0, :] = e_1 (dim 1): rotation uses frequency j = 1.
            let mut x = vec![0.0_f64; 4 * d];
            for t in 0..4 {
                x[t * d + 1] = 1.0;
            }
            let x = Tensor::from_vec(x, (1, 4, 1, d), &Device::Cpu).unwrap();
            let y: Vec<f64> = tables
                .apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let angle = pos_at_3 * theta.powf(-2.0 / d as f64);
            let row = &y[3 * d..4 * d];
            assert!((row[1] - angle.cos()).abs() < 1e-12, "{row:?}");
            // rotate_half(e_1) = e_{1 + D/2} (x1 moves to the second half).
            assert!((row[1 + d / 2] - angle.sin()).abs() < 1e-12, "{row:?}");
            let others: f64 = row
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1 && *i != 1 + d / 2)
                .map(|(_, v)| v.abs())
                .sum();
            assert_eq!(others, 0.0);
        }
    }
}
