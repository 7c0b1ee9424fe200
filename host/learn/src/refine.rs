//! A refinement stage for the amortized posterior: one learned
//! Gauss–Newton step, after the learned iterative schemes of inverse
//! problems (Adler & Öktem 2017). Starting from the first network's
//! posterior mean û (in the mapped, unbounded coordinates u of
//! [`super::mdn`]), `gauss_newton` Gauss–Newton steps on
//!
//!   ½‖x − H(G(θ(u)))‖²_R⁻¹ + ½‖u − û‖²_Λ,
//!
//! each with a forward-difference Jacobian J = ∂H(G(θ(u)))/∂u (d + 1
//! simulator runs), give a Laplace approximation of the posterior: centre
//! c and covariance C = (JᵀR⁻¹J + Λ)⁻¹ = LLᵀ at the last linearisation
//! point (Λ = the inverse of u's variance over the training set, so that
//! the precision is invertible where the data say nothing). A second
//! mixture density network, conditioned on
//! f = [c − û, log √diag C, the correlations of C, û], learns the
//! posterior of the whitened offset
//!
//!   z = L⁻¹(u(θ) − c),
//!
//! which is N(0, I) wherever the Laplace approximation is exact; the
//! network only learns how the posterior departs from it. Because f is a
//! function of x, q₂(z | f) still targets the exact posterior p(θ | x).
//! The cost is (d + 1) × `gauss_newton` simulator runs per observation.
//! Nothing here is specific to a simulator: G and H are the plugins the
//! first stage was trained on.

use crate::density::Density;
use crate::mdn::{to_unbounded, Mdn, MdnSpec, Training};
use anyhow::{bail, Context, Result};
use geohost_da::params::prior::{Marginal, Prior, PriorSpec};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// `[step5] refine`: the refinement stage's network and how many noise
/// draws each simulation gives it.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefineSpec {
    /// Observation-noise draws per simulated θ, each with its own û and
    /// d + 1 more simulator runs (û depends on the noisy x, so the noise
    /// cannot be redrawn every epoch as the first stage's is); an epoch
    /// passes over every draw.
    #[serde(default = "noise_draws")]
    pub noise_draws: usize,
    /// Gauss–Newton steps from û before the Laplace approximation is
    /// taken (each d + 1 more simulator runs per observation).
    #[serde(default = "one")]
    pub gauss_newton: usize,
    #[serde(default)]
    pub network: MdnSpec,
}

fn noise_draws() -> usize {
    4
}
fn one() -> usize {
    1
}

impl RefineSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.noise_draws == 0 || self.gauss_newton == 0 {
            bail!("{field}: noise_draws and gauss_newton must be at least 1");
        }
        self.network.validate(&format!("{field}.network"))
    }
}

/// The noise-free observed forward map H(G(θ)) for every column of a
/// `d × n` matrix of parameters (`p × n` out).
pub type Forward<'a> = dyn FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>> + 'a;

/// The amortized posterior of step 5: one network, or one refined by a
/// second (see the module documentation).
pub struct Predictor {
    pub first: Density,
    pub second: Option<Mdn>,
    /// The observation-error sd, √diag R, and the Gauss–Newton steps
    /// (refinement only).
    pub noise_sd: Vec<f64>,
    pub gauss_newton: usize,
}

/// The predictor conditioned on one observation: what sampling and
/// scoring under q(θ | x) need, computed once (with a refinement stage,
/// its simulator runs).
pub struct Conditioned<'a> {
    predictor: &'a Predictor,
    x: Vec<f64>,
    /// With a refinement stage: the local approximation about û.
    refined: Option<Local>,
}

impl Predictor {
    pub fn parameters(&self) -> &[String] {
        self.first.parameters()
    }

    /// Condition on `x`; `forward` runs ((d + 1) × `gauss_newton` points)
    /// only if there is a refinement stage.
    pub fn condition(&self, x: &[f64], forward: &mut Forward) -> Result<Conditioned<'_>> {
        let refined = match &self.second {
            None => None,
            Some(_) => {
                let xs = DMatrix::from_column_slice(x.len(), 1, x);
                refinement_inputs(self.first.as_mdn("a refinement stage")?, &self.noise_sd, &xs, self.gauss_newton, forward)?.pop()
            }
        };
        Ok(Conditioned { predictor: self, x: x.to_vec(), refined })
    }
}

impl Conditioned<'_> {
    /// `n` draws from q(θ | x) (`d × n`, parameter units).
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        let p = self.predictor;
        match (&p.second, &self.refined) {
            (Some(second), Some(local)) => {
                let z = second.sample(&local.features, n, rng)?;
                let u = &local.chol * z;
                let marginals = &p.first.prior().marginals;
                Ok(DMatrix::from_fn(u.nrows(), n, |i, j| marginals[i].from_unbounded(local.centre[i] + u[(i, j)])))
            }
            _ => p.first.sample(&self.x, n, rng),
        }
    }

    /// log q(θ | x) up to a constant, per column of `thetas` (−∞ outside
    /// the prior's support).
    pub fn log_prob(&self, thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        let p = self.predictor;
        let (Some(second), Some(local)) = (&p.second, &self.refined) else { return p.first.log_prob(&self.x, thetas) };
        let prior = p.first.prior();
        let z = local.whiten(&to_unbounded(&prior.marginals, thetas));
        let log_det: f64 = local.chol.diagonal().iter().map(|v| v.ln()).sum();
        let lq = second.log_prob(&local.features, &z)?;
        Ok(thetas
            .column_iter()
            .zip(lq)
            .map(|(theta, l)| {
                if !prior.log_density(theta.as_slice()).is_finite() {
                    return f64::NEG_INFINITY;
                }
                l - log_det + prior.marginals.iter().zip(theta.iter()).map(|(m, x)| m.log_jacobian(*x)).sum::<f64>()
            })
            .collect())
    }
}

/// The Laplace approximation for one observation, in u coordinates:
/// `centre` = c, covariance factor `chol` = L, and the second network's
/// input.
struct Local {
    centre: Vec<f64>,
    chol: DMatrix<f64>,
    features: Vec<f64>,
}

impl Local {
    /// z = L⁻¹(u − centre) for every column of `u`.
    fn whiten(&self, u: &DMatrix<f64>) -> DMatrix<f64> {
        let mut offsets = u.clone();
        for mut col in offsets.column_iter_mut() {
            for (v, c) in col.iter_mut().zip(&self.centre) {
                *v -= c;
            }
        }
        self.chol.solve_lower_triangular(&offsets).expect("L has a positive diagonal (a Cholesky factor)")
    }
}

/// Number of refinement features for `d` parameters.
fn feature_count(d: usize) -> usize {
    3 * d + d * (d - 1) / 2
}

/// The local approximation for every column of `xs`: `iterations`
/// Gauss–Newton steps from û(x) on ½‖x − H(G(θ(u)))‖²_R⁻¹ + ½‖u − û‖²_Λ,
/// each with d + 1 forward runs (the point and a forward step in each u_i
/// of 10⁻³ times u_i's spread over the training set); the covariance is
/// the last step's A⁻¹.
fn refinement_inputs(first: &Mdn, sd: &[f64], xs: &DMatrix<f64>, iterations: usize, forward: &mut Forward) -> Result<Vec<Local>> {
    if !first.desc.unbounded {
        bail!("this predictor was written before the unbounded mapping; it cannot be refined (train it again)");
    }
    let u_hat = first.mean_unbounded(xs)?;
    let marginals = &first.prior.marginals;
    let (p, d, n) = (xs.nrows(), u_hat.nrows(), xs.ncols());
    let spread = &first.desc.theta_std;
    let step: Vec<f64> = spread.iter().map(|s| 1e-3 * s).collect();
    let mut centres = u_hat.clone();
    let mut covs: Vec<DMatrix<f64>> = Vec::new();
    const CHUNK: usize = 100;
    for _ in 0..iterations.max(1) {
        let point = centres.clone();
        covs.clear();
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let points = DMatrix::from_fn(d, len * (d + 1), |i, c| {
                let (j, k) = (start + c / (d + 1), c % (d + 1));
                marginals[i].from_unbounded(point[(i, j)] + if k == i + 1 { step[i] } else { 0.0 })
            });
            let hx = forward(&points)?;
            if hx.shape() != (p, points.ncols()) {
                bail!("the forward model returned {:?} values for {} parameter vectors, expected {p} each", hx.shape(), points.ncols());
            }
            for c in 0..len {
                let j = start + c;
                let base = hx.column(c * (d + 1));
                let jac = DMatrix::from_fn(p, d, |a, i| (hx[(a, c * (d + 1) + i + 1)] - base[a]) / step[i]);
                let weighted = DMatrix::from_fn(p, d, |a, i| jac[(a, i)] / (sd[a] * sd[a]));
                let mut precision = jac.transpose() * &weighted;
                let residual = DMatrix::from_fn(p, 1, |a, _| xs[(a, j)] - base[a]);
                let mut gradient = weighted.transpose() * residual;
                for i in 0..d {
                    let lambda = 1.0 / (spread[i] * spread[i]);
                    precision[(i, i)] += lambda;
                    gradient[i] -= lambda * (point[(i, j)] - u_hat[(i, j)]);
                }
                let Some(factor) = precision.cholesky() else {
                    bail!("the local precision JᵀR⁻¹J + Λ is not positive definite (the forward model returned non-finite or huge values)");
                };
                let shift = factor.solve(&gradient);
                for i in 0..d {
                    centres[(i, j)] = point[(i, j)] + shift[i];
                }
                covs.push(factor.inverse());
            }
        }
    }
    covs.into_iter()
        .enumerate()
        .map(|(j, cov)| {
            let chol = cov.clone().cholesky().map(|c| c.l()).context("the local covariance is not positive definite")?;
            let mut features = Vec::with_capacity(feature_count(d));
            features.extend((0..d).map(|i| centres[(i, j)] - u_hat[(i, j)]));
            features.extend((0..d).map(|i| 0.5 * cov[(i, i)].ln()));
            for i in 0..d {
                for k in i + 1..d {
                    features.push(cov[(i, k)] / (cov[(i, i)] * cov[(k, k)]).sqrt());
                }
            }
            features.extend(u_hat.column(j).iter());
            if features.iter().chain(centres.column(j).iter()).any(|v| !v.is_finite()) {
                bail!("the local approximation about the first stage's mean is not finite (the forward model returned non-finite values)");
            }
            Ok(Local { centre: centres.column(j).iter().copied().collect(), chol, features })
        })
        .collect()
}

/// The refinement stage's own "prior": the whitened offsets z, one
/// unbounded standard normal per parameter (only their names and support
/// matter).
fn offset_prior(names: &[String]) -> Result<Prior> {
    let names: Vec<String> = names.iter().map(|n| format!("z_{n}")).collect();
    let specs: Vec<PriorSpec> = names.iter().map(|n| PriorSpec { name: n.clone(), uniform: None, normal: Some([0.0, 1.0]), bounds: None }).collect();
    let prior = Prior::new(&specs, &names)?;
    debug_assert!(prior.marginals.iter().all(|m| matches!(m, Marginal::Normal { .. }) && m.bounds().0 == f64::NEG_INFINITY));
    Ok(prior)
}

/// Train the refinement stage on the first stage's training pairs
/// (`thetas`: `d × n`, noise-free `hx`: `p × n`, observation-error sd
/// `sd`): `spec.noise_draws` fixed noise draws per pair (û depends on
/// the noisy x, so the noise cannot be redrawn every epoch without
/// rerunning the simulator), û from `first`, (d + 1) × `gauss_newton`
/// forward runs per draw. The draws of one θ sit side by side, so the validation split
/// (the last columns) holds θs the training never saw.
pub fn train_second(
    first: &Mdn,
    thetas: &DMatrix<f64>,
    hx: &DMatrix<f64>,
    sd: &[f64],
    spec: &RefineSpec,
    forward: &mut Forward,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<(Mdn, Training)> {
    spec.validate("[step5].refine")?;
    if sd.len() != hx.nrows() || sd.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        bail!("a refinement stage needs a positive observation-error sd for each of the {} data", hx.nrows());
    }
    let k = spec.noise_draws;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.network.seed ^ 0x2ef1);
    let mut xs = DMatrix::zeros(hx.nrows(), hx.ncols() * k);
    for (j, mut col) in xs.column_iter_mut().enumerate() {
        for ((x, h), s) in col.iter_mut().zip(hx.column(j / k).iter()).zip(sd) {
            *x = h + s * rng.sample::<f64, _>(StandardNormal);
        }
    }
    let locals = refinement_inputs(first, sd, &xs, spec.gauss_newton, forward)?;
    let u = to_unbounded(&first.prior.marginals, thetas);
    let d = u.nrows();
    let mut z = DMatrix::zeros(d, locals.len());
    let mut features = DMatrix::zeros(feature_count(d), locals.len());
    for (j, local) in locals.iter().enumerate() {
        z.column_mut(j).copy_from(&local.whiten(&u.columns(j / k, 1).into_owned()));
        features.column_mut(j).copy_from_slice(&local.features);
    }
    drop(locals);
    let prior = offset_prior(&first.desc.parameters)?;
    Mdn::train(&prior, &z, &features, None, &spec.network, progress)
}

impl Predictor {
    /// One safetensors file. Without a refinement stage, exactly
    /// [`Mdn::to_safetensors`]; with one, the second network's tensors
    /// under `refine.` and, in the metadata, its description, the
    /// observation-error sd and `forward` (which plugins, with which
    /// configs and seed, the local approximation runs when sampling).
    pub fn to_safetensors(&self, training: &serde_json::Value, forward: &serde_json::Value) -> Result<Vec<u8>> {
        let Some(second) = &self.second else { return self.first.to_safetensors(training) };
        let first = self.first.as_mdn("a refinement stage")?;
        let mut named = first.named("");
        named.extend(second.named("refine."));
        let meta = serde_json::json!({
            "predictor": "mdn",
            "description": first.desc,
            "training": training,
            "refine": { "description": second.desc, "noise_sd": self.noise_sd, "gauss_newton": self.gauss_newton, "forward": forward },
        });
        crate::net::write_safetensors(&named, meta)
    }

    /// Read a predictor back, with its metadata; `label` names the bytes in errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Predictor, serde_json::Value)> {
        let kind = crate::net::read_geohost_metadata(label, bytes, "; not a geohost predictor")?["predictor"].clone();
        if kind == "nsf" || kind == "maf" {
            let (flow, meta) = crate::flow::Nsf::from_safetensors(label, bytes)?;
            return Ok((Predictor { first: Density::Nsf(flow), second: None, noise_sd: Vec::new(), gauss_newton: 0 }, meta));
        }
        let (meta, tensors) = Mdn::read_file(label, bytes)?;
        let first = Mdn::with_tensors(label, &meta["description"], &tensors, "")?;
        let refine = &meta["refine"];
        if refine.is_null() {
            return Ok((Predictor { first: Density::Mdn(first), second: None, noise_sd: Vec::new(), gauss_newton: 0 }, meta));
        }
        let second = Mdn::with_tensors(label, &refine["description"], &tensors, "refine.")?;
        let noise_sd: Vec<f64> = serde_json::from_value(refine["noise_sd"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable refine.noise_sd: {e}"))?;
        let (p, d) = (first.desc.data_size, first.desc.parameters.len());
        if noise_sd.len() != p
            || noise_sd.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || second.desc.data_size != feature_count(d)
            || second.desc.parameters.len() != d
        {
            bail!("{label}: the refinement stage does not fit the first network ({p} data, {d} parameters); the file is damaged or was not written by geohost");
        }
        let gauss_newton = refine["gauss_newton"]
            .as_u64()
            .filter(|g| (1..=100).contains(g))
            .with_context(|| format!("{label}: refine.gauss_newton is missing or out of range"))? as usize;
        let predictor = Predictor { first: Density::Mdn(first), second: Some(second), noise_sd, gauss_newton };
        Ok((predictor, meta))
    }
}
