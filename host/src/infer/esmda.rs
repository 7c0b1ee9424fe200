//! The ensemble smoother with multiple data assimilation (ES-MDA; Emerick
//! & Reynolds 2013) over parameters: N_a smoother updates with the
//! observation error inflated by α_i = N_a (so Σ 1/α_i = 1), each with
//! perturbed observations.
//!
//! With parameter anomalies A = (Θ − θ̄1ᵀ)/√(N−1), predicted-data
//! anomalies B = (D − d̄1ᵀ)/√(N−1) and W = (αR)^{-1/2} B, the update
//!
//!   Θ ← Θ + C_θd (C_dd + αR)^{-1} (y + √α R^{1/2} Z − D)
//!
//! is computed in ensemble space through the push-through identity
//! Wᵀ(WWᵀ + I)^{-1} = (I + WᵀW)^{-1}Wᵀ: one N × N Cholesky solve.
//! Updated parameters are clamped to the prior's support.

use super::Problem;
use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rand::Rng;
use rand_distr::StandardNormal;

/// Run ES-MDA with `members` and `iterations` (N_a); returns the posterior
/// ensemble (`parameters × members`).
pub fn run(problem: &mut Problem<'_>, members: usize, iterations: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
    let d = problem.prior.dim();
    let mut theta = DMatrix::from_fn(d, members, |_, _| 0.0);
    for mut col in theta.column_iter_mut() {
        col.copy_from_slice(&problem.prior.sample(rng));
    }
    let alpha = iterations as f64;
    let sqrt_n1 = ((members - 1) as f64).sqrt();
    for it in 0..iterations {
        let pred = problem.predict(&theta)?;
        let p = pred.nrows();
        let center = |m: &DMatrix<f64>| {
            let mean = m.column_mean();
            let mut a = m.clone();
            for mut c in a.column_iter_mut() {
                c -= &mean;
            }
            a / sqrt_n1
        };
        let a = center(&theta);
        let mut w = center(&pred);
        // Scaled innovations Ẽ = (αR)^{-1/2} (y + √α R^{1/2} z − D).
        let mut e = DMatrix::zeros(p, members);
        for i in 0..p {
            let sd = problem.r[i].sqrt();
            let scale = 1.0 / (alpha.sqrt() * sd);
            for j in 0..members {
                let z: f64 = rng.sample(StandardNormal);
                e[(i, j)] = (problem.y[i] + alpha.sqrt() * sd * z - pred[(i, j)]) * scale;
                w[(i, j)] *= scale;
            }
        }
        let mut g = w.transpose() * &w;
        for k in 0..members {
            g[(k, k)] += 1.0;
        }
        let Some(chol) = g.cholesky() else { bail!("ES-MDA iteration {}: the ensemble-space system is not positive definite", it + 1) };
        theta += a * chol.solve(&(w.transpose() * e));
        for mut col in theta.column_iter_mut() {
            problem.prior.clamp(col.as_mut_slice());
        }
    }
    Ok(theta)
}
