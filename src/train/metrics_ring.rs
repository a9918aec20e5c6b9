//! The step's metrics kept on the devices: a ring of the last [`RING_STEPS`] steps'
//! [`StepMetrics`], donated to every step and rewritten in place. With it every output of the
//! step lives at a fixed address (XLA replays a program's CUDA graphs only while its buffers
//! stay put), and the host can read the metrics of several steps at once, starting the copy
//! before it launches the next step and waiting for it while that step runs.

use super::trainer::StepMetrics;
use super::TrainError;
use crate::engine::{Engine, HostArray, ShardedArray};
use crate::runtime::ElementType;
use vishwam_hlo::{DType, Tensor, TensorType};
use vishwam_mesh::PartitionSpec;

/// Steps whose metrics the ring holds: the host reads it at least this often.
pub const RING_STEPS: usize = 32;

/// The ring's name among the step's inputs and outputs.
pub const RING_NAME: &str = "metrics_ring";

/// Values in a row: one f32 per metric, in [`StepMetrics::NAMES`] order.
const WIDTH: usize = StepMetrics::NAMES.len();

/// The ring's type: `f32[RING_STEPS, WIDTH]`, the newest step in the last row.
pub fn ring_type() -> TensorType {
    TensorType::new(DType::F32, &[RING_STEPS as i64, WIDTH as i64])
}

/// The ring after a step: its oldest row dropped and `row` (the step's metric scalars in
/// [`StepMetrics::NAMES`] order) appended as the newest.
pub(super) fn push(ring: &Tensor, row: &[Tensor]) -> Tensor {
    let cells: Vec<Tensor> = row
        .iter()
        .map(|t| t.cast(DType::F32).reshape(&[1, 1]))
        .collect();
    let newest = cells[0].concat(&cells[1..], 1);
    ring.slice_axis(0, 1, RING_STEPS as i64)
        .concat(&[newest], 0)
}

/// A ring of zeros on `engine`'s devices, replicated.
pub(super) fn zeros(engine: &Engine) -> Result<ShardedArray, TrainError> {
    let ty = ring_type();
    let bytes = vec![0u8; RING_STEPS * WIDTH * 4];
    let host =
        HostArray::from_bytes(ElementType::F32, &ty.shape, bytes).map_err(TrainError::Other)?;
    Ok(engine.put(&host, &PartitionSpec::replicated())?)
}

/// The metrics of the step `back` steps before the newest, from a downloaded ring's bytes.
pub(super) fn row(ring: &[u8], back: usize) -> Result<StepMetrics, TrainError> {
    if back >= RING_STEPS || ring.len() != RING_STEPS * WIDTH * 4 {
        return Err(TrainError::Other(format!(
            "the metrics of a step {back} steps back are not in a ring of {RING_STEPS} steps \
             ({} bytes): the host must read the ring at least every {RING_STEPS} steps",
            ring.len()
        )));
    }
    let start = (RING_STEPS - 1 - back) * WIDTH * 4;
    let mut values = [0f32; WIDTH];
    for (v, b) in values
        .iter_mut()
        .zip(ring[start..start + WIDTH * 4].chunks_exact(4))
    {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(StepMetrics::from_values(&values))
}
