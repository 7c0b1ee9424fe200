//! Baselines without an ensemble, as defined by DAPPER:
//! - Climatology: the truth's mean μ_c, with covariance B_c.
//! - Optimal interpolation: x_a = μ_c + K (y − H μ_c) with the fixed gain
//!   K = B_c Hᵀ (H B_c Hᵀ + R)⁻¹; no forecast is used.
//! - 3D-Var: the forecast of the previous analysis, updated with the fixed
//!   gain built from B = xB · B_c.
//!
//! H is linearised once, at μ_c, by unit perturbations (exact for linear
//! operators); the innovation uses the full operator.

use super::ensemble::{forecast, Execution, Trajectory};
use super::linalg::spd_inverse;
use super::method::{DaMethod, FromParams, Params, Role};
use super::stats::{covariance_spread, rmse, CycleStats};
use super::twin::Twin;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};

/// `method = "climatology"`: the truth's mean (no parameters).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Climatology {}

/// `method = "oi"`: optimal interpolation with the climatological gain.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OptInterp {}

/// `method = "3dvar"`: 3D-Var with B = `xB` · B_c (default 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Var3D {
    #[serde(rename = "xB")]
    pub xb: f64,
}

impl FromParams for Climatology {
    fn from_params(_: &mut Params) -> Result<Climatology> {
        Ok(Climatology {})
    }
}

impl FromParams for OptInterp {
    fn from_params(_: &mut Params) -> Result<OptInterp> {
        Ok(OptInterp {})
    }
}

impl FromParams for Var3D {
    fn from_params(p: &mut Params) -> Result<Var3D> {
        Ok(Var3D { xb: p.positive("xB", Some(1.0), "background covariance scaling")? })
    }
}

impl DaMethod for Climatology {
    fn tag(&self) -> &'static str {
        "Climatology"
    }
    fn label(&self) -> String {
        "Climatology".into()
    }
    fn role(&self) -> Role {
        Role::Baseline
    }
    fn run(
        &self,
        twin: &Twin,
        _: &mut dyn ForwardModel,
        _: &mut dyn ObsOperator,
        _: &mut rand_chacha::ChaCha8Rng,
        _: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        climatology(twin, progress)
    }
}

impl DaMethod for OptInterp {
    fn tag(&self) -> &'static str {
        "OptInterp"
    }
    fn uses_climatological_covariance(&self) -> bool {
        true
    }
    fn label(&self) -> String {
        "OptInterp".into()
    }
    fn role(&self) -> Role {
        Role::Baseline
    }
    fn run(
        &self,
        twin: &Twin,
        _: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        _: &mut rand_chacha::ChaCha8Rng,
        _: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        optimal_interpolation(twin, obs, progress)
    }
}

impl DaMethod for Var3D {
    fn tag(&self) -> &'static str {
        "Var3D"
    }
    fn uses_climatological_covariance(&self) -> bool {
        true
    }
    fn label(&self) -> String {
        format!("3D-Var xB={}", self.xb)
    }
    fn role(&self) -> Role {
        Role::Baseline
    }
    fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        _: &mut rand_chacha::ChaCha8Rng,
        _: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        var3d(twin, model, obs, self.xb, progress)
    }
}

/// A fixed-gain analysis: the gain and the analysis covariance it implies.
struct FixedGain {
    k: DMatrix<f64>,
    /// (I − K H) B
    cov_a: DMatrix<f64>,
}

fn linearise(obs: &mut dyn ObsOperator, at: &DVector<f64>) -> Result<DMatrix<f64>> {
    let m = at.len();
    // Columns: `at`, then `at + e_i` for each i; one ensemble-batched call.
    let mut probes = DMatrix::from_fn(m, m + 1, |_, _| 0.0);
    for j in 0..=m {
        probes.set_column(j, at);
        if j > 0 {
            probes[(j - 1, j)] += 1.0;
        }
    }
    let hp = obs.observe(&probes, 0.0).context("linearising the observation operator")?;
    let base = hp.column(0).into_owned();
    Ok(DMatrix::from_fn(hp.nrows(), m, |j, i| hp[(j, i + 1)] - base[j]))
}

fn fixed_gain(h: &DMatrix<f64>, b: &DMatrix<f64>, r: &DVector<f64>) -> Result<FixedGain> {
    let bht = b * h.transpose();
    let innovation_cov = h * &bht + DMatrix::from_diagonal(r);
    let k = bht * spd_inverse(innovation_cov, "H B Hᵀ + R")?;
    let m = b.nrows();
    let cov_a = (DMatrix::identity(m, m) - &k * h) * b;
    Ok(FixedGain { k, cov_a })
}

pub fn climatology(twin: &Twin, progress: &mut dyn FnMut(usize)) -> Result<Trajectory> {
    let spread = twin.clim_spread();
    let mut stats = CycleStats::with_capacity(twin.chronology.cycles);
    let mut analysis_mean = DMatrix::zeros(twin.clim_mean.len(), twin.chronology.cycles);
    for k in 0..twin.chronology.cycles {
        let err = rmse(&twin.clim_mean, &twin.truth_at(k));
        stats.push_forecast(err, spread);
        stats.push_analysis(err, spread);
        analysis_mean.set_column(k, &twin.clim_mean);
        progress(k);
    }
    Ok(Trajectory { stats, analysis_mean, members: Vec::new(), phases: None })
}

pub fn optimal_interpolation(twin: &Twin, obs: &mut dyn ObsOperator, progress: &mut dyn FnMut(usize)) -> Result<Trajectory> {
    let mu = &twin.clim_mean;
    let h = linearise(obs, mu)?;
    let clim_cov = twin.clim_cov("OptInterp")?;
    let gain = fixed_gain(&h, clim_cov, &twin.obs_variance)?;
    let h_mu = obs.observe(&DMatrix::from_column_slice(mu.len(), 1, mu.as_slice()), 0.0)?.column(0).into_owned();
    let (spread_f, spread_a) = (covariance_spread(clim_cov), covariance_spread(&gain.cov_a));
    let mut stats = CycleStats::with_capacity(twin.chronology.cycles);
    let mut analysis_mean = DMatrix::zeros(mu.len(), twin.chronology.cycles);
    for k in 0..twin.chronology.cycles {
        let truth = twin.truth_at(k);
        let xa = mu + &gain.k * (twin.obs_at(k) - &h_mu);
        stats.push_forecast(rmse(mu, &truth), spread_f);
        stats.push_analysis(rmse(&xa, &truth), spread_a);
        analysis_mean.set_column(k, &xa);
        progress(k);
    }
    Ok(Trajectory { stats, analysis_mean, members: Vec::new(), phases: None })
}

pub fn var3d(twin: &Twin, model: &mut dyn ForwardModel, obs: &mut dyn ObsOperator, xb: f64, progress: &mut dyn FnMut(usize)) -> Result<Trajectory> {
    let b = twin.clim_cov("Var3D")? * xb;
    let h = linearise(obs, &twin.clim_mean)?;
    let gain = fixed_gain(&h, &b, &twin.obs_variance)?;
    let (spread_f, spread_a) = (covariance_spread(&b), covariance_spread(&gain.cov_a));
    let ch = twin.chronology;
    let background = twin.prior.mean();
    let mut x = DMatrix::from_column_slice(background.len(), 1, background.as_slice());
    let mut stats = CycleStats::with_capacity(ch.cycles);
    let mut analysis_mean = DMatrix::zeros(x.nrows(), ch.cycles);
    for k in 0..ch.cycles {
        forecast(model, &mut x, twin, k)?;
        let t = twin.times[k];
        let truth = twin.truth_at(k);
        let xf = x.column(0).into_owned();
        stats.push_forecast(rmse(&xf, &truth), spread_f);
        let hx = obs.observe(&x, t)?.column(0).into_owned();
        let xa = xf + &gain.k * (twin.obs_at(k) - hx);
        stats.push_analysis(rmse(&xa, &truth), spread_a);
        analysis_mean.set_column(k, &xa);
        x.set_column(0, &xa);
        progress(k);
    }
    Ok(Trajectory { stats, analysis_mean, members: Vec::new(), phases: None })
}
