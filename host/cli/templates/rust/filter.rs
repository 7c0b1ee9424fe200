//! `{{name}}`: a data-assimilation method, submitted to a benchmark as a
//! `filter` component. Replace the stochastic EnKF below (perturbed
//! observations, serial over observations, multiplicative inflation) by
//! yours: `init` reads the config and the problem (sizes, R's diagonal,
//! where each observation sits), `info` names the filter and its ensemble
//! size, `analyse` turns the forecast ensemble into the analysis in place.
//! Observations are processed one at a time (R is diagonal), each updating
//! the state and the remaining observed values of every member, so the
//! result is the EnKF's with serial processing (Houtekamer & Mitchell
//! 2001); geohost's plugins/filter-etkf is the deterministic square-root
//! filter.

use geohost_sdk::{Config, Filter, FilterInfo, Members, Problem, SplitMix64};

struct PerturbedObsEnkf {
    /// Ensemble size N.
    n: usize,
    /// Multiplicative inflation of the analysis anomalies.
    infl: f64,
    /// R's diagonal.
    r: Vec<f64>,
}

impl Filter for PerturbedObsEnkf {
    fn init(config: &Config, problem: &Problem) -> Result<Self, String> {
        config.allow_only(&["N", "infl"])?;
        let n = config.usize_or("N", 20)?;
        if n < 2 {
            return Err(format!("`N` must be at least 2, got {n}"));
        }
        Ok(PerturbedObsEnkf { n, infl: config.f64_or("infl", 1.0)?, r: problem.noise_variance.clone() })
    }

    fn info(&self) -> FilterInfo {
        FilterInfo { name: "{{name}}".into(), version: env!("CARGO_PKG_VERSION").into(), members: self.n }
    }

    /// `x`: N members of the state (row-major); `hx`: their observed images.
    fn analyse(&mut self, x: &mut Members<'_>, hx: &[f64], y: &[f64], _t: f64, rng: &mut SplitMix64) -> Result<(), String> {
        let (n, m, p) = (x.members, x.size, y.len());
        // The members' observed values, updated with the state as each
        // observation is assimilated.
        let mut hx = hx.to_vec();
        let mut gain_x = vec![0.0; m];
        let mut gain_y = vec![0.0; p];
        for k in 0..p {
            let ybar = (0..n).map(|j| hx[j * p + k]).sum::<f64>() / n as f64;
            let dy: Vec<f64> = (0..n).map(|j| hx[j * p + k] - ybar).collect();
            let denominator = (n - 1) as f64 * (dy.iter().map(|d| d * d).sum::<f64>() / (n - 1) as f64 + self.r[k]);
            // K = cov(x, y_k) / (var(y_k) + r_k), for the state and the observed values.
            for (i, g) in gain_x.iter_mut().enumerate() {
                let xbar = (0..n).map(|j| x.member(j)[i]).sum::<f64>() / n as f64;
                *g = (0..n).map(|j| (x.member(j)[i] - xbar) * dy[j]).sum::<f64>() / denominator;
            }
            for (l, g) in gain_y.iter_mut().enumerate() {
                let hbar = (0..n).map(|j| hx[j * p + l]).sum::<f64>() / n as f64;
                *g = (0..n).map(|j| (hx[j * p + l] - hbar) * dy[j]).sum::<f64>() / denominator;
            }
            for j in 0..n {
                // Perturbed observation: y_k + ε, ε ~ N(0, r_k).
                let innovation = y[k] + self.r[k].sqrt() * rng.normal() - hx[j * p + k];
                for (v, g) in x.member_mut(j).iter_mut().zip(&gain_x) {
                    *v += g * innovation;
                }
                for (v, g) in hx[j * p..(j + 1) * p].iter_mut().zip(&gain_y) {
                    *v += g * innovation;
                }
            }
        }
        let mean = |v: &dyn Fn(usize) -> f64| (0..n).map(v).sum::<f64>() / n as f64;
        if self.infl != 1.0 {
            let xbar: Vec<f64> = (0..m).map(|i| mean(&|j| x.member(j)[i])).collect();
            for j in 0..n {
                for (v, c) in x.member_mut(j).iter_mut().zip(&xbar) {
                    *v = c + self.infl * (*v - c);
                }
            }
        }
        Ok(())
    }
}

geohost_sdk::export_filter!(PerturbedObsEnkf);
