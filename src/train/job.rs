//! A trainer as one process of a multi-process job: the rows of each batch it feeds, the
//! shards of the state it writes to sharded checkpoints, and the choices process 0 makes for
//! all (see [`super::run_training_in`]).

use super::checkpoint::sharded::{save_sharded, CheckpointJob, LocalShard};
use super::run::{BatchSource, CheckpointRecord};
use super::{StepLayout, TrainError, Trainer};
use crate::data::process_slice::ProcessSlice;
use crate::engine::{HostArray, ShardedArray};
use std::path::PathBuf;
use vishwam_hlo::PartitionSpec;

impl Trainer {
    /// Makes this process feed only `rows` of every micro-batch (a process of a multi-process
    /// job: [`ProcessSlice::of_process`]): the batches given to [`Trainer::step`] and
    /// [`Trainer::evaluate`] then hold only those rows (`[accum, rows.rows, seq_len]`).
    /// Fails, naming why, when the mesh does not place exactly those rows on this process's
    /// devices.
    pub fn feed_rows(&mut self, rows: ProcessSlice) -> Result<(), TrainError> {
        check_process_rows(
            self.engine.placement(),
            &self.engine.mesh,
            &self.layout,
            rows,
        )?;
        self.batch_rows = rows;
        Ok(())
    }

    /// Places a batch array whose dimension `row_dim` holds this process's rows of each
    /// micro-batch ([`Trainer::feed_rows`]): the whole array in a single-process run.
    pub(super) fn put_rows(
        &self,
        part: &HostArray,
        spec: &PartitionSpec,
        row_dim: usize,
    ) -> Result<ShardedArray, TrainError> {
        let rows = self.batch_rows;
        if rows.rows == rows.period {
            return Ok(self.engine.put(part, spec)?);
        }
        if part.shape.get(row_dim) != Some(&(rows.rows as i64)) {
            return Err(TrainError::Other(format!(
                "this process feeds {} rows of each micro-batch, but got a batch of shape {:?}",
                rows.rows, part.shape
            )));
        }
        let mut global = part.shape.clone();
        global[row_dim] = rows.period as i64;
        let mut start = vec![0; global.len()];
        start[row_dim] = rows.first_row as i64;
        Ok(self.engine.put_block(part, &global, &start, spec)?)
    }

    /// The distinct shards of the state that this process owns (the first replica of each is
    /// on its devices), downloaded, for a sharded checkpoint: over the processes of a job,
    /// every distinct shard of every state array comes once.
    pub fn owned_state_shards(&self) -> Result<Vec<LocalShard>, TrainError> {
        let mut out = Vec::new();
        for (name, array) in self.layout.state.names().into_iter().zip(&self.state) {
            for (start, shape, data) in self.engine.owned_shards(array)? {
                out.push(LocalShard {
                    name: name.clone(),
                    element_type: array.element_type,
                    global_shape: array.shape.clone(),
                    start,
                    shape,
                    data,
                });
            }
        }
        Ok(out)
    }
}

/// Checks that the mesh places exactly `rows` of every micro-batch of `layout`'s batch on the
/// devices of the process `placement` describes (see [`Trainer::feed_rows`]), naming why not.
pub fn check_process_rows(
    placement: &crate::engine::MeshPlacement,
    mesh: &vishwam_mesh::Mesh,
    layout: &StepLayout,
    rows: ProcessSlice,
) -> Result<(), TrainError> {
    rows.check(layout.micro_batch)?;
    if rows.period != layout.micro_batch {
        return Err(TrainError::Other(format!(
            "a process's rows are given per micro-batch of {}, not per block of {}",
            layout.micro_batch, rows.period
        )));
    }
    let shape = [
        layout.accum as i64,
        layout.micro_batch as i64,
        layout.seq_len as i64,
    ];
    let batch = vishwam_mesh::ShardLayout::new(mesh, &layout.batch_spec, &shape)?;
    placement.check_rows(&batch, 1, rows.first_row..rows.first_row + rows.rows)?;
    Ok(())
}

/// Saves this process's part of the checkpoint of `step` in a multi-process job: the
/// distinct shards of the state it owns ([`crate::engine::Engine::owned_shards`]); process 0
/// commits the checkpoint once every process has written its part.
pub fn save_sharded_state(
    trainer: &Trainer,
    data: &dyn BatchSource,
    step: u64,
    job: &dyn CheckpointJob,
) -> Result<PathBuf, TrainError> {
    let shards = trainer.owned_state_shards()?;
    let r = CheckpointRecord::of(trainer, data);
    let dir = save_sharded(
        &r.root, step, &shards, r.config, r.position, r.geometry, r.keep, job,
    )?;
    if job.process_id() == 0 {
        tracing::info!("saved checkpoint {}", dir.display());
    }
    Ok(dir)
}

/// The checkpoint process 0 chose to resume from (`None`: none), as every process learns it.
pub(super) fn agree_on_resume(
    job: &dyn CheckpointJob,
    chosen: Option<PathBuf>,
) -> Result<Option<PathBuf>, TrainError> {
    const KEY: &str = "vishwam/train/resume-from";
    if job.process_id() == 0 {
        let value = serde_json::to_vec(&chosen).unwrap_or_default();
        job.put(KEY, &value)?;
        return Ok(chosen);
    }
    let value = job.get(KEY)?;
    serde_json::from_slice(&value).map_err(|e| {
        TrainError::Other(format!(
            "process 0's choice of checkpoint in the job's store is not a path: {e}"
        ))
    })
}
