//! Teacher loading (vishwam run and checkpoint directories, Hugging Face directories), the
//! errors that keep a bad teacher from starting a run, and an MoE teacher.

use super::{
    distiller, engine, memory_teacher, plan, random_batch, save_teacher_run, student, teacher_model,
};
use std::path::Path;
use vishwam::config::ModelConfig;
use vishwam::model::hf;
use vishwam::train::distill::{DistillError, Teacher, TeacherSource};
use vishwam::train::{TrainError, Trainer};
use vishwam_mesh::DeviceStrategy;

/// The error that keeps a trainer for `cfg` from starting (panics if it starts).
fn start_error(cfg: &vishwam::config::Config) -> TrainError {
    let plan = plan(DeviceStrategy::DataParallel, "data", 1);
    match Trainer::new(cfg, engine(&plan), plan) {
        Ok(_) => panic!("the trainer started"),
        Err(e) => e,
    }
}

fn with_teacher(teacher: &Path, sets: &[&str]) -> vishwam::config::Config {
    let t = format!("distillation.teacher_model={}", teacher.display());
    student(&[&[t.as_str()][..], sets].concat())
}

#[test]
fn run_checkpoint_and_hugging_face_directories_load_the_same_teacher() {
    let teacher = memory_teacher(&teacher_model(), 21);
    let run = tempfile::tempdir().unwrap();
    save_teacher_run(run.path(), &teacher);
    let from_run = Teacher::load(run.path()).unwrap();
    assert!(matches!(
        &from_run.source,
        TeacherSource::Checkpoint { step: 0, .. }
    ));
    assert_eq!(from_run.params, teacher.params);
    assert_eq!(from_run.model, teacher.model);
    let step_dir = run.path().join("checkpoints").join("step_00000000");
    assert_eq!(Teacher::load(&step_dir).unwrap().params, teacher.params);

    let hf_dir = tempfile::tempdir().unwrap();
    hf::export(&teacher.model, &teacher.params, None, hf_dir.path()).unwrap();
    let from_hf = Teacher::load(hf_dir.path()).unwrap();
    assert!(matches!(from_hf.source, TeacherSource::HuggingFace { .. }));
    assert_eq!(from_hf.params, teacher.params);

    // Both teach identically: the same first step from either directory.
    let cfg = student(&[]);
    let batch = random_batch(&cfg, 0);
    let a = distiller(&cfg, &from_run).step(&batch).unwrap().loss;
    let b = distiller(&cfg, &from_hf).step(&batch).unwrap().loss;
    assert_eq!(a, b);
}

#[test]
fn a_missing_or_foreign_teacher_is_refused_with_the_reason() {
    let missing = with_teacher(Path::new("/nonexistent/teacher"), &[]);
    let err = start_error(&missing).to_string();
    assert!(err.contains("no such directory"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = start_error(&with_teacher(empty.path(), &[])).to_string();
    assert!(err.contains("neither a vishwam checkpoint"), "{err}");

    let err = Teacher::load(&empty.path().join("nothing")).unwrap_err();
    assert!(matches!(err, DistillError::TeacherNotFound { .. }), "{err}");
}

#[test]
fn mismatched_vocabularies_contexts_and_mappings_are_refused() {
    let run = tempfile::tempdir().unwrap();
    let other_vocab = ModelConfig {
        vocab_size: 80,
        ..teacher_model()
    };
    save_teacher_run(run.path(), &memory_teacher(&other_vocab, 1));
    let err = start_error(&with_teacher(run.path(), &[]));
    assert!(
        matches!(
            err,
            TrainError::Distill(DistillError::VocabMismatch {
                teacher: 80,
                student: 64
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.vocab_size=80"), "{err}");

    let teacher = memory_teacher(&teacher_model(), 2);
    let short = student(&["model.max_seq_len=32"]);
    let plan1 = plan(DeviceStrategy::DataParallel, "data", 1);
    let err = Trainer::with_teacher(&short, engine(&plan1), plan1, &teacher)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("exceed the teacher's context of 16"),
        "{err}"
    );

    let fp8_head = student(&["optimization.use_fp8=true", "optimization.fp8_head=true"]);
    let plan1 = plan(DeviceStrategy::DataParallel, "data", 1);
    let err = Trainer::with_teacher(&fp8_head, engine(&plan1), plan1, &teacher)
        .err()
        .unwrap();
    assert!(
        matches!(err, TrainError::Distill(DistillError::Fp8Head)),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("set optimization.fp8_head to false"),
        "{err}"
    );

    let out_of_range = student(&[
        "distillation.use_intermediate_distillation=true",
        "distillation.intermediate_layer_mapping=[0, 3]",
    ]);
    let plan1 = plan(DeviceStrategy::DataParallel, "data", 1);
    let err = Trainer::with_teacher(&out_of_range, engine(&plan1), plan1, &teacher)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            TrainError::Distill(DistillError::MappingOutOfRange {
                student_layer: 1,
                teacher_layer: 3,
                teacher_layers: 3
            })
        ),
        "{err}"
    );
}

#[test]
fn an_moe_teacher_teaches_a_dense_student() {
    let moe = ModelConfig {
        use_moe: true,
        num_experts: 4,
        experts_per_token: 2,
        expert_dim: Some(32),
        moe_layer_frequency: 2,
        use_lossfreebalance: true,
        ..teacher_model()
    };
    let teacher = memory_teacher(&moe, 5);
    assert!(teacher.params.contains_key("layers.1.moe.router_bias"));
    let cfg = student(&["distillation.use_intermediate_distillation=true"]);
    let mut t = distiller(&cfg, &teacher);
    let first = t.step(&random_batch(&cfg, 0)).unwrap();
    let metrics = t.distill_metrics().unwrap();
    assert!(first.loss.is_finite() && metrics.kl > 0.0, "{metrics:?}");
}
