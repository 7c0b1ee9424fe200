//! `geohost run`: load the plugins of a plugin-set into the sandbox, run
//! the twin experiment, assimilate with every method, collect the results.

use crate::da::stats::Summary;
use crate::da::twin::{self, Chronology, Prior, Twin};
use crate::da::{ensemble::Trajectory, Method};
use crate::model::{check_pair, ForwardModel, ModelInfo, ObsInfo, ObsOperator};
use crate::pluginset::{Loaded, Source};
use crate::registry::{NewArtifact, Registry};
use crate::sandbox::{config_json, LoadedComponent, Runtime, WasmForward, WasmObs, World};
use anyhow::{Context, Result};
use nalgebra::DVector;
use rand::SeedableRng;
use serde::Serialize;
use std::time::Instant;

/// One method's outcome.
pub struct MethodRun {
    pub method: Method,
    pub summary: Summary,
    pub ms_per_cycle: f64,
    pub trajectory: Trajectory,
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
}

impl MethodRun {
    pub fn row(&self) -> Row<'_> {
        Row { label: self.method.label(), method: &self.method, summary: self.summary, ms_per_cycle: self.ms_per_cycle }
    }
}

/// A plugin the run loaded, for the record.
#[derive(Serialize, Clone)]
pub struct PluginRecord {
    pub role: &'static str,
    pub path: String,
    pub blake3: String,
    pub size: usize,
    pub config: serde_json::Value,
}

impl PluginRecord {
    fn new(role: &'static str, loaded: &LoadedComponent, config: &str) -> Self {
        PluginRecord {
            role,
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
}

/// Per-method progress callbacks: `start(label, total)` returns the tick
/// function for that method.
pub type ProgressFactory<'a> = dyn FnMut(&str, usize) -> Box<dyn FnMut(usize)> + 'a;

/// Order-independent seed for a method: the run seed mixed with the label.
fn method_seed(seed: u64, method: &Method) -> u64 {
    let h = blake3::hash(method.label().as_bytes());
    seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Load a plugin from its path, or from the registry by id or name (its
/// bytes re-hashed on the way).
fn load_plugin(runtime: &Runtime, registry: Option<&Registry>, label: &str, source: &Source, world: World) -> Result<LoadedComponent> {
    match source {
        Source::Path(path) => Ok(runtime.load(label, path, world)?),
        Source::Artifact(reference) => {
            let registry =
                registry.with_context(|| format!("plugin `{label}` names registry artifact `{reference}`, but no registry is in use (drop --no-registry)"))?;
            let id = registry.resolve(reference).with_context(|| format!("plugin `{label}`"))?;
            let bytes = registry.read(&id).with_context(|| format!("plugin `{label}`"))?;
            Ok(runtime.load_bytes(label, std::path::Path::new(&id), &bytes, world)?)
        }
    }
}

/// Run a loaded plugin-set. `cycles` overrides the file's cycle count;
/// `registry` resolves plugins named by artifact.
pub fn run(set: &Loaded, runtime: &Runtime, registry: Option<&Registry>, cycles: Option<usize>, progress: &mut ProgressFactory<'_>) -> Result<RunOutput> {
    let model_component = load_plugin(runtime, registry, "model", &set.model, World::ForwardModel).context("loading the forward model")?;
    let model_config = config_json(&set.set.model.config);
    let mut model = WasmForward::new(runtime, &model_component, &model_config)?;
    let m = model.info().state_size;

    // The observation operator learns the state size from the model unless
    // its config says otherwise (then check_pair catches a mismatch).
    let mut obs_table = set.set.observations.config.clone();
    obs_table.entry("state_size").or_insert(toml::Value::Integer(m as i64));
    let obs_config = config_json(&obs_table);
    let obs_component = load_plugin(runtime, registry, "observations", &set.obs, World::ObsOperator).context("loading the observation operator")?;
    let mut obs = WasmObs::new(runtime, &obs_component, &obs_config)?;
    check_pair(model.info(), obs.info())?;

    let e = &set.set.experiment;
    let chronology =
        Chronology { dt: e.dt.unwrap_or(model.info().default_dt), steps_per_obs: e.steps_per_obs, cycles: cycles.unwrap_or(e.cycles), burn_in: e.burn_in };
    let prior = Prior { mean: DVector::from_vec(e.x0.resolve(m)?), variance: e.x0_variance };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(e.seed);
    let twin = {
        let mut tick = progress("truth + observations", chronology.cycles);
        let t = twin::simulate(&mut model, &mut obs, chronology, prior, &mut rng)?;
        tick(chronology.cycles - 1);
        t
    };

    let record = crate::da::ensemble::Record { members_every: set.set.output.members_every };
    let mut methods = Vec::new();
    for method in &set.methods {
        let mut tick = progress(&method.label(), chronology.cycles);
        let start = Instant::now();
        let trajectory =
            method.run(&twin, &mut model, &mut obs, method_seed(e.seed, method), record, &mut *tick).with_context(|| format!("method {}", method.label()))?;
        let ms_per_cycle = start.elapsed().as_secs_f64() * 1e3 / chronology.cycles as f64;
        let summary = trajectory.stats.summarize(&twin.times, chronology.burn_in);
        methods.push(MethodRun { method: method.clone(), summary, ms_per_cycle, trajectory });
    }
    let plugins = vec![PluginRecord::new("model", &model_component, &model_config), PluginRecord::new("observations", &obs_component, &obs_config)];
    Ok(RunOutput { model: model.info().clone(), obs: obs.info().clone(), plugins, twin, methods, cycles: chronology.cycles })
}

/// What registering a run did.
pub struct Registration {
    /// (artifact id, method label) of each method's output, in method order.
    pub outputs: Vec<(String, String)>,
    pub new_artifacts: usize,
    pub total_artifacts: usize,
    /// `Some(true)` when an earlier run had identical inputs and produced
    /// identical outputs, `Some(false)` when its outputs differed.
    pub identical_to_earlier: Option<bool>,
    pub input_key: String,
}

fn method_role(method: &Method) -> &'static str {
    match method {
        Method::Climatology | Method::OptInterp | Method::Var3D { .. } => "baseline",
        Method::EnKF { .. } | Method::ETKF { .. } | Method::LETKF { .. } => "oracle",
    }
}

/// Record a finished run in the registry: both plugins (with their
/// self-descriptions), the plugin-set file, the truth/observations file and
/// each method's output file, with `derived_from` edges to the plugins and
/// `produced_by` edges to the plugin-set. `files` are what
/// [`crate::output::write`] wrote.
pub fn register(registry: &mut Registry, set: &Loaded, result: &RunOutput, files: &crate::output::Written) -> Result<Registration> {
    let mut added = Vec::new();
    let mut add = |registry: &mut Registry, bytes: &[u8], a: NewArtifact| -> Result<String> {
        let (id, existed) = registry.add(bytes, &a)?;
        added.push(existed);
        Ok(id)
    };
    // Both plugins, with the self-description they gave for this config.
    let described = [
        ("forward-model", serde_json::to_value(&result.model)?, &result.model.name, &result.model.version),
        ("obs-operator", serde_json::to_value(&result.obs)?, &result.obs.name, &result.obs.version),
    ];
    let mut plugin_ids = Vec::new();
    for (record, (world, info, name, version)) in result.plugins.iter().zip(described) {
        let bytes = std::fs::read(&record.path).or_else(|_| registry.read(&record.blake3))?;
        let id = add(
            registry,
            &bytes,
            NewArtifact {
                kind: "plugin".into(),
                name: name.clone(),
                version: Some(version.clone()),
                media_type: "application/wasm".into(),
                step: Some(1),
                tags: vec![world.into()],
                metadata: serde_json::json!({ "world": world, "description": info, "config": record.config }),
                ..Default::default()
            },
        )?;
        anyhow::ensure!(id == record.blake3, "plugin file {} changed on disk during the run; not registering the run", record.path);
        plugin_ids.push(id);
    }
    let (model_id, obs_id) = (&plugin_ids[0], &plugin_ids[1]);
    let set_id = add(
        registry,
        &set.bytes,
        NewArtifact {
            kind: "plugin-set".into(),
            name: set.name.clone(),
            media_type: "application/toml".into(),
            l_transition: set.set.transition.clone(),
            metadata: serde_json::json!({ "path": set.path.display().to_string() }),
            ..Default::default()
        },
    )?;

    let input_key = crate::registry::artifact_id(
        serde_json::json!({
            "model": model_id,
            "observations": obs_id,
            "plugin_set": set_id,
            "cycles": result.cycles,
            "methods": result.methods.iter().map(|m| m.method.label()).collect::<Vec<_>>(),
        })
        .to_string()
        .as_bytes(),
    );
    let earlier = registry.find_run(&input_key)?;

    let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {} to register it", path.display()));
    let truth_id = add(
        registry,
        &read(&files.truth)?,
        NewArtifact {
            kind: "dataset".into(),
            name: format!("{}/truth", set.name),
            media_type: "application/x-netcdf".into(),
            step: Some(1),
            l_transition: set.set.transition.clone(),
            tags: vec!["truth".into(), "observations".into()],
            ..Default::default()
        },
    )?;
    let mut output_ids = vec![truth_id];
    let mut outputs = Vec::new();
    for (method_run, path) in result.methods.iter().zip(&files.methods) {
        let label = method_run.method.label();
        let mut summary = serde_json::to_value(method_run.summary)?;
        summary["method"] = serde_json::to_value(&method_run.method)?;
        let id = add(
            registry,
            &read(path)?,
            NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/{}", set.name, label),
                media_type: "application/x-netcdf".into(),
                role: Some(method_role(&method_run.method).into()),
                step: Some(2),
                l_transition: set.set.transition.clone(),
                tags: vec![serde_json::to_value(&method_run.method)?["method"].as_str().unwrap_or_default().to_string()],
                metadata: summary,
                ..Default::default()
            },
        )?;
        output_ids.push(id.clone());
        outputs.push((id, label));
    }
    for id in &output_ids {
        registry.link(id, model_id, "derived_from")?;
        registry.link(id, obs_id, "derived_from")?;
        registry.link(id, &set_id, "produced_by")?;
    }
    let identical_to_earlier = earlier.map(|e| e == output_ids);
    registry.record_run(&input_key, &set_id, &output_ids)?;
    Ok(Registration {
        outputs,
        new_artifacts: added.iter().filter(|existed| !**existed).count(),
        total_artifacts: added.len(),
        identical_to_earlier,
        input_key,
    })
}
