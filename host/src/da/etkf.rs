//! The ensemble transform Kalman filter (ETKF, "Sqrt" in DAPPER): a
//! deterministic square-root update in the N-dimensional ensemble space.
//!
//! With anomalies A (`m × N`), whitened observation anomalies
//! S = R^{-1/2} (Eo − ȳ) (`p × N`) and whitened innovation
//! δ = R^{-1/2} (y − ȳ):
//!
//!   (N−1) I + Sᵀ S = V diag(d) Vᵀ
//!   Pw = V diag(1/d) Vᵀ,      T = V diag(1/√d) Vᵀ · √(N−1)
//!   w  = Pw Sᵀ δ
//!   x̄ₐ = x̄ + A w,             Aₐ = A T

use super::ensemble::Analysis;
use super::linalg::center;
use anyhow::Result;
use nalgebra::{DMatrix, DVector, SymmetricEigen};

pub struct Etkf;

/// The ETKF mean weights w and transform T for whitened anomalies `s`
/// (`p × N`) and whitened innovation `dy`. Shared with the LETKF, which
/// calls it once per local domain.
pub fn transform(s: &DMatrix<f64>, dy: &DVector<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let n = s.ncols();
    let n1 = (n - 1) as f64;
    // Explicit transpose + GEMM: nalgebra's `tr_mul` is a dot-product loop,
    // several times slower at these sizes.
    let st = s.transpose();
    let mut g = &st * s;
    for i in 0..n {
        g[(i, i)] += n1;
    }
    let SymmetricEigen { eigenvalues: d, eigenvectors: v } = SymmetricEigen::new(g);
    // T = V diag(√(N−1)/√d) Vᵀ
    let mut vd = v.clone();
    for (j, mut col) in vd.column_iter_mut().enumerate() {
        col *= n1.sqrt() / d[j].sqrt();
    }
    let t = vd * v.transpose();
    // w = Pw Sᵀδ = V diag(1/d) Vᵀ Sᵀδ, as matrix–vector products.
    let mut c = v.tr_mul(&(st * dy));
    c.component_div_assign(&d);
    (v * c, t)
}

/// Whitened observation anomalies and innovation: R^{-1/2}(Eo − ȳ),
/// R^{-1/2}(y − ȳ).
pub fn whiten(eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>) -> (DMatrix<f64>, DVector<f64>) {
    let (ybar, mut s) = center(eo);
    let mut dy = y - ybar;
    for j in 0..r.len() {
        let inv_sd = 1.0 / r[j].sqrt();
        s.row_mut(j).scale_mut(inv_sd);
        dy[j] *= inv_sd;
    }
    (s, dy)
}

impl Analysis for Etkf {
    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, _rng: &mut dyn rand::RngCore) -> Result<()> {
        let (mu, a) = center(e);
        let (s, dy) = whiten(eo, y, r);
        let (w, t) = transform(&s, &dy);
        let mu_a = mu + &a * w;
        *e = super::linalg::add_mean(&mu_a, a * t);
        Ok(())
    }
}
