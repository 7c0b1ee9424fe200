//! `geohost run` on a retrieval plugin-set (one with `[scenes]`): the
//! L1→L2 methane row. Step 1 is a radiative-transfer `static-model`
//! (plugins/ch4-rt) seen through a detector `obs-operator` (plugins/radiance-obs);
//! scenes put a `gaussian-plume` of known emission over a textured
//! surface; step 2, the oracle, is the classical matched filter with an
//! IME emission estimate, scored against the truth the host keeps.
//!
//! Three kinds of scene, all from one seed:
//! - `clear` scenes (no plume) give the filter's background spread σ
//!   (the mask threshold is `mask_sigma` σ) and the detection threshold
//!   (the `1 − far` quantile of the detection statistic);
//! - `calibration` scenes give U_eff from noise-free truth maps (as LES
//!   plumes calibrate it in the literature);
//! - `count` test scenes, with emissions on a geometric ladder over
//!   `emission`, are retrieved and scored.

use crate::pluginset::{PluginRef, Source};
use crate::run::load_plugin;
use anyhow::{bail, Context, Result};
use geohost_da::retrieval::matched_filter::{matched_filter, Grouping};
use geohost_da::retrieval::scene::{self, Surface};
use geohost_da::retrieval::{ime, PPM_M_PER_PPB};
use geohost_netcdf::{common_attrs, nc_bytes, Var};
use geohost_registry::Registry;
use geohost_sandbox::model::{ObsOperator, Simulator};
use geohost_sandbox::{config_json, Limits, Runtime, WasmMetric, WasmObs, WasmSimulator, World};
use geohost_sandbox::{MetricValue, Table as MetricTable};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSet {
    pub name: Option<String>,
    /// The data-tier transition (the methane row is L1_L2).
    pub transition: Option<String>,
    /// The radiative-transfer `static-model`: parameters `dx`, `albedo`, ….
    pub simulator: PluginRef,
    /// The detector `obs-operator`; the host adds `state_size` and
    /// `reference` (a plume-free pixel of the surface's mean albedo).
    pub observations: PluginRef,
    /// The plume `static-model` (gaussian-plume: x0, y0, q in t/h,
    /// wind_dir → ppb); the host sets its `nx`, `ny` and `pixel`.
    pub plume: PluginRef,
    /// The `metric` component that scores the scenes (metrics-standard:
    /// rmse and bias per scene, slope, intercept and r2 of the emission
    /// estimates, pod and detection_threshold); the host sets its
    /// `metrics` (and `far`) per use.
    pub metrics: PluginRef,
    pub scenes: ScenesSpec,
    #[serde(default)]
    pub limits: Limits,
    /// Per pixel, for steps 3–5: the operating distribution of the
    /// simulator's parameters (`dx` unbounded).
    #[serde(rename = "prior", default)]
    pub priors: Vec<geohost_da::params::prior::PriorSpec>,
    /// Step 3: an emulator of the radiative transfer (on step 5's simulations).
    pub step3: Option<geohost_learn::static_emulator::EmulatorSpec>,
    /// Step 4: per-pixel retrievals through the emulator and the physics.
    pub step4: Option<crate::pixels::Step4Spec>,
    /// Step 5: the direct retrieval, an amortized posterior per pixel.
    pub step5: Option<geohost_learn::amortize::Step5Spec>,
    /// The retrieval cycle contract the run's report is checked against.
    pub cycle: Option<crate::static_run::CycleSection>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenesSpec {
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d64")]
    pub nx: usize,
    #[serde(default = "d64")]
    pub ny: usize,
    /// Pixel size, m.
    #[serde(default = "d5")]
    pub pixel: f64,
    /// Test scenes.
    #[serde(default = "d24")]
    pub count: usize,
    /// Emission rates of the test and calibration scenes, kg/h: a
    /// geometric ladder from the first to the second.
    #[serde(default = "demission")]
    pub emission: [f64; 2],
    /// Source position, m (default: a quarter in from the west edge,
    /// half-way north).
    pub source: Option<[f64; 2]>,
    /// Wind direction range (from, degrees), drawn uniformly per scene.
    #[serde(default = "dwind")]
    pub wind_dir: [f64; 2],
    #[serde(default = "d40")]
    pub clear: usize,
    #[serde(default = "d24")]
    pub calibration: usize,
    #[serde(default)]
    pub surface: SurfaceSpec,
    #[serde(default)]
    pub filter: FilterSpec,
    /// The plume mask keeps connected pixels above `mask_sigma` times the
    /// filter's background spread.
    #[serde(default = "d2")]
    pub mask_sigma: f64,
    /// Pixels around the source searched for the plume's start and for
    /// the detection statistic.
    #[serde(default = "d3")]
    pub search: usize,
    /// False-alarm rate per scene of the detection threshold.
    #[serde(default = "dfar")]
    pub far: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceSpec {
    #[serde(default = "d4")]
    pub types: usize,
    #[serde(default = "dalbedo")]
    pub albedo: [f64; 2],
    #[serde(default = "dtexture")]
    pub texture: f64,
}

impl Default for SurfaceSpec {
    fn default() -> Self {
        SurfaceSpec { types: 4, albedo: dalbedo(), texture: dtexture() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// "scene" (one background for the scene) or "column" (one per
    /// detector column, as for a push-broom instrument).
    #[serde(default = "dgrouping")]
    pub grouping: String,
    #[serde(default = "dshrinkage")]
    pub shrinkage: f64,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec { grouping: dgrouping(), shrinkage: dshrinkage() }
    }
}

fn d64() -> usize {
    64
}
fn d5() -> f64 {
    5.0
}
fn d24() -> usize {
    24
}
fn d40() -> usize {
    40
}
fn d4() -> usize {
    4
}
fn d3() -> usize {
    3
}
fn d2() -> f64 {
    2.0
}
fn dfar() -> f64 {
    0.05
}
fn demission() -> [f64; 2] {
    [2.0, 200.0]
}
fn dwind() -> [f64; 2] {
    [240.0, 300.0]
}
fn dalbedo() -> [f64; 2] {
    [0.6, 1.4]
}
fn dtexture() -> f64 {
    0.05
}
fn dgrouping() -> String {
    "scene".into()
}
fn dshrinkage() -> f64 {
    0.01
}

impl ScenesSpec {
    fn validate(&self) -> Result<()> {
        if self.nx < 4 || self.ny < 4 || self.nx * self.ny > 1 << 20 {
            bail!("[scenes] nx × ny must be 4 × 4 to 2^20 pixels, got {} × {}", self.nx, self.ny);
        }
        if !(self.pixel.is_finite() && self.pixel > 0.0) {
            bail!("[scenes] pixel must be a positive size in m, got {}", self.pixel);
        }
        if self.count < 2 || self.clear < 2 || self.calibration < 1 {
            bail!("[scenes] needs count ≥ 2, clear ≥ 2 and calibration ≥ 1 scenes");
        }
        if !(self.emission[0] > 0.0 && self.emission[1] >= self.emission[0] && self.emission[1].is_finite()) {
            bail!("[scenes] emission = [low, high] kg/h needs 0 < low ≤ high, got {:?}", self.emission);
        }
        if !(self.wind_dir[0] <= self.wind_dir[1] && self.wind_dir.iter().all(|w| w.is_finite())) {
            bail!("[scenes] wind_dir = [from, to] degrees needs from ≤ to, got {:?}", self.wind_dir);
        }
        let s = &self.surface;
        if s.types == 0 || !(s.albedo[0] > 0.0 && s.albedo[1] >= s.albedo[0]) || !(0.0..0.5).contains(&s.texture) {
            bail!("[scenes] surface needs types ≥ 1, 0 < albedo[0] ≤ albedo[1] and 0 ≤ texture < 0.5");
        }
        if !["scene", "column"].contains(&self.filter.grouping.as_str()) {
            bail!("[scenes] filter.grouping must be \"scene\" or \"column\", got \"{}\"", self.filter.grouping);
        }
        if !(0.0..=1.0).contains(&self.filter.shrinkage) {
            bail!("[scenes] filter.shrinkage must be within 0 and 1, got {}", self.filter.shrinkage);
        }
        if !(self.mask_sigma > 0.0 && self.mask_sigma.is_finite()) {
            bail!("[scenes] mask_sigma must be positive, got {}", self.mask_sigma);
        }
        if !(self.far > 0.0 && self.far < 0.5) {
            bail!("[scenes] far (false alarms per scene) must be within 0 and 0.5, got {}", self.far);
        }
        if let Some([x, y]) = self.source {
            if !(0.0..self.nx as f64 * self.pixel).contains(&x) || !(0.0..self.ny as f64 * self.pixel).contains(&y) {
                bail!("[scenes] source = [{x}, {y}] m lies outside the {} × {} m scene", self.nx as f64 * self.pixel, self.ny as f64 * self.pixel);
            }
        }
        Ok(())
    }

    fn source(&self) -> [f64; 2] {
        self.source.unwrap_or([self.nx as f64 * self.pixel / 4.0, self.ny as f64 * self.pixel / 2.0])
    }

    fn source_pixel(&self) -> (usize, usize) {
        let [x, y] = self.source();
        ((x / self.pixel) as usize, (y / self.pixel) as usize)
    }

    /// Emission of scene `i` of `n` on the geometric ladder, kg/h.
    fn emission(&self, i: usize, n: usize) -> f64 {
        let [lo, hi] = self.emission;
        if n < 2 {
            lo
        } else {
            lo * (hi / lo).powf(i as f64 / (n - 1) as f64)
        }
    }
}

/// Whether a plugin-set file is a retrieval one (has `[scenes]`).
pub fn is_retrieval(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).map(|t| t.contains_key("scenes")).unwrap_or(false)
}

/// A validated retrieval plugin-set.
pub struct LoadedRetrieval {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub name: String,
    pub set: RetrievalSet,
    pub simulator: Source,
    pub obs: Source,
    pub plume: Source,
    pub metrics: Source,
    pub contract: Option<crate::retrieval_report::RetrievalContract>,
}

impl RetrievalSet {
    pub fn load(path: &Path) -> Result<LoadedRetrieval> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read plugin-set file {}", path.display()))?;
        let text = String::from_utf8(bytes.clone()).with_context(|| format!("plugin-set file {} is not UTF-8", path.display()))?;
        let mut set: RetrievalSet = toml::from_str(&text).with_context(|| format!("invalid plugin-set file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid plugin-set file {}: {msg}", path.display());
        set.scenes.validate().map_err(|e| fail(format!("{e:#}")))?;
        if let Some(step3) = &set.step3 {
            step3.validate().map_err(|e| fail(format!("{e:#}")))?;
        }
        if let Some(step5) = &set.step5 {
            step5.validate().map_err(|e| fail(format!("{e:#}")))?;
            if step5.refine.is_some() {
                return Err(fail("[step5] refine is not supported for retrievals (the direct retrieval takes the first network's moments)".into()));
            }
        }
        if (set.step3.is_some() || set.step4.is_some()) && set.step5.is_none() {
            return Err(fail("[step3] and [step4] train and test on [step5]'s simulations: add [step5]".into()));
        }
        if set.step4.is_some() && set.step3.is_none() {
            return Err(fail("[step4] compares retrievals through [step3]'s emulator with the physics: add [step3]".into()));
        }
        if set.step5.is_some() && set.priors.is_empty() {
            return Err(fail("steps 3–5 need a [[prior]] per simulator parameter (the pixels' operating distribution)".into()));
        }
        set.limits.validate().map_err(|e| fail(format!("{e:#}")))?;
        crate::pluginset::check_transition(set.transition.as_deref()).map_err(fail)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for (table, r) in [("simulator", &mut set.simulator), ("observations", &mut set.observations), ("plume", &mut set.plume), ("metrics", &mut set.metrics)]
        {
            r.merge_config_file(table, dir).map_err(|e| fail(format!("{e:#}")))?;
        }
        for key in ["nx", "ny", "pixel"] {
            if set.plume.config.contains_key(key) {
                return Err(fail(format!("[plume] config sets `{key}`; the scene's grid comes from [scenes] (remove it there)")));
            }
        }
        let simulator = set.simulator.source("simulator", dir).map_err(|e| fail(format!("{e:#}")))?;
        let obs = set.observations.source("observations", dir).map_err(|e| fail(format!("{e:#}")))?;
        let plume = set.plume.source("plume", dir).map_err(|e| fail(format!("{e:#}")))?;
        let metrics = set.metrics.source("metrics", dir).map_err(|e| fail(format!("{e:#}")))?;
        if set.metrics.config.contains_key("metrics") || set.metrics.config.contains_key("far") {
            return Err(fail("[metrics] config sets `metrics` or `far`; the host chooses the metrics and [scenes] far sets the false-alarm rate".into()));
        }
        let name = set.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "retrieval".into()));
        let contract = match &set.cycle {
            Some(c) => Some(crate::retrieval_report::RetrievalContract::load(&dir.join(&c.contract)).map_err(|e| fail(format!("[cycle] contract: {e:#}")))?),
            None => None,
        };
        Ok(LoadedRetrieval { path: path.to_path_buf(), bytes, name, set, simulator, obs, plume, metrics, contract })
    }
}

/// One test scene's truth and the oracle's retrieval of it.
#[derive(Clone, Debug, Serialize)]
pub struct SceneRow {
    pub scene: usize,
    /// kg/h.
    pub emission: f64,
    pub wind_dir: f64,
    pub detected: bool,
    /// Largest 3 × 3 mean of the filter's map near the source, ppm·m.
    pub statistic: f64,
    /// IME estimate, kg/h (0 when the mask is empty).
    pub ime_emission: f64,
    pub mask_pixels: usize,
    /// Pixels whose true enhancement is at least the mask threshold.
    pub plume_pixels: usize,
    /// Filter − truth over plume pixels and over background pixels (true
    /// enhancement below 1 ppm·m), ppm·m.
    pub rmse_plume: f64,
    pub bias_plume: f64,
    pub rmse_background: f64,
    pub bias_background: f64,
    /// Correlation over plume pixels of the filter's ratio to the truth
    /// with the pixel's albedo (the filter's albedo bias).
    pub albedo_correlation: f64,
    /// Step 5's direct retrieval on the same scene, when the set has one.
    pub direct: Option<MapScores>,
    /// Step 4, Levenberg–Marquardt through the emulator, on the same scene.
    pub emulator: Option<MapScores>,
}

/// A per-pixel retrieval's map of one scene (step 4 through the emulator,
/// step 5's direct retrieval), scored as the filter's.
#[derive(Clone, Debug, Serialize)]
pub struct MapScores {
    pub rmse_plume: f64,
    pub bias_plume: f64,
    pub rmse_background: f64,
    pub bias_background: f64,
    /// IME on the map (same mask threshold and U_eff), kg/h.
    pub ime_emission: f64,
}

/// The maps of one scene, for the run's NetCDF file.
pub struct SceneMaps {
    pub truth: Vec<f64>,
    pub albedo: Vec<f64>,
    pub retrieved: Vec<f64>,
    /// Step 5's direct retrieval: dx and its sd.
    pub direct: Option<(Vec<f64>, Vec<f64>)>,
    /// Step 4 through the emulator: dx and its sd.
    pub emulator: Option<(Vec<f64>, Vec<f64>)>,
}

/// What a retrieval run produced.
pub struct ScenesRun {
    pub rows: Vec<SceneRow>,
    /// The filter's spread on clear scenes, ppm·m.
    pub background_sd: f64,
    pub mask_threshold: f64,
    pub detection_threshold: f64,
    /// m/s, from the calibration scenes.
    pub u_eff: f64,
    /// IME emission against the truth: ordinary least squares.
    pub slope: f64,
    pub intercept: f64,
    pub r2: f64,
    /// The same regression for step 5's direct retrieval on the scenes,
    /// and for step 4 through the emulator.
    pub direct_fit: Option<(f64, f64, f64)>,
    pub emulator_fit: Option<(f64, f64, f64)>,
    /// (from kg/h, to kg/h, scenes, detected).
    pub detection: Vec<(f64, f64, usize, usize)>,
    pub unit_absorption: Vec<f64>,
    pub noise_sd: Vec<f64>,
    pub first: SceneMaps,
    pub seconds: f64,
    /// Steps 3–5 per pixel.
    pub pixels: crate::pixels::PixelSteps,
    pub components: Vec<(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)>,
}

pub(crate) struct Plugins {
    pub rt: WasmSimulator,
    pub obs: WasmObs,
    plume: WasmSimulator,
    /// Configured with the metrics of each use (see [`Scorer`]).
    metrics: Scorer,
    pub noise_sd: Vec<f64>,
    /// The radiance simulator, the detector, the plume model and the metrics.
    pub components: Vec<(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)>,
}

/// Load and configure the set's plugins (the detector's `reference` is the
/// plume-free spectrum of the surface's mean albedo).
pub(crate) fn setup(set: &LoadedRetrieval, runtime: &Runtime, registry: Option<&Registry>) -> Result<Plugins> {
    let spec = &set.set.scenes;
    let rt_component = load_plugin(runtime, registry, "simulator", &set.simulator, World::StaticModel).context("loading the radiance simulator")?;
    let rt_config = config_json(&set.set.simulator.config);
    let mut rt = WasmSimulator::new(runtime, &rt_component, &rt_config)?;
    let bands = rt.info().output_size;
    let mean_albedo = (spec.surface.albedo[0] + spec.surface.albedo[1]) / 2.0;
    let reference = scene::radiance(&mut rt, &[0.0], &[mean_albedo])?;
    let mut obs_table = set.set.observations.config.clone();
    obs_table.entry("state_size").or_insert(toml::Value::Integer(bands as i64));
    obs_table.entry("reference").or_insert_with(|| toml::Value::Array(reference.iter().map(|&v| toml::Value::Float(v)).collect()));
    let obs_component = load_plugin(runtime, registry, "observations", &set.obs, World::ObsOperator).context("loading the detector")?;
    let obs_config = config_json(&obs_table);
    let obs = WasmObs::new(runtime, &obs_component, &obs_config)?;
    let oi = obs.info();
    if oi.state_size != bands || oi.obs_size != bands {
        bail!(
            "the detector `{}` maps {} values to {}, but the simulator `{}` gives {bands} bands (a band selection is not supported yet)",
            oi.name,
            oi.state_size,
            oi.obs_size,
            rt.info().name
        );
    }
    let noise_sd: Vec<f64> = oi.noise_variance.iter().map(|v| v.sqrt()).collect();
    let plume_component = load_plugin(runtime, registry, "plume", &set.plume, World::StaticModel).context("loading the plume model")?;
    let mut plume_table = set.set.plume.config.clone();
    plume_table.insert("nx".into(), toml::Value::Integer(spec.nx as i64));
    plume_table.insert("ny".into(), toml::Value::Integer(spec.ny as i64));
    plume_table.insert("pixel".into(), toml::Value::Float(spec.pixel));
    let plume_config = config_json(&plume_table);
    let plume = WasmSimulator::new(runtime, &plume_component, &plume_config)?;
    let names: Vec<&str> = plume.info().parameters.iter().map(|p| p.name.as_str()).collect();
    if names != ["x0", "y0", "q", "wind_dir"] || plume.info().output_size != spec.nx * spec.ny {
        bail!(
            "the plume model `{}` must take (x0, y0, q, wind_dir) and give an {} × {} map, as gaussian-plume does; it takes {names:?} and gives {} values",
            plume.info().name,
            spec.nx,
            spec.ny,
            plume.info().output_size
        );
    }
    let metric_component = load_plugin(runtime, registry, "metrics", &set.metrics, World::Metric).context("loading the metrics")?;
    let metrics = Scorer::new(runtime, &metric_component, &set.set.metrics.config, spec.far)?;
    let components = vec![
        (rt_component, "static-model", serde_json::from_str(&rt_config)?, serde_json::to_string(rt.info())?),
        (obs_component, "obs-operator", serde_json::from_str(&obs_config)?, serde_json::to_string(obs.info())?),
        (plume_component, "static-model", serde_json::from_str(&plume_config)?, serde_json::to_string(plume.info())?),
        (
            metric_component,
            "metric",
            serde_json::from_str(&metrics.config)?,
            serde_json::json!({ "name": metrics.name, "version": metrics.version }).to_string(),
        ),
    ];
    Ok(Plugins { rt, obs, plume, metrics, noise_sd, components })
}

/// The scenes' scores through the `metric` component, one instance per
/// group of metrics (rmse and bias; the regression; detection).
struct Scorer {
    errors: WasmMetric,
    regression: WasmMetric,
    detection: WasmMetric,
    name: String,
    version: String,
    /// The config of the errors instance, as registered.
    config: String,
}

impl Scorer {
    fn new(runtime: &Runtime, component: &geohost_sandbox::LoadedComponent, base: &toml::Table, far: f64) -> Result<Scorer> {
        let with = |metrics: &[&str]| {
            let mut table = base.clone();
            table.insert("metrics".into(), toml::Value::Array(metrics.iter().map(|m| toml::Value::String(m.to_string())).collect()));
            table.insert("far".into(), toml::Value::Float(far));
            config_json(&table)
        };
        let config = with(&["rmse", "bias"]);
        let errors = WasmMetric::new(runtime, component, &config).context("[metrics] rmse and bias")?;
        let regression = WasmMetric::new(runtime, component, &with(&["slope", "intercept", "r2"])).context("[metrics] slope, intercept and r2")?;
        let detection = WasmMetric::new(runtime, component, &with(&["pod", "detection_threshold"])).context("[metrics] pod and detection_threshold")?;
        let (name, version) = (errors.name.clone(), errors.version.clone());
        Ok(Scorer { errors, regression, detection, name, version, config })
    }

    fn call(metric: &mut WasmMetric, prediction: &[f64], reference: &[f64]) -> Result<Vec<f64>> {
        let table = |d: &[f64]| MetricTable { rows: 1, cols: d.len(), data: d.to_vec() };
        let values = metric.compute(&table(prediction), &table(reference), None)?;
        values
            .into_iter()
            .map(|(name, v)| match v {
                MetricValue::Scalar(x) => Ok(x),
                MetricValue::Vector(_) => bail!("metric `{name}` of `{}` returned a vector; a scalar was expected", metric.name),
            })
            .collect()
    }

    /// (rmse, bias) of `pairs` (estimate, truth); NaN for none.
    fn errors(&mut self, pairs: &[(f64, f64)]) -> Result<(f64, f64)> {
        if pairs.is_empty() {
            return Ok((f64::NAN, f64::NAN));
        }
        let (p, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let v = Self::call(&mut self.errors, &p, &y)?;
        Ok((v[0], v[1]))
    }

    /// (slope, intercept, r²) of estimates on truths.
    fn regression(&mut self, estimates: &[f64], truths: &[f64]) -> Result<(f64, f64, f64)> {
        let v = Self::call(&mut self.regression, estimates, truths)?;
        Ok((v[0], v[1], v[2]))
    }

    /// (pod, threshold) of detection statistics: `null` cases (no plume)
    /// against `signal` cases.
    fn detection(&mut self, null: &[f64], signal: &[f64]) -> Result<(f64, f64)> {
        let prediction: Vec<f64> = null.iter().chain(signal).copied().collect();
        let reference: Vec<f64> = null.iter().map(|_| 0.0).chain(signal.iter().map(|_| 1.0)).collect();
        let v = Self::call(&mut self.detection, &prediction, &reference)?;
        Ok((v[0], v[1]))
    }
}

/// True enhancement maps (ppm·m) of plumes of `emissions` (kg/h) under
/// `winds` (degrees), one per scene.
fn plume_maps(plume: &mut WasmSimulator, spec: &ScenesSpec, emissions: &[f64], winds: &[f64]) -> Result<Vec<Vec<f64>>> {
    let [x0, y0] = spec.source();
    let thetas = DMatrix::from_fn(4, emissions.len(), |i, s| [x0, y0, emissions[s] / 1000.0, winds[s]][i]);
    let ppb = plume.simulate(&thetas, 0).context("simulating the plumes")?;
    Ok(ppb.column_iter().map(|c| c.iter().map(|v| v * PPM_M_PER_PPB).collect()).collect())
}

/// The filter's map of a noisy scene: radiance of (truth, albedo) through
/// the radiative transfer, detector noise, then the matched filter.
/// Returns the map and the noisy radiance (`bands × pixels`).
fn observe_and_filter(
    plugins: &mut Plugins,
    spec: &ScenesSpec,
    k: &[f64],
    truth: &[f64],
    albedo: &[f64],
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<f64>, DMatrix<f64>)> {
    let mut radiance = scene::radiance(&mut plugins.rt, truth, albedo)?;
    scene::add_noise(&mut radiance, &plugins.noise_sd, rng)?;
    let grouping = if spec.filter.grouping == "column" { Grouping::Column { nx: spec.nx } } else { Grouping::Scene };
    Ok((matched_filter(&radiance, k, grouping, spec.filter.shrinkage)?, radiance))
}

/// The detection statistic: the largest 3 × 3 mean of `map` within
/// `search` pixels of the source.
fn statistic(map: &[f64], spec: &ScenesSpec) -> f64 {
    let (nx, ny) = (spec.nx as isize, spec.ny as isize);
    let (si, sj) = spec.source_pixel();
    let mut best = f64::NEG_INFINITY;
    let r = spec.search as isize;
    for j in (sj as isize - r).max(1)..=(sj as isize + r).min(ny - 2) {
        for i in (si as isize - r).max(1)..=(si as isize + r).min(nx - 2) {
            let mut sum = 0.0;
            for dj in -1..=1 {
                for di in -1..=1 {
                    sum += map[((j + dj) * nx + i + di) as usize];
                }
            }
            best = best.max(sum / 9.0);
        }
    }
    best
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn correlation(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x), mean(y));
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    sxy / (sxx * syy).sqrt()
}

/// Run the scenes: clear, calibration, then the test scenes.
pub fn run(set: &LoadedRetrieval, runtime: &Runtime, registry: Option<&mut Registry>) -> Result<ScenesRun> {
    let started = Instant::now();
    let spec = &set.set.scenes;
    let mut plugins = setup(set, runtime, registry.as_deref())?;
    let k = scene::unit_absorption(&mut plugins.rt)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let surface = Surface { types: spec.surface.types, albedo: (spec.surface.albedo[0], spec.surface.albedo[1]), texture: spec.surface.texture };
    let pixels = spec.nx * spec.ny;

    // Clear scenes: the filter's background spread and the detection threshold.
    let (mut clear_values, mut clear_statistics) = (Vec::new(), Vec::new());
    for _ in 0..spec.clear {
        let albedo = surface.albedo_map(spec.nx, spec.ny, &mut rng);
        let (map, _) = observe_and_filter(&mut plugins, spec, &k, &vec![0.0; pixels], &albedo, &mut rng)?;
        clear_statistics.push(statistic(&map, spec));
        clear_values.extend(map);
    }
    let m = mean(&clear_values);
    let background_sd = (clear_values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / clear_values.len() as f64).sqrt();
    let mask_threshold = spec.mask_sigma * background_sd;

    // Calibration: U_eff from noise-free truth maps.
    let emissions: Vec<f64> = (0..spec.calibration).map(|i| spec.emission(i, spec.calibration)).collect();
    let winds: Vec<f64> = (0..spec.calibration).map(|_| rng.random_range(spec.wind_dir[0]..=spec.wind_dir[1])).collect();
    let source = spec.source_pixel();
    let mut calibration = Vec::new();
    for (truth, q) in plume_maps(&mut plugins.plume, spec, &emissions, &winds)?.iter().zip(&emissions) {
        let mask = ime::plume_mask(truth, spec.nx, spec.ny, source, spec.search, mask_threshold);
        calibration.push((q / 3600.0, ime::ime(truth, &mask, spec.pixel)));
    }
    let u_eff = ime::calibrate_u_eff(&calibration)
        .with_context(|| format!("no calibration plume reaches the mask threshold ({mask_threshold:.0} ppm·m): raise [scenes] emission or lower mask_sigma"))?;

    // Test scenes.
    let emissions: Vec<f64> = (0..spec.count).map(|i| spec.emission(i, spec.count)).collect();
    let winds: Vec<f64> = (0..spec.count).map(|_| rng.random_range(spec.wind_dir[0]..=spec.wind_dir[1])).collect();
    let truths = plume_maps(&mut plugins.plume, spec, &emissions, &winds)?;
    let mut rows = Vec::new();
    let mut first = None;
    let mut radiances = Vec::new();
    let mut plume_pixels = Vec::new();
    for (s, truth) in truths.iter().enumerate() {
        let albedo = surface.albedo_map(spec.nx, spec.ny, &mut rng);
        let (retrieved, radiance) = observe_and_filter(&mut plugins, spec, &k, truth, &albedo, &mut rng)?;
        if set.set.step5.is_some() {
            radiances.push(radiance);
        }
        let plume: Vec<usize> = (0..pixels).filter(|&p| truth[p] >= mask_threshold).collect();
        let background: Vec<(f64, f64)> = (0..pixels).filter(|&p| truth[p] < 1.0).map(|p| (retrieved[p], truth[p])).collect();
        let (rmse_plume, bias_plume) = plugins.metrics.errors(&plume.iter().map(|&p| (retrieved[p], truth[p])).collect::<Vec<_>>())?;
        let (rmse_background, bias_background) = plugins.metrics.errors(&background)?;
        let ratios: Vec<f64> = plume.iter().map(|&p| retrieved[p] / truth[p]).collect();
        let albedos: Vec<f64> = plume.iter().map(|&p| albedo[p]).collect();
        let albedo_correlation = if plume.len() > 2 { correlation(&ratios, &albedos) } else { f64::NAN };
        let mask = ime::plume_mask(&retrieved, spec.nx, spec.ny, source, spec.search, mask_threshold);
        let estimate = ime::ime(&retrieved, &mask, spec.pixel);
        let stat = statistic(&retrieved, spec);
        let plume_count = plume.len();
        plume_pixels.push(plume);
        rows.push(SceneRow {
            scene: s + 1,
            emission: emissions[s],
            wind_dir: winds[s],
            detected: false,
            statistic: stat,
            ime_emission: estimate.emission_rate(u_eff) * 3600.0,
            mask_pixels: estimate.pixels,
            plume_pixels: plume_count,
            rmse_plume,
            bias_plume,
            rmse_background,
            bias_background,
            albedo_correlation,
            direct: None,
            emulator: None,
        });
        if first.is_none() {
            first = Some(SceneMaps { truth: truth.clone(), albedo, retrieved, direct: None, emulator: None });
        }
    }
    // Detection at `far` false alarms per scene: the threshold from the
    // clear scenes' statistics, as the metric defines it.
    let statistics: Vec<f64> = rows.iter().map(|r| r.statistic).collect();
    let (_, detection_threshold) = plugins.metrics.detection(&clear_statistics, &statistics)?;
    for r in rows.iter_mut() {
        r.detected = r.statistic > detection_threshold;
    }
    let (x, y): (Vec<f64>, Vec<f64>) = rows.iter().map(|r| (r.emission, r.ime_emission)).unzip();
    let (slope, intercept, r2) = plugins.metrics.regression(&y, &x)?;
    // Detection in four bins of the ladder (geometric).
    let [lo, hi] = spec.emission;
    let edges: Vec<f64> = (0..=4).map(|i| lo * (hi / lo).powf(i as f64 / 4.0)).collect();
    let detection = edges
        .windows(2)
        .enumerate()
        .map(|(b, e)| {
            let inside: Vec<&SceneRow> =
                rows.iter().filter(|r| r.emission >= e[0] && (r.emission < e[1] || (b == 3 && r.emission <= e[1] * (1.0 + 1e-12)))).collect();
            (e[0], e[1], inside.len(), inside.iter().filter(|r| r.detected).count())
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let specs = crate::pixels::PixelSpecs {
        name: &set.name,
        priors: &set.set.priors,
        step3: set.set.step3.as_ref(),
        step4: set.set.step4.as_ref(),
        step5: set.set.step5.as_ref(),
    };
    let pixel_steps = crate::pixels::run(&specs, &radiances, &mut plugins.rt, &mut plugins.obs, &plugins.components, registry)?;
    // Steps 4 and 5 on the scenes: the per-pixel retrievals' maps, scored
    // as the filter's (same pixels, same mask threshold, same U_eff).
    let mut score_maps = |maps: &[(Vec<f64>, Vec<f64>)]| -> Result<Vec<MapScores>> {
        maps.iter()
            .enumerate()
            .map(|(s, (map, _))| {
                let truth = &truths[s];
                let (rmse_plume, bias_plume) = plugins.metrics.errors(&plume_pixels[s].iter().map(|&p| (map[p], truth[p])).collect::<Vec<_>>())?;
                let background: Vec<(f64, f64)> = (0..pixels).filter(|&p| truth[p] < 1.0).map(|p| (map[p], truth[p])).collect();
                let (rmse_background, bias_background) = plugins.metrics.errors(&background)?;
                let mask = ime::plume_mask(map, spec.nx, spec.ny, source, spec.search, mask_threshold);
                let ime_emission = ime::ime(map, &mask, spec.pixel).emission_rate(u_eff) * 3600.0;
                Ok(MapScores { rmse_plume, bias_plume, rmse_background, bias_background, ime_emission })
            })
            .collect()
    };
    let direct = score_maps(&pixel_steps.scene_maps)?;
    let emulator = score_maps(&pixel_steps.emulator_maps)?;
    let mut fit = |scores: &[MapScores]| -> Result<Option<(f64, f64, f64)>> {
        if scores.is_empty() {
            return Ok(None);
        }
        let y: Vec<f64> = scores.iter().map(|d| d.ime_emission).collect();
        Ok(Some(plugins.metrics.regression(&y, &x)?))
    };
    let (direct_fit, emulator_fit) = (fit(&direct)?, fit(&emulator)?);
    for (row, d) in rows.iter_mut().zip(direct) {
        row.direct = Some(d);
    }
    for (row, e) in rows.iter_mut().zip(emulator) {
        row.emulator = Some(e);
    }
    if let Some(f) = first.as_mut() {
        f.direct = pixel_steps.scene_maps.first().cloned();
        f.emulator = pixel_steps.emulator_maps.first().cloned();
    }
    let pixels = pixel_steps;
    Ok(ScenesRun {
        rows,
        background_sd,
        mask_threshold,
        detection_threshold,
        u_eff,
        slope,
        intercept,
        r2,
        direct_fit,
        emulator_fit,
        detection,
        unit_absorption: k,
        noise_sd: plugins.noise_sd,
        first: first.expect("count ≥ 2"),
        seconds,
        pixels,
        components: plugins.components,
    })
}

/// A per-pixel retrieval on the scenes (`of` a row's scores, `fit` the
/// IME regression on its maps) against the filter, as a line of the table;
/// empty when the run has no such maps.
fn map_line(run: &ScenesRun, what: &str, fit: Option<(f64, f64, f64)>, of: impl Fn(&SceneRow) -> Option<&MapScores>) -> String {
    let Some((slope, intercept, r2)) = fit else { return String::new() };
    let mean_of = |f: &dyn Fn(&SceneRow) -> Option<f64>| {
        let v: Vec<f64> = run.rows.iter().filter_map(f).filter(|v| v.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    format!(
        "\n{what} on the scenes (mean over scenes, filter in brackets): RMSE plume {:.0} ({:.0}), bias plume {:.0} ({:.0}), RMSE bg {:.0} ({:.0}), bias bg {:.1} ({:.1}) ppm·m; IME on its maps Q = {slope:.3} Q + {intercept:.2} kg/h, r² {r2:.3}",
        mean_of(&|r| of(r).map(|d| d.rmse_plume)),
        mean_of(&|r| Some(r.rmse_plume)),
        mean_of(&|r| of(r).map(|d| d.bias_plume)),
        mean_of(&|r| Some(r.bias_plume)),
        mean_of(&|r| of(r).map(|d| d.rmse_background)),
        mean_of(&|r| Some(r.rmse_background)),
        mean_of(&|r| of(r).map(|d| d.bias_background)),
        mean_of(&|r| Some(r.bias_background)),
    )
}

/// The run's figures as a text table.
pub fn table(run: &ScenesRun) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "scene  Q true kg/h  wind°  detected  stat ppm·m  Q IME kg/h  mask px  RMSE plume  bias plume  RMSE bg  bias bg  r(ratio, albedo)");
    for r in &run.rows {
        let _ = writeln!(
            s,
            "{:>5}  {:>11.2}  {:>5.0}  {:>8}  {:>10.0}  {:>10.2}  {:>7}  {:>10.0}  {:>10.0}  {:>7.0}  {:>7.1}  {:>16.2}",
            r.scene,
            r.emission,
            r.wind_dir,
            if r.detected { "yes" } else { "no" },
            r.statistic,
            r.ime_emission,
            r.mask_pixels,
            r.rmse_plume,
            r.bias_plume,
            r.rmse_background,
            r.bias_background,
            r.albedo_correlation
        );
    }
    let _ = writeln!(
        s,
        "matched filter: background sd {:.0} ppm·m, mask threshold {:.0} ppm·m, detection threshold {:.0} ppm·m",
        run.background_sd, run.mask_threshold, run.detection_threshold
    );
    let _ = writeln!(s, "IME: U_eff {:.2} m/s (calibrated on truth maps); Q_IME = {:.3} Q + {:.2} kg/h, r² {:.3}", run.u_eff, run.slope, run.intercept, run.r2);
    for (lo, hi, n, d) in &run.detection {
        let _ = writeln!(s, "detected {d}/{n} scenes with {lo:.1}–{hi:.1} kg/h");
    }
    let _ = write!(s, "{} scenes in {:.1} s", run.rows.len(), run.seconds);
    s.push_str(&map_line(run, "step 4 through the emulator", run.emulator_fit, |r| r.emulator.as_ref()));
    s.push_str(&map_line(run, "step 5", run.direct_fit, |r| r.direct.as_ref()));
    let p = &run.pixels;
    if let Some(e) = &p.step3 {
        let _ = write!(
            s,
            "\nstep 3 {}{}: band RMSE / noise sd worst {:.3}, mean {:.3}; {:.2} µs per spectrum against the plugin's {:.0} µs ({:.0}×)",
            e.name,
            if e.loaded { " (loaded from the registry)" } else { "" },
            e.worst_band_rmse_over_noise,
            e.mean_band_rmse_over_noise,
            e.emulator_us,
            e.plugin_us,
            e.speedup
        );
    }
    if let Some(r) = &p.step4 {
        let _ = write!(
            s,
            "\nstep 4 ({} pixels): dx RMSE through the physics {:.1} ppm·m (sd {:.1}, z rms {:.2}), through the emulator {:.1}; emulator − physics rms {:.3} sd; {:.0} µs and {:.0} µs per pixel",
            r.pixels, r.rmse_physics, r.sd_physics, r.z_rms_physics, r.rmse_emulator, r.emulator_vs_physics, r.physics_us, r.emulator_us
        );
    }
    if let Some(d) = &p.step5 {
        let _ = write!(
            s,
            "\nstep 5 {}: dx RMSE {:.1} ppm·m ({:.3} × step 4's), z rms {:.2}; {:.2} µs per pixel ({:.0}× step 4 through the emulator, {:.0}× through the physics)",
            d.record.name, d.rmse, d.rmse_over_step4, d.z_rms, d.us_per_pixel, d.speedup_vs_emulator, d.speedup_vs_physics
        );
    }
    s
}

/// Files of a retrieval run: `scenes.csv` (one row per test scene),
/// `scene-1.nc` (the first test scene's maps), `summary.json`, and with
/// steps 4–5 `pixels.nc` (every test pixel's truth and retrievals).
pub struct ScenesFiles {
    pub csv: (PathBuf, Vec<u8>),
    pub maps: (PathBuf, Vec<u8>),
    pub summary: (PathBuf, Vec<u8>),
    /// `pixels.nc`: steps 4 and 5 on the test pixels (when they ran).
    pub pixels: Option<(PathBuf, Vec<u8>)>,
}

pub fn summary(run: &ScenesRun, set: &LoadedRetrieval) -> serde_json::Value {
    let n = run.rows.len() as f64;
    let mean_of = |f: fn(&SceneRow) -> f64| run.rows.iter().map(f).filter(|v| v.is_finite()).sum::<f64>() / n;
    serde_json::json!({
        "name": set.name,
        "scenes": set.set.scenes,
        "background_sd": run.background_sd,
        "mask_threshold": run.mask_threshold,
        "detection_threshold": run.detection_threshold,
        "u_eff": run.u_eff,
        "ime_slope": run.slope,
        "ime_intercept": run.intercept,
        "ime_r2": run.r2,
        "mean_rmse_plume": mean_of(|r| r.rmse_plume),
        "mean_bias_plume": mean_of(|r| r.bias_plume),
        "mean_rmse_background": mean_of(|r| r.rmse_background),
        "mean_bias_background": mean_of(|r| r.bias_background),
        "detection": run.detection.iter().map(|(lo, hi, n, d)| serde_json::json!({ "from": lo, "to": hi, "scenes": n, "detected": d })).collect::<Vec<_>>(),
        "seconds": run.seconds,
        "pixels": run.pixels,
        "direct_ime_slope": run.direct_fit.map(|f| f.0),
        "direct_ime_intercept": run.direct_fit.map(|f| f.1),
        "direct_ime_r2": run.direct_fit.map(|f| f.2),
        "emulator_ime_slope": run.emulator_fit.map(|f| f.0),
        "emulator_ime_intercept": run.emulator_fit.map(|f| f.1),
        "emulator_ime_r2": run.emulator_fit.map(|f| f.2),
    })
}

pub fn write(dir: &Path, run: &ScenesRun, set: &LoadedRetrieval) -> Result<ScenesFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let mut csv = String::from(
        "scene,emission_kg_h,wind_dir,detected,statistic,ime_emission_kg_h,mask_pixels,plume_pixels,rmse_plume,bias_plume,rmse_background,bias_background,albedo_correlation,direct_rmse_plume,direct_bias_plume,direct_rmse_background,direct_bias_background,direct_ime_emission_kg_h,emulator_rmse_plume,emulator_bias_plume,emulator_rmse_background,emulator_bias_background,emulator_ime_emission_kg_h\n",
    );
    for r in &run.rows {
        let cells = |m: &Option<MapScores>| match m {
            Some(d) => format!("{},{},{},{},{}", d.rmse_plume, d.bias_plume, d.rmse_background, d.bias_background, d.ime_emission),
            None => ",,,,".into(),
        };
        let (direct, emulator) = (cells(&r.direct), cells(&r.emulator));
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{direct},{emulator}",
            r.scene,
            r.emission,
            r.wind_dir,
            r.detected,
            r.statistic,
            r.ime_emission,
            r.mask_pixels,
            r.plume_pixels,
            r.rmse_plume,
            r.bias_plume,
            r.rmse_background,
            r.bias_background,
            r.albedo_correlation
        );
    }
    let spec = &set.set.scenes;
    let mut attrs = common_attrs();
    attrs.push(("title", format!("{}: first test scene, truth and matched-filter retrieval", set.name)));
    attrs.push(("pixel_m", spec.pixel.to_string()));
    let mut vars = vec![
        Var { name: "dx_true", dims: &["y", "x"], data: &run.first.truth, units: "ppm m", long_name: "true methane enhancement" },
        Var { name: "albedo", dims: &["y", "x"], data: &run.first.albedo, units: "1", long_name: "surface albedo factor" },
        Var { name: "dx_matched_filter", dims: &["y", "x"], data: &run.first.retrieved, units: "ppm m", long_name: "matched-filter enhancement" },
        Var {
            name: "unit_absorption",
            dims: &["band"],
            data: &run.unit_absorption,
            units: "1/(ppm m)",
            long_name: "d ln L / d dx (least squares over 0-16000 ppm m)",
        },
        Var { name: "noise_sd", dims: &["band"], data: &run.noise_sd, units: "radiance", long_name: "detector noise standard deviation" },
    ];
    if let Some((map, sd)) = &run.first.direct {
        vars.push(Var { name: "dx_direct", dims: &["y", "x"], data: map, units: "ppm m", long_name: "step 5 direct retrieval (posterior mean)" });
        vars.push(Var { name: "dx_direct_sd", dims: &["y", "x"], data: sd, units: "ppm m", long_name: "step 5 direct retrieval sd" });
    }
    if let Some((map, sd)) = &run.first.emulator {
        vars.push(Var { name: "dx_emulator", dims: &["y", "x"], data: map, units: "ppm m", long_name: "step 4 retrieval through the emulator" });
        vars.push(Var { name: "dx_emulator_sd", dims: &["y", "x"], data: sd, units: "ppm m", long_name: "step 4 retrieval through the emulator, sd" });
    }
    let maps = nc_bytes(&[("y", spec.ny), ("x", spec.nx), ("band", run.unit_absorption.len())], &vars, &attrs)?;
    let summary = serde_json::to_vec_pretty(&summary(run, set))?;
    let pixels = match &run.pixels.table {
        Some(t) if t.physics.is_some() || t.direct.is_some() => Some((dir.join("pixels.nc"), pixels_nc(t, &set.name)?)),
        _ => None,
    };
    let files = ScenesFiles {
        csv: (dir.join("scenes.csv"), csv.into_bytes()),
        maps: (dir.join("scene-1.nc"), maps),
        summary: (dir.join("summary.json"), summary),
        pixels,
    };
    for (path, bytes) in [&files.csv, &files.maps, &files.summary].into_iter().chain(files.pixels.as_ref()) {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

/// The test pixels' truth and retrievals as `NAME(pixel)` variables:
/// `NAME_true`, `NAME_physics`, `NAME_emulator`, `NAME_direct`, each
/// estimate with its `_sd`.
fn pixels_nc(t: &crate::pixels::PixelTable, set: &str) -> Result<Vec<u8>> {
    let n = t.truth.ncols();
    let mut columns: Vec<(String, Vec<f64>, String)> = Vec::new();
    for (i, name) in t.names.iter().enumerate() {
        columns.push((format!("{name}_true"), t.truth.row(i).iter().copied().collect(), format!("true {name}")));
        for (label, what) in [("physics", &t.physics), ("emulator", &t.emulator), ("direct", &t.direct)] {
            if let Some((est, sd)) = what {
                columns.push((format!("{name}_{label}"), est.row(i).iter().copied().collect(), format!("{name} retrieved ({label})")));
                columns.push((format!("{name}_{label}_sd"), sd.row(i).iter().copied().collect(), format!("sd of {name} retrieved ({label})")));
            }
        }
    }
    let vars: Vec<Var<'_>> = columns.iter().map(|(name, data, long)| Var { name, dims: &["pixel"], data, units: "parameter units", long_name: long }).collect();
    let mut attrs = common_attrs();
    attrs.push(("title", format!("{set}: test pixels from the prior, truth and retrievals (physics and emulator: step 4; direct: step 5)")));
    nc_bytes(&[("pixel", n)], &vars, &attrs)
}
