//! The step's batch at fixed device addresses. A new batch is uploaded into new buffers, and
//! while step N runs, step N+1's upload cannot reuse step N's. Handing the uploads to the
//! step would then move its batch inputs between two addresses from step to step, and XLA
//! updates its recorded CUDA graphs whenever an input moves. So the first batch's buffers
//! become the slots, and every later batch is copied into them on the devices by a small
//! program that donates them (stream-ordered after the step that reads them).

use super::layout::StepLayout;
use super::trainer::compile_hints;
use super::TrainError;
use crate::config::Config;
use crate::engine::{Engine, Input, Program, ShardedArray};
use vishwam_hlo::{DType, Func, Graph, Result as HloResult};

/// The batch inputs of the step, in its argument order, with their element types.
const BATCH_INPUTS: [(&str, DType); 3] = [
    ("tokens", DType::I32),
    ("targets", DType::I32),
    ("mask", DType::F32),
];

/// The step's tokens, targets and mask on the devices, each at one address for the whole run.
#[derive(Default)]
pub(super) struct BatchSlots {
    /// The buffers the step reads (`None` before the first batch).
    arrays: Option<[ShardedArray; 3]>,
    /// Copies a new batch into the slots (compiled at the second batch).
    writer: Option<Program>,
}

impl BatchSlots {
    /// Places `fresh` (tokens, targets, mask as uploaded) in the slots and returns them: the
    /// first batch becomes the slots; each later one is copied into them by an enqueued
    /// program, which runs after every step already enqueued that reads them.
    pub(super) fn fill(
        &mut self,
        engine: &Engine,
        cfg: &Config,
        layout: &StepLayout,
        fresh: [ShardedArray; 3],
    ) -> Result<&[ShardedArray; 3], TrainError> {
        let arrays = match self.arrays.take() {
            None => fresh,
            Some(mut slots) => {
                if self.writer.is_none() {
                    let func = build_batch_writer(layout)?;
                    self.writer = Some(engine.compile_with(&func, compile_hints(cfg))?);
                }
                let writer = self.writer.as_ref().expect("compiled above");
                let [a, b, c] = &mut slots;
                let mut inputs = vec![Input::Donate(a), Input::Donate(b), Input::Donate(c)];
                inputs.extend(fresh.iter().map(Input::Keep));
                // On an error the donated slots are gone: the next batch becomes the slots.
                writer.run(inputs)?.try_into().map_err(|out: Vec<_>| {
                    TrainError::Other(format!(
                        "the batch writer returned {} arrays, not 3",
                        out.len()
                    ))
                })?
            }
        };
        Ok(self.arrays.insert(arrays))
    }
}

/// The name of the slot parameter (and output) that holds the batch input `name`.
fn slot_name(name: &str) -> String {
    format!("slot.{name}")
}

/// Traces the program that copies a new batch into the slots: parameters `slot.<input>` (the
/// slots, donated to the outputs of the same name) and then `<input>` (the new batch), for
/// the inputs tokens, targets and mask, all split as the step's batch.
pub(super) fn build_batch_writer(layout: &StepLayout) -> HloResult<Func> {
    let g = Graph::named("batch_write");
    let spec = &layout.batch_spec;
    for (name, dtype) in BATCH_INPUTS {
        g.param_sharded(&slot_name(name), layout.batch_type(dtype), spec.clone());
    }
    let fresh: Vec<_> = BATCH_INPUTS
        .iter()
        .map(|(name, dtype)| g.param_sharded(name, layout.batch_type(*dtype), spec.clone()))
        .collect();
    let names: Vec<String> = BATCH_INPUTS.iter().map(|(n, _)| slot_name(n)).collect();
    let outputs: Vec<(&str, &_)> = names.iter().map(String::as_str).zip(&fresh).collect();
    let mut func = g.finish(&outputs)?;
    for name in &names {
        func.set_output_sharding(name, spec.clone())?;
        func.donate(name, name)?;
    }
    Ok(func)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::runtime::{ClientSpec, CompileCache};
    use crate::train::{HostBatch, Trainer};
    use vishwam_mesh::{DeviceStrategy, MeshSettings, ShardingPlan};

    /// A batch of 4 sequences of 8 random tokens over a vocabulary of 64, of which the first
    /// `counted` positions count towards the loss.
    fn batch(seed: u64, counted: usize) -> HostBatch {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let tokens: Vec<i32> = (0..32).map(|_| rng.gen_range(0..64)).collect();
        let targets: Vec<i32> = (0..32).map(|_| rng.gen_range(0..64)).collect();
        let mask: Vec<f32> = (0..32).map(|i| (i < counted) as u8 as f32).collect();
        HostBatch::from_rows(1, 8, &tokens, &targets, &mask).unwrap()
    }

    /// Steps launched one after another without waiting each read their own batch, and every
    /// step after the first reads it at the addresses of the first (on a 2-device mesh).
    #[test]
    fn launched_steps_read_their_own_batch_at_fixed_addresses() {
        let overrides: Vec<String> = [
            "model.vocab_size=64",
            "model.hidden_dim=16",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.num_kv_heads=1",
            "model.max_seq_len=8",
            "training.batch_size=2",
        ]
        .map(String::from)
        .to_vec();
        let cfg = Config::load(None, &overrides).unwrap();
        let mut settings = MeshSettings::new(DeviceStrategy::DataParallel, false);
        settings.mesh_shape = vec![("data".into(), 2)];
        let plan = ShardingPlan::build(&settings, "cpu", 2).unwrap();
        let client = ClientSpec::cpu(2).open().unwrap();
        let engine = Engine::new(client, plan.mesh.clone(), CompileCache::disabled()).unwrap();
        let mut trainer = Trainer::new(&cfg, engine, plan).unwrap();

        let addresses = |t: &Trainer| -> Vec<usize> {
            let arrays = t.batch_slots.arrays.as_ref().expect("a batch was placed");
            arrays
                .iter()
                .flat_map(|a| &a.shards)
                .map(|s| s.unsafe_pointer().unwrap())
                .collect()
        };
        let counted = [32, 5, 17, 9, 26];
        let mut launched = Vec::new();
        let mut first = None;
        for (i, &n) in counted.iter().enumerate() {
            launched.push(trainer.launch(&batch(i as u64, n)).unwrap());
            let now = addresses(&trainer);
            assert_eq!(first.get_or_insert_with(|| now.clone()), &now, "step {i}");
        }
        let last = batch(4, counted[4]);
        let slots = trainer.batch_slots.arrays.as_ref().unwrap();
        assert_eq!(
            trainer.engine.get(&slots[0]).unwrap().data,
            last.tokens.data
        );
        assert_eq!(
            trainer.engine.get(&slots[1]).unwrap().data,
            last.targets.data
        );
        assert_eq!(trainer.engine.get(&slots[2]).unwrap().data, last.mask.data);
        let read = trainer
            .read_metrics(launched)
            .unwrap()
            .wait(&mut trainer)
            .unwrap();
        let tokens: Vec<f32> = read.iter().map(|(m, _)| m.tokens).collect();
        assert_eq!(tokens, counted.map(|n| n as f32));
        assert!(read.iter().all(|(m, _)| m.loss.is_finite()));
    }
}
