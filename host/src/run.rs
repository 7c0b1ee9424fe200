//! `geohost run`: load the plugins of a plugin-set into the sandbox, run
//! the twin experiment, assimilate with every method, collect the results.

use crate::da::stats::Summary;
use crate::da::twin::{self, Chronology, Prior, Twin};
use crate::da::{ensemble::Trajectory, Method};
use crate::model::{check_pair, ForwardModel, ModelInfo, ObsInfo, ObsOperator};
use crate::pluginset::Loaded;
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
}

/// Per-method progress callbacks: `start(label, total)` returns the tick
/// function for that method.
pub type ProgressFactory<'a> = dyn FnMut(&str, usize) -> Box<dyn FnMut(usize)> + 'a;

/// Order-independent seed for a method: the run seed mixed with the label.
fn method_seed(seed: u64, method: &Method) -> u64 {
    let h = blake3::hash(method.label().as_bytes());
    seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Run a loaded plugin-set. `cycles` overrides the file's cycle count.
pub fn run(set: &Loaded, runtime: &Runtime, cycles: Option<usize>, progress: &mut ProgressFactory<'_>) -> Result<RunOutput> {
    let model_component = runtime.load("model", &set.model_path, World::ForwardModel).context("loading the forward model")?;
    let model_config = config_json(&set.set.model.config);
    let mut model = WasmForward::new(runtime, &model_component, &model_config)?;
    let m = model.info().state_size;

    // The observation operator learns the state size from the model unless
    // its config says otherwise (then check_pair catches a mismatch).
    let mut obs_table = set.set.observations.config.clone();
    obs_table.entry("state_size").or_insert(toml::Value::Integer(m as i64));
    let obs_config = config_json(&obs_table);
    let obs_component = runtime.load("observations", &set.obs_path, World::ObsOperator).context("loading the observation operator")?;
    let mut obs = WasmObs::new(runtime, &obs_component, &obs_config)?;
    check_pair(model.info(), obs.info())?;

    let e = &set.set.experiment;
    let chronology = Chronology {
        dt: e.dt.unwrap_or(model.info().default_dt),
        steps_per_obs: e.steps_per_obs,
        cycles: cycles.unwrap_or(e.cycles),
        burn_in: e.burn_in,
    };
    let prior = Prior { mean: DVector::from_vec(e.x0.resolve(m)?), variance: e.x0_variance };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(e.seed);
    let twin = {
        let mut tick = progress("truth + observations", chronology.cycles);
        let t = twin::simulate(&mut model, &mut obs, chronology, prior, &mut rng)?;
        tick(chronology.cycles - 1);
        t
    };

    let mut methods = Vec::new();
    for method in &set.methods {
        let mut tick = progress(&method.label(), chronology.cycles);
        let start = Instant::now();
        let trajectory = method
            .run(&twin, &mut model, &mut obs, method_seed(e.seed, method), &mut *tick)
            .with_context(|| format!("method {}", method.label()))?;
        let ms_per_cycle = start.elapsed().as_secs_f64() * 1e3 / chronology.cycles as f64;
        let summary = trajectory.stats.summarize(&twin.times, chronology.burn_in);
        methods.push(MethodRun { method: method.clone(), summary, ms_per_cycle, trajectory });
    }
    let plugins = vec![PluginRecord::new("model", &model_component, &model_config), PluginRecord::new("observations", &obs_component, &obs_config)];
    Ok(RunOutput { model: model.info().clone(), obs: obs.info().clone(), plugins, twin, methods })
}
