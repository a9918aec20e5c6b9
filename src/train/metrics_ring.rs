//! The step's metrics kept on the devices: a ring of the last [`RING_STEPS`] steps' metrics,
//! donated to every step and rewritten in place. With it every output of the step lives at a
//! fixed address (XLA replays a program's CUDA graphs only while its buffers stay put), and
//! the host can read the metrics of several steps at once, starting the copy before it
//! launches the next step and waiting for it while that step runs.
//!
//! A row holds, in order: the [`StepMetrics::NAMES`] scalars; when distilling, the
//! [`DISTILL_METRICS`]; for a MoE model, the [`MOE_METRICS`](super::moe_state::MOE_METRICS) flattened (utilisation `[L, E]`,
//! dropped fraction, aux loss and, with loss-free balancing, bias norms, `[L]` each); with
//! f16 dynamic loss scaling, the loss scale after the step.

use super::distill::{DistillContext, DistillMetrics, DISTILL_METRICS};
use super::moe_state::{moe_layers, MoeMetrics};
use super::trainer::StepMetrics;
use super::TrainError;
use crate::config::Config;
use crate::engine::{Engine, HostArray, ShardedArray};
use crate::runtime::ElementType;
use vishwam_hlo::{DType, HloError, Tensor, TensorType};
use vishwam_mesh::PartitionSpec;

/// Steps whose metrics the ring holds: the host reads it at least this often.
pub const RING_STEPS: usize = 32;

/// The ring's name among the step's inputs and outputs.
pub const RING_NAME: &str = "metrics_ring";

/// What a row of the ring holds beyond the metrics of every step (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct RingLayout {
    /// When the step distils a teacher (ce, kl and intermediate follow the metrics): whether
    /// it distils hidden states (else the intermediate value is a 0 to ignore).
    distill: Option<bool>,
    /// For a MoE model: its MoE blocks, the experts per block, and whether bias norms follow.
    moe: Option<(Vec<usize>, usize, bool)>,
    /// Whether the f16 loss scale ends the row.
    loss_scale: bool,
}

impl RingLayout {
    /// The ring of `cfg`'s step, distilling `distill`'s teacher when given, with f16 dynamic
    /// loss scaling when `loss_scale`.
    pub fn of(cfg: &Config, distill: Option<&DistillContext>, loss_scale: bool) -> RingLayout {
        let blocks = moe_layers(&cfg.model);
        RingLayout {
            distill: distill.map(|d| d.intermediate.is_some()),
            moe: (!blocks.is_empty()).then(|| {
                (
                    blocks,
                    cfg.model.num_experts.max(1),
                    cfg.model.use_lossfreebalance,
                )
            }),
            loss_scale,
        }
    }

    /// Values in a row.
    pub fn width(&self) -> usize {
        let moe = self.moe.as_ref().map_or(0, |(blocks, e, bias)| {
            let l = blocks.len();
            l * e + 2 * l + usize::from(*bias) * l
        });
        StepMetrics::NAMES.len()
            + usize::from(self.distill.is_some()) * DISTILL_METRICS.len()
            + moe
            + usize::from(self.loss_scale)
    }

    /// The ring's type: `f32[RING_STEPS, width]`, the newest step in the last row.
    pub fn ring_type(&self) -> TensorType {
        TensorType::new(DType::F32, &[RING_STEPS as i64, self.width() as i64])
    }

    /// The ring after a step: its oldest row dropped and `row` (the values of the module
    /// documentation, in order, each flattened) appended as the newest.
    pub(super) fn push(&self, ring: &Tensor, row: &[Tensor]) -> Result<Tensor, HloError> {
        let cells: Vec<Tensor> = row
            .iter()
            .map(|t| {
                let n = t.shape().iter().product::<i64>();
                t.cast(DType::F32).reshape(&[1, n])
            })
            .collect();
        let newest = cells[0].concat(&cells[1..], 1);
        if newest.shape()[1] != self.width() as i64 {
            return Err(HloError::Shape {
                op: "metrics ring".into(),
                detail: format!(
                    "the step's metrics are {} values, the ring's rows {} ({self:?})",
                    newest.shape()[1],
                    self.width()
                ),
            });
        }
        Ok(ring
            .slice_axis(0, 1, RING_STEPS as i64)
            .concat(&[newest], 0))
    }

    /// A ring of zeros on `engine`'s devices, replicated.
    pub(super) fn zeros(&self, engine: &Engine) -> Result<ShardedArray, TrainError> {
        let ty = self.ring_type();
        let bytes = vec![0u8; RING_STEPS * self.width() * 4];
        let host =
            HostArray::from_bytes(ElementType::F32, &ty.shape, bytes).map_err(TrainError::Other)?;
        Ok(engine.put(&host, &PartitionSpec::replicated())?)
    }

    /// The metrics of the step `back` steps before the newest, from a downloaded ring's
    /// bytes.
    pub(super) fn row(&self, ring: &[u8], back: usize) -> Result<StepMetrics, TrainError> {
        let width = self.width();
        if back >= RING_STEPS || ring.len() != RING_STEPS * width * 4 {
            return Err(TrainError::Other(format!(
                "the metrics of a step {back} steps back are not in a ring of {RING_STEPS} steps \
                 of {width} values ({} bytes): the host must read the ring at least every \
                 {RING_STEPS} steps",
                ring.len()
            )));
        }
        let start = (RING_STEPS - 1 - back) * width * 4;
        let values: Vec<f32> = ring[start..start + width * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut rest = &values[..];
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };
        let base: [f32; 8] = take(StepMetrics::NAMES.len())
            .try_into()
            .expect("eight metrics");
        let mut metrics = StepMetrics::from_values(&base);
        if let Some(intermediate) = self.distill {
            let d = take(DISTILL_METRICS.len());
            metrics.distill = Some(DistillMetrics {
                ce: d[0],
                kl: d[1],
                intermediate: intermediate.then_some(d[2]),
            });
        }
        if let Some((blocks, e, bias)) = &self.moe {
            let l = blocks.len();
            let utilisation = take(l * e).chunks(*e).map(<[f32]>::to_vec).collect();
            metrics.moe = Some(MoeMetrics {
                layers: blocks.clone(),
                utilisation,
                dropped_fraction: take(l).to_vec(),
                aux_loss: take(l).to_vec(),
                bias_norm: bias.then(|| take(l).to_vec()),
            });
        }
        if self.loss_scale {
            metrics.loss_scale = Some(take(1)[0]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring whose row `r` (oldest first) holds `100 r + column` in each column.
    fn ring_bytes(width: usize) -> Vec<u8> {
        (0..RING_STEPS * width)
            .flat_map(|i| ((100 * (i / width) + i % width) as f32).to_le_bytes())
            .collect()
    }

    #[test]
    fn a_row_is_read_in_the_order_the_step_writes_it() {
        let mut cfg = Config::default();
        cfg.model.num_layers = 4;
        cfg.model.use_moe = true;
        cfg.model.moe_layer_frequency = 2;
        cfg.model.num_experts = 3;
        cfg.model.use_lossfreebalance = true;
        let layout = RingLayout::of(&cfg, None, true);
        // 8 metrics, utilisation 2 x 3, dropped, aux and bias norms 2 each, the loss scale.
        assert_eq!(layout.width(), 8 + 6 + 2 + 2 + 2 + 1);
        let ring = ring_bytes(layout.width());
        // One step back from the newest: row RING_STEPS - 2.
        let m = layout.row(&ring, 1).unwrap();
        let base = 100.0 * (RING_STEPS - 2) as f32;
        assert_eq!((m.loss, m.fp8_saturated_backward), (base, base + 7.0));
        let moe = m.moe.unwrap();
        assert_eq!(moe.layers, vec![1, 3]);
        assert_eq!(
            moe.utilisation[1],
            vec![base + 11.0, base + 12.0, base + 13.0]
        );
        assert_eq!(moe.dropped_fraction, vec![base + 14.0, base + 15.0]);
        assert_eq!(moe.aux_loss, vec![base + 16.0, base + 17.0]);
        assert_eq!(moe.bias_norm, Some(vec![base + 18.0, base + 19.0]));
        assert_eq!(m.loss_scale, Some(base + 20.0));
        assert!(m.distill.is_none());
    }

    #[test]
    fn a_step_older_than_the_ring_is_an_error() {
        let layout = RingLayout::of(&Config::default(), None, false);
        let ring = ring_bytes(layout.width());
        assert!(layout.row(&ring, RING_STEPS - 1).is_ok());
        let err = layout.row(&ring, RING_STEPS).unwrap_err().to_string();
        assert!(err.contains("at least every 32 steps"), "{err}");
    }
}
