//! Direct observations of a 2-D field along "satellite tracks" that move
//! between observation times, as in DAPPER's `QG/sakov2008` setup: `count`
//! points evenly spaced through the row-major grid (which, on a square
//! grid, lie along slanted lines), all shifted by one random offset per
//! observation time, smaller than their spacing.
//!
//! The offset of the observations at time t depends only on `seed` and
//! the observation index round(t / `period`), so the truth's observations
//! and an ensemble's forecast observations at the same time agree. The
//! observations' coordinates (`y`, `x` in grid points) are given per time
//! through the `located` interface, for localisation.
//!
//! Config: `shape` = [rows, columns] of the grid (required; rows × columns
//! must be the state size), `count` (300), `period` (the time between
//! observations, 5), `variance` (4), `seed` (0), `moving` (true; false
//! keeps the offset 0).

use geohost_sdk::{Config, ObsInfo, ObsOperator, Parameter, SplitMix64};

struct Tracks {
    rows: usize,
    columns: usize,
    /// Flat indices at offset 0.
    base: Vec<usize>,
    /// Offsets are drawn from 0..max_offset (the spacing of `base`).
    max_offset: usize,
    period: f64,
    variance: f64,
    seed: u64,
    moving: bool,
}

impl Tracks {
    /// The common offset of the observations at time `t`.
    fn offset(&self, t: f64) -> usize {
        if !self.moving {
            return 0;
        }
        let cycle = (t / self.period).round() as i64 as u64;
        let mut rng = SplitMix64::new(self.seed ^ cycle.wrapping_mul(0xD1B5_4A32_D192_ED03));
        ((self.max_offset as f64 * rng.uniform()) as usize).min(self.max_offset.saturating_sub(1))
    }
}

impl ObsOperator for Tracks {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "shape", "count", "period", "variance", "seed", "moving"])?;
        let state_size = config.get::<usize>("state_size")?.ok_or("config key `state_size` is missing")?;
        let shape = config.get::<Vec<usize>>("shape")?.ok_or("config key `shape` ([rows, columns] of the grid) is required")?;
        let [rows, columns] = shape[..] else {
            return Err(format!("config key `shape` must be [rows, columns], got {} values", shape.len()));
        };
        if rows.checked_mul(columns) != Some(state_size) {
            return Err(format!("config key `shape`: {rows} × {columns} points, but the state has {state_size} variables"));
        }
        let count = config.usize_or("count", 300)?;
        if count == 0 || count > state_size {
            return Err(format!("config key `count` must be between 1 and the state size {state_size}, got {count}"));
        }
        let period = config.f64_or("period", 5.0)?;
        let variance = config.f64_or("variance", 4.0)?;
        if !(period.is_finite() && period > 0.0) {
            return Err(format!("config key `period` must be positive, got {period}"));
        }
        if !(variance.is_finite() && variance > 0.0) {
            return Err(format!("config key `variance` must be positive, got {variance}"));
        }
        // Evenly spaced through the flat grid: floor(k · size / count).
        let base: Vec<usize> = (0..count).map(|k| k * state_size / count).collect();
        let max_offset = if count > 1 { base[1] - base[0] } else { state_size };
        // The last index plus the largest offset must stay inside the state.
        let max_offset = max_offset.min(state_size - base[count - 1]);
        Ok(Tracks {
            rows,
            columns,
            base,
            max_offset,
            period,
            variance,
            seed: config.get::<u64>("seed")?.unwrap_or(0),
            moving: config.get::<bool>("moving")?.unwrap_or(true),
        })
    }

    fn info(&self) -> ObsInfo {
        ObsInfo {
            name: "obs-tracks".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: self.rows * self.columns,
            obs_size: self.base.len(),
            noise_variance: vec![self.variance; self.base.len()],
            locations: self.base.iter().map(|&i| i as f64).collect(),
            parameters: vec![
                Parameter::new("count", self.base.len() as f64, "1"),
                Parameter::new("period", self.period, "1"),
                Parameter::new("max_offset", self.max_offset as f64, "1"),
            ],
            units: "1".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], t: f64) -> Result<(), String> {
        let offset = self.offset(t);
        for (yj, &i) in y.iter_mut().zip(&self.base) {
            *yj = x[i + offset];
        }
        Ok(())
    }

    fn coordinates(&mut self, t: f64) -> Option<Vec<f64>> {
        let offset = self.offset(t);
        Some(self.base.iter().flat_map(|&i| [((i + offset) / self.columns) as f64, ((i + offset) % self.columns) as f64]).collect())
    }
}

geohost_sdk::export_obs_operator!(Tracks);
