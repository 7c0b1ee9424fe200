//! An imaging spectrometer's detector for radiance spectra: every band is
//! observed as it is, with Gaussian noise from a photon-limited SNR model.
//! The signal-to-noise ratio is `snr` at the brightest band of a
//! `reference` spectrum (e.g. a plume-free pixel of mean albedo) and falls
//! as √L in darker bands:
//!
//!   σ_b = √(L_ref,b · max_c L_ref,c) / snr
//!
//! The noise of a band is fixed by the reference (an observation-error
//! covariance R = diag(σ²) that does not depend on the scene), which is
//! what a matched filter's and a retrieval's likelihood assume.
//!
//! Config:
//! - `state_size` (set by the host from the simulator's output size)
//! - `reference`: the reference radiance, one positive value per band
//!   (the host fills it in for `[scenes]` sets)
//! - `snr`: at the brightest reference band (default 300)

use geohost_sdk::{Config, ObsInfo, ObsOperator, Parameter};

struct RadianceObs {
    sd: Vec<f64>,
    snr: f64,
}

impl ObsOperator for RadianceObs {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "reference", "snr"])?;
        let bands = config.get::<usize>("state_size")?.ok_or("config key `state_size` is missing")?;
        let reference = config.get::<Vec<f64>>("reference")?.ok_or("config key `reference` (the reference radiance, one value per band) is missing")?;
        if reference.len() != bands {
            return Err(format!("config key `reference` has {} values for {bands} bands", reference.len()));
        }
        if let Some((b, v)) = reference.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            return Err(format!("config key `reference`: band {b} is {v}; every band needs a positive radiance"));
        }
        let snr = config.f64_or("snr", 300.0)?;
        if !(snr.is_finite() && snr > 0.0) {
            return Err(format!("config key `snr` must be positive, got {snr}"));
        }
        let brightest = reference.iter().cloned().fold(0.0, f64::max);
        let sd = reference.iter().map(|l| (l * brightest).sqrt() / snr).collect();
        Ok(RadianceObs { sd, snr })
    }

    fn info(&self) -> ObsInfo {
        let bands = self.sd.len();
        ObsInfo {
            name: "radiance-obs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: bands,
            obs_size: bands,
            noise_variance: self.sd.iter().map(|s| s * s).collect(),
            locations: (0..bands).map(|b| b as f64).collect(),
            parameters: vec![Parameter::new("snr", self.snr, "1")],
            units: "radiance".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], _t: f64) -> Result<(), String> {
        y.copy_from_slice(x);
        Ok(())
    }
}

geohost_sdk::export_obs_operator!(RadianceObs);
