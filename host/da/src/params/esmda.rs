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
//! uses the push-through identity Wᵀ(WWᵀ + I)^{-1} = (I + WᵀW)^{-1}Wᵀ to
//! solve one Cholesky system in observation space or in ensemble space,
//! whichever is smaller.
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
        // Gain Wᵀ(WWᵀ + I)⁻¹ = (I + WᵀW)⁻¹Wᵀ: solve in whichever space is smaller.
        let solve = |g: DMatrix<f64>, rhs: DMatrix<f64>| match g.cholesky() {
            Some(chol) => Ok(chol.solve(&rhs)),
            None => bail!("ES-MDA iteration {}: the update's linear system is not positive definite", it + 1),
        };
        let update = if p <= members {
            let g = &w * w.transpose() + DMatrix::identity(p, p);
            w.transpose() * solve(g, e)?
        } else {
            let g = w.transpose() * &w + DMatrix::identity(members, members);
            solve(g, w.transpose() * e)?
        };
        theta += a * update;
        for mut col in theta.column_iter_mut() {
            problem.prior.clamp(col.as_mut_slice());
        }
    }
    Ok(theta)
}
