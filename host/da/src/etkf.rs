//! The ensemble transform Kalman filter (ETKF, "Sqrt" in DAPPER): a
//! deterministic square-root update in the N-dimensional ensemble space.
//!
//! With anomalies A (`m × N`), whitened observation anomalies
//! S = R^{-1/2} (Eo − ȳ) (`p × N`) and whitened innovation
//! δ = R^{-1/2} (y − ȳ):
//!
//!   Pw = ((N−1) I + Sᵀ S)⁻¹,   T = ((N−1) Pw)^{1/2}
//!   w  = Pw Sᵀ δ
//!   x̄ₐ = x̄ + A w,             Aₐ = A T

use super::ensemble::{self, Analysis, EnsembleParams, Execution, Trajectory};
use super::linalg::{
    apply_inverse_sqrt, buffer_slice, center, eigen_inverse_sqrt, gram_into as gram, inverse_sqrt_series, padded_len, padded_transpose, product_into,
    spd_inverse_sqrt_into, ApplyWork, GramWork, InverseSqrtWork,
};
use super::method::{DaMethod, FromParams, Params, Role};
use super::twin::Twin;
use anyhow::Result;
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, DVector};

/// `method = "etkf"`: the ETKF with `N` members, inflation and rotations.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ETKF {
    #[serde(flatten)]
    pub ensemble: EnsembleParams,
}

impl FromParams for ETKF {
    fn from_params(p: &mut Params) -> Result<ETKF> {
        Ok(ETKF { ensemble: EnsembleParams::from_params(p)? })
    }
}

impl DaMethod for ETKF {
    fn tag(&self) -> &'static str {
        "ETKF"
    }
    fn label(&self) -> String {
        self.ensemble.label("ETKF")
    }
    fn role(&self) -> Role {
        Role::Oracle
    }
    fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        rng: &mut rand_chacha::ChaCha8Rng,
        execution: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        ensemble::cycle(twin, model, obs, self.ensemble.n, &mut Etkf, self.ensemble.post_process(), execution, rng, progress)
    }
}

/// The ETKF analysis step.
pub struct Etkf;

/// The ETKF mean weights w and transform T for whitened anomalies `s`
/// (`p × N`) and whitened innovation `dy`. Shared with the LETKF, which
/// calls it once per local domain.
///
/// With G = SᵀS/(N−1), (N−1)I + SᵀS = (N−1)(I + G), so
/// T = (I + G)^{-1/2} and Pw = T²/(N−1): one inverse square root of a
/// matrix whose eigenvalues are all ≥ 1 ([`super::linalg::spd_inverse_sqrt`]).
pub fn transform(s: &DMatrix<f64>, dy: &DVector<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let mut work = TransformWork::default();
    transform_into(&padded_transpose(s), dy.as_slice(), s.ncols(), &mut work);
    (work.w, work.t)
}

/// The buffers of [`transform_into`], reused from call to call: with
/// them the LETKF's local analyses allocate nothing once the buffers have
/// held the largest local domain (see [`apply_transform_into`] for the
/// exception, the eigendecomposition's branch).
#[derive(Default)]
pub struct TransformWork {
    gram_work: GramWork,
    /// I + SᵀS/(N−1).
    gram: DMatrix<f64>,
    /// Sᵀδ and T Sᵀδ.
    st_dy: DVector<f64>,
    t_st_dy: DVector<f64>,
    sqrt: InverseSqrtWork,
    /// The transform T (`N × N`) of the last call.
    pub t: DMatrix<f64>,
    /// The mean weights w (length N) of the last call.
    pub w: DVector<f64>,
    /// [`apply_transform_into`]'s block of vectors and its buffers.
    block: Vec<f64>,
    apply: ApplyWork,
}

/// [`transform`] into `work.w` and `work.t`, with `work`'s buffers; S
/// (`p × N`) as its padded transpose `st`
/// ([`super::linalg::padded_transpose`]: each observation's N values
/// together, as the LETKF gathers them), δ as `dy` (length p).
pub fn transform_into(st: &[f64], dy: &[f64], n: usize, work: &mut TransformWork) {
    gram_into(st, dy.len(), n, work);
    spd_inverse_sqrt_into(&work.gram, 1.0, &mut work.sqrt, &mut work.t);
    mean_weights(st, dy, work);
}

/// `work.gram` ← I + SᵀS/(N−1).
fn gram_into(st: &[f64], p: usize, n: usize, work: &mut TransformWork) {
    gram(st, p, n, &mut work.gram_work, &mut work.gram);
}

/// `out` (length N) ← Sᵀδ from the padded Sᵀ: each member's sum over
/// the observations in order.
fn st_dy_into(st: &[f64], dy: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    let padded = padded_len(out.len());
    for (row, &d) in st.chunks_exact(padded).zip(dy) {
        for (x, &s) in out.iter_mut().zip(row) {
            *x += s * d;
        }
    }
}

/// w from T in `work`, Sᵀ and δ.
fn mean_weights(st: &[f64], dy: &[f64], work: &mut TransformWork) {
    let n = work.gram.nrows();
    let n1 = (n - 1) as f64;
    // w = Pw Sᵀδ = T (T Sᵀδ) / (N−1), as matrix–vector products.
    for v in [&mut work.st_dy, &mut work.t_st_dy, &mut work.w] {
        if v.len() != n {
            *v = DVector::zeros(n);
        }
    }
    st_dy_into(st, dy, work.st_dy.as_mut_slice());
    work.t.mul_to(&work.st_dy, &mut work.t_st_dy);
    work.t.mul_to(&work.t_st_dy, &mut work.w);
    work.w /= n1;
}

/// The transform applied to some rows `a` (`rows × N`) of the anomalies:
/// `update` ← a T and `dmu` ← a w, what [`transform_into`] and two
/// products give, for the LETKF's local domains (a few rows each); Sᵀ
/// and δ as [`transform_into`] takes them.
///
/// Where T = (I + G)^{-1/2} has a polynomial series
/// ([`inverse_sqrt_series`]), T is never formed: the series is applied
/// to the N-vectors that need it, aᵀ's columns and Sᵀδ
/// ([`apply_inverse_sqrt`]), about (rows + 1)/N of the work of forming T
/// when the rows are few, and nothing is allocated. Elsewhere (fewer
/// than 12 members, a wide spectrum) T is formed by the
/// eigendecomposition (which allocates inside nalgebra), as in
/// [`transform_into`]. Either way the result is T's to rounding, not to
/// the bit.
pub fn apply_transform_into(
    st: &[f64],
    dy: &[f64],
    a: &DMatrixView<f64>,
    work: &mut TransformWork,
    update: &mut DMatrixViewMut<f64>,
    dmu: &mut DMatrixViewMut<f64>,
) {
    gram_into(st, dy.len(), a.ncols(), work);
    let Some(series) = inverse_sqrt_series(&work.gram, 1.0) else {
        // No series: what spd_inverse_sqrt_into would do then, without
        // looking for the series again.
        work.t = eigen_inverse_sqrt(&work.gram);
        mean_weights(st, dy, work);
        product_into(a, &work.t, update);
        a.mul_to(&work.w, dmu);
        return;
    };
    let (rows, n) = a.shape();
    let n1 = (n - 1) as f64;
    // The block [aᵀ | Sᵀδ], N × (rows + 1), column-major.
    let block = buffer_slice(&mut work.block, n * (rows + 1));
    let (transposed, st_dy) = block.split_at_mut(n * rows);
    DMatrixViewMut::from_slice(transposed, n, rows).tr_copy_from(a);
    st_dy_into(st, dy, st_dy);
    apply_inverse_sqrt(&work.gram, &series, block, &mut work.apply);
    // a w = a T (T Sᵀδ)/(N−1) = (a T)(T Sᵀδ)/(N−1), T being symmetric:
    // the update's rows times T Sᵀδ, with no second application.
    let (t_at, t_st_dy) = block.split_at(n * rows);
    update.tr_copy_from(&DMatrixView::from_slice(t_at, n, rows));
    update.mul_to(&DMatrixView::from_slice(t_st_dy, n, 1), dmu);
    *dmu /= n1;
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
