//! Step 5 for static problems: simulate training pairs (θ, x) from the
//! prior through the simulator and observation plugins (with observation
//! noise), cache them by request key, train the mixture density network
//! and register it as a `predictor`.

use super::mdn::{Mdn, MdnSpec, Training};
use super::prior::Prior;
use crate::model::{ObsOperator, Simulator};
use crate::output::{common_attrs, nc_bytes, Var};
use crate::registry::{NewArtifact, Registry};
use anyhow::{bail, Context, Result};
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
}

impl Step5Spec {
    pub fn validate(&self) -> Result<()> {
        if self.simulations < 100 {
            bail!("[step5] simulations must be at least 100, got {}", self.simulations);
        }
        self.network.validate("[step5].network")
    }
}

/// Simulate `n` pairs: θ ~ prior, x = H(G(θ)) + ε with ε ~ N(0, R).
pub fn simulate_pairs(prior: &Prior, simulator: &mut dyn Simulator, obs: &mut dyn ObsOperator, n: usize, seed: u64) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = prior.dim();
    let mut thetas = DMatrix::zeros(d, n);
    for mut col in thetas.column_iter_mut() {
        col.copy_from_slice(&prior.sample(&mut rng));
    }
    let r: Vec<f64> = obs.info().noise_variance.clone();
    let mut xs = DMatrix::zeros(r.len(), n);
    const CHUNK: usize = 500;
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        let out = simulator.simulate(&thetas.columns(start, len).into_owned(), seed.wrapping_add(start as u64))?;
        let clean = obs.observe(&out, 0.0).context("observing the simulated outputs")?;
        for j in 0..len {
            for i in 0..r.len() {
                xs[(i, start + j)] = clean[(i, j)] + r[i].sqrt() * rng.sample::<f64, _>(StandardNormal);
            }
        }
    }
    Ok((thetas, xs))
}

/// The training pairs as NetCDF: `theta(sample, parameter)`, `x(sample, obs)`.
pub fn pairs_bytes(prior: &Prior, thetas: &DMatrix<f64>, xs: &DMatrix<f64>, attrs: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut all = common_attrs();
    all.extend(attrs.iter().map(|(k, v)| (*k, v.clone())));
    all.push(("parameters", prior.names.join(" ")));
    nc_bytes(
        &[("sample", thetas.ncols()), ("parameter", thetas.nrows()), ("obs", xs.nrows())],
        &[
            Var { name: "theta", dims: &["sample", "parameter"], data: thetas.as_slice(), units: "see parameters", long_name: "parameters drawn from the prior" },
            Var { name: "x", dims: &["sample", "obs"], data: xs.as_slice(), units: "observation units", long_name: "simulated noisy observations" },
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

/// Read training pairs back (`theta`, `x` as `dims × samples`).
pub fn parse_pairs(label: &str, bytes: &[u8]) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    let mut r = netcdf3::FileReader::open_seek_read(label, Box::new(std::io::Cursor::new(bytes.to_vec()))).map_err(|e| anyhow::anyhow!("{label}: not NetCDF ({e:?})"))?;
    let ds = r.data_set();
    let (n, d, p) = (ds.dim_size("sample"), ds.dim_size("parameter"), ds.dim_size("obs"));
    let (Some(n), Some(d), Some(p)) = (n, d, p) else { bail!("{label}: not a geohost training-pairs file (dimensions sample, parameter, obs)") };
    let theta = r.read_var_f64("theta").map_err(|e| anyhow::anyhow!("{label}: {e:?}"))?;
    let x = r.read_var_f64("x").map_err(|e| anyhow::anyhow!("{label}: {e:?}"))?;
    if theta.len() != n * d || x.len() != n * p {
        bail!("{label}: variable sizes do not match the dimensions");
    }
    Ok((DMatrix::from_vec(d, n, theta), DMatrix::from_vec(p, n, x)))
}

/// What step 5 produced.
#[derive(Clone, Debug, Serialize)]
pub struct PredictorRecord {
    pub id: String,
    pub name: String,
    pub dataset: String,
    pub dataset_cache_hit: bool,
    pub simulations: usize,
    pub training: Training,
}

/// Train (on cached or fresh pairs) and, with a registry, register the
/// dataset (kind dataset, step 5) and the predictor (kind weights, role
/// predictor, step 5, trained_on the dataset, derived_from the plugins).
#[allow(clippy::too_many_arguments)]
pub fn train(
    spec: &Step5Spec,
    prior: &Prior,
    simulator: &mut dyn Simulator,
    obs: &mut dyn ObsOperator,
    plugin_ids: &[String],
    mut registry: Option<&mut Registry>,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<(Mdn, PredictorRecord, Vec<u8>)> {
    // The request key: everything the pairs depend on, known before simulating.
    let key = format!(
        "blake3:{}",
        blake3::hash(serde_json::to_string(&serde_json::json!({ "step5-pairs": { "plugins": plugin_ids, "prior": prior.specs, "simulations": spec.simulations, "seed": spec.seed } }))?.as_bytes()).to_hex()
    );
    let cached = match registry.as_deref() {
        Some(reg) => match reg.find_run(&key)? {
            Some(ids) if ids.len() == 1 => Some((ids[0].clone(), reg.read(&ids[0])?)),
            _ => None,
        },
        None => None,
    };
    let (dataset_id, hit, thetas, xs) = match cached {
        Some((id, bytes)) => {
            let (t, x) = parse_pairs(&id, &bytes)?;
            (id, true, t, x)
        }
        None => {
            let (t, x) = simulate_pairs(prior, simulator, obs, spec.simulations, spec.seed)?;
            let bytes = pairs_bytes(prior, &t, &x, &[("request_key", key.clone())])?;
            let id = match registry.as_deref_mut() {
                Some(reg) => {
                    let (id, _) = reg.add(
                        &bytes,
                        &NewArtifact {
                            kind: "dataset".into(),
                            name: format!("{}-pairs", spec.name),
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
                None => format!("blake3:{}", blake3::hash(&bytes).to_hex()),
            };
            (id, false, t, x)
        }
    };
    let (mdn, training) = Mdn::train(prior, &thetas, &xs, &spec.network, progress)?;
    // The stored record leaves out the wall-clock time, so identical
    // inputs give identical bytes (and one registry id).
    let mut stored = serde_json::to_value(&training)?;
    stored.as_object_mut().map(|o| o.remove("seconds"));
    let bytes = mdn.to_safetensors(&serde_json::json!({ "dataset": dataset_id, "spec": spec, "training": stored }))?;
    let id = match registry {
        Some(reg) => {
            let (id, _) = reg.add(
                &bytes,
                &NewArtifact {
                    kind: "weights".into(),
                    name: spec.name.clone(),
                    media_type: "application/vnd.safetensors".into(),
                    role: Some("predictor".into()),
                    step: Some(5),
                    metadata: serde_json::json!({ "predictor": "mdn", "dataset": dataset_id, "training": training }),
                    ..Default::default()
                },
            )?;
            reg.link(&id, &dataset_id, "trained_on")?;
            for p in plugin_ids {
                reg.link(&id, p, "derived_from")?;
            }
            id
        }
        None => format!("blake3:{}", blake3::hash(&bytes).to_hex()),
    };
    let record = PredictorRecord { id, name: spec.name.clone(), dataset: dataset_id, dataset_cache_hit: hit, simulations: spec.simulations, training };
    Ok((mdn, record, bytes))
}
