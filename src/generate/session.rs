//! The host side of generation: lay out a batch of prompts, prefill the cache in chunks, then
//! run the decode step once per token, updating every buffer in place and reading the new
//! tokens every few steps.

use super::loaded::{LoadedModel, ProgramKey};
use super::programs::DecodeMode;
use super::{GenerateError, SamplingOptions};
use crate::engine::{HostArray, Input, ShardedArray};
use crate::model::KvCacheShape;
use std::time::Instant;

/// The smallest cache this module allocates (shorter requests share its programs).
const MIN_CACHE_LEN: usize = 16;

/// Most decode steps enqueued between two reads of the new tokens (the groups grow 1, 2, 4, 8,
/// so the first token arrives after one step).
const STEPS_PER_READ: usize = 8;

/// The sizes of the groups of decode steps run between two reads of the new tokens, for
/// `total` steps: 1, 2, 4, then [`STEPS_PER_READ`] at a time, the last cut to what is left
/// (so the first token arrives after one step).
fn decode_groups(total: usize) -> impl Iterator<Item = usize> {
    let (mut done, mut group) = (0, 1);
    std::iter::from_fn(move || {
        (done < total).then(|| {
            let steps = group.min(total - done);
            done += steps;
            group = (2 * group).min(STEPS_PER_READ);
            steps
        })
    })
}

/// Where a batch of prompts sits in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLayout {
    /// The cache shape (rows, slots, format).
    pub cache: KvCacheShape,
    /// Slots of the longest prompt: every prompt ends in slot `prompt_slots - 1`.
    pub prompt_slots: usize,
    /// First slot of each row (left padding before it).
    pub row_start: Vec<i32>,
    /// Tokens per prefill chunk.
    pub chunk: usize,
    /// New tokens at most (the options' `max_length`, cut to the model's context).
    pub new_tokens: usize,
}

impl BatchLayout {
    /// Slots per row of the decode steps' token history: the cache's, plus one for the token
    /// after the last.
    pub fn history_width(&self) -> usize {
        self.cache.len + 1
    }
}

/// Seconds spent in each phase of one generation call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationTimings {
    /// Compiling programs not compiled before.
    pub compile: f64,
    /// Zeroing the cache and running the prefill chunks (until the cache is ready).
    pub prefill: f64,
    /// The decode steps, including receiving the tokens.
    pub decode: f64,
    /// Decode steps run.
    pub decode_steps: usize,
}

/// The initial `rng_bit_generator` state for a seed.
pub fn rng_state(seed: u64) -> [u64; 2] {
    [
        seed ^ 0x9e37_79b9_7f4a_7c15,
        seed.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ 0x94d0_49bb_1331_11eb,
    ]
}

fn host<T: crate::runtime::NativeType>(
    shape: &[i64],
    values: &[T],
) -> Result<HostArray, GenerateError> {
    HostArray::from_slice(shape, values).map_err(GenerateError::HostArray)
}

impl LoadedModel {
    /// Checks `prompts` and lays them out: left-padded to the longest, in a cache of the
    /// smallest power-of-two length (at least 16, at most `model.max_seq_len`) that holds
    /// the longest prompt plus `max_new` tokens.
    pub fn layout(
        &self,
        prompts: &[Vec<i32>],
        max_new: usize,
    ) -> Result<BatchLayout, GenerateError> {
        let model = &self.config().model;
        let context = model.max_seq_len;
        if prompts.is_empty() {
            return Err(GenerateError::Option {
                option: "prompts",
                value: "[]".into(),
                expected: "at least one prompt".into(),
            });
        }
        for (row, p) in prompts.iter().enumerate() {
            let fail = |detail: String| Err(GenerateError::Prompt { row, detail });
            if p.is_empty() {
                return fail("is empty; give at least one token (e.g. the BOS token)".into());
            }
            if p.len() >= context {
                return fail(format!(
                    "has {} tokens, but the model's context (model.max_seq_len) is {context} tokens, so a prompt may have at most {} to leave room for one new token; shorten the prompt",
                    p.len(),
                    context - 1
                ));
            }
            if let Some(&t) = p.iter().find(|&&t| t < 0 || t as usize >= model.vocab_size) {
                return fail(format!(
                    "token id {t} is outside the vocabulary [0, {})",
                    model.vocab_size
                ));
            }
        }
        let prompt_slots = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let new_tokens = max_new.max(1).min(context - prompt_slots);
        // The last token fed to the model is in slot prompt_slots + new_tokens - 2, and the
        // last one generated goes to slot prompt_slots + new_tokens - 1 of the token history
        // (which is len + 1 wide).
        let len = (prompt_slots + new_tokens - 1)
            .max(MIN_CACHE_LEN)
            .next_power_of_two()
            .min(context);
        Ok(BatchLayout {
            cache: KvCacheShape {
                batch: prompts.len(),
                len,
                format: self.kv_cache_format(),
            },
            prompt_slots,
            row_start: prompts
                .iter()
                .map(|p| (prompt_slots - p.len()) as i32)
                .collect(),
            // A short prompt needs no full chunk: the next power of two of its length does.
            chunk: self
                .config()
                .sequence
                .chunk_size
                .min((prompt_slots - 1).max(1).next_power_of_two())
                .clamp(1, len),
            new_tokens,
        })
    }

    /// Generates up to `opts.max_length` new tokens after each prompt (see
    /// [`LoadedModel::generate_streaming`]).
    pub fn generate(
        &mut self,
        prompts: &[Vec<i32>],
        opts: &SamplingOptions,
    ) -> Result<Vec<Vec<i32>>, GenerateError> {
        Ok(self.generate_streaming(prompts, opts, |_, _| {})?.0)
    }

    /// Generates new tokens for every prompt, calling `on_token(row, token)` as the tokens
    /// arrive (after the first decode step, then in groups of up to 8 steps). A row ends
    /// after `opts.eos_token_id` (kept in its output), after `opts.max_length` tokens, or when
    /// the longest prompt plus the new tokens fill `model.max_seq_len` (rows are left-padded
    /// to the longest prompt). Returns the new tokens of each row and where the time went.
    pub fn generate_streaming(
        &mut self,
        prompts: &[Vec<i32>],
        opts: &SamplingOptions,
        mut on_token: impl FnMut(usize, i32),
    ) -> Result<(Vec<Vec<i32>>, GenerationTimings), GenerateError> {
        opts.validate(self.config().model.vocab_size)?;
        let layout = self.layout(prompts, opts.max_length)?;
        let vocab = self.config().model.vocab_size;
        let mode = if opts.is_greedy() {
            DecodeMode::Greedy
        } else {
            DecodeMode::Sample {
                top_k: opts.top_k > 0 && opts.top_k < vocab,
                top_p: opts.top_p < 1.0,
            }
        };
        let mut timings = GenerationTimings {
            compile: self.ensure_programs(&layout, ProgramKey::Decode(layout.cache, mode))?,
            ..GenerationTimings::default()
        };
        let t0 = Instant::now();
        let mut caches = self.prefill(prompts, &layout)?;
        caches[0].shards[0].block_until_ready()?;
        timings.prefill = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let b = prompts.len();
        let first = layout.prompt_slots - 1;
        let eos = opts.eos_token_id.unwrap_or(-1);
        let history = self.history(&layout, prompts)?;
        let slot = self.put(&HostArray::scalar(first as i32))?;
        let rng = self.put(&host(&[2], &rng_state(opts.seed))?)?;
        let mut fixed = vec![
            self.put(&host(&[b as i64], &layout.row_start)?)?,
            self.put(&HostArray::scalar(eos))?,
            self.put(&HostArray::scalar((first + opts.min_length) as i32))?,
        ];
        if let DecodeMode::Sample { top_k, top_p } = mode {
            fixed.push(self.put(&HostArray::scalar(opts.temperature))?);
            if top_k {
                fixed.push(self.put(&HostArray::scalar(opts.top_k as i32))?);
            }
            if top_p {
                fixed.push(self.put(&HostArray::scalar(opts.top_p))?);
            }
        }
        let program = self.program(&ProgramKey::Decode(layout.cache, mode));
        let n_cache = caches.len();
        // Enqueues one decode step on the in-place state: the cache, then history, slot and
        // rng.
        let step = |caches: &mut Vec<ShardedArray>,
                    state: &mut [ShardedArray; 3]|
         -> Result<(), GenerateError> {
            let mut inputs = self.param_inputs();
            inputs.extend(caches.iter_mut().map(Input::Donate));
            inputs.extend(state.iter_mut().map(Input::Donate));
            inputs.extend(fixed.iter().map(Input::Keep));
            let mut results = program.run(inputs)?;
            let rest = results.split_off(n_cache);
            *caches = results;
            *state = rest.try_into().map_err(|rest: Vec<_>| {
                GenerateError::HostArray(format!(
                    "the decode step returned {} outputs after the cache, expected 3",
                    rest.len()
                ))
            })?;
            Ok(())
        };
        let mut state = [history, slot, rng];
        let mut out: Vec<Vec<i32>> = vec![Vec::new(); b];
        let mut finished = vec![false; b];
        // Steps are enqueued in groups, back to back, and the new tokens are read after each
        // group: the device idles only while they are read, and a group may run a few steps
        // past the last row's EOS (their tokens are dropped).
        let mut done = 0;
        for steps in decode_groups(layout.new_tokens) {
            if finished.iter().all(|&f| f) {
                break;
            }
            for _ in 0..steps {
                step(&mut caches, &mut state)?;
            }
            timings.decode_steps += steps;
            let ids = self
                .engine()
                .get(&state[0])?
                .to_vec::<i32>()
                .map_err(GenerateError::HostArray)?;
            for s in done..done + steps {
                for (row, row_ids) in ids.chunks(layout.history_width()).enumerate() {
                    if finished[row] {
                        continue;
                    }
                    let t = row_ids[first + 1 + s];
                    out[row].push(t);
                    on_token(row, t);
                    finished[row] = t == eos;
                }
            }
            done += steps;
        }
        timings.decode = t1.elapsed().as_secs_f64();
        Ok((out, timings))
    }

    /// The logits `[B][V]` of the token after each prompt, computed through the KV cache
    /// (prefill, then one decode step) in the current cache format.
    pub fn next_token_logits(
        &mut self,
        prompts: &[Vec<i32>],
    ) -> Result<Vec<Vec<f32>>, GenerateError> {
        let layout = self.layout(prompts, 1)?;
        let key = ProgramKey::DecodeWithLogits(layout.cache);
        self.ensure_programs(&layout, key)?;
        let mut caches = self.prefill(prompts, &layout)?;
        let b = prompts.len();
        let owned = [
            self.history(&layout, prompts)?,
            self.put(&HostArray::scalar((layout.prompt_slots - 1) as i32))?,
            self.put(&host(&[2], &rng_state(0))?)?,
            self.put(&host(&[b as i64], &layout.row_start)?)?,
            self.put(&HostArray::scalar(-1i32))?,
            self.put(&HostArray::scalar(0i32))?,
        ];
        let program = self.program(&key);
        let mut inputs = self.param_inputs();
        inputs.extend(caches.iter_mut().map(Input::Donate));
        inputs.extend(owned.iter().map(Input::Keep));
        let results = program.run(inputs)?;
        let logits = program
            .output_index("logits")
            .map(|i| &results[i])
            .ok_or_else(|| GenerateError::HostArray("the decode program has no logits".into()))?;
        let values = self
            .engine()
            .get(logits)?
            .to_vec::<f32>()
            .map_err(GenerateError::HostArray)?;
        let v = self.config().model.vocab_size;
        Ok(values.chunks(v).map(<[f32]>::to_vec).collect())
    }

    /// The decode steps' token history for `prompts` laid out as `layout`, on the device:
    /// `i32 [B, history_width]`, each row's last prompt token in the prompts' last slot.
    fn history(
        &self,
        layout: &BatchLayout,
        prompts: &[Vec<i32>],
    ) -> Result<ShardedArray, GenerateError> {
        let width = layout.history_width();
        let mut values = vec![0i32; prompts.len() * width];
        for (row, p) in prompts.iter().enumerate() {
            values[row * width + layout.prompt_slots - 1] = p[p.len() - 1];
        }
        let shape = [prompts.len() as i64, width as i64];
        self.put(&host(&shape, &values)?)
    }

    /// Compiles the programs `layout` needs with the decode program `decode`; returns the
    /// seconds spent.
    fn ensure_programs(
        &mut self,
        layout: &BatchLayout,
        decode: ProgramKey,
    ) -> Result<f64, GenerateError> {
        let shape = layout.cache;
        let mut seconds = self.ensure_program(ProgramKey::InitCache(shape))?;
        if layout.prompt_slots > 1 {
            seconds += self.ensure_program(ProgramKey::Prefill(shape, layout.chunk))?;
        }
        Ok(seconds + self.ensure_program(decode)?)
    }

    /// A zeroed cache with every prompt token but the last written into it (the programs
    /// must be compiled).
    fn prefill(
        &self,
        prompts: &[Vec<i32>],
        layout: &BatchLayout,
    ) -> Result<Vec<ShardedArray>, GenerateError> {
        let shape = layout.cache;
        let to_write = layout.prompt_slots - 1;
        let mut caches = self
            .program(&ProgramKey::InitCache(shape))
            .run(Vec::new())?;
        if to_write == 0 {
            return Ok(caches);
        }
        // Left-padded tokens of every slot (pad slots and slots past the prompt hold 0).
        let (b, len, chunk) = (shape.batch, shape.len, layout.chunk);
        let mut slots = vec![0i32; b * len];
        for (row, p) in prompts.iter().enumerate() {
            let start = layout.row_start[row] as usize;
            slots[row * len + start..row * len + start + p.len()].copy_from_slice(p);
        }
        let row_start = self.put(&host(&[b as i64], &layout.row_start)?)?;
        let program = self.program(&ProgramKey::Prefill(shape, chunk));
        let mut begin = 0;
        while begin < to_write {
            // The last chunk may run past the prompt (those slots are rewritten before they
            // are read) but never past the cache: it moves back to end at the last slot,
            // recomputing some slots with the same values.
            let start = begin.min(len - chunk);
            let tokens: Vec<i32> = (0..b)
                .flat_map(|row| slots[row * len + start..row * len + start + chunk].to_vec())
                .collect();
            let tokens = self.put(&host(&[b as i64, chunk as i64], &tokens)?)?;
            let start_arr = self.put(&HostArray::scalar(start as i32))?;
            let mut inputs = self.param_inputs();
            inputs.extend(caches.iter_mut().map(Input::Donate));
            inputs.extend([
                Input::Keep(&tokens),
                Input::Keep(&start_arr),
                Input::Keep(&row_start),
            ]);
            caches = program.run(inputs)?;
            begin += chunk;
        }
        Ok(caches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_groups_grow_from_one_step_to_the_read_interval() {
        let groups = |total| decode_groups(total).collect::<Vec<_>>();
        assert_eq!(groups(0), Vec::<usize>::new());
        assert_eq!(groups(1), [1]);
        assert_eq!(groups(3), [1, 2]);
        assert_eq!(groups(6), [1, 2, 3]);
        assert_eq!(groups(31), [1, 2, 4, 8, 8, 8]);
        assert_eq!(groups(128).iter().sum::<usize>(), 128);
    }
}
