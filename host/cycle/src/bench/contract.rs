//! The contract file: a TOML document declaring what a benchmark measures
//! (docs/contracts.md documents every field).
//!
//! Parsing is strict (unknown fields are errors) and [`Contract::load`]
//! validates every value, naming the field and what is expected. A
//! cycle-stage contract (one with `target_step`) must also declare its
//! oracle and include the metrics its target step requires
//! ([`required_metrics`]); that last check needs the metric components'
//! self-descriptions, so it runs at pre-registration ([`super::prereg`]).

use crate::pluginset::MethodSpec;
use anyhow::{bail, Context, Result};
use geohost_registry::schema::L_TRANSITIONS;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Suffix of metrics computed against the oracle instead of the truth.
pub const VS_ORACLE: &str = "_vs_oracle";

/// Oracle strengths, strongest first.
pub const ORACLE_STRENGTHS: &[&str] = &["physics_derived", "classical_method", "human_labels", "heuristic"];

/// Oracle strengths that give a warning (recorded in every report).
const WEAK_ORACLES: &[&str] = &["human_labels", "heuristic"];

/// The metrics a contract for `target_step` must report (the design:
/// accuracy and ensemble calibration for the oracle; error against the
/// oracle and spectral agreement for an emulator; posterior coverage for
/// emulator-based and amortized inference).
pub fn required_metrics(target_step: u8) -> &'static [&'static str] {
    match target_step {
        2 => &["rmse", "spread_skill"],
        3 => &["one_step_rmse", "psd_error"],
        4 | 5 => &["rmse", "coverage"],
        _ => &[],
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContractFile {
    pub name: String,
    pub version: String,
    /// What is being predicted from what, in a sentence.
    pub task: String,
    pub target_step: Option<u8>,
    pub oracle_step: Option<u8>,
    pub l_transition: Option<String>,
    /// The oracle artifact: `blake3:…` or a registry name[@version].
    pub oracle: Option<String>,
    pub oracle_strength: Option<String>,
    pub carriers: Carriers,
    pub reference: ReferenceSpec,
    pub splits: Splits,
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    #[serde(default)]
    pub baselines: Vec<BaselineSpec>,
    #[serde(default)]
    pub failure_modes: Vec<FailureMode>,
    /// The metric that ranks candidates and baselines (default: the first
    /// metric of the first `[[metrics]]` entry).
    pub primary_metric: Option<String>,
    /// Evaluation on experiments whose seeds only the host knows: a
    /// hidden contract scores submitted components, never results files.
    pub hidden: Option<HiddenSpec>,
    /// What a submitted component may consume (`geohost bench submit`).
    #[serde(default)]
    pub budget: Budget,
    /// The publishers whose plugins the contract accepts: minisign public
    /// keys (a `.pub` file relative to the contract, or the key's base64
    /// line). When set, every plugin the contract uses (its metric
    /// components and the reference's model and observation operator) must
    /// have been imported from a bundle signed by one of them.
    #[serde(default)]
    pub publishers: Vec<String>,
}

/// `[hidden]`: the secret evaluation experiments. Pre-registration draws
/// one 256-bit seed per experiment from the OS and freezes only their
/// commitments in the contract's record (see `super::hidden`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HiddenSpec {
    /// How many hidden experiments every submission runs on.
    pub experiments: usize,
    /// Observation cycles of each (default: the reference plugin-set's).
    pub cycles: Option<usize>,
    /// Anti-probing: hidden scorings one submitter may have per 24 hours
    /// (`bench submit --submitter NAME` then required; see `super::probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scorings_per_day: Option<u32>,
    /// Anti-probing: the leaderboard publishes hidden scores rounded to
    /// this until the seeds are revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_precision: Option<f64>,
}

/// Most hidden experiments a contract may ask for.
pub const MAX_HIDDEN_EXPERIMENTS: usize = 64;

/// `[budget]`: the resources of one submission, all runs together.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Fuel (≈ wasm instructions) per call of the component.
    pub fuel_per_call: u64,
    /// Fuel of all its calls together, public and hidden experiments.
    pub fuel_total: u64,
    /// Linear memory of the component, in MiB.
    pub memory_mib: u64,
    /// Wall-clock deadline per call, in milliseconds.
    pub deadline_ms: u64,
    /// Largest component file accepted, in MiB (checked before reading).
    pub max_component_mib: u64,
    /// Address space of the process that compiles the component, in MiB.
    pub compile_memory_mib: u64,
    /// CPU time of the process that compiles the component, in seconds.
    pub compile_cpu_s: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            fuel_per_call: 2_000_000_000,
            fuel_total: 1_000_000_000_000,
            memory_mib: 256,
            deadline_ms: 10_000,
            max_component_mib: 32,
            compile_memory_mib: 4096,
            compile_cpu_s: 60,
        }
    }
}

impl Budget {
    fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("fuel_per_call", self.fuel_per_call),
            ("fuel_total", self.fuel_total),
            ("memory_mib", self.memory_mib),
            ("deadline_ms", self.deadline_ms),
            ("max_component_mib", self.max_component_mib),
            ("compile_memory_mib", self.compile_memory_mib),
            ("compile_cpu_s", self.compile_cpu_s),
        ] {
            if value == 0 {
                bail!("field `budget.{field}` must be positive");
            }
        }
        if self.compile_memory_mib < 512 {
            bail!("field `budget.compile_memory_mib`: at least 512 MiB (the compiling process itself needs about 300), got {}", self.compile_memory_mib);
        }
        Ok(())
    }

    /// The sandbox limits of a submission's calls.
    pub fn limits(&self) -> geohost_sandbox::Limits {
        geohost_sandbox::Limits {
            fuel: self.fuel_per_call,
            deadline_ms: self.deadline_ms,
            memory_mib: self.memory_mib,
            nan_canonicalization: true,
            ..Default::default()
        }
    }

    pub fn compile_limits(&self) -> geohost_sandbox::isolate::CompileLimits {
        geohost_sandbox::isolate::CompileLimits { memory_mib: self.compile_memory_mib, cpu_s: self.compile_cpu_s }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Carriers {
    pub input: Carrier,
    pub output: Carrier,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    /// The variable (e.g. `obs`, `analysis_mean`).
    pub name: String,
    /// Shape of one case (one time), e.g. `[40]`.
    pub shape: Vec<usize>,
    pub units: String,
}

/// Where the reference (truth) data comes from: exactly one of the two.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSpec {
    /// A plugin-set whose twin experiment generates the truth (its
    /// plugins, configs, experiment and seed; its methods are ignored).
    pub plugin_set: Option<PathBuf>,
    /// A registered `truth.nc`: `blake3:…` or a registry name.
    pub artifact: Option<String>,
    /// Or free forecasts of a plugin-set's model (for emulator contracts):
    /// `{ plugin_set, cases, spacing, leads }`.
    pub forecasts: Option<super::forecast::ForecastSpec>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Cases with time ≤ this are not scored (spin-up, burn-in).
    #[serde(default)]
    pub evaluate_after: f64,
    /// Cases with time > this are not scored (default: none).
    pub evaluate_until: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// Path to a `metric` component, relative to the contract file.
    pub component: Option<PathBuf>,
    /// Or a registered component: `blake3:…` or a registry name.
    pub artifact: Option<String>,
    /// Passed to the component's `init` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
    /// Scored on the kept analysis ensembles (members needed) rather than
    /// on every case's point prediction.
    #[serde(default)]
    pub ensemble: bool,
    /// What the prediction is compared with: `truth` (the reference data,
    /// the default) or `oracle` (the oracle output's analysis mean; the
    /// metrics are then reported as `<name>_vs_oracle`).
    #[serde(default)]
    pub against: Against,
    /// Direction of metrics the host does not know (`lower`, `higher`,
    /// `zero`, `one`, `flat`, `none`), by metric name.
    #[serde(default)]
    pub goals: std::collections::BTreeMap<String, String>,
}

/// What a `[[metrics]]` entry compares the prediction with.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    #[default]
    Truth,
    Oracle,
}

/// A baseline: a DA method run on the reference experiment (with the
/// plugin-set's `[[method]]` fields), or a registered method output.
/// (Unknown fields land in `params`, which the method refuses by name.)
#[derive(Debug, Deserialize, Serialize)]
pub struct BaselineSpec {
    /// A registered output: `blake3:…` or a registry name.
    pub artifact: Option<String>,
    pub method: Option<String>,
    /// The method's parameters (`N`, `infl`, …), as in `[[method]]`.
    #[serde(flatten)]
    pub params: toml::Table,
}

impl BaselineSpec {
    /// The method, as a plugin-set `[[method]]` table would give it.
    pub fn method_spec(&self) -> Option<MethodSpec> {
        let method = self.method.clone()?;
        Some(MethodSpec { method, params: self.params.clone() })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailureMode {
    /// What goes wrong, in words.
    pub text: String,
    /// How to detect it, where that is expressible.
    pub check: Option<Check>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Check {
    /// `"finite"`: no NaN or infinity in the prediction.
    Named(String),
    /// A scalar metric within bounds and/or better than a baseline.
    Metric {
        metric: String,
        min: Option<f64>,
        max: Option<f64>,
        /// The label of a baseline the metric must beat (by its goal).
        better_than: Option<String>,
        /// At most this multiple of the oracle's value (e.g. 1.15: within
        /// 15% of the oracle).
        max_ratio_to_oracle: Option<f64>,
    },
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Lower,
    Higher,
    /// Closer to 0 is better (e.g. bias).
    Zero,
    /// Closer to 1 is better (e.g. spread/skill).
    One,
    /// A histogram: flatter (closer to uniform) is better.
    Flat,
    /// No direction.
    None,
}

impl Goal {
    /// The goal of a metric the host knows, by name.
    pub fn known(metric: &str) -> Goal {
        match metric {
            "rmse" | "mae" | "crps" | "crps_fair" | "energy_score" | "psd_error" | "one_step_rmse" | "rmse_by_lead" => Goal::Lower,
            "bias" => Goal::Zero,
            "spread_skill" => Goal::One,
            "rank_histogram" => Goal::Flat,
            "valid_time" => Goal::Higher,
            _ => Goal::None,
        }
    }

    fn parse(field: &str, s: &str) -> Result<Goal> {
        Ok(match s {
            "lower" => Goal::Lower,
            "higher" => Goal::Higher,
            "zero" => Goal::Zero,
            "one" => Goal::One,
            "flat" => Goal::Flat,
            "none" => Goal::None,
            other => bail!("field `{field}`: \"{other}\" is not a goal; expected lower, higher, zero, one, flat or none"),
        })
    }

    /// The distance from ideal that this goal minimises, for a scalar or a
    /// histogram; `None` when there is no direction.
    pub fn badness(self, value: &geohost_sandbox::MetricValue) -> Option<f64> {
        use geohost_sandbox::MetricValue::{Scalar, Vector};
        match (self, value) {
            (Goal::Lower, Scalar(x)) => Some(*x),
            // A profile (e.g. error by lead time): its mean.
            (Goal::Lower, Vector(v)) if !v.is_empty() => Some(v.iter().sum::<f64>() / v.len() as f64),
            (Goal::Higher, Scalar(x)) => Some(-*x),
            (Goal::Zero, Scalar(x)) => Some(x.abs()),
            (Goal::One, Scalar(x)) => Some((x - 1.0).abs()),
            // Total-variation distance of a (normalised) histogram from uniform.
            (Goal::Flat, Vector(h)) if !h.is_empty() => {
                let total: f64 = h.iter().sum();
                let uniform = 1.0 / h.len() as f64;
                Some(0.5 * h.iter().map(|x| (x / total - uniform).abs()).sum::<f64>())
            }
            _ => None,
        }
    }
}

/// A parsed, validated contract file.
#[derive(Debug)]
pub struct Contract {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub id: String,
    pub file: ContractFile,
    /// Goals per metric, from `[[metrics]] goals` over the known ones.
    pub goals: std::collections::BTreeMap<String, Goal>,
    /// Warnings to print and record (a weak oracle).
    pub warnings: Vec<String>,
}

impl Contract {
    /// Read, parse and validate a contract file.
    pub fn load(path: &Path) -> Result<Contract> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read contract file {}", path.display()))?;
        Contract::parse(path, bytes)
    }

    /// Parse and validate contract bytes; `path` resolves relative paths
    /// and names the file in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Contract> {
        let text = std::str::from_utf8(&bytes).with_context(|| format!("contract file {} is not UTF-8 text", path.display()))?;
        let file: ContractFile = toml::from_str(text).with_context(|| format!("invalid contract file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid contract file {}: {msg}", path.display());
        let (warnings, goals) = file.validate().map_err(|e| fail(format!("{e:#}")))?;
        let id = geohost_registry::artifact_id(&bytes);
        Ok(Contract { path: path.into(), bytes, id, file, goals, warnings })
    }

    /// The directory relative paths are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// The goal of a metric (a `_vs_oracle` metric has its base's goal).
    pub fn goal(&self, metric: &str) -> Goal {
        let base = metric.strip_suffix(VS_ORACLE).unwrap_or(metric);
        self.goals.get(metric).or_else(|| self.goals.get(base)).copied().unwrap_or_else(|| Goal::known(base))
    }

    /// The key ids of `publishers` (minisign's 16 hex digits), each with
    /// how it was given.
    pub fn publisher_keys(&self) -> Result<Vec<(String, String)>> {
        self.file
            .publishers
            .iter()
            .map(|spec| {
                let path = self.dir().join(spec);
                let given = if path.is_file() { path.display().to_string() } else { spec.clone() };
                let key = geohost_registry::signing::load_public(&given).with_context(|| format!("field `publishers`: {spec}"))?;
                Ok((geohost_registry::signing::key_id(key.keynum()), spec.clone()))
            })
            .collect()
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.file.name, self.file.version)
    }
}

impl ContractFile {
    /// Check every value; returns the warnings and the declared goals.
    fn validate(&self) -> Result<(Vec<String>, std::collections::BTreeMap<String, Goal>)> {
        let mut warnings = Vec::new();
        for (field, value) in [("name", &self.name), ("version", &self.version), ("task", &self.task)] {
            if value.trim().is_empty() {
                bail!("field `{field}` is empty; give it a value");
            }
        }
        if self.name.contains('@') || self.version.contains('@') {
            bail!("fields `name` and `version` cannot contain `@` (contracts are referred to as name@version)");
        }

        // Cycle-stage fields come as a group.
        let stage = [
            ("target_step", self.target_step.is_some()),
            ("oracle_step", self.oracle_step.is_some()),
            ("l_transition", self.l_transition.is_some()),
            ("oracle", self.oracle.is_some()),
            ("oracle_strength", self.oracle_strength.is_some()),
        ];
        if stage.iter().any(|(_, set)| *set) {
            let missing: Vec<&str> = stage.iter().filter(|(_, set)| !set).map(|(f, _)| *f).collect();
            if !missing.is_empty() {
                bail!(
                    "a cycle-stage contract declares all of target_step, oracle_step, l_transition, oracle and oracle_strength; missing: {}",
                    missing.join(", ")
                );
            }
            let (target, oracle) = (self.target_step.unwrap_or(0), self.oracle_step.unwrap_or(0));
            if !(1..=5).contains(&target) {
                bail!("field `target_step`: expected a cycle step from 1 to 5, got {target}");
            }
            if !(1..=4).contains(&oracle) || oracle > target {
                bail!("field `oracle_step`: expected a step from 1 to 4 that is not after target_step ({target}), got {oracle}");
            }
            let t = self.l_transition.as_deref().unwrap_or_default();
            if !L_TRANSITIONS.contains(&t) {
                bail!("field `l_transition`: \"{t}\" is not one of {}", L_TRANSITIONS.join(", "));
            }
            let strength = self.oracle_strength.as_deref().unwrap_or_default();
            if !ORACLE_STRENGTHS.contains(&strength) {
                bail!("field `oracle_strength`: \"{strength}\" is not one of {}", ORACLE_STRENGTHS.join(", "));
            }
            if WEAK_ORACLES.contains(&strength) {
                warnings.push(format!(
                    "weak oracle: oracle_strength = \"{strength}\"; scores against it are not ground truth, and candidates that match it still need physical-plausibility checks"
                ));
            }
            if self.oracle.as_deref().is_some_and(|o| o.trim().is_empty()) {
                bail!("field `oracle` is empty; name the oracle artifact (blake3:… or a registry name)");
            }
        }

        for (field, carrier) in [("carriers.input", &self.carriers.input), ("carriers.output", &self.carriers.output)] {
            if carrier.shape.is_empty() || carrier.shape.contains(&0) {
                bail!("field `{field}.shape`: expected a list of positive sizes (e.g. [40]), got {:?}", carrier.shape);
            }
        }
        let r = &self.reference;
        if [r.plugin_set.is_some(), r.artifact.is_some(), r.forecasts.is_some()].iter().filter(|x| **x).count() != 1 {
            bail!(
                "[reference] needs exactly one of `plugin_set` (a plugin-set that generates the truth), `artifact` (a registered truth.nc) or `forecasts` (free forecasts of a plugin-set's model)"
            );
        }
        if let Some(h) = &self.hidden {
            if !(1..=MAX_HIDDEN_EXPERIMENTS).contains(&h.experiments) {
                bail!("field `hidden.experiments`: expected 1 to {MAX_HIDDEN_EXPERIMENTS} experiments, got {}", h.experiments);
            }
            super::probing::validate(h.max_scorings_per_day, h.publish_precision)?;
            if h.cycles == Some(0) {
                bail!("field `hidden.cycles` must be at least 1");
            }
            if r.plugin_set.is_none() && r.forecasts.is_none() {
                bail!("[hidden] regenerates the reference experiment with secret seeds, so [reference] needs `plugin_set` or `forecasts`");
            }
            if r.forecasts.is_some() && h.cycles.is_some() {
                bail!("field `hidden.cycles`: the hidden experiments of a forecast reference run the plugin-set's own cycles (its initial states need them); remove it");
            }
        }
        self.budget.validate()?;
        if self.publishers.iter().any(|p| p.trim().is_empty()) {
            bail!("field `publishers`: an entry is empty; give a public key file or a minisign public key");
        }
        let s = &self.splits;
        if !s.evaluate_after.is_finite() || s.evaluate_until.is_some_and(|u| u.is_nan() || u <= s.evaluate_after) {
            bail!("[splits]: expected a finite `evaluate_after` and an `evaluate_until` after it");
        }

        if self.metrics.is_empty() {
            bail!("no [[metrics]] entries: name at least one metric component");
        }
        let mut goals = std::collections::BTreeMap::new();
        for (i, m) in self.metrics.iter().enumerate() {
            if m.component.is_some() == m.artifact.is_some() {
                bail!("[[metrics]] #{}: needs exactly one of `component` (a path) or `artifact` (a registry id or name)", i + 1);
            }
            if m.against == Against::Oracle && self.oracle.is_none() {
                bail!("[[metrics]] #{}: against = \"oracle\" needs the contract's `oracle`", i + 1);
            }
            for (metric, goal) in &m.goals {
                goals.insert(metric.clone(), Goal::parse(&format!("[[metrics]] #{} goals.{metric}", i + 1), goal)?);
            }
        }
        for (i, b) in self.baselines.iter().enumerate() {
            match (&b.artifact, b.method_spec()) {
                (Some(_), None) if b.params.is_empty() => {}
                (None, Some(m)) => {
                    m.validate(i + 1).map_err(|e| anyhow::anyhow!("[[baselines]] #{}: {:#}", i + 1, e))?;
                    if self.reference.plugin_set.is_none() {
                        bail!("[[baselines]] #{}: a method baseline runs on the reference experiment, so [reference] needs `plugin_set`", i + 1);
                    }
                }
                _ => bail!("[[baselines]] #{}: needs either `method` (and its parameters) or `artifact`, not both", i + 1),
            }
        }
        for (i, f) in self.failure_modes.iter().enumerate() {
            if f.text.trim().is_empty() {
                bail!("[[failure_modes]] #{}: `text` is empty; say what goes wrong", i + 1);
            }
            match &f.check {
                Some(Check::Named(n)) if n != "finite" => {
                    bail!("[[failure_modes]] #{}: check \"{n}\" is unknown; expected \"finite\" or {{ metric = …, min/max/better_than = … }}", i + 1)
                }
                Some(Check::Metric { min: None, max: None, better_than: None, max_ratio_to_oracle: None, metric }) => {
                    bail!("[[failure_modes]] #{}: the check on `{metric}` needs at least one of min, max, better_than or max_ratio_to_oracle", i + 1)
                }
                Some(Check::Metric { max_ratio_to_oracle: Some(_), .. }) if self.oracle.is_none() => {
                    bail!("[[failure_modes]] #{}: max_ratio_to_oracle needs the contract's `oracle`", i + 1)
                }
                _ => {}
            }
        }
        Ok((warnings, goals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped step-2 contract, with `edit` applied to its text.
    fn step2(edit: impl Fn(String) -> String) -> Result<Contract> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts/lorenz96-step2.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        Contract::parse(&path, edit(text).into_bytes())
    }

    #[test]
    fn the_shipped_step2_contract_is_valid_and_names_its_baselines() {
        let c = step2(|t| t).unwrap();
        assert_eq!(c.label(), "lorenz96-step2@1.0.0");
        let methods: Vec<String> = c.file.baselines.iter().filter_map(|b| b.method_spec()).map(|m| m.validate(1).unwrap().label()).collect();
        assert_eq!(methods, ["Climatology", "OptInterp", "3D-Var xB=0.02"]);
        assert_eq!(c.id, geohost_registry::artifact_id(&c.bytes), "a contract is identified by its bytes");
    }

    #[test]
    fn invalid_contracts_are_refused_with_the_field_named() {
        let err = |edit: &dyn Fn(String) -> String| format!("{:#}", step2(edit).unwrap_err());
        let e = err(&|t| t.replace("xB = 0.02", "xB = 0.02\nloc_rad = 4"));
        assert!(e.contains("[[baselines]] #3") && e.contains("`loc_rad` does not apply to this method"), "{e}");
        let e = err(&|t| t.replace("method = \"oi\"", "method = \"kalman\""));
        assert!(e.contains("[[baselines]] #2") && e.contains("unknown method \"kalman\""), "{e}");
        let e = err(&|t| t.replace("version = \"1.0.0\"", "version = \"1.0@2\""));
        assert!(e.contains("cannot contain `@`"), "{e}");
        let e = err(&|t| t.replace("text = \"Non-finite values in the analysis (a diverged or broken filter)\"", "text = \" \""));
        assert!(e.contains("[[failure_modes]] #1: `text` is empty"), "{e}");
        let e = err(&|t| t.replace("check = \"finite\"", "check = \"finished\""));
        assert!(e.contains("check \"finished\" is unknown"), "{e}");
        let e = err(&|t| t + "\nsurprise = 1\n");
        assert!(e.contains("invalid contract file") && e.contains("surprise"), "{e}");
    }
}
