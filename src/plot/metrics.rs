//! Reading a run's `metrics.jsonl` into the series the plot draws.
//!
//! The training loop (`src/train/run.rs`) writes one JSON object per line: a train record every
//! `logging.log_every` steps (`step`, `loss`, `lr`, `tokens_per_second`, `tokens`, ...), an
//! eval record (`step`, `val_loss`, `val_perplexity`) every `logging.eval_every` steps and at
//! the end, and other records (`profile`, ...) that the plot does not draw.

use super::PlotError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One train record: where the run was and what it measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainPoint {
    /// Optimizer step (1-based, as written).
    pub step: u64,
    /// Tokens that counted towards the loss up to and including this step (see
    /// [`RunMetrics::tokens_seen_at`]).
    pub tokens_seen: f64,
    /// Training loss of the step (NaN where the file holds `null`: a non-finite loss).
    pub loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// Training throughput of the step.
    pub tokens_per_second: f64,
    /// Tokens of this step that counted towards the loss.
    pub tokens: f64,
}

/// One eval record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    /// The step after which the model was evaluated.
    pub step: u64,
    /// Tokens seen by then (estimated as for the train records).
    pub tokens_seen: f64,
    /// Mean validation loss.
    pub val_loss: f64,
}

/// The series of one run, in step order.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    /// The name the legend shows (the run directory's name).
    pub name: String,
    /// The metrics file read.
    pub path: PathBuf,
    /// Train records, steps strictly increasing.
    pub train: Vec<TrainPoint>,
    /// Eval records, steps strictly increasing.
    pub eval: Vec<EvalPoint>,
}

impl RunMetrics {
    /// Reads `run`: a run directory (its `metrics.jsonl`) or a metrics file itself (for a run
    /// whose `logging.metrics_file` has another name). The legend name is the directory's name.
    pub fn read(run: &Path) -> Result<Self, PlotError> {
        let path = if run.is_dir() {
            run.join("metrics.jsonl")
        } else {
            run.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|source| PlotError::Read {
            path: path.clone(),
            source,
        })?;
        let name = super::legend_names(&[path.as_path()]).remove(0);
        Self::parse(&name, &path, &text)
    }

    /// Parses the text of a metrics file (`path` names it in errors).
    ///
    /// A run resumed from an earlier checkpoint appends records for steps the file already
    /// holds; the later records replace those (the earlier ones belong to a continuation
    /// that was abandoned). A `null` loss (a skipped step's non-finite loss) stays in the
    /// series as NaN and is left out of the curves. A line that is not a JSON object with an
    /// integer `step` is an error; so is a train or eval record whose fields are not numbers.
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Self, PlotError> {
        let mut run = RunMetrics {
            name: name.to_string(),
            path: path.to_path_buf(),
            train: Vec::new(),
            eval: Vec::new(),
        };
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = Location {
                path,
                line: index + 1,
            };
            let value: Value = serde_json::from_str(line).map_err(|e| at.bad(e.to_string()))?;
            let Value::Object(record) = value else {
                return Err(at.bad(format!("expected a JSON object, found `{}`", clip(line))));
            };
            let step = match record.get("step") {
                Some(v) => v.as_u64().ok_or_else(|| {
                    at.bad(format!("`step` is {v}, expected a non-negative integer"))
                })?,
                None => return Err(at.bad("the record has no `step`".into())),
            };
            if record.contains_key("loss") {
                let point = TrainPoint {
                    step,
                    tokens_seen: 0.0,
                    loss: number(&record, "loss", &at, true)?,
                    lr: number(&record, "lr", &at, false)?,
                    tokens_per_second: number(&record, "tokens_per_second", &at, false)?,
                    tokens: number(&record, "tokens", &at, false)?,
                };
                drop_from(&mut run.train, step, |p| p.step);
                drop_from(&mut run.eval, step, |p| p.step);
                run.train.push(point);
            } else if record.contains_key("val_loss") {
                let val_loss = number(&record, "val_loss", &at, true)?;
                drop_from(&mut run.eval, step, |p| p.step);
                run.eval.push(EvalPoint {
                    step,
                    tokens_seen: 0.0,
                    val_loss,
                });
            }
        }
        if run.train.iter().all(|p| !p.loss.is_finite()) {
            return Err(PlotError::NoLoss {
                path: path.to_path_buf(),
            });
        }
        let (mut seen, mut previous) = (0.0, 0);
        for p in &mut run.train {
            seen += p.tokens * (p.step - previous) as f64;
            (p.tokens_seen, previous) = (seen, p.step);
        }
        let seen: Vec<f64> = run
            .eval
            .iter()
            .map(|p| run.tokens_seen_at(p.step))
            .collect();
        for (p, seen) in run.eval.iter_mut().zip(seen) {
            p.tokens_seen = seen;
        }
        Ok(run)
    }

    /// Tokens that counted towards the loss in steps `1..=step` (the train records'
    /// `tokens_seen`, filled in by [`RunMetrics::parse`], in between). Train records are written
    /// every `logging.log_every` steps, so each record's `tokens` stands for every step since
    /// the record before it (exact when every step counts the same tokens, as with packed
    /// windows; an estimate where padding or masks vary from step to step). Steps past the
    /// last record count that record's tokens.
    pub fn tokens_seen_at(&self, step: u64) -> f64 {
        let next = self.train.partition_point(|p| p.step < step);
        let (seen, previous) = match next.checked_sub(1).map(|i| &self.train[i]) {
            Some(p) => (p.tokens_seen, p.step),
            None => (0.0, 0),
        };
        let tokens = self
            .train
            .get(next)
            .or(self.train.last())
            .map_or(0.0, |p| p.tokens);
        seen + tokens * step.saturating_sub(previous) as f64
    }
}

/// Drops the records of `step` and later: a resumed run's records replace them. Checks the
/// last record first, so that reading a file in step order stays linear.
fn drop_from<T>(records: &mut Vec<T>, step: u64, step_of: fn(&T) -> u64) {
    if records.last().is_some_and(|r| step_of(r) >= step) {
        records.retain(|r| step_of(r) < step);
    }
}

/// The line of a metrics file a problem was found on.
struct Location<'a> {
    path: &'a Path,
    line: usize,
}

impl Location<'_> {
    fn bad(&self, detail: String) -> PlotError {
        PlotError::BadRecord {
            path: self.path.to_path_buf(),
            line: self.line,
            detail,
        }
    }
}

/// The number under `key`; `null` reads as NaN where `nullable` (serde_json writes a
/// non-finite float as `null`).
fn number(
    record: &Map<String, Value>,
    key: &str,
    at: &Location,
    nullable: bool,
) -> Result<f64, PlotError> {
    match record.get(key) {
        Some(Value::Null) if nullable => Ok(f64::NAN),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| at.bad(format!("`{key}` is {v}, expected a number"))),
        None => Err(at.bad(format!("the record has `loss` but no `{key}`"))),
    }
}

/// The start of a long line, for an error message.
fn clip(line: &str) -> String {
    match line.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunMetrics, PlotError> {
        RunMetrics::parse("run", Path::new("run/metrics.jsonl"), text)
    }

    fn train(step: u64, loss: f64, tokens: f64) -> String {
        format!(
            r#"{{"step":{step},"loss":{loss},"lr":0.001,"tokens_per_second":100.0,"tokens":{tokens}}}"#
        )
    }

    #[test]
    fn each_record_counts_the_tokens_of_the_steps_since_the_one_before() {
        // log_every 10: records at 10, 20 and 25 (the last step), 64 tokens a step.
        let text = [
            train(10, 5.0, 64.0),
            r#"{"step":10,"val_loss":4.5,"val_perplexity":90.0}"#.into(),
            r#"{"step":10,"profile":{"summary":"x"}}"#.into(),
            train(20, 4.0, 64.0),
            train(25, 3.0, 64.0),
            r#"{"step":25,"val_loss":3.5,"val_perplexity":33.0}"#.into(),
        ]
        .join("\n");
        let run = parse(&text).unwrap();
        let seen: Vec<f64> = run.train.iter().map(|p| p.tokens_seen).collect();
        assert_eq!(seen, [640.0, 1280.0, 1600.0]);
        let eval: Vec<(u64, f64, f64)> = run
            .eval
            .iter()
            .map(|p| (p.step, p.tokens_seen, p.val_loss))
            .collect();
        assert_eq!(eval, [(10, 640.0, 4.5), (25, 1600.0, 3.5)]);
        assert_eq!(run.tokens_seen_at(15), 640.0 + 5.0 * 64.0);
        assert_eq!(run.tokens_seen_at(30), 1600.0 + 5.0 * 64.0);
    }

    #[test]
    fn records_appended_by_a_resume_replace_those_of_the_same_and_later_steps() {
        // Trained to step 4 (eval at 2 and 4), resumed from the step-2 checkpoint.
        let text = [
            train(1, 9.0, 8.0),
            train(2, 8.0, 8.0),
            r#"{"step":2,"val_loss":8.5}"#.into(),
            train(3, 7.0, 8.0),
            train(4, 6.0, 8.0),
            r#"{"step":4,"val_loss":6.5}"#.into(),
            train(3, 7.5, 8.0),
            train(4, 6.5, 8.0),
            r#"{"step":4,"val_loss":7.0}"#.into(),
        ]
        .join("\n");
        let run = parse(&text).unwrap();
        let train: Vec<(u64, f64)> = run.train.iter().map(|p| (p.step, p.loss)).collect();
        assert_eq!(train, [(1, 9.0), (2, 8.0), (3, 7.5), (4, 6.5)]);
        let eval: Vec<(u64, f64)> = run.eval.iter().map(|p| (p.step, p.val_loss)).collect();
        assert_eq!(eval, [(2, 8.5), (4, 7.0)]);
    }

    #[test]
    fn a_null_loss_is_kept_as_nan_but_a_file_without_a_finite_loss_is_refused() {
        let null = r#"{"step":1,"loss":null,"lr":0.1,"tokens_per_second":1.0,"tokens":8.0}"#;
        let run = parse(&format!("{null}\n{}", train(2, 3.0, 8.0))).unwrap();
        assert!(run.train[0].loss.is_nan());
        let err = parse(null).unwrap_err().to_string();
        assert!(
            err.contains("run/metrics.jsonl") && err.contains("no training loss"),
            "{err}"
        );
        let err = parse(r#"{"step":1,"profile":{}}"#).unwrap_err().to_string();
        assert!(err.contains("no training loss"), "{err}");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_problem() {
        let cases = [
            ("{\"step\":1,\"loss\":", "line 2", "EOF"),
            ("[1, 2]", "line 2", "expected a JSON object"),
            (r#"{"loss":1.0}"#, "line 2", "no `step`"),
            (r#"{"step":-1,"val_loss":1.0}"#, "line 2", "`step` is -1"),
            (
                r#"{"step":2,"loss":1.0,"lr":"x","tokens_per_second":1,"tokens":1}"#,
                "line 2",
                "`lr` is \"x\", expected a number",
            ),
            (
                r#"{"step":2,"loss":1.0,"lr":0.1}"#,
                "line 2",
                "no `tokens_per_second`",
            ),
            (r#"{"step":2,"val_loss":null}"#, "", ""),
        ];
        for (bad, line, detail) in cases {
            let text = format!("{}\n{bad}\n", train(1, 2.0, 8.0));
            match parse(&text) {
                Ok(run) => assert!(line.is_empty() && run.eval[0].val_loss.is_nan()),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("run/metrics.jsonl") && e.contains(line) && e.contains(detail),
                        "{bad}: {e}"
                    );
                }
            }
        }
    }
}
