//! Comparison rows for `vishwam verify`: error of one tensor against its reference.

use std::fmt::Write;

/// How one tensor compares with its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    /// What was compared, e.g. `grad layers.0.attn.wq`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// `max |got - want|`.
    pub max_abs: f64,
    /// `max_abs / max |want|`: the error relative to the reference's scale.
    pub max_rel: f64,
    /// The bound on `max_rel`.
    pub tol: f64,
    /// `max_rel <= tol`, every value finite, and the lengths match.
    pub pass: bool,
}

/// Compares `got` with `want` (both flattened `shape`). The relative error is taken against
/// the largest reference magnitude, so entries near zero do not blow it up. A NaN or
/// infinity on either side, or a length mismatch, never passes (its errors read infinite).
pub fn compare(name: &str, shape: &[usize], got: &[f32], want: &[f32], tol: f64) -> ComparisonRow {
    let expected_len: usize = shape.iter().product();
    let finite = got.iter().chain(want).all(|x| x.is_finite());
    let comparable = finite && got.len() == want.len() && got.len() == expected_len;
    let (max_abs, max_rel) = if !comparable {
        (f64::INFINITY, f64::INFINITY)
    } else {
        let max_abs = got
            .iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w as f64).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().map(|&w| (w as f64).abs()).fold(0.0, f64::max);
        let max_rel = if max_abs == 0.0 { 0.0 } else { max_abs / scale };
        (max_abs, max_rel)
    };
    ComparisonRow {
        name: name.to_string(),
        shape: shape.to_vec(),
        max_abs,
        max_rel,
        tol,
        pass: comparable && max_rel <= tol,
    }
}

/// The rows as an aligned text table with a header and a closing count of passing rows.
pub fn format_table(rows: &[ComparisonRow]) -> String {
    let shape = |r: &ComparisonRow| format!("{:?}", r.shape);
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6);
    let shape_width = rows
        .iter()
        .map(|r| shape(r).len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<shape_width$}  {:>10}  {:>10}  {:>8}  result",
        "tensor", "shape", "max abs", "max rel", "tol"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<shape_width$}  {:>10.3e}  {:>10.3e}  {:>8.1e}  {}",
            r.name,
            shape(r),
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
    let within = rows.iter().filter(|r| r.pass).count();
    let _ = writeln!(out, "{within} of {} tensors within tolerance", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_relative_to_the_reference_scale() {
        let row = compare(
            "x",
            &[2, 2],
            &[1.0, 2.0, 3.0, 4.0001],
            &[1.0, 2.0, 3.0, 4.0],
            1e-4,
        );
        assert!((row.max_abs - 1e-4).abs() < 1e-6);
        assert!((row.max_rel - 2.5e-5).abs() < 1e-6);
        assert!(row.pass);
        let row = compare("x", &[2], &[0.0, 2.0], &[0.0, 1.0], 1e-4);
        assert!(!row.pass);
        assert_eq!(row.max_rel, 1.0);
        assert!(compare("exact", &[2], &[0.0, 0.0], &[0.0, 0.0], 0.0).pass);
    }

    #[test]
    fn nan_infinity_and_length_mismatch_never_pass() {
        for (got, want) in [
            (vec![f32::NAN, 1.0], vec![f32::NAN, 1.0]),
            (vec![f32::INFINITY, 1.0], vec![f32::INFINITY, 1.0]),
            (vec![1.0, 1.0], vec![f32::NAN, 1.0]),
            (vec![1.0], vec![1.0, 1.0]),
        ] {
            let row = compare("bad", &[2], &got, &want, f64::INFINITY);
            assert!(!row.pass, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn table_lists_every_row_and_the_count() {
        let rows = [
            compare("logits", &[2, 3], &[1.0; 6], &[1.0; 6], 1e-5),
            compare("loss", &[], &[2.0], &[1.0], 1e-5),
        ];
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("logits") && lines[1].ends_with("pass"));
        assert!(lines[2].starts_with("loss") && lines[2].ends_with("FAIL"));
        assert_eq!(lines[3], "1 of 2 tensors within tolerance");
    }
}
