//! Linear models: x(t+dt) = M x(t) and y = H x, with diagonal R. Used to
//! check the ensemble filters against the exact Kalman update.

use anyhow::Result;
use geohost_sandbox::model::{ForwardModel, ModelInfo, ObsInfo, ObsOperator};
use nalgebra::DMatrix;

pub struct LinearModel {
    info: ModelInfo,
    pub m: DMatrix<f64>,
}

impl LinearModel {
    pub fn new(m: DMatrix<f64>) -> Self {
        assert!(m.is_square(), "a linear model needs a square matrix");
        let info = ModelInfo {
            name: "linear".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: m.nrows(),
            parameters: vec![],
            default_dt: 1.0,
            state_units: "1".into(),
            time_units: "1".into(),
            grid: None,
            layout: None,
        };
        LinearModel { info, m }
    }
}

impl ForwardModel for LinearModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn advance(&mut self, states: &mut DMatrix<f64>, _t: f64, _dt: f64) -> Result<()> {
        *states = &self.m * &*states;
        Ok(())
    }
}

pub struct LinearObs {
    info: ObsInfo,
    pub h: DMatrix<f64>,
}

impl LinearObs {
    /// `h` is `obs_size × state_size`; `variances` the diagonal of R.
    pub fn new(h: DMatrix<f64>, variances: Vec<f64>) -> Self {
        assert_eq!(h.nrows(), variances.len());
        let info = ObsInfo {
            name: "linear-obs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: h.ncols(),
            obs_size: h.nrows(),
            noise_variance: variances,
            locations: (0..h.nrows()).map(|j| j as f64).collect(),
            parameters: vec![],
            units: "1".into(),
        };
        LinearObs { info, h }
    }
}

impl ObsOperator for LinearObs {
    fn info(&self) -> &ObsInfo {
        &self.info
    }
    fn observe(&mut self, states: &DMatrix<f64>, _t: f64) -> Result<DMatrix<f64>> {
        Ok(&self.h * states)
    }
}

/// A linear static simulator y = A θ (the linear-Gaussian inverse problem
/// with a closed-form posterior, for checking the parameter methods).
pub struct LinearSimulator {
    info: geohost_sandbox::model::SimulatorInfo,
    pub a: DMatrix<f64>,
}

impl LinearSimulator {
    /// `a` is `outputs × parameters`.
    pub fn new(a: DMatrix<f64>) -> Self {
        let info = geohost_sandbox::model::SimulatorInfo {
            name: "linear-simulator".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: (0..a.ncols()).map(|i| geohost_sandbox::model::ParameterInfo { name: format!("theta{i}"), units: "1".into() }).collect(),
            output_size: a.nrows(),
            output_units: "1".into(),
            settings: vec![],
            stochastic: false,
        };
        LinearSimulator { info, a }
    }
}

impl geohost_sandbox::model::Simulator for LinearSimulator {
    fn info(&self) -> &geohost_sandbox::model::SimulatorInfo {
        &self.info
    }
    fn simulate(&mut self, thetas: &DMatrix<f64>, _seed: u64) -> Result<DMatrix<f64>> {
        anyhow::ensure!(thetas.nrows() == self.a.ncols(), "shape mismatch: {} parameters, expected {}", thetas.nrows(), self.a.ncols());
        Ok(&self.a * thetas)
    }
}
