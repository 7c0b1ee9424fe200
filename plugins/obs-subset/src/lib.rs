//! A linear observation operator that observes a subset of the state
//! directly, with a diagonal error covariance R.
//!
//! Config:
//! - `state_size` (set by the host from the forward model)
//! - `select`: `"all"` (default), `"every"` (with `every = k`, `offset`),
//!   or `"indices"` (with `indices = [i, j, ...]`)
//! - `variance` (one value for every observation, default 1) or
//!   `variances` (one per observation); 0 makes it noise-free, for a
//!   static simulator that carries its own noise (the host's DA methods
//!   refuse R = 0)

use geohost_sdk::{Config, ObsInfo, ObsOperator, Parameter};

struct ObsSubset {
    state_size: usize,
    indices: Vec<usize>,
    variances: Vec<f64>,
}

fn selection(config: &Config, state_size: usize) -> Result<Vec<usize>, String> {
    let mode = config.str_or("select", "all")?;
    let indices: Vec<usize> = match mode.as_str() {
        "all" => (0..state_size).collect(),
        "every" => {
            let every = config.usize_or("every", 1)?;
            if every == 0 {
                return Err("config key `every` must be at least 1".into());
            }
            let offset = config.usize_or("offset", 0)?;
            (offset..state_size).step_by(every).collect()
        }
        "indices" => config.get::<Vec<usize>>("indices")?.ok_or("select = \"indices\" needs the key `indices` (a list of state indices)")?,
        other => return Err(format!("config key `select` must be \"all\", \"every\" or \"indices\", got \"{other}\"")),
    };
    if let Some(&bad) = indices.iter().find(|&&i| i >= state_size) {
        return Err(format!("config key `indices`: index {bad} is outside the state (size {state_size})"));
    }
    if indices.is_empty() {
        return Err("the selection observes nothing".into());
    }
    Ok(indices)
}

impl ObsOperator for ObsSubset {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "select", "every", "offset", "indices", "variance", "variances"])?;
        let state_size = config.get::<usize>("state_size")?.ok_or("config key `state_size` is missing")?;
        let indices = selection(config, state_size)?;
        let variances = match config.get::<Vec<f64>>("variances")? {
            Some(v) if v.len() != indices.len() => return Err(format!("config key `variances` has {} values for {} observations", v.len(), indices.len())),
            Some(v) => v,
            None => vec![config.f64_or("variance", 1.0)?; indices.len()],
        };
        if let Some(bad) = variances.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(format!("observation-error variances must be finite and not negative, got {bad}"));
        }
        Ok(ObsSubset { state_size, indices, variances })
    }

    fn info(&self) -> ObsInfo {
        ObsInfo {
            name: "obs-subset".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: self.state_size,
            obs_size: self.indices.len(),
            noise_variance: self.variances.clone(),
            locations: self.indices.iter().map(|&i| i as f64).collect(),
            parameters: vec![Parameter::new("observed", self.indices.len() as f64, "1")],
            units: "1".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], _t: f64) -> Result<(), String> {
        for (yj, &i) in y.iter_mut().zip(&self.indices) {
            *yj = x[i];
        }
        Ok(())
    }
}

geohost_sdk::export_obs_operator!(ObsSubset);
