//! `geohost run` on a static plugin-set (one with `[simulator]`): a
//! synthetic observation from the simulator and observation plugins, then
//! each `[[method]]` (ES-MDA, MCMC) over the parameters, written as
//! NetCDF, printed as a table and registered as step-2 oracles.

use crate::pluginset::{PluginRef, Source};
use crate::run::{load_plugin, register_component};
use anyhow::{bail, Context, Result};
use geohost_da::params::prior::{Prior, PriorSpec};
use geohost_da::params::{esmda, mcmc, synthesize, Problem};
use geohost_netcdf::{common_attrs, nc_bytes, Var};
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::{ObsOperator, Simulator};
use geohost_sandbox::{config_json, Limits, Runtime, WasmObs, WasmSimulator, World};
use nalgebra::DMatrix;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSet {
    pub name: Option<String>,
    /// The data-tier transition the problem belongs to (L0_L1 … L3_L4):
    /// the row of `geohost matrix` its artifacts sit in. Without it they
    /// are `unplaced`.
    pub transition: Option<String>,
    pub simulator: PluginRef,
    pub observations: PluginRef,
    #[serde(rename = "prior")]
    pub priors: Vec<PriorSpec>,
    /// The synthetic observation `geohost run` infers from (training a
    /// posterior needs none).
    pub experiment: Option<StaticExperiment>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(rename = "method", default)]
    pub methods: Vec<StaticMethod>,
    /// Step 3: a neural emulator of H∘G trained on step 5's simulations;
    /// step 4 is the set's MCMC through it.
    pub step3: Option<geohost_learn::static_emulator::EmulatorSpec>,
    /// Step 5: an amortized posterior trained on simulated pairs.
    pub step5: Option<geohost_learn::amortize::Step5Spec>,
    /// The cycle contract the run's report is checked against.
    pub cycle: Option<CycleSection>,
}

impl StaticSet {
    /// The simulator's seed: `experiment.seed`, 0 without `[experiment]`.
    pub fn seed(&self) -> u64 {
        self.experiment.as_ref().map_or(0, |e| e.seed)
    }

    /// The true parameters of the synthetic observation, when given.
    pub fn truth(&self) -> Option<Vec<f64>> {
        self.experiment.as_ref().and_then(|e| e.truth.clone())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleSection {
    /// Path of the static cycle contract, relative to the plugin-set.
    pub contract: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticExperiment {
    #[serde(default)]
    pub seed: u64,
    /// The true parameters (simulator order); drawn from the prior if absent.
    pub truth: Option<Vec<f64>>,
}

/// A classical method over the parameters.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StaticMethod {
    EsMda {
        #[serde(rename = "N")]
        n: usize,
        iterations: usize,
    },
    Mcmc {
        walkers: usize,
        steps: usize,
        burn_in: usize,
        /// Parallel-tempering rungs (see [`mcmc::Spec::temperatures`]).
        #[serde(default = "one_rung", skip_serializing_if = "is_one")]
        temperatures: usize,
        /// For a stochastic simulator: the synthetic likelihood from this
        /// many simulations per θ ([`Problem::synthetic`]); required there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        synthetic_likelihood: Option<usize>,
    },
}

fn one_rung() -> usize {
    1
}
fn is_one(t: &usize) -> bool {
    *t == 1
}

impl StaticMethod {
    pub fn label(&self) -> String {
        match self {
            StaticMethod::EsMda { n, iterations } => format!("ES-MDA N={n} Na={iterations}"),
            StaticMethod::Mcmc { walkers, steps, temperatures, synthetic_likelihood, .. } => {
                let mut label = format!("MCMC walkers={walkers} steps={steps}");
                if *temperatures != 1 {
                    label += &format!(" T={temperatures}");
                }
                if let Some(n) = synthetic_likelihood {
                    label += &format!(" SL={n}");
                }
                label
            }
        }
    }

    fn validate(&self, index: usize) -> Result<()> {
        match *self {
            StaticMethod::EsMda { n, iterations } if n < 2 || iterations == 0 => {
                bail!("[[method]] #{index} (es-mda): N must be at least 2 and iterations at least 1, got N = {n}, iterations = {iterations}")
            }
            StaticMethod::Mcmc { steps, burn_in, .. } if burn_in >= steps => {
                bail!("[[method]] #{index} (mcmc): burn_in ({burn_in}) must be less than steps ({steps})")
            }
            StaticMethod::Mcmc { synthetic_likelihood: Some(n), .. } if !(2..=1000).contains(&n) => {
                bail!("[[method]] #{index} (mcmc): synthetic_likelihood takes 2 to 1000 simulations per θ, got {n}")
            }
            StaticMethod::Mcmc { temperatures, .. } if !(1..=20).contains(&temperatures) => {
                bail!("[[method]] #{index} (mcmc): temperatures must be 1 (no tempering) to 20, got {temperatures}")
            }
            _ => Ok(()),
        }
    }
}

/// Whether a plugin-set file is a static one (has `[simulator]`).
pub fn is_static(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).map(|t| t.contains_key("simulator")).unwrap_or(false)
}

/// A validated static plugin-set.
pub struct LoadedStatic {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub name: String,
    pub set: StaticSet,
    pub simulator: Source,
    pub obs: Source,
    pub contract: Option<crate::static_contract::CycleContract>,
}

impl StaticSet {
    pub fn load(path: &Path) -> Result<LoadedStatic> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read plugin-set file {}", path.display()))?;
        let text = String::from_utf8(bytes.clone()).with_context(|| format!("plugin-set file {} is not UTF-8", path.display()))?;
        let mut set: StaticSet = toml::from_str(&text).with_context(|| format!("invalid plugin-set file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid plugin-set file {}: {msg}", path.display());
        for (i, m) in set.methods.iter().enumerate() {
            m.validate(i + 1).map_err(|e| fail(format!("{e:#}")))?;
        }
        set.limits.validate().map_err(|e| fail(format!("{e:#}")))?;
        crate::pluginset::check_transition(set.transition.as_deref()).map_err(fail)?;
        if let Some(step5) = &set.step5 {
            step5.validate().map_err(|e| fail(format!("{e:#}")))?;
        }
        if let Some(step3) = &set.step3 {
            step3.validate().map_err(|e| fail(format!("{e:#}")))?;
            if set.step5.is_none() || !set.methods.iter().any(|m| matches!(m, StaticMethod::Mcmc { .. })) {
                return Err(fail("[step3] trains on [step5]'s simulations and step 4 reruns the mcmc [[method]] through the emulator: add both".into()));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        set.simulator.merge_config_file("simulator", dir).map_err(|e| fail(format!("{e:#}")))?;
        set.observations.merge_config_file("observations", dir).map_err(|e| fail(format!("{e:#}")))?;
        let simulator = set.simulator.source("simulator", dir).map_err(|e| fail(format!("{e:#}")))?;
        let obs = set.observations.source("observations", dir).map_err(|e| fail(format!("{e:#}")))?;
        let name = set.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "static".into()));
        let contract = match &set.cycle {
            Some(c) => Some(crate::static_contract::CycleContract::load(&dir.join(&c.contract)).map_err(|e| fail(format!("[cycle] contract: {e:#}")))?),
            None => None,
        };
        Ok(LoadedStatic { path: path.to_path_buf(), bytes, name, set, simulator, obs, contract })
    }
}

/// One method's posterior.
pub struct Posterior {
    pub method: StaticMethod,
    /// `parameters × samples`.
    pub samples: DMatrix<f64>,
    pub seconds: f64,
    pub simulations: usize,
    pub diagnostics: Option<mcmc::Diagnostics>,
}

/// Everything a static run produced.
pub struct StaticRun {
    pub prior: Prior,
    pub truth: Vec<f64>,
    pub y: Vec<f64>,
    pub r: Vec<f64>,
    pub posteriors: Vec<Posterior>,
    pub components: Vec<(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)>,
    pub step5: Option<Step5Result>,
    pub step34: Option<Step34Result>,
}

/// Step 3's emulator and step 4's posterior through it.
pub struct Step34Result {
    pub name: String,
    pub emulator_id: String,
    pub dataset: String,
    pub training: geohost_learn::static_emulator::EmulatorTraining,
    /// Loaded from the registry rather than trained.
    pub cache_hit: bool,
    pub weights: Vec<u8>,
    /// MCMC through the emulator (the oracle's settings).
    pub posterior: Posterior,
    /// C2ST against the oracle's MCMC samples.
    pub c2st_vs_mcmc: f64,
}

/// Step 5's predictor and how it compares with the oracle.
pub struct Step5Result {
    pub record: geohost_learn::amortize::PredictorRecord,
    pub weights: Vec<u8>,
    /// Draws for the run's observation and the time they took.
    pub samples: DMatrix<f64>,
    pub sample_ms: f64,
    /// C2ST against the MCMC samples of the same observation, and the
    /// MCMC's time (when the set has an MCMC method).
    pub c2st_vs_mcmc: Option<f64>,
    pub mcmc_seconds: Option<f64>,
    /// Held-out observations with their own MCMC: C2ST against it, and
    /// the reference's largest R-hat (above 1.05 it is not converged).
    pub held_out_c2st: Vec<f64>,
    pub held_out_r_hat: Vec<f64>,
    /// C2ST against the reference samples of `[step5] check_reference`.
    pub reference_c2st: Vec<f64>,
    pub calibration: geohost_learn::calibration::Calibration,
}

/// The loaded and configured plugins of a static set, and its prior.
pub(crate) struct Setup {
    pub simulator: WasmSimulator,
    pub obs: WasmObs,
    pub prior: Prior,
    /// (component, world, config, description JSON), for registration.
    pub components: Vec<(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)>,
}

pub(crate) fn setup(set: &LoadedStatic, runtime: &Runtime, registry: Option<&Registry>) -> Result<Setup> {
    let sim_component = load_plugin(runtime, registry, "simulator", &set.simulator, World::StaticModel).context("loading the simulator")?;
    let sim_config = config_json(&set.set.simulator.config);
    let simulator = WasmSimulator::new(runtime, &sim_component, &sim_config)?;
    let info = simulator.info().clone();
    let obs_component = load_plugin(runtime, registry, "observations", &set.obs, World::ObsOperator).context("loading the observation operator")?;
    let mut obs_table = set.set.observations.config.clone();
    obs_table.entry("state_size").or_insert(toml::Value::Integer(info.output_size as i64));
    let obs_config = config_json(&obs_table);
    let obs = WasmObs::new(runtime, &obs_component, &obs_config)?;
    if obs.info().state_size != info.output_size {
        bail!(
            "the observation operator `{}` takes states of size {}, but the simulator `{}` outputs {} values",
            obs.info().name,
            obs.info().state_size,
            info.name,
            info.output_size
        );
    }
    let names: Vec<String> = info.parameters.iter().map(|p| p.name.clone()).collect();
    let prior = Prior::new(&set.set.priors, &names).with_context(|| format!("invalid plugin-set file {}", set.path.display()))?;
    if let Some(t) = &set.set.truth() {
        if t.len() != names.len() {
            bail!("experiment.truth has {} values, but the simulator has {} parameters ({})", t.len(), names.len(), names.join(", "));
        }
        if !prior.log_density(t).is_finite() {
            bail!("experiment.truth {t:?} lies outside the prior's support");
        }
    }
    let components = vec![
        (sim_component, "static-model", serde_json::from_str(&sim_config)?, serde_json::to_string(&info)?),
        (obs_component, "obs-operator", serde_json::from_str(&obs_config)?, serde_json::to_string(obs.info())?),
    ];
    Ok(Setup { simulator, obs, prior, components })
}

/// A likelihood-based method on a simulator that declares itself
/// stochastic is wrong unless it says how it approximates the likelihood:
/// refuse it, saying why and what to use.
pub(crate) fn check_likelihoods(info: &geohost_sandbox::model::SimulatorInfo, noise_variance: &[f64], methods: &[StaticMethod]) -> Result<()> {
    if !info.stochastic {
        // A deterministic simulator's likelihood is the observation noise:
        // it must be there.
        if let (Some(i), false) = (noise_variance.iter().position(|v| v.is_nan() || *v <= 0.0), methods.is_empty()) {
            bail!(
                "the observation operator gives observation {i} no noise (variance {}), and the simulator `{}` has none of its own: the likelihood of ES-MDA and MCMC is undefined; give the operator a positive variance",
                noise_variance[i],
                info.name
            );
        }
        return Ok(());
    }
    for (i, m) in methods.iter().enumerate() {
        match m {
            StaticMethod::EsMda { .. } => bail!(
                "[[method]] #{} (es-mda): the simulator `{}` is stochastic (it draws noise of its own), so its likelihood p(y | θ) is intractable and ES-MDA's Gaussian update around one fixed-seed simulation is wrong; remove it, and use mcmc with `synthetic_likelihood = N`, or an amortized posterior ([step5], `geohost train posterior`), which needs no likelihood",
                i + 1,
                info.name
            ),
            StaticMethod::Mcmc { synthetic_likelihood: None, .. } => bail!(
                "[[method]] #{} (mcmc): the simulator `{}` is stochastic (it draws noise of its own), so its likelihood p(y | θ) is intractable and a Gaussian around one fixed-seed simulation is wrong; opt into an approximation with `synthetic_likelihood = N` (Wood 2010: N simulations per θ, a Gaussian with their mean and variance plus R), or use an amortized posterior ([step5]), which needs no likelihood",
                i + 1,
                info.name
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Registry ids of the components (registering them when a registry is given).
pub(crate) fn plugin_ids(
    components: &[(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)],
    registry: Option<&mut Registry>,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    match registry {
        Some(reg) => {
            for (component, world, config, info) in components {
                ids.push(register_component(reg, component, world, &serde_json::from_str::<serde_json::Value>(info)?, config)?);
            }
        }
        None => ids.extend(components.iter().map(|(c, ..)| format!("blake3:{}", c.hash.to_hex()))),
    }
    Ok(ids)
}

/// H(G(θ)) through the plugins, noise-free, for every column of θ.
pub(crate) fn forward<'a>(simulator: &'a mut WasmSimulator, obs: &'a mut WasmObs, seed: u64) -> impl FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>> + 'a {
    move |thetas| geohost_da::params::observed(simulator, obs, thetas, seed)
}

/// The plugins a refined predictor runs when it samples (see
/// [`super::refine`]), loaded from the registry it was trained in.
pub struct ForwardPlugins {
    simulator: WasmSimulator,
    obs: WasmObs,
    seed: u64,
}

impl ForwardPlugins {
    /// Load what [`forward_plugins`] recorded; `label` names the predictor in errors.
    pub fn load(registry: &Registry, record: &serde_json::Value, label: &str) -> Result<ForwardPlugins> {
        let runtime = Runtime::new(Limits::default(), geohost_sandbox::CompileCache::default_dir())?;
        let part = |key: &str, world: World| -> Result<(geohost_sandbox::LoadedComponent, String)> {
            let id = record[key]["id"].as_str().with_context(|| format!("{label}: the refinement stage does not record its {key} plugin"))?;
            let bytes = registry.read(id).with_context(|| format!("{label} refines with {key} plugin {id}, which this registry does not hold"))?;
            let component = runtime.load_bytes(key, Path::new(id), &bytes, world)?;
            Ok((component, record[key]["config"].to_string()))
        };
        let (sim, sim_config) = part("simulator", World::StaticModel)?;
        let (obs, obs_config) = part("observations", World::ObsOperator)?;
        let seed = record["seed"].as_u64().with_context(|| format!("{label}: the refinement stage does not record its simulator seed"))?;
        Ok(ForwardPlugins { simulator: WasmSimulator::new(&runtime, &sim, &sim_config)?, obs: WasmObs::new(&runtime, &obs, &obs_config)?, seed })
    }

    /// H(G(θ)) through the loaded plugins.
    pub fn forward(&mut self) -> impl FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>> + '_ {
        forward(&mut self.simulator, &mut self.obs, self.seed)
    }
}

/// The plugins behind [`forward`], as a refined predictor stores them:
/// registry ids (`plugin_ids`, in `components`' order), configs and the
/// simulator seed.
pub(crate) fn forward_plugins(
    components: &[(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)],
    plugin_ids: &[String],
    seed: u64,
) -> serde_json::Value {
    serde_json::json!({
        "seed": seed,
        "simulator": { "id": plugin_ids[0], "config": components[0].2 },
        "observations": { "id": plugin_ids[1], "config": components[1].2 },
    })
}

/// `geohost train posterior`: step 5 alone (no methods, no observation).
pub fn train_posterior(
    set: &LoadedStatic,
    runtime: &Runtime,
    mut registry: Option<&mut Registry>,
    progress: &mut dyn FnMut(usize, f64, f64),
) -> Result<(geohost_learn::amortize::PredictorRecord, Vec<u8>)> {
    let spec = set.set.step5.as_ref().with_context(|| format!("{} has no [step5] section to train a posterior from", set.path.display()))?;
    let Setup { mut simulator, mut obs, prior, components } = setup(set, runtime, registry.as_deref())?;
    let ids = plugin_ids(&components, registry.as_deref_mut())?;
    let sims = geohost_learn::amortize::simulations(spec, &prior, &mut simulator, &mut obs, &ids, registry.as_deref_mut())?;
    let seed = set.set.seed();
    let plugins = forward_plugins(&components, &ids, seed);
    let (_, record, weights) =
        geohost_learn::amortize::train(spec, &prior, &sims, &ids, registry, &mut forward(&mut simulator, &mut obs, seed), &plugins, progress)?;
    Ok((record, weights))
}

/// Run the synthetic observation and every method.
pub fn run(set: &LoadedStatic, runtime: &Runtime, mut registry: Option<&mut Registry>, progress: &mut dyn FnMut(usize, f64, f64)) -> Result<StaticRun> {
    if set.set.experiment.is_none() {
        bail!(
            "{}: `geohost run` on a static set needs [experiment] (the seed and, optionally, the true parameters of the synthetic observation it infers from); `geohost train posterior` needs none",
            set.path.display()
        );
    }
    if set.set.methods.is_empty() {
        bail!("{}: `geohost run` on a static set needs at least one [[method]] (es-mda or mcmc), the step-2 inference it runs; `geohost train posterior` needs none", set.path.display());
    }
    let Setup { mut simulator, mut obs, prior, components } = setup(set, runtime, registry.as_deref())?;
    check_likelihoods(simulator.info(), &obs.info().noise_variance, &set.set.methods)?;
    let seed = set.set.seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (truth, y) = synthesize((&mut simulator, &mut obs), &prior, set.set.truth(), seed, &mut rng)?;
    let r = obs.info().noise_variance.clone();
    let mut problem =
        Problem { prior: prior.clone(), simulator: &mut simulator, obs: &mut obs, y: y.clone(), r: r.clone().into(), seed, simulations: 0, synthetic: None };
    let mut posteriors = Vec::new();
    for method in &set.set.methods {
        // Each method draws from its own stream, so adding one changes no other.
        let h = blake3::hash(method.label().as_bytes());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")));
        problem.simulations = 0;
        let start = Instant::now();
        let (samples, diagnostics) = match *method {
            StaticMethod::EsMda { n, iterations } => (esmda::run(&mut problem, n, iterations, &mut rng)?, None),
            StaticMethod::Mcmc { walkers, steps, burn_in, temperatures, synthetic_likelihood } => {
                problem.synthetic = synthetic_likelihood;
                let chains = mcmc::run(&mut problem, &mcmc::Spec { walkers, steps, burn_in, a: 2.0, temperatures }, &mut rng)?;
                problem.synthetic = None;
                (chains.samples, Some(chains.diagnostics))
            }
        };
        posteriors.push(Posterior { method: method.clone(), samples, seconds: start.elapsed().as_secs_f64(), simulations: problem.simulations, diagnostics });
    }
    drop(problem);
    let mut simulations = None;
    let step5 = match &set.set.step5 {
        None => None,
        Some(spec) => {
            let plugin_ids = plugin_ids(&components, registry.as_deref_mut())?;
            let sims = geohost_learn::amortize::simulations(spec, &prior, &mut simulator, &mut obs, &plugin_ids, registry.as_deref_mut())?;
            let (predictor, record, weights) = geohost_learn::amortize::train(
                spec,
                &prior,
                &sims,
                &plugin_ids,
                registry.as_deref_mut(),
                &mut forward(&mut simulator, &mut obs, seed),
                &forward_plugins(&components, &plugin_ids, seed),
                progress,
            )?;
            simulations = Some((sims, plugin_ids));
            let mcmc = posteriors.iter().find(|p| matches!(p.method, StaticMethod::Mcmc { .. }));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5757);
            let n = mcmc.map_or(10_000, |p| p.samples.ncols().min(10_000));
            // The median of five timed draws of n samples (the first kept).
            let mut times = Vec::new();
            let mut samples = None;
            for _ in 0..5 {
                let start = Instant::now();
                let q = predictor.condition(y.as_slice(), &mut forward(&mut simulator, &mut obs, seed))?.sample(n, &mut rng)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
                samples.get_or_insert(q);
            }
            let samples = samples.expect("drawn five times");
            times.sort_by(f64::total_cmp);
            let sample_ms = times[2];
            let reference = |m: &DMatrix<f64>, rng: &mut rand_chacha::ChaCha8Rng| {
                let cols = rand::seq::index::sample(rng, m.ncols(), n.min(m.ncols())).into_vec();
                m.select_columns(&cols)
            };
            let c2st_vs_mcmc = match mcmc {
                Some(p) => Some(geohost_learn::c2st::c2st(&reference(&p.samples, &mut rng), &samples, Default::default())?),
                None => None,
            };
            // Held-out observations, each with its own MCMC reference.
            let (mut held_out_c2st, mut held_out_r_hat) = (Vec::new(), Vec::new());
            if let (Some(&StaticMethod::Mcmc { walkers, steps, burn_in, temperatures, synthetic_likelihood }), true) =
                (mcmc.map(|p| &p.method), spec.check_observations > 0)
            {
                for k in 0..spec.check_observations {
                    let mut rng_k = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(1000 + k as u64));
                    let (_, y_k) = synthesize((&mut simulator, &mut obs), &prior, None, seed, &mut rng_k)?;
                    let mut problem = Problem {
                        prior: prior.clone(),
                        simulator: &mut simulator,
                        obs: &mut obs,
                        y: y_k.clone(),
                        r: r.clone().into(),
                        seed,
                        simulations: 0,
                        synthetic: synthetic_likelihood,
                    };
                    let chains = mcmc::run(&mut problem, &mcmc::Spec { walkers, steps, burn_in, a: 2.0, temperatures }, &mut rng_k)?;
                    let q = predictor.condition(y_k.as_slice(), &mut forward(&mut simulator, &mut obs, seed))?.sample(n, &mut rng_k)?;
                    held_out_c2st.push(geohost_learn::c2st::c2st(&reference(&chains.samples, &mut rng_k), &q, Default::default())?);
                    held_out_r_hat.push(chains.diagnostics.r_hat.iter().cloned().fold(1.0, f64::max));
                }
            }
            // Observations with reference posteriors from files.
            let mut reference_c2st = Vec::new();
            let dir = set.path.parent().unwrap_or(Path::new("."));
            for (k, check) in spec.check_reference.iter().enumerate() {
                let at = || format!("[step5] check_reference #{}", k + 1);
                let y_k = crate::tables::read_observation(&dir.join(&check.observation)).with_context(at)?;
                let samples = crate::tables::read_samples(&dir.join(&check.samples), &prior.names).with_context(at)?;
                let mut rng_k = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(2000 + k as u64));
                let q = predictor.condition(&y_k, &mut forward(&mut simulator, &mut obs, seed)).and_then(|c| c.sample(n, &mut rng_k)).with_context(at)?;
                reference_c2st.push(geohost_learn::c2st::c2st(&reference(&samples, &mut rng_k), &q, Default::default()).with_context(at)?);
            }
            // Calibration on fresh prior-predictive pairs.
            // 1000 pairs: the coverage at one level then has a standard error of at most 0.016.
            let (thetas, xs) = geohost_learn::amortize::simulate_pairs(&prior, &mut simulator, &mut obs, 1000, spec.seed.wrapping_add(1))?;
            let calibration = geohost_learn::calibration::calibrate(&predictor, &mut forward(&mut simulator, &mut obs, seed), &thetas, &xs, 1000, &mut rng)?;
            Some(Step5Result {
                record,
                weights,
                samples,
                sample_ms,
                c2st_vs_mcmc,
                mcmc_seconds: mcmc.map(|p| p.seconds),
                held_out_c2st,
                held_out_r_hat,
                reference_c2st,
                calibration,
            })
        }
    };
    let step34 = match (&set.set.step3, simulations) {
        (Some(spec), Some((sims, plugin_ids))) => {
            Some(emulate_and_infer(spec, &prior, &simulator, &obs, &sims, &plugin_ids, &posteriors, &y, &r, seed, registry)?)
        }
        _ => None,
    };
    Ok(StaticRun { prior, truth, y: y.as_slice().to_vec(), r, posteriors, components, step5, step34 })
}

/// Step 3 (train the emulator on step 5's simulations, registered as kind
/// weights, role emulator, step 3, trained_on them) and step 4 (the
/// oracle's MCMC through it on the same observation, scored by C2ST
/// against the oracle).
#[allow(clippy::too_many_arguments)]
fn emulate_and_infer(
    spec: &geohost_learn::static_emulator::EmulatorSpec,
    prior: &Prior,
    simulator: &WasmSimulator,
    obs: &WasmObs,
    sims: &geohost_learn::amortize::Simulations,
    plugin_ids: &[String],
    posteriors: &[Posterior],
    y: &nalgebra::DVector<f64>,
    r: &[f64],
    seed: u64,
    registry: Option<&mut Registry>,
) -> Result<Step34Result> {
    use geohost_learn::static_emulator::Observed;
    let (mut emulator, training, weights, emulator_id, cache_hit) = train_emulator(spec, prior, simulator.info(), sims, plugin_ids, registry)?;
    let oracle = posteriors.iter().find(|p| matches!(p.method, StaticMethod::Mcmc { .. })).context("step 4 needs the mcmc [[method]]")?;
    let StaticMethod::Mcmc { walkers, steps, burn_in, temperatures, .. } = oracle.method else { unreachable!("found as mcmc") };
    let mut observed = Observed::like(obs.info());
    let mut problem = Problem {
        prior: prior.clone(),
        simulator: &mut emulator,
        obs: &mut observed,
        y: y.clone(),
        r: r.to_vec().into(),
        seed,
        simulations: 0,
        synthetic: None,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5764);
    let start = Instant::now();
    let chains = mcmc::run(&mut problem, &mcmc::Spec { walkers, steps, burn_in, a: 2.0, temperatures }, &mut rng)?;
    let posterior = Posterior {
        method: oracle.method.clone(),
        samples: chains.samples,
        seconds: start.elapsed().as_secs_f64(),
        simulations: problem.simulations,
        diagnostics: Some(chains.diagnostics),
    };
    let n = oracle.samples.ncols().min(posterior.samples.ncols()).min(10_000);
    let pick = |m: &DMatrix<f64>, rng: &mut rand_chacha::ChaCha8Rng| m.select_columns(&rand::seq::index::sample(rng, m.ncols(), n).into_vec());
    let c2st_vs_mcmc = geohost_learn::c2st::c2st(&pick(&oracle.samples, &mut rng), &pick(&posterior.samples, &mut rng), Default::default())?;
    Ok(Step34Result { name: spec.name.clone(), emulator_id, dataset: sims.id.clone(), training, cache_hit, weights, posterior, c2st_vs_mcmc })
}

/// Step 3 of a static problem: the emulator `spec` asks for, trained on
/// `sims` or, training being deterministic, loaded from the registry when
/// the same simulations and spec trained one before (bump the format when
/// training changes). Returns it, its training record, its weights, its
/// id and whether it was loaded.
pub(crate) fn train_emulator(
    spec: &geohost_learn::static_emulator::EmulatorSpec,
    prior: &Prior,
    simulator: &geohost_sandbox::model::SimulatorInfo,
    sims: &geohost_learn::amortize::Simulations,
    plugin_ids: &[String],
    registry: Option<&mut Registry>,
) -> Result<(geohost_learn::static_emulator::StaticEmulator, geohost_learn::static_emulator::EmulatorTraining, Vec<u8>, String, bool)> {
    use geohost_learn::static_emulator::StaticEmulator;
    let key = geohost_registry::artifact_id(serde_json::json!({ "static_emulator_format": 2, "dataset": sims.id, "spec": spec }).to_string().as_bytes());
    let cached = geohost_registry::cached_output(registry.as_deref(), &key)?;
    Ok(match cached {
        Some((id, bytes)) => {
            let (emulator, training) = StaticEmulator::from_safetensors_with_training(&id, &bytes)?;
            (emulator, training, bytes, id, true)
        }
        None => {
            let (emulator, training) = StaticEmulator::train(spec, prior, simulator, &sims.thetas, &sims.hx, &sims.sd)?;
            let weights =
                emulator.to_safetensors(&serde_json::json!({ "dataset": sims.id, "spec": spec, "training": geohost_learn::stored_training(&training)? }))?;
            let artifact = NewArtifact {
                kind: "weights".into(),
                name: spec.name.clone(),
                media_type: "application/vnd.safetensors".into(),
                role: Some("emulator".into()),
                step: Some(3),
                metadata: serde_json::json!({ "emulator": "static-mlp", "dataset": sims.id, "training": training }),
                ..Default::default()
            };
            let id = geohost_registry::add_trained(registry, &key, &weights, &artifact, &sims.id, plugin_ids)?;
            (emulator, training, weights, id, false)
        }
    })
}

/// Mean and standard deviation of each row.
pub fn moments(samples: &DMatrix<f64>) -> Vec<(f64, f64)> {
    samples
        .row_iter()
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.sum() / n;
            (mean, (row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
        })
        .collect()
}

/// The table `geohost run` prints: per method and parameter, posterior
/// mean ± sd against the truth; then cost and (MCMC) diagnostics.
pub fn table(run: &StaticRun) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:<30}", "method");
    for name in &run.prior.names {
        let _ = write!(s, "  {name:>20}");
    }
    let _ = writeln!(s, "  {:>9}  {:>11}", "seconds", "simulations");
    let _ = write!(s, "{:<30}", "truth");
    for t in &run.truth {
        let _ = write!(s, "  {t:>20.4}");
    }
    let _ = writeln!(s);
    for p in &run.posteriors {
        let _ = write!(s, "{:<30}", p.method.label());
        for (mean, sd) in moments(&p.samples) {
            let _ = write!(s, "  {:>20}", format!("{mean:.4} ± {sd:.4}"));
        }
        let _ = writeln!(s, "  {:>9.2}  {:>11}", p.seconds, p.simulations);
    }
    if let Some(s34) = &run.step34 {
        let p = &s34.posterior;
        let _ = write!(s, "{:<30}", "step 4: MCMC via emulator");
        for (mean, sd) in moments(&p.samples) {
            let _ = write!(s, "  {:>20}", format!("{mean:.4} ± {sd:.4}"));
        }
        let _ = writeln!(s, "  {:>9.2}  {:>11}", p.seconds, p.simulations);
    }
    if let Some(s5) = &run.step5 {
        let _ = write!(s, "{:<30}", format!("step 5: {}", s5.record.name));
        for (mean, sd) in moments(&s5.samples) {
            let _ = write!(s, "  {:>20}", format!("{mean:.4} ± {sd:.4}"));
        }
        let _ = writeln!(s, "  {:>9.3}  {:>11}", s5.sample_ms / 1e3, 0);
    }
    for p in &run.posteriors {
        if let Some(d) = &p.diagnostics {
            let fmt = |v: &[f64], digits: usize| v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ");
            let swaps = d.swap_acceptance.map(|a| format!(", swaps between rungs {a:.2}")).unwrap_or_default();
            let warn = if d.r_hat.iter().any(|r| *r > 1.05) { " (R-hat above 1.05: not converged; run longer or add temperatures)" } else { "" };
            let _ = writeln!(
                s,
                "{}: R-hat [{}], ESS [{}], tau [{}] steps, acceptance {:.2}{swaps}{warn}",
                p.method.label(),
                fmt(&d.r_hat, 3),
                fmt(&d.ess, 0),
                fmt(&d.tau, 1),
                d.acceptance
            );
        }
    }
    if let Some(s34) = &run.step34 {
        let t = &s34.training;
        let when = if s34.cache_hit { "loaded from the registry".to_string() } else { format!("trained in {:.1} s", t.seconds) };
        let _ = writeln!(
            s,
            "step 3: emulator {} ({}) {when}, {} epochs (best {}): held-out RMSE {:.3} = {:.3} × the noise sd",
            s34.name,
            &s34.emulator_id[..19.min(s34.emulator_id.len())],
            t.epochs,
            t.best_epoch,
            t.val_rmse,
            t.val_rmse_over_noise
        );
        let _ = writeln!(
            s,
            "step 4: MCMC through the emulator vs MCMC through the plugins: C2ST {:.3}, {:.1} s against {:.1} s",
            s34.c2st_vs_mcmc,
            s34.posterior.seconds,
            run.posteriors.iter().find(|p| matches!(p.method, StaticMethod::Mcmc { .. })).map_or(f64::NAN, |p| p.seconds)
        );
    }
    if let Some(s5) = &run.step5 {
        let t = &s5.record.training;
        let when = if s5.record.predictor_cache_hit { "loaded from the registry".to_string() } else { format!("in {:.1} s", t.seconds) };
        let _ = writeln!(
            s,
            "step 5: predictor {} ({}) trained on {} simulations ({}) {when}, {}{} epochs (best {}), validation NLL {:.3}",
            s5.record.name,
            &s5.record.id[..19.min(s5.record.id.len())],
            s5.record.simulations,
            if s5.record.dataset_cache_hit { "cached pairs" } else { "simulated" },
            if s5.record.refined { "both stages; refinement stage " } else { "" },
            t.epochs,
            t.best_epoch,
            t.best_val_nll
        );
        if let (Some(c), Some(mcmc_s)) = (s5.c2st_vs_mcmc, s5.mcmc_seconds) {
            let _ = writeln!(
                s,
                "step 5 vs MCMC on this observation: C2ST {c:.3}; {} draws in {:.1} ms against MCMC's {mcmc_s:.1} s ({:.0}× faster)",
                s5.samples.ncols(),
                s5.sample_ms,
                mcmc_s * 1e3 / s5.sample_ms
            );
        }
        if !s5.held_out_c2st.is_empty() {
            let mean = s5.held_out_c2st.iter().sum::<f64>() / s5.held_out_c2st.len() as f64;
            let unconverged = s5.held_out_r_hat.iter().filter(|r| **r > 1.05).count();
            let note = if unconverged > 0 { format!(" ({unconverged} of the references have R-hat above 1.05)") } else { String::new() };
            let _ = writeln!(
                s,
                "step 5 vs MCMC on {} held-out observations: mean C2ST {mean:.3} [{}]{note}",
                s5.held_out_c2st.len(),
                s5.held_out_c2st.iter().map(|c| format!("{c:.3}")).collect::<Vec<_>>().join(" ")
            );
        }
        if !s5.reference_c2st.is_empty() {
            let _ = writeln!(
                s,
                "step 5 vs reference posteriors (check_reference) on {} observations: C2ST [{}]",
                s5.reference_c2st.len(),
                s5.reference_c2st.iter().map(|c| format!("{c:.3}")).collect::<Vec<_>>().join(" ")
            );
        }
        let c = &s5.calibration;
        let _ = writeln!(
            s,
            "step 5 calibration on {} prior-predictive pairs: max |coverage − level| {:.3}; SBC KS [{}]; posterior-mean RMSE / prior sd [{}]",
            c.pairs,
            c.max_coverage_error,
            c.sbc_ks.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", "),
            c.mean_error.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(", ")
        );
    }
    s
}

/// The files a static run writes.
pub struct StaticFiles {
    pub observation: (PathBuf, Vec<u8>),
    pub posteriors: Vec<(PathBuf, Vec<u8>)>,
    /// Step 4's posterior (MCMC through the emulator).
    pub step4: Option<(PathBuf, Vec<u8>)>,
}

/// `observation.nc` (truth and y) and one `<method>.nc` per method with
/// `samples(sample, parameter)`; bytes depend only on the inputs.
pub fn write(dir: &Path, run: &StaticRun, set: &LoadedStatic) -> Result<StaticFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let d = run.truth.len();
    let ids: Vec<String> = run.components.iter().map(|(c, ..)| format!("blake3:{}", c.hash.to_hex())).collect();
    let mut attrs = common_attrs();
    attrs.push(("plugin_set", set.name.clone()));
    attrs.push(("simulator", ids[0].clone()));
    attrs.push(("observation_operator", ids[1].clone()));
    attrs.push(("parameters", run.prior.names.join(" ")));
    attrs.push(("prior", serde_json::to_string(&run.prior.specs)?));
    let obs_bytes = nc_bytes(
        &[("parameter", d), ("obs", run.y.len())],
        &[
            Var { name: "truth", dims: &["parameter"], data: &run.truth, units: "see parameters", long_name: "true parameters" },
            Var { name: "y", dims: &["obs"], data: &run.y, units: "observation units", long_name: "synthetic observation" },
            Var {
                name: "obs_variance",
                dims: &["obs"],
                data: &run.r,
                units: "observation units squared",
                long_name: "observation-error variance (diagonal of R)",
            },
        ],
        &attrs,
    )?;
    let observation = (dir.join("observation.nc"), obs_bytes);
    std::fs::write(&observation.0, &observation.1).with_context(|| format!("writing {}", observation.0.display()))?;
    let obs_id = geohost_registry::artifact_id(&observation.1);
    let posterior_nc = |p: &Posterior, extra: &[(&'static str, String)]| -> Result<Vec<u8>> {
        let mut attrs = attrs.clone();
        attrs.push(("method", p.method.label()));
        attrs.push(("observation", obs_id.clone()));
        attrs.extend(extra.iter().cloned());
        if let Some(diag) = &p.diagnostics {
            attrs.push(("diagnostics", serde_json::to_string(diag)?));
        }
        // samples(sample, parameter): nalgebra's column-major parameters × samples.
        nc_bytes(
            &[("sample", p.samples.ncols()), ("parameter", d)],
            &[Var { name: "samples", dims: &["sample", "parameter"], data: p.samples.as_slice(), units: "see parameters", long_name: "posterior samples" }],
            &attrs,
        )
    };
    let mut posteriors = Vec::new();
    for p in &run.posteriors {
        let bytes = posterior_nc(p, &[])?;
        let path = dir.join(format!("{}.nc", crate::outputs::file_stem(&p.method.label())));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        posteriors.push((path, bytes));
    }
    let mut step4 = None;
    if let Some(s34) = &run.step34 {
        let bytes = posterior_nc(&s34.posterior, &[("emulator", s34.emulator_id.clone())])?;
        let path = dir.join(format!("{}_via_emulator.nc", crate::outputs::file_stem(&s34.posterior.method.label())));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        step4 = Some((path, bytes));
        let path = dir.join(format!("{}.safetensors", crate::outputs::file_stem(&s34.name)));
        std::fs::write(&path, &s34.weights).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(s5) = &run.step5 {
        let path = dir.join(format!("{}.safetensors", crate::outputs::file_stem(&s5.record.name)));
        std::fs::write(&path, &s5.weights).with_context(|| format!("writing {}", path.display()))?;
        // Its draws for this observation, beside the oracle's (the run's page
        // plots their marginals together).
        let mut attrs = attrs.clone();
        attrs.push(("method", format!("step 5: {}", s5.record.name)));
        attrs.push(("observation", obs_id.clone()));
        attrs.push(("predictor", s5.record.id.clone()));
        let bytes = nc_bytes(
            &[("sample", s5.samples.ncols()), ("parameter", d)],
            &[Var {
                name: "samples",
                dims: &["sample", "parameter"],
                data: s5.samples.as_slice(),
                units: "see parameters",
                long_name: "amortized posterior samples",
            }],
            &attrs,
        )?;
        let path = dir.join(format!("{}_samples.nc", crate::outputs::file_stem(&s5.record.name)));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(StaticFiles { observation, posteriors, step4 })
}
