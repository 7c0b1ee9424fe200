//! A column observation operator for plume scenes (TROPOMI-like): every
//! pixel is observed with Gaussian noise of a configured standard
//! deviation, and enhancements below the instrument's detection floor are
//! reported as zero (the retrieval cannot tell them from background).
//!
//! Config:
//! - `state_size` (set by the host from the simulator's output size)
//! - `noise` (pixel noise standard deviation, default 5, in the scene's
//!   units, e.g. ppb)
//! - `floor` (detection floor, default 0 = none)

use geohost_sdk::{Config, ObsInfo, ObsOperator, Parameter};

struct ColumnObs {
    pixels: usize,
    noise: f64,
    floor: f64,
}

impl ObsOperator for ColumnObs {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "noise", "floor"])?;
        let pixels = config.get::<usize>("state_size")?.ok_or("config key `state_size` is missing")?;
        if pixels == 0 {
            return Err("config key `state_size` must be positive".into());
        }
        let noise = config.f64_or("noise", 5.0)?;
        if !(noise.is_finite() && noise > 0.0) {
            return Err(format!("config key `noise` must be a positive standard deviation, got {noise}"));
        }
        let floor = config.f64_or("floor", 0.0)?;
        if !(floor.is_finite() && floor >= 0.0) {
            return Err(format!("config key `floor` must be non-negative, got {floor}"));
        }
        Ok(ColumnObs { pixels, noise, floor })
    }

    fn info(&self) -> ObsInfo {
        ObsInfo {
            name: "column-obs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: self.pixels,
            obs_size: self.pixels,
            noise_variance: vec![self.noise * self.noise; self.pixels],
            locations: (0..self.pixels).map(|i| i as f64).collect(),
            parameters: vec![Parameter::new("noise", self.noise, "scene units"), Parameter::new("floor", self.floor, "scene units")],
            units: "scene units".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], _t: f64) -> Result<(), String> {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = if x >= self.floor { x } else { 0.0 };
        }
        Ok(())
    }
}

geohost_sdk::export_obs_operator!(ColumnObs);
