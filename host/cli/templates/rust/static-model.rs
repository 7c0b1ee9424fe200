//! `{{name}}`: a static simulator for inference over parameters. Replace
//! the line through noisy points below by yours: `simulate` maps one θ
//! (in `info().parameters` order) to one output vector.

use geohost_sdk::{Config, SimulatorInfo, SplitMix64, StaticModel};

struct Line {
    points: usize,
}

impl StaticModel for Line {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["points"])?;
        let points = config.usize_or("points", 10)?;
        if points < 2 {
            return Err("config key `points`: at least 2".into());
        }
        Ok(Line { points })
    }

    fn info(&self) -> SimulatorInfo {
        SimulatorInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: vec![("slope".into(), "1".into()), ("intercept".into(), "1".into())],
            output_size: self.points,
            output_units: "1".into(),
            settings: Vec::new(),
            stochastic: false,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], _rng: &mut SplitMix64) -> Result<(), String> {
        let n = (self.points - 1) as f64;
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = theta[0] * (i as f64 / n) + theta[1];
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Line);
