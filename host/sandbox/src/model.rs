//! The forward-model and observation-operator traits the DA core is written
//! against. The wasm adapters of this crate and the native reference
//! models (`geohost_da::models`) implement them, so swapping a forward model
//! never touches DA code.
//!
//! Ensembles are `state_size × members` matrices: one column per member.
//! nalgebra stores them column-major, which is exactly the row-major
//! `members × size` layout of the WIT `ensemble` record, so crossing the
//! boundary is a single copy.

use anyhow::Result;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// A named parameter value as a plugin reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: f64,
    pub units: String,
}

/// A 1-D grid on which state variable `i` sits at coordinate `i`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub points: usize,
    pub periodic: bool,
}

impl Grid {
    /// Distance between two coordinates on this grid (wrapping if periodic).
    pub fn distance(&self, a: f64, b: f64) -> f64 {
        let d = (a - b).abs();
        if self.periodic {
            d.min(self.points as f64 - d)
        } else {
            d
        }
    }
}

/// What a forward model says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub parameters: Vec<Parameter>,
    pub default_dt: f64,
    pub state_units: String,
    pub time_units: String,
    pub grid: Option<Grid>,
}

/// What an observation operator says about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObsInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub obs_size: usize,
    /// Diagonal of the observation-error covariance R.
    pub noise_variance: Vec<f64>,
    /// Grid coordinate of each observation.
    pub locations: Vec<f64>,
    pub parameters: Vec<Parameter>,
    pub units: String,
}

/// What a static simulator says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulatorInfo {
    pub name: String,
    pub version: String,
    /// Names and units of the parameters θ, in row order.
    pub parameters: Vec<ParameterInfo>,
    pub output_size: usize,
    pub output_units: String,
    /// Fixed settings resolved from its config.
    pub settings: Vec<Parameter>,
    pub stochastic: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterInfo {
    pub name: String,
    pub units: String,
}

/// y = G(θ) for a batch of parameter vectors: the step-5 simulators.
pub trait Simulator {
    fn info(&self) -> &SimulatorInfo;
    /// Simulate every column of `thetas` (`parameters × batch`); returns
    /// `output_size × batch`. The same thetas and seed give the same
    /// output. Fails on a simulator error, a wrong shape or non-finite
    /// output.
    fn simulate(&mut self, thetas: &DMatrix<f64>, seed: u64) -> Result<DMatrix<f64>>;
}

/// x(t + dt) = M(x(t)) applied to a whole ensemble at once.
pub trait ForwardModel {
    fn info(&self) -> &ModelInfo;
    /// Advance every column of `states` (`state_size × members`) in place.
    /// Fails if the model fails or returns a wrong shape or non-finite values.
    fn advance(&mut self, states: &mut DMatrix<f64>, t: f64, dt: f64) -> Result<()>;
}

/// y = H(x) applied to a whole ensemble at once.
pub trait ObsOperator {
    fn info(&self) -> &ObsInfo;
    /// Observe every column of `states`; returns `obs_size × members`.
    fn observe(&mut self, states: &DMatrix<f64>, t: f64) -> Result<DMatrix<f64>>;
}

/// Check a model/operator pair fits together before anything runs.
pub fn check_pair(model: &ModelInfo, obs: &ObsInfo) -> Result<()> {
    anyhow::ensure!(
        model.state_size == obs.state_size,
        "shape mismatch: forward model `{}` has state size {}, but observation operator `{}` expects {}",
        model.name,
        model.state_size,
        obs.name,
        obs.state_size
    );
    anyhow::ensure!(
        obs.noise_variance.len() == obs.obs_size && obs.locations.len() == obs.obs_size,
        "observation operator `{}` describes {} observations but gives {} noise variances and {} locations",
        obs.name,
        obs.obs_size,
        obs.noise_variance.len(),
        obs.locations.len()
    );
    if let Some((j, v)) = obs.noise_variance.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        anyhow::bail!(
            "observation operator `{}` gives observation {j} an error variance of {v}: data assimilation weighs observations by R⁻¹ and needs R > 0 and finite (a noise-free operator is only for static simulators with noise of their own); give it a positive variance",
            obs.name
        );
    }
    Ok(())
}

/// The first non-finite entry of an ensemble, as (member, index).
pub fn first_non_finite(states: &DMatrix<f64>) -> Option<(usize, usize)> {
    let pos = states.iter().position(|v| !v.is_finite())?;
    Some((pos / states.nrows(), pos % states.nrows()))
}
