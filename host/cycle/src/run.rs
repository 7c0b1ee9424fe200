//! `geohost run`: load the plugins of a plugin-set into the sandbox, run
//! the twin experiment, assimilate with every method, collect the results.

use crate::pluginset::{Loaded, Source};
use crate::progress::ProgressFactory;
use anyhow::{Context, Result};
use geohost_da::ensemble::{Execution, Instances, ObsInstances, Trajectory};
use geohost_da::stats::Summary;
use geohost_da::team::Solo;
use geohost_da::twin::{self, Chronology, Prior, Twin};
use geohost_da::Method;
use geohost_learn::neural::NeuralForward;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::{check_pair, ForwardModel, ModelInfo, ObsInfo, ObsOperator};
use geohost_sandbox::{config_json, LoadedComponent, Runtime, WasmForward, WasmObs, World};
use nalgebra::DVector;
use rand::SeedableRng;
use serde::Serialize;
use std::time::Instant;

/// How a run uses processes and threads; the results are the same bits
/// whatever it says.
#[derive(Clone, Copy)]
pub struct Parallelism<'a> {
    /// The MPI ranks step 2's methods are split over (every rank calls
    /// [`run`] with the same set and gets the same results). Steps 3 and 4
    /// run in one process: ranks other than 0 must drop them, and rank 0
    /// runs them alone.
    pub team: &'a dyn geohost_da::team::Team,
    /// Instances of the model component and of the observation operator
    /// (threads) the members of every forecast and observation are split
    /// over; `None`: one per thread ([`geohost_da::letkf::default_threads`])
    /// when `[model]` is a component, one when it is a registered emulator
    /// (which runs natively). Calls too short to pay for a split stay on
    /// the first instance, and the bits are the same for any number.
    pub model_instances: Option<usize>,
}

impl Default for Parallelism<'static> {
    /// One process, one model instance.
    fn default() -> Self {
        Parallelism { team: &Solo, model_instances: Some(1) }
    }
}

/// One method's outcome.
pub struct MethodRun {
    pub method: Method,
    pub summary: Summary,
    pub ms_per_cycle: f64,
    pub trajectory: Trajectory,
    /// Set (to the weights' id) when the method ran through the step-3
    /// emulator instead of the plugin-set's model (step 4).
    pub emulator: Option<String>,
}

/// A row of the results table (what `--json` prints).
#[derive(Serialize)]
pub struct Row<'a> {
    pub label: String,
    #[serde(flatten)]
    pub method: &'a Method,
    #[serde(flatten)]
    pub summary: Summary,
    pub ms_per_cycle: f64,
    /// The ensemble cycle's time per cycle by phase (forecast, observe,
    /// analysis, statistics; and exchange across MPI ranks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<geohost_da::ensemble::Phases>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator: Option<String>,
}

impl MethodRun {
    /// The method's label, marked when it ran through the emulator.
    pub fn label(&self) -> String {
        match self.emulator {
            Some(_) => format!("{} via emulator", self.method.label()),
            None => self.method.label(),
        }
    }

    pub fn row(&self) -> Row<'_> {
        Row {
            label: self.label(),
            method: &self.method,
            summary: self.summary,
            ms_per_cycle: self.ms_per_cycle,
            phases_ms: self.trajectory.phases,
            emulator: self.emulator.clone(),
        }
    }
}

/// A plugin the run loaded, for the record.
#[derive(Serialize, Clone)]
pub struct PluginRecord {
    pub role: &'static str,
    /// `component` (wasm) or `emulator` (registered weights).
    pub kind: &'static str,
    pub path: String,
    pub blake3: String,
    pub size: usize,
    pub config: serde_json::Value,
}

impl PluginRecord {
    fn new(role: &'static str, loaded: &LoadedComponent, config: &str) -> Self {
        PluginRecord {
            role,
            kind: "component",
            path: loaded.path.display().to_string(),
            blake3: format!("blake3:{}", loaded.hash.to_hex()),
            size: loaded.size,
            config: serde_json::from_str(config).unwrap_or(serde_json::Value::Null),
        }
    }
}

pub struct RunOutput {
    pub model: ModelInfo,
    pub obs: ObsInfo,
    pub plugins: Vec<PluginRecord>,
    pub twin: Twin,
    pub methods: Vec<MethodRun>,
    /// Cycles actually run (after any override).
    pub cycles: usize,
    /// What `[step3]` produced, when the plugin-set has one.
    pub emulator: Option<crate::emulation::EmulatorRecord>,
    /// How step 2 ran (the results do not depend on it; the times do).
    pub parallelism: ParallelismRecord,
}

/// How a run was split, for `summary.json`: MPI ranks, threads per rank
/// and model (and operator) instances per rank.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ParallelismRecord {
    pub ranks: usize,
    pub threads: usize,
    pub model_instances: usize,
}

/// The generator of the twin experiment and the base seed of the methods:
/// from `experiment.seed`, or from a hidden experiment's 256-bit secret
/// (through BLAKE3 key derivation, so neither reveals the other).
fn experiment_seeds(set: &Loaded) -> (rand_chacha::ChaCha8Rng, u64) {
    match &set.secret {
        None => (rand_chacha::ChaCha8Rng::seed_from_u64(set.set.experiment.seed), set.set.experiment.seed),
        Some(secret) => {
            let twin = blake3::derive_key("geohost 2026 hidden experiment: twin", secret);
            let methods = blake3::derive_key("geohost 2026 hidden experiment: methods", secret);
            (rand_chacha::ChaCha8Rng::from_seed(twin), u64::from_le_bytes(methods[..8].try_into().expect("8 bytes")))
        }
    }
}

/// Order-independent seed for a method: the run seed mixed with the label.
fn method_seed(seed: u64, method: &Method) -> u64 {
    let h = blake3::hash(method.label().as_bytes());
    seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Load a plugin from its path, or from the registry by id or name (its
/// bytes re-hashed on the way).
pub(crate) fn load_plugin(runtime: &Runtime, registry: Option<&Registry>, label: &str, source: &Source, world: World) -> Result<LoadedComponent> {
    match source {
        Source::Path(path) => Ok(runtime.load(label, path, world)?),
        Source::Artifact(reference) => {
            let registry =
                registry.with_context(|| format!("plugin `{label}` names registry artifact `{reference}`, but no registry is in use (drop --no-registry)"))?;
            let id = registry.resolve(reference).with_context(|| format!("plugin `{label}`"))?;
            let bytes = registry.read(&id).with_context(|| format!("plugin `{label}`"))?;
            Ok(runtime.load_bytes(label, std::path::Path::new(&id), &bytes, world)?)
        }
        Source::Emulator(_) => unreachable!("emulators are not components"),
    }
}

/// The forward model of a run: a component, or a registered emulator.
pub(crate) fn load_model(
    runtime: &Runtime,
    registry: Option<&Registry>,
    set: &Loaded,
) -> Result<(Box<dyn ForwardModel>, PluginRecord, Option<LoadedComponent>)> {
    match &set.model {
        Source::Emulator(reference) => {
            let registry = registry.with_context(|| format!("[model] names emulator `{reference}`, but no registry is in use (drop --no-registry)"))?;
            let id = registry.get_with_role(reference, "emulator").context("[model] emulator")?.id;
            let bytes = registry.read(&id)?;
            let forward = NeuralForward::from_bytes(&id, &bytes)?;
            let record = PluginRecord { role: "model", kind: "emulator", path: id.clone(), blake3: id, size: bytes.len(), config: serde_json::Value::Null };
            Ok((Box::new(forward), record, None))
        }
        source => {
            let component = load_plugin(runtime, registry, "model", source, World::ForwardModel).context("loading the forward model")?;
            let config = config_json(&set.set.model.config);
            let forward = WasmForward::new(runtime, &component, &config)?;
            let record = PluginRecord::new("model", &component, &config);
            Ok((Box::new(forward), record, Some(component)))
        }
    }
}

/// The observation operator of a run, checked against `model`. It learns
/// the state size from the model unless its config says otherwise (then
/// check_pair catches a mismatch). Returns it with its component and config.
pub(crate) fn load_obs(runtime: &Runtime, registry: Option<&Registry>, set: &Loaded, model: &ModelInfo) -> Result<(WasmObs, LoadedComponent, String)> {
    let mut obs_table = set.set.observations.config.clone();
    obs_table.entry("state_size").or_insert(toml::Value::Integer(model.state_size as i64));
    let obs_config = config_json(&obs_table);
    let obs_component = load_plugin(runtime, registry, "observations", &set.obs, World::ObsOperator).context("loading the observation operator")?;
    let obs = WasmObs::new(runtime, &obs_component, &obs_config)?;
    check_pair(model, obs.info())?;
    Ok((obs, obs_component, obs_config))
}

/// Run a loaded plugin-set: the twin experiment and every method (step 2),
/// then `[step3]` (dataset and emulator) and `[step4]` (methods again
/// through the emulator) when the set has them. `cycles` overrides the
/// file's cycle count; `registry` resolves plugins named by artifact and
/// caches datasets and emulators. `parallel` says how the work is split;
/// the results do not depend on it.
pub fn run(
    set: &Loaded,
    runtime: &Runtime,
    mut registry: Option<&mut Registry>,
    cycles: Option<usize>,
    progress: &mut ProgressFactory<'_>,
    parallel: Parallelism<'_>,
) -> Result<RunOutput> {
    let team = parallel.team;
    let (mut model, model_record, model_component) = load_model(runtime, registry.as_deref(), set)?;
    let threads = geohost_da::letkf::default_threads();
    let instances = match parallel.model_instances {
        Some(count) => count,
        None if model_component.is_some() => threads,
        None => 1,
    };
    if instances > 1 {
        let component = model_component.as_ref().context("model instances split a component's forecast, but [model] is a registered emulator")?;
        let config = config_json(&set.set.model.config);
        let models =
            (0..instances).map(|_| Ok(Box::new(WasmForward::new(runtime, component, &config)?) as Box<dyn ForwardModel + Send>)).collect::<Result<Vec<_>>>()?;
        model = Box::new(Instances::new(models)?);
    }
    let m = model.info().state_size;

    let (first_obs, obs_component, obs_config) = load_obs(runtime, registry.as_deref(), set, model.info())?;
    // The operator's instances observe the members in the same shares.
    let mut obs: Box<dyn ObsOperator + Send> = if instances > 1 {
        let mut operators: Vec<Box<dyn ObsOperator + Send>> = vec![Box::new(first_obs)];
        for _ in 1..instances {
            operators.push(Box::new(WasmObs::new(runtime, &obs_component, &obs_config)?));
        }
        Box::new(ObsInstances::new(operators)?)
    } else {
        Box::new(first_obs)
    };

    let e = &set.set.experiment;
    let chronology =
        Chronology { dt: e.dt.unwrap_or(model.info().default_dt), steps_per_obs: e.steps_per_obs, cycles: cycles.unwrap_or(e.cycles), burn_in: e.burn_in };
    let start = Prior::gaussian(DVector::from_vec(e.x0.resolve(m)?), e.x0_variance);
    let (mut rng, methods_seed) = experiment_seeds(set);
    let prior = match e.spinup {
        Some(spin_up) => {
            let mut bar = progress("spin-up (climate sample)", 1);
            let prior = Prior::spun_up(model.as_mut(), &start, spin_up, chronology.dt, &mut rng)?;
            bar.tick(0);
            prior
        }
        None => start,
    };
    let twin = {
        let mut bar = progress("truth + observations", chronology.cycles);
        let covariance = set.methods.iter().any(|m| m.uses_climatological_covariance());
        let t = twin::simulate(model.as_mut(), obs.as_mut(), chronology, prior, covariance, &mut rng)?;
        bar.tick(chronology.cycles - 1);
        t
    };

    let record = geohost_da::ensemble::Record { members_every: set.set.output.members_every };
    let run_method = |method: &Method,
                      model: &mut dyn ForwardModel,
                      obs: &mut dyn ObsOperator,
                      label: &str,
                      emulator: Option<String>,
                      team: &dyn geohost_da::team::Team,
                      progress: &mut ProgressFactory<'_>| {
        let mut bar = progress(label, chronology.cycles);
        let start = Instant::now();
        let trajectory = method
            .run(&twin, model, obs, method_seed(methods_seed, method), Execution { record, team }, &mut |k| bar.tick(k))
            .with_context(|| format!("method {label}"))?;
        let ms_per_cycle = start.elapsed().as_secs_f64() * 1e3 / chronology.cycles as f64;
        let summary = trajectory.stats.summarize(&twin.times, chronology.burn_in);
        anyhow::Ok(MethodRun { method: method.clone(), summary, ms_per_cycle, trajectory, emulator })
    };
    let mut methods = Vec::new();
    for method in &set.methods {
        methods.push(run_method(method, model.as_mut(), obs.as_mut(), &method.label(), None, team, progress)?);
    }

    // Steps 3 and 4.
    let mut emulator = None;
    if let (Some(step3), Some(component)) = (&set.set.step3, &model_component) {
        if let Some(reg) = registry.as_deref_mut() {
            register_component(reg, component, "forward-model", model.info(), &model_record.config)?;
        }
        let (mut neural, rec) =
            crate::emulation::step3(registry, model.as_mut(), &model_record.blake3, &model_record.config, step3, chronology.dt, &set.name, progress)?;
        if let Some(step4) = &set.set.step4 {
            for method in crate::emulation::step4_methods(step4, &set.methods)? {
                let label = format!("{} via emulator", method.label());
                methods.push(run_method(method, &mut neural, obs.as_mut(), &label, Some(rec.id.clone()), &Solo, progress)?);
            }
        }
        emulator = Some(rec);
    }

    let plugins = vec![model_record, PluginRecord::new("observations", &obs_component, &obs_config)];
    let parallelism = ParallelismRecord { ranks: team.size(), threads, model_instances: instances };
    Ok(RunOutput { model: model.info().clone(), obs: obs.info().clone(), plugins, twin, methods, cycles: chronology.cycles, emulator, parallelism })
}

/// Register a component with the self-description it gave for `config`.
pub(crate) fn register_component(
    registry: &mut Registry,
    component: &LoadedComponent,
    world: &str,
    info: &impl Serialize,
    config: &serde_json::Value,
) -> Result<String> {
    let bytes = std::fs::read(&component.path).or_else(|_| registry.read(&format!("blake3:{}", component.hash.to_hex())))?;
    let value = serde_json::to_value(info)?;
    let (id, _) = registry.add(
        &bytes,
        &NewArtifact {
            kind: "plugin".into(),
            name: value["name"].as_str().unwrap_or("plugin").into(),
            version: value["version"].as_str().map(String::from),
            media_type: "application/wasm".into(),
            step: Some(1),
            tags: vec![world.into()],
            metadata: serde_json::json!({ "world": world, "description": value, "config": config }),
            ..Default::default()
        },
    )?;
    anyhow::ensure!(
        id == format!("blake3:{}", component.hash.to_hex()),
        "plugin file {} changed on disk during the run; not registering it",
        component.path.display()
    );
    Ok(id)
}

/// `geohost train emulator`: step 3 alone (the plugin-set's `[step3]` on
/// its `[model]`), without the twin experiment.
pub fn train_emulator(
    set: &Loaded,
    runtime: &Runtime,
    mut registry: Option<&mut Registry>,
    progress: &mut ProgressFactory<'_>,
) -> Result<crate::emulation::EmulatorRecord> {
    let step3 = set.set.step3.as_ref().with_context(|| format!("{} has no [step3] section saying how to train the emulator", set.path.display()))?;
    let (mut model, record, component) = load_model(runtime, registry.as_deref(), set)?;
    let component = component.expect("validated: [step3] needs a component model");
    if let Some(reg) = registry.as_deref_mut() {
        register_component(reg, &component, "forward-model", model.info(), &record.config)?;
    }
    let dt = set.set.experiment.dt.unwrap_or(model.info().default_dt);
    let (_, rec) = crate::emulation::step3(registry, model.as_mut(), &record.blake3, &record.config, step3, dt, &set.name, progress)?;
    Ok(rec)
}
