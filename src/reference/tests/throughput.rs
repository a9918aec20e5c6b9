//! Training throughput of the default model shape (run by hand: it takes a minute or more).
//!
//! `cargo test --release -p vishwam --lib reference::tests::throughput -- --ignored --nocapture`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::{train_steps, Batch, ReferenceAdamW, ReferenceDtype, ReferenceModel};
use crate::config::Config;

/// CPU seconds used by this process so far (user + system, Linux /proc), when readable.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[test]
#[ignore = "a benchmark: minutes in the test profile; run it by hand with --release"]
fn default_model_training_throughput() {
    let config = Config::default();
    let (m, t) = (&config.model, &config.training);
    let (b, s) = (t.batch_size, m.max_seq_len);
    let model = ReferenceModel::init_random(m, t.seed, ReferenceDtype::F32).unwrap();
    let mut optimizer = ReferenceAdamW::new(&model, t).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batches = std::iter::repeat_with(|| {
        let ids: Vec<i32> = (0..b * s + 1)
            .map(|_| rng.gen_range(0..m.vocab_size as i32))
            .collect();
        Batch::new(
            ids[..b * s].to_vec(),
            ids[1..].to_vec(),
            vec![1.0; b * s],
            b,
            s,
        )
        .unwrap()
    });
    let steps: usize = std::env::var("VISHWAM_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut batches = batches;
    // Step 1 (first allocations, page faults) is run and reported apart.
    let first = train_steps(&model, &mut optimizer, batches.by_ref(), 1).unwrap();
    let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
    let stats = train_steps(&model, &mut optimizer, batches, steps).unwrap();
    let total = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    for s in first.iter().chain(&stats) {
        println!(
            "step {} loss {:.4} {:.3}s {:.0} tokens/s",
            s.step,
            s.loss,
            s.seconds,
            s.tokens_per_second()
        );
    }
    let tokens: usize = stats.iter().map(|s| s.tokens).sum();
    println!(
        "{} parameters, batch {b} x {s}, {} threads: {:.0} tokens/s over steps 2..={} \
         ({total:.1}s wall, {} CPU seconds per step)",
        model.num_parameters(),
        candle_core::utils::get_num_threads(),
        tokens as f64 / total,
        steps + 1,
        cpu.map_or("unknown".to_string(), |c| format!(
            "{:.2}",
            c / steps as f64
        )),
    );
}
