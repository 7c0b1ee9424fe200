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

use crate::fused::{AdamW as FusedAdamW, FitData, MlpTrainer};
use crate::net::Scaling;
use crate::net::{read_geohost_metadata, write_safetensors};
use crate::stopping::EarlyStopping;
use crate::{row_moments as moments, standardised_rows as table};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use geohost_da::params::prior::{Marginal, Prior};
use nalgebra::DMatrix;
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
    #[serde(default = "crate::stopping::default_validation")]
    pub validation: f64,
    /// Epochs without a better validation loss before stopping.
    #[serde(default = "patience")]
    pub patience: usize,
    /// Epochs without a better validation loss before the learning rate
    /// is halved (and again after as many more); 0 keeps it fixed.
    #[serde(default = "halve_after")]
    pub halve_after: usize,
    /// Anneal the learning rate by a half cosine over `max_epochs`
    /// (skipped when false, so request keys of older specs still match).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cosine: bool,
    #[serde(default)]
    pub seed: u64,
    /// Which conditional density estimator: `mdn` (this module) or `nsf`
    /// ([`crate::flow`]); left out of the spec when `mdn`, so request keys
    /// of older specs still match.
    #[serde(default, skip_serializing_if = "Estimator::is_mdn")]
    pub estimator: Estimator,
    /// The flow's spline bins (default 8) and interval half-width in
    /// standardised units (default 5); `nsf` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// A flow's stacked autoregressive layers (default: 1 for `nsf`, 5 for `maf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
}

/// The conditional density estimator of step 5.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// A mixture density network (full-covariance Gaussians).
    #[default]
    Mdn,
    /// A neural spline flow (autoregressive rational-quadratic splines).
    Nsf,
    /// A masked-autoregressive-style flow: stacked affine autoregressive layers.
    Maf,
}

impl Estimator {
    fn is_mdn(&self) -> bool {
        *self == Estimator::Mdn
    }
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
fn patience() -> usize {
    30
}
fn halve_after() -> usize {
    8
}

impl Default for MdnSpec {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl MdnSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.components == 0 || self.hidden.is_empty() || self.hidden.contains(&0) {
            bail!("{field}: components and every hidden width must be positive");
        }
        if self.estimator != Estimator::Nsf && (self.bins.is_some() || self.bound.is_some()) {
            bail!("{field}: `bins` and `bound` shape a flow's splines; set estimator = \"nsf\" or leave them out");
        }
        if self.estimator == Estimator::Mdn && self.layers.is_some() {
            bail!("{field}: `layers` stacks a flow's layers; set estimator = \"nsf\" or \"maf\" or leave it out");
        }
        if self.layers.is_some_and(|l| !(1..=20).contains(&l)) {
            bail!("{field}: layers must be 1 to 20, got {}", self.layers.unwrap_or_default());
        }
        if self.bins.is_some_and(|b| !(2..=64).contains(&b)) {
            bail!("{field}: bins must be 2 to 64, got {}", self.bins.unwrap_or_default());
        }
        if self.bound.is_some_and(|b| !(b.is_finite() && (0.5..=50.0).contains(&b))) {
            bail!("{field}: bound (the splines' half-width in standardised units) must be 0.5 to 50, got {}", self.bound.unwrap_or_default());
        }
        self.early_stopping().validate(field)
    }

    /// The training settings as the shared type.
    pub fn early_stopping(&self) -> EarlyStopping {
        EarlyStopping {
            max_epochs: self.max_epochs,
            batch: self.batch,
            lr: self.lr,
            validation: self.validation,
            patience: self.patience,
            halve_after: self.halve_after,
            cosine: self.cosine,
            seed: self.seed,
        }
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
    pub prior: Vec<geohost_da::params::prior::PriorSpec>,
}

/// A trained (or loaded) mixture density network.
pub struct Mdn {
    pub desc: MdnDescription,
    pub prior: Prior,
    layers: Vec<(Var, Var)>,
}

/// What training reports (stored with the weights, less `seconds`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Training {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_nll: f64,
    /// Wall time (0 for a predictor loaded from the registry).
    #[serde(default)]
    pub seconds: f64,
    pub train_pairs: usize,
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

    /// The MLP's raw outputs for standardised data `x` (`[B, data_size]` →
    /// `[B, K(1 + d + d²)]`).
    fn raw_outputs(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Mixture parameters for standardised data `x` (`[B, data_size]`):
    /// log weights `[B, K]`, means `[B, K, d]`, precision factors `[B, K, d, d]`
    /// and their log-determinants `[B, K]`.
    fn mixture(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (d, k) = (self.desc.parameters.len(), self.desc.components);
        let h = self.raw_outputs(x)?;
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

    /// Mean negative log density of standardised θ (`[B, d]`) given x,
    /// through candle: the reference that the fused training loss
    /// (`mixture_nll`) is tested against.
    #[cfg(test)]
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
        let pairs = standardise_pairs(prior, thetas, xs, noise_sd, spec)?;
        let Standardised { n_train, train_theta, val_theta, clean_x, val_x, noise, .. } = &pairs;
        let desc = MdnDescription {
            parameters: prior.names.clone(),
            data_size: xs.nrows(),
            components: spec.components,
            hidden: spec.hidden.clone(),
            unbounded: true,
            theta_mean: pairs.theta_mean.clone(),
            theta_std: pairs.theta_std.clone(),
            x_mean: pairs.x_mean.clone(),
            x_std: pairs.x_std.clone(),
            prior: prior.specs.clone(),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
        let mdn = Mdn::init(desc, &mut rng)?;
        let d = &mdn.desc;
        let (dim, k, n_train) = (d.parameters.len(), d.components, *n_train);
        let p = xs.nrows();
        // Training runs through the fused MLP step with the mixture NLL's
        // gradient written out (`mixture_nll`); candle's autograd of
        // `Mdn::nll` is the reference it is tested against.
        let batch = spec.batch.min(n_train);
        let mut net = mdn.fused(batch, spec.lr)?;
        let mut x_epoch = clean_x.clone();
        let start = Instant::now();
        let data = FitData { inputs: &mut x_epoch, targets: train_theta, val_inputs: val_x, val_targets: val_theta, input_width: p, target_width: dim };
        let refresh = |x: &mut [f32], rng: &mut rand_chacha::ChaCha8Rng| {
            x.copy_from_slice(clean_x);
            if let Some(noise) = noise {
                add_noise(x, p, p, noise, rng);
            }
        };
        let fitted = net
            .fit(data, spec.early_stopping().schedule(), &mut rng, refresh, |out, theta, delta| mixture_nll(out, theta, dim, k, delta), progress)
            .map_err(|e| anyhow::anyhow!("posterior training diverged at epoch {} (validation NLL {}); lower [step5] lr", e.epoch, e.val))?;
        mdn.set_params(net.params())?;
        let training = Training {
            epochs: fitted.epochs,
            best_epoch: fitted.best_epoch,
            best_val_nll: fitted.best_val,
            seconds: start.elapsed().as_secs_f64(),
            train_pairs: n_train,
        };
        Ok((mdn, training))
    }

    /// A fused trainer starting from the current weights (same layout:
    /// row-major `(fan_in, fan_out)` weights and `(1, fan_out)` biases).
    fn fused(&self, batch: usize, lr: f64) -> Result<MlpTrainer> {
        let mut sizes = vec![self.desc.data_size];
        sizes.extend(self.layers.iter().map(|(w, _)| w.dims()[1]));
        let params = self.vars().iter().map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>()).collect::<candle_core::Result<_>>()?;
        Ok(MlpTrainer::new(&sizes, params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, batch, FusedAdamW::new(lr, 0.0)))
    }

    /// Take the weights back from a fused trainer's `params()`.
    fn set_params(&self, params: Vec<Vec<f32>>) -> Result<()> {
        for (var, p) in self.vars().iter().zip(params) {
            var.set(&Tensor::from_vec(p, var.dims(), &Device::Cpu)?)?;
        }
        Ok(())
    }

    /// The mixture mean of q(· | x) in the mapped (unbounded, not
    /// standardised) coordinates, for every column of `xs` (`data_size × n`
    /// → `d × n`); one batched pass of the network.
    pub fn mean_unbounded(&self, xs: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        Ok(self.moments_unbounded(xs)?.0)
    }

    /// The mixture mean and standard deviation of each parameter under
    /// q(· | x) in the mapped (unbounded, not standardised) coordinates,
    /// for every column of `xs` (each `d × n`). For a parameter whose
    /// prior is unbounded these are its posterior mean and sd in its own
    /// units: a direct retrieval with its uncertainty, one batched pass.
    pub fn moments_unbounded(&self, xs: &DMatrix<f64>) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
        let d = &self.desc;
        let (dim, k) = (d.parameters.len(), d.components);
        if xs.nrows() != d.data_size {
            bail!("data of size {}, but the posterior was trained on data of size {}", xs.nrows(), d.data_size);
        }
        let per = Self::outputs_per_component(dim);
        let mut means = DMatrix::zeros(dim, xs.ncols());
        let mut sds = DMatrix::zeros(dim, xs.ncols());
        let (mut u, mut mu, mut second) = (DMatrix::<f64>::zeros(dim, dim), vec![0.0; dim], vec![0.0; dim]);
        const CHUNK: usize = 4096;
        for start in (0..xs.ncols()).step_by(CHUNK) {
            let len = CHUNK.min(xs.ncols() - start);
            let cols: Vec<usize> = (start..start + len).collect();
            let input = Tensor::from_vec(table(xs, &cols, &d.x_mean, &d.x_std), (len, d.data_size), &Device::Cpu)?;
            let out: Vec<f32> = self.raw_outputs(&input)?.flatten_all()?.to_vec1()?;
            for (r, o) in out.chunks_exact(k * per).enumerate() {
                let max = (0..k).map(|c| o[c * per] as f64).fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = (0..k).map(|c| (o[c * per] as f64 - max).exp()).collect();
                let total: f64 = w.iter().sum();
                mu.iter_mut().for_each(|m| *m = 0.0);
                second.iter_mut().for_each(|m| *m = 0.0);
                for c in 0..k {
                    let oc = &o[c * per..(c + 1) * per];
                    // The precision's factor U (z = U(θ − μ)): exp on the
                    // diagonal, as trained; the covariance is U⁻¹U⁻ᵀ.
                    for i in 0..dim {
                        for j in 0..dim {
                            let raw = oc[1 + dim + i * dim + j] as f64;
                            u[(i, j)] = if j > i {
                                raw
                            } else if j == i {
                                raw.exp()
                            } else {
                                0.0
                            };
                        }
                    }
                    let inv = u.solve_upper_triangular(&DMatrix::identity(dim, dim)).context("a singular precision factor")?;
                    for i in 0..dim {
                        let m = oc[1 + i] as f64;
                        let var: f64 = (0..dim).map(|j| inv[(i, j)].powi(2)).sum();
                        mu[i] += w[c] / total * m;
                        second[i] += w[c] / total * (var + m * m);
                    }
                }
                for i in 0..dim {
                    means[(i, start + r)] = mu[i] * d.theta_std[i] + d.theta_mean[i];
                    sds[(i, start + r)] = (second[i] - mu[i] * mu[i]).max(0.0).sqrt() * d.theta_std[i];
                }
            }
        }
        Ok((means, sds))
    }

    /// Draw `n` posterior samples (`d × n`, in parameter units) given one
    /// observation `x`, rejecting draws outside the prior's support.
    pub fn sample(&self, x: &[f64], n: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        let d = &self.desc;
        let dim = d.parameters.len();
        let xs = Tensor::from_vec(standardised_observation(x, &d.x_mean, &d.x_std)?, (1, x.len()), &Device::Cpu)?;
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
        // The network runs once for x; each θ is then scored by the same
        // mixture density the training loss uses.
        let xs =
            Tensor::from_vec(x.iter().zip(&d.x_mean).zip(&d.x_std).map(|((v, m), s)| ((v - m) / s) as f32).collect::<Vec<f32>>(), (1, x.len()), &Device::Cpu)?;
        let out: Vec<f32> = self.raw_outputs(&xs)?.flatten_all()?.to_vec1()?;
        let dim = d.parameters.len();
        let mut t = vec![0f32; dim];
        Ok(thetas
            .column_iter()
            .map(|theta| {
                let theta = theta.as_slice();
                if !self.prior.log_density(theta).is_finite() {
                    return f64::NEG_INFINITY;
                }
                let mut jacobian = 0.0;
                for (i, (m, x)) in self.prior.marginals.iter().zip(theta).enumerate() {
                    let z = if d.unbounded { m.to_unbounded(*x) } else { *x };
                    t[i] = ((z - d.theta_mean[i]) / d.theta_std[i]) as f32;
                    if d.unbounded {
                        jacobian += m.log_jacobian(*x);
                    }
                }
                -mixture_nll(&out, &t, dim, d.components, None) + jacobian
            })
            .collect())
    }

    /// The layers' (weights `fan_in × fan_out`, bias `1 × fan_out`), input first.
    pub fn layers(&self) -> &[(Var, Var)] {
        &self.layers
    }

    /// The weights by safetensors name, `prefix` before each.
    pub(crate) fn named(&self, prefix: &str) -> Vec<(String, &Var)> {
        self.layers.iter().enumerate().flat_map(|(i, (w, b))| [(format!("{prefix}layer{i}.weight"), w), (format!("{prefix}layer{i}.bias"), b)]).collect()
    }

    /// Weights and description as one safetensors file.
    pub fn to_safetensors(&self, training: &serde_json::Value) -> Result<Vec<u8>> {
        write_safetensors(&self.named(""), serde_json::json!({ "predictor": "mdn", "description": self.desc, "training": training }))
    }

    /// Read a posterior back; `label` names the bytes in errors. Only the
    /// first network of a refined predictor: read those through
    /// [`super::refine::Predictor::from_safetensors`].
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Mdn, serde_json::Value)> {
        let (meta, tensors) = Mdn::read_file(label, bytes)?;
        let mdn = Mdn::with_tensors(label, &meta["description"], &tensors, "")?;
        Ok((mdn, meta))
    }

    /// A predictor file's metadata and tensors, checked to be a predictor's.
    pub(crate) fn read_file(label: &str, bytes: &[u8]) -> Result<(serde_json::Value, std::collections::HashMap<String, Tensor>)> {
        let meta = read_geohost_metadata(label, bytes, "; not a geohost predictor")?;
        if meta["predictor"] != "mdn" {
            bail!("{label} is not a posterior predictor (an emulator's weights?)");
        }
        Ok((meta, candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?))
    }

    /// A network of description `desc` with the weights `tensors` holds under `prefix`.
    pub(crate) fn with_tensors(label: &str, desc: &serde_json::Value, tensors: &std::collections::HashMap<String, Tensor>, prefix: &str) -> Result<Mdn> {
        let desc: MdnDescription = serde_json::from_value(desc.clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable description: {e}"))?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mdn = Mdn::init(desc, &mut rng)?;
        for (name, var) in mdn.named(prefix) {
            let t = tensors.get(&name).ok_or_else(|| anyhow::anyhow!("{label}: tensor `{name}` is missing"))?;
            if t.dims() != var.dims() {
                bail!("{label}: tensor `{name}` has shape {:?}, the description needs {:?}", t.dims(), var.dims());
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(mdn)
    }
}

/// The mean mixture NLL of a batch from the network's raw outputs `out`
/// (`rows × K(1 + d + d²)`: per component a logit, μ and the raw precision
/// factor R, with U = strict_upper(R) + diag(exp(diag R))) at standardised
/// parameters `theta` (`rows × d`), as [`Mdn::nll`] computes it; with
/// `delta`, also its gradient with respect to `out`. With responsibilities
/// w_k and weights π_k, z = U(θ − μ):
///
///   ∂/∂logit_k = π_k − w_k,  ∂/∂μ_k = −w_k Uᵀz,
///   ∂/∂R_ii = −w_k (1 − z_i (θ − μ)_i U_ii),  ∂/∂R_ij = w_k z_i (θ − μ)_j (j > i).
fn mixture_nll(out: &[f32], theta: &[f32], d: usize, k: usize, mut delta: Option<&mut [f32]>) -> f64 {
    let per = 1 + d + d * d;
    let rows = theta.len() / d;
    let half_log_2pi = 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    let (mut diff, mut z, mut u) = (vec![0.0f64; k * d], vec![0.0f64; k * d], vec![0.0f64; d * d]);
    let mut total = vec![0.0f64; k];
    let mut loss = 0.0;
    for r in 0..rows {
        let o = &out[r * k * per..(r + 1) * k * per];
        let t = &theta[r * d..(r + 1) * d];
        let logit_max = (0..k).map(|c| o[c * per] as f64).fold(f64::NEG_INFINITY, f64::max);
        let logit_lse = logit_max + (0..k).map(|c| (o[c * per] as f64 - logit_max).exp()).sum::<f64>().ln();
        for c in 0..k {
            let b = &o[c * per..(c + 1) * per];
            let (mu, raw) = (&b[1..1 + d], &b[1 + d..]);
            let mut log_det = 0.0;
            for i in 0..d {
                diff[c * d + i] = t[i] as f64 - mu[i] as f64;
                log_det += raw[i * d + i] as f64;
            }
            let mut quad = 0.0;
            for i in 0..d {
                let mut zi = (raw[i * d + i] as f64).exp() * diff[c * d + i];
                for j in i + 1..d {
                    zi += raw[i * d + j] as f64 * diff[c * d + j];
                }
                z[c * d + i] = zi;
                quad += zi * zi;
            }
            total[c] = (b[0] as f64 - logit_lse) + log_det - 0.5 * quad - half_log_2pi;
        }
        let max = total.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + total.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss -= lse;
        let Some(delta) = delta.as_deref_mut() else { continue };
        let g = &mut delta[r * k * per..(r + 1) * k * per];
        let scale = 1.0 / rows as f64;
        for c in 0..k {
            let b = &o[c * per..(c + 1) * per];
            let raw = &b[1 + d..];
            let w = (total[c] - lse).exp();
            let pi = (b[0] as f64 - logit_lse).exp();
            let gc = &mut g[c * per..(c + 1) * per];
            gc[0] = ((pi - w) * scale) as f32;
            for i in 0..d {
                for j in 0..d {
                    u[i * d + j] = match j.cmp(&i) {
                        std::cmp::Ordering::Less => 0.0,
                        std::cmp::Ordering::Equal => (raw[i * d + i] as f64).exp(),
                        std::cmp::Ordering::Greater => raw[i * d + j] as f64,
                    };
                }
            }
            let (zc, dc) = (&z[c * d..(c + 1) * d], &diff[c * d..(c + 1) * d]);
            for j in 0..d {
                let ut_z: f64 = (0..=j).map(|i| u[i * d + j] * zc[i]).sum();
                gc[1 + j] = (-w * ut_z * scale) as f32;
            }
            for i in 0..d {
                for j in 0..d {
                    gc[1 + d + i * d + j] = match j.cmp(&i) {
                        std::cmp::Ordering::Less => 0.0,
                        std::cmp::Ordering::Equal => (-w * (1.0 - zc[i] * dc[i] * u[i * d + i]) * scale) as f32,
                        std::cmp::Ordering::Greater => (w * zc[i] * dc[j] * scale) as f32,
                    };
                }
            }
        }
    }
    loss / rows as f64
}

/// Training pairs as every step-5 estimator trains on them: checked
/// ([`check_pairs`]), the last `validation` fraction held out, θ mapped
/// onto the real line, θ and x standardised by the training split's
/// moments (x's including the noise), tables row-major (rows × d, rows ×
/// data size). With `noise_sd`, `clean_x` is noise-free for the caller to
/// redraw the noise each epoch ([`add_noise`] with `noise`, the sd in
/// standardised units), while the validation split's noise is drawn once.
pub(crate) struct Standardised {
    pub n_train: usize,
    pub theta_mean: Vec<f64>,
    pub theta_std: Vec<f64>,
    pub x_mean: Vec<f64>,
    pub x_std: Vec<f64>,
    pub train_theta: Vec<f32>,
    pub val_theta: Vec<f32>,
    pub clean_x: Vec<f32>,
    pub val_x: Vec<f32>,
    pub noise: Option<Vec<f32>>,
}

pub(crate) fn standardise_pairs(prior: &Prior, thetas: &DMatrix<f64>, xs: &DMatrix<f64>, noise_sd: Option<&[f64]>, spec: &MdnSpec) -> Result<Standardised> {
    check_pairs(prior, thetas, xs, noise_sd, spec)?;
    let n = thetas.ncols();
    let n_train = n - spec.early_stopping().validation_rows(n);
    let thetas = &to_unbounded(&prior.marginals, thetas);
    let (train_cols, val_cols): (Vec<usize>, Vec<usize>) = ((0..n_train).collect(), (n_train..n).collect());
    let (theta_mean, theta_std) = moments(&thetas.columns(0, n_train).into_owned(), None);
    let (x_mean, x_std) = moments(&xs.columns(0, n_train).into_owned(), noise_sd);
    let noise: Option<Vec<f32>> = noise_sd.map(|sd| sd.iter().zip(&x_std).map(|(e, s)| (e / s) as f32).collect());
    let mut val_x = table(xs, &val_cols, &x_mean, &x_std);
    if let Some(noise) = &noise {
        let p = xs.nrows();
        add_noise(&mut val_x, p, p, noise, &mut rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ 0x7a11));
    }
    Ok(Standardised {
        n_train,
        train_theta: table(thetas, &train_cols, &theta_mean, &theta_std),
        val_theta: table(thetas, &val_cols, &theta_mean, &theta_std),
        clean_x: table(xs, &train_cols, &x_mean, &x_std),
        val_x,
        noise,
        theta_mean,
        theta_std,
        x_mean,
        x_std,
    })
}

/// Add N(0, noise²) to the first `p` values of every `width`-wide row.
pub(crate) fn add_noise(x: &mut [f32], width: usize, p: usize, noise: &[f32], rng: &mut impl Rng) {
    for row in x.chunks_exact_mut(width) {
        for (v, s) in row[..p].iter_mut().zip(noise) {
            *v += s * rng.sample::<f32, _>(StandardNormal);
        }
    }
}

/// An observation standardised by the training moments, after checking
/// that it has the trained size and is finite.
pub(crate) fn standardised_observation(x: &[f64], mean: &[f64], std: &[f64]) -> Result<Vec<f32>> {
    if x.len() != mean.len() {
        bail!("the observation has {} values, but the posterior was trained on data of size {}", x.len(), mean.len());
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!("the observation's value {i} is {}", x[i]);
    }
    Ok(x.iter().zip(mean).zip(std).map(|((v, m), s)| ((v - m) / s) as f32).collect())
}

/// Training pairs fit the prior and each other, are finite, and are
/// enough for the validation split and one batch.
pub(crate) fn check_pairs(prior: &Prior, thetas: &DMatrix<f64>, xs: &DMatrix<f64>, noise_sd: Option<&[f64]>, spec: &MdnSpec) -> Result<()> {
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
    let n_val = spec.early_stopping().validation_rows(n);
    if n_val < 1 || n - n_val < spec.batch.min(n) || n < 10 {
        bail!("{n} training pairs are too few (validation fraction {}, batch {})", spec.validation, spec.batch);
    }
    Ok(())
}

/// Every column of `thetas` (`d × n`) mapped onto the real line.
pub(crate) fn to_unbounded(marginals: &[Marginal], thetas: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(thetas.nrows(), thetas.ncols(), |i, j| marginals[i].to_unbounded(thetas[(i, j)]))
}

/// Diagonal and strictly-upper masks of a d × d matrix.
fn masks(d: usize) -> Result<(Tensor, Tensor)> {
    let diag: Vec<f32> = (0..d * d).map(|i| if i / d == i % d { 1.0 } else { 0.0 }).collect();
    let strict: Vec<f32> = (0..d * d).map(|i| if i % d > i / d { 1.0 } else { 0.0 }).collect();
    Ok((Tensor::from_vec(diag, (d, d), &Device::Cpu)?, Tensor::from_vec(strict, (d, d), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MDN description over parameters t0, t1, … with N(0, 1) priors
    /// (unbounded), standardised data of size `data`, `k` components.
    fn description(k: usize, data: usize, hidden: Vec<usize>, theta_mean: Vec<f64>, theta_std: Vec<f64>) -> MdnDescription {
        let names: Vec<String> = (0..theta_mean.len()).map(|i| format!("t{i}")).collect();
        let prior =
            names.iter().map(|n| geohost_da::params::prior::PriorSpec { name: n.clone(), uniform: None, normal: Some([0.0, 1.0]), bounds: None }).collect();
        MdnDescription {
            parameters: names,
            data_size: data,
            components: k,
            hidden,
            unbounded: true,
            theta_mean,
            theta_std,
            x_mean: vec![0.0; data],
            x_std: vec![1.0; data],
            prior,
        }
    }

    /// The hand-written mixture NLL and its gradient against candle's
    /// autograd of [`Mdn::nll`] on the same network and batch: the loss,
    /// and the gradient of the last layer's bias (the column sums of the
    /// gradient with respect to the outputs, so every output is covered).
    #[test]
    fn fused_mixture_gradient_matches_autograd() {
        let (d, k, data, rows) = (3, 4, 7, 16);
        let desc = description(k, data, vec![12, 10], vec![0.0; d], vec![1.0; d]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mdn = Mdn::init(desc, &mut rng).unwrap();
        let x: Vec<f32> = (0..rows * data).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        let t: Vec<f32> = (0..rows * d).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        let loss =
            mdn.nll(&Tensor::from_vec(x.clone(), (rows, data), &Device::Cpu).unwrap(), &Tensor::from_vec(t.clone(), (rows, d), &Device::Cpu).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let (_, last_bias) = mdn.layers.last().unwrap();
        let want: Vec<f32> = grads.get(last_bias.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut net = mdn.fused(rows, 1e-3).unwrap();
        let out = net.outputs(&x, rows).to_vec();
        let mut delta = vec![0.0f32; out.len()];
        let fused = mixture_nll(&out, &t, d, k, Some(&mut delta));
        let candle = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((fused - candle).abs() < 1e-4 * candle.abs().max(1.0), "loss {fused} vs candle {candle}");
        let per = want.len();
        for j in 0..per {
            let got: f32 = (0..rows).map(|r| delta[r * per + j]).sum();
            assert!((got - want[j]).abs() < 1e-4 * want[j].abs().max(1e-2), "output {j}: {got} vs autograd {}", want[j]);
        }
    }

    /// The closed-form mixture moments against the moments of many draws
    /// from the same (random) network, for an unbounded prior.
    #[test]
    fn mixture_moments_match_the_moments_of_its_samples() {
        let (d, k, data) = (2, 3, 4);
        let desc = description(k, data, vec![8], vec![1.0, -2.0], vec![2.0, 0.5]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mdn = Mdn::init(desc, &mut rng).unwrap();
        let x = [0.3, -1.0, 0.7, 2.0];
        let (means, sds) = mdn.moments_unbounded(&DMatrix::from_column_slice(data, 1, &x)).unwrap();
        let n = 200_000;
        let draws = mdn.sample(&x, n, &mut rng).unwrap();
        for i in 0..d {
            let m = draws.row(i).mean();
            let sd = (draws.row(i).iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64).sqrt();
            assert!((m - means[(i, 0)]).abs() < 5.0 * sd / (n as f64).sqrt(), "parameter {i}: mean {} vs draws {m}", means[(i, 0)]);
            assert!((sd / sds[(i, 0)] - 1.0).abs() < 0.01, "parameter {i}: sd {} vs draws {sd}", sds[(i, 0)]);
        }
    }
}
