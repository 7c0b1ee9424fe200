//! Simulation datasets: training pairs (x(t), x(t + lead·dt)) drawn from a
//! forward model, the seed's `CachedDataset`.
//!
//! A dataset is identified twice: by its *request key*, the hash of (model
//! component id, model config, sampling spec, dt) computed before anything
//! is simulated, and by the BLAKE3 id of its bytes once stored. The
//! registry maps the first to the second, so a second identical request
//! loads the stored blob (re-hashed) instead of simulating.
//!
//! On disk (and in the registry) a dataset is NetCDF: `x(sample, state)`
//! and `y(sample, state)` (the state `lead` model steps later), with the
//! spec, dt and model as global attributes.

use anyhow::{bail, Context, Result};
use geohost_netcdf::Array2;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::ForwardModel;
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How pairs are sampled from free runs of the model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Independent free runs, advanced together as one ensemble.
    pub trajectories: usize,
    /// Model steps discarded at the start of each run (onto the attractor).
    pub spin_up: usize,
    /// Pairs recorded per run.
    pub pairs_per_trajectory: usize,
    /// Model steps between recorded pairs.
    #[serde(default = "one")]
    pub stride: usize,
    /// Model steps from a pair's input to its target.
    #[serde(default = "one")]
    pub lead: usize,
    pub seed: u64,
    /// Initial states are drawn from N(init_mean, init_std²) per variable.
    #[serde(default)]
    pub init_mean: f64,
    #[serde(default = "unit")]
    pub init_std: f64,
}

fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}

impl DatasetSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        for (name, v) in
            [("trajectories", self.trajectories), ("pairs_per_trajectory", self.pairs_per_trajectory), ("stride", self.stride), ("lead", self.lead)]
        {
            if v == 0 {
                bail!("{field}.{name} must be at least 1");
            }
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0 && self.init_mean.is_finite()) {
            bail!("{field}.init_mean and init_std must be finite (init_std ≥ 0)");
        }
        Ok(())
    }

    pub fn samples(&self) -> usize {
        self.trajectories * self.pairs_per_trajectory
    }
}

/// Training pairs in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Array2,
    pub y: Array2,
    pub dt: f64,
    pub lead: usize,
}

/// A dataset with its registry identity.
pub struct Stored {
    pub dataset: Dataset,
    /// BLAKE3 id of the stored bytes.
    pub id: String,
    /// The request key it was looked up by.
    pub key: String,
    /// True when it came from the registry rather than being simulated.
    pub cache_hit: bool,
    pub bytes: Vec<u8>,
}

/// The request key: everything that determines the dataset's contents.
pub fn request_key(model_id: &str, model_config: &serde_json::Value, spec: &DatasetSpec, dt: f64) -> String {
    geohost_registry::artifact_id(
        serde_json::json!({ "dataset_format": 1, "model": model_id, "config": model_config, "spec": spec, "dt": dt }).to_string().as_bytes(),
    )
}

/// Simulate the pairs: spin up, then record every `stride` steps.
pub fn simulate(model: &mut dyn ForwardModel, spec: &DatasetSpec, dt: f64, progress: &mut dyn FnMut(usize)) -> Result<Dataset> {
    let m = model.info().state_size;
    let n = spec.trajectories;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let mut e = DMatrix::from_fn(m, n, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        spec.init_mean + spec.init_std * z
    });
    let mut t = 0.0;
    let mut step = |e: &mut DMatrix<f64>, t: &mut f64| -> Result<()> {
        model.advance(e, *t, dt).with_context(|| format!("simulating the dataset at t = {t}"))?;
        *t += dt;
        Ok(())
    };
    for _ in 0..spec.spin_up {
        step(&mut e, &mut t)?;
    }
    let samples = spec.samples();
    let (mut x, mut y) = (vec![0.0; samples * m], vec![0.0; samples * m]);
    for k in 0..spec.pairs_per_trajectory {
        let input = e.clone();
        for _ in 0..spec.lead {
            step(&mut e, &mut t)?;
        }
        // Sample index: pair k of trajectory j at row k·n + j (interleaved,
        // so any prefix covers every trajectory).
        for j in 0..n {
            let row = k * n + j;
            x[row * m..(row + 1) * m].copy_from_slice(input.column(j).as_slice());
            y[row * m..(row + 1) * m].copy_from_slice(e.column(j).as_slice());
        }
        for _ in spec.lead..spec.stride {
            step(&mut e, &mut t)?;
        }
        progress(k);
    }
    Ok(Dataset { x: Array2 { rows: samples, cols: m, data: x }, y: Array2 { rows: samples, cols: m, data: y }, dt, lead: spec.lead })
}

/// Look the dataset up by its request key, or simulate and register it
/// (kind `dataset`, step 3, `derived_from` the model component).
#[allow(clippy::too_many_arguments)]
pub fn cached(
    registry: &mut Registry,
    model: &mut dyn ForwardModel,
    model_id: &str,
    model_config: &serde_json::Value,
    spec: &DatasetSpec,
    dt: f64,
    name: &str,
    progress: &mut dyn FnMut(usize),
) -> Result<Stored> {
    let key = request_key(model_id, model_config, spec, dt);
    if let Some(ids) = registry.find_run(&key)? {
        if let Some(id) = ids.first() {
            let bytes = registry.read(id).with_context(|| format!("loading cached dataset {id}"))?;
            let dataset = parse(id, bytes.clone())?;
            return Ok(Stored { dataset, id: id.clone(), key, cache_hit: true, bytes });
        }
    }
    let dataset = simulate(model, spec, dt, progress)?;
    let bytes = to_netcdf(&dataset, model, model_id, spec)?;
    let (id, _) = registry.add(
        &bytes,
        &NewArtifact {
            kind: "dataset".into(),
            name: name.into(),
            media_type: "application/x-netcdf".into(),
            step: Some(3),
            tags: vec!["simulation".into()],
            metadata: serde_json::json!({ "request_key": key, "spec": spec, "dt": dt, "model": model_id, "samples": spec.samples() }),
            ..Default::default()
        },
    )?;
    registry.link(&id, model_id, "derived_from")?;
    registry.record_run(&key, model_id, std::slice::from_ref(&id))?;
    Ok(Stored { dataset, id, key, cache_hit: false, bytes })
}

/// The dataset as NetCDF bytes.
fn to_netcdf(d: &Dataset, model: &dyn ForwardModel, model_id: &str, spec: &DatasetSpec) -> Result<Vec<u8>> {
    use geohost_netcdf::{common_attrs, nc_bytes, Var};
    let info = model.info();
    let mut attrs = common_attrs();
    attrs.extend([
        ("model", format!("{} {} ({model_id})", info.name, info.version)),
        ("spec", serde_json::to_string(spec)?),
        ("dt", d.dt.to_string()),
        ("lead", d.lead.to_string()),
    ]);
    let units = &info.state_units;
    nc_bytes(
        &[("sample", d.x.rows), ("state", d.x.cols)],
        &[
            Var { name: "x", dims: &["sample", "state"], data: &d.x.data, units, long_name: "model state" },
            Var { name: "y", dims: &["sample", "state"], data: &d.y.data, units, long_name: "model state `lead` steps later" },
        ],
        &attrs,
    )
}

/// Parse dataset bytes; `label` names them in errors.
pub fn parse(label: &str, bytes: Vec<u8>) -> Result<Dataset> {
    let mut r = geohost_netcdf::Reader::open(label, bytes, "a geohost simulation dataset")?;
    let (n, m) = (r.dim("sample")?, r.dim("state")?);
    let attr = |name: &str| -> Result<f64> { r.attr(name)?.parse().with_context(|| format!("{label}: global attribute `{name}` is not a number")) };
    let (dt, lead) = (attr("dt")?, attr("lead")? as usize);
    let (x, y) = (r.var("x", n * m)?, r.var("y", n * m)?);
    Ok(Dataset { x: Array2 { rows: n, cols: m, data: x }, y: Array2 { rows: n, cols: m, data: y }, dt, lead })
}

/// Write the dataset's bytes beside the run's outputs (for xarray).
pub fn write_copy(bytes: &[u8], path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
