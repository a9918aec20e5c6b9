//! Muon through the binary: a tiny run on the Brown corpus keeps a momentum buffer for each
//! block matrix and AdamW moments for the rest, lowers the loss, and resumed from an older
//! checkpoint reproduces the uninterrupted run bit for bit.

use super::common::{succeeded, vishwam_cli};
use std::path::Path;
use vishwam::train::checkpoint;

///
/// These are the run settings; the model is `common::TINY_MODEL`.
const TINY_RUN: &[&str] = &[
    "training.batch_size=8",
    "training.warmup_steps=1",
    "training.learning_rate=0.003",
    "training.optimizer=\"muon\"",
    "training.muon_lr=0.02",
    "training.momentum_warmup_steps=2",
    "training.max_steps=6",
    "data.val_fraction=0.05",
    "logging.eval_every=0",
    "logging.log_every=1",
    "logging.save_every=2",
    "logging.keep_checkpoints=5",
    "runtime.compile_cache=false",
];

fn train(dir: &Path, more: &[&str]) {
    let mut args = vec!["train".to_string(), "--no-progress".into()];
    for s in crate::common::TINY_MODEL.iter().chain(TINY_RUN) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args.extend([
        "--set".to_string(),
        format!("logging.output_dir={}", dir.display()),
    ]);
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeeded(vishwam_cli(&vishwam::paths::vishwam_home(), &args));
}

fn losses(run_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_muon_run_keeps_momentum_for_block_matrices_and_resumes_exactly() {
    let root = tempfile::tempdir().unwrap();
    let full = root.path().join("full");
    train(&full, &[]);
    let l = losses(&full);
    assert_eq!(l.len(), 6);
    assert!(l.iter().all(|(_, x)| x.is_finite()), "{l:?}");
    assert!(l[5].1 < l[0].1, "Muon lowered the loss: {l:?}");

    let last = checkpoint::load(&checkpoint::latest(&full.join("checkpoints")).unwrap()).unwrap();
    let names: Vec<&String> = last.state.keys().collect();
    for muon in ["layers.0.attn.wq", "layers.1.mlp.w_down"] {
        assert!(
            last.state.contains_key(&format!("opt.momentum.{muon}")),
            "{names:?}"
        );
        assert!(
            !last.state.contains_key(&format!("opt.m.{muon}")),
            "{names:?}"
        );
    }
    for adamw in [
        "embed.tokens",
        "final_norm.scale",
        "layers.0.attn_norm.scale",
    ] {
        assert!(
            last.state.contains_key(&format!("opt.m.{adamw}")),
            "{names:?}"
        );
        assert!(
            last.state.contains_key(&format!("opt.v.{adamw}")),
            "{names:?}"
        );
        assert!(
            !last.state.contains_key(&format!("opt.momentum.{adamw}")),
            "{names:?}"
        );
    }

    let step2 = full.join("checkpoints").join(checkpoint::step_dir_name(2));
    let again = root.path().join("again");
    train(&again, &["--resume-from", &step2.display().to_string()]);
    assert_eq!(losses(&again), l[2..].to_vec());
    let resumed =
        checkpoint::load(&checkpoint::latest(&again.join("checkpoints")).unwrap()).unwrap();
    assert_eq!(resumed.manifest.step, 6);
    assert_eq!(
        last.state, resumed.state,
        "the resumed Muon state must equal the uninterrupted one bit for bit"
    );
}
