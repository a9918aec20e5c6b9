//! The host batch handed to the trainer, and its per-data-parallel-shard slices.

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};

/// One batch of training windows, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Input token ids, `[batch_size, seq_len]`.
    pub inputs: Vec<i32>,
    /// Target token ids (inputs shifted left by one), `[batch_size, seq_len]`.
    pub targets: Vec<i32>,
    /// 1.0 where the target counts in the loss, 0.0 at padding, `[batch_size, seq_len]`.
    pub loss_mask: Vec<f32>,
    /// Rows.
    pub batch_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Position of this batch in the loader's sequence (0-based).
    pub index: u64,
}

impl Batch {
    /// A batch of `batch_size` rows of `seq_len`, filled with zeros.
    pub fn zeros(batch_size: usize, seq_len: usize, index: u64) -> Self {
        let n = batch_size * seq_len;
        Batch {
            inputs: vec![0; n],
            targets: vec![0; n],
            loss_mask: vec![0.0; n],
            batch_size,
            seq_len,
            index,
        }
    }

    /// Targets that count in the loss.
    pub fn num_target_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m > 0.0).count()
    }

    /// Rows `[first, first + rows)` as a batch of their own.
    pub fn rows(&self, first: usize, rows: usize) -> Result<Batch> {
        if first + rows > self.batch_size {
            return Err(DataError::InvalidOption {
                name: "batch rows",
                value: format!("{first}..{}", first + rows),
                expected: format!("rows within 0..{}", self.batch_size),
            });
        }
        let range = first * self.seq_len..(first + rows) * self.seq_len;
        Ok(Batch {
            inputs: self.inputs[range.clone()].to_vec(),
            targets: self.targets[range.clone()].to_vec(),
            loss_mask: self.loss_mask[range].to_vec(),
            batch_size: rows,
            seq_len: self.seq_len,
            index: self.index,
        })
    }

    /// The rows data-parallel shard `shard` of `num_shards` trains on: the `shard`-th of
    /// `num_shards` equal, contiguous blocks of rows (the layout of a batch dimension sharded
    /// over the mesh's data axis).
    pub fn shard_rows(&self, shard: usize, num_shards: usize) -> Result<Batch> {
        if num_shards == 0 || shard >= num_shards || !self.batch_size.is_multiple_of(num_shards) {
            return Err(DataError::InvalidOption {
                name: "data-parallel shard",
                value: format!(
                    "{shard} of {num_shards} (batch of {} rows)",
                    self.batch_size
                ),
                expected: "a shard index below a shard count that divides the batch size".into(),
            });
        }
        let per_shard = self.batch_size / num_shards;
        self.rows(shard * per_shard, per_shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_rows_are_contiguous_blocks() {
        let mut batch = Batch::zeros(4, 3, 9);
        for (i, v) in batch.inputs.iter_mut().enumerate() {
            *v = i as i32;
        }
        let second = batch.shard_rows(1, 2).unwrap();
        assert_eq!(second.inputs, vec![6, 7, 8, 9, 10, 11]);
        assert_eq!(second.batch_size, 2);
        assert_eq!(second.index, 9);
        let parts: Vec<i32> = (0..4)
            .flat_map(|s| batch.shard_rows(s, 4).unwrap().inputs)
            .collect();
        assert_eq!(parts, batch.inputs);
        assert!(batch.shard_rows(0, 3).is_err());
        assert!(batch.shard_rows(2, 2).is_err());
    }
}
