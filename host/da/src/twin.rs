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

/// Where the truth and the initial ensembles start.
#[derive(Clone, Debug)]
pub enum Prior {
    /// N(mean, variance·I) for both.
    Gaussian { mean: DVector<f64>, variance: f64 },
    /// The model's own climate (DAPPER's sample file): ensembles drawn
    /// without replacement from `states` (`size × S`, spun-up states far
    /// apart in time), the truth from `truth`, a later state of the same
    /// trajectory, so it is none of the members.
    Climate { states: DMatrix<f64>, truth: DVector<f64>, spin_up: SpinUp },
}

/// How a climate prior is made: integrate from a draw of N(x0, x0_variance·I)
/// for `time`, then keep `samples` states `every` time units apart; the
/// truth starts `every` after the last of them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpinUp {
    pub time: f64,
    pub samples: usize,
    pub every: f64,
}

impl SpinUp {
    /// The checks a plugin-set's `[experiment.spinup]` must pass.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.time.is_finite() && self.time >= 0.0) {
            return Err(format!("experiment.spinup.time must be a non-negative number, got {}", self.time));
        }
        if !(self.every.is_finite() && self.every > 0.0) {
            return Err(format!("experiment.spinup.every must be a positive number, got {}", self.every));
        }
        if self.samples < 2 {
            return Err(format!("experiment.spinup.samples must be at least 2, got {}", self.samples));
        }
        Ok(())
    }
}

impl Prior {
    /// N(mean, variance·I).
    pub fn gaussian(mean: DVector<f64>, variance: f64) -> Prior {
        Prior::Gaussian { mean, variance }
    }

    /// A climate prior: `model` run from a draw of `start` as `spin_up`
    /// says, in steps of `dt`.
    pub fn spun_up(model: &mut dyn ForwardModel, start: &Prior, spin_up: SpinUp, dt: f64, rng: &mut impl Rng) -> Result<Prior> {
        let steps = |time: f64| (time / dt).round() as usize;
        let (burn, every) = (steps(spin_up.time), steps(spin_up.every).max(1));
        let mut x = start.truth(rng)?;
        let mut t = 0.0;
        let mut advance = |x: &mut DMatrix<f64>, steps: usize, what: &str| -> Result<()> {
            for step in 0..steps {
                model.advance(x, t, dt).with_context(|| format!("spinning up the model ({what}, step {step})"))?;
                t += dt;
            }
            Ok(())
        };
        advance(&mut x, burn, "before the first sample")?;
        let mut states = DMatrix::zeros(x.nrows(), spin_up.samples);
        for k in 0..spin_up.samples {
            advance(&mut x, every, "between samples")?;
            states.set_column(k, &x.column(0));
        }
        advance(&mut x, every, "to the truth's start")?;
        anyhow::ensure!(x.iter().all(|v| v.is_finite()), "the spun-up state is not finite: check the model's parameters and experiment.dt");
        Ok(Prior::Climate { states, truth: x.column(0).into_owned(), spin_up })
    }

    /// Number of state variables.
    pub fn size(&self) -> usize {
        match self {
            Prior::Gaussian { mean, .. } => mean.len(),
            Prior::Climate { truth, .. } => truth.len(),
        }
    }

    /// The prior mean (a background for the fixed-gain baselines).
    pub fn mean(&self) -> DVector<f64> {
        match self {
            Prior::Gaussian { mean, .. } => mean.clone(),
            Prior::Climate { states, .. } => linalg::mean(states),
        }
    }

    /// `members` initial states as a `size × members` ensemble.
    pub fn sample(&self, members: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        self.sample_members(members, 0..members, rng)
    }

    /// Columns `range` of [`Prior::sample`]`(members, rng)`, without
    /// holding the others: the draws outside `range` are made and dropped,
    /// so `rng` ends where `sample` leaves it and the kept columns are the
    /// same bits (an MPI rank holds only its members this way).
    pub fn sample_members(&self, members: usize, range: std::ops::Range<usize>, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        anyhow::ensure!(range.start <= range.end && range.end <= members, "members {range:?} asked of an ensemble of {members}");
        match self {
            Prior::Gaussian { mean, variance } => {
                let sd = variance.sqrt();
                let mut kept = DMatrix::zeros(mean.len(), range.len());
                for k in 0..members {
                    for i in 0..mean.len() {
                        let z: f64 = rng.sample(rand_distr::StandardNormal);
                        if range.contains(&k) {
                            kept[(i, k - range.start)] = z * sd;
                        }
                    }
                }
                Ok(linalg::add_mean(mean, kept))
            }
            Prior::Climate { states, .. } => {
                anyhow::ensure!(
                    members <= states.ncols(),
                    "an ensemble of {members} members cannot be drawn without replacement from the {} spun-up states: raise experiment.spinup.samples to at least {members}",
                    states.ncols()
                );
                let picked = rand::seq::index::sample(rng, states.ncols(), members);
                Ok(DMatrix::from_fn(states.nrows(), range.len(), |i, k| states[(i, picked.index(range.start + k))]))
            }
        }
    }

    /// The truth's initial state (`size × 1`).
    pub fn truth(&self, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        match self {
            Prior::Gaussian { .. } => self.sample(1, rng),
            Prior::Climate { truth, .. } => Ok(DMatrix::from_column_slice(truth.len(), 1, truth.as_slice())),
        }
    }

    /// What the prior was, for the outputs' metadata.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Prior::Gaussian { mean, variance } => serde_json::json!({ "x0": mean.as_slice(), "x0_variance": variance }),
            Prior::Climate { states, spin_up, .. } => serde_json::json!({ "spinup": spin_up, "climate_states": states.ncols() }),
        }
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
    /// climatology, used by the Climatology, OI and 3D-Var baselines); the
    /// covariance only for states of at most [`CLIMATOLOGY_MAX`] variables.
    pub clim_mean: DVector<f64>,
    pub clim_cov: Option<DMatrix<f64>>,
    /// The climatological variances (the covariance's diagonal), kept at any size.
    pub clim_var: DVector<f64>,
}

/// Largest state whose climatological covariance a twin keeps: its update
/// costs size² per model step and its storage 8·size² bytes (128 MB here).
pub const CLIMATOLOGY_MAX: usize = 4000;

impl Twin {
    pub fn truth_at(&self, k: usize) -> DVector<f64> {
        self.truth.column(k).into_owned()
    }
    pub fn obs_at(&self, k: usize) -> DVector<f64> {
        self.obs.column(k).into_owned()
    }

    /// The climatological spread √(mean variance).
    pub fn clim_spread(&self) -> f64 {
        match &self.clim_cov {
            Some(cov) => super::stats::covariance_spread(cov),
            None => self.clim_var.mean().sqrt(),
        }
    }

    /// The climatological covariance, for the methods built on it.
    pub fn clim_cov(&self, method: &str) -> Result<&DMatrix<f64>> {
        self.clim_cov.as_ref().with_context(|| {
            format!(
                "{method} needs the climatological covariance, which is kept only for states of at most {CLIMATOLOGY_MAX} variables (this one has {}) \
                 and only when a method of the run declares that it uses it; use an ensemble method",
                self.clim_mean.len()
            )
        })
    }
}

/// Simulate the truth from a draw of `prior` and observe it with noise
/// N(0, R) at every observation time. `covariance`: keep the
/// climatological covariance (for states up to [`CLIMATOLOGY_MAX`]),
/// when a method of the run uses it
/// ([`crate::method::Method::uses_climatological_covariance`]); the mean
/// and variances are kept always.
pub fn simulate(
    model: &mut dyn ForwardModel,
    obs: &mut dyn ObsOperator,
    chronology: Chronology,
    prior: Prior,
    covariance: bool,
    rng: &mut impl Rng,
) -> Result<Twin> {
    let m = model.info().state_size;
    anyhow::ensure!(prior.size() == m, "shape mismatch: x0 has {} values, the model state has {m}", prior.size());
    let p = obs.info().obs_size;
    let obs_variance = DVector::from_vec(obs.info().noise_variance.clone());
    let steps = chronology.cycles * chronology.steps_per_obs;

    let mut x = prior.truth(rng)?;
    let mut truth = DMatrix::zeros(m, chronology.cycles);
    let mut ys = DMatrix::zeros(p, chronology.cycles);
    // Running moments for the climatology (Welford, numerically stable).
    let mut clim_mean = x.column(0).into_owned();
    let keep_cov = covariance && m <= CLIMATOLOGY_MAX;
    let mut clim_m2 = DMatrix::zeros(if keep_cov { m } else { 0 }, if keep_cov { m } else { 0 });
    let mut clim_m2_diag = DVector::zeros(m);
    let mut t = 0.0;
    for step in 1..=steps {
        model.advance(&mut x, t, chronology.dt).with_context(|| format!("simulating the truth at step {step}"))?;
        t = step as f64 * chronology.dt;
        let xv = x.column(0);
        let delta = xv - &clim_mean;
        clim_mean += &delta / (step + 1) as f64;
        let delta2 = xv - &clim_mean;
        clim_m2_diag += delta.component_mul(&delta2);
        if keep_cov {
            // In place (an outer product would allocate m² values per step).
            clim_m2.ger(1.0, &delta, &delta2, 1.0);
        }
        if step % chronology.steps_per_obs == 0 {
            let k = step / chronology.steps_per_obs - 1;
            truth.set_column(k, &xv);
            let hx = obs.observe(&x, t).with_context(|| format!("observing the truth at t = {t}"))?;
            let noise = DVector::from_fn(p, |j, _| obs_variance[j].sqrt() * rng.sample::<f64, _>(StandardNormal));
            ys.set_column(k, &(hx.column(0) + noise));
        }
    }
    let clim_cov = keep_cov.then(|| clim_m2 / steps.max(1) as f64);
    let clim_var = clim_m2_diag / steps.max(1) as f64;
    anyhow::ensure!(
        clim_mean.iter().chain(clim_cov.iter().flatten()).all(|v| v.is_finite()),
        "the truth trajectory's covariance overflows (values too large for f64); check the model parameters and x0"
    );
    Ok(Twin { chronology, times: chronology.obs_times(), prior, truth, obs: ys, obs_variance, clim_mean, clim_cov, clim_var })
}
