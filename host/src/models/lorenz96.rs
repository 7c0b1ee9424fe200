//! Native Lorenz-96, written independently of `plugins/lorenz96` but with
//! the same arithmetic order, so the wasm plugin must match it bit for bit.

use crate::model::{ForwardModel, Grid, ModelInfo, Parameter};
use anyhow::Result;
use geohost_sdk::integrate::{rk4_step, Rk4Scratch};
use nalgebra::DMatrix;

pub struct Lorenz96 {
    info: ModelInfo,
    forcing: f64,
    scratch: Rk4Scratch,
}

impl Lorenz96 {
    pub fn new(size: usize, forcing: f64) -> Self {
        Lorenz96 {
            info: ModelInfo {
                name: "lorenz96-native".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                state_size: size,
                parameters: vec![Parameter { name: "F".into(), value: forcing, units: "1".into() }],
                default_dt: 0.05,
                state_units: "1".into(),
                time_units: "1".into(),
                grid: Some(Grid { points: size, periodic: true }),
            },
            forcing,
            scratch: Rk4Scratch::default(),
        }
    }

    /// dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F, periodic.
    pub fn tendency(forcing: f64, x: &[f64], dxdt: &mut [f64]) {
        let n = x.len();
        dxdt[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + forcing;
        dxdt[1] = (x[2] - x[n - 1]) * x[0] - x[1] + forcing;
        dxdt[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + forcing;
        for i in 2..n - 1 {
            dxdt[i] = (x[i + 1] - x[i - 2]) * x[i - 1] - x[i] + forcing;
        }
    }
}

impl ForwardModel for Lorenz96 {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn advance(&mut self, states: &mut DMatrix<f64>, _t: f64, dt: f64) -> Result<()> {
        let forcing = self.forcing;
        let n = self.info.state_size;
        for member in states.as_mut_slice().chunks_exact_mut(n) {
            rk4_step(member, dt, &mut self.scratch, |x, d| Self::tendency(forcing, x, d));
        }
        Ok(())
    }
}
