//! Lorenz-96: dx_i/dt = (x_{i+1} − x_{i−2}) x_{i−1} − x_i + F on a periodic
//! ring of `size` variables, integrated with classic RK4.
//!
//! Config: `F` (forcing, default 8), `size` (default 40, at least 4).

use geohost_sdk::integrate::{rk4_step, Rk4Scratch};
use geohost_sdk::{Config, ForwardModel, Grid, ModelInfo, Parameter};

struct Lorenz96 {
    forcing: f64,
    size: usize,
    scratch: Rk4Scratch,
}

/// The tendency of every member of `x` (members of `n` variables, back to
/// back). One loop over the whole ensemble computes each interior variable
/// (2..n−1 read only their own member), then each member's three periodic
/// wrap-arounds, which that loop took from its neighbours, are overwritten:
/// long loops vectorise without a remainder per member, and every element's
/// arithmetic is what a member-by-member loop does.
fn tendency(forcing: f64, n: usize, x: &[f64], dxdt: &mut [f64]) {
    let len = x.len();
    if len == 0 {
        return; // no members
    }
    let dxdt = &mut dxdt[..len];
    for (i, d) in dxdt[2..len - 1].iter_mut().enumerate() {
        // i + 2 is the variable; its neighbours i, i + 1, i + 3 are in bounds.
        let w = &x[i..i + 4];
        *d = (w[3] - w[0]) * w[1] - w[2] + forcing;
    }
    for (x, dxdt) in x.chunks_exact(n).zip(dxdt.chunks_exact_mut(n)) {
        dxdt[0] = (x[1] - x[n - 2]) * x[n - 1] - x[0] + forcing;
        dxdt[1] = (x[2] - x[n - 1]) * x[0] - x[1] + forcing;
        dxdt[n - 1] = (x[0] - x[n - 3]) * x[n - 2] - x[n - 1] + forcing;
    }
}

impl ForwardModel for Lorenz96 {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["F", "size"])?;
        let size = config.usize_or("size", 40)?;
        if size < 4 {
            return Err(format!("config key `size` must be at least 4, got {size}"));
        }
        Ok(Lorenz96 { forcing: config.f64_or("F", 8.0)?, size, scratch: Rk4Scratch::default() })
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            parameters: vec![Parameter::new("F", self.forcing, "1")],
            grid: Some(Grid { points: self.size, periodic: true }),
            ..ModelInfo::new("lorenz96", env!("CARGO_PKG_VERSION"), self.size, 0.05)
        }
    }

    fn step(&mut self, x: &mut [f64], t: f64, dt: f64) -> Result<(), String> {
        self.advance_ensemble(x, self.size, t, dt)
    }

    /// RK4's stages are element-wise, so one step over the whole ensemble
    /// is a step of each member.
    fn advance_ensemble(&mut self, states: &mut [f64], size: usize, _t: f64, dt: f64) -> Result<(), String> {
        let forcing = self.forcing;
        rk4_step(states, dt, &mut self.scratch, |x, dxdt| tendency(forcing, size, x, dxdt));
        Ok(())
    }
}

geohost_sdk::export_forward_model!(Lorenz96);
