//! Twin experiments: a truth trajectory and synthetic observations made by
//! the same forward model and observation operator the methods then use.

use super::linalg;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

/// When the model steps and when observations arrive.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Chronology {
    /// Model time step.
    pub dt: f64,
    /// Model steps between observations.
    pub steps_per_obs: usize,
    /// Number of observation (assimilation) cycles.
    pub cycles: usize,
    /// Time before which cycles are left out of time averages.
    pub burn_in: f64,
}

impl Chronology {
    /// Time of observation cycle `k` (0-based): after `(k+1)·steps_per_obs` steps.
    pub fn obs_time(&self, k: usize) -> f64 {
        ((k + 1) * self.steps_per_obs) as f64 * self.dt
    }
    pub fn obs_times(&self) -> Vec<f64> {
        (0..self.cycles).map(|k| self.obs_time(k)).collect()
    }
}

/// The initial-condition distribution N(x0, variance·I), shared by the
/// truth and the initial ensembles.
#[derive(Clone, Debug)]
pub struct Prior {
    pub mean: DVector<f64>,
    pub variance: f64,
}

impl Prior {
    /// `members` draws as a `size × members` ensemble.
    pub fn sample(&self, members: usize, rng: &mut impl Rng) -> DMatrix<f64> {
        linalg::add_mean(&self.mean, linalg::randn(self.mean.len(), members, rng) * self.variance.sqrt())
    }
}

/// The truth, the observations and the climatology of one experiment.
pub struct Twin {
    pub chronology: Chronology,
    pub prior: Prior,
    pub times: Vec<f64>,
    /// Truth at observation times (`size × cycles`).
    pub truth: DMatrix<f64>,
    /// Observations (`obs_size × cycles`).
    pub obs: DMatrix<f64>,
    /// Diagonal of R.
    pub obs_variance: DVector<f64>,
    /// Mean and covariance of the truth over every model step (DAPPER's
    /// climatology, used by the Climatology, OI and 3D-Var baselines).
    pub clim_mean: DVector<f64>,
    pub clim_cov: DMatrix<f64>,
}

impl Twin {
    pub fn truth_at(&self, k: usize) -> DVector<f64> {
        self.truth.column(k).into_owned()
    }
    pub fn obs_at(&self, k: usize) -> DVector<f64> {
        self.obs.column(k).into_owned()
    }
}

/// Simulate the truth from a draw of `prior` and observe it with noise
/// N(0, R) at every observation time.
pub fn simulate(model: &mut dyn ForwardModel, obs: &mut dyn ObsOperator, chronology: Chronology, prior: Prior, rng: &mut impl Rng) -> Result<Twin> {
    let m = model.info().state_size;
    anyhow::ensure!(prior.mean.len() == m, "shape mismatch: x0 has {} values, the model state has {m}", prior.mean.len());
    let p = obs.info().obs_size;
    let obs_variance = DVector::from_vec(obs.info().noise_variance.clone());
    let steps = chronology.cycles * chronology.steps_per_obs;

    let mut x = prior.sample(1, rng);
    let mut truth = DMatrix::zeros(m, chronology.cycles);
    let mut ys = DMatrix::zeros(p, chronology.cycles);
    // Running moments for the climatology (Welford, numerically stable).
    let mut clim_mean = x.column(0).into_owned();
    let mut clim_m2 = DMatrix::zeros(m, m);
    let mut t = 0.0;
    for step in 1..=steps {
        model.advance(&mut x, t, chronology.dt).with_context(|| format!("simulating the truth at step {step}"))?;
        t = step as f64 * chronology.dt;
        let xv = x.column(0);
        let delta = xv - &clim_mean;
        clim_mean += &delta / (step + 1) as f64;
        let delta2 = xv - &clim_mean;
        clim_m2 += &delta * delta2.transpose();
        if step % chronology.steps_per_obs == 0 {
            let k = step / chronology.steps_per_obs - 1;
            truth.set_column(k, &xv);
            let hx = obs.observe(&x, t).with_context(|| format!("observing the truth at t = {t}"))?;
            let noise = DVector::from_fn(p, |j, _| obs_variance[j].sqrt() * rng.sample::<f64, _>(StandardNormal));
            ys.set_column(k, &(hx.column(0) + noise));
        }
    }
    let clim_cov = clim_m2 / steps.max(1) as f64;
    anyhow::ensure!(
        clim_cov.iter().all(|v| v.is_finite()),
        "the truth trajectory's covariance overflows (values too large for f64); check the model parameters and x0"
    );
    Ok(Twin { chronology, times: chronology.obs_times(), prior, truth, obs: ys, obs_variance, clim_mean, clim_cov })
}
