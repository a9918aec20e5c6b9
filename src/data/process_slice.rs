//! Which rows of each global batch one process of a multi-process job feeds.
//!
//! A global batch of `B` rows is `B / M` micro-batches of `M` rows, one after the other (the
//! step's `[accum, micro_batch, seq_len]` array). vishwam orders the job's devices by process
//! (process 0's devices first) and lays the mesh over them with the data-parallel axes
//! outermost, so each micro-batch, split into equal contiguous blocks over the data shards,
//! gives each process one contiguous block of its rows: process `p` of `P` feeds rows
//! `[p M / P, (p + 1) M / P)` of every micro-batch. Every row of the global batch is fed by
//! exactly one process.

use super::error::{DataError, Result};
use serde::{Deserialize, Serialize};

/// The rows `first_row .. first_row + rows` of every block of `period` rows of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSlice {
    /// The first row within each block.
    pub first_row: usize,
    /// Rows taken from each block.
    pub rows: usize,
    /// Rows per block (a micro-batch).
    pub period: usize,
}

impl ProcessSlice {
    /// Every row of a batch of `batch_rows` (a single-process run).
    pub fn whole(batch_rows: usize) -> ProcessSlice {
        ProcessSlice {
            first_row: 0,
            rows: batch_rows,
            period: batch_rows,
        }
    }

    /// Process `process_id` of `num_processes`'s rows of a batch of `batch_rows` rows made
    /// of micro-batches of `micro_rows`.
    pub fn of_process(
        batch_rows: usize,
        micro_rows: usize,
        num_processes: usize,
        process_id: usize,
    ) -> Result<ProcessSlice> {
        if num_processes == 0 || process_id >= num_processes {
            return Err(DataError::InvalidOption {
                name: "process id",
                value: format!("{process_id} of {num_processes} processes"),
                expected: "an id below the number of processes".into(),
            });
        }
        if micro_rows == 0 || !batch_rows.is_multiple_of(micro_rows) {
            return Err(DataError::InvalidOption {
                name: "micro-batch rows",
                value: micro_rows.to_string(),
                expected: format!("a divisor of the global batch's {batch_rows} rows"),
            });
        }
        if !micro_rows.is_multiple_of(num_processes) {
            return Err(DataError::InvalidOption {
                name: "micro-batch rows",
                value: micro_rows.to_string(),
                expected: format!(
                    "a multiple of the {num_processes} processes (each feeds an equal block)"
                ),
            });
        }
        let rows = micro_rows / num_processes;
        Ok(ProcessSlice {
            first_row: process_id * rows,
            rows,
            period: micro_rows,
        })
    }

    /// Rows this slice takes from a batch of `batch_rows`.
    pub fn rows_of(&self, batch_rows: usize) -> usize {
        batch_rows / self.period * self.rows
    }

    /// The batch rows this slice takes, in order.
    pub fn batch_rows(&self, batch_rows: usize) -> impl Iterator<Item = usize> + '_ {
        (0..batch_rows / self.period).flat_map(move |block| {
            (0..self.rows).map(move |r| block * self.period + self.first_row + r)
        })
    }

    /// Checks that the blocks tile a batch of `batch_rows` and the slice is not empty.
    pub fn check(&self, batch_rows: usize) -> Result<()> {
        let fits = self.rows > 0
            && self.period > 0
            && batch_rows.is_multiple_of(self.period)
            && self.first_row + self.rows <= self.period;
        match fits {
            true => Ok(()),
            false => Err(DataError::InvalidOption {
                name: "process rows",
                value: format!(
                    "{}..{} of every {} rows",
                    self.first_row,
                    self.first_row + self.rows,
                    self.period
                ),
                expected: format!("non-empty blocks that tile the batch's {batch_rows} rows"),
            }),
        }
    }
}
