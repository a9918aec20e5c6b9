//! Which attention implementation a training run traces (`memory.attention_backend`).
//!
//! On a one-device mesh the choice is the kernel itself. On a sharded mesh cuDNN attention
//! (and "xla_per_shard") runs per device on its batch and head shards inside a Shardy manual
//! computation (`model/sharded_attention.rs`): XLA's partitioner knows no rule for the cuDNN
//! custom calls and would gather their operands onto every device. Where the shards cannot
//! be cut that way (the sequence split, query and kv heads split differently), "auto" and
//! "xla_per_shard" compose attention under the partitioner instead, and [`attention_summary`]
//! (logged by `train`) says why.

use crate::config::{AttentionBackend, Config};
use crate::model::{AttentionKind, AttentionShards, PerShardAttention};
use std::sync::Arc;
use vishwam_mesh::ShardingPlan;

/// The attention of the train step for `cfg` on `plan`'s mesh.
///
/// "xla" composes attention from primitives (blocked when `attention_memory_efficient` is
/// set); "cudnn" always takes the cuDNN kernels (the config check has ruled out what they
/// cannot run), per shard on a sharded mesh where the shards allow it; "auto" takes them
/// where nothing blocks them; "xla_per_shard" runs the composed attention per shard.
pub fn attention_kind(cfg: &Config, plan: &ShardingPlan) -> AttentionKind {
    let composed = composed_kind(cfg);
    let backend = cfg.memory.attention_backend;
    let inner = match backend {
        AttentionBackend::Xla | AttentionBackend::XlaPerShard => composed.clone(),
        AttentionBackend::Cudnn => AttentionKind::Cudnn,
        AttentionBackend::Auto if cfg.cudnn_attention_blockers().is_empty() => AttentionKind::Cudnn,
        AttentionBackend::Auto => composed.clone(),
    };
    let wants_shards = inner == AttentionKind::Cudnn || backend == AttentionBackend::XlaPerShard;
    if plan.mesh.num_devices() == 1 || !wants_shards {
        return inner;
    }
    match attention_shards(cfg, plan) {
        Ok(_) => AttentionKind::PerShard(Arc::new(PerShardAttention {
            inner,
            fallback: composed,
            plan: plan.clone(),
        })),
        // An explicit "cudnn" stays cuDNN, under the partitioner (which gathers).
        Err(_) if backend == AttentionBackend::Cudnn => AttentionKind::Cudnn,
        Err(_) => composed,
    }
}

/// [`attention_kind`] for a distillation teacher, whose shape may rule out the cuDNN kernels
/// that the (student's) config validation allowed: the teacher composes attention then.
pub fn teacher_attention_kind(as_teacher: &Config, plan: &ShardingPlan) -> AttentionKind {
    if as_teacher.memory.attention_backend == AttentionBackend::Cudnn
        && !as_teacher.cudnn_attention_blockers().is_empty()
    {
        return composed_kind(as_teacher);
    }
    attention_kind(as_teacher, plan)
}

/// Full or blocked composed attention, as `cfg` asks.
fn composed_kind(cfg: &Config) -> AttentionKind {
    match cfg.attention_block() {
        Some(block) => AttentionKind::Blocked(block),
        None => AttentionKind::Full,
    }
}

/// How the train step's attention (`[micro_batch, seq_len, heads, head_dim]`) splits over
/// `plan`'s mesh, or why it cannot run per shard.
pub fn attention_shards(cfg: &Config, plan: &ShardingPlan) -> Result<AttentionShards, String> {
    let b = super::batch_geometry(cfg, plan).micro_batch() as i64;
    let t = cfg.seq_len() as i64;
    let d = cfg.model.head_dim() as i64;
    let q = [b, t, cfg.model.num_heads as i64, d];
    let kv = [b, t, cfg.model.kv_heads() as i64, d];
    AttentionShards::resolve(plan, &q, &kv)
}

/// One line for the log: which attention the train step runs on `plan`'s mesh, and on a
/// sharded mesh how it is split or why it composes under the partitioner instead.
pub fn attention_summary(cfg: &Config, plan: &ShardingPlan) -> String {
    let kind = attention_kind(cfg, plan);
    let axes: Vec<String> = plan
        .mesh
        .axes()
        .iter()
        .map(|a| format!("{}={}", a.name, a.size))
        .collect();
    match (&kind, attention_shards(cfg, plan)) {
        (AttentionKind::PerShard(p), Ok(shards)) => format!(
            "attention: {} per shard (sdy.manual_computation, manual axes {}; {shards})",
            kind_name(&p.inner),
            axes.join(", ")
        ),
        (kind, Err(reason)) if plan.mesh.num_devices() > 1 => format!(
            "attention: {} under the partitioner; it cannot run per shard: {reason}",
            kind_name(kind)
        ),
        (kind, _) => format!("attention: {}", kind_name(kind)),
    }
}

fn kind_name(kind: &AttentionKind) -> String {
    match kind {
        AttentionKind::Full => "composed XLA attention".into(),
        AttentionKind::Blocked(block) => format!("blocked XLA attention (blocks of {block})"),
        AttentionKind::Cudnn => "cuDNN flash attention".into(),
        AttentionKind::PerShard(p) => format!("{} per shard", kind_name(&p.inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::sharding_plan;

    fn choose(sets: &[&str], devices: usize) -> AttentionKind {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load(None, &sets).unwrap_or_else(|e| panic!("{sets:?}: {e}"));
        let platform = cfg.runtime.platform.as_str();
        let plan = sharding_plan(&cfg, platform, devices).expect("plan");
        attention_kind(&cfg, &plan)
    }

    const CUDA_BF16: [&str; 2] = ["runtime.platform=cuda", "optimization.mixed_precision=true"];

    #[test]
    fn auto_picks_cudnn_on_one_cuda_device_in_bf16_or_f16() {
        assert_eq!(choose(&CUDA_BF16, 1), AttentionKind::Cudnn);
        let f16 = [&CUDA_BF16[..], &["optimization.use_dynamic_scale=true"]].concat();
        assert_eq!(choose(&f16, 1), AttentionKind::Cudnn);
        // cuDNN is memory-efficient too, so it wins over blocked attention.
        let blocked = [&CUDA_BF16[..], &["memory.attention_memory_efficient=true"]].concat();
        assert_eq!(choose(&blocked, 1), AttentionKind::Cudnn);
    }

    #[test]
    fn auto_composes_attention_where_cudnn_cannot_run() {
        assert_eq!(
            choose(&["optimization.mixed_precision=true"], 1),
            AttentionKind::Full
        );
        assert_eq!(
            choose(
                &[
                    "optimization.mixed_precision=true",
                    "memory.attention_memory_efficient=true",
                    "optimization.block_size=128"
                ],
                1
            ),
            AttentionKind::Blocked(128)
        );
        assert_eq!(choose(&["runtime.platform=cuda"], 1), AttentionKind::Full);
        let odd_head = [
            &CUDA_BF16[..],
            &[
                "model.hidden_dim=240",
                "model.num_heads=4",
                "model.num_kv_heads=2",
            ],
        ]
        .concat();
        assert_eq!(choose(&odd_head, 1), AttentionKind::Full, "head dim 60");
        let wide_head = [&CUDA_BF16[..], &["model.head_dim=192"]].concat();
        assert_eq!(choose(&wide_head, 1), AttentionKind::Full, "head dim 192");
        let blocked_f32 = [
            "memory.attention_memory_efficient=true",
            "runtime.devices=2",
        ];
        assert_eq!(choose(&blocked_f32, 2), AttentionKind::Blocked(128));
    }

    fn inner_on_shards(kind: &AttentionKind) -> Option<AttentionKind> {
        match kind {
            AttentionKind::PerShard(p) => Some(p.inner.clone()),
            _ => None,
        }
    }

    #[test]
    fn sharded_meshes_run_cudnn_per_shard_unless_the_heads_split_unalike() {
        let dp = [&CUDA_BF16[..], &["runtime.devices=2"]].concat();
        assert_eq!(inner_on_shards(&choose(&dp, 2)), Some(AttentionKind::Cudnn));
        // The default model: 12 heads and 12 kv heads split over model = 4.
        let tp = [
            &CUDA_BF16[..],
            &[
                "runtime.devices=4",
                "tpu.device_strategy=\"tensor_parallel\"",
                "tpu.mesh_shape={\"model\": 4}",
            ],
        ]
        .concat();
        assert_eq!(inner_on_shards(&choose(&tp, 4)), Some(AttentionKind::Cudnn));
        // 12 query heads split over model = 4, 2 kv heads not: composed, and the log says why.
        let gqa = [&tp[..], &["model.num_kv_heads=2"]].concat();
        assert_eq!(choose(&gqa, 4), AttentionKind::Full);
        let sets: Vec<String> = gqa.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load(None, &sets).unwrap();
        let plan = sharding_plan(&cfg, "cuda", 4).unwrap();
        let summary = attention_summary(&cfg, &plan);
        assert!(summary.contains("2 kv heads"), "{summary}");
        // An explicit "cudnn" stays cuDNN there, under the partitioner.
        let explicit = [&gqa[..], &["memory.attention_backend=cudnn"]].concat();
        assert_eq!(choose(&explicit, 4), AttentionKind::Cudnn);
        // "xla_per_shard" runs the composed attention per shard; on one device it is "xla".
        let cpu = [
            "memory.attention_backend=xla_per_shard",
            "runtime.devices=2",
        ];
        assert_eq!(inner_on_shards(&choose(&cpu, 2)), Some(AttentionKind::Full));
        assert_eq!(
            choose(&["memory.attention_backend=xla_per_shard"], 1),
            AttentionKind::Full
        );
    }

    #[test]
    fn explicit_backends_are_obeyed() {
        let xla = [&CUDA_BF16[..], &["memory.attention_backend=xla"]].concat();
        assert_eq!(choose(&xla, 1), AttentionKind::Full);
        let cudnn = [&CUDA_BF16[..], &["memory.attention_backend=cudnn"]].concat();
        assert_eq!(choose(&cudnn, 1), AttentionKind::Cudnn);
        let cudnn_dp = [&cudnn[..], &["runtime.devices=2"]].concat();
        assert_eq!(
            inner_on_shards(&choose(&cudnn_dp, 2)),
            Some(AttentionKind::Cudnn)
        );
    }

    #[test]
    fn the_train_step_calls_the_kernels_once_per_layer_and_pass_unless_xla_is_asked() {
        use crate::model::cudnn_attention::{BACKWARD_TARGET, FORWARD_TARGET};
        use crate::train::{build_train_step, StepLayout};
        let cases = [("auto", false), ("auto", true), ("xla", false)];
        for ((backend, remat), devices) in cases.into_iter().flat_map(|c| [(c, 1), (c, 4)]) {
            let cfg = Config::load(
                None,
                &[
                    "runtime.platform=cuda",
                    "optimization.mixed_precision=true",
                    "model.num_layers=2",
                    "model.hidden_dim=64",
                    "model.num_heads=4",
                    "model.num_kv_heads=2",
                    "model.vocab_size=128",
                    "model.max_seq_len=32",
                    "training.batch_size=2",
                    &format!("memory.gradient_checkpointing={remat}"),
                    &format!("memory.attention_backend={backend}"),
                    &format!("runtime.devices={devices}"),
                ]
                .map(String::from),
            )
            .expect("config");
            let plan = sharding_plan(&cfg, "cuda", devices).expect("plan");
            let layout = StepLayout::new(&cfg, &plan).expect("layout");
            let text = build_train_step(&cfg, &plan, &layout)
                .expect("traced")
                .to_stablehlo(&vishwam_hlo::PrintOptions::with_mesh(plan.mesh.clone()))
                .expect("printed");
            let count = |target: &str| {
                text.matches(&format!("stablehlo.custom_call @{target}("))
                    .count()
            };
            // With remat, each block's forward runs again before its backward.
            let (forward_runs, backward_runs) = match (backend, remat) {
                ("xla", _) => (0, 0),
                (_, true) => (4, 2),
                (_, false) => (2, 2),
            };
            assert_eq!(
                count(FORWARD_TARGET),
                forward_runs,
                "{backend}, remat {remat}"
            );
            assert_eq!(
                count(BACKWARD_TARGET),
                backward_runs,
                "{backend}, remat {remat}"
            );
            // On 4 devices each kernel call sits in its own manual computation.
            let manual = text.matches("sdy.manual_computation(").count();
            let per_shard = if devices > 1 {
                forward_runs + backward_runs
            } else {
                0
            };
            assert_eq!(
                manual, per_shard,
                "{backend}, remat {remat}, {devices} devices"
            );
        }
    }
}
