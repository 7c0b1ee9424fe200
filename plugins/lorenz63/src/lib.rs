//! Lorenz-63: dx/dt = σ(y − x), dy/dt = x(ρ − z) − y, dz/dt = xy − βz,
//! integrated with classic RK4.
//!
//! Config: `sigma` (default 10), `rho` (default 28), `beta` (default 8/3).

use geohost_sdk::integrate::{rk4_step, Rk4Scratch};
use geohost_sdk::{Config, ForwardModel, ModelInfo, Parameter};

struct Lorenz63 {
    sigma: f64,
    rho: f64,
    beta: f64,
    scratch: Rk4Scratch,
}

impl ForwardModel for Lorenz63 {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["sigma", "rho", "beta"])?;
        Ok(Lorenz63 {
            sigma: config.f64_or("sigma", 10.0)?,
            rho: config.f64_or("rho", 28.0)?,
            beta: config.f64_or("beta", 8.0 / 3.0)?,
            scratch: Rk4Scratch::default(),
        })
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            parameters: vec![Parameter::new("sigma", self.sigma, "1"), Parameter::new("rho", self.rho, "1"), Parameter::new("beta", self.beta, "1")],
            ..ModelInfo::new("lorenz63", env!("CARGO_PKG_VERSION"), 3, 0.01)
        }
    }

    fn step(&mut self, x: &mut [f64], _t: f64, dt: f64) -> Result<(), String> {
        let (s, r, b) = (self.sigma, self.rho, self.beta);
        rk4_step(x, dt, &mut self.scratch, |x, d| {
            d[0] = s * (x[1] - x[0]);
            d[1] = x[0] * (r - x[2]) - x[1];
            d[2] = x[0] * x[1] - b * x[2];
        });
        Ok(())
    }
}

geohost_sdk::export_forward_model!(Lorenz63);
