//! Retrieval benchmarks: steps 3–5 of an L1→L2 retrieval row (a plugin-set
//! with `[scenes]`, e.g. `cycles/methane.toml`) scored on pixels the
//! submitter never sees.
//!
//! A retrieval benchmark is a TOML file with a `[retrieval]` table naming
//! the retrieval set and the step it scores. Every experiment is a batch of
//! `pixels` pixels: parameters drawn from the set's `[[prior]]` (the
//! operating distribution), their spectra through the set's radiance
//! simulator and detector, and detector noise. The public experiment is
//! the run's own test pixels (`[step4] seed`); each hidden one is drawn
//! from a secret seed (committed at pre-registration, kept exactly as for
//! a hidden filter contract: `super::hidden`). Candidates are components,
//! never results files:
//!
//! - **step 3**, an emulator of the radiance (`static-model`, the same
//!   parameters and bands as the simulator): its noise-free spectra against
//!   the physics (the oracle, `physics_derived`), per band over the
//!   detector noise sd (`worst_band_rmse_over_noise`, ranked), and its fuel
//!   per spectrum against the simulator's (`fuel_speedup`: fuel is the
//!   deterministic measure of cost, the same on every machine);
//! - **step 4**, the same component as the forward model of the host's
//!   Levenberg–Marquardt retrieval of the noisy spectra, against the same
//!   retrieval through the physics (the oracle): RMS of the dx difference
//!   over the physics retrieval's sd (`emulator_vs_physics`, ranked);
//! - **step 5**, a direct retrieval (`posterior`, e.g. `geohost export
//!   posterior` of the run's predictor): `draws` draws per noisy spectrum,
//!   their mean and sd of dx against the truth; its RMSE over the step-4
//!   physics retrieval's (`rmse_over_step4`, ranked) and the RMS of the
//!   standardised errors (`z_rms`, 1 when the sd is honest).
//!
//! The official scores are the means over the hidden experiments (the
//! public one when there are none); the `max_*`/`min_*` limits make them
//! checks. `[[baselines]]` are registered artifacts scored beside the
//! candidate: step-3 emulators (`emulator = NAME`, role emulator) for
//! steps 3 and 4, step-5 predictors (`predictor = NAME`) for step 5.
//!
//! ```toml
//! name = "methane-step3-hidden"
//! version = "1.0.0"
//! task = "Emulate the radiance of one pixel"
//! [retrieval]
//! plugin_set = "../cycles/methane.toml"
//! target_step = 3
//! pixels = 200
//! max_band_rmse_over_noise = 0.1
//! min_fuel_speedup = 10.0
//! [hidden]
//! experiments = 3
//! [[baselines]]
//! emulator = "ch4-rt-emulator"
//! ```

use super::component;
use super::contract::Budget;
use super::hidden::commitment;
use super::posterior::{verdict_of, HiddenObservations};
use super::score::{ContractRef, Disqualified, SubmissionRecord, DISQUALIFIED, RUN_BY_HOST};
use super::submit::{disqualified, load_component, start_record, SubmitOptions};
use crate::pixels::{lm_settings, lm_start, public_seed, test_pixels, TestPixels};
use crate::scenes::{LoadedRetrieval, RetrievalSet};
use crate::static_run::{forward, plugin_ids};
use anyhow::{bail, Context, Result};
use geohost_da::params::prior::Prior;
use geohost_da::retrieval::gauss_newton::{self, Retrieval};
use geohost_learn::static_emulator::StaticEmulator;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::Simulator;
use geohost_sandbox::{FuelBudget, Runtime, WasmPosterior, WasmSimulator, World};
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Metric values by name.
pub type Scores = BTreeMap<String, f64>;

/// Most pixels per experiment (each costs the physics retrieval at
/// scoring time).
pub const MAX_PIXELS: usize = 5000;
/// Most hidden experiments.
pub const MAX_HIDDEN: usize = 16;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalContractFile {
    pub name: String,
    pub version: String,
    pub task: String,
    pub retrieval: RetrievalSpec,
    pub hidden: Option<HiddenObservations>,
    #[serde(default)]
    pub baselines: Vec<RetrievalBaseline>,
    #[serde(default)]
    pub budget: Budget,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSpec {
    /// The retrieval plugin-set (relative to the contract file).
    pub plugin_set: PathBuf,
    /// 3 (an emulator), 4 (retrieval through it) or 5 (a direct retrieval).
    pub target_step: u8,
    /// Pixels per experiment.
    #[serde(default = "default_pixels")]
    pub pixels: usize,
    /// Step 5: draws asked of the candidate per pixel.
    pub draws: Option<usize>,
    /// Step 3: the worst band's RMSE over the noise sd.
    pub max_band_rmse_over_noise: Option<f64>,
    /// Step 3: the simulator's fuel per spectrum over the candidate's.
    pub min_fuel_speedup: Option<f64>,
    /// Step 4: RMS of (dx through the candidate − dx through the physics)
    /// over the physics retrieval's sd.
    pub max_emulator_vs_physics: Option<f64>,
    /// Step 5: RMSE against the truth over the physics retrieval's.
    pub max_rmse_over_step4: Option<f64>,
    /// Step 5: |z_rms − 1|.
    pub max_z_rms_error: Option<f64>,
}

fn default_pixels() -> usize {
    200
}

/// Draws per pixel when `draws` is not given.
const DEFAULT_DRAWS: usize = 400;

/// A registered artifact scored beside the candidate.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalBaseline {
    /// A step-3 emulator (weights with role emulator), for steps 3 and 4.
    pub emulator: Option<String>,
    /// A step-5 predictor (role predictor), for step 5.
    pub predictor: Option<String>,
}

/// The limits a step takes, with the metric each bounds: (field, metric,
/// is a maximum).
fn step_limits(step: u8) -> &'static [(&'static str, &'static str, bool)] {
    match step {
        3 => &[("max_band_rmse_over_noise", "worst_band_rmse_over_noise", true), ("min_fuel_speedup", "fuel_speedup", false)],
        4 => &[("max_emulator_vs_physics", "emulator_vs_physics", true)],
        _ => &[("max_rmse_over_step4", "rmse_over_step4", true), ("max_z_rms_error", "z_rms_error", true)],
    }
}

/// The metric that ranks, lower better.
pub fn primary_metric(step: u8) -> &'static str {
    match step {
        3 => "worst_band_rmse_over_noise",
        4 => "emulator_vs_physics",
        _ => "rmse_over_step4",
    }
}

impl RetrievalSpec {
    /// The limits given, by field name.
    fn limits(&self) -> BTreeMap<String, f64> {
        [
            ("max_band_rmse_over_noise", self.max_band_rmse_over_noise),
            ("min_fuel_speedup", self.min_fuel_speedup),
            ("max_emulator_vs_physics", self.max_emulator_vs_physics),
            ("max_rmse_over_step4", self.max_rmse_over_step4),
            ("max_z_rms_error", self.max_z_rms_error),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
    }

    fn validate(&self) -> Result<()> {
        if !(3..=5).contains(&self.target_step) {
            bail!("field `retrieval.target_step`: expected 3 (an emulator), 4 (retrieval through it) or 5 (a direct retrieval), got {}", self.target_step);
        }
        if !(10..=MAX_PIXELS).contains(&self.pixels) {
            bail!("field `retrieval.pixels`: expected 10 to {MAX_PIXELS} pixels per experiment, got {}", self.pixels);
        }
        match (self.target_step, self.draws) {
            (5, Some(d)) if !(50..=10_000).contains(&d) => bail!("field `retrieval.draws`: expected 50 to 10000 draws per pixel, got {d}"),
            (3 | 4, Some(_)) => bail!("field `retrieval.draws` applies to step 5 (a posterior's draws); remove it"),
            _ => {}
        }
        let allowed = step_limits(self.target_step);
        for (field, value) in self.limits() {
            if !allowed.iter().any(|(f, ..)| *f == field) {
                let names: Vec<&str> = allowed.iter().map(|(f, ..)| *f).collect();
                bail!("field `retrieval.{field}` does not apply to step {}; its limits are {}", self.target_step, names.join(", "));
            }
            if !(value.is_finite() && value > 0.0) {
                bail!("field `retrieval.{field}`: expected a positive number, got {value}");
            }
        }
        Ok(())
    }
}

/// Whether a contract file is a retrieval benchmark (has `[retrieval]`).
pub fn is_retrieval(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).map(|t| t.contains_key("retrieval")).unwrap_or(false)
}

/// A loaded, validated retrieval benchmark.
pub struct RetrievalContract {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Registry id of the file's bytes.
    pub id: String,
    pub file: RetrievalContractFile,
    pub set: LoadedRetrieval,
}

impl RetrievalContract {
    pub fn load(path: &Path) -> Result<RetrievalContract> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read contract file {}", path.display()))?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("contract file {} is not UTF-8", path.display()))?;
        let file: RetrievalContractFile = toml::from_str(text).with_context(|| format!("invalid contract file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid contract file {}: {msg}", path.display());
        for (field, value) in [("name", &file.name), ("version", &file.version), ("task", &file.task)] {
            if value.trim().is_empty() || value.contains('@') {
                return Err(fail(format!("field `{field}` must be non-empty and without `@`")));
            }
        }
        file.retrieval.validate().map_err(|e| fail(format!("{e:#}")))?;
        if let Some(h) = &file.hidden {
            if !(1..=MAX_HIDDEN).contains(&h.experiments) {
                return Err(fail(format!("field `hidden.experiments`: expected 1 to {MAX_HIDDEN}, got {}", h.experiments)));
            }
            super::probing::validate(h.max_scorings_per_day, h.publish_precision).map_err(|e| fail(e.to_string()))?;
        }
        let step = file.retrieval.target_step;
        for (i, b) in file.baselines.iter().enumerate() {
            match (step, &b.emulator, &b.predictor) {
                (3 | 4, Some(_), None) | (5, None, Some(_)) => {}
                (3 | 4, ..) => {
                    return Err(fail(format!("[[baselines]] #{}: a step-{step} baseline is `emulator = NAME` (a registered step-3 emulator)", i + 1)))
                }
                _ => return Err(fail(format!("[[baselines]] #{}: a step-5 baseline is `predictor = NAME` (a registered step-5 predictor)", i + 1))),
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let set = RetrievalSet::load(&dir.join(&file.retrieval.plugin_set)).map_err(|e| fail(format!("field `retrieval.plugin_set`: {e:#}")))?;
        if set.set.priors.is_empty() {
            return Err(fail(format!(
                "the plugin-set {} has no [[prior]]: a retrieval benchmark draws its pixels from the set's operating distribution",
                set.path.display()
            )));
        }
        Ok(RetrievalContract { path: path.into(), id: geohost_registry::artifact_id(&bytes), bytes, file, set })
    }

    pub fn label(&self) -> String {
        format!("{}@{}", self.file.name, self.file.version)
    }

    fn step(&self) -> u8 {
        self.file.retrieval.target_step
    }

    fn world(&self) -> World {
        if self.step() == 5 {
            World::Posterior
        } else {
            World::StaticModel
        }
    }

    fn draws(&self) -> Option<usize> {
        (self.step() == 5).then(|| self.file.retrieval.draws.unwrap_or(DEFAULT_DRAWS))
    }

    /// The oracle, in words; `rt` describes the radiance simulator.
    fn oracle(&self, rt: &geohost_sandbox::model::SimulatorInfo) -> String {
        let what = format!("{}@{}", rt.name, rt.version);
        match self.step() {
            3 => format!("the radiance simulator ({what}), noise-free"),
            _ => format!("Levenberg–Marquardt retrieval through the radiance simulator ({what})"),
        }
    }

    fn contract_ref(&self) -> ContractRef {
        let step = self.step();
        ContractRef {
            id: self.id.clone(),
            name: self.file.name.clone(),
            version: self.file.version.clone(),
            task: self.file.task.clone(),
            target_step: Some(step),
            oracle_step: Some(if step == 5 { 4 } else { 1 }),
            l_transition: self.set.set.transition.clone(),
        }
    }
}

/// What pre-registration freezes (the contract's registry metadata).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FrozenRetrieval {
    pub contract: String,
    /// The retrieval set's bytes and its radiance simulator and detector,
    /// by registry id.
    pub plugin_set: String,
    pub simulator: String,
    pub observations: String,
    pub target_step: u8,
    pub pixels: usize,
    pub limits: BTreeMap<String, f64>,
    /// Baselines: (label, id).
    pub baselines: Vec<(String, String)>,
    /// Commitments of the hidden experiments' secret seeds.
    pub commitments: Vec<String>,
}

/// Resolve a baseline to a registered artifact of the right role, and
/// load it now (not first at scoring time).
fn resolve_baseline(registry: &Registry, i: usize, b: &RetrievalBaseline) -> Result<(String, String)> {
    let (reference, role) = match (&b.emulator, &b.predictor) {
        (Some(e), _) => (e, "emulator"),
        (_, Some(p)) => (p, "predictor"),
        _ => bail!("[[baselines]] #{i}: names nothing"),
    };
    let artifact = registry.get_with_role(reference, role).with_context(|| format!("[[baselines]] #{i}: {role} `{reference}`"))?;
    let id = artifact.id.clone();
    let bytes = registry.read(&id)?;
    match role {
        "emulator" => {
            StaticEmulator::from_safetensors(&id, &bytes).with_context(|| format!("[[baselines]] #{i}: {} is not a static emulator", artifact.name))?;
        }
        _ => {
            let (p, _) = geohost_learn::refine::Predictor::from_safetensors(&id, &bytes)?;
            p.first.as_mdn(&format!("[[baselines]] #{i} ({})", artifact.name))?;
        }
    }
    Ok((artifact.name, id))
}

/// Pre-register: register the retrieval set and its radiance simulator and
/// detector, resolve the baselines, draw the secret seeds. Returns the
/// record and whether it is new (registering the same file again changes
/// nothing).
pub fn preregister(registry: &mut Registry, runtime: &Runtime, contract: &RetrievalContract) -> Result<(FrozenRetrieval, bool)> {
    if let Some(frozen) = component::already_registered(registry, &contract.id, &contract.file.name, &contract.file.version)? {
        return Ok((frozen, false));
    }
    if contract.file.hidden.as_ref().is_some_and(|h| h.experiments > 0) {
        registry.ensure_private()?;
    }
    let baselines = contract.file.baselines.iter().enumerate().map(|(i, b)| resolve_baseline(registry, i + 1, b)).collect::<Result<Vec<_>>>()?;
    let plugins = crate::scenes::setup(&contract.set, runtime, Some(registry))?;
    let ids = plugin_ids(&plugins.components[..2], Some(registry))?;
    let set_id = component::register_set(registry, &contract.set.bytes, &contract.set.name, contract.set.set.transition.clone())?;
    let seeds = super::hidden::draw_seeds(contract.file.hidden.as_ref().map_or(0, |h| h.experiments))?;
    let spec = &contract.file.retrieval;
    let frozen = FrozenRetrieval {
        contract: contract.id.clone(),
        plugin_set: set_id.clone(),
        simulator: ids[0].clone(),
        observations: ids[1].clone(),
        target_step: spec.target_step,
        pixels: spec.pixels,
        limits: spec.limits(),
        baselines,
        commitments: seeds.iter().map(|s| commitment(s, &contract.id)).collect(),
    };
    component::register_frozen(
        registry,
        &contract.bytes,
        NewArtifact {
            name: contract.file.name.clone(),
            version: Some(contract.file.version.clone()),
            step: Some(spec.target_step),
            l_transition: contract.set.set.transition.clone(),
            metadata: serde_json::json!({ "retrieval": true, "frozen": frozen }),
            ..Default::default()
        },
        &set_id,
        &frozen.baselines,
        &seeds,
    )?;
    Ok((frozen, true))
}

/// One experiment's scores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExperimentScores {
    /// `public` or `hidden N`.
    pub experiment: String,
    /// The oracle's own figures (e.g. the physics retrieval's RMSE).
    pub oracle: Scores,
    /// The candidate's (absent when disqualified).
    pub candidate: Option<Scores>,
    /// Each baseline's, in the contract's order.
    pub baselines: Vec<Scores>,
}

/// A limit checked on the official scores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LimitCheck {
    pub limit: String,
    pub metric: String,
    pub bound: f64,
    pub value: f64,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ranked {
    pub label: String,
    pub role: String,
    pub score: f64,
}

/// A retrieval benchmark's report: deterministic (no timestamps, fuel
/// instead of time), so rescoring the same component gives the same bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RetrievalReport {
    pub kind: String,
    pub contract: ContractRef,
    pub oracle: String,
    pub oracle_strength: String,
    pub pixels: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draws: Option<usize>,
    /// The metric that ranks (lower is better).
    pub metric: String,
    pub commitments: Vec<String>,
    /// Whether the seeds had been revealed when this was scored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revealed: bool,
    pub candidate: String,
    pub provenance: String,
    pub submission: SubmissionRecord,
    pub baselines: Vec<(String, String)>,
    pub experiments: Vec<ExperimentScores>,
    /// Means over the hidden experiments (the public one's when there are
    /// none): what is checked and ranked.
    pub candidate_scores: Option<Scores>,
    pub baseline_scores: Vec<Scores>,
    pub oracle_scores: Scores,
    pub checks: Vec<LimitCheck>,
    pub ranking: Vec<Ranked>,
    pub verdict: String,
}

/// A 64-bit seed for `what` from an experiment's seed material.
fn derive(what: &str, material: &[u8]) -> u64 {
    u64::from_le_bytes(blake3::derive_key(&format!("geohost retrieval benchmark {what}"), material)[..8].try_into().expect("8 bytes"))
}

/// The candidate, loaded and matched to the problem.
enum Candidate {
    Emulator(WasmSimulator),
    Posterior(WasmPosterior),
}

impl Candidate {
    fn accounting(&self) -> geohost_sandbox::Accounting {
        match self {
            Candidate::Emulator(e) => e.accounting(),
            Candidate::Posterior(p) => p.accounting(),
        }
    }
}

/// A baseline, loaded.
enum Baseline {
    Emulator(Box<StaticEmulator>),
    Predictor(Box<geohost_learn::refine::Predictor>),
}

/// One experiment's pixels, with what every candidate is scored against.
struct Experiment {
    pixels: TestPixels,
    /// Step 4 through the physics (steps 4 and 5).
    physics: Option<Retrieval>,
}

fn rms(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    ((0..n).map(|p| f(p).powi(2)).sum::<f64>() / n as f64).sqrt()
}

/// Step 3's accuracy figures of `spectra` (`bands × pixels`) against the
/// noise-free spectra.
fn spectral_scores(spectra: &DMatrix<f64>, clean: &DMatrix<f64>, sd: &[f64]) -> Scores {
    let (bands, n) = clean.shape();
    let per_band: Vec<f64> = (0..bands).map(|b| rms(n, |p| spectra[(b, p)] - clean[(b, p)]) / sd[b]).collect();
    Scores::from([
        ("worst_band_rmse_over_noise".into(), per_band.iter().cloned().fold(0.0, f64::max)),
        ("mean_band_rmse_over_noise".into(), per_band.iter().sum::<f64>() / bands as f64),
    ])
}

/// Step 4's figures of a retrieval through an emulator.
fn retrieval_scores(through: &Retrieval, physics: &Retrieval, truth: &DMatrix<f64>, dx: usize) -> Scores {
    let n = truth.ncols();
    Scores::from([
        ("emulator_vs_physics".into(), rms(n, |p| (through.theta[(dx, p)] - physics.theta[(dx, p)]) / physics.sd[(dx, p)])),
        ("rmse".into(), rms(n, |p| through.theta[(dx, p)] - truth[(dx, p)])),
    ])
}

/// Step 5's figures of per-pixel means and sds of dx.
fn direct_scores(means: &[f64], sds: &[f64], truth: &DMatrix<f64>, dx: usize, rmse_step4: f64) -> Scores {
    let n = truth.ncols();
    let rmse = rms(n, |p| means[p] - truth[(dx, p)]);
    let z_rms = rms(n, |p| (means[p] - truth[(dx, p)]) / sds[p]);
    Scores::from([("rmse".into(), rmse), ("rmse_over_step4".into(), rmse / rmse_step4), ("z_rms".into(), z_rms), ("z_rms_error".into(), (z_rms - 1.0).abs())])
}

/// The first non-finite figure, if any (a candidate's NaN is its fault).
fn non_finite(scores: &Scores) -> Option<(&String, &f64)> {
    scores.iter().find(|(_, v)| !v.is_finite())
}

/// Run and score a candidate component. Returns the report and, when it
/// was read, the component's bytes (for registration).
pub fn submit(registry: &mut Registry, runtime: &Runtime, contract: &RetrievalContract, options: &SubmitOptions) -> Result<(RetrievalReport, Option<Vec<u8>>)> {
    let frozen: FrozenRetrieval = component::frozen(registry, &contract.id, &contract.label(), &contract.path)?;
    component::check_set(&contract.set.path, &contract.set.bytes, &frozen.plugin_set, &contract.label())?;
    if !options.config.is_object() {
        bail!("the submission's config must be a JSON object, got {}", options.config);
    }
    let mut plugins = crate::scenes::setup(&contract.set, runtime, Some(registry))?;
    component::check_plugins(&contract.set.path, &plugin_ids(&plugins.components[..2], None)?, [&frozen.simulator, &frozen.observations], &contract.label())?;
    let seeds = super::hidden::checked_seeds(registry, &contract.id, &frozen.commitments)?;
    let step = frozen.target_step;
    let set = &contract.set.set;
    let names: Vec<String> = plugins.rt.info().parameters.iter().map(|p| p.name.clone()).collect();
    let prior = Prior::new(&set.priors, &names).with_context(|| format!("{}: [[prior]]", contract.set.path.display()))?;
    let dx = names.iter().position(|n| n == "dx").context("the radiance simulator has no `dx` parameter")?;
    let sd = plugins.noise_sd.clone();
    let bands = sd.len();
    let settings = lm_settings(&prior, set.step4.as_ref().map_or(30, |s| s.max_iterations));
    let mut baselines: Vec<Baseline> = frozen
        .baselines
        .iter()
        .map(|(_, id)| {
            let bytes = registry.read(id)?;
            Ok(match step {
                5 => Baseline::Predictor(Box::new(geohost_learn::refine::Predictor::from_safetensors(id, &bytes)?.0)),
                _ => Baseline::Emulator(Box::new(StaticEmulator::from_safetensors(id, &bytes)?)),
            })
        })
        .collect::<Result<_>>()?;

    // The experiments: the run's own test pixels, then one per secret seed.
    let mut experiments = Vec::new();
    let public = public_seed(set.step4.as_ref());
    let materials: Vec<(String, Vec<u8>, ChaCha8Rng)> =
        std::iter::once(("public".to_string(), public.to_le_bytes().to_vec(), ChaCha8Rng::seed_from_u64(public)))
            .chain(seeds.iter().enumerate().map(|(k, s)| (format!("hidden {}", k + 1), s.to_vec(), ChaCha8Rng::from_seed(*s))))
            .collect();
    let mut oracle_fuel = 0u64;
    for (name, _, rng) in &materials {
        let mut rng = rng.clone();
        let before = plugins.rt.accounting().fuel;
        let pixels = test_pixels(&prior, &mut forward(&mut plugins.rt, &mut plugins.obs, 0), &sd, frozen.pixels, &mut rng)
            .with_context(|| format!("the {name} experiment's spectra"))?;
        oracle_fuel += plugins.rt.accounting().fuel - before;
        let physics = if step >= 4 {
            let start = lm_start(&prior, &mut forward(&mut plugins.rt, &mut plugins.obs, 0), &pixels.y)?;
            Some(
                gauss_newton::retrieve(&mut forward(&mut plugins.rt, &mut plugins.obs, 0), &pixels.y, &sd, &start, &settings)
                    .with_context(|| format!("the oracle's retrieval of the {name} experiment"))?,
            )
        } else {
            None
        };
        experiments.push(Experiment { pixels, physics });
    }
    let oracle_fuel_per_spectrum = oracle_fuel as f64 / (frozen.pixels * materials.len()) as f64;

    // The candidate, loaded and matched to the problem; else the reason
    // it is disqualified.
    let budget = contract.file.budget;
    let world = contract.world();
    let (mut record, label) = start_record(options, budget, world)?;
    let size = record.size;
    let (mut candidate, bytes) = load_candidate(options, &budget, &mut record, &label, world, &names, bands)?;

    // Score every experiment.
    let mut scored = Vec::new();
    for ((name, material, _), e) in materials.iter().zip(&experiments) {
        let TestPixels { truth, clean, y } = &e.pixels;
        let mut oracle = Scores::new();
        if let Some(physics) = &e.physics {
            let n = truth.ncols();
            oracle.insert("rmse".into(), rms(n, |p| physics.theta[(dx, p)] - truth[(dx, p)]));
            oracle.insert("sd".into(), (0..n).map(|p| physics.sd[(dx, p)]).sum::<f64>() / n as f64);
            oracle.insert("z_rms".into(), rms(n, |p| (physics.theta[(dx, p)] - truth[(dx, p)]) / physics.sd[(dx, p)]));
        }
        let score_with = |forward: &mut dyn FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>>| -> Result<Scores> {
            match (step, &e.physics) {
                (3, _) => Ok(spectral_scores(&forward(truth)?, clean, &sd)),
                (_, Some(physics)) => {
                    let start = lm_start(&prior, forward, y)?;
                    let through = gauss_newton::retrieve(forward, y, &sd, &start, &settings)?;
                    Ok(retrieval_scores(&through, physics, truth, dx))
                }
                _ => unreachable!("steps 4 and 5 retrieve through the physics"),
            }
        };
        let rmse4 = oracle.get("rmse").copied().unwrap_or(f64::NAN);
        let direct = |means: &DMatrix<f64>, sds: &DMatrix<f64>| {
            direct_scores(&means.row(dx).iter().copied().collect::<Vec<_>>(), &sds.row(dx).iter().copied().collect::<Vec<_>>(), truth, dx, rmse4)
        };
        let mut candidate_scores = None;
        if let Some(c) = candidate.as_mut() {
            let before = c.accounting().fuel;
            let result: Result<Scores> = match c {
                Candidate::Emulator(emu) => {
                    let scores = score_with(&mut |t: &DMatrix<f64>| emu.simulate(t, 0));
                    scores.map(|mut s| {
                        if step == 3 {
                            let per_spectrum = (emu.accounting().fuel - before) as f64 / truth.ncols() as f64;
                            s.insert("fuel_per_spectrum".into(), per_spectrum);
                            s.insert("fuel_speedup".into(), oracle_fuel_per_spectrum / per_spectrum.max(1.0));
                        }
                        s
                    })
                }
                Candidate::Posterior(post) => posterior_moments(post, y, contract.draws().unwrap_or(DEFAULT_DRAWS), material).map(|(m, s)| direct(&m, &s)),
            };
            match result {
                Ok(s) => match non_finite(&s) {
                    None => candidate_scores = Some(s),
                    Some((metric, v)) => {
                        record.disqualified = Some(Disqualified {
                            stage: "run".into(),
                            reason: format!("its {metric} is {v}: its outputs or retrievals through it are not finite numbers"),
                            experiment: Some(name.clone()),
                            cycle: None,
                        });
                        candidate = None;
                    }
                },
                Err(err) => {
                    let mut d = verdict_of(disqualified("run", format!("{err:#}"), None))?.expect("a disqualification");
                    d.experiment = Some(name.clone());
                    record.disqualified = Some(d);
                    candidate = None;
                }
            }
        }
        let mut baseline_scores = Vec::new();
        for (b, (label, _)) in baselines.iter_mut().zip(&frozen.baselines) {
            let s = match b {
                Baseline::Emulator(emu) => score_with(&mut |t: &DMatrix<f64>| emu.simulate(t, 0)),
                Baseline::Predictor(p) => {
                    let mdn = p.first.as_mdn(label)?;
                    mdn.moments_unbounded(y).map(|(m, s)| direct(&m, &s))
                }
            }
            .with_context(|| format!("baseline {label} on the {name} experiment"))?;
            baseline_scores.push(s);
        }
        scored.push(ExperimentScores { experiment: name.clone(), oracle, candidate: candidate_scores, baselines: baseline_scores });
    }
    if let Some(c) = &candidate {
        record.accounting = vec![super::score::ExperimentAccounting { experiment: "all".into(), used: c.accounting() }];
        record.fuel_total = c.accounting().fuel;
    }

    // The official scores: hidden means, else the public ones.
    let official: Vec<&ExperimentScores> = if scored.len() == 1 { scored.iter().collect() } else { scored.iter().skip(1).collect() };
    let mean = |pick: &dyn Fn(&ExperimentScores) -> Option<&Scores>| -> Option<Scores> {
        let all: Option<Vec<&Scores>> = official.iter().map(|e| pick(e)).collect();
        let all = all?;
        Some(all[0].keys().map(|k| (k.clone(), all.iter().map(|s| s[k]).sum::<f64>() / all.len() as f64)).collect())
    };
    let candidate_scores = if record.disqualified.is_some() { None } else { mean(&|e| e.candidate.as_ref()) };
    let baseline_scores: Vec<Scores> = (0..frozen.baselines.len()).map(|i| mean(&|e| e.baselines.get(i)).unwrap_or_default()).collect();
    let oracle_scores = mean(&|e| Some(&e.oracle)).unwrap_or_default();
    let mut checks = Vec::new();
    if let Some(s) = &candidate_scores {
        for (field, metric, is_max) in step_limits(step) {
            if let Some(bound) = frozen.limits.get(*field) {
                let value = s.get(*metric).copied().unwrap_or(f64::NAN);
                let pass = if *is_max { value <= *bound } else { value >= *bound };
                checks.push(LimitCheck { limit: field.to_string(), metric: metric.to_string(), bound: *bound, value, pass });
            }
        }
    }
    let metric = primary_metric(step);
    let mut ranking: Vec<Ranked> = frozen
        .baselines
        .iter()
        .zip(&baseline_scores)
        .filter_map(|((l, _), s)| Some(Ranked { label: l.clone(), role: "baseline".into(), score: *s.get(metric)? }))
        .collect();
    if let Some(s) = &candidate_scores {
        ranking.push(Ranked { label: record.name.clone().unwrap_or(label.clone()), role: "candidate".into(), score: s[metric] });
    }
    ranking.sort_by(|a, b| a.score.total_cmp(&b.score));
    let verdict = match (&record.disqualified, checks.iter().all(|c| c.pass)) {
        (Some(_), _) => DISQUALIFIED.to_string(),
        (None, false) => "fail".into(),
        (None, true) => "pass".into(),
    };
    let report = RetrievalReport {
        kind: "retrieval".into(),
        contract: contract.contract_ref(),
        oracle: contract.oracle(plugins.rt.info()),
        oracle_strength: "physics_derived".into(),
        pixels: frozen.pixels,
        draws: contract.draws(),
        metric: metric.into(),
        commitments: frozen.commitments.clone(),
        revealed: super::hidden::is_revealed(registry, &contract.id)?,
        candidate: if record.component.is_empty() { format!("(not read: {size} bytes)") } else { record.component.clone() },
        provenance: RUN_BY_HOST.into(),
        submission: record,
        baselines: frozen.baselines.clone(),
        experiments: scored,
        candidate_scores,
        baseline_scores,
        oracle_scores,
        checks,
        ranking,
        verdict,
    };
    Ok((report, bytes))
}

/// Load the candidate and match it to the problem (`names` parameters,
/// `bands` outputs or data values); on failure the record says why it is
/// disqualified and no candidate comes back. The bytes come back whenever
/// they were read.
fn load_candidate(
    options: &SubmitOptions,
    budget: &Budget,
    record: &mut SubmissionRecord,
    label: &str,
    world: World,
    names: &[String],
    bands: usize,
) -> Result<(Option<Candidate>, Option<Vec<u8>>)> {
    let (sandbox, loaded, bytes) = match load_component(options, budget, record, label, world) {
        Err(v) => {
            record.disqualified = verdict_of(v)?;
            return Ok((None, None));
        }
        Ok(x) => x,
    };
    let config = serde_json::to_string(&options.config)?;
    let fuel = Some(FuelBudget { total: budget.fuel_total, spent: 0 });
    let made = match world {
        World::Posterior => WasmPosterior::new(&sandbox, &loaded, &config, fuel).map(|p| {
            let i = &p.info;
            let fits = i.parameters == names && i.data_size == bands;
            let described = format!("samples parameters [{}] from data of size {}", i.parameters.join(", "), i.data_size);
            (i.name.clone(), i.version.clone(), fits, described, Candidate::Posterior(p))
        }),
        _ => WasmSimulator::with_budget(&sandbox, &loaded, &config, fuel).map(|e| {
            let i = e.info();
            let given: Vec<String> = i.parameters.iter().map(|p| p.name.clone()).collect();
            let fits = given == names && i.output_size == bands;
            let described = format!("takes parameters [{}] and gives {} outputs", given.join(", "), i.output_size);
            (i.name.clone(), i.version.clone(), fits, described, Candidate::Emulator(e))
        }),
    };
    match made {
        Err(e) => {
            record.disqualified = verdict_of(disqualified("init", e, None))?;
            Ok((None, Some(bytes)))
        }
        Ok((name, version, fits, described, candidate)) => {
            (record.name, record.version) = (Some(name), Some(version));
            if fits {
                return Ok((Some(candidate), Some(bytes)));
            }
            let reason = format!("it {described}, but the contract's pixels have parameters [{}] and {bands} bands", names.join(", "));
            record.disqualified = verdict_of(disqualified("init", reason, None))?;
            Ok((None, Some(bytes)))
        }
    }
}

/// Per-pixel mean and sd of each parameter from `draws` draws of the
/// candidate posterior given each spectrum (`d × pixels` each).
fn posterior_moments(posterior: &mut WasmPosterior, y: &DMatrix<f64>, draws: usize, material: &[u8]) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    let seed = derive("draws", material);
    let d = posterior.info.parameters.len();
    let (mut means, mut sds) = (DMatrix::zeros(d, y.ncols()), DMatrix::zeros(d, y.ncols()));
    for (p, column) in y.column_iter().enumerate() {
        let q = posterior.sample(column.as_slice(), draws, seed.wrapping_add(p as u64))?;
        for (i, (mean, sd)) in crate::static_run::moments(&q).into_iter().enumerate() {
            (means[(i, p)], sds[(i, p)]) = (mean, sd);
        }
    }
    Ok((means, sds))
}

/// The report as a table.
pub fn table(report: &RetrievalReport) -> String {
    let mut s = String::new();
    let c = &report.contract;
    let step = c.target_step.unwrap_or(0);
    let _ = writeln!(
        s,
        "retrieval benchmark {}@{} ({}), step {step}: against {} ({}); {} pixels per experiment{}",
        c.name,
        c.version,
        c.id,
        report.oracle,
        report.oracle_strength,
        report.pixels,
        report.draws.map(|d| format!(", {d} draws per pixel")).unwrap_or_default()
    );
    let columns: Vec<&String> =
        report.experiments.first().and_then(|e| e.candidate.as_ref().or(e.baselines.first())).map(|s| s.keys().collect()).unwrap_or_default();
    let _ = writeln!(s, "{:<12} {:<28}{}", "experiment", "who", columns.iter().map(|k| format!("  {k:>w$}", w = k.len().max(10))).collect::<String>());
    let row = |s: &mut String, experiment: &str, who: &str, scores: &Scores| {
        let cells: String =
            columns.iter().map(|k| format!("  {:>w$}", scores.get(*k).map_or("-".into(), |v| format!("{v:.4}")), w = k.len().max(10))).collect();
        let _ = writeln!(s, "{experiment:<12} {who:<28}{cells}");
    };
    for e in &report.experiments {
        let who = report.submission.name.clone().unwrap_or_else(|| "candidate".into());
        match &e.candidate {
            Some(scores) => row(&mut s, &e.experiment, &who, scores),
            None => {
                let _ = writeln!(s, "{:<12} {who:<28} (not scored)", e.experiment);
            }
        }
        for ((label, _), scores) in report.baselines.iter().zip(&e.baselines) {
            row(&mut s, "", label, scores);
        }
        if !e.oracle.is_empty() {
            let figures: Vec<String> = e.oracle.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            let _ = writeln!(s, "{:<12} {:<28} {}", "", "oracle", figures.join(", "));
        }
    }
    if report.revealed {
        let _ = writeln!(s, "the seeds were revealed before this was scored: the hidden scores are not blind");
    }
    for check in &report.checks {
        let op = if check.limit.starts_with("min_") { "≥" } else { "≤" };
        let _ = writeln!(s, "check {}: {} = {:.4} {op} {} → {}", check.limit, check.metric, check.value, check.bound, if check.pass { "pass" } else { "FAIL" });
    }
    let order: Vec<String> = report.ranking.iter().map(|r| format!("{} ({}) {:.4}", r.label, r.role, r.score)).collect();
    let on = if report.experiments.len() > 1 { " (hidden mean)" } else { "" };
    let _ = writeln!(s, "ranking by {}{on}: {}", report.metric, order.join(" < "));
    component::submission_lines(&mut s, &report.submission, &report.provenance, &report.candidate, "experiment", &report.verdict);
    s
}

/// Register the report (kind `report`, `derived_from` the contract) and,
/// unless it was disqualified, the component (kind `submission`,
/// `scored_by` the report). Returns the report's id.
pub fn register(registry: &mut Registry, report: &RetrievalReport, bytes: Option<&[u8]>, name: Option<&str>, path: &Path) -> Result<String> {
    let json = serde_json::to_vec_pretty(report)?;
    component::register_report(registry, &json, &report.contract, &report.verdict, &report.submission, bytes, name, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_belong_to_their_step() {
        let spec = |text: &str| -> Result<()> { toml::from_str::<RetrievalSpec>(&format!("plugin_set = \"x.toml\"\n{text}"))?.validate() };
        spec("target_step = 3\nmax_band_rmse_over_noise = 0.1\nmin_fuel_speedup = 10.0").unwrap();
        spec("target_step = 5\ndraws = 200\nmax_rmse_over_step4 = 1.1\nmax_z_rms_error = 0.2").unwrap();
        let e = spec("target_step = 4\nmax_band_rmse_over_noise = 0.1").unwrap_err().to_string();
        assert!(e.contains("`retrieval.max_band_rmse_over_noise` does not apply to step 4") && e.contains("max_emulator_vs_physics"), "{e}");
        let e = spec("target_step = 3\ndraws = 100").unwrap_err().to_string();
        assert!(e.contains("applies to step 5"), "{e}");
        let e = spec("target_step = 6").unwrap_err().to_string();
        assert!(e.contains("target_step") && e.contains("got 6"), "{e}");
        let e = spec("target_step = 5\nmax_z_rms_error = -1.0").unwrap_err().to_string();
        assert!(e.contains("positive"), "{e}");
        let e = spec("target_step = 5\npixels = 3").unwrap_err().to_string();
        assert!(e.contains("10 to 5000"), "{e}");
    }

    #[test]
    fn scores_are_the_definitions() {
        // Two pixels, one band of noise sd 2: errors 2 and 0 → RMSE √2.
        let clean = DMatrix::from_row_slice(1, 2, &[10.0, 20.0]);
        let s = spectral_scores(&DMatrix::from_row_slice(1, 2, &[12.0, 20.0]), &clean, &[2.0]);
        assert!((s["worst_band_rmse_over_noise"] - 0.5f64.sqrt()).abs() < 1e-12);
        // dx truth 0 and 100; means 10 and 90 with sds 10: z = ±1.
        let truth = DMatrix::from_row_slice(1, 2, &[0.0, 100.0]);
        let s = direct_scores(&[10.0, 90.0], &[10.0, 10.0], &truth, 0, 5.0);
        assert!((s["rmse"] - 10.0).abs() < 1e-12 && (s["rmse_over_step4"] - 2.0).abs() < 1e-12);
        assert!((s["z_rms"] - 1.0).abs() < 1e-12 && s["z_rms_error"].abs() < 1e-12);
    }
}
