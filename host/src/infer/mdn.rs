//! Step 5: a mixture density network (Bishop 1994) as the amortized
//! posterior q(θ | x): an MLP maps the standardised data x to a Gaussian
//! mixture over the standardised parameters, trained by the negative log
//! likelihood of simulated pairs (θ, x) — neural posterior estimation.
//! Nothing in it is specific to a simulator.
//!
//! Each of the K components has a weight π_k (softmax of logits), a mean
//! μ_k and an upper-triangular precision factor U_k (diagonal through exp,
//! so positive):
//!
//!   log N(θ; μ_k, (U_kᵀU_k)⁻¹) = −d/2 log 2π + Σ_i log U_k,ii − ½‖U_k(θ − μ_k)‖²
//!   −log q(θ | x) = −logsumexp_k(log π_k + log N_k)
//!
//! The mixture lives in an unbounded space: each parameter with a bounded
//! prior is first mapped onto the real line ([`Marginal::to_unbounded`],
//! a logit for a uniform prior), so no posterior mass leaks outside the
//! prior's support and sharp posteriors near a bound stay Gaussian-like
//! (sbi does the same). Sampling picks k ~ π, solves U_k ε' = ε for
//! ε ~ N(0, I) (as ε' = U_k⁻¹ε, the inverse formed once per
//! observation) and maps back. Weights are stored as safetensors with the description
//! (sizes, standardisation, prior) in the metadata.

use super::prior::{Marginal, Prior};
use crate::emulate::net::{read_geohost_metadata, write_safetensors};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use nalgebra::DMatrix;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Network and training settings (`[step5]` in a static plugin-set).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MdnSpec {
    #[serde(default = "components")]
    pub components: usize,
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
    #[serde(default = "max_epochs")]
    pub max_epochs: usize,
    #[serde(default = "batch")]
    pub batch: usize,
    #[serde(default = "lr")]
    pub lr: f64,
    /// Held-out fraction for early stopping.
    #[serde(default = "validation")]
    pub validation: f64,
    /// Epochs without a better validation loss before stopping.
    #[serde(default = "patience")]
    pub patience: usize,
    #[serde(default)]
    pub seed: u64,
}

fn components() -> usize {
    5
}
fn hidden() -> Vec<usize> {
    vec![64, 64]
}
fn max_epochs() -> usize {
    500
}
fn batch() -> usize {
    200
}
fn lr() -> f64 {
    1e-3
}
fn validation() -> f64 {
    0.1
}
fn patience() -> usize {
    20
}

impl Default for MdnSpec {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl MdnSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.components == 0 || self.hidden.is_empty() || self.hidden.contains(&0) || self.batch == 0 || self.max_epochs == 0 {
            bail!("{field}: components, every hidden width, batch and max_epochs must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || !(self.validation > 0.0 && self.validation < 1.0) {
            bail!("{field}: lr must be positive and validation a fraction in (0, 1)");
        }
        Ok(())
    }
}

/// Everything but the weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct MdnDescription {
    pub parameters: Vec<String>,
    pub data_size: usize,
    pub components: usize,
    pub hidden: Vec<usize>,
    /// Whether θ is mapped onto the real line before standardisation
    /// (false in predictors written before the mapping existed).
    #[serde(default)]
    pub unbounded: bool,
    /// Per-dimension standardisation of (mapped) θ and x.
    pub theta_mean: Vec<f64>,
    pub theta_std: Vec<f64>,
    pub x_mean: Vec<f64>,
    pub x_std: Vec<f64>,
    /// The prior (its `[[prior]]` entries), to reject draws outside its support.
    pub prior: Vec<super::prior::PriorSpec>,
}

/// A trained (or loaded) mixture density network.
pub struct Mdn {
    pub desc: MdnDescription,
    pub prior: Prior,
    layers: Vec<(Var, Var)>,
}

/// What training reports.
#[derive(Clone, Debug, Serialize)]
pub struct Training {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_nll: f64,
    pub seconds: f64,
    pub train_pairs: usize,
}

/// Mean and sd of each row, the sd of row i widened by independent noise
/// of sd `noise_sd[i]`; a constant row gets sd 1.
fn moments(m: &DMatrix<f64>, noise_sd: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    m.row_iter()
        .enumerate()
        .map(|(i, r)| {
            let mean = r.mean();
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r.len() as f64 - 1.0).max(1.0) + noise_sd.map_or(0.0, |s| s[i] * s[i]);
            (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
        })
        .unzip()
}

/// Rows `cols` of a `dims × n` matrix, standardised, as a `[cols.len(), dims]` tensor.
fn standardised(m: &DMatrix<f64>, cols: &[usize], mean: &[f64], std: &[f64]) -> Result<Tensor> {
    let d = m.nrows();
    let mut v = Vec::with_capacity(cols.len() * d);
    for &j in cols {
        for i in 0..d {
            v.push(((m[(i, j)] - mean[i]) / std[i]) as f32);
        }
    }
    Ok(Tensor::from_vec(v, (cols.len(), d), &Device::Cpu)?)
}

impl Mdn {
    fn outputs_per_component(d: usize) -> usize {
        1 + d + d * d
    }

    fn init(desc: MdnDescription, rng: &mut impl Rng) -> Result<Mdn> {
        let prior = Prior::new(&desc.prior, &desc.parameters)?;
        let d = desc.parameters.len();
        let mut sizes = vec![desc.data_size];
        sizes.extend(&desc.hidden);
        sizes.push(desc.components * Self::outputs_per_component(d));
        let layers = sizes
            .windows(2)
            .map(|w| {
                let bound = 1.0 / (w[0] as f64).sqrt();
                let weights: Vec<f32> = (0..w[0] * w[1]).map(|_| rng.random_range(-bound..bound) as f32).collect();
                let bias: Vec<f32> = (0..w[1]).map(|_| rng.random_range(-bound..bound) as f32).collect();
                Ok((
                    Var::from_tensor(&Tensor::from_vec(weights, (w[0], w[1]), &Device::Cpu)?)?,
                    Var::from_tensor(&Tensor::from_vec(bias, (1, w[1]), &Device::Cpu)?)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Mdn { desc, prior, layers })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    /// Mixture parameters for standardised data `x` (`[B, data_size]`):
    /// log weights `[B, K]`, means `[B, K, d]`, precision factors `[B, K, d, d]`
    /// and their log-determinants `[B, K]`.
    fn mixture(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (d, k) = (self.desc.parameters.len(), self.desc.components);
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        let batch = h.dim(0)?;
        let h = h.reshape((batch, k, Self::outputs_per_component(d)))?;
        let log_pi = candle_nn::ops::log_softmax(&h.narrow(2, 0, 1)?.squeeze(2)?, 1)?;
        let mu = h.narrow(2, 1, d)?;
        let raw = h.narrow(2, 1 + d, d * d)?.reshape((batch, k, d, d))?;
        let (diag, strict) = masks(d)?;
        let on_diag = raw.broadcast_mul(&diag)?;
        let u = (raw.broadcast_mul(&strict)? + on_diag.exp()?.broadcast_mul(&diag)?)?;
        let log_det = on_diag.sum(D::Minus1)?.sum(D::Minus1)?;
        Ok((log_pi, mu, u, log_det))
    }

    /// Mean negative log density of standardised θ (`[B, d]`) given x.
    fn nll(&self, x: &Tensor, theta: &Tensor) -> Result<Tensor> {
        let d = self.desc.parameters.len();
        let (log_pi, mu, u, log_det) = self.mixture(x)?;
        let (batch, k) = log_pi.dims2()?;
        let diff = theta.unsqueeze(1)?.broadcast_sub(&mu)?.reshape((batch * k, d, 1))?;
        let z = u.reshape((batch * k, d, d))?.matmul(&diff)?.reshape((batch, k, d))?;
        let quad = z.sqr()?.sum(D::Minus1)?;
        let log_n = ((log_det - (quad * 0.5)?)? - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln())?;
        let total = (log_pi + log_n)?;
        // logsumexp over components, stabilised by the max.
        let max = total.max_keepdim(1)?;
        let lse = (total.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max)?;
        Ok(lse.neg()?.mean_all()?)
    }

    /// Train on pairs (`thetas`: `d × n`, `xs`: `data_size × n`).
    /// With `noise_sd`, `xs` are noise-free and each epoch trains on
    /// `xs + N(0, diag(noise_sd²))` drawn afresh (the validation split's
    /// noise is drawn once), so the network cannot memorise one noise
    /// realisation; without, `xs` are used as they are.
    /// `progress(epoch, train_nll, val_nll)` after every epoch.
    pub fn train(
        prior: &Prior,
        thetas: &DMatrix<f64>,
        xs: &DMatrix<f64>,
        noise_sd: Option<&[f64]>,
        spec: &MdnSpec,
        progress: &mut dyn FnMut(usize, f64, f64),
    ) -> Result<(Mdn, Training)> {
        spec.validate("[step5]")?;
        let n = thetas.ncols();
        if xs.ncols() != n || thetas.nrows() != prior.dim() {
            bail!("training pairs: {} parameter vectors of size {} and {} data vectors (prior has {} parameters)", n, thetas.nrows(), xs.ncols(), prior.dim());
        }
        if thetas.iter().chain(xs.iter()).chain(noise_sd.unwrap_or_default()).any(|v| !v.is_finite()) {
            bail!("the training pairs contain non-finite values");
        }
        if noise_sd.is_some_and(|sd| sd.len() != xs.nrows() || sd.iter().any(|s| *s < 0.0)) {
            bail!("the observation-error sd needs {} non-negative values, one per datum", xs.nrows());
        }
        let n_val = ((n as f64) * spec.validation).ceil() as usize;
        if n_val < 1 || n - n_val < spec.batch.min(n) || n < 10 {
            bail!("{n} training pairs are too few (validation fraction {}, batch {})", spec.validation, spec.batch);
        }
        let n_train = n - n_val;
        let thetas = &to_unbounded(&prior.marginals, thetas);
        let train_cols: Vec<usize> = (0..n_train).collect();
        let (theta_mean, theta_std) = moments(&thetas.columns(0, n_train).into_owned(), None);
        let (x_mean, x_std) = moments(&xs.columns(0, n_train).into_owned(), noise_sd);
        let desc = MdnDescription {
            parameters: prior.names.clone(),
            data_size: xs.nrows(),
            components: spec.components,
            hidden: spec.hidden.clone(),
            unbounded: true,
            theta_mean,
            theta_std,
            x_mean,
            x_std,
            prior: prior.specs.clone(),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
        let mdn = Mdn::init(desc, &mut rng)?;
        let d = &mdn.desc;
        let val_cols: Vec<usize> = (n_train..n).collect();
        // Noise in standardised units, and one draw of it added to `x`.
        let noise: Option<Vec<f32>> = noise_sd.map(|sd| sd.iter().zip(&d.x_std).map(|(e, s)| (e / s) as f32).collect());
        let with_noise = |x: &Tensor, rng: &mut rand_chacha::ChaCha8Rng| -> Result<Tensor> {
            let Some(noise) = &noise else { return Ok(x.clone()) };
            let (rows, cols) = x.dims2()?;
            let eps: Vec<f32> = (0..rows * cols).map(|i| noise[i % cols] * rng.sample::<f32, _>(StandardNormal)).collect();
            Ok((x + Tensor::from_vec(eps, (rows, cols), &Device::Cpu)?)?)
        };
        let val_theta = standardised(thetas, &val_cols, &d.theta_mean, &d.theta_std)?;
        let val_x = with_noise(&standardised(xs, &val_cols, &d.x_mean, &d.x_std)?, &mut rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ 0x7a11))?;
        let (clean_x, all_theta) = (standardised(xs, &train_cols, &d.x_mean, &d.x_std)?, standardised(thetas, &train_cols, &d.theta_mean, &d.theta_std)?);
        let mut opt = AdamW::new(mdn.vars(), ParamsAdamW { lr: spec.lr, weight_decay: 0.0, ..Default::default() })?;
        let mut order: Vec<u32> = (0..n_train as u32).collect();
        let (mut best, mut best_epoch, mut best_params) = (f64::INFINITY, 0, Vec::new());
        let start = Instant::now();
        let mut epochs = 0;
        for epoch in 0..spec.max_epochs {
            epochs = epoch + 1;
            order.shuffle(&mut rng);
            let all_x = with_noise(&clean_x, &mut rng)?;
            let mut total = 0.0;
            for rows in order.chunks(spec.batch) {
                let idx = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
                let loss = mdn.nll(&all_x.index_select(&idx, 0)?, &all_theta.index_select(&idx, 0)?)?;
                opt.backward_step(&loss)?;
                total += loss.to_scalar::<f32>()? as f64 * rows.len() as f64;
            }
            let val = mdn.nll(&val_x, &val_theta)?.to_scalar::<f32>()? as f64;
            if !val.is_finite() {
                bail!("posterior training diverged at epoch {epochs} (validation NLL {val}); lower [step5] lr");
            }
            progress(epoch, total / n_train as f64, val);
            if val < best {
                (best, best_epoch) = (val, epoch);
                best_params = mdn.vars().iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>()?;
            } else if epoch - best_epoch >= spec.patience {
                break;
            }
        }
        for (var, best) in mdn.vars().iter().zip(&best_params) {
            var.set(best)?;
        }
        let training = Training { epochs, best_epoch: best_epoch + 1, best_val_nll: best, seconds: start.elapsed().as_secs_f64(), train_pairs: n_train };
        Ok((mdn, training))
    }

    /// Draw `n` posterior samples (`d × n`, in parameter units) given one
    /// observation `x`, rejecting draws outside the prior's support.
    pub fn sample(&self, x: &[f64], n: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        let d = &self.desc;
        let dim = d.parameters.len();
        if x.len() != d.data_size {
            bail!("the observation has {} values, but the posterior was trained on data of size {}", x.len(), d.data_size);
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            bail!("the observation's value {i} is {}", x[i]);
        }
        let xs =
            Tensor::from_vec(x.iter().zip(&d.x_mean).zip(&d.x_std).map(|((v, m), s)| ((v - m) / s) as f32).collect::<Vec<f32>>(), (1, x.len()), &Device::Cpu)?;
        let (log_pi, mu, u, _) = self.mixture(&xs)?;
        let k = d.components;
        let pi: Vec<f64> = log_pi.squeeze(0)?.to_vec1::<f32>()?.iter().map(|v| (*v as f64).exp()).collect();
        let mu: Vec<f32> = mu.flatten_all()?.to_vec1()?;
        let u: Vec<f32> = u.flatten_all()?.to_vec1()?;
        // Each component's covariance factor U_k⁻¹ (upper triangular), once.
        let inverses: Vec<DMatrix<f64>> = (0..k)
            .map(|c| {
                let u = DMatrix::from_row_iterator(dim, dim, u[c * dim * dim..(c + 1) * dim * dim].iter().map(|v| *v as f64));
                u.solve_upper_triangular(&DMatrix::identity(dim, dim)).context("a singular precision factor")
            })
            .collect::<Result<_>>()?;
        let dist = rand::distr::weighted::WeightedIndex::new(&pi).context("mixture weights")?;
        let mut out = DMatrix::zeros(dim, n);
        let (mut eps, mut theta) = (vec![0.0; dim], vec![0.0; dim]);
        let mut filled = 0;
        let mut tries = 0usize;
        while filled < n {
            tries += 1;
            if tries > 1000 * n + 10_000 {
                bail!("fewer than 1 in 1000 posterior draws fall inside the prior's support ({filled} of {n} after {tries}); the observation may be far from anything simulated");
            }
            let c = rng.sample(&dist);
            eps.iter_mut().for_each(|e| *e = rng.sample::<f64, _>(StandardNormal));
            let inv = &inverses[c];
            for i in 0..dim {
                let z: f64 = (i..dim).map(|j| inv[(i, j)] * eps[j]).sum();
                theta[i] = (mu[c * dim + i] as f64 + z) * d.theta_std[i] + d.theta_mean[i];
            }
            if d.unbounded {
                for (t, m) in theta.iter_mut().zip(&self.prior.marginals) {
                    *t = m.from_unbounded(*t);
                }
            }
            // With the mapping every draw is inside; older predictors reject.
            if self.prior.log_density(&theta).is_finite() {
                out.column_mut(filled).copy_from_slice(&theta);
                filled += 1;
            }
        }
        Ok(out)
    }

    /// log q(θ | x) up to the standardisation's constant Jacobian (enough
    /// to rank θs under one x), for every column of `thetas` (−∞ outside
    /// the prior's support).
    pub fn log_prob(&self, x: &[f64], thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        let d = &self.desc;
        if x.len() != d.data_size || thetas.nrows() != d.parameters.len() {
            bail!("log_prob: data of size {} and parameters of size {}; expected {} and {}", x.len(), thetas.nrows(), d.data_size, d.parameters.len());
        }
        let n = thetas.ncols();
        let xs: Vec<f32> = (0..n).flat_map(|_| x.iter().zip(&d.x_mean).zip(&d.x_std).map(|((v, m), s)| ((v - m) / s) as f32)).collect();
        let xs = Tensor::from_vec(xs, (n, x.len()), &Device::Cpu)?;
        let cols: Vec<usize> = (0..n).collect();
        let mapped = if d.unbounded { to_unbounded(&self.prior.marginals, thetas) } else { thetas.clone() };
        let th = standardised(&mapped, &cols, &d.theta_mean, &d.theta_std)?;
        let dim = d.parameters.len();
        let (log_pi, mu, u, log_det) = self.mixture(&xs)?;
        let k = d.components;
        let diff = th.unsqueeze(1)?.broadcast_sub(&mu)?.reshape((n * k, dim, 1))?;
        let z = u.reshape((n * k, dim, dim))?.matmul(&diff)?.reshape((n, k, dim))?;
        let total = ((log_pi + log_det)? - (z.sqr()?.sum(D::Minus1)? * 0.5)?)?;
        let max = total.max_keepdim(1)?;
        let lse = (total.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max)?;
        let lse = lse.flatten_all()?.to_vec1::<f32>()?;
        Ok(thetas
            .column_iter()
            .zip(lse)
            .map(|(theta, lp)| {
                let theta = theta.as_slice();
                if !self.prior.log_density(theta).is_finite() {
                    return f64::NEG_INFINITY;
                }
                let jacobian: f64 = if d.unbounded { self.prior.marginals.iter().zip(theta).map(|(m, x)| m.log_jacobian(*x)).sum() } else { 0.0 };
                f64::from(lp) + jacobian
            })
            .collect())
    }

    /// Weights and description as one safetensors file.
    pub fn to_safetensors(&self, training: &serde_json::Value) -> Result<Vec<u8>> {
        let named: Vec<(String, &Var)> =
            self.layers.iter().enumerate().flat_map(|(i, (w, b))| [(format!("layer{i}.weight"), w), (format!("layer{i}.bias"), b)]).collect();
        write_safetensors(&named, serde_json::json!({ "predictor": "mdn", "description": self.desc, "training": training }))
    }

    /// Read a posterior back; `label` names the bytes in errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Mdn, serde_json::Value)> {
        let meta = read_geohost_metadata(label, bytes, "; not a geohost predictor")?;
        if meta["predictor"] != "mdn" {
            bail!("{label} is not a posterior predictor (an emulator's weights?)");
        }
        let desc: MdnDescription = serde_json::from_value(meta["description"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable description: {e}"))?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mdn = Mdn::init(desc, &mut rng)?;
        for (i, (w, b)) in mdn.layers.iter().enumerate() {
            for (name, var) in [(format!("layer{i}.weight"), w), (format!("layer{i}.bias"), b)] {
                let t = tensors.get(&name).ok_or_else(|| anyhow::anyhow!("{label}: tensor `{name}` is missing"))?;
                if t.dims() != var.dims() {
                    bail!("{label}: tensor `{name}` has shape {:?}, the description needs {:?}", t.dims(), var.dims());
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        Ok((mdn, meta["training"].clone()))
    }
}

/// Every column of `thetas` (`d × n`) mapped onto the real line.
fn to_unbounded(marginals: &[Marginal], thetas: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(thetas.nrows(), thetas.ncols(), |i, j| marginals[i].to_unbounded(thetas[(i, j)]))
}

/// Diagonal and strictly-upper masks of a d × d matrix.
fn masks(d: usize) -> Result<(Tensor, Tensor)> {
    let diag: Vec<f32> = (0..d * d).map(|i| if i / d == i % d { 1.0 } else { 0.0 }).collect();
    let strict: Vec<f32> = (0..d * d).map(|i| if i % d > i / d { 1.0 } else { 0.0 }).collect();
    Ok((Tensor::from_vec(diag, (d, d), &Device::Cpu)?, Tensor::from_vec(strict, (d, d), &Device::Cpu)?))
}
