//! Priors over the parameters of a static simulator: independent uniform
//! or (optionally truncated) Gaussian marginals, declared per parameter in
//! the plugin-set and sampled by the host.

use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// One `[[prior]]` entry as written in the plugin-set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriorSpec {
    /// The simulator's parameter name.
    pub name: String,
    /// `[low, high]`.
    pub uniform: Option<[f64; 2]>,
    /// `[mean, standard deviation]`.
    pub normal: Option<[f64; 2]>,
    /// Truncation of a normal prior, `[low, high]`.
    pub bounds: Option<[f64; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Marginal {
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, sd: f64, low: f64, high: f64 },
}

impl Marginal {
    pub fn bounds(&self) -> (f64, f64) {
        match *self {
            Marginal::Uniform { low, high } | Marginal::Normal { low, high, .. } => (low, high),
        }
    }

    /// Log density up to a constant (−∞ outside the support).
    pub fn log_density(&self, x: f64) -> f64 {
        let (low, high) = self.bounds();
        if !(x >= low && x <= high) {
            return f64::NEG_INFINITY;
        }
        match *self {
            Marginal::Uniform { .. } => 0.0,
            Marginal::Normal { mean, sd, .. } => -0.5 * ((x - mean) / sd).powi(2),
        }
    }

    /// The bijection from the support onto the real line that density
    /// estimators work in: logit of the position within `[low, high]`
    /// when both bounds are finite, a log of the distance to the one
    /// finite bound, the identity when there is none. Values on a bound
    /// map to a large finite number rather than ±∞.
    pub fn to_unbounded(&self, x: f64) -> f64 {
        const EDGE: f64 = 1e-12;
        match self.bounds() {
            (low, high) if low.is_finite() && high.is_finite() => {
                let u = ((x - low) / (high - low)).clamp(EDGE, 1.0 - EDGE);
                (u / (1.0 - u)).ln()
            }
            (low, _) if low.is_finite() => (x - low).max(EDGE).ln(),
            (_, high) if high.is_finite() => -(high - x).max(EDGE).ln(),
            _ => x,
        }
    }

    /// The inverse of [`Marginal::to_unbounded`]; always inside the support.
    pub fn from_unbounded(&self, z: f64) -> f64 {
        match self.bounds() {
            (low, high) if low.is_finite() && high.is_finite() => (low + (high - low) / (1.0 + (-z).exp())).clamp(low, high),
            (low, _) if low.is_finite() => low + z.exp(),
            (_, high) if high.is_finite() => high - (-z).exp(),
            _ => z,
        }
    }

    /// log |dz/dx| of [`Marginal::to_unbounded`] at `x` (a density over z
    /// becomes one over x by adding it).
    pub fn log_jacobian(&self, x: f64) -> f64 {
        match self.bounds() {
            (low, high) if low.is_finite() && high.is_finite() => ((high - low) / ((x - low) * (high - x))).ln(),
            (low, _) if low.is_finite() => -(x - low).ln(),
            (_, high) if high.is_finite() => -(high - x).ln(),
            _ => 0.0,
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            Marginal::Uniform { low, high } => rng.random_range(low..high),
            Marginal::Normal { mean, sd, low, high } => loop {
                // Rejection: validation keeps the truncation's mass above 1e-3.
                let z: f64 = rng.sample(StandardNormal);
                let x = mean + sd * z;
                if x >= low && x <= high {
                    break x;
                }
            },
        }
    }
}

/// The joint prior, in the simulator's parameter order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prior {
    pub names: Vec<String>,
    pub marginals: Vec<Marginal>,
    /// The entries it was built from, in parameter order (what artifacts
    /// store: JSON has no infinities).
    pub specs: Vec<PriorSpec>,
}

impl Prior {
    /// Check the specs against the simulator's parameters (`names`, in
    /// order) and build the prior. Errors name the `[[prior]]` entry.
    pub fn new(specs: &[PriorSpec], names: &[String]) -> Result<Prior> {
        for (i, s) in specs.iter().enumerate() {
            if !names.contains(&s.name) {
                bail!("[[prior]] #{} names `{}`, which is not a parameter of the simulator (its parameters: {})", i + 1, s.name, names.join(", "));
            }
            if specs[..i].iter().any(|o| o.name == s.name) {
                bail!("[[prior]] #{}: parameter `{}` has two priors", i + 1, s.name);
            }
        }
        let mut marginals = Vec::new();
        let mut ordered = Vec::new();
        for name in names {
            let Some(s) = specs.iter().find(|s| &s.name == name) else {
                bail!("the simulator's parameter `{name}` has no [[prior]] entry; add one with `uniform = [low, high]` or `normal = [mean, sd]`");
            };
            ordered.push(s.clone());
            let field = format!("[[prior]] `{name}`");
            marginals.push(match (s.uniform, s.normal) {
                (Some([low, high]), None) => {
                    if s.bounds.is_some() {
                        bail!("{field}: `bounds` applies to a normal prior; a uniform prior is already bounded");
                    }
                    if !(low.is_finite() && high.is_finite() && low < high) {
                        bail!("{field}: `uniform` needs finite low < high, got [{low}, {high}]");
                    }
                    Marginal::Uniform { low, high }
                }
                (None, Some([mean, sd])) => {
                    let [low, high] = s.bounds.unwrap_or([f64::NEG_INFINITY, f64::INFINITY]);
                    if !(mean.is_finite() && sd.is_finite() && sd > 0.0) {
                        bail!("{field}: `normal` needs a finite mean and a positive sd, got [{mean}, {sd}]");
                    }
                    if low.is_nan() || high.is_nan() || low >= high {
                        bail!("{field}: `bounds` needs low < high, got [{low}, {high}]");
                    }
                    let mass = phi((high - mean) / sd) - phi((low - mean) / sd);
                    if mass < 1e-3 {
                        bail!("{field}: the bounds keep only {mass:.1e} of the normal's mass; centre the normal inside them");
                    }
                    Marginal::Normal { mean, sd, low, high }
                }
                _ => bail!("{field}: give exactly one of `uniform = [low, high]` or `normal = [mean, sd]`"),
            });
        }
        Ok(Prior { names: names.to_vec(), marginals, specs: ordered })
    }

    pub fn dim(&self) -> usize {
        self.marginals.len()
    }

    pub fn log_density(&self, theta: &[f64]) -> f64 {
        self.marginals.iter().zip(theta).map(|(m, x)| m.log_density(*x)).sum()
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Vec<f64> {
        self.marginals.iter().map(|m| m.sample(rng)).collect()
    }

    /// Clamp `theta` into the support (ES-MDA's updates can leave it).
    pub fn clamp(&self, theta: &mut [f64]) {
        for (x, m) in theta.iter_mut().zip(&self.marginals) {
            let (low, high) = m.bounds();
            *x = x.clamp(low, high);
        }
    }
}

/// Standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}
