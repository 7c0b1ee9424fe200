//! Step 5's conditional density estimators behind one type: the mixture
//! density network ([`crate::mdn`]) or the neural spline flow
//! ([`crate::flow`]), chosen by `[step5] network.estimator`. Everything
//! that trains, stores, samples or scores an amortized posterior goes
//! through [`Density`]; only the refinement stage and the retrieval row's
//! one-pass moments need the MDN itself ([`Density::as_mdn`]).

use crate::flow::{Nsf, Transform};
use crate::mdn::{Estimator, Mdn, MdnSpec, Training};
use anyhow::{bail, Result};
use geohost_da::params::prior::Prior;
use nalgebra::DMatrix;
use rand::Rng;

/// A trained (or loaded) q(θ | x).
pub enum Density {
    Mdn(Mdn),
    Nsf(Nsf),
}

impl Density {
    /// Train the estimator `spec.estimator` names on pairs (`thetas`:
    /// `d × n`, `xs`: `data_size × n`); see [`Mdn::train`] for the noise
    /// and the split.
    pub fn train(
        prior: &Prior,
        thetas: &DMatrix<f64>,
        xs: &DMatrix<f64>,
        noise_sd: Option<&[f64]>,
        spec: &MdnSpec,
        progress: &mut dyn FnMut(usize, f64, f64),
    ) -> Result<(Density, Training)> {
        Ok(match spec.estimator {
            Estimator::Mdn => {
                let (m, t) = Mdn::train(prior, thetas, xs, noise_sd, spec, progress)?;
                (Density::Mdn(m), t)
            }
            Estimator::Nsf | Estimator::Maf => {
                let transform = if spec.estimator == Estimator::Nsf { Transform::Spline } else { Transform::Affine };
                let (f, t) = Nsf::train(prior, thetas, xs, noise_sd, spec, transform, progress)?;
                (Density::Nsf(f), t)
            }
        })
    }

    /// `mdn`, `nsf` or `maf`, as the predictor file's metadata says.
    pub fn kind(&self) -> &'static str {
        match self {
            Density::Mdn(_) => "mdn",
            Density::Nsf(f) => f.kind(),
        }
    }

    pub fn parameters(&self) -> &[String] {
        match self {
            Density::Mdn(m) => &m.desc.parameters,
            Density::Nsf(f) => &f.desc.parameters,
        }
    }

    pub fn data_size(&self) -> usize {
        match self {
            Density::Mdn(m) => m.desc.data_size,
            Density::Nsf(f) => f.desc.data_size,
        }
    }

    pub fn prior(&self) -> &Prior {
        match self {
            Density::Mdn(m) => &m.prior,
            Density::Nsf(f) => &f.prior,
        }
    }

    /// `n` draws (`d × n`, parameter units) given the observation `x`.
    pub fn sample(&self, x: &[f64], n: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        match self {
            Density::Mdn(m) => m.sample(x, n, rng),
            Density::Nsf(f) => f.sample(x, n, rng),
        }
    }

    /// log q(θ | x) per column of `thetas` (−∞ outside the prior's
    /// support; the MDN's up to a constant, the flow's normalised).
    pub fn log_prob(&self, x: &[f64], thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        match self {
            Density::Mdn(m) => m.log_prob(x, thetas),
            Density::Nsf(f) => f.log_prob(x, thetas),
        }
    }

    /// Weights and description as one safetensors file.
    pub fn to_safetensors(&self, training: &serde_json::Value) -> Result<Vec<u8>> {
        match self {
            Density::Mdn(m) => m.to_safetensors(training),
            Density::Nsf(f) => f.to_safetensors(training),
        }
    }

    /// The MDN, for what only it supports (refinement, one-pass moments); the
    /// error names `what`.
    pub fn as_mdn(&self, what: &str) -> Result<&Mdn> {
        match self {
            Density::Mdn(m) => Ok(m),
            Density::Nsf(f) => bail!("{what} needs a mixture-density-network predictor (estimator = \"mdn\"); this one is a flow ({})", f.kind()),
        }
    }
}
