//! A refinement stage for the amortized posterior, after the learned
//! iterative schemes of inverse problems (Adler & Öktem 2017): the first
//! network's posterior mean θ̂(x) is simulated once, and a second mixture
//! density network, conditioned on the data residual and on θ̂,
//!
//!   r = (x − H(G(θ̂))) / σ,   f = [r, u(θ̂)],
//!
//! learns the posterior of the offset δ = u(θ) − u(θ̂) in the mapped
//! (unbounded) coordinates u of [`super::mdn`]. Because θ̂ is a function of
//! x, q₂(δ | f) still targets the exact posterior p(θ | x); the second
//! network only has to resolve θ within the first one's error, not across
//! the prior, which a network of the same size does far more precisely.
//! The cost is one simulator call per observation. Nothing here is
//! specific to a simulator: G and H are the plugins the first stage was
//! trained on.

use super::mdn::{to_unbounded, Mdn, MdnSpec, Training};
use super::prior::{Marginal, Prior, PriorSpec};
use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// `[step5] refine`: the refinement stage's network and how many noise
/// draws each simulation gives it.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefineSpec {
    /// Observation-noise draws per simulated θ, each with its own θ̂ and
    /// one more simulator run: the residual carries the noise, so with one
    /// fixed draw the second network learns it by heart within a few
    /// epochs; an epoch then passes over every draw.
    #[serde(default = "noise_draws")]
    pub noise_draws: usize,
    #[serde(default)]
    pub network: MdnSpec,
}

fn noise_draws() -> usize {
    4
}

impl RefineSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.noise_draws == 0 {
            bail!("{field}.noise_draws must be at least 1");
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
    pub first: Mdn,
    pub second: Option<Mdn>,
    /// The observation-error sd that scales the residual (refinement only).
    pub noise_sd: Vec<f64>,
}

/// The predictor conditioned on one observation: what sampling and
/// scoring under q(θ | x) need, computed once (with a refinement stage,
/// the one simulator call).
pub struct Conditioned<'a> {
    predictor: &'a Predictor,
    x: Vec<f64>,
    /// With a refinement stage: u(θ̂) and the second network's input.
    refined: Option<(Vec<f64>, Vec<f64>)>,
}

impl Predictor {
    pub fn parameters(&self) -> &[String] {
        &self.first.desc.parameters
    }

    /// Condition on `x`; `forward` runs once if there is a refinement stage.
    pub fn condition(&self, x: &[f64], forward: &mut Forward) -> Result<Conditioned<'_>> {
        let refined = match &self.second {
            None => None,
            Some(_) => {
                let xs = DMatrix::from_column_slice(x.len(), 1, x);
                let (u_hat, features) = refinement_inputs(&self.first, &self.noise_sd, &xs, forward)?;
                Some((u_hat.as_slice().to_vec(), features.as_slice().to_vec()))
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
            (Some(second), Some((u_hat, features))) => {
                let mut draws = second.sample(features, n, rng)?;
                for mut col in draws.column_iter_mut() {
                    for (i, m) in p.first.prior.marginals.iter().enumerate() {
                        col[i] = m.from_unbounded(u_hat[i] + col[i]);
                    }
                }
                Ok(draws)
            }
            _ => p.first.sample(&self.x, n, rng),
        }
    }

    /// log q(θ | x) up to a constant, per column of `thetas` (−∞ outside
    /// the prior's support).
    pub fn log_prob(&self, thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        let p = self.predictor;
        let (Some(second), Some((u_hat, features))) = (&p.second, &self.refined) else { return p.first.log_prob(&self.x, thetas) };
        let prior = &p.first.prior;
        let mut delta = to_unbounded(&prior.marginals, thetas);
        for mut col in delta.column_iter_mut() {
            for (v, u) in col.iter_mut().zip(u_hat) {
                *v -= u;
            }
        }
        let lq = second.log_prob(features, &delta)?;
        Ok(thetas
            .column_iter()
            .zip(lq)
            .map(|(theta, l)| {
                if !prior.log_density(theta.as_slice()).is_finite() {
                    return f64::NEG_INFINITY;
                }
                l + prior.marginals.iter().zip(theta.iter()).map(|(m, x)| m.log_jacobian(*x)).sum::<f64>()
            })
            .collect())
    }
}

/// u(θ̂(x)) (`d × n`) and the refinement stage's inputs [r; u(θ̂)]
/// (`(p + d) × n`) for every column of `xs`.
fn refinement_inputs(first: &Mdn, sd: &[f64], xs: &DMatrix<f64>, forward: &mut Forward) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    if !first.desc.unbounded {
        bail!("this predictor was written before the unbounded mapping; it cannot be refined (train it again)");
    }
    let u_hat = first.mean_unbounded(xs)?;
    let marginals = &first.prior.marginals;
    let theta_hat = DMatrix::from_fn(u_hat.nrows(), u_hat.ncols(), |i, j| marginals[i].from_unbounded(u_hat[(i, j)]));
    let (p, d) = (xs.nrows(), u_hat.nrows());
    let mut predicted = DMatrix::zeros(p, xs.ncols());
    const CHUNK: usize = 500;
    for start in (0..xs.ncols()).step_by(CHUNK) {
        let len = CHUNK.min(xs.ncols() - start);
        let hx = forward(&theta_hat.columns(start, len).into_owned())?;
        if hx.shape() != (p, len) {
            bail!("the forward model returned {:?} values for {len} parameter vectors, expected {p} each", hx.shape());
        }
        predicted.columns_mut(start, len).copy_from(&hx);
    }
    let features = DMatrix::from_fn(p + d, xs.ncols(), |i, j| if i < p { (xs[(i, j)] - predicted[(i, j)]) / sd[i] } else { u_hat[(i - p, j)] });
    Ok((u_hat, features))
}

/// The refinement stage's own "prior": the offsets δ, one unbounded
/// standard normal per parameter (only their names and support matter).
fn offset_prior(names: &[String]) -> Result<Prior> {
    let names: Vec<String> = names.iter().map(|n| format!("d_{n}")).collect();
    let specs: Vec<PriorSpec> = names.iter().map(|n| PriorSpec { name: n.clone(), uniform: None, normal: Some([0.0, 1.0]), bounds: None }).collect();
    let prior = Prior::new(&specs, &names)?;
    debug_assert!(prior.marginals.iter().all(|m| matches!(m, Marginal::Normal { .. }) && m.bounds().0 == f64::NEG_INFINITY));
    Ok(prior)
}

/// Train the refinement stage on the first stage's training pairs
/// (`thetas`: `d × n`, noise-free `hx`: `p × n`, observation-error sd
/// `sd`): `spec.noise_draws` fixed noise draws per pair (θ̂ depends on
/// the noisy x, so the noise cannot be redrawn every epoch without
/// rerunning the simulator), θ̂ from `first`, one `forward` call per
/// draw. The draws of one θ sit side by side, so the validation split
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
    if sd.len() != hx.nrows() || sd.iter().any(|s| !(*s > 0.0)) {
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
    let (u_hat, features) = refinement_inputs(first, sd, &xs, forward)?;
    let u = to_unbounded(&first.prior.marginals, thetas);
    let delta = DMatrix::from_fn(u.nrows(), u_hat.ncols(), |i, j| u[(i, j / k)] - u_hat[(i, j)]);
    let prior = offset_prior(&first.desc.parameters)?;
    Mdn::train(&prior, &delta, &features, None, &spec.network, progress)
}

impl Predictor {
    /// One safetensors file. Without a refinement stage, exactly
    /// [`Mdn::to_safetensors`]; with one, the second network's tensors
    /// under `refine.` and, in the metadata, its description, the
    /// residual's sd and `forward` (which plugins, with which configs,
    /// compute H(G(θ̂)) when sampling).
    pub fn to_safetensors(&self, training: &serde_json::Value, forward: &serde_json::Value) -> Result<Vec<u8>> {
        let Some(second) = &self.second else { return self.first.to_safetensors(training) };
        let mut named = self.first.named("");
        named.extend(second.named("refine."));
        let meta = serde_json::json!({
            "predictor": "mdn",
            "description": self.first.desc,
            "training": training,
            "refine": { "description": second.desc, "noise_sd": self.noise_sd, "forward": forward },
        });
        crate::emulate::net::write_safetensors(&named, meta)
    }

    /// Read a predictor back, with its metadata; `label` names the bytes in errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Predictor, serde_json::Value)> {
        let (first, meta) = Mdn::from_safetensors(label, bytes)?;
        let refine = &meta["refine"];
        if refine.is_null() {
            return Ok((Predictor { first, second: None, noise_sd: Vec::new() }, meta));
        }
        let tensors = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu)?;
        let second = Mdn::with_tensors(label, &refine["description"], &tensors, "refine.")?;
        let noise_sd: Vec<f64> = serde_json::from_value(refine["noise_sd"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable refine.noise_sd: {e}"))?;
        let (p, d) = (first.desc.data_size, first.desc.parameters.len());
        if noise_sd.len() != p || noise_sd.iter().any(|s| !(*s > 0.0)) || second.desc.data_size != p + d || second.desc.parameters.len() != d {
            bail!("{label}: the refinement stage does not fit the first network ({p} data, {d} parameters); the file is damaged or was not written by geohost");
        }
        let predictor = Predictor { first, second: Some(second), noise_sd };
        Ok((predictor, meta))
    }
}
