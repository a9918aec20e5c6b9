//! What a run finds in its output directory: the checks before resuming a checkpoint (same
//! model, data and global batch; no later checkpoints to overwrite), and setting an earlier
//! run aside before a fresh one.

use super::checkpoint;
use super::TrainError;
use crate::config::BatchGeometry;
use std::path::{Path, PathBuf};

/// Resuming from a chosen step into a directory that holds later checkpoints would overwrite
/// them one by one, and `--resume` would meanwhile take the newest of them for this run's.
pub(super) fn refuse_newer_checkpoints(root: &Path, step: u64) -> Result<(), TrainError> {
    let later: Vec<String> = checkpoint::list(root)
        .into_iter()
        .filter(|(s, _)| *s > step)
        .map(|(s, _)| s.to_string())
        .collect();
    if later.is_empty() {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: root.display().to_string(),
        detail: format!(
            "already holds checkpoints after step {step} (steps {}), which continuing from step {step} would overwrite one by one; resume into another directory (--set logging.output_dir=NEW_DIR) or remove them",
            later.join(", ")
        ),
    })
}

/// A resumed run keeps the global batch of the run it continues. A manifest written before
/// the batch was recorded (no `global_batch`) is from when `training.batch_size` was the
/// global batch; a manifest at step 0 (imported weights) has trained on nothing yet.
pub(super) fn check_batch(
    manifest: &checkpoint::Manifest,
    current: BatchGeometry,
    dir: &Path,
) -> Result<(), TrainError> {
    if manifest.step == 0 {
        return Ok(());
    }
    let (saved, how) = match manifest.global_batch {
        Some(global) => (global, manifest.batch),
        None => {
            let older = manifest.config["training"]["batch_size"].as_u64();
            match older {
                Some(global) => (global as usize, None),
                None => return Ok(()),
            }
        }
    };
    if saved == current.global_batch() {
        return Ok(());
    }
    let per_step = current.shards * current.grad_accum_steps;
    let remedy = if saved.is_multiple_of(per_step) {
        format!(
            "set training.batch_size={} ({saved} / ({} batch shard(s) x {} micro-batch(es))) to \
             keep it",
            saved / per_step,
            current.shards,
            current.grad_accum_steps
        )
    } else {
        format!(
            "no training.batch_size gives {saved} over {} batch shard(s) x {} micro-batch(es); \
             change training.grad_accum_steps or the devices (runtime.devices) so that they \
             divide {saved}",
            current.shards, current.grad_accum_steps
        )
    };
    let detail = match how {
        Some(saved_geometry) if saved_geometry.shards != current.shards => format!(
            "was written with a global batch of {saved} sequences per step ({saved_geometry}); \
             the mesh changed from {} to {} batch shards, so this run's is {current}; {remedy}",
            saved_geometry.shards, current.shards
        ),
        Some(saved_geometry) => format!(
            "was written with a global batch of {saved} sequences per step ({saved_geometry}), \
             and this run's is {current}; {remedy}"
        ),
        None => format!(
            "was written before training.batch_size became the batch per batch shard: its \
             training.batch_size {saved} was the global batch, and this run's global batch is \
             {current}; {remedy}"
        ),
    };
    Err(TrainError::Checkpoint {
        path: dir.display().to_string(),
        detail,
    })
}

/// A fresh run (not resumed) into a directory that holds an earlier run's checkpoints,
/// metrics, TensorBoard events or step traces moves them into a sibling `earlier-<UTC time>` directory first (logged), so that
/// they are neither pruned in favour of this run's nor taken by a later `--resume`, and
/// nothing is lost.
pub(super) fn set_earlier_run_aside(
    out_dir: &Path,
    root: &Path,
    metrics_path: &Path,
) -> Result<Option<PathBuf>, TrainError> {
    let checkpoints = checkpoint::list(root);
    let metrics = std::fs::metadata(metrics_path).is_ok_and(|m| m.len() > 0);
    let events = out_dir.join(super::tensorboard::TENSORBOARD_DIR);
    let has_events = std::fs::read_dir(&events).is_ok_and(|mut d| d.next().is_some());
    let traces: Vec<&str> = super::trace::TRACE_DIRS
        .into_iter()
        .filter(|d| out_dir.join(d).exists())
        .collect();
    if checkpoints.is_empty() && !metrics && !has_events && traces.is_empty() {
        return Ok(None);
    }
    let stamp = utc_stamp(std::time::SystemTime::now());
    let mut aside = out_dir.join(format!("earlier-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = out_dir.join(format!("earlier-{stamp}-{n}"));
    }
    std::fs::create_dir_all(&aside)
        .map_err(|e| TrainError::io(format!("creating {}", aside.display()), e))?;
    let mut moved = Vec::new();
    let mut continue_with = "give each run its own logging.output_dir".to_string();
    if let Some((newest, _)) = checkpoints.last() {
        continue_with = format!(
            "continue the earlier run with --resume-from {} and another logging.output_dir",
            aside
                .join("checkpoints")
                .join(checkpoint::step_dir_name(*newest))
                .display()
        );
    }
    if !checkpoints.is_empty() {
        let to = aside.join("checkpoints");
        std::fs::rename(root, &to).map_err(|e| {
            TrainError::io(format!("moving {} to {}", root.display(), to.display()), e)
        })?;
        let steps: Vec<String> = checkpoints.iter().map(|(s, _)| s.to_string()).collect();
        moved.push(format!("checkpoints (steps {})", steps.join(", ")));
    }
    if metrics {
        let name = metrics_path.file_name().unwrap_or_default();
        let to = aside.join(name);
        std::fs::rename(metrics_path, &to).map_err(|e| {
            TrainError::io(
                format!("moving {} to {}", metrics_path.display(), to.display()),
                e,
            )
        })?;
        moved.push(name.to_string_lossy().into_owned());
    }
    if has_events {
        let to = aside.join(super::tensorboard::TENSORBOARD_DIR);
        std::fs::rename(&events, &to).map_err(|e| {
            TrainError::io(
                format!("moving {} to {}", events.display(), to.display()),
                e,
            )
        })?;
        moved.push("TensorBoard events".to_string());
    }
    for dir in &traces {
        let (from, to) = (out_dir.join(dir), aside.join(dir));
        let moving = || {
            std::fs::create_dir_all(to.parent().unwrap_or(&aside))?;
            std::fs::rename(&from, &to)
        };
        moving().map_err(|e| {
            TrainError::io(format!("moving {} to {}", from.display(), to.display()), e)
        })?;
    }
    if !traces.is_empty() {
        moved.push("step traces".to_string());
    }
    tracing::warn!(
        "{} held an earlier run; this run starts fresh (no --resume), so its {} were moved to {} \
         (nothing is deleted); {continue_with}",
        out_dir.display(),
        moved.join(" and "),
        aside.display(),
    );
    Ok(Some(aside))
}

/// `YYYYMMDDTHHMMSSZ` of `time` in UTC.
fn utc_stamp(time: std::time::SystemTime) -> String {
    let [year, month, day, hour, minute, second] = utc_fields(time);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
}

/// Year, month, day, hour, minute and second of `time` in UTC.
pub(super) fn utc_fields(time: std::time::SystemTime) -> [i64; 6] {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rest = rest as i64;
    [year, month, day, rest / 3600, rest % 3600 / 60, rest % 60]
}

/// Keys of the `data` section that say where the data lives or how fast it is read, not what
/// it is: a resume may change them (a corpus moved, another cache directory, more loader
/// threads), because the data loader's position checks the data itself by its content
/// fingerprint and its batch order does not depend on the threads.
const DATA_LOCATION_KEYS: [&str; 5] = [
    "source",
    "tokenizer",
    "cache_dir",
    "queue_size",
    "num_workers",
];

/// `section` of a saved or current config as a resume compares it: the `data` section
/// without [`DATA_LOCATION_KEYS`].
fn compared_section(config: &serde_json::Value, section: &str) -> Option<serde_json::Value> {
    let mut value = config.get(section)?.clone();
    if let (true, Some(object)) = (section == "data", value.as_object_mut()) {
        for key in DATA_LOCATION_KEYS {
            object.remove(key);
        }
    }
    Some(value)
}

/// `config` as this version reads it, merged over the defaults: keys added since a checkpoint
/// was written (such as model.activation) take their defaults, which is what its run computed.
/// A config that no longer loads is compared as written.
fn as_loaded(config: &serde_json::Value) -> serde_json::Value {
    crate::config::Config::from_json_str(&config.to_string())
        .ok()
        .map(|c| c.to_value())
        .unwrap_or_else(|| config.clone())
}

/// A resumed run must train the same model the same way; logging and runtime may change, and
/// so may where the data lives (see [`DATA_LOCATION_KEYS`]).
pub(super) fn check_compatible(
    saved: &serde_json::Value,
    current: &str,
    dir: &Path,
) -> Result<(), TrainError> {
    let current: serde_json::Value =
        serde_json::from_str(current).unwrap_or(serde_json::Value::Null);
    let (saved, current) = (&as_loaded(saved), &as_loaded(&current));
    for section in ["model", "data", "sequence", "distillation"] {
        if compared_section(saved, section) != compared_section(current, section) {
            return Err(TrainError::Checkpoint {
                path: dir.display().to_string(),
                detail: format!(
                    "was written with a different `{section}` section; resume with the same config (and the same --init-from, which supplies the model section and the tokenizer of a fine-tuning run), or start a fresh run in another logging.output_dir"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(
        step: u64,
        batch: Option<BatchGeometry>,
        batch_size: usize,
    ) -> checkpoint::Manifest {
        checkpoint::Manifest {
            format: checkpoint::FORMAT.into(),
            version: checkpoint::VERSION,
            step,
            config: json!({"training": {"batch_size": batch_size}}),
            data_position: json!(null),
            tensors: Default::default(),
            state_sha256: String::new(),
            global_batch: batch.map(|b| b.global_batch()),
            batch,
            files: Vec::new(),
        }
    }

    fn geometry(per_shard: usize, shards: usize, grad_accum_steps: usize) -> BatchGeometry {
        BatchGeometry {
            per_shard,
            shards,
            grad_accum_steps,
        }
    }

    #[test]
    fn resuming_on_another_mesh_names_the_batch_size_that_keeps_the_global_batch() {
        let dir = Path::new("runs/x/checkpoints/step_00000010");
        let saved = manifest(10, Some(geometry(8, 8, 1)), 8);
        check_batch(&saved, geometry(8, 8, 1), dir).unwrap();
        check_batch(&saved, geometry(16, 4, 1), dir).unwrap();
        let err = check_batch(&saved, geometry(8, 4, 1), dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("global batch of 64 sequences per step"),
            "{err}"
        );
        assert!(
            err.contains("the mesh changed from 8 to 4 batch shards"),
            "{err}"
        );
        assert!(err.contains("set training.batch_size=16"), "{err}");
        let err = check_batch(&saved, geometry(8, 3, 1), dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no training.batch_size gives 64 over 3 batch shard(s)"),
            "{err}"
        );
        // Weights at step 0 (imported) have trained on nothing yet.
        check_batch(&manifest(0, None, 4), geometry(8, 4, 1), dir).unwrap();
    }

    #[test]
    fn an_older_manifests_batch_size_was_the_global_batch() {
        let dir = Path::new("runs/x/checkpoints/step_00000010");
        let older = manifest(10, None, 64);
        check_batch(&older, geometry(64, 1, 1), dir).unwrap();
        check_batch(&older, geometry(8, 4, 2), dir).unwrap();
        let err = check_batch(&older, geometry(64, 4, 1), dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "its training.batch_size 64 was the global batch, and this run's global batch is \
                 64 per shard (training.batch_size) x 4 batch shards"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "set training.batch_size=16 (64 / (4 batch shard(s) x 1 micro-batch(es)))"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_fresh_run_sets_an_earlier_run_aside() {
        let out = tempfile::tempdir().unwrap();
        let root = out.path().join("checkpoints");
        let metrics = out.path().join("metrics.jsonl");
        assert_eq!(
            set_earlier_run_aside(out.path(), &root, &metrics).unwrap(),
            None
        );
        let state = std::collections::BTreeMap::from([(
            "step".to_string(),
            crate::engine::HostArray::scalar(0i32),
        )]);
        checkpoint::save(&root, 40, &state, json!({}), json!(null), 2).unwrap();
        std::fs::write(&metrics, "{\"step\": 40}\n").unwrap();
        let aside = set_earlier_run_aside(out.path(), &root, &metrics)
            .unwrap()
            .unwrap();
        let name = aside.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("earlier-20") && name.ends_with('Z'),
            "{name}"
        );
        assert!(checkpoint::list(&root).is_empty());
        assert!(!metrics.exists());
        let kept = checkpoint::list(&aside.join("checkpoints"));
        assert_eq!(kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [40]);
        assert_eq!(
            std::fs::read_to_string(aside.join("metrics.jsonl")).unwrap(),
            "{\"step\": 40}\n"
        );
        // Step traces go aside too.
        let session = out.path().join("plugins/profile/2026_12_06_10_30_00");
        std::fs::create_dir_all(&session).unwrap();
        let aside = set_earlier_run_aside(out.path(), &root, &metrics)
            .unwrap()
            .unwrap();
        assert!(aside.join("plugins/profile/2026_12_06_10_30_00").is_dir());
        assert!(!out.path().join("plugins/profile").exists());
        // A second earlier run in the same second gets its own directory.
        checkpoint::save(&root, 5, &state, json!({}), json!(null), 2).unwrap();
        let second = set_earlier_run_aside(out.path(), &root, &metrics)
            .unwrap()
            .unwrap();
        assert_ne!(second, aside);
    }

    #[test]
    fn utc_stamps() {
        let at = |s: u64| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_536_245), "20261206T055045Z");
    }

    #[test]
    fn a_resume_may_move_the_data_but_not_change_it() {
        let saved = json!({
            "model": {"hidden_dim": 32},
            "data": {"source": "/old/corpus", "val_fraction": 0.05, "num_workers": 2},
        });
        let dir = Path::new("ck");
        let moved = json!({
            "model": {"hidden_dim": 32},
            "data": {"source": "/new/corpus", "val_fraction": 0.05, "num_workers": 4},
        });
        check_compatible(&saved, &moved.to_string(), dir).unwrap();
        let changed = json!({
            "model": {"hidden_dim": 32},
            "data": {"source": "/old/corpus", "val_fraction": 0.1, "num_workers": 2},
        });
        let err = check_compatible(&saved, &changed.to_string(), dir).unwrap_err();
        assert!(err.to_string().contains("`data` section"), "{err}");
        // A key written out at its default equals the key left out (an older checkpoint).
        let explicit = json!({
            "model": {"hidden_dim": 32, "activation": "silu", "norm_offset": 0.0},
            "data": {"source": "/old/corpus", "val_fraction": 0.05, "num_workers": 2},
        });
        check_compatible(&saved, &explicit.to_string(), dir).unwrap();
    }
}
