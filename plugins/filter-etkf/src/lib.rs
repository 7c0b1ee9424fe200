//! The ETKF ("Sqrt" in DAPPER) as a `filter` component: the reference
//! submission for the Lorenz-96 step-2 contract, and a template for
//! submitting a DA method written in Rust.
//!
//! With anomalies A (`m × N`), whitened observation anomalies
//! S = R^{-1/2} (Eo − ȳ) and whitened innovation δ = R^{-1/2} (y − ȳ):
//!
//!   T = (I + SᵀS/(N−1))^{-1/2},   w = T² Sᵀ δ / (N−1)
//!   x̄ₐ = x̄ + A w,                 Aₐ = A T
//!
//! then multiplicative inflation of Aₐ by `infl` and, with `rot`, a random
//! mean-preserving rotation (DAPPER's `post_process`). Config: `N`
//! (ensemble size, default 20), `infl` (default 1), `rot` (default false).

use geohost_sdk::{Config, Filter, FilterInfo, Members, Problem, SplitMix64};
use nalgebra::{DMatrix, DVector};

struct Etkf {
    n: usize,
    infl: f64,
    rot: bool,
    /// R^{-1/2}, one entry per observation.
    inv_sd: Vec<f64>,
}

impl Filter for Etkf {
    fn init(config: &Config, problem: &Problem) -> Result<Self, String> {
        config.allow_only(&["N", "infl", "rot"])?;
        let n = config.usize_or("N", 20)?;
        let infl = config.f64_or("infl", 1.0)?;
        if n < 2 {
            return Err(format!("`N` must be at least 2, got {n}"));
        }
        if !(infl.is_finite() && infl > 0.0) {
            return Err(format!("`infl` must be a positive number, got {infl}"));
        }
        if let Some(bad) = problem.noise_variance.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(format!("the ETKF needs positive observation-error variances, got {bad}"));
        }
        let inv_sd = problem.noise_variance.iter().map(|v| 1.0 / v.sqrt()).collect();
        Ok(Etkf { n, infl, rot: config.bool_or("rot", false)?, inv_sd })
    }

    fn info(&self) -> FilterInfo {
        FilterInfo { name: "etkf".into(), version: env!("CARGO_PKG_VERSION").into(), members: self.n }
    }

    fn analyse(&mut self, x: &mut Members<'_>, hx: &[f64], y: &[f64], _t: f64, rng: &mut SplitMix64) -> Result<(), String> {
        let (n, m, p) = (x.members, x.size, y.len());
        // Members are rows of the flat buffers: as columns, `m × N`.
        let e = DMatrix::from_column_slice(m, n, x.data);
        let eo = DMatrix::from_column_slice(p, n, hx);
        let (mu, a) = center(&e);
        let (ybar, mut s) = center(&eo);
        let mut dy = DVector::from_column_slice(y) - ybar;
        for j in 0..p {
            s.row_mut(j).scale_mut(self.inv_sd[j]);
            dy[j] *= self.inv_sd[j];
        }
        let n1 = (n - 1) as f64;
        let st = s.transpose();
        let mut g = &st * &s / n1;
        for i in 0..n {
            g[(i, i)] += 1.0;
        }
        let t = inverse_sqrt(g)?;
        let w = &t * (&t * (st * dy)) / n1;
        let mu_a = mu + &a * w;
        let mut a_a = a * t;
        if self.infl != 1.0 {
            a_a *= self.infl;
        }
        if self.rot {
            a_a *= mean_preserving_orthogonal(n, rng).transpose();
        }
        for (j, col) in a_a.column_iter().enumerate() {
            for (i, v) in x.member_mut(j).iter_mut().enumerate() {
                *v = mu_a[i] + col[i];
            }
        }
        Ok(())
    }
}

/// Column mean and anomalies of `e` (members as columns).
fn center(e: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mu = e.column_mean();
    let mut a = e.clone();
    for mut col in a.column_iter_mut() {
        col -= &mu;
    }
    (mu, a)
}

/// `G^{-1/2}` of a symmetric positive-definite `G` by its eigendecomposition.
fn inverse_sqrt(g: DMatrix<f64>) -> Result<DMatrix<f64>, String> {
    let eig = nalgebra::SymmetricEigen::new(g);
    if eig.eigenvalues.iter().any(|d| !(d.is_finite() && *d > 0.0)) {
        return Err("the ensemble transform matrix is not positive definite (non-finite forecast?)".into());
    }
    let mut vd = eig.eigenvectors.clone();
    for (j, mut col) in vd.column_iter_mut().enumerate() {
        col /= eig.eigenvalues[j].sqrt();
    }
    Ok(vd * eig.eigenvectors.transpose())
}

/// A random orthogonal N×N matrix that maps the ones-vector to itself
/// (DAPPER's `genOG_1`): `H diag(1, Q) H` with H the Householder reflection
/// taking e₁ to 1/√N and Q uniformly random orthogonal (QR of a Gaussian
/// matrix, signs fixed by R's diagonal).
fn mean_preserving_orthogonal(n: usize, rng: &mut SplitMix64) -> DMatrix<f64> {
    let u = DVector::from_element(n, 1.0 / (n as f64).sqrt());
    let mut v = -u;
    v[0] += 1.0;
    let h = DMatrix::identity(n, n) - (&v * v.transpose()) * (2.0 / v.norm_squared());
    let z = DMatrix::from_fn(n - 1, n - 1, |_, _| rng.normal());
    let qr = z.qr();
    let mut q = qr.q();
    let r = qr.r();
    for (j, mut col) in q.column_iter_mut().enumerate() {
        if r[(j, j)] < 0.0 {
            col.neg_mut();
        }
    }
    let mut block = DMatrix::identity(n, n);
    block.view_mut((1, 1), (n - 1, n - 1)).copy_from(&q);
    &h * block * &h
}

geohost_sdk::export_filter!(Etkf);
