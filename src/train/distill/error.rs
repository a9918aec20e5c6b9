//! What can keep a distillation run from starting.

use std::path::PathBuf;

/// A teacher that cannot be loaded, or one that does not fit the student.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// `vishwam distill` without `distillation.teacher_model`.
    #[error("distillation.teacher_model is not set; name the teacher: a vishwam run or checkpoint directory (from `vishwam train`), a Hugging Face Llama directory with config.json and *.safetensors, or a model id in the local Hugging Face cache (google/gemma-7b)")]
    NoTeacher,
    /// The teacher path names nothing usable.
    #[error("teacher {path}: {detail}")]
    TeacherNotFound {
        /// The path as given.
        path: PathBuf,
        /// What was looked for.
        detail: String,
    },
    /// The teacher's files are there but unusable.
    #[error("teacher {path}: {detail}")]
    InvalidTeacher {
        /// The directory read.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Teacher and student predict over different vocabularies.
    #[error("the teacher's vocabulary has {teacher} tokens but the student's model.vocab_size is {student}; distillation compares the two output distributions token by token, so set model.vocab_size={teacher} and use the teacher's tokenizer")]
    VocabMismatch {
        /// `vocab_size` of the teacher.
        teacher: usize,
        /// `model.vocab_size` of the student.
        student: usize,
    },
    /// Same vocabulary size, different tokenizers.
    #[error("the teacher's tokenizer ({teacher}) differs from the student's; the token ids would mean different text. Set data.tokenizer to {teacher}")]
    TokenizerMismatch {
        /// The teacher's tokenizer.json.
        teacher: PathBuf,
    },
    /// An intermediate mapping names a teacher layer that does not exist.
    #[error("distillation.intermediate_layer_mapping maps student layer {student_layer} to teacher layer {teacher_layer}, but the teacher has {teacher_layers} layers (0..={}); use indices below {teacher_layers}", teacher_layers.saturating_sub(1))]
    MappingOutOfRange {
        /// The student layer.
        student_layer: usize,
        /// The teacher layer it is mapped to.
        teacher_layer: usize,
        /// Layers of the teacher.
        teacher_layers: usize,
    },
    /// `optimization.fp8_head`, which the distillation loss does not offer.
    #[error("optimization.fp8_head is true, but the FP8 LM head is implemented for the cross-entropy only: the distillation loss runs the student's head in the compute dtype; set optimization.fp8_head to false (use_fp8 still gives FP8 block projections)")]
    Fp8Head,
    /// The training windows are longer than the teacher's context.
    #[error("training windows of {seq_len} tokens exceed the teacher's context of {teacher_max} (its max_seq_len); lower sequence.max_length / model.max_seq_len to {teacher_max} or less")]
    SequenceTooLong {
        /// Tokens per training window.
        seq_len: usize,
        /// The teacher's `max_seq_len`.
        teacher_max: usize,
    },
}
