//! `{{name}}`: an observation operator. Replace the every-`stride`-th
//! variable selection below by yours: `observe` maps one state to one
//! observation vector; `info` gives R's diagonal and where each observation sits.

use geohost_sdk::{Config, ObsInfo, ObsOperator};

struct Operator {
    state_size: usize,
    stride: usize,
    variance: f64,
}

impl ObsOperator for Operator {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "stride", "variance"])?;
        let op = Operator { state_size: config.usize_or("state_size", 40)?, stride: config.usize_or("stride", 2)?, variance: config.f64_or("variance", 1.0)? };
        if op.state_size == 0 || op.stride == 0 || !(op.variance > 0.0) {
            return Err("config: state_size and stride must be positive, variance positive".into());
        }
        Ok(op)
    }

    fn info(&self) -> ObsInfo {
        let locations: Vec<f64> = (0..self.state_size).step_by(self.stride).map(|i| i as f64).collect();
        ObsInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: self.state_size,
            obs_size: locations.len(),
            noise_variance: vec![self.variance; locations.len()],
            locations,
            parameters: Vec::new(),
            units: "1".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], _t: f64) -> Result<(), String> {
        for (yi, xi) in y.iter_mut().zip(x.iter().step_by(self.stride)) {
            *yi = *xi;
        }
        Ok(())
    }
}

geohost_sdk::export_obs_operator!(Operator);
