//! `{{name}}`: a forward model. Replace the damped oscillators below by
//! yours: `init` reads the config, `info` describes the state, `step`
//! advances one member by dt (the SDK batches the ensemble).

use geohost_sdk::{Config, ForwardModel, ModelInfo, Parameter};

struct Model {
    /// Pairs (x, v) of oscillators: state size 2 × pairs.
    pairs: usize,
    omega: f64,
    damping: f64,
}

impl ForwardModel for Model {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["pairs", "omega", "damping"])?;
        let m = Model { pairs: config.usize_or("pairs", 4)?, omega: config.f64_or("omega", 1.0)?, damping: config.f64_or("damping", 0.05)? };
        if m.pairs == 0 || !(m.omega > 0.0) || !(m.damping >= 0.0) {
            return Err("config: pairs and omega must be positive, damping non-negative".into());
        }
        Ok(m)
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            parameters: vec![Parameter::new("omega", self.omega, "1/s"), Parameter::new("damping", self.damping, "1/s")],
            ..ModelInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), 2 * self.pairs, 0.05)
        }
    }

    fn step(&mut self, x: &mut [f64], _t: f64, dt: f64) -> Result<(), String> {
        // Semi-implicit Euler: stable for ω·dt < 2.
        for pair in x.chunks_exact_mut(2) {
            pair[1] += dt * (-self.omega * self.omega * pair[0] - 2.0 * self.damping * pair[1]);
            pair[0] += dt * pair[1];
        }
        Ok(())
    }
}

geohost_sdk::export_forward_model!(Model);
