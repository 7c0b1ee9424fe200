//! Native Lorenz-96, written independently of `plugins/lorenz96` but with
//! the same arithmetic order, so the wasm plugin must match it bit for bit.

use anyhow::Result;
use geohost_integrate::{rk4_step, Rk4Scratch};
use geohost_sandbox::model::{ForwardModel, Grid, ModelInfo, Parameter};
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
                layout: None,
            },
            forcing,
            scratch: Rk4Scratch::default(),
        }
    }

    /// dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F, periodic, for
    /// every member of `x` (members of `n` variables, back to back).
    ///
    /// One loop over the whole ensemble computes every interior variable
    /// (a member's 2..n−1 read only their own member); the three
    /// wrapped variables of each member, which that loop got from the
    /// neighbouring members, are then overwritten. Long loops vectorise
    /// with no per-member remainder; each element's arithmetic is the
    /// same as member by member.
    pub fn tendency(forcing: f64, n: usize, x: &[f64], dxdt: &mut [f64]) {
        let len = x.len();
        if len == 0 {
            return; // no members
        }
        // w = x[i−2..i+2] for variable i.
        for (d, w) in dxdt[2..len - 1].iter_mut().zip(x.windows(4)) {
            *d = (w[3] - w[0]) * w[1] - w[2] + forcing;
        }
        for (x, dxdt) in x.chunks_exact(n).zip(dxdt.chunks_exact_mut(n)) {
            dxdt[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + forcing;
            dxdt[1] = (x[2] - x[n - 1]) * x[0] - x[1] + forcing;
            dxdt[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + forcing;
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
        // RK4's stages are element-wise, so one step over the whole
        // ensemble is a step of each member.
        rk4_step(states.as_mut_slice(), dt, &mut self.scratch, |x, d| Self::tendency(forcing, n, x, d));
        Ok(())
    }
}
