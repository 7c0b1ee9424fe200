//! Radiative transfer of methane for one pixel (the L1 side of the L1→L2
//! retrieval row): the at-sensor radiance spectrum on an imaging
//! spectrometer's bands, from the pixel's methane enhancement, its surface
//! albedo and, optionally, an airmass factor.
//!
//! Physics: mag1c 1.2.0's high-resolution look-up table (Foote et al.
//! 2020; BSD-3-Clause, fetched by scripts/fetch-mag1c.sh and embedded at
//! build time from 2000 nm on): radiance at 0.04–0.06 nm spacing for
//! methane enhancements of 0, 500, 1000, 2000, 4000, 8000 and 16,000 ppm·m.
//! For each wavelength the log-radiance is interpolated in the enhancement
//! by a monotone piecewise-cubic Hermite (Fritsch–Carlson, as scipy's
//! PCHIP): smooth in ΔX, exact at the table's nodes, and as non-linear as
//! the table (saturating lines). Outside 0–16,000 ppm·m it continues
//! linearly with the end slopes, so a retrieval may step below zero.
//!
//!   L(λ) = albedo · exp(ln L_table(λ, airmass · ΔX))
//!   L_b  = Σ_λ w_b(λ) L(λ),  w_b a Gaussian spectral response (FWHM of the
//!          band), weighted by the table's wavelength spacing, normalised
//!          to one and truncated at ±6σ (2e-9 of its peak: the table's
//!          radiance spans 1000:1 within a band's wings)
//!
//! `albedo` scales the whole spectrum (1 = the table's surface); `airmass`
//! scales the light path through the methane enhancement (1 = the table's
//! geometry). Output: band radiances in the table's units.
//!
//! Parameters θ: `dx` (ppm·m), `albedo`, and `airmass` when
//! `airmass_parameter = true`.
//!
//! Config: `sensor` ("aviris-ng": 5 nm spacing and FWHM, the default;
//! "emit": 7.4 nm spacing, 8.5 nm FWHM), any of `start`, `stop`, `spacing`,
//! `fwhm` (nm) to change it (default 2100–2500 nm), `airmass_parameter`
//! (default false).

use geohost_sdk::{Config, Parameter, SimulatorInfo, SplitMix64, StaticModel};

/// The table's methane enhancements (ppm·m), one spectrum each.
const ENHANCEMENTS: [f64; 7] = [0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0];
const K: usize = ENHANCEMENTS.len();
/// Written by build.rs: u32 n, then n × (wavelength, ln L at each enhancement).
static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ch4-lut.bin"));
/// Enhancements along the path (airmass · ΔX) accepted, in ppm·m.
const PATH_RANGE: (f64, f64) = (-16_000.0, 32_000.0);

struct Band {
    first: usize,
    weights: Vec<f64>,
}

struct Ch4Rt {
    ln_l: Vec<[f64; K]>,
    /// PCHIP derivative of ln L in ΔX at each node.
    slope: Vec<[f64; K]>,
    bands: Vec<Band>,
    centres: Vec<f64>,
    /// The wavelengths any band sees: [lo, hi).
    lo: usize,
    hi: usize,
    sensor: String,
    spacing: f64,
    fwhm: f64,
    airmass_parameter: bool,
    radiance: Vec<f64>,
}

fn read_table() -> (Vec<f64>, Vec<[f64; K]>) {
    let f = |at: usize| f64::from_le_bytes(TABLE[at..at + 8].try_into().unwrap());
    let n = u32::from_le_bytes(TABLE[..4].try_into().unwrap()) as usize;
    let (mut wavelength, mut ln_l) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let at = 4 + i * (K + 1) * 8;
        wavelength.push(f(at));
        ln_l.push(std::array::from_fn(|k| f(at + 8 * (k + 1))));
    }
    (wavelength, ln_l)
}

/// Fritsch–Carlson derivatives of a monotone piecewise-cubic Hermite
/// interpolant through (x, y) (scipy's PchipInterpolator).
fn pchip_slopes(x: &[f64; K], y: &[f64; K]) -> [f64; K] {
    let h: [f64; K - 1] = std::array::from_fn(|k| x[k + 1] - x[k]);
    let delta: [f64; K - 1] = std::array::from_fn(|k| (y[k + 1] - y[k]) / h[k]);
    let mut d = [0.0; K];
    for k in 1..K - 1 {
        if delta[k - 1] * delta[k] > 0.0 {
            let (w1, w2) = (2.0 * h[k] + h[k - 1], h[k] + 2.0 * h[k - 1]);
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k]);
        }
    }
    let end = |h0: f64, h1: f64, d0: f64, d1: f64| {
        let m = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1);
        if m * d0 <= 0.0 {
            0.0
        } else if d0 * d1 <= 0.0 && m.abs() > 3.0 * d0.abs() {
            3.0 * d0
        } else {
            m
        }
    };
    d[0] = end(h[0], h[1], delta[0], delta[1]);
    d[K - 1] = end(h[K - 2], h[K - 3], delta[K - 2], delta[K - 3]);
    d
}

/// e^x for the table's log-radiances (|x| < 700): 2^n · 2^f with n the
/// nearest integer to x/ln 2 and 2^f = e^t, |t| ≤ ln 2 / 2, by its Taylor
/// series to t⁷ (relative error below 1e-8 against f64::exp; a test
/// checks it). std's exp is the plugin's hot spot in wasm, a call of
/// tens of ns per wavelength; this is a dozen flops.
fn exp(x: f64) -> f64 {
    let n = (x * std::f64::consts::LOG2_E).round();
    let t = x - n * std::f64::consts::LN_2;
    let p = 1.0 + t * (1.0 + t * (0.5 + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0 + t * (1.0 / 5040.0)))))));
    p * f64::from_bits(((n as i64 + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_exp_to_1e8() {
        for i in -2000..=2000 {
            let x = i as f64 * 0.01;
            assert!((super::exp(x) / x.exp() - 1.0).abs() < 1e-8, "{x}");
        }
    }
}

impl StaticModel for Ch4Rt {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["sensor", "start", "stop", "spacing", "fwhm", "airmass_parameter"])?;
        let sensor = config.str_or("sensor", "aviris-ng")?;
        let (spacing, fwhm) = match sensor.as_str() {
            "aviris-ng" => (5.0, 5.0),
            "emit" => (7.4, 8.5),
            other => return Err(format!("config key `sensor` must be \"aviris-ng\" or \"emit\" (or set `spacing` and `fwhm`), got \"{other}\"")),
        };
        let start = config.f64_or("start", 2100.0)?;
        let stop = config.f64_or("stop", 2500.0)?;
        let spacing = config.f64_or("spacing", spacing)?;
        let fwhm = config.f64_or("fwhm", fwhm)?;
        for (key, v) in [("spacing", spacing), ("fwhm", fwhm)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("config key `{key}` must be a positive width in nm, got {v}"));
            }
        }
        if !(start.is_finite() && stop.is_finite() && start <= stop) {
            return Err(format!("config keys `start` and `stop` must be wavelengths in nm with start ≤ stop, got {start} and {stop}"));
        }
        let count = ((stop - start) / spacing + 1e-9).floor() as usize + 1;
        if count > 4096 {
            return Err(format!("config keys `start`, `stop`, `spacing` give {count} bands; at most 4096"));
        }
        let airmass_parameter = config.bool_or("airmass_parameter", false)?;
        let (wavelength, ln_l) = read_table();
        let (first_nm, last_nm) = (wavelength[0], wavelength[wavelength.len() - 1]);
        let sigma = fwhm / (2.0 * (2.0 * std::f64::consts::LN_2).sqrt());
        let mut bands = Vec::with_capacity(count);
        let mut centres = Vec::with_capacity(count);
        for b in 0..count {
            let c = start + b as f64 * spacing;
            if c - 6.0 * sigma < first_nm || c + 6.0 * sigma > last_nm {
                return Err(format!(
                    "the band at {c:.2} nm (FWHM {fwhm} nm) reaches beyond the embedded table ({first_nm:.2}–{last_nm:.2} nm): narrow `start`–`stop` or `fwhm`"
                ));
            }
            let first = wavelength.partition_point(|&w| w < c - 6.0 * sigma);
            let end = wavelength.partition_point(|&w| w <= c + 6.0 * sigma);
            let mut weights: Vec<f64> = (first..end)
                .map(|i| {
                    let dl = (wavelength[(i + 1).min(wavelength.len() - 1)] - wavelength[i.saturating_sub(1)]) / 2.0;
                    let z = (wavelength[i] - c) / sigma;
                    (-0.5 * z * z).exp() * dl
                })
                .collect();
            let total: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= total);
            bands.push(Band { first, weights });
            centres.push(c);
        }
        let lo = bands.iter().map(|b| b.first).min().unwrap_or(0);
        let hi = bands.iter().map(|b| b.first + b.weights.len()).max().unwrap_or(0);
        let slope = ln_l.iter().map(|y| pchip_slopes(&ENHANCEMENTS, y)).collect();
        let radiance = vec![0.0; wavelength.len()];
        Ok(Ch4Rt { ln_l, slope, bands, centres, lo, hi, sensor, spacing, fwhm, airmass_parameter, radiance })
    }

    fn info(&self) -> SimulatorInfo {
        let mut parameters = vec![("dx".into(), "ppm·m".into()), ("albedo".into(), "1".into())];
        if self.airmass_parameter {
            parameters.push(("airmass".into(), "1".into()));
        }
        SimulatorInfo {
            name: "ch4-rt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters,
            output_size: self.bands.len(),
            output_units: "radiance (mag1c table units)".into(),
            settings: vec![
                Parameter::new("sensor_emit", (self.sensor == "emit") as u8 as f64, "0 = aviris-ng, 1 = emit"),
                Parameter::new("first_band", self.centres[0], "nm"),
                Parameter::new("last_band", self.centres[self.centres.len() - 1], "nm"),
                Parameter::new("spacing", self.spacing, "nm"),
                Parameter::new("fwhm", self.fwhm, "nm"),
                Parameter::new("bands", self.bands.len() as f64, "1"),
                Parameter::new("table_wavelengths", (self.hi - self.lo) as f64, "1"),
            ],
            stochastic: false,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], _rng: &mut SplitMix64) -> Result<(), String> {
        let (dx, albedo) = (theta[0], theta[1]);
        let airmass = if self.airmass_parameter { theta[2] } else { 1.0 };
        if !dx.is_finite() {
            return Err(format!("parameter `dx` is {dx}"));
        }
        if !(albedo.is_finite() && albedo > 0.0) {
            return Err(format!("parameter `albedo` must be positive, got {albedo}"));
        }
        if !(airmass.is_finite() && airmass > 0.0) {
            return Err(format!("parameter `airmass` must be positive, got {airmass}"));
        }
        let path = airmass * dx;
        if !(PATH_RANGE.0..=PATH_RANGE.1).contains(&path) {
            return Err(format!(
                "airmass · dx = {path} ppm·m is outside {} to {} ppm·m (the table covers 0–16,000)",
                PATH_RANGE.0, PATH_RANGE.1
            ));
        }
        // One segment and one Hermite basis serve every wavelength:
        // ln L = a·v[k] + b·d[k] + c·v[k+1] + e·d[k+1], v the table's values
        // and d their PCHIP slopes (linear continuation outside the table).
        let last = ENHANCEMENTS[K - 1];
        let (k, a, b, c, e) = if path <= 0.0 {
            (0, 1.0, path, 0.0, 0.0)
        } else if path >= last {
            (K - 2, 0.0, 0.0, 1.0, path - last)
        } else {
            let k = ENHANCEMENTS.partition_point(|&x| x <= path) - 1;
            let h = ENHANCEMENTS[k + 1] - ENHANCEMENTS[k];
            let t = (path - ENHANCEMENTS[k]) / h;
            let (t2, t3) = (t * t, t * t * t);
            (k, 2.0 * t3 - 3.0 * t2 + 1.0, (t3 - 2.0 * t2 + t) * h, -2.0 * t3 + 3.0 * t2, (t3 - t2) * h)
        };
        for i in self.lo..self.hi {
            let (v, d) = (&self.ln_l[i], &self.slope[i]);
            self.radiance[i] = albedo * exp(a * v[k] + b * d[k] + c * v[k + 1] + e * d[k + 1]);
        }
        for (out, band) in y.iter_mut().zip(&self.bands) {
            *out = band.weights.iter().zip(&self.radiance[band.first..]).map(|(w, l)| w * l).sum();
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Ch4Rt);
