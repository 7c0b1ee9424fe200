//! Scoring candidates against a pre-registered contract into a report.
//!
//! Every input is loaded through its frozen registry id (the reference
//! truth, baselines, oracle, metric components), so the report is a
//! function of ids alone: scoring the same candidates again gives the same
//! report bytes. Metrics run in the sandbox: point metrics on every scored
//! case, `ensemble` metrics on the cases whose analysis ensembles were
//! kept. Only the host and the metric components see the reference.

use super::contract::{Check, Contract, Goal};
use super::prereg::{lookup, Frozen, FrozenMetric};
use crate::outputs::read::{AnalysisFile, TruthFile};
use anyhow::{bail, Context, Result};
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::{MemberTable, MetricValue, Runtime, Table, WasmMetric, World};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Report format version (field `geohost_report`).
pub const REPORT_FORMAT: u32 = 1;

/// An evaluation report (what `bench score` writes and registers).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub geohost_report: u32,
    pub geohost_version: String,
    pub contract: ContractRef,
    pub oracle: Option<Scored>,
    pub oracle_strength: Option<String>,
    pub warnings: Vec<String>,
    pub reference: ReferenceRef,
    pub metric_components: Vec<FrozenMetric>,
    /// Goal of each metric (its direction), as the report was scored.
    pub goals: BTreeMap<String, Goal>,
    pub candidates: Vec<CandidateScore>,
    pub baselines: Vec<Scored>,
    /// Everything scored, best first, by `metric`.
    pub ranking: Ranking,
    /// Every input's id: contract, reference, components, oracle,
    /// baselines, candidates.
    pub inputs: Vec<String>,
    /// `pass` when every candidate passes every failure-mode check (on the
    /// hidden experiments when the contract has them); `disqualified` when
    /// a submission broke its budget or its world.
    pub verdict: String,
    /// Scores on the hidden experiments: these rank, for a hidden contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<HiddenScores>,
}

/// Where a candidate's numbers come from.
pub const SELF_REPORTED: &str = "self-reported";
/// The verdict of a submission that broke its budget or its world.
pub const DISQUALIFIED: &str = "disqualified";
/// A component the host ran itself (`geohost bench submit`).
pub const RUN_BY_HOST: &str = "component";

fn self_reported() -> String {
    SELF_REPORTED.into()
}

/// The hidden evaluation of a report: the submission, the oracle and the
/// baselines on each secret experiment, averaged, checked and ranked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HiddenScores {
    pub experiments: usize,
    pub cycles: usize,
    /// The frozen commitments of the experiments' seeds.
    pub commitments: Vec<String>,
    /// Whether the seeds had been revealed (`bench reveal`) when this was
    /// scored: the hidden scores are then not blind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revealed: bool,
    pub candidates: Vec<HiddenCandidate>,
    pub oracle: Option<Scored>,
    pub baselines: Vec<Scored>,
    /// The official ranking of a hidden contract.
    pub ranking: Ranking,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HiddenCandidate {
    /// Metrics averaged over the hidden experiments.
    #[serde(flatten)]
    pub scored: Scored,
    /// Each experiment's metrics, in commitment order.
    pub per_experiment: Vec<BTreeMap<String, MetricValue>>,
    pub checks: Vec<CheckResult>,
    pub verdict: String,
}

/// A submitted component: what ran, what it cost, and why it was
/// disqualified if it was.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SubmissionRecord {
    /// The component's world: `filter`, or `forward-model` (an emulator).
    #[serde(default = "filter_world")]
    pub world: String,
    /// The component's id (`blake3:…`), its size and self-description.
    pub component: String,
    pub size: u64,
    pub name: Option<String>,
    pub version: Option<String>,
    pub members: Option<usize>,
    /// The config given to its `init`.
    pub config: serde_json::Value,
    pub budget: super::contract::Budget,
    /// Fuel, peak memory and calls, per experiment (public first) and in
    /// total: the same on every rescoring.
    pub accounting: Vec<ExperimentAccounting>,
    pub fuel_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disqualified: Option<Disqualified>,
    /// Who submitted it (`--submitter`), when given: the name a contract's
    /// cap on scorings per day counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
}

fn filter_world() -> String {
    "filter".into()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExperimentAccounting {
    /// `public` or `hidden N`.
    pub experiment: String,
    #[serde(flatten)]
    pub used: geohost_sandbox::Accounting,
}

/// Why a submission was disqualified.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Disqualified {
    /// `size`, `compile`, `load`, `init` or `run`.
    pub stage: String,
    pub reason: String,
    /// The experiment (`public`, `hidden N`, or `forecasts` for an emulator)
    /// and the cycle (an emulator: the forecast lead) it happened at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContractRef {
    pub id: String,
    pub name: String,
    pub version: String,
    pub task: String,
    pub target_step: Option<u8>,
    pub oracle_step: Option<u8>,
    pub l_transition: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReferenceRef {
    pub id: String,
    pub evaluate_after: f64,
    pub evaluate_until: Option<f64>,
    /// Cases scored by point metrics, and by ensemble metrics.
    pub cases: usize,
    pub ensemble_cases: usize,
}

/// One scored output (a baseline or the oracle).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scored {
    pub label: String,
    pub id: String,
    pub metrics: BTreeMap<String, MetricValue>,
    /// Metrics that could not be computed for it, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_applicable: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CandidateScore {
    #[serde(flatten)]
    pub scored: Scored,
    pub checks: Vec<CheckResult>,
    pub verdict: String,
    /// `self-reported` (a results file) or `component` (run by the host).
    #[serde(default = "self_reported")]
    pub provenance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<SubmissionRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub failure_mode: String,
    pub check: Option<Check>,
    /// The value checked (a metric, or the count of non-finite values).
    pub value: Option<f64>,
    /// `true`: the failure mode was not observed.
    pub passed: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ranking {
    pub metric: String,
    pub order: Vec<RankEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RankEntry {
    pub label: String,
    pub id: String,
    pub role: String,
    pub value: MetricValue,
}

/// The reference restricted to the scored cases.
pub(super) struct Reference {
    pub truth: TruthFile,
    /// Indices of scored cases.
    pub cases: Vec<usize>,
}

/// The components, instantiated once per scoring.
pub(super) struct Components {
    components: Vec<(FrozenMetric, WasmMetric)>,
}

impl Components {
    pub(super) fn load(registry: &Registry, runtime: &Runtime, frozen: &Frozen) -> Result<Components> {
        let mut components = Vec::new();
        for m in &frozen.metrics {
            // Loaded through its id: the bytes are re-hashed on read.
            let bytes = registry.read(&m.id).with_context(|| format!("metric component {} ({})", m.name, m.id))?;
            let loaded = runtime.load_bytes(&m.name, std::path::Path::new(&m.id), &bytes, World::Metric)?;
            let component = WasmMetric::new(runtime, &loaded, &m.config)?;
            let announced: Vec<String> =
                component.metrics.iter().map(|n| if m.against_oracle { format!("{n}{}", super::contract::VS_ORACLE) } else { n.clone() }).collect();
            if announced != m.metrics {
                bail!("metric component {} ({}) now announces [{}], not the frozen [{}]", m.name, m.id, component.metrics.join(", "), m.metrics.join(", "));
            }
            components.push((m.clone(), component));
        }
        Ok(Components { components })
    }
}

/// A candidate: a registered artifact, or a run-output file that is
/// registered only once it has been scored (a candidate that fails to
/// score leaves the registry as it was).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    /// The file's bytes and method label, when it is not registered yet.
    pub pending: Option<(Vec<u8>, String, String)>,
    /// An output the host computed itself (a submitted emulator's
    /// forecasts), scored as it is.
    pub prepared: Option<AnalysisFile>,
}

/// Resolve a candidate argument: a registry reference (or a registered
/// file), else a run-output file.
pub fn resolve_candidate(registry: &Registry, arg: &str) -> Result<Candidate> {
    if let Ok(id) = registry.resolve(arg) {
        return Ok(Candidate { id, pending: None, prepared: None });
    }
    let path = std::path::Path::new(arg);
    if !path.is_file() {
        bail!("candidate `{arg}` is neither a file nor a registered artifact");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read candidate {arg}"))?;
    let output = AnalysisFile::parse(arg, bytes.clone())?;
    Ok(Candidate { id: geohost_registry::artifact_id(&bytes), pending: Some((bytes, output.method, arg.to_string())), prepared: None })
}

/// Register the candidates that were files (after a successful score).
pub fn register_candidates(registry: &mut Registry, candidates: &[Candidate]) -> Result<()> {
    for c in candidates {
        if let Some((bytes, method, path)) = &c.pending {
            registry.add(
                bytes,
                &NewArtifact {
                    kind: "run-output".into(),
                    name: method.clone(),
                    media_type: "application/x-netcdf".into(),
                    metadata: serde_json::json!({ "path": path }),
                    ..Default::default()
                },
            )?;
        }
    }
    Ok(())
}

impl Reference {
    pub(super) fn load(registry: &Registry, frozen: &Frozen, contract: &Contract) -> Result<Reference> {
        Reference::new(TruthFile::parse(&frozen.reference, registry.read(&frozen.reference)?)?, contract)
    }

    /// `truth` restricted to the contract's `[splits]`.
    pub(super) fn new(truth: TruthFile, contract: &Contract) -> Result<Reference> {
        let s = &contract.file.splits;
        let cases: Vec<usize> =
            (0..truth.times.len()).filter(|&k| truth.times[k] > s.evaluate_after && s.evaluate_until.is_none_or(|u| truth.times[k] <= u)).collect();
        if cases.is_empty() {
            bail!(
                "the contract's [splits] leave no case of the reference to score (times run from {} to {})",
                truth.times[0],
                truth.times.last().unwrap_or(&0.0)
            );
        }
        Ok(Reference { truth, cases })
    }

    fn table(&self, a: &crate::outputs::read::Array2, rows: &[usize]) -> Table {
        Table { rows: rows.len(), cols: a.cols, data: rows.iter().flat_map(|&k| a.row(k).iter().copied()).collect() }
    }
}

/// Score one output: every metric, or why it could not be computed.
#[allow(clippy::too_many_arguments)]
pub(super) fn score_output(
    label: &str,
    id: &str,
    output: &AnalysisFile,
    reference: &Reference,
    oracle: Option<&AnalysisFile>,
    components: &mut Components,
    strict: bool,
) -> Result<(Scored, usize)> {
    let what = || format!("{label} ({id})");
    if output.times != reference.truth.times || output.analysis_mean.cols != reference.truth.truth.cols {
        bail!("{}: its times or state size differ from the contract's reference; was it run on the contract's experiment?", what());
    }
    let non_finite = reference.cases.iter().flat_map(|&k| output.analysis_mean.row(k)).filter(|x| !x.is_finite()).count();
    let mut scored = Scored { label: label.into(), id: id.into(), metrics: BTreeMap::new(), not_applicable: BTreeMap::new() };
    if non_finite > 0 {
        for (m, _) in &components.components {
            for name in &m.metrics {
                scored.not_applicable.insert(name.clone(), format!("{non_finite} non-finite values in analysis_mean"));
            }
        }
        return Ok((scored, non_finite));
    }
    let prediction = reference.table(&output.analysis_mean, &reference.cases);
    let truth = reference.table(&reference.truth.truth, &reference.cases);
    for (m, component) in components.components.iter_mut() {
        // The data compared with: the truth, or the oracle's analysis.
        let target = match (m.against_oracle, oracle) {
            (false, _) => &reference.truth.truth,
            (true, Some(o)) => &o.analysis_mean,
            (true, None) => bail!("metrics of {} are computed against the oracle, but the contract's oracle is not a method output", m.name),
        };
        let values = if !m.ensemble {
            let truth = if m.against_oracle { reference.table(target, &reference.cases) } else { truth.clone() };
            component.compute(&prediction, &truth, None).with_context(|| format!("scoring {} with {}", what(), m.name))?
        } else {
            let Some(members) = &output.members else {
                let reason = "no analysis ensembles were kept (set [output] members_every in the plugin-set)".to_string();
                if strict {
                    bail!("{}: the contract's ensemble metrics ({}) need members, but {reason}", what(), m.metrics.join(", "));
                }
                for name in &m.metrics {
                    scored.not_applicable.insert(name.clone(), reason.clone());
                }
                continue;
            };
            // Kept times within the scored cases, matched to reference rows.
            let rows: Vec<(usize, usize)> = members
                .times
                .iter()
                .enumerate()
                .filter_map(|(j, t)| reference.truth.times.iter().position(|x| x == t).filter(|k| reference.cases.contains(k)).map(|k| (j, k)))
                .collect();
            if rows.is_empty() {
                bail!("{}: none of its kept analysis ensembles falls in the contract's scored cases", what());
            }
            let ks: Vec<usize> = rows.iter().map(|(_, k)| *k).collect();
            let n = members.members;
            let mut data = Vec::with_capacity(n * rows.len() * members.state);
            for member in 0..n {
                for (j, _) in &rows {
                    data.extend_from_slice(members.at(*j, member));
                }
            }
            if data.iter().any(|x| !x.is_finite()) {
                bail!("{}: its kept analysis ensembles contain non-finite values", what());
            }
            let ens = MemberTable { members: n, rows: rows.len(), cols: members.state, data };
            component
                .compute(&reference.table(&output.analysis_mean, &ks), &reference.table(target, &ks), Some(&ens))
                .with_context(|| format!("scoring {} with {}", what(), m.name))?
        };
        for (name, value) in values {
            let name = if m.against_oracle { format!("{name}{}", super::contract::VS_ORACLE) } else { name };
            scored.metrics.insert(name, value);
        }
    }
    Ok((scored, 0))
}

pub(super) fn run_checks(contract: &Contract, scored: &Scored, non_finite: usize, baselines: &[Scored], oracle: Option<&Scored>) -> Vec<CheckResult> {
    contract
        .file
        .failure_modes
        .iter()
        .map(|f| {
            let (value, passed) = match &f.check {
                None => (None, None),
                Some(Check::Named(_)) => (Some(non_finite as f64), Some(non_finite == 0)),
                Some(Check::Metric { metric, min, max, better_than, max_ratio_to_oracle }) => match scored.metrics.get(metric) {
                    Some(MetricValue::Scalar(x)) => {
                        let mut ok = min.is_none_or(|m| *x >= m) && max.is_none_or(|m| *x <= m);
                        if let Some(ratio) = max_ratio_to_oracle {
                            ok &= match oracle.and_then(|o| o.metrics.get(metric)) {
                                Some(MetricValue::Scalar(o)) => *x <= ratio * o,
                                _ => false,
                            };
                        }
                        if let Some(b) = better_than {
                            let goal = contract.goal(metric);
                            let theirs = baselines.iter().find(|s| &s.label == b).and_then(|s| s.metrics.get(metric)).and_then(|v| goal.badness(v));
                            ok &= match (goal.badness(&MetricValue::Scalar(*x)), theirs) {
                                (Some(mine), Some(theirs)) => mine < theirs,
                                _ => false,
                            };
                        }
                        (Some(*x), Some(ok))
                    }
                    // A vector metric or a missing one cannot pass a scalar check.
                    _ => (None, Some(false)),
                },
            };
            CheckResult { failure_mode: f.text.clone(), check: f.check.clone(), value, passed }
        })
        .collect()
}

/// Score `candidates` (registry ids) against a pre-registered contract.
/// The report is returned, not yet written or registered. A contract with
/// hidden experiments refuses results files: their numbers could have been
/// computed from the public experiment's truth.
pub fn score(registry: &Registry, runtime: &Runtime, contract: &Contract, candidates: &[Candidate]) -> Result<Report> {
    let frozen = lookup(registry, contract)?;
    if frozen.hidden.is_some() && !candidates.is_empty() {
        bail!(
            "contract {} evaluates on hidden experiments, so it does not score results files (anyone can regenerate the public experiment's truth and forge one). Submit the method as a `filter` component instead: geohost bench submit {} METHOD.wasm",
            contract.label(),
            contract.path.display()
        );
    }
    score_frozen(registry, runtime, contract, &frozen, candidates, SELF_REPORTED)
}

/// [`score`] without the hidden-contract check, for candidates whose
/// provenance the caller states.
pub(super) fn score_frozen(
    registry: &Registry,
    runtime: &Runtime,
    contract: &Contract,
    frozen: &Frozen,
    candidates: &[Candidate],
    provenance: &str,
) -> Result<Report> {
    let frozen = frozen.clone();
    let reference = Reference::load(registry, &frozen, contract)?;
    let mut components = Components::load(registry, runtime, &frozen)?;
    let pending = |id: &str| candidates.iter().find(|c| c.id == id).and_then(|c| c.pending.as_ref()).map(|(bytes, ..)| bytes.clone());
    let load = |id: &str| -> Result<AnalysisFile> {
        if let Some(output) = candidates.iter().find(|c| c.id == id).and_then(|c| c.prepared.clone()) {
            return Ok(output);
        }
        let bytes = match pending(id) {
            Some(bytes) => bytes,
            None => {
                let artifact = registry.get(id)?;
                if artifact.kind == "weights" {
                    return super::forecast::emulate(id, &artifact.name, &registry.read(id)?, &reference.truth, &frozen.reference);
                }
                registry.read(id)?
            }
        };
        let output = AnalysisFile::parse(id, bytes)?;
        if output.truth != frozen.reference {
            bail!(
                "{id} ({}) was run on truth {}, but the contract's reference is {}: run it with the contract's reference plugin-set, or, if that experiment changed since the contract was pre-registered, pre-register a new version of the contract",
                output.method,
                output.truth,
                frozen.reference
            );
        }
        Ok(output)
    };

    let oracle_output = match &frozen.oracle {
        Some(id) if registry.get(id)?.kind == "run-output" => Some(load(id)?),
        _ => None,
    };
    let mut baselines = Vec::new();
    for b in &frozen.baselines {
        baselines.push(score_output(&b.label, &b.id, &load(&b.id)?, &reference, oracle_output.as_ref(), &mut components, false)?.0);
    }
    let oracle = match (&frozen.oracle, &oracle_output) {
        (Some(id), Some(output)) => Some(score_output(&output.method, id, output, &reference, oracle_output.as_ref(), &mut components, false)?.0),
        // An oracle that is not an output (e.g. the physical model) is
        // named, not scored.
        (Some(id), None) => Some(Scored { label: registry.get(id)?.name, id: id.clone(), metrics: BTreeMap::new(), not_applicable: BTreeMap::new() }),
        (None, _) => None,
    };
    let mut scored_candidates = Vec::new();
    let mut ensemble_cases = 0;
    for id in candidates.iter().map(|c| &c.id) {
        let output = load(id)?;
        if let Some(m) = &output.members {
            let kept = m.times.iter().filter(|t| reference.cases.iter().any(|&k| reference.truth.times[k] == **t)).count();
            ensemble_cases = ensemble_cases.max(kept);
        }
        let (scored, non_finite) = score_output(&output.method, id, &output, &reference, oracle_output.as_ref(), &mut components, true)?;
        let checks = run_checks(contract, &scored, non_finite, &baselines, oracle.as_ref());
        let verdict = verdict_of(&checks);
        scored_candidates.push(CandidateScore { scored, checks, verdict: verdict.into(), provenance: provenance.into(), submission: None });
    }

    let metric = primary_metric(contract, &frozen);
    let ranking = rank(contract, &metric, scored_candidates.iter().map(|c| &c.scored), oracle.as_ref(), &baselines);

    let mut goals = BTreeMap::new();
    for m in &frozen.metrics {
        for name in &m.metrics {
            goals.insert(name.clone(), contract.goal(name));
        }
    }
    let mut inputs = vec![frozen.contract.clone(), frozen.reference.clone()];
    inputs.extend(frozen.metrics.iter().map(|m| m.id.clone()));
    inputs.extend(frozen.oracle.iter().cloned());
    inputs.extend(frozen.baselines.iter().map(|b| b.id.clone()));
    inputs.extend(candidates.iter().map(|c| c.id.clone()));
    let verdict = if scored_candidates.iter().all(|c| c.verdict == "pass") { "pass" } else { "fail" };
    let f = &contract.file;
    Ok(Report {
        geohost_report: REPORT_FORMAT,
        geohost_version: env!("CARGO_PKG_VERSION").into(),
        contract: ContractRef {
            id: frozen.contract.clone(),
            name: f.name.clone(),
            version: f.version.clone(),
            task: f.task.clone(),
            target_step: f.target_step,
            oracle_step: f.oracle_step,
            l_transition: f.l_transition.clone(),
        },
        oracle,
        oracle_strength: frozen.oracle_strength.clone(),
        warnings: frozen.warnings.clone(),
        reference: ReferenceRef {
            id: frozen.reference.clone(),
            evaluate_after: f.splits.evaluate_after,
            evaluate_until: f.splits.evaluate_until,
            cases: reference.cases.len(),
            ensemble_cases,
        },
        metric_components: frozen.metrics.clone(),
        goals,
        candidates: scored_candidates,
        baselines,
        ranking,
        inputs,
        verdict: verdict.into(),
        hidden: None,
    })
}

/// `pass` when no check failed.
pub(super) fn verdict_of(checks: &[CheckResult]) -> &'static str {
    if checks.iter().all(|c| c.passed != Some(false)) {
        "pass"
    } else {
        "fail"
    }
}

/// The metric that ranks: the contract's `primary_metric`, else the first
/// metric of the first component.
pub(super) fn primary_metric(contract: &Contract, frozen: &Frozen) -> String {
    contract.file.primary_metric.clone().unwrap_or_else(|| frozen.metrics[0].metrics[0].clone())
}

/// Candidates, oracle and baselines ordered by `metric`'s goal, best first
/// (each id once; outputs without the metric are left out).
pub(super) fn rank<'a>(
    contract: &Contract,
    metric: &str,
    candidates: impl Iterator<Item = &'a Scored>,
    oracle: Option<&Scored>,
    baselines: &[Scored],
) -> Ranking {
    let goal = contract.goal(metric);
    let mut order: Vec<(f64, RankEntry)> = Vec::new();
    let mut push = |s: &Scored, role: &str| {
        if order.iter().any(|(_, e)| e.id == s.id) {
            return;
        }
        if let Some(v) = s.metrics.get(metric) {
            if let Some(bad) = goal.badness(v) {
                order.push((bad, RankEntry { label: s.label.clone(), id: s.id.clone(), role: role.into(), value: v.clone() }));
            }
        }
    };
    for c in candidates {
        push(c, "candidate");
    }
    if let Some(o) = oracle {
        push(o, "oracle");
    }
    for b in baselines {
        push(b, "baseline");
    }
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ranking { metric: metric.into(), order: order.into_iter().map(|(_, e)| e).collect() }
}

/// Write a report's bytes to `path`, creating its directory.
pub(super) fn write_report(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write report {}", path.display()))
}

/// Write the report and register it: kind `report`, with each candidate
/// `scored_by` it, the report `derived_from` its contract, and each
/// candidate `validated_against` the contract's oracle. Returns its id.
pub fn register(registry: &mut Registry, report: &Report, path: &std::path::Path) -> Result<String> {
    let bytes = serde_json::to_vec_pretty(report)?;
    write_report(path, &bytes)?;
    let c = &report.contract;
    let (id, _) = registry.add(
        &bytes,
        &NewArtifact {
            kind: "report".into(),
            name: format!("report/{}", c.name),
            version: Some(c.version.clone()),
            media_type: "application/json".into(),
            step: c.target_step,
            l_transition: c.l_transition.clone(),
            tags: vec![report.verdict.clone()],
            metadata: serde_json::json!({
                "contract": c.id,
                "verdict": report.verdict,
                "oracle_strength": report.oracle_strength,
                "warnings": report.warnings,
                "candidates": report.candidates.iter().map(|x| &x.scored.id).collect::<Vec<_>>(),
            }),
            ..Default::default()
        },
    )?;
    registry.link(&id, &c.id, "derived_from")?;
    // A disqualified submission is not registered: only its report is.
    for candidate in report.candidates.iter().filter(|c| c.verdict != DISQUALIFIED) {
        registry.link(&candidate.scored.id, &id, "scored_by")?;
        if let Some(oracle) = &report.oracle {
            if oracle.id != candidate.scored.id {
                registry.link(&candidate.scored.id, &oracle.id, "validated_against")?;
            }
        }
    }
    Ok(id)
}

/// The report as a table: one row per scored output, one column per scalar
/// metric (a histogram shows its distance from flat), then the checks, the
/// ranking and the verdict; for submissions, what they cost and why they
/// were disqualified; for hidden contracts, the hidden scores that rank.
pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let c = &report.contract;
    let mut s = format!("contract {}@{} ({})\n", c.name, c.version, c.id);
    if let Some(o) = &report.oracle {
        let _ = writeln!(s, "oracle: {} ({}), strength {}", o.label, o.id, report.oracle_strength.as_deref().unwrap_or("-"));
    }
    for w in &report.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let r = &report.reference;
    let public = if report.hidden.is_some() { "public experiment, for development: " } else { "" };
    let _ =
        writeln!(s, "{public}reference {}: {} cases scored (t > {}), ensemble metrics on {} kept ensembles", r.id, r.cases, r.evaluate_after, r.ensemble_cases);
    let names: Vec<&String> = report.metric_components.iter().flat_map(|m| m.metrics.iter()).collect();
    let mut rows: Vec<(String, &Scored)> =
        report.candidates.iter().filter(|x| x.verdict != DISQUALIFIED).map(|x| ("candidate".to_string(), &x.scored)).collect();
    rows.extend(report.oracle.iter().map(|o| ("oracle".to_string(), o)));
    rows.extend(report.baselines.iter().map(|b| ("baseline".to_string(), b)));
    s.push_str(&metric_rows(&names, &rows, &report.goals));
    let checks = |s: &mut String, label: &str, checks: &[CheckResult]| {
        for check in checks {
            let status = match check.passed {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "text",
            };
            let value = check.value.map(|v| format!(" (value {v:.4})")).unwrap_or_default();
            let _ = writeln!(s, "[{status}] {label}: {}{value}", check.failure_mode);
        }
    };
    for cand in &report.candidates {
        checks(&mut s, &cand.scored.label, &cand.checks);
    }
    let order: Vec<String> = report.ranking.order.iter().map(|e| e.label.clone()).collect();
    let _ = writeln!(s, "ranking by {}{}: {}", report.ranking.metric, if report.hidden.is_some() { " (public experiment)" } else { "" }, order.join(" < "));
    for cand in &report.candidates {
        match &cand.submission {
            None => {
                let _ = writeln!(s, "{}: provenance {} (a results file the host did not compute; it cannot be checked)", cand.scored.label, cand.provenance);
            }
            Some(sub) => {
                let per: Vec<String> = sub.accounting.iter().map(|a| format!("{} {}", a.experiment, a.used.fuel)).collect();
                let peak = sub.accounting.iter().map(|a| a.used.peak_memory_bytes).max().unwrap_or(0);
                let _ = writeln!(
                    s,
                    "{}: provenance {} ({}, {} bytes), run by the host: fuel {} of {} ({}), peak memory {:.1} MiB",
                    cand.scored.label,
                    cand.provenance,
                    if sub.component.is_empty() { "not read" } else { &sub.component },
                    sub.size,
                    sub.fuel_total,
                    sub.budget.fuel_total,
                    if per.is_empty() { "nothing ran".to_string() } else { per.join(", ") },
                    peak as f64 / (1 << 20) as f64
                );
                if let Some(d) = &sub.disqualified {
                    let mut at = vec![format!("stage {}", d.stage)];
                    at.extend(d.experiment.iter().map(|e| format!("{e} experiment")));
                    let step = if sub.world == "forward-model" { "lead" } else { "cycle" };
                    at.extend(d.cycle.map(|k| format!("{step} {k}")));
                    let _ = writeln!(s, "DISQUALIFIED ({}): {}", at.join(", "), d.reason);
                }
            }
        }
    }
    if let Some(h) = &report.hidden {
        let _ = writeln!(s, "hidden evaluation: {} experiments × {} cycles, seeds committed as {}", h.experiments, h.cycles, h.commitments.join(", "));
        if h.revealed {
            let _ = writeln!(s, "the seeds were revealed before this was scored: the hidden scores are not blind");
        }
        let mut rows: Vec<(String, &Scored)> = h.candidates.iter().map(|x| ("candidate".to_string(), &x.scored)).collect();
        rows.extend(h.oracle.iter().map(|o| ("oracle".to_string(), o)));
        rows.extend(h.baselines.iter().map(|b| ("baseline".to_string(), b)));
        s.push_str(&metric_rows(&names, &rows, &report.goals));
        for cand in &h.candidates {
            checks(&mut s, &format!("{} (hidden)", cand.scored.label), &cand.checks);
        }
        let order: Vec<String> = h.ranking.order.iter().map(|e| e.label.clone()).collect();
        let _ = writeln!(s, "ranking by {} on the hidden experiments (the official one): {}", h.ranking.metric, order.join(" < "));
    }
    let _ = write!(s, "verdict: {}", report.verdict);
    s
}

/// Rows of scalar metrics (a histogram as its distance from flat).
fn metric_rows(names: &[&String], rows: &[(String, &Scored)], goals: &BTreeMap<String, Goal>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let width = rows.iter().map(|(role, x)| role.len() + x.label.len() + 1).max().unwrap_or(10);
    let _ = write!(s, "{:<width$}", "");
    for n in names {
        let _ = write!(s, "  {:>14}", n);
    }
    s.push('\n');
    for (role, x) in rows {
        let _ = write!(s, "{:<width$}", format!("{role} {}", x.label));
        for n in names {
            let cell = match x.metrics.get(*n) {
                Some(MetricValue::Scalar(v)) => format!("{v:.4}"),
                Some(v @ MetricValue::Vector(x)) => match goals.get(*n).and_then(|g| g.badness(v).map(|d| (g, d))) {
                    Some((Goal::Flat, d)) => format!("flat±{d:.3}"),
                    Some((_, d)) => format!("mean {d:.4}"),
                    // Short vectors (e.g. coverage per level) in full.
                    None if x.len() <= 3 => x.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join("/"),
                    None => format!("[{} values]", x.len()),
                },
                None => "n/a".into(),
            };
            let _ = write!(s, "  {cell:>14}");
        }
        s.push('\n');
    }
    s
}
