//! Calibration of an amortized posterior q(θ | x) on pairs (θ*, x*) drawn
//! from the prior predictive, where a calibrated posterior contains θ* in
//! its α credible region with probability α:
//!
//! - expected coverage of highest-density regions: θ* lies in q's α-HPD
//!   region iff the fraction of q's samples with a higher density than θ*
//!   is below α; the curve (α, empirical coverage) should be the diagonal;
//! - simulation-based calibration (Talts et al. 2018): the rank of θ*_i
//!   among q's samples of θ_i is uniform; summarised by the
//!   Kolmogorov–Smirnov distance of the normalised ranks from uniform;
//! - the posterior mean's error against θ*, in prior standard deviations.

use crate::refine::{Forward, Predictor};
use anyhow::Result;
use nalgebra::DMatrix;
use rand::Rng;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    pub pairs: usize,
    pub samples: usize,
    /// Credible levels and the fraction of θ* inside each HPD region.
    pub levels: Vec<f64>,
    pub coverage: Vec<f64>,
    /// max |coverage − level|.
    pub max_coverage_error: f64,
    /// KS distance of each parameter's normalised SBC ranks from uniform.
    pub sbc_ks: Vec<f64>,
    /// RMS of (posterior mean − θ*) / prior sd, per parameter.
    pub mean_error: Vec<f64>,
}

/// Check `predictor` on the pairs (`thetas`: `d × n`, `xs`: `p × n`) with
/// `samples` posterior draws each.
pub fn calibrate(
    predictor: &Predictor,
    forward: &mut Forward,
    thetas: &DMatrix<f64>,
    xs: &DMatrix<f64>,
    samples: usize,
    rng: &mut impl Rng,
) -> Result<Calibration> {
    let (d, n) = thetas.shape();
    let levels: Vec<f64> = (1..20).map(|i| i as f64 * 0.05).collect();
    let mut inside = vec![0usize; levels.len()];
    let mut ranks: Vec<Vec<f64>> = vec![Vec::with_capacity(n); d];
    let mut sq_err = vec![0.0; d];
    let prior_sd: Vec<f64> = thetas
        .row_iter()
        .map(|r| {
            let m = r.mean();
            (r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (r.len() as f64 - 1.0).max(1.0)).sqrt().max(1e-300)
        })
        .collect();
    for j in 0..n {
        let x: Vec<f64> = xs.column(j).iter().copied().collect();
        let q_x = predictor.condition(&x, forward)?;
        let q = q_x.sample(samples, rng)?;
        let truth = thetas.column(j).into_owned();
        let lp_q = q_x.log_prob(&q)?;
        let lp_true = q_x.log_prob(&DMatrix::from_column_slice(d, 1, truth.as_slice()))?[0];
        let higher = lp_q.iter().filter(|&&l| l > lp_true).count() as f64 / samples as f64;
        for (k, a) in levels.iter().enumerate() {
            if higher < *a {
                inside[k] += 1;
            }
        }
        for i in 0..d {
            let below = q.row(i).iter().filter(|&&v| v < truth[i]).count();
            ranks[i].push(below as f64 / samples as f64);
            sq_err[i] += ((q.row(i).mean() - truth[i]) / prior_sd[i]).powi(2);
        }
    }
    let coverage: Vec<f64> = inside.iter().map(|c| *c as f64 / n as f64).collect();
    let max_coverage_error = coverage.iter().zip(&levels).map(|(c, a)| (c - a).abs()).fold(0.0, f64::max);
    let sbc_ks = ranks
        .iter_mut()
        .map(|r| {
            r.sort_by(|a, b| a.total_cmp(b));
            let m = r.len() as f64;
            r.iter().enumerate().map(|(k, u)| ((k as f64 + 1.0) / m - u).abs().max((u - k as f64 / m).abs())).fold(0.0, f64::max)
        })
        .collect();
    let mean_error = sq_err.iter().map(|s| (s / n as f64).sqrt()).collect();
    Ok(Calibration { pairs: n, samples, levels, coverage, max_coverage_error, sbc_ks, mean_error })
}
