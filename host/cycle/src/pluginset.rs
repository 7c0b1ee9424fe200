//! The plugin-set file: which plugins, configured how, in which experiment,
//! assimilated by which methods. A TOML document (see docs/plugin-sets.md, "The
//! plugin-set format"); relative plugin paths are resolved against the
//! file's own directory.

use anyhow::{bail, Context, Result};
use geohost_da::Method;
use geohost_sandbox::Limits;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSet {
    /// A name for the run (defaults to the file stem).
    pub name: Option<String>,
    /// The data-tier transition the run belongs to (L0_L1 … L3_L4).
    pub transition: Option<String>,
    pub model: PluginRef,
    pub observations: PluginRef,
    pub experiment: Experiment,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub output: OutputSpec,
    #[serde(rename = "method", default)]
    pub methods: Vec<MethodSpec>,
    /// Step 3: train an emulator of `[model]` (after the methods).
    pub step3: Option<crate::emulation::Step3Spec>,
    /// Step 4: run methods again with the step-3 emulator as the model.
    pub step4: Option<crate::emulation::Step4Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// Path to the component (`.wasm`), relative to the plugin-set file.
    pub plugin: Option<PathBuf>,
    /// Or a registered component: `blake3:…` (or a unique prefix) or
    /// `NAME[@VERSION]`; its bytes are re-hashed when loaded.
    pub artifact: Option<String>,
    /// Or (for `[model]`) a registered emulator (role `emulator`).
    pub emulator: Option<String>,
    /// Passed to the plugin's `init` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
    /// More config from a file (JSON, or TOML by its `.toml` extension;
    /// relative to the plugin-set), merged into `config` when the set is
    /// loaded: for data too large to write inline, or not redistributable
    /// with the set (e.g. what scripts/fetch-sbibm.sh extracts). A key in
    /// both is an error.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Model time step (default: the model's own `default-dt`).
    pub dt: Option<f64>,
    #[serde(default = "one")]
    pub steps_per_obs: usize,
    /// Number of observation cycles.
    pub cycles: usize,
    /// Cycles at times ≤ burn_in are left out of time averages.
    #[serde(default)]
    pub burn_in: f64,
    #[serde(default)]
    pub seed: u64,
    /// Mean of the initial distribution: a list, a constant, or "eK" for
    /// the K-th unit vector.
    pub x0: X0,
    /// Variance of the initial distribution N(x0, x0_variance·I).
    pub x0_variance: f64,
    /// Start from the model's own climate instead: a trajectory from a
    /// draw of N(x0, x0_variance·I), run for `time`, then `samples` states
    /// `every` time units apart that the ensembles are drawn from; the
    /// truth starts after them (DAPPER's sample file, made here).
    pub spinup: Option<geohost_da::twin::SpinUp>,
}

/// What the run writes beyond the documented defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Keep the analysis ensemble every k-th cycle (k = 0: never), for
    /// scores that need members (CRPS, rank histogram, spread/skill).
    #[serde(default)]
    pub members_every: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum X0 {
    Constant(f64),
    Vector(Vec<f64>),
    Named(String),
}

impl X0 {
    /// The initial mean for a state of `size`.
    pub fn resolve(&self, size: usize) -> Result<Vec<f64>> {
        match self {
            X0::Constant(c) => Ok(vec![*c; size]),
            X0::Vector(v) if v.len() == size => Ok(v.clone()),
            X0::Vector(v) => bail!("experiment.x0 has {} values, but the model state has {size}", v.len()),
            X0::Named(name) => match name.strip_prefix('e').and_then(|k| k.parse::<usize>().ok()) {
                Some(k) if k < size => {
                    let mut x = vec![0.0; size];
                    x[k] = 1.0;
                    Ok(x)
                }
                _ => bail!("experiment.x0 = \"{name}\": expected a list of {size} numbers, a number, or \"eK\" (unit vector, K < {size})"),
            },
        }
    }
}

/// One `[[method]]` table: `method = "…"` (a name of
/// `geohost_da::method::METHODS`) and that method's parameters.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct MethodSpec {
    pub method: String,
    #[serde(flatten)]
    pub params: toml::Table,
}

impl MethodSpec {
    /// The method with its parameters checked; `index` is the 1-based
    /// position in the file, for messages.
    pub fn validate(&self, index: usize) -> Result<Method> {
        geohost_da::parse_method(&self.method, &self.params, &format!("[[method]] #{index} (method = \"{}\")", self.method))
    }
}

/// Where a plugin comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    Artifact(String),
    /// A registered emulator's weights.
    Emulator(String),
}

impl PluginRef {
    /// Merge `config_file` (resolved against `dir`) into `config`.
    pub(crate) fn merge_config_file(&mut self, table: &str, dir: &Path) -> Result<()> {
        let Some(file) = self.config_file.take() else { return Ok(()) };
        let path = dir.join(&file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("[{table}] config_file {}: cannot read it", path.display()))?;
        let extra: toml::Table = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).with_context(|| format!("[{table}] config_file {}: not a TOML table", path.display()))?
        } else {
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("[{table}] config_file {}: not JSON (name a TOML file *.toml)", path.display()))?;
            toml::Table::try_from(json).with_context(|| {
                format!("[{table}] config_file {}: not a JSON object of numbers, strings, booleans, arrays and objects (no nulls)", path.display())
            })?
        };
        for (key, value) in extra {
            if self.config.contains_key(&key) {
                bail!("[{table}] config_file {}: key `{key}` is also in `config`; keep it in one place", path.display());
            }
            self.config.insert(key, value);
        }
        Ok(())
    }

    pub(crate) fn source(&self, table: &str, dir: &Path) -> Result<Source> {
        match (&self.plugin, &self.artifact, &self.emulator) {
            (Some(p), None, None) => Ok(Source::Path(dir.join(p))),
            (None, Some(a), None) => Ok(Source::Artifact(a.clone())),
            (None, None, Some(e)) if table == "model" => Ok(Source::Emulator(e.clone())),
            _ if table == "model" => {
                bail!("[model] needs exactly one of `plugin` (a path), `artifact` (a registry id or name@version) or `emulator` (a registered emulator)")
            }
            _ => bail!("[{table}] needs exactly one of `plugin` (a path) or `artifact` (a registry id or name@version)"),
        }
    }
}

/// A parsed, validated plugin-set with paths resolved.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    /// The file's bytes, as registered.
    pub bytes: Vec<u8>,
    pub name: String,
    pub set: PluginSet,
    pub methods: Vec<Method>,
    pub model: Source,
    pub obs: Source,
    /// A hidden experiment's secret seed: when set, it replaces
    /// `experiment.seed` for the twin and the methods (see `run::run`).
    pub secret: Option<[u8; 32]>,
}

impl PluginSet {
    /// Read and validate a plugin-set file. Errors name the file and field.
    pub fn load(path: &Path) -> Result<Loaded> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read plugin-set file {}", path.display()))?;
        PluginSet::parse(path, text)
    }

    /// Parse and validate plugin-set text; `path` names it in errors and
    /// resolves relative plugin paths.
    pub fn parse(path: &Path, text: String) -> Result<Loaded> {
        let mut set: PluginSet = toml::from_str(&text).with_context(|| format!("invalid plugin-set file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid plugin-set file {}: {msg}", path.display());
        if set.methods.is_empty() {
            return Err(fail("no [[method]] tables: name at least one DA method".into()));
        }
        let methods = set.methods.iter().enumerate().map(|(i, m)| m.validate(i + 1)).collect::<Result<Vec<_>>>().map_err(|e| fail(format!("{e:#}")))?;
        let e = &set.experiment;
        if e.cycles == 0 || e.steps_per_obs == 0 {
            return Err(fail("experiment.cycles and experiment.steps_per_obs must be at least 1".into()));
        }
        if let Some(dt) = e.dt {
            if !(dt.is_finite() && dt > 0.0) {
                return Err(fail(format!("experiment.dt must be a positive number, got {dt}")));
            }
        }
        if !(e.x0_variance.is_finite() && e.x0_variance >= 0.0) {
            return Err(fail(format!("experiment.x0_variance must be a non-negative number, got {}", e.x0_variance)));
        }
        if let Some(spin_up) = &e.spinup {
            spin_up.validate().map_err(fail)?;
        }
        set.limits.validate().map_err(|e| fail(format!("{e:#}")))?;
        check_transition(set.transition.as_deref()).map_err(fail)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        set.model.merge_config_file("model", dir).map_err(|e| fail(format!("{e:#}")))?;
        set.observations.merge_config_file("observations", dir).map_err(|e| fail(format!("{e:#}")))?;
        let model = set.model.source("model", dir).map_err(|e| fail(format!("{e:#}")))?;
        let obs = set.observations.source("observations", dir).map_err(|e| fail(format!("{e:#}")))?;
        if let Some(step3) = &set.step3 {
            step3.validate().map_err(|e| fail(format!("{e:#}")))?;
            if matches!(model, Source::Emulator(_)) {
                return Err(fail("[step3] trains an emulator of [model], so [model] must be a component, not an emulator".into()));
            }
        }
        if let Some(step4) = &set.step4 {
            if set.step3.is_none() {
                return Err(fail("[step4] runs methods through the step-3 emulator: add a [step3] section".into()));
            }
            crate::emulation::step4_methods(step4, &methods).map_err(|e| fail(format!("{e:#}")))?;
        }
        let name = set.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into()));
        Ok(Loaded { path: path.into(), bytes: text.into_bytes(), name, model, obs, methods, set, secret: None })
    }
}

/// A plugin-set's `transition`, when given, must be one of the schema's.
pub(crate) fn check_transition(transition: Option<&str>) -> std::result::Result<(), String> {
    match transition {
        Some(t) if !geohost_registry::schema::L_TRANSITIONS.contains(&t) => {
            Err(format!("transition `{t}` is not one of {}", geohost_registry::schema::L_TRANSITIONS.join(", ")))
        }
        _ => Ok(()),
    }
}
