//! Small dense linear-algebra helpers for the ensemble methods, on top of
//! nalgebra. Ensembles are `size × members` (one column per member).

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

/// Ensemble mean (over members, i.e. columns).
pub fn mean(e: &DMatrix<f64>) -> DVector<f64> {
    e.column_mean()
}

/// Split an ensemble into its mean and anomalies `E − x̄ 1ᵀ`.
pub fn center(e: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mu = mean(e);
    let mut a = e.clone();
    for mut col in a.column_iter_mut() {
        col -= &mu;
    }
    (mu, a)
}

/// `mu 1ᵀ + A`: rebuild an ensemble from its mean and anomalies.
pub fn add_mean(mu: &DVector<f64>, mut a: DMatrix<f64>) -> DMatrix<f64> {
    for mut col in a.column_iter_mut() {
        col += mu;
    }
    a
}

/// A matrix of independent standard normal draws.
pub fn randn<R: Rng + ?Sized>(rows: usize, cols: usize, rng: &mut R) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.sample(StandardNormal))
}

/// A uniformly random orthogonal matrix (QR of a Gaussian matrix with the
/// sign of R's diagonal folded into Q, so the distribution is Haar).
pub fn random_orthogonal<R: Rng + ?Sized>(n: usize, rng: &mut R) -> DMatrix<f64> {
    let qr = randn(n, n, rng).qr();
    let mut q = qr.q();
    let r = qr.r();
    for (j, mut col) in q.column_iter_mut().enumerate() {
        if r[(j, j)] < 0.0 {
            col.neg_mut();
        }
    }
    q
}

/// A random orthogonal N×N matrix that maps the ones-vector to itself, so
/// applying it to ensemble anomalies keeps their mean at zero (DAPPER's
/// `genOG_1`). Built as `V diag(1, Q) Vᵀ` where V is a Householder
/// reflection whose first column is 1/√N.
pub fn random_mean_preserving_orthogonal<R: Rng + ?Sized>(n: usize, rng: &mut R) -> DMatrix<f64> {
    if n < 2 {
        return DMatrix::identity(n, n);
    }
    let u = DVector::from_element(n, 1.0 / (n as f64).sqrt());
    let mut v = -u;
    v[0] += 1.0; // v = e₁ − u
    let v_norm2 = v.norm_squared();
    let householder = DMatrix::identity(n, n) - (&v * v.transpose()) * (2.0 / v_norm2);
    let mut block = DMatrix::identity(n, n);
    block.view_mut((1, 1), (n - 1, n - 1)).copy_from(&random_orthogonal(n - 1, rng));
    &householder * block * &householder
}

/// Inverse of a symmetric positive-definite matrix (via Cholesky), or an
/// error naming `what`.
pub fn spd_inverse(m: DMatrix<f64>, what: &str) -> anyhow::Result<DMatrix<f64>> {
    match m.cholesky() {
        Some(chol) => Ok(chol.inverse()),
        None => anyhow::bail!("{what} is not positive definite"),
    }
}
