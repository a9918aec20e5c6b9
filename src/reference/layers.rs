//! The per-position layers of the reference model that the architecture switches change:
//! RMSNorm (gain or `1 + gain`), the post-sublayer norms, the gated MLP (SiLU or tanh-GELU
//! gate) and the embedding scale.

use candle_core::{Tensor, D};

use super::error::Result;
use crate::config::{MlpActivation, ModelConfig};

/// `x * rsqrt(mean(x², last axis) + eps) * (norm_offset + gain)`.
pub(crate) fn rms_norm(config: &ModelConfig, x: &Tensor, gain: &Tensor) -> Result<Tensor> {
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + config.norm_eps)?
        .sqrt()?
        .recip()?;
    let scale = (gain + config.norm_offset)?;
    Ok(x.broadcast_mul(&inv_rms)?.broadcast_mul(&scale)?)
}

/// A sublayer's output `y` normalised by the gain `gain()` with `post_norms` (Gemma 2's
/// post-attention and post-feed-forward norms), else unchanged.
pub(crate) fn post_norm<'a>(
    config: &ModelConfig,
    y: Tensor,
    gain: impl FnOnce() -> &'a Tensor,
) -> Result<Tensor> {
    match config.post_norms {
        true => rms_norm(config, &y, gain()),
        false => Ok(y),
    }
}

/// `act(x @ w_gate) * (x @ w_up) @ w_down` with `model.activation` (Candle's `gelu` is the
/// tanh approximation; `silu` is x * sigmoid(x)).
pub(crate) fn gated_mlp(
    config: &ModelConfig,
    x: &Tensor,
    w_gate: &Tensor,
    w_up: &Tensor,
    w_down: &Tensor,
) -> Result<Tensor> {
    let gate = x.matmul(w_gate)?;
    let gate = match config.activation {
        MlpActivation::Silu => gate.silu()?,
        MlpActivation::GeluTanh => gate.gelu()?,
    };
    Ok((gate * x.matmul(w_up)?)?.matmul(w_down)?)
}

/// The embedding rows `h`, times sqrt(hidden_dim) with `scale_embeddings`.
pub(crate) fn scale_embeddings(config: &ModelConfig, h: Tensor) -> Result<Tensor> {
    Ok(match config.embedding_scale() {
        Some(scale) => (h * scale)?,
        None => h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn gemma() -> ModelConfig {
        ModelConfig {
            hidden_dim: 4,
            activation: MlpActivation::GeluTanh,
            norm_offset: 1.0,
            scale_embeddings: true,
            norm_eps: 1e-6,
            ..ModelConfig::default()
        }
    }

    fn t(v: &[f64], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(x: &Tensor) -> Vec<f64> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn rms_norm_scales_by_one_plus_the_gain() {
        let x = [0.5, -1.0, 2.0, 0.25];
        let gain = [0.1, -0.2, 0.0, 0.3];
        let got = values(
            &rms_norm(
                &gemma(),
                &t(&x, (1, 4)),
                &t(&gain, (1, 4)).squeeze(0).unwrap(),
            )
            .unwrap(),
        );
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / 4.0 + 1e-6).sqrt();
        for i in 0..4 {
            let want = x[i] / rms * (1.0 + gain[i]);
            assert!((got[i] - want).abs() < 1e-12, "{i}: {} vs {want}", got[i]);
        }
    }

    #[test]
    fn the_gate_is_the_tanh_gelu() {
        // One input, identity projections: y = gelu_tanh(x) * x.
        let x = [-2.0, -0.5, 0.3, 1.7];
        let eye: Vec<f64> = (0..16)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        let eye = t(&eye, (4, 4));
        let got = values(&gated_mlp(&gemma(), &t(&x, (1, 4)), &eye, &eye, &eye).unwrap());
        for i in 0..4 {
            let v = x[i];
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
            let want = 0.5 * v * (1.0 + inner.tanh()) * v;
            assert!((got[i] - want).abs() < 1e-12, "{i}: {} vs {want}", got[i]);
        }
    }

    #[test]
    fn embeddings_are_scaled_by_the_root_of_the_width() {
        let h = t(&[1.0, -2.0, 0.5, 3.0], (1, 4));
        assert_eq!(
            values(&scale_embeddings(&gemma(), h).unwrap()),
            vec![2.0, -4.0, 1.0, 6.0]
        );
    }
}
