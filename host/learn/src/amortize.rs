//! Step 5 for static problems: simulate θ from the prior through the
//! simulator and observation plugins, cache the noise-free H(G(θ)) with
//! the observation-error sd by request key, train the mixture density
//! network on pairs (θ, H(G(θ)) + ε) with ε redrawn every epoch, and
//! register it as a `predictor`.

use crate::density::Density;
use crate::mdn::{MdnSpec, Training};
use crate::refine::{Forward, Predictor, RefineSpec};
use anyhow::{bail, Result};
use geohost_da::params::prior::Prior;
use geohost_netcdf::{common_attrs, nc_bytes, Var};
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::{ObsOperator, Simulator};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// `[step5]` of a static plugin-set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step5Spec {
    /// Name of the predictor artifact.
    pub name: String,
    /// Training pairs drawn from the prior.
    pub simulations: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub network: MdnSpec,
    /// Held-out observations (drawn from the prior predictive) on which the
    /// predictor is checked against MCMC: C2ST and coverage.
    #[serde(default)]
    pub check_observations: usize,
    /// Observations with reference posterior samples (e.g. sbibm's
    /// reference posteriors), on which the predictor is checked by C2ST
    /// without an MCMC: the check for simulators whose likelihood is
    /// intractable. Paths relative to the plugin-set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check_reference: Vec<ReferenceCheck>,
    /// A refinement stage ([`super::refine`]): a second network,
    /// conditioned on the Laplace approximation about the first one's
    /// posterior mean (one learned Gauss–Newton step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine: Option<RefineSpec>,
}

/// One observation and its reference posterior samples (a CSV table with
/// a header naming the parameters, or one column per parameter in the
/// prior's order).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferenceCheck {
    pub observation: std::path::PathBuf,
    pub samples: std::path::PathBuf,
}

impl Step5Spec {
    pub fn validate(&self) -> Result<()> {
        if self.simulations < 100 {
            bail!("[step5] simulations must be at least 100, got {}", self.simulations);
        }
        self.network.validate("[step5].network")?;
        if self.refine.is_some() && self.network.estimator != crate::mdn::Estimator::Mdn {
            bail!("[step5] refine conditions a second network on the first one's posterior mean, which only the mixture density network gives: use estimator = \"mdn\" with refine, or leave refine out");
        }
        match &self.refine {
            Some(r) => r.validate("[step5].refine"),
            None => Ok(()),
        }
    }
}

/// Simulate `n` noise-free pairs: θ ~ prior and H(G(θ)), with the
/// observation-error standard deviations √diag(R).
pub fn simulate_clean(
    prior: &Prior,
    simulator: &mut dyn Simulator,
    obs: &mut dyn ObsOperator,
    n: usize,
    seed: u64,
) -> Result<(DMatrix<f64>, DMatrix<f64>, Vec<f64>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = prior.dim();
    let mut thetas = DMatrix::zeros(d, n);
    for mut col in thetas.column_iter_mut() {
        col.copy_from_slice(&prior.sample(&mut rng));
    }
    let sd: Vec<f64> = obs.info().noise_variance.iter().map(|v| v.sqrt()).collect();
    let mut hx = DMatrix::zeros(sd.len(), n);
    const CHUNK: usize = 500;
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        let clean = geohost_da::params::observed(simulator, obs, &thetas.columns(start, len).into_owned(), seed.wrapping_add(start as u64))?;
        hx.columns_mut(start, len).copy_from(&clean);
    }
    Ok((thetas, hx, sd))
}

/// Simulate `n` pairs: θ ~ prior, x = H(G(θ)) + ε with ε ~ N(0, R).
pub fn simulate_pairs(prior: &Prior, simulator: &mut dyn Simulator, obs: &mut dyn ObsOperator, n: usize, seed: u64) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    let (thetas, mut xs, sd) = simulate_clean(prior, simulator, obs, n, seed)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0b5e);
    for mut col in xs.column_iter_mut() {
        for (x, s) in col.iter_mut().zip(&sd) {
            *x += s * rng.sample::<f64, _>(StandardNormal);
        }
    }
    Ok((thetas, xs))
}

/// The training set as NetCDF: `theta(sample, parameter)`, the noise-free
/// `hx(sample, obs)` and the observation-error sd `obs_sd(obs)`.
pub fn pairs_bytes(prior: &Prior, thetas: &DMatrix<f64>, hx: &DMatrix<f64>, sd: &[f64], attrs: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut all = common_attrs();
    all.extend(attrs.iter().map(|(k, v)| (*k, v.clone())));
    all.push(("parameters", prior.names.join(" ")));
    nc_bytes(
        &[("sample", thetas.ncols()), ("parameter", thetas.nrows()), ("obs", hx.nrows())],
        &[
            Var {
                name: "theta",
                dims: &["sample", "parameter"],
                data: thetas.as_slice(),
                units: "see parameters",
                long_name: "parameters drawn from the prior",
            },
            Var {
                name: "hx",
                dims: &["sample", "obs"],
                data: hx.as_slice(),
                units: "observation units",
                long_name: "noise-free observed simulator outputs H(G(theta))",
            },
            Var { name: "obs_sd", dims: &["obs"], data: sd, units: "observation units", long_name: "observation-error standard deviation" },
        ],
        &all,
    )
}

/// Posterior samples as NetCDF `samples(sample, parameter)`.
pub fn samples_bytes(names: &[String], samples: &DMatrix<f64>, predictor: &str) -> Result<Vec<u8>> {
    let mut attrs = common_attrs();
    attrs.push(("parameters", names.join(" ")));
    attrs.push(("predictor", predictor.to_string()));
    nc_bytes(
        &[("sample", samples.ncols()), ("parameter", samples.nrows())],
        &[Var { name: "samples", dims: &["sample", "parameter"], data: samples.as_slice(), units: "see parameters", long_name: "posterior samples" }],
        &attrs,
    )
}

/// Read a training set back (`theta`, `hx` as `dims × samples`, `obs_sd`).
pub fn parse_pairs(label: &str, bytes: &[u8]) -> Result<(DMatrix<f64>, DMatrix<f64>, Vec<f64>)> {
    let mut r = geohost_netcdf::Reader::open(label, bytes.to_vec(), "a geohost training-pairs file (dimensions sample, parameter, obs)")?;
    let (n, d, p) = (r.dim("sample")?, r.dim("parameter")?, r.dim("obs")?);
    let (theta, hx, sd) = (r.var("theta", n * d)?, r.var("hx", n * p)?, r.var("obs_sd", p)?);
    Ok((DMatrix::from_vec(d, n, theta), DMatrix::from_vec(p, n, hx), sd))
}

/// What step 5 produced.
#[derive(Clone, Debug, Serialize)]
pub struct PredictorRecord {
    pub id: String,
    pub name: String,
    pub dataset: String,
    pub dataset_cache_hit: bool,
    /// Loaded from the registry: the same pairs and network were trained
    /// before (the training time is then not known).
    pub predictor_cache_hit: bool,
    pub simulations: usize,
    /// Whether a refinement stage follows the first network; `training`
    /// is then the refinement's, its time both stages'.
    pub refined: bool,
    pub training: Training,
}

/// Step 5's simulations: θ from the prior and H(G(θ)), with the
/// observation-error sd; cached in the registry by request key.
pub struct Simulations {
    pub id: String,
    pub cache_hit: bool,
    pub thetas: DMatrix<f64>,
    pub hx: DMatrix<f64>,
    pub sd: Vec<f64>,
}

/// The simulations `spec` asks for: read from the registry when the same
/// request (plugins, prior, count, seed) was made before, else simulated
/// and (with a registry) registered as a step-5 dataset `derived_from`
/// the plugins.
pub fn simulations(
    spec: &Step5Spec,
    prior: &Prior,
    simulator: &mut dyn Simulator,
    obs: &mut dyn ObsOperator,
    plugin_ids: &[String],
    registry: Option<&mut Registry>,
) -> Result<Simulations> {
    // The request key: everything the pairs depend on, known before simulating.
    let key = format!(
        "blake3:{}",
        blake3::hash(
            serde_json::to_string(
                &serde_json::json!({ "step5-simulations": { "plugins": plugin_ids, "prior": prior.specs, "simulations": spec.simulations, "seed": spec.seed } })
            )?
            .as_bytes()
        )
        .to_hex()
    );
    if let Some((id, bytes)) = geohost_registry::cached_output(registry.as_deref(), &key)? {
        let (thetas, hx, sd) = parse_pairs(&id, &bytes)?;
        return Ok(Simulations { id, cache_hit: true, thetas, hx, sd });
    }
    let (thetas, hx, sd) = simulate_clean(prior, simulator, obs, spec.simulations, spec.seed)?;
    let bytes = pairs_bytes(prior, &thetas, &hx, &sd, &[("request_key", key.clone())])?;
    let id = match registry {
        Some(reg) => {
            let (id, _) = reg.add(
                &bytes,
                &NewArtifact {
                    kind: "dataset".into(),
                    name: format!("{}-simulations", spec.name),
                    media_type: "application/x-netcdf".into(),
                    step: Some(5),
                    metadata: serde_json::json!({ "request_key": key, "simulations": spec.simulations, "seed": spec.seed }),
                    ..Default::default()
                },
            )?;
            for p in plugin_ids {
                reg.link(&id, p, "derived_from")?;
            }
            reg.record_run(&key, &plugin_ids[0], std::slice::from_ref(&id))?;
            id
        }
        None => geohost_registry::artifact_id(&bytes),
    };
    Ok(Simulations { id, cache_hit: false, thetas, hx, sd })
}

/// Train on `sims` and, with a registry, register the predictor (kind
/// weights, role predictor, step 5, trained_on the dataset, derived_from
/// the plugins). Training is deterministic, so a registry that holds a
/// predictor of the same pairs and networks (by request key) gives it
/// back instead. With `[step5] refine`, the first network is trained (or
/// found) and registered on its own as `NAME-stage1`, then the
/// refinement stage is trained through `forward`; `forward_plugins`
/// (the plugins' ids and configs) is stored with it so that sampling
/// can run them again.
#[allow(clippy::too_many_arguments)]
pub fn train(
    spec: &Step5Spec,
    prior: &Prior,
    sims: &Simulations,
    plugin_ids: &[String],
    mut registry: Option<&mut Registry>,
    forward: &mut Forward,
    forward_plugins: &serde_json::Value,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<(Predictor, PredictorRecord, Vec<u8>)> {
    let Simulations { id: dataset_id, cache_hit: hit, thetas, hx, sd } = sims;
    let (dataset_id, hit) = (dataset_id.clone(), *hit);
    // Bump the format when training changes what the same spec produces.
    let request = serde_json::json!({ "predictor_format": 2, "dataset": dataset_id, "network": spec.network });
    let first_key = geohost_registry::artifact_id(request.to_string().as_bytes());
    let key = match &spec.refine {
        None => first_key.clone(),
        Some(refine) => {
            let mut request = request;
            request["refine"] = serde_json::to_value(refine)?;
            geohost_registry::artifact_id(request.to_string().as_bytes())
        }
    };
    let record = |id: String, cache_hit: bool, training: Training| PredictorRecord {
        id,
        name: spec.name.clone(),
        dataset: dataset_id.clone(),
        dataset_cache_hit: hit,
        predictor_cache_hit: cache_hit,
        simulations: spec.simulations,
        refined: spec.refine.is_some(),
        training,
    };
    let stored_training = |bytes: &[u8], id: &str| -> Result<(Predictor, Training)> {
        let (predictor, meta) = Predictor::from_safetensors(id, bytes)?;
        let training = serde_json::from_value(meta["training"]["training"].clone()).map_err(|e| anyhow::anyhow!("{id}: unreadable training record: {e}"))?;
        Ok((predictor, training))
    };
    if let Some((id, bytes)) = geohost_registry::cached_output(registry.as_deref(), &key)? {
        let (predictor, training) = stored_training(&bytes, &id)?;
        return Ok((predictor, record(id, true, training), bytes));
    }
    let artifact = |name: String, training: &Training| NewArtifact {
        kind: "weights".into(),
        name,
        media_type: "application/vnd.safetensors".into(),
        role: Some("predictor".into()),
        step: Some(5),
        metadata: serde_json::json!({ "predictor": spec.network.estimator, "dataset": dataset_id, "training": training }),
        ..Default::default()
    };
    // The first network: with a refinement stage, looked up on its own.
    let found = match spec.refine {
        Some(_) => geohost_registry::cached_output(registry.as_deref(), &first_key)?,
        None => None,
    };
    let (first, training, first_id) = match found {
        Some((id, bytes)) => {
            let (predictor, training) = stored_training(&bytes, &id)?;
            (predictor.first, training, id)
        }
        None => {
            // Fresh observation noise every epoch: the simulator ran once
            // per θ, the (known, Gaussian) observation error is redrawn.
            let (mdn, training) = Density::train(prior, thetas, hx, Some(sd), &spec.network, progress)?;
            let meta = serde_json::json!({ "dataset": dataset_id, "spec": spec, "training": crate::stored_training(&training)? });
            let bytes = mdn.to_safetensors(&meta)?;
            let name = if spec.refine.is_some() { format!("{}-stage1", spec.name) } else { spec.name.clone() };
            let id = geohost_registry::add_trained(registry.as_deref_mut(), &first_key, &bytes, &artifact(name, &training), &dataset_id, plugin_ids)?;
            if spec.refine.is_none() {
                return Ok((Predictor { first: mdn, second: None, noise_sd: sd.clone(), gauss_newton: 0 }, record(id, false, training), bytes));
            }
            (mdn, training, id)
        }
    };
    let refine = spec.refine.as_ref().expect("a refinement stage (the single-stage predictor returned above)");
    let (second, second_training) = crate::refine::train_second(first.as_mdn("[step5] refine")?, thetas, hx, sd, refine, forward, progress)?;
    let predictor = Predictor { first, second: Some(second), noise_sd: sd.clone(), gauss_newton: refine.gauss_newton };
    // The record reports the stage that scores: the refinement's, with
    // the first stage's time added.
    let training = Training { seconds: training.seconds + second_training.seconds, ..second_training };
    let meta = serde_json::json!({ "dataset": dataset_id, "spec": spec, "training": crate::stored_training(&training)? });
    let bytes = predictor.to_safetensors(&meta, forward_plugins)?;
    let id = geohost_registry::add_trained(registry.as_deref_mut(), &key, &bytes, &artifact(spec.name.clone(), &training), &dataset_id, plugin_ids)?;
    if let Some(reg) = registry {
        reg.link(&id, &first_id, "derived_from")?;
    }
    Ok((predictor, record(id, false, training), bytes))
}
