//! The distillation objective in Candle: label cross-entropy, the teacher-student KL
//! divergence at a temperature and the hidden-state distances of matched layers, with the
//! student's gradients (and those of its projections) by Candle's backprop. Composed from
//! plain Candle ops, independently of the chunked XLA version.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};

use super::error::{ReferenceError, Result};
use super::kernels::softmax_cross_entropy;
use super::model::{Gradients, ReferenceModel};
use super::Batch;
use crate::config::IntermediateLoss;

/// The distillation settings the reference applies.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceDistillation {
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight of the KL term; 1 - alpha weighs the cross-entropy.
    pub alpha: f64,
    /// `(student layer, teacher layer)` pairs whose hidden states are matched (empty: none).
    pub pairs: Vec<(usize, usize)>,
    /// The hidden-state distance.
    pub loss: IntermediateLoss,
    /// Weight (beta) of the hidden-state term.
    pub weight: f64,
}

/// The terms of the objective, each a mean over the real tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillLosses {
    /// `alpha T² kl + (1 - alpha) ce + beta intermediate`.
    pub objective: f64,
    /// Label cross-entropy.
    pub ce: f64,
    /// KL(softmax(teacher/T) || softmax(student/T)).
    pub kl: f64,
    /// Mean over matched layers of the hidden-state distance (0 without pairs).
    pub intermediate: f64,
}

/// Log-softmax over the last axis (the max is a constant of the graph).
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Per-token distance `[N]` between `s` and `t` `[N, H]`.
fn distance(s: &Tensor, t: &Tensor, kind: IntermediateLoss) -> Result<Tensor> {
    Ok(match kind {
        IntermediateLoss::Mse => (s - t)?.sqr()?.mean(D::Minus1)?,
        IntermediateLoss::Cosine => {
            let dot = (s * t)?.sum(D::Minus1)?;
            let norms = (s.sqr()?.sum(D::Minus1)?.sqrt()? * t.sqr()?.sum(D::Minus1)?.sqrt()?)?;
            (dot / (norms + 1e-8)?)?.affine(-1.0, 1.0)?
        }
    })
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The distillation objective of `student` learning from `teacher` on `batch`, and its
/// gradient for every student parameter and every projection in `projections`
/// (`distill.proj.{i}`, `[H_s, H_t]`, applied to student layer i's hidden states). Targets
/// must lie in the vocabulary.
pub fn distillation_loss_and_grads(
    student: &ReferenceModel,
    projections: &BTreeMap<String, Var>,
    teacher: &ReferenceModel,
    spec: &ReferenceDistillation,
    batch: &Batch,
) -> Result<(DistillLosses, Gradients)> {
    let (b, t) = (batch.batch_size, batch.seq_len);
    let n = b * t;
    let dtype = student.dtype().candle();
    let (zs, student_layers) = student.logits_and_layers(&batch.tokens, b, t)?;
    let (zt, teacher_layers) = teacher.logits_and_layers(&batch.tokens, b, t)?;
    let (zt, zs) = (zt.detach().to_dtype(dtype)?, zs);
    let targets = batch
        .targets
        .iter()
        .enumerate()
        .map(|(position, &id)| {
            u32::try_from(id)
                .ok()
                .filter(|&u| (u as usize) < student.config().vocab_size)
                .ok_or(ReferenceError::TokenOutOfRange {
                    what: "target",
                    position,
                    id: id.into(),
                    vocab_size: student.config().vocab_size,
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    let targets = Tensor::from_vec(targets, n, &Device::Cpu)?;
    let mask = Tensor::from_slice(&batch.mask, n, &Device::Cpu)?.to_dtype(dtype)?;
    let denominator = batch.mask.iter().map(|&m| m as f64).sum::<f64>().max(1.0);
    let masked_mean = |per_token: &Tensor| -> Result<Tensor> {
        Ok((per_token.mul(&mask)?.sum_all()? / denominator)?)
    };

    let ce = masked_mean(&softmax_cross_entropy(&zs, &targets)?)?;
    let log_ps = log_softmax(&(&zs / spec.temperature)?)?;
    let log_pt = log_softmax(&(&zt / spec.temperature)?)?;
    let kl = masked_mean(&(log_pt.exp()? * (&log_pt - &log_ps)?)?.sum(D::Minus1)?)?;
    let t2 = spec.temperature * spec.temperature;
    let mut objective = ((&ce * (1.0 - spec.alpha))? + (&kl * (spec.alpha * t2))?)?;
    let mut intermediate = None;
    if !spec.pairs.is_empty() {
        let mut total: Option<Tensor> = None;
        for &(i, j) in &spec.pairs {
            let mut s = student_layers[i].clone();
            if let Some(p) = projections.get(&format!("distill.proj.{i}")) {
                s = s.matmul(p.as_tensor())?;
            }
            let target = teacher_layers[j].detach().to_dtype(dtype)?;
            let part = masked_mean(&distance(&s, &target, spec.loss)?)?;
            total = Some(match total {
                Some(acc) => (acc + part)?,
                None => part,
            });
        }
        if let Some(total) = total {
            let mean = (total / spec.pairs.len() as f64)?;
            objective = (objective + (&mean * spec.weight)?)?;
            intermediate = Some(mean);
        }
    }
    let store = objective.backward()?;
    let mut grads = BTreeMap::new();
    for (name, var) in student.parameters().iter().chain(projections) {
        let grad = match store.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        grads.insert(name.clone(), grad);
    }
    let losses = DistillLosses {
        objective: scalar(&objective)?,
        ce: scalar(&ce)?,
        kl: scalar(&kl)?,
        intermediate: intermediate
            .as_ref()
            .map(scalar)
            .transpose()?
            .unwrap_or(0.0),
    };
    Ok((losses, Gradients(grads)))
}
