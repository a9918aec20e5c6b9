//! The metrics log of a run: every record goes to the JSONL metrics file and, with
//! `logging.tensorboard`, every number in it also becomes a TensorBoard scalar at the record's
//! `step`, in a new event file under `<output_dir>/tensorboard/` per process.
//!
//! Tag names (stable; a record's other keys follow the same rules, so keys added to the
//! records later show up without changes here):
//!
//! | record key | tag |
//! |---|---|
//! | `loss`, `accuracy`, `lr`, `grad_norm`, `tokens` | `train/loss`, `train/accuracy`, `train/lr`, `train/grad_norm`, `train/tokens` |
//! | `tokens_per_second`, `step_time`, `data_queue_depth`, `mfu` | `perf/<key>` |
//! | `step_seconds` (data wait, host to device, compute, device to host) | `perf/step_seconds/<part>` |
//! | `device_memory_bytes`, `host_rss_bytes` | `memory/<key>` |
//! | `ce`, `kl`, `intermediate` (distillation) | `distill/ce`, `distill/kl`, `distill/intermediate` |
//! | `fp8_saturated_forward`, `fp8_saturated_backward` | `fp8/saturated_forward`, `fp8/saturated_backward` |
//! | `val_<name>` (evaluation) | `val/<name>` (`val/loss`, `val/perplexity`) |
//! | any other number `<key>` | `train/<key>` |
//! | any other object or array `<key>` | `<key>/<field>/<index>/...` (`moe/...`, `profile/...`) |
//!
//! Objects nest with `/` and array elements by their index; strings, booleans and nulls
//! are not scalars and are skipped. Values are stored as TensorBoard's 32-bit `simple_value`
//! (counts above 2^24, such as bytes, are rounded to 24 significant bits). A resumed run writes a `SessionLog START` event at its
//! first step, so TensorBoard drops whatever an interrupted earlier process had written at
//! that step and later (its metrics past the checkpoint), and no step is shown twice.

mod event_file;

pub(crate) use event_file::host_name;
pub use event_file::{crc32c, encode_event, masked_crc32c, tfrecord, EventBody, EventWriter};

use crate::train::TrainError;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory of the event files inside the run's output directory.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// The TensorBoard tag of a top-level record key that holds a number.
fn scalar_tag(key: &str) -> String {
    match key {
        "loss" | "accuracy" | "lr" | "grad_norm" | "tokens" => format!("train/{key}"),
        "tokens_per_second" | "step_time" | "data_queue_depth" | "mfu" => format!("perf/{key}"),
        "device_memory_bytes" | "host_rss_bytes" => format!("memory/{key}"),
        "ce" | "kl" | "intermediate" => format!("distill/{key}"),
        "fp8_saturated_forward" | "fp8_saturated_backward" => {
            format!("fp8/{}", key.trim_start_matches("fp8_"))
        }
        _ => match key.strip_prefix("val_") {
            Some(name) => format!("val/{name}"),
            None => format!("train/{key}"),
        },
    }
}

/// The step of a metrics record and its numbers as (tag, value), by the rules of the module
/// documentation; `None` for a record without a non-negative integer `step`.
pub fn record_scalars(record: &Value) -> Option<(u64, Vec<(String, f32)>)> {
    let object = record.as_object()?;
    let step = object.get("step")?.as_u64()?;
    let mut scalars = Vec::new();
    for (key, value) in object {
        match value {
            _ if key == "step" => {}
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    scalars.push((scalar_tag(key), x as f32));
                }
            }
            Value::Object(_) | Value::Array(_) => {
                let group = match key.as_str() {
                    "intermediate" => "distill/intermediate".to_string(),
                    "step_seconds" => "perf/step_seconds".to_string(),
                    k => k
                        .strip_prefix("val_")
                        .map_or(k.to_string(), |n| format!("val/{n}")),
                };
                flatten(&group, value, &mut scalars);
            }
            _ => {}
        }
    }
    Some((step, scalars))
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, f32)>) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x as f32));
            }
        }
        Value::Object(map) => {
            for (key, inner) in map {
                flatten(&format!("{prefix}/{key}"), inner, out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                flatten(&format!("{prefix}/{i}"), inner, out);
            }
        }
        _ => {}
    }
}

/// Where a run's metrics records go: the JSONL file, and the TensorBoard events if enabled.
pub struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
    events: Option<EventWriter>,
}

impl MetricsLog {
    /// Opens the metrics file at `path` (appended to when `start_step` > 0, the step a resumed
    /// run continues from, else truncated) and, with `tensorboard`, a new event file in
    /// `<out_dir>/tensorboard/` (logged with the command that shows it).
    pub fn open(
        path: &Path,
        out_dir: &Path,
        start_step: u64,
        tensorboard: bool,
    ) -> Result<Self, TrainError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(start_step > 0)
            .write(true)
            .truncate(start_step == 0)
            .open(path)
            .map_err(|e| TrainError::io(format!("opening {}", path.display()), e))?;
        let events = if tensorboard {
            let mut events = EventWriter::create(&out_dir.join(TENSORBOARD_DIR))?;
            if start_step > 0 {
                events.write(start_step + 1, &EventBody::SessionStart)?;
            }
            tracing::info!(
                "TensorBoard events: {} (view with `tensorboard --logdir {}`)",
                events.path().display(),
                out_dir.display()
            );
            Some(events)
        } else {
            None
        };
        Ok(MetricsLog {
            file,
            path: path.to_path_buf(),
            events,
        })
    }

    /// Appends `record` as a JSON line and, if enabled, its numbers as scalars at its step.
    pub fn record(&mut self, record: &Value) -> Result<(), TrainError> {
        // One write per line (the JSON's own Display would write it in many small pieces).
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| TrainError::io(format!("writing {}", self.path.display()), e))?;
        if let Some(events) = &mut self.events {
            if let Some((step, scalars)) = record_scalars(record) {
                if !scalars.is_empty() {
                    events.write(step, &EventBody::Scalars(&scalars))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_map_to_documented_tags() {
        let record = json!({
            "step": 20, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "tokens": 1024,
            "tokens_per_second": 900.0, "step_time": 0.25, "device_memory_bytes": 4096,
            "ce": 3.0, "kl": 0.5, "intermediate": [0.1, 0.2],
            "fp8_saturated_forward": 1, "fp8_saturated_backward": 2,
            "moe": {"dropped_fraction": 0.1, "utilisation": [[0.5, 0.5]]},
            "host_rss_bytes": 77, "mfu": 0.3, "step_seconds": {"compute": 0.2},
            "custom": 5, "note": "text", "flag": true, "missing": null,
        });
        let (step, scalars) = record_scalars(&record).unwrap();
        assert_eq!(step, 20);
        let tags: Vec<&str> = scalars.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            [
                "train/loss",
                "train/lr",
                "train/grad_norm",
                "train/tokens",
                "perf/tokens_per_second",
                "perf/step_time",
                "memory/device_memory_bytes",
                "distill/ce",
                "distill/kl",
                "distill/intermediate/0",
                "distill/intermediate/1",
                "fp8/saturated_forward",
                "fp8/saturated_backward",
                "moe/dropped_fraction",
                "moe/utilisation/0/0",
                "moe/utilisation/0/1",
                "memory/host_rss_bytes",
                "perf/mfu",
                "perf/step_seconds/compute",
                "train/custom",
            ]
        );
        assert_eq!(scalars[0].1, 2.5);
        assert_eq!(scalars[3].1, 1024.0);

        let eval = json!({"step": 30, "val_loss": 2.0, "val_perplexity": 7.39});
        let (step, scalars) = record_scalars(&eval).unwrap();
        assert_eq!(step, 30);
        assert_eq!(
            scalars,
            [
                ("val/loss".to_string(), 2.0),
                ("val/perplexity".to_string(), 7.39)
            ]
        );
        let profile = json!({"step": 5, "profile": {"step_ms": 3.0, "summary": "s",
            "compiled_memory": {"arguments": 10}}});
        let (_, scalars) = record_scalars(&profile).unwrap();
        assert_eq!(
            scalars,
            [
                ("profile/step_ms".to_string(), 3.0),
                ("profile/compiled_memory/arguments".to_string(), 10.0)
            ]
        );
        assert!(record_scalars(&json!({"loss": 1.0})).is_none());
    }
}
