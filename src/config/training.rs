//! Sections `training` (optimiser, schedule, batch) and `logging` (cadences, outputs).

use serde::{Deserialize, Serialize};

use super::checks::Checks;
use super::reader::{config_enum, ObjectReader};

config_enum! {
    /// Shape of the learning-rate decay after warmup.
    pub enum LrSchedule {
        /// Cosine decay from `learning_rate` to `min_lr_ratio x learning_rate` at `max_steps`.
        #[default]
        Cosine => "cosine",
        /// Linear decay from `learning_rate` to `min_lr_ratio x learning_rate` at `max_steps`.
        Linear => "linear",
        /// `learning_rate` held after warmup (`min_lr_ratio` unused).
        Constant => "constant",
    }
}

config_enum! {
    /// Which optimiser trains the parameters.
    pub enum Optimizer {
        /// AdamW for every parameter.
        #[default]
        AdamW => "adamw",
        /// Muon (Newton-Schulz orthogonalised Nesterov momentum) for the 2-D weight matrices
        /// of the blocks, AdamW for embeddings, the head, norms, routers and the rest.
        Muon => "muon",
    }
}

/// Section `training`: the optimiser, the schedule, the batch and the step budget.
///
/// The schedule rises linearly from 0 to `learning_rate` over `warmup_steps`, then follows
/// `lr_schedule` down to `min_lr_ratio x learning_rate` at `max_steps`. Under Muon the
/// matrices' rate follows the same shape with `muon_lr` as its peak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingConfig {
    /// Sequences per data-parallel shard in each micro-batch (the VishwamAI guide's
    /// "per-device batch size"). The global batch per optimizer step is `batch_size` x the
    /// batch-sharding mesh size x `grad_accum_steps` ([`BatchGeometry`]). Default 8.
    /// [`BATCH_SIZE_AUTO`] (0, written "auto") until `vishwam train` resolves it to the
    /// largest micro-batch that fits the device memory (`crate::plan::resolve_auto_batch`).
    #[serde(serialize_with = "batch_size_json")]
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step. Default 1.
    pub grad_accum_steps: usize,
    /// With `batch_size` "auto": sequences per optimizer step over all shards, reached by
    /// accumulating micro-batches of the size that fits. Null: one micro-batch per step
    /// (`grad_accum_steps`). Default null.
    pub global_batch_size: Option<usize>,
    /// With `batch_size` "auto": the fraction of device memory kept free, in [0, 1).
    /// Default 0.1.
    pub memory_reserve: f64,
    /// With `batch_size` "auto": device memory per device in GiB, for devices that do not
    /// report theirs (the CPU plugin) or to plan for less than they have. Null: what the
    /// device reports (`bytes_limit`), or on the CPU the host's available memory shared by
    /// the virtual devices. Default null.
    pub memory_gib: Option<f64>,
    /// Peak learning rate, > 0. Default 1e-3 (small model).
    pub learning_rate: f64,
    /// Floor of the decay as a fraction of `learning_rate`, in [0, 1]. Default 0.1.
    pub min_lr_ratio: f64,
    /// Decay after warmup. Default "cosine".
    pub lr_schedule: LrSchedule,
    /// Linear warmup steps, <= max_steps. Default 30.
    pub warmup_steps: usize,
    /// Optimizer steps to train. Default 300 (a few minutes on a CPU).
    pub max_steps: usize,
    /// AdamW decoupled weight decay, >= 0; norms and embeddings are not decayed, nor are the
    /// matrices Muon trains under `optimizer` = "muon". Default 0.1.
    pub weight_decay: f64,
    /// Adam beta1, in [0, 1). Default 0.9.
    pub adam_beta1: f64,
    /// Adam beta2, in [0, 1). Default 0.95.
    pub adam_beta2: f64,
    /// Adam epsilon, > 0. Default 1e-8.
    pub adam_eps: f64,
    /// Global gradient-norm clip, >= 0; 0 turns clipping off. Default 1.0.
    pub max_grad_norm: f64,
    /// Seed of parameter initialisation, dropout and data order. Default 42.
    pub seed: u64,
    /// Validation batches per evaluation. Default 10.
    pub eval_steps: usize,
    /// "adamw" or "muon". Default "adamw".
    pub optimizer: Optimizer,
    /// Muon's peak learning rate for the block matrices, > 0 (the AdamW parameters of a Muon
    /// run keep `learning_rate`); it follows the same warmup and decay. Default 0.02
    /// (Keller Jordan's and Blueberry's default).
    pub muon_lr: f64,
    /// Muon's Nesterov momentum after its warmup, in [0, 1). Default 0.95.
    pub muon_momentum: f64,
    /// Steps over which Muon's momentum rises linearly from 0.85 to `muon_momentum`; 0 = no
    /// warmup. Default 100: a third of the default 300-step run (Blueberry uses
    /// max(300, max_steps / 10) for its runs of thousands of steps).
    pub momentum_warmup_steps: usize,
    /// Newton-Schulz iterations of Muon's orthogonalisation, >= 1. Default 5.
    pub ns_steps: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            batch_size: 8,
            grad_accum_steps: 1,
            global_batch_size: None,
            memory_reserve: DEFAULT_MEMORY_RESERVE,
            memory_gib: None,
            learning_rate: 1e-3,
            min_lr_ratio: 0.1,
            lr_schedule: LrSchedule::Cosine,
            warmup_steps: 30,
            max_steps: 300,
            weight_decay: 0.1,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_eps: 1e-8,
            max_grad_norm: 1.0,
            seed: 42,
            eval_steps: 10,
            optimizer: Optimizer::AdamW,
            muon_lr: 0.02,
            muon_momentum: 0.95,
            momentum_warmup_steps: 100,
            ns_steps: 5,
        }
    }
}

const POSITIVE: &str = "a positive integer";

/// `training.batch_size` = "auto": resolved to a number before a step is built.
pub const BATCH_SIZE_AUTO: usize = 0;

/// Default `training.memory_reserve`: a tenth of device memory stays free.
pub const DEFAULT_MEMORY_RESERVE: f64 = 0.1;

/// `batch_size` as the config spells it: a number, or "auto" ([`BATCH_SIZE_AUTO`]).
fn batch_size_json<S: serde::Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
    match *n {
        BATCH_SIZE_AUTO => s.serialize_str("auto"),
        n => s.serialize_u64(n as u64),
    }
}

/// Reads `batch_size`: a positive integer or the string "auto".
fn read_batch_size(
    value: &serde_json::Value,
    path: &str,
    issues: &mut Vec<super::error::ConfigIssue>,
) -> Option<usize> {
    match value {
        serde_json::Value::String(s) if s == "auto" => Some(BATCH_SIZE_AUTO),
        v => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n >= 1 => Some(n),
            _ => {
                issues.push(super::error::ConfigIssue::Invalid {
                    key: path.to_string(),
                    expected: "a positive integer or \"auto\"".into(),
                    got: super::error::show(v),
                });
                None
            }
        },
    }
}

/// The batch of one optimizer step once the mesh is known: `per_shard` sequences on each of
/// `shards` batch shards (the product of the mesh axes that split the batch), accumulated
/// over `grad_accum_steps` micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGeometry {
    /// Sequences per batch shard per micro-batch (`training.batch_size`).
    pub per_shard: usize,
    /// Batch shards: the product of the sizes of the mesh axes that split the batch.
    pub shards: usize,
    /// Micro-batches per optimizer step (`training.grad_accum_steps`).
    pub grad_accum_steps: usize,
}

impl BatchGeometry {
    /// The geometry of `training` over `shards` batch shards.
    pub fn new(training: &TrainingConfig, shards: usize) -> BatchGeometry {
        BatchGeometry {
            per_shard: training.batch_size,
            shards: shards.max(1),
            grad_accum_steps: training.grad_accum_steps.max(1),
        }
    }

    /// Sequences per micro-batch over all shards: `per_shard x shards`.
    pub fn micro_batch(&self) -> usize {
        self.per_shard * self.shards
    }

    /// Sequences per optimizer step: `per_shard x shards x grad_accum_steps`.
    pub fn global_batch(&self) -> usize {
        self.micro_batch() * self.grad_accum_steps
    }
}

impl std::fmt::Display for BatchGeometry {
    /// `8 per shard x 8 shards x 4 micro-batches = 256 sequences per step`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} per shard (training.batch_size) x {} batch shard{} x {} micro-batch{} \
             (training.grad_accum_steps) = {} sequences per step",
            self.per_shard,
            self.shards,
            if self.shards == 1 { "" } else { "s" },
            self.grad_accum_steps,
            if self.grad_accum_steps == 1 { "" } else { "es" },
            self.global_batch()
        )
    }
}

impl TrainingConfig {
    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        r.custom("batch_size", &mut self.batch_size, read_batch_size);
        r.integer("grad_accum_steps", &mut self.grad_accum_steps, POSITIVE);
        r.opt_integer("global_batch_size", &mut self.global_batch_size, POSITIVE);
        r.number("memory_reserve", &mut self.memory_reserve);
        r.opt_number("memory_gib", &mut self.memory_gib);
        r.number("learning_rate", &mut self.learning_rate);
        r.number("min_lr_ratio", &mut self.min_lr_ratio);
        r.choice("lr_schedule", &mut self.lr_schedule);
        r.integer(
            "warmup_steps",
            &mut self.warmup_steps,
            "a non-negative integer",
        );
        r.integer("max_steps", &mut self.max_steps, POSITIVE);
        r.number("weight_decay", &mut self.weight_decay);
        r.number("adam_beta1", &mut self.adam_beta1);
        r.number("adam_beta2", &mut self.adam_beta2);
        r.number("adam_eps", &mut self.adam_eps);
        r.number("max_grad_norm", &mut self.max_grad_norm);
        r.integer("seed", &mut self.seed, "a non-negative integer");
        r.integer("eval_steps", &mut self.eval_steps, POSITIVE);
        r.choice("optimizer", &mut self.optimizer);
        r.number("muon_lr", &mut self.muon_lr);
        r.number("muon_momentum", &mut self.muon_momentum);
        r.integer(
            "momentum_warmup_steps",
            &mut self.momentum_warmup_steps,
            "a non-negative integer",
        );
        r.integer("ns_steps", &mut self.ns_steps, POSITIVE);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        c.positive("training.grad_accum_steps", self.grad_accum_steps);
        self.validate_auto_batch(c);
        c.positive_number("training.learning_rate", self.learning_rate);
        c.in_closed("training.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0);
        c.positive("training.max_steps", self.max_steps);
        c.ensure(
            self.warmup_steps <= self.max_steps,
            "training.warmup_steps",
            format!("at most training.max_steps ({})", self.max_steps),
            self.warmup_steps,
        );
        c.non_negative_number("training.weight_decay", self.weight_decay);
        c.in_half_open("training.adam_beta1", self.adam_beta1, 0.0, 1.0);
        c.in_half_open("training.adam_beta2", self.adam_beta2, 0.0, 1.0);
        c.positive_number("training.adam_eps", self.adam_eps);
        c.non_negative_number("training.max_grad_norm", self.max_grad_norm);
        c.positive("training.eval_steps", self.eval_steps);
        c.positive_number("training.muon_lr", self.muon_lr);
        c.in_half_open("training.muon_momentum", self.muon_momentum, 0.0, 1.0);
        c.positive("training.ns_steps", self.ns_steps);
        if self.optimizer != Optimizer::Muon {
            self.refuse_muon_keys(c);
        }
    }

    /// Whether `batch_size` is "auto" (not resolved yet).
    pub fn batch_size_is_auto(&self) -> bool {
        self.batch_size == BATCH_SIZE_AUTO
    }

    /// The keys of the automatic batch size: in range, and set only with `batch_size`
    /// "auto" (they would change nothing otherwise).
    fn validate_auto_batch(&self, c: &mut Checks) {
        c.in_half_open("training.memory_reserve", self.memory_reserve, 0.0, 1.0);
        if let Some(g) = self.global_batch_size {
            c.positive("training.global_batch_size", g);
        }
        if let Some(gib) = self.memory_gib {
            c.positive_number("training.memory_gib", gib);
        }
        let auto_only = [
            (
                "training.global_batch_size",
                self.global_batch_size.map(|g| g.to_string()),
            ),
            (
                "training.memory_reserve",
                (self.memory_reserve != DEFAULT_MEMORY_RESERVE)
                    .then(|| self.memory_reserve.to_string()),
            ),
            (
                "training.memory_gib",
                self.memory_gib.map(|g| g.to_string()),
            ),
        ];
        if !self.batch_size_is_auto() {
            for (key, value) in auto_only {
                if let Some(value) = value {
                    c.conflict(
                        key,
                        value,
                        "training.batch_size",
                        self.batch_size.to_string(),
                        "this key only applies to the automatic batch size; set \
                         training.batch_size to \"auto\", or leave the key at its default",
                    );
                }
            }
        } else if let (Some(g), true) = (self.global_batch_size, self.grad_accum_steps != 1) {
            c.conflict(
                "training.grad_accum_steps",
                self.grad_accum_steps.to_string(),
                "training.global_batch_size",
                g.to_string(),
                "with batch_size \"auto\" the accumulation follows from global_batch_size; \
                 leave grad_accum_steps at 1",
            );
        }
    }

    /// Under AdamW a Muon key set away from its default would change nothing: each one is an
    /// error naming the key and `training.optimizer`.
    fn refuse_muon_keys(&self, c: &mut Checks) {
        let d = TrainingConfig::default();
        let set = [
            (
                "training.muon_lr",
                self.muon_lr != d.muon_lr,
                self.muon_lr.to_string(),
            ),
            (
                "training.muon_momentum",
                self.muon_momentum != d.muon_momentum,
                self.muon_momentum.to_string(),
            ),
            (
                "training.momentum_warmup_steps",
                self.momentum_warmup_steps != d.momentum_warmup_steps,
                self.momentum_warmup_steps.to_string(),
            ),
            (
                "training.ns_steps",
                self.ns_steps != d.ns_steps,
                self.ns_steps.to_string(),
            ),
        ];
        for (key, changed, value) in set {
            if changed {
                c.conflict(
                    key,
                    value,
                    "training.optimizer",
                    format!("\"{}\"", self.optimizer),
                    "this key only applies to the Muon optimiser; set training.optimizer to \
                     \"muon\", or leave the key at its default",
                );
            }
        }
    }
}

/// Section `logging`: how often to log, evaluate, save and profile, and where outputs go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggingConfig {
    /// Steps between metric lines (progress bar, JSONL), >= 1. Default 10.
    pub log_every: usize,
    /// Steps between validation runs; 0 = never. Default 100.
    pub eval_every: usize,
    /// Steps between checkpoints; 0 = no periodic checkpoints. Default 100.
    pub save_every: usize,
    /// Steps between profiles; 0 = never. Default 0. Every multiple of it logs the timing and
    /// memory breakdown since the last profile and starts a device and host trace of
    /// `profile_steps` steps (`train::trace`).
    pub profile_every: usize,
    /// Steps each periodic trace covers (from a multiple of `profile_every` on), >= 1 and
    /// at most `profile_every`. Default 3.
    pub profile_steps: usize,
    /// Directory for checkpoints and metrics. Default "runs/default".
    pub output_dir: String,
    /// JSONL metrics file; a relative path is inside `output_dir`. Default "metrics.jsonl".
    pub metrics_file: String,
    /// Most recent checkpoints kept on disk, >= 1. Default 3.
    pub keep_checkpoints: usize,
    /// Write every metrics record also as TensorBoard scalars into `<output_dir>/tensorboard/`.
    /// Default true.
    pub tensorboard: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            log_every: 10,
            eval_every: 100,
            save_every: 100,
            profile_every: 0,
            profile_steps: 3,
            output_dir: "runs/default".to_string(),
            metrics_file: "metrics.jsonl".to_string(),
            keep_checkpoints: 3,
            tensorboard: true,
        }
    }
}

impl LoggingConfig {
    pub(crate) fn read(&mut self, r: &mut ObjectReader<'_>) {
        const EVERY: &str = "a non-negative integer (0 = never)";
        r.integer("log_every", &mut self.log_every, POSITIVE);
        r.integer("eval_every", &mut self.eval_every, EVERY);
        r.integer("save_every", &mut self.save_every, EVERY);
        r.integer("profile_every", &mut self.profile_every, EVERY);
        r.integer("profile_steps", &mut self.profile_steps, POSITIVE);
        r.text("output_dir", &mut self.output_dir);
        r.text("metrics_file", &mut self.metrics_file);
        r.integer("keep_checkpoints", &mut self.keep_checkpoints, POSITIVE);
        r.flag("tensorboard", &mut self.tensorboard);
    }

    pub(crate) fn validate(&self, c: &mut Checks) {
        c.positive("logging.log_every", self.log_every);
        c.positive("logging.profile_steps", self.profile_steps);
        if self.profile_every > 0 {
            c.ensure(
                self.profile_steps <= self.profile_every,
                "logging.profile_steps",
                format!(
                    "at most logging.profile_every = {} (each trace covers profile_steps steps \
                     from a multiple of profile_every; more would trace every step)",
                    self.profile_every
                ),
                self.profile_steps,
            );
        }
        c.non_empty("logging.output_dir", &self.output_dir);
        c.non_empty("logging.metrics_file", &self.metrics_file);
        c.positive("logging.keep_checkpoints", self.keep_checkpoints);
    }
}
