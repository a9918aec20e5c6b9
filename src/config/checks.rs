//! A collector of validation problems with one helper per common rule.

use std::fmt::Display;

use super::error::ConfigIssue;

/// Collects [`ConfigIssue`]s while the sections check their values.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// Every problem found so far, in the order found.
    pub issues: Vec<ConfigIssue>,
}

impl Checks {
    /// Records that `key` = `got` breaks the rule `expected` (phrased to follow "must be").
    pub fn fail(&mut self, key: &str, expected: impl Into<String>, got: impl Display) {
        self.issues.push(ConfigIssue::Invalid {
            key: key.to_string(),
            expected: expected.into(),
            got: got.to_string(),
        });
    }

    /// Records a failure unless `ok`.
    pub fn ensure(&mut self, ok: bool, key: &str, expected: impl Into<String>, got: impl Display) {
        if !ok {
            self.fail(key, expected, got);
        }
    }

    /// `value` must be at least 1.
    pub fn positive(&mut self, key: &str, value: usize) {
        self.ensure(value >= 1, key, "a positive integer", value);
    }

    /// `value` must be a finite number > 0.
    pub fn positive_number(&mut self, key: &str, value: f64) {
        self.ensure(value.is_finite() && value > 0.0, key, "a number > 0", value);
    }

    /// `value` must be a finite number >= 0.
    pub fn non_negative_number(&mut self, key: &str, value: f64) {
        self.ensure(
            value.is_finite() && value >= 0.0,
            key,
            "a number >= 0",
            value,
        );
    }

    /// `value` must lie in the half-open interval `[low, high)`.
    pub fn in_half_open(&mut self, key: &str, value: f64, low: f64, high: f64) {
        self.ensure(
            value >= low && value < high,
            key,
            format!("in [{low}, {high})"),
            value,
        );
    }

    /// `value` must lie in the closed interval `[low, high]`.
    pub fn in_closed(&mut self, key: &str, value: f64, low: f64, high: f64) {
        self.ensure(
            value >= low && value <= high,
            key,
            format!("in [{low}, {high}]"),
            value,
        );
    }

    /// A string that must not be empty.
    pub fn non_empty(&mut self, key: &str, value: &str) {
        self.ensure(
            !value.trim().is_empty(),
            key,
            "a non-empty string",
            format!("{value:?}"),
        );
    }

    /// Two keys whose values cannot hold together.
    pub fn conflict(
        &mut self,
        key: &str,
        value: impl Display,
        other: &str,
        other_value: impl Display,
        rule: impl Into<String>,
    ) {
        self.issues.push(ConfigIssue::Conflict {
            key: key.to_string(),
            value: value.to_string(),
            other: other.to_string(),
            other_value: other_value.to_string(),
            rule: rule.into(),
        });
    }
}
