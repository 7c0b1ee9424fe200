//! The plugin-set file: which plugins, configured how, in which experiment,
//! assimilated by which methods. A TOML document (see README.md, "The
//! plugin-set format"); relative plugin paths are resolved against the
//! file's own directory.

use crate::da::Method;
use crate::sandbox::Limits;
use anyhow::{bail, Context, Result};
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
    pub step3: Option<crate::emulate::Step3Spec>,
    /// Step 4: run methods again with the step-3 emulator as the model.
    pub step4: Option<crate::emulate::Step4Spec>,
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

/// One `[[method]]` table; validated into a [`Method`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// climatology | oi | 3dvar | enkf | etkf | letkf
    pub method: String,
    #[serde(rename = "N")]
    pub n: Option<usize>,
    pub infl: Option<f64>,
    pub rot: Option<bool>,
    pub loc_rad: Option<f64>,
    #[serde(rename = "xB")]
    pub xb: Option<f64>,
}

impl MethodSpec {
    /// Check the parameters this kind of method takes; `index` is the
    /// 1-based position in the file, for messages.
    pub fn validate(&self, index: usize) -> Result<Method> {
        let at = || format!("[[method]] #{index} (method = \"{}\")", self.method);
        let unused = |names: &[(&str, bool)]| -> Result<()> {
            match names.iter().find(|(_, set)| *set) {
                Some((name, _)) => bail!("{}: `{name}` does not apply to this method", at()),
                None => Ok(()),
            }
        };
        let ensemble = || -> Result<(usize, f64, bool)> {
            let n = self.n.with_context(|| format!("{}: `N` (ensemble size) is required", at()))?;
            if n < 2 {
                bail!("{}: `N` must be at least 2, got {n}", at());
            }
            let infl = self.infl.unwrap_or(1.0);
            if !(infl.is_finite() && infl > 0.0) {
                bail!("{}: `infl` must be a positive number, got {infl}", at());
            }
            Ok((n, infl, self.rot.unwrap_or(false)))
        };
        let ens_only = [("N", self.n.is_some()), ("infl", self.infl.is_some()), ("rot", self.rot.is_some()), ("loc_rad", self.loc_rad.is_some())];
        match self.method.to_ascii_lowercase().as_str() {
            "climatology" => {
                unused(&ens_only)?;
                unused(&[("xB", self.xb.is_some())])?;
                Ok(Method::Climatology)
            }
            "oi" | "optinterp" => {
                unused(&ens_only)?;
                unused(&[("xB", self.xb.is_some())])?;
                Ok(Method::OptInterp)
            }
            "3dvar" | "var3d" => {
                unused(&ens_only)?;
                let xb = self.xb.unwrap_or(1.0);
                if !(xb.is_finite() && xb > 0.0) {
                    bail!("{}: `xB` must be a positive number, got {xb}", at());
                }
                Ok(Method::Var3D { xb })
            }
            kind @ ("enkf" | "etkf") => {
                unused(&[("loc_rad", self.loc_rad.is_some()), ("xB", self.xb.is_some())])?;
                let (n, infl, rot) = ensemble()?;
                Ok(if kind == "enkf" { Method::EnKF { n, infl, rot } } else { Method::ETKF { n, infl, rot } })
            }
            "letkf" => {
                unused(&[("xB", self.xb.is_some())])?;
                let (n, infl, rot) = ensemble()?;
                let loc_rad = self.loc_rad.with_context(|| format!("{}: `loc_rad` (localisation radius, grid units) is required", at()))?;
                if !(loc_rad > 0.0) {
                    bail!("{}: `loc_rad` must be positive (use inf for no localisation), got {loc_rad}", at());
                }
                Ok(Method::LETKF { n, infl, rot, loc_rad })
            }
            other => bail!("[[method]] #{index}: unknown method \"{other}\"; choose climatology, oi, 3dvar, enkf, etkf or letkf"),
        }
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
}

impl PluginSet {
    /// Read and validate a plugin-set file. Errors name the file and field.
    pub fn load(path: &Path) -> Result<Loaded> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read plugin-set file {}", path.display()))?;
        let set: PluginSet = toml::from_str(&text).with_context(|| format!("invalid plugin-set file {}", path.display()))?;
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
        set.limits.validate().map_err(|e| fail(format!("{e:#}")))?;
        if let Some(t) = &set.transition {
            if !crate::registry::schema::L_TRANSITIONS.contains(&t.as_str()) {
                return Err(fail(format!("transition `{t}` is not one of {}", crate::registry::schema::L_TRANSITIONS.join(", "))));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
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
            crate::emulate::step4_methods(step4, &methods).map_err(|e| fail(format!("{e:#}")))?;
        }
        let name = set.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into()));
        Ok(Loaded { path: path.into(), bytes: text.into_bytes(), name, model, obs, methods, set })
    }
}
