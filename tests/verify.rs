//! The XLA program against the Candle reference: MHA/GQA/MQA, tied and untied, remat,
//! chunked loss, the bf16 policy, and the sharded program on 4 devices.

mod common;

use vishwam::config::Config;
use vishwam::engine::Engine;
use vishwam::model::init_params;
use vishwam::reference::format_table;
use vishwam::runtime::{Client, CompileCache};
use vishwam::train::sharding_plan;
use vishwam::verify::{random_batch, verify, VerifyOptions};

fn client() -> &'static Client {
    common::cpu_client(4)
}

fn cache() -> CompileCache {
    common::private_cache()
}

fn check(name: &str, sets: &[&str], devices: usize, opts: VerifyOptions) {
    let mut all: Vec<String> = [
        "model.vocab_size=96",
        "model.hidden_dim=32",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.max_seq_len=16",
        "training.batch_size=4",
        "training.warmup_steps=1",
        "training.max_steps=10",
        "training.learning_rate=0.01",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(sets.iter().map(|s| s.to_string()));
    all.push(format!("runtime.devices={devices}"));
    let cfg = Config::load(None, &all).unwrap();
    let plan = sharding_plan(&cfg, "cpu", devices).unwrap();
    // training.batch_size is per batch shard: keep the micro-batch at 4 sequences.
    all.push(format!(
        "training.batch_size={}",
        (4 / plan.batch_shards()).max(1)
    ));
    let cfg = Config::load(None, &all).unwrap();
    let engine = Engine::new(client().clone(), plan.mesh.clone(), cache()).unwrap();
    let params = init_params(&cfg.model, 3);
    let batch = random_batch(&cfg, &plan, 5);
    let report = verify(&cfg, engine, plan, &params, &batch, opts).unwrap();
    let table = format_table(&report.rows);
    assert!(report.passed(), "{name}:\n{table}");
    assert!(
        report.rows.len() > 20,
        "{name}: only {} rows",
        report.rows.len()
    );
}

#[test]
fn attention_variants_and_embeddings_match_candle() {
    let steps = VerifyOptions {
        steps: 2,
        loss_chunk: None,
    };
    check("MHA tied", &["model.num_kv_heads=4"], 1, steps);
    check(
        "GQA untied",
        &["model.num_kv_heads=2", "model.tie_embeddings=false"],
        1,
        steps,
    );
    check("MQA", &["model.num_kv_heads=1"], 1, steps);
}

#[test]
fn remat_chunked_loss_and_blocked_attention_match_candle() {
    let chunked = VerifyOptions {
        steps: 1,
        loss_chunk: Some(16),
    };
    check(
        "remat + chunked loss",
        &["memory.gradient_checkpointing=true"],
        1,
        chunked,
    );
    check(
        "blocked attention",
        &[
            "memory.attention_memory_efficient=true",
            "optimization.block_size=4",
        ],
        1,
        chunked,
    );
}

#[test]
fn bf16_policy_matches_the_f32_reference_at_bf16_tolerance() {
    check(
        "bf16",
        &["tpu.use_bfloat16=true", "model.num_kv_heads=2"],
        1,
        VerifyOptions {
            steps: 0,
            loss_chunk: None,
        },
    );
}

#[test]
fn sharded_program_on_4_devices_matches_candle() {
    let opts = VerifyOptions {
        steps: 2,
        loss_chunk: None,
    };
    check(
        "fsdp x4",
        &[
            "tpu.device_strategy=\"fsdp\"",
            "tpu.mesh_shape={\"fsdp\": 4}",
            "optimization.shard_weights=true",
        ],
        4,
        opts,
    );
    check(
        "data x model",
        &[
            "tpu.device_strategy=\"hybrid\"",
            "tpu.mesh_shape={\"data\": 2, \"model\": 2}",
        ],
        4,
        opts,
    );
}

/// One and two Muon steps of the compiled train step (Newton-Schulz in f32) against the
/// Candle reference's Muon, on one device and sharded over 4 (fsdp gathers each matrix for
/// its orthogonalisation).
#[test]
fn muon_steps_match_the_reference_muon() {
    let opts = VerifyOptions {
        steps: 2,
        loss_chunk: None,
    };
    let muon = [
        "training.optimizer=\"muon\"",
        "training.muon_lr=0.02",
        "training.momentum_warmup_steps=1",
    ];
    check("muon", &muon, 1, opts);
    let mut fsdp = muon.to_vec();
    fsdp.extend([
        "tpu.device_strategy=\"fsdp\"",
        "tpu.mesh_shape={\"fsdp\": 4}",
        "optimization.shard_weights=true",
    ]);
    check("muon fsdp x4", &fsdp, 4, opts);
}
