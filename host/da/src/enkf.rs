//! The stochastic ("perturbed observations", PertObs) EnKF of Burgers et
//! al. (1998), as in DAPPER:
//!
//!   D = (centred N(0, I) draws) · R^{1/2}        (`p × N`)
//!   C = Y Yᵀ + (N−1) R,     K = A Yᵀ C⁻¹
//!   Eₐ = E + K (y 1ᵀ + D − Eo)
//!
//! with A, Y the state and observed anomalies.

use super::ensemble::{self, Analysis, EnsembleParams, Execution, Trajectory};
use super::linalg::{center, randn};
use super::method::{DaMethod, FromParams, Params, Role};
use super::twin::Twin;
use anyhow::Result;
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};

/// `method = "enkf"`: the stochastic EnKF with `N` members, inflation and
/// rotations.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EnKF {
    #[serde(flatten)]
    pub ensemble: EnsembleParams,
}

impl FromParams for EnKF {
    fn from_params(p: &mut Params) -> Result<EnKF> {
        Ok(EnKF { ensemble: EnsembleParams::from_params(p)? })
    }
}

impl DaMethod for EnKF {
    fn tag(&self) -> &'static str {
        "EnKF"
    }
    fn label(&self) -> String {
        self.ensemble.label("EnKF PertObs")
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
        ensemble::cycle(twin, model, obs, self.ensemble.n, &mut PertObs, self.ensemble.post_process(), execution, rng, progress)
    }
}

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
