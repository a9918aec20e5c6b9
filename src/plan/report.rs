//! A plan's result: the config to train and the table of choices with their reasons.

use crate::config::Config;

/// One line of the plan's table.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    /// What was chosen.
    pub item: String,
    /// The choice.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// A planned run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config to train with (`vishwam train --config plan.json` runs it unchanged).
    pub config: Config,
    /// The choices and their reasons.
    pub rows: Vec<PlanRow>,
    /// Compiled bytes per device of the planned step.
    pub step_bytes: i64,
    /// Bytes usable per device after the reserve.
    pub usable_bytes: i64,
    /// Estimated seconds per optimizer step.
    pub step_seconds: f64,
    /// Estimated seconds of the training steps.
    pub train_seconds: f64,
    /// Steps compiled while planning.
    pub compiles: usize,
}

impl Plan {
    /// The table: one row per choice with its reason.
    pub fn table(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.item.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.value.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = format!("{:<w0$}  {:<w1$}  reason\n", "item", "choice");
        out.push_str(&format!(
            "{}  {}  {}\n",
            "-".repeat(w0),
            "-".repeat(w1),
            "-".repeat(6)
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {}\n",
                r.item, r.value, r.reason
            ));
        }
        out
    }
}
