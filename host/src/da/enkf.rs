//! The stochastic ("perturbed observations", PertObs) EnKF of Burgers et
//! al. (1998), as in DAPPER:
//!
//!   D = (centred N(0, I) draws) · R^{1/2}        (`p × N`)
//!   C = Y Yᵀ + (N−1) R,     K = A Yᵀ C⁻¹
//!   Eₐ = E + K (y 1ᵀ + D − Eo)
//!
//! with A, Y the state and observed anomalies.

use super::ensemble::Analysis;
use super::linalg::{center, randn};
use anyhow::Result;
use nalgebra::{DMatrix, DVector};

pub struct PertObs;

impl Analysis for PertObs {
    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, rng: &mut dyn rand::RngCore) -> Result<()> {
        let n = e.ncols();
        let p = y.len();
        let (_, a) = center(e);
        let (_, yanom) = center(eo);
        let (_, mut d) = center(&randn(p, n, rng));
        for j in 0..p {
            d.row_mut(j).scale_mut(r[j].sqrt());
        }
        let mut c = &yanom * yanom.transpose();
        for j in 0..p {
            c[(j, j)] += (n - 1) as f64 * r[j];
        }
        let mut innovations = d - eo;
        for mut col in innovations.column_iter_mut() {
            col += y;
        }
        let chol = c.cholesky().ok_or_else(|| anyhow::anyhow!("EnKF: Y Yᵀ + (N−1)R is not positive definite"))?;
        // K = A Yᵀ C⁻¹ (m × p) first: cheaper than forming an N × N weight
        // matrix whenever N exceeds p.
        let k = chol.solve(&(yanom * a.transpose())).transpose();
        *e += k * innovations;
        Ok(())
    }
}
