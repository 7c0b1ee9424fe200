//! The oracle for static problems (step 2 of the cycle for problems such
//! as plume source inversion): inference over a simulator's parameters.
//!
//! The problem is y = H(G(θ)) + ε with ε ~ N(0, diag(r)): G a simulator
//! plugin, H an observation-operator plugin, a prior over θ. The classical
//! methods — ES-MDA ([`esmda`]) and an affine-invariant ensemble MCMC
//! sampler ([`mcmc`], the reference posterior) — are written against the
//! [`Simulator`] and [`ObsOperator`] traits, so a wasm simulator and a
//! native one are interchangeable.

pub mod esmda;
pub mod mcmc;
pub mod prior;

use anyhow::{Context, Result};
use geohost_sandbox::model::{ObsOperator, Simulator};
use nalgebra::{DMatrix, DVector};
use prior::Prior;
use rand::Rng;
use rand_distr::StandardNormal;

/// A static inverse problem: prior, forward map H∘G and data.
pub struct Problem<'a> {
    pub prior: Prior,
    pub simulator: &'a mut dyn Simulator,
    pub obs: &'a mut dyn ObsOperator,
    /// The observation y and the diagonal of R.
    pub y: DVector<f64>,
    pub r: DVector<f64>,
    /// Seed passed to the simulator (its noise, if any, is then fixed).
    pub seed: u64,
    /// Simulations run so far.
    pub simulations: usize,
    /// For a stochastic simulator: the synthetic likelihood of Wood (2010)
    /// from this many simulations per θ (each with its own seed), with a
    /// diagonal covariance: y ~ N(μ(θ), diag(s²(θ)) + R). `None`: the
    /// Gaussian likelihood around one fixed-seed simulation.
    pub synthetic: Option<usize>,
}

impl<'a> Problem<'a> {
    /// H(G(θ)) for every column of `thetas` (`parameters × batch`).
    pub fn predict(&mut self, thetas: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        self.simulations += thetas.ncols();
        observed(self.simulator, self.obs, thetas, self.seed)
    }

    /// Log posterior up to a constant, per column: −∞ outside the prior's
    /// support (those columns are not simulated).
    pub fn log_posterior(&mut self, thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        let (prior, ll) = self.log_prior_and_likelihood(thetas)?;
        Ok(prior.iter().zip(&ll).map(|(p, l)| p + l).collect())
    }

    /// Log prior density and log likelihood (up to constants) per column;
    /// both −∞ outside the prior's support (those columns are not simulated).
    pub fn log_prior_and_likelihood(&mut self, thetas: &DMatrix<f64>) -> Result<(Vec<f64>, Vec<f64>)> {
        let lp: Vec<f64> = thetas.column_iter().map(|c| self.prior.log_density(c.as_slice())).collect();
        let inside: Vec<usize> = (0..lp.len()).filter(|&j| lp[j].is_finite()).collect();
        let mut ll = vec![f64::NEG_INFINITY; lp.len()];
        if inside.is_empty() {
            return Ok((lp, ll));
        }
        let batch = thetas.select_columns(&inside);
        match self.synthetic {
            None => {
                let pred = self.predict(&batch)?;
                for (k, &j) in inside.iter().enumerate() {
                    let misfit: f64 = pred.column(k).iter().zip(self.y.iter()).zip(self.r.iter()).map(|((p, y), r)| (y - p).powi(2) / r).sum();
                    ll[j] = -0.5 * misfit;
                }
            }
            Some(repeats) => {
                // Every repeat its own seed: the simulator's own noise
                // enters the likelihood through the sample variance.
                let (p, b) = (self.y.len(), batch.ncols());
                let (mut sum, mut sum_sq) = (DMatrix::zeros(p, b), DMatrix::zeros(p, b));
                for k in 0..repeats {
                    self.simulations += b;
                    let pred = observed(self.simulator, self.obs, &batch, self.seed.wrapping_add(1 + k as u64))?;
                    sum += &pred;
                    sum_sq += pred.component_mul(&pred);
                }
                let n = repeats as f64;
                for (k, &j) in inside.iter().enumerate() {
                    let mut total = 0.0;
                    for i in 0..p {
                        let mean = sum[(i, k)] / n;
                        // Floored: a noise-free operator on an output the
                        // simulations all agree on.
                        let var = (((sum_sq[(i, k)] - n * mean * mean) / (n - 1.0)).max(0.0) + self.r[i]).max(f64::MIN_POSITIVE);
                        total += (self.y[i] - mean).powi(2) / var + var.ln();
                    }
                    ll[j] = -0.5 * total;
                }
            }
        }
        Ok((lp, ll))
    }
}

/// The noise-free H(G(θ)) for every column of `thetas` (`parameters × batch`).
pub fn observed(simulator: &mut dyn Simulator, obs: &mut dyn ObsOperator, thetas: &DMatrix<f64>, seed: u64) -> Result<DMatrix<f64>> {
    let out = simulator.simulate(thetas, seed)?;
    obs.observe(&out, 0.0).context("observing the simulated outputs")
}

/// A synthetic observation: θ_true (given, or drawn from the prior) and
/// y = H(G(θ_true)) + ε, ε ~ N(0, R).
pub fn synthesize(
    problem_parts: (&mut dyn Simulator, &mut dyn ObsOperator),
    prior: &Prior,
    truth: Option<Vec<f64>>,
    seed: u64,
    rng: &mut impl Rng,
) -> Result<(Vec<f64>, DVector<f64>)> {
    let (simulator, obs) = problem_parts;
    let theta = truth.unwrap_or_else(|| prior.sample(rng));
    let out = simulator.simulate(&DMatrix::from_column_slice(theta.len(), 1, &theta), seed)?;
    let clean = obs.observe(&out, 0.0)?;
    let r = &obs.info().noise_variance;
    let y = DVector::from_iterator(clean.nrows(), (0..clean.nrows()).map(|i| clean[(i, 0)] + r[i].sqrt() * rng.sample::<f64, _>(StandardNormal)));
    Ok((theta, y))
}
