//! A stochastic static simulator, for the tests of how geohost treats one:
//! a line y_i = slope · i/(n−1) + intercept through `points` points, each
//! with noise of sd `noise` drawn inside the simulator (so its likelihood
//! is the simulator's business, and it says `stochastic: true`).

use geohost_sdk::{Config, SimulatorInfo, SplitMix64, StaticModel};

struct NoisyLine {
    points: usize,
    noise: f64,
}

impl StaticModel for NoisyLine {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["points", "noise"])?;
        let s = NoisyLine { points: config.usize_or("points", 10)?, noise: config.f64_or("noise", 0.5)? };
        if s.points < 2 || !(s.noise > 0.0) {
            return Err("config: at least 2 points and a positive noise sd".into());
        }
        Ok(s)
    }

    fn info(&self) -> SimulatorInfo {
        SimulatorInfo {
            name: "testkit-stochastic".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: vec![("slope".into(), "1".into()), ("intercept".into(), "1".into())],
            output_size: self.points,
            output_units: "1".into(),
            settings: Vec::new(),
            stochastic: true,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], rng: &mut SplitMix64) -> Result<(), String> {
        let n = (self.points - 1) as f64;
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = theta[0] * (i as f64 / n) + theta[1] + self.noise * rng.normal();
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(NoisyLine);
