//! The classical matched filter for a gas enhancement (Thompson et al.
//! 2015; Foote et al. 2020 without mag1c's sparsity and albedo terms):
//! with background mean μ and covariance C of the radiance x over a set of
//! pixels, and the target signature t = k ⊙ μ (k the unit absorption
//! spectrum, d ln L/dΔX per ppm·m, on the sensor's bands),
//!
//!   α(x) = (x − μ)ᵀ C⁻¹ t / (tᵀ C⁻¹ t)      [ppm·m]
//!
//! C is shrunk towards its diagonal, C = (1 − λ) S + λ diag(S), so it is
//! invertible with fewer pixels than bands. μ and C are estimated from
//! every pixel of the group, plume pixels included: the filter's known
//! low bias on strong plumes comes from there, and its albedo bias from
//! using the group's mean radiance in t (a bright pixel reads high). Both
//! are left in, so the metrics show them.

use anyhow::{bail, Result};
use nalgebra::{DMatrix, DVector};

/// Which pixels share one background estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grouping {
    /// Every pixel of the scene.
    Scene,
    /// Each detector column (pixel index mod `nx`) of a push-broom
    /// scene of `nx` columns.
    Column { nx: usize },
}

/// The matched filter's estimate α for every pixel: `radiance` is
/// `bands × pixels`, `unit_absorption` has one value per band (per ppm·m,
/// negative where methane absorbs). Fails on a shape mismatch, non-finite
/// input, a zero target, a group of fewer than two pixels or a shrinkage
/// outside [0, 1].
pub fn matched_filter(radiance: &DMatrix<f64>, unit_absorption: &[f64], grouping: Grouping, shrinkage: f64) -> Result<Vec<f64>> {
    let (bands, pixels) = radiance.shape();
    if unit_absorption.len() != bands {
        bail!("matched filter: the unit absorption spectrum has {} values, the radiance {bands} bands", unit_absorption.len());
    }
    if !(0.0..=1.0).contains(&shrinkage) {
        bail!("matched filter: `shrinkage` must be within 0 and 1, got {shrinkage}");
    }
    if radiance.iter().chain(unit_absorption).any(|v| !v.is_finite()) {
        bail!("matched filter: the radiance or the unit absorption spectrum has non-finite values");
    }
    if unit_absorption.iter().all(|&k| k == 0.0) {
        bail!("matched filter: the unit absorption spectrum is zero on every band (no methane band in range?)");
    }
    let groups: Vec<Vec<usize>> = match grouping {
        Grouping::Scene => vec![(0..pixels).collect()],
        Grouping::Column { nx } => {
            if nx == 0 || pixels % nx != 0 {
                bail!("matched filter: {pixels} pixels do not form columns of {nx}");
            }
            (0..nx).map(|c| (c..pixels).step_by(nx).collect()).collect()
        }
    };
    let k = DVector::from_column_slice(unit_absorption);
    let mut alpha = vec![0.0; pixels];
    for group in groups {
        let n = group.len();
        if n < 2 {
            bail!("matched filter: a background group has {n} pixel(s); it needs at least two");
        }
        let x = radiance.select_columns(&group);
        let mu = x.column_mean();
        let mut anomalies = x;
        for mut col in anomalies.column_iter_mut() {
            col -= &mu;
        }
        let s = &anomalies * anomalies.transpose() / (n - 1) as f64;
        let mut c = s.scale(1.0 - shrinkage);
        for b in 0..bands {
            c[(b, b)] += shrinkage * s[(b, b)];
        }
        let t = k.component_mul(&mu);
        let Some(chol) = c.cholesky() else {
            bail!("matched filter: the background covariance of {n} pixels is singular (constant bands?); raise `shrinkage`");
        };
        let ct = chol.solve(&t);
        let norm = t.dot(&ct);
        for (a, &p) in anomalies.column_iter().zip(&group) {
            alpha[p] = a.dot(&ct) / norm;
        }
    }
    Ok(alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    /// Linear-Gaussian case: x = μ + L z + α t. The filter is the BLUE of α
    /// given the background's (known) covariance; with C estimated from
    /// many plume-free pixels it recovers α without bias, and its spread
    /// is 1/√(tᵀC⁻¹t).
    #[test]
    fn recovers_an_injected_enhancement_with_the_predicted_spread() {
        let (bands, pixels) = (12, 20_000);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mu = DVector::from_fn(bands, |b, _| 1.0 + 0.1 * b as f64);
        let l = DMatrix::from_fn(bands, bands, |i, j| if j <= i { 0.02 * (1.0 + ((i * 7 + j) % 5) as f64) } else { 0.0 });
        let k: Vec<f64> = (0..bands).map(|b| -1e-5 * ((b % 4) as f64 + 0.5)).collect();
        let t = DVector::from_column_slice(&k).component_mul(&mu);
        let truth: Vec<f64> = (0..pixels).map(|p| if p % 10 == 0 { 800.0 } else { 0.0 }).collect();
        let x = DMatrix::from_fn(bands, pixels, |_, _| rng.sample::<f64, _>(StandardNormal));
        let x = DMatrix::from_columns(&(0..pixels).map(|p| &mu + &l * x.column(p) + &t * truth[p]).collect::<Vec<_>>());
        let alpha = matched_filter(&x, &k, Grouping::Scene, 0.0).unwrap();
        let c = &l * l.transpose();
        let sd = 1.0 / t.dot(&c.cholesky().unwrap().solve(&t)).sqrt();
        let background: Vec<f64> = (0..pixels).filter(|p| p % 10 != 0).map(|p| alpha[p]).collect();
        let plume: Vec<f64> = (0..pixels).filter(|p| p % 10 == 0).map(|p| alpha[p] - 800.0).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let spread = (background.iter().map(|a| (a - mean(&background)).powi(2)).sum::<f64>() / background.len() as f64).sqrt();
        // The plume pixels sit in the background statistics: μ moves by a
        // tenth of the signal, so the filter reads a tenth low on the
        // plume (the known bias) and as much below zero off it. (C grows
        // along t too, which scales numerator and denominator alike.)
        assert!((mean(&plume) + 80.0).abs() < 3.0, "plume bias {}", mean(&plume));
        assert!((mean(&background) + 80.0).abs() < 1.0, "background bias {}", mean(&background));
        assert!((spread / sd - 1.0).abs() < 0.1, "background spread {spread} against 1/√(tᵀC⁻¹t) = {sd}");
        // Without plume pixels in the statistics there is no bias.
        let clean: Vec<usize> = (0..pixels).filter(|p| p % 10 != 0).collect();
        let x_clean = x.select_columns(&clean);
        let alpha = matched_filter(&x_clean, &k, Grouping::Scene, 0.0).unwrap();
        assert!(mean(&alpha).abs() < 1e-9 * sd);
    }

    #[test]
    fn per_column_groups_and_refusals() {
        let x = DMatrix::from_fn(3, 8, |b, p| 1.0 + 0.01 * ((b * 3 + p * 5) % 7) as f64 + 0.001 * p as f64);
        let k = [-1e-5, -2e-5, 0.0];
        let by_column = matched_filter(&x, &k, Grouping::Column { nx: 2 }, 0.1).unwrap();
        let even: Vec<usize> = (0..8).step_by(2).collect();
        let alone = matched_filter(&x.select_columns(&even), &k, Grouping::Scene, 0.1).unwrap();
        for (i, p) in even.iter().enumerate() {
            assert!((by_column[*p] - alone[i]).abs() < 1e-9);
        }
        for (result, expected) in [
            (matched_filter(&x, &k[..2], Grouping::Scene, 0.1), "has 2 values"),
            (matched_filter(&x, &k, Grouping::Column { nx: 3 }, 0.1), "do not form columns"),
            (matched_filter(&x, &k, Grouping::Column { nx: 8 }, 0.1), "at least two"),
            (matched_filter(&x, &k, Grouping::Scene, 1.5), "`shrinkage`"),
            (matched_filter(&x, &[0.0; 3], Grouping::Scene, 0.1), "zero on every band"),
        ] {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
