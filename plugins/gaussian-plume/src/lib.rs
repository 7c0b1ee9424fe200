//! A steady-state Gaussian plume of a point source, integrated vertically
//! to column enhancements on a pixel grid (a methane point source seen by
//! an imaging spectrometer).
//!
//! Parameters θ (one row per simulation):
//! - `x0`, `y0`: source position in m (east, north; the scene spans
//!   [0, nx·pixel] × [0, ny·pixel]);
//! - `q`: emission rate in t/h (positive);
//! - `wind_dir`: the direction the wind blows *from*, in degrees clockwise
//!   from north (meteorological convention).
//!
//! With ground reflection the vertical integral of the plume is exactly
//! one, so the column mass per area at downwind distance x and crosswind
//! offset y is
//!
//!   Ω(x, y) = Q / (√(2π) σ_y(x) u) · exp(−y² / (2 σ_y(x)²)),  x > 0,
//!
//! with Briggs' (1973) open-country σ_y(x) = a x (1 + 0.0001 x)^(−1/2),
//! a = 0.22, 0.16, 0.11, 0.08, 0.06, 0.04 for stability classes A–F. A
//! pixel sees Ω averaged over its box; this is approximated by adding the
//! box's variance Δ²/12 to σ_y² and smoothing the upwind edge over the
//! same width, which keeps the output smooth in θ (no aliasing of a
//! narrow plume by pixel centres). Output: column-average dry-air mole
//! fraction enhancement in ppb, ΔX = Ω / (M_CH4 · Ω_air) · 10⁹ with
//! Ω_air = p / (g · M_air) for p = 101 325 Pa.
//!
//! Config: `wind_speed` (m/s, default 5), `stability` ("A"–"F", default
//! "D"), `nx`, `ny` (pixels, default 24 × 24), `pixel` (m, default 250).

use geohost_sdk::{Config, Parameter, SimulatorInfo, SplitMix64, StaticModel};

const M_CH4: f64 = 0.016_04; // kg/mol
const AIR_COLUMN: f64 = 101_325.0 / (9.806_65 * 0.028_964_4); // mol/m²
const T_PER_H: f64 = 1000.0 / 3600.0; // kg/s per t/h

struct Plume {
    wind_speed: f64,
    stability: char,
    briggs_a: f64,
    nx: usize,
    ny: usize,
    pixel: f64,
}

fn briggs_a(class: char) -> Option<f64> {
    Some(match class {
        'A' => 0.22,
        'B' => 0.16,
        'C' => 0.11,
        'D' => 0.08,
        'E' => 0.06,
        'F' => 0.04,
        _ => return None,
    })
}

/// Standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// erfc with relative error below 1.2e-7 everywhere (Numerical Recipes'
/// Chebyshev fit), enough for a smooth upwind cut-off.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * (-z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18 + t * (-0.186_288_06 + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
        .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

impl StaticModel for Plume {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["wind_speed", "stability", "nx", "ny", "pixel"])?;
        let wind_speed = config.f64_or("wind_speed", 5.0)?;
        if !(wind_speed.is_finite() && wind_speed >= 0.5) {
            return Err(format!("config key `wind_speed` must be at least 0.5 m/s (a Gaussian plume needs advection), got {wind_speed}"));
        }
        let class = config.str_or("stability", "D")?;
        let stability = class.chars().next().filter(|_| class.len() == 1).map(|c| c.to_ascii_uppercase()).unwrap_or('?');
        let briggs_a = briggs_a(stability).ok_or_else(|| format!("config key `stability` must be a Pasquill class \"A\" to \"F\", got \"{class}\""))?;
        let (nx, ny) = (config.usize_or("nx", 24)?, config.usize_or("ny", 24)?);
        if nx == 0 || ny == 0 || nx * ny > 1 << 20 {
            return Err(format!("config keys `nx`, `ny` must give 1 to 2^20 pixels, got {nx} × {ny}"));
        }
        let pixel = config.f64_or("pixel", 250.0)?;
        if !(pixel.is_finite() && pixel > 0.0) {
            return Err(format!("config key `pixel` must be a positive size in m, got {pixel}"));
        }
        Ok(Plume { wind_speed, stability, briggs_a, nx, ny, pixel })
    }

    fn info(&self) -> SimulatorInfo {
        SimulatorInfo {
            name: "gaussian-plume".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: vec![("x0".into(), "m".into()), ("y0".into(), "m".into()), ("q".into(), "t/h".into()), ("wind_dir".into(), "degree".into())],
            output_size: self.nx * self.ny,
            output_units: "ppb".into(),
            settings: vec![
                Parameter::new("wind_speed", self.wind_speed, "m/s"),
                Parameter::new("stability_class", (self.stability as u8 - b'A') as f64, "A=0 … F=5"),
                Parameter::new("nx", self.nx as f64, "1"),
                Parameter::new("ny", self.ny as f64, "1"),
                Parameter::new("pixel", self.pixel, "m"),
            ],
            stochastic: false,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], _rng: &mut SplitMix64) -> Result<(), String> {
        let (x0, y0, q, wind_dir) = (theta[0], theta[1], theta[2], theta[3]);
        for (name, v) in [("x0", x0), ("y0", y0), ("q", q), ("wind_dir", wind_dir)] {
            if !v.is_finite() {
                return Err(format!("parameter `{name}` is {v}"));
            }
        }
        if q < 0.0 {
            return Err(format!("parameter `q` (emission rate) must be non-negative, got {q} t/h"));
        }
        // Unit vector the wind blows towards (east, north).
        let towards = (wind_dir + 180.0).to_radians();
        let (ex, ey) = (towards.sin(), towards.cos());
        let box_var = self.pixel * self.pixel / 12.0;
        let box_sd = box_var.sqrt();
        let scale = q * T_PER_H / ((2.0 * std::f64::consts::PI).sqrt() * self.wind_speed) / (M_CH4 * AIR_COLUMN) * 1e9;
        for j in 0..self.ny {
            let py = (j as f64 + 0.5) * self.pixel - y0;
            for i in 0..self.nx {
                let px = (i as f64 + 0.5) * self.pixel - x0;
                let down = px * ex + py * ey;
                let cross = -px * ey + py * ex;
                // Far upwind the smoothed edge is below 1e-9 of the plume; skip.
                if down < -6.0 * box_sd {
                    y[j * self.nx + i] = 0.0;
                    continue;
                }
                // Downwind distance floored at a metre, so σ_y stays positive
                // where the smoothed edge still lets some plume through.
                let d = down.max(1.0);
                let sigma_y = self.briggs_a * d / (1.0 + 1e-4 * d).sqrt();
                let var = sigma_y * sigma_y + box_var;
                let edge = if down > 6.0 * box_sd { 1.0 } else { phi(down / box_sd) };
                y[j * self.nx + i] = scale / var.sqrt() * (-cross * cross / (2.0 * var)).exp() * edge;
            }
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Plume);
