//! The point of distillation: a student taught by a teacher that vishwam trained on the
//! built-in Brown corpus reaches a lower validation loss than the same student trained on
//! the labels alone, for the same steps and tokens.

use super::{engine, plan};
use vishwam::config::Config;
use vishwam::train::{batch_geometry, run_training, RunOptions, Trainer, TrainingData};
use vishwam_mesh::DeviceStrategy;

/// Sizes of one comparison: `--set` overrides of the two models and their step counts.
struct Budget {
    teacher: [&'static str; 4],
    teacher_steps: usize,
    student: [&'static str; 3],
    student_steps: usize,
}

fn config(out: &std::path::Path, model: &[&str], steps: usize, extra: &[String]) -> Config {
    let mut sets: Vec<String> = [
        "model.vocab_size=512",
        "model.max_seq_len=64",
        "training.batch_size=8",
        "training.learning_rate=0.003",
        "training.warmup_steps=10",
        "training.eval_steps=8",
        "data.val_fraction=0.05",
        "logging.eval_every=0",
        "logging.save_every=0",
        "logging.log_every=1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(model.iter().map(|s| s.to_string()));
    sets.push(format!("training.max_steps={steps}"));
    sets.push(format!("logging.output_dir={}", out.display()));
    sets.extend(extra.iter().cloned());
    Config::load(None, &sets).unwrap()
}

/// Trains `cfg` (distilling when it names a teacher) and returns its validation loss.
fn train(cfg: &Config) -> f64 {
    let plan = plan(DeviceStrategy::DataParallel, "data", 1);
    let mut data = TrainingData::open(cfg, batch_geometry(cfg, &plan)).unwrap();
    let out = std::path::Path::new(&cfg.logging.output_dir);
    std::fs::create_dir_all(out).unwrap();
    data.tokenizer.save(&out.join("tokenizer.json")).unwrap();
    let mut trainer = Trainer::new(cfg, engine(&plan), plan).unwrap();
    let summary = run_training(&mut trainer, &mut data, &RunOptions::default()).unwrap();
    summary.validation.unwrap().loss
}

/// (teacher, student from scratch, distilled student) validation losses.
fn compare(budget: &Budget) -> (f64, f64, f64) {
    let root = tempfile::tempdir().unwrap();
    let teacher_dir = root.path().join("teacher");
    let t0 = std::time::Instant::now();
    let teacher = train(&config(
        &teacher_dir,
        &budget.teacher,
        budget.teacher_steps,
        &[],
    ));
    let t1 = std::time::Instant::now();
    let scratch = train(&config(
        &root.path().join("scratch"),
        &budget.student,
        budget.student_steps,
        &[],
    ));
    let t2 = std::time::Instant::now();
    let distilled = train(&config(
        &root.path().join("distilled"),
        &budget.student,
        budget.student_steps,
        &[
            format!("distillation.teacher_model={}", teacher_dir.display()),
            "distillation.alpha=0.9".into(),
            "distillation.temperature=1.0".into(),
        ],
    ));
    println!(
        "Brown validation loss: teacher {teacher:.4} ({} steps, {:.0}s); student from scratch {scratch:.4} ({:.0}s); distilled student {distilled:.4} ({:.0}s); student runs of {} steps of 8 x 64 tokens",
        budget.teacher_steps,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        t2.elapsed().as_secs_f64(),
        budget.student_steps
    );
    (teacher, scratch, distilled)
}

/// Measured where it was written and on an Intel Xeon under XLA's AVX and SSE4.2 CPU
/// targets: teacher 4.56, from scratch 4.86..4.88, distilled 4.64..4.69; rounding moved each
/// by at most 0.05 nats, the gaps asserted are at least 0.17.
fn assert_distillation_helps((teacher, scratch, distilled): (f64, f64, f64)) {
    assert!(
        teacher < scratch,
        "the teacher ({teacher}) should beat the small student ({scratch})"
    );
    assert!(
        distilled < scratch,
        "distilled student {distilled} should beat the student trained from scratch {scratch}"
    );
}

/// Teacher 4 x 128 (300 steps), student 2 x 64 (200 steps), windows of 64, vocab 512;
/// alpha 0.9 at T = 1. About 40 s on a 2-core CPU (measured: teacher 4.56, student from
/// scratch 4.87, distilled 4.69).
#[test]
fn a_distilled_student_beats_the_same_student_trained_from_scratch() {
    assert_distillation_helps(compare(&Budget {
        teacher: [
            "model.hidden_dim=128",
            "model.num_heads=4",
            "model.num_layers=4",
            "model.mlp_dim=256",
        ],
        teacher_steps: 300,
        student: [
            "model.hidden_dim=64",
            "model.num_heads=4",
            "model.num_layers=2",
        ],
        student_steps: 200,
    }));
}
