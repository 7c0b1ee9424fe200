//! Twin-experiment statistics, as defined by DAPPER: per observation time,
//! rmse = sqrt(mean_i (x̄_i − x_i)²) and spread = sqrt(mean_i var_i) (var
//! with N − 1); the summary is the time mean over cycles after burn-in.

use crate::pool::{threads_for, Pool};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// Per-cycle statistics of one method.
#[derive(Clone, Debug, Default)]
pub struct CycleStats {
    pub rmse_f: Vec<f64>,
    pub spread_f: Vec<f64>,
    pub rmse_a: Vec<f64>,
    pub spread_a: Vec<f64>,
}

/// Time means after burn-in.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub rmse_a: f64,
    pub spread_a: f64,
    pub rmse_f: f64,
    pub spread_f: f64,
    /// Cycles averaged (after burn-in).
    pub cycles_averaged: usize,
}

pub fn rmse(estimate: &DVector<f64>, truth: &DVector<f64>) -> f64 {
    ((estimate - truth).norm_squared() / truth.len() as f64).sqrt()
}

/// Each state variable's ensemble variance (N − 1 normalisation; 0 for one
/// member) about the mean `mu`, without forming the anomalies E − μ1ᵀ (no
/// state × members copy). A row's variance depends on that row alone,
/// each (e − μ)² summed over the members in order, so ranks holding
/// different rows compute the bits one process computes.
pub fn variances_about(e: &DMatrix<f64>, mu: &DVector<f64>) -> DVector<f64> {
    variances_about_on(e, mu, &mut Pool::default(), 1)
}

/// [`variances_about`] with the rows split over up to `threads` threads of
/// `pool` ([`threads_for`]): the same bits.
pub fn variances_about_on(e: &DMatrix<f64>, mu: &DVector<f64>, pool: &mut Pool, threads: usize) -> DVector<f64> {
    let (m, n) = e.shape();
    let mut var = DVector::zeros(m);
    // No rows (an MPI rank without local domains): nothing to sum, and
    // `chunks_exact` below needs a non-zero length.
    if n < 2 || m == 0 {
        return var;
    }
    let denominator = (n - 1) as f64;
    pool.split_mut(threads_for(m * n, threads), var.as_mut_slice(), 1, &|first, part| {
        let rows = first..first + part.len();
        // Contiguous slices, not nalgebra's strided column iterators: this
        // loop vectorises (the same operations in the same order).
        for member in e.as_slice().chunks_exact(m) {
            for ((v, x), mu) in part.iter_mut().zip(&member[rows.clone()]).zip(&mu.as_slice()[rows.clone()]) {
                let a = x - mu;
                *v += a * a;
            }
        }
        part.iter_mut().for_each(|v| *v /= denominator);
    });
    var
}

/// The ensemble mean ([`crate::linalg::mean_on`]) and the variances about
/// it ([`variances_about_on`]) in one pass over the ensemble, the same
/// bits as those two: rows in blocks small enough to stay in cache, each
/// block's mean summed over the members, then its squared anomalies. Two
/// separate passes read a large ensemble from memory twice, and memory is
/// what bounds them on threads (Lorenz-96-40,000 × 20: 6.4 MB a pass).
pub fn moments_on(e: &DMatrix<f64>, pool: &mut Pool, threads: usize) -> (DVector<f64>, DVector<f64>) {
    /// Rows per block: 256 rows of 25 members are 50 KiB.
    const BLOCK: usize = 256;
    let (m, n) = e.shape();
    if m == 0 {
        return (DVector::zeros(0), DVector::zeros(0));
    }
    let (d, denominator) = (1.0 / n as f64, (n.max(2) - 1) as f64);
    // Row i's (mean, variance), together: one buffer to split by rows.
    let mut both = vec![[0.0f64; 2]; m];
    pool.split_mut(threads_for(m * n, threads), &mut both, 1, &|first, part| {
        for (b, block) in part.chunks_mut(BLOCK).enumerate() {
            let rows = first + b * BLOCK..first + b * BLOCK + block.len();
            for member in e.as_slice().chunks_exact(m) {
                for (o, &x) in block.iter_mut().zip(&member[rows.clone()]) {
                    o[0] += d * x;
                }
            }
            if n < 2 {
                continue;
            }
            for member in e.as_slice().chunks_exact(m) {
                for (o, &x) in block.iter_mut().zip(&member[rows.clone()]) {
                    let a = x - o[0];
                    o[1] += a * a;
                }
            }
            block.iter_mut().for_each(|o| o[1] /= denominator);
        }
    });
    (DVector::from_iterator(m, both.iter().map(|o| o[0])), DVector::from_iterator(m, both.iter().map(|o| o[1])))
}

/// sqrt of the mean of per-variable variances ([`variances_about`]).
pub fn spread_of(variances: &DVector<f64>) -> f64 {
    (variances.iter().sum::<f64>() / variances.len() as f64).sqrt()
}

/// sqrt of the mean of a covariance matrix's diagonal.
pub fn covariance_spread(cov: &DMatrix<f64>) -> f64 {
    (cov.diagonal().mean()).sqrt()
}

impl CycleStats {
    pub fn with_capacity(cycles: usize) -> Self {
        let v = || Vec::with_capacity(cycles);
        CycleStats { rmse_f: v(), spread_f: v(), rmse_a: v(), spread_a: v() }
    }

    pub fn push_forecast(&mut self, rmse: f64, spread: f64) {
        self.rmse_f.push(rmse);
        self.spread_f.push(spread);
    }

    pub fn push_analysis(&mut self, rmse: f64, spread: f64) {
        self.rmse_a.push(rmse);
        self.spread_a.push(spread);
    }

    /// Time means over the cycles whose time is after `burn_in`.
    pub fn summarize(&self, times: &[f64], burn_in: f64) -> Summary {
        let kept: Vec<usize> = (0..self.rmse_a.len()).filter(|&k| times[k] > burn_in).collect();
        // No cycle after burn-in: NaN (shown as NaN, null in JSON), never a
        // misleading 0.
        let mean = |v: &[f64]| kept.iter().map(|&k| v[k]).sum::<f64>() / kept.len() as f64;
        Summary {
            rmse_a: mean(&self.rmse_a),
            spread_a: mean(&self.spread_a),
            rmse_f: mean(&self.rmse_f),
            spread_f: mean(&self.spread_f),
            cycles_averaged: kept.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::variances_about;
    use nalgebra::{DMatrix, DVector};

    #[test]
    fn variances_of_no_rows_or_one_member_are_empty_or_zero() {
        // A rank that holds no state rows still takes its statistics.
        assert_eq!(variances_about(&DMatrix::zeros(0, 5), &DVector::zeros(0)).len(), 0);
        assert_eq!(variances_about(&DMatrix::from_element(3, 1, 2.0), &DVector::from_element(3, 2.0)), DVector::zeros(3));
        let e = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 0.0, 0.0, 6.0]);
        assert_eq!(variances_about(&e, &DVector::from_vec(vec![2.0, 2.0])), DVector::from_vec(vec![1.0, 12.0]));
    }
}
