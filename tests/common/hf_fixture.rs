//! Hugging Face checkpoints with random weights for the import tests.

use rand::{Rng, SeedableRng};
use std::path::Path;

/// Writes `tensors` (name, shape) into `dir/model.safetensors` as seeded random bf16 values
/// (vectors, the norms' gains, in ±0.5; matrices in ±0.2), and returns each tensor's values
/// as f32, in the order given.
pub fn write_random_bf16_safetensors(
    dir: &Path,
    tensors: Vec<(String, Vec<usize>)>,
    seed: u64,
) -> Vec<(String, Vec<f32>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<half::bf16>)> = tensors
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let spread = if shape.len() == 1 { 0.5 } else { 0.2 };
            let values = (0..n)
                .map(|_| half::bf16::from_f32(rng.gen_range(-spread..spread)))
                .collect();
            (name, shape, values)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes: &[u8] = bytemuck::cast_slice(values);
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::BF16,
                shape.clone(),
                bytes,
            )
            .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
    tensors
        .into_iter()
        .map(|(name, _, v)| (name, v.iter().map(|x| x.to_f32()).collect()))
        .collect()
}
