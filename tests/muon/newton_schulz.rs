//! The traced Newton-Schulz: against the Candle reference, against the quintic on known
//! singular values, and in bf16 and f16.

use super::*;

/// f32 NS on XLA and in Candle compute the same maths with different summation orders; five
/// iterations amplify a rounding difference by at most |p'(s)| <= 3.45 per iteration on the
/// smallest singular values (3.45^5 ~ 490 x f32's 6e-8 ~ 3e-5), so 1e-4 of the largest entry
/// bounds it with margin on any machine.
#[test]
fn traced_newton_schulz_matches_the_candle_reference_in_f32() {
    let mut r = rng(19);
    for shape in [
        vec![48i64, 20],
        vec![20, 48],
        vec![32, 32],
        vec![3, 24, 40],
        vec![2, 40, 24],
    ] {
        let n = shape.iter().product::<i64>() as usize;
        let data = uniform(n, &mut r);
        let got = traced_ns(&shape, &data, 5, DType::F32);
        let want = flat(&reference::newton_schulz(&candle(&shape, &data), 5).unwrap());
        let err = relative_error(&got, &want);
        eprintln!("{shape:?}: XLA vs Candle NS, relative error {err:.2e}");
        assert!(err < 1e-4, "{shape:?}: relative error {err}");
    }
}

/// Orthonormal columns `[n, k]` (row-major) by Gram-Schmidt on Gaussian-ish draws, in f64.
fn orthonormal(n: usize, k: usize, r: &mut impl Rng) -> Vec<f64> {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < k {
        let mut v: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-3 {
            cols.push(v.iter().map(|a| a / norm).collect());
        }
    }
    (0..n * k).map(|i| cols[i % k][i / k]).collect()
}

/// The quintic applied `steps` times to one singular value.
fn quintic(mut s: f64, steps: usize) -> f64 {
    let [a, b, c] = NS_COEFFICIENTS;
    for _ in 0..steps {
        s = a * s + b * s.powi(3) + c * s.powi(5);
    }
    s
}

/// A matrix `[rows, cols]` with known singular vectors `u` `[rows, k]`, `v` `[cols, k]` and
/// singular values spread evenly over [0.05, 1].
struct KnownSpectrum {
    rows: usize,
    cols: usize,
    u: Vec<f64>,
    v: Vec<f64>,
    s: Vec<f64>,
}

impl KnownSpectrum {
    fn new(rows: usize, cols: usize, r: &mut impl Rng) -> KnownSpectrum {
        let k = rows.min(cols);
        KnownSpectrum {
            rows,
            cols,
            u: orthonormal(rows, k, r),
            v: orthonormal(cols, k, r),
            s: (0..k)
                .map(|i| 0.05 + 0.95 * i as f64 / (k - 1) as f64)
                .collect(),
        }
    }

    fn k(&self) -> usize {
        self.s.len()
    }

    /// U diag(sv) Vᵀ, row-major.
    fn compose(&self, sv: &[f64]) -> Vec<f64> {
        let (k, cols) = (self.k(), self.cols);
        let mut out = vec![0.0; self.rows * cols];
        for i in 0..self.rows {
            for j in 0..cols {
                out[i * cols + j] = (0..k)
                    .map(|c| self.u[i * k + c] * sv[c] * self.v[j * k + c])
                    .sum();
            }
        }
        out
    }

    /// G itself, as f32.
    fn matrix(&self) -> Vec<f32> {
        self.compose(&self.s).iter().map(|&x| x as f32).collect()
    }

    /// Uᵀ O V: the singular values of O on its diagonal when O keeps G's singular vectors.
    fn project(&self, o: &[f64]) -> Vec<Vec<f64>> {
        let (k, cols) = (self.k(), self.cols);
        (0..k)
            .map(|a| {
                (0..k)
                    .map(|b| {
                        (0..self.rows)
                            .flat_map(|i| (0..cols).map(move |j| (i, j)))
                            .map(|(i, j)| self.u[i * k + a] * o[i * cols + j] * self.v[j * k + b])
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}

/// NS keeps the singular vectors and maps each singular value s / ||G||_F by the quintic:
/// G = U diag(s) Vᵀ with s spread over [0.05, 1] must give U diag(p⁵(s / ||s||)) Vᵀ, and
/// those values lie in the band the coefficients give for inputs >= 0.01 of the norm:
/// [0.68, 1.135] (worked out on the host: p⁵ over [0.01, 1] spans 0.6818..1.1344).
#[test]
fn newton_schulz_maps_singular_values_by_the_quintic_into_its_band() {
    let mut r = rng(7);
    for (rows, cols) in [(40usize, 16usize), (16, 40), (24, 24)] {
        let known = KnownSpectrum::new(rows, cols, &mut r);
        let norm = known.s.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mapped: Vec<f64> = known.s.iter().map(|x| quintic(x / norm, 5)).collect();
        for &m in &mapped {
            assert!((0.68..=1.135).contains(&m), "{m}");
        }
        let got = traced_ns(&[rows as i64, cols as i64], &known.matrix(), 5, DType::F32);
        let err = relative_error(&got, &known.compose(&mapped));
        eprintln!("{rows}x{cols}: XLA NS vs U p5(s) Vt, relative error {err:.2e}");
        assert!(err < 1e-4, "{rows}x{cols}: relative error {err}");
        let projected = known.project(&got);
        for (c, row) in projected.iter().enumerate() {
            let sv = row[c];
            assert!(
                (0.679..=1.136).contains(&sv),
                "{rows}x{cols} singular value {sv}"
            );
        }
    }
}

/// bf16 and f16 iterations still orthogonalise: the result keeps G's singular vectors (the
/// off-diagonal of Uᵀ O V stays small) and its singular values stay in a band around 1.
/// Bounds: rounding each product to 8 (bf16) or 11 (f16) significant bits moves a singular
/// value by a few times 2^-8 = 0.004 (bf16) or 2^-11 (f16) per iteration; the margins leave
/// room for that on any machine.
#[test]
fn half_precision_newton_schulz_still_orthogonalises() {
    let mut r = rng(11);
    let known = KnownSpectrum::new(24, 64, &mut r);
    for (dtype, margin) in [(DType::BF16, 0.1), (DType::F16, 0.02)] {
        let got = traced_ns(&[24, 64], &known.matrix(), 5, dtype);
        let projected = known.project(&got);
        let mut worst_off: f64 = 0.0;
        let (mut low, mut high) = (f64::MAX, f64::MIN);
        for (a, row) in projected.iter().enumerate() {
            for (b, &x) in row.iter().enumerate() {
                if a == b {
                    low = low.min(x);
                    high = high.max(x);
                } else {
                    worst_off = worst_off.max(x.abs());
                }
            }
        }
        eprintln!("{dtype:?}: singular values {low}..{high}, off-diagonal {worst_off}");
        assert!(
            low > 0.68 - margin && high < 1.135 + margin,
            "{dtype:?}: {low}..{high}"
        );
        assert!(worst_off < margin, "{dtype:?}: off-diagonal {worst_off}");
    }
}
