//! Three tasks of the simulation-based-inference benchmark sbibm (Lueckmann
//! et al. 2021, package `sbibm` 1.1.0) as one stochastic `static-model`,
//! the task chosen by `config.task`. Each is written from the task's
//! definition in sbibm; parameters are named `parameter_1` … as in sbibm's
//! reference-posterior files, and outputs follow `data_1` … .
//!
//! - `gaussian_linear_uniform`: θ ∈ [−1, 1]¹⁰, x ~ N(θ, 0.1·I).
//! - `gaussian_mixture`: θ ∈ [−10, 10]², x ~ ½ N(θ, I) + ½ N(θ, 0.01·I).
//! - `bernoulli_glm`: a GLM of 100 Bernoulli spikes, P(spike_t) =
//!   σ(X_t·β) with sbibm's design matrix X (100 × 10: an offset column and
//!   the white-noise stimulus at lags 0–8); the data are the spike count and
//!   the spike-triggered sums Σ_t y_t I_{t−m}, m = 0…8 (sbibm's
//!   `conv1d(y, I, padding = 8)[-9:]`). sbibm's prior is N(0, B⁻¹) with a
//!   non-diagonal precision B (a smoothness penalty on the filter); geohost's
//!   priors are independent, so this task takes whitened parameters
//!   z ~ N(0, I) (`z_1` …) and simulates with β = R⁻ᵀz, where B = RRᵀ
//!   (Cholesky): β then has exactly sbibm's prior. Compare with sbibm's
//!   reference samples after mapping draws back to β ([`bernoulli_beta`]
//!   is that map). X and the stimulus I come from sbibm's files
//!   (`config.design`, 1000 numbers row by row, and `config.stimulus`, 100),
//!   which scripts/fetch-sbibm.sh extracts; they are not in this repository.

use geohost_sdk::{Config, SimulatorInfo, SplitMix64, StaticModel};

enum Task {
    GaussianLinearUniform,
    GaussianMixture,
    BernoulliGlm { design: Vec<f64>, stimulus: Vec<f64>, whitening: Vec<f64> },
}

struct Sbibm {
    task: Task,
}

/// sbibm's prior precision of the Bernoulli GLM (10 × 10, row-major):
/// 0.5 for the offset and FᵀF for the filter, F = D² + diag(√(i/9)), D the
/// first-difference matrix.
pub fn bernoulli_precision() -> Vec<f64> {
    let m = 9;
    let d = |i: usize, j: usize| if i == j { 1.0 } else if i == j + 1 { -1.0 } else { 0.0 };
    let mut f = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            f[i * m + j] = (0..m).map(|k| d(i, k) * d(k, j)).sum::<f64>() + if i == j { (i as f64 / m as f64).sqrt() } else { 0.0 };
        }
    }
    let mut b = vec![0.0; 100];
    b[0] = 0.5;
    for i in 0..m {
        for j in 0..m {
            b[(i + 1) * 10 + j + 1] = (0..m).map(|k| f[k * m + i] * f[k * m + j]).sum();
        }
    }
    b
}

/// The lower Cholesky factor R of a symmetric positive-definite n × n
/// matrix (row-major), A = RRᵀ.
fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut r = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>();
            r[i * n + j] = if i == j { s.sqrt() } else { s / r[j * n + j] };
        }
    }
    r
}

/// β = R⁻ᵀz for whitened parameters z (back substitution on Rᵀ, upper).
pub fn bernoulli_beta(r: &[f64], z: &[f64]) -> Vec<f64> {
    let n = z.len();
    let mut beta = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = z[i] - (i + 1..n).map(|k| r[k * n + i] * beta[k]).sum::<f64>();
        beta[i] = s / r[i * n + i];
    }
    beta
}

impl StaticModel for Sbibm {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["task", "design", "stimulus"])?;
        let task = match config.str_or("task", "")?.as_str() {
            "gaussian_linear_uniform" => Task::GaussianLinearUniform,
            "gaussian_mixture" => Task::GaussianMixture,
            "bernoulli_glm" => {
                let read = |key: &str, len: usize| -> Result<Vec<f64>, String> {
                    let v: Vec<f64> = config
                        .get(key)?
                        .ok_or_else(|| format!("config: bernoulli_glm needs `{key}` ({len} numbers from sbibm's files: run scripts/fetch-sbibm.sh)"))?;
                    if v.len() != len || v.iter().any(|x| !x.is_finite()) {
                        return Err(format!("config: `{key}` must hold {len} finite numbers, got {}", v.len()));
                    }
                    Ok(v)
                };
                Task::BernoulliGlm { design: read("design", 1000)?, stimulus: read("stimulus", 100)?, whitening: cholesky(&bernoulli_precision(), 10) }
            }
            "" => return Err("config: `task` is required: gaussian_linear_uniform, gaussian_mixture or bernoulli_glm".into()),
            other => return Err(format!("config: task `{other}` is not one of gaussian_linear_uniform, gaussian_mixture, bernoulli_glm")),
        };
        Ok(Sbibm { task })
    }

    fn info(&self) -> SimulatorInfo {
        let (name, dim, out) = match self.task {
            Task::GaussianLinearUniform => ("parameter", 10, 10),
            Task::GaussianMixture => ("parameter", 2, 2),
            Task::BernoulliGlm { .. } => ("z", 10, 10),
        };
        SimulatorInfo {
            name: "sbibm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: (1..=dim).map(|i| (format!("{name}_{i}"), "1".into())).collect(),
            output_size: out,
            output_units: "1".into(),
            settings: Vec::new(),
            stochastic: true,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], rng: &mut SplitMix64) -> Result<(), String> {
        match &self.task {
            Task::GaussianLinearUniform => {
                let sd = 0.1f64.sqrt();
                for (yi, t) in y.iter_mut().zip(theta) {
                    *yi = t + sd * rng.normal();
                }
            }
            Task::GaussianMixture => {
                let sd = if rng.uniform() < 0.5 { 1.0 } else { 0.1 };
                for (yi, t) in y.iter_mut().zip(theta) {
                    *yi = t + sd * rng.normal();
                }
            }
            Task::BernoulliGlm { design, stimulus, whitening } => {
                let beta = bernoulli_beta(whitening, theta);
                let mut spikes = [0.0f64; 100];
                for (t, s) in spikes.iter_mut().enumerate() {
                    let psi: f64 = design[t * 10..(t + 1) * 10].iter().zip(&beta).map(|(x, b)| x * b).sum();
                    *s = if rng.uniform() < 1.0 / (1.0 + (-psi).exp()) { 1.0 } else { 0.0 };
                }
                y[0] = spikes.iter().sum();
                for m in 0..9 {
                    y[1 + m] = (m..100).map(|t| spikes[t] * stimulus[t - m]).sum();
                }
            }
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Sbibm);
