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
use super::linalg::{center, spd_inverse_sqrt};
use super::method::{DaMethod, FromParams, Params, Role};
use super::twin::Twin;
use anyhow::Result;
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};

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
/// matrix whose eigenvalues are all ≥ 1 ([`spd_inverse_sqrt`]).
pub fn transform(s: &DMatrix<f64>, dy: &DVector<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let n = s.ncols();
    let n1 = (n - 1) as f64;
    // Explicit transpose + GEMM: nalgebra's `tr_mul` is a dot-product loop,
    // several times slower at these sizes.
    let st = s.transpose();
    let mut a = &st * s;
    a /= n1;
    for i in 0..n {
        a[(i, i)] += 1.0;
    }
    let t = spd_inverse_sqrt(&a, 1.0);
    // w = Pw Sᵀδ = T (T Sᵀδ) / (N−1), as matrix–vector products.
    let w = &t * (&t * (st * dy)) / n1;
    (w, t)
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
