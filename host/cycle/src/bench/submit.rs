//! `geohost bench submit`: untrusted code, scored on data it never sees.
//!
//! A submission is a `filter` component (a DA method), or, for a contract
//! whose reference is a model's forecasts (step 3), a `forward-model`
//! component (an emulator) that the host runs from the reference's initial
//! states exactly as it runs an emulator's weights. The host checks its size before
//! reading it, compiles it in a child process under the contract's compile
//! limits ([`geohost_sandbox::isolate`]), then runs it with the contract's
//! `[budget]` (fuel per call and in total, memory, deadline) on the public
//! experiment (scored as `bench score` scores an output, for development)
//! and on each hidden experiment, with a fresh instance each time. The
//! oracle's method and the method baselines are rerun on the hidden
//! experiments, so every hidden row compares like with like.
//!
//! Everything that can go wrong with the submission (over the size cap, a
//! compile bomb, a forbidden import, the wrong world, a refused config, a
//! trap, an exhausted budget, a wrong shape or a non-finite analysis, a
//! forecast that blows up from its analysis) is a verdict, `disqualified`,
//! with the stage, the experiment and the cycle, in a report; failures of
//! the host's own plugins stay errors.
//!
//! The report is a function of the contract, the registry's frozen inputs,
//! the secret seeds and the component: rescoring gives the same bytes
//! (fuel and peak memory are deterministic; wall time is returned beside
//! the report, not in it).

use super::contract::Contract;
use super::hidden::FrozenHidden;
use super::prereg::{lookup, Frozen};
use super::score::{
    primary_metric, rank, run_checks, score_frozen, score_output, verdict_of, Candidate, CandidateScore, Components, Disqualified, ExperimentAccounting,
    HiddenCandidate, HiddenScores, Reference, Report, Scored, SubmissionRecord, RUN_BY_HOST,
};
use crate::outputs::read::{AnalysisFile, TruthFile};
use crate::pluginset::{Loaded, PluginSet};
use crate::progress::ProgressFactory;
use anyhow::{bail, Context, Result};
use geohost_da::submission::{FailedAt, Submission};
use geohost_da::Method;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::{isolate, FuelBudget, LoadedComponent, MetricValue, Problem, Runtime, WasmFilter, WasmForward, World};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to submit, and how to compile it.
pub struct SubmitOptions {
    pub component: PathBuf,
    /// The config passed to the component's `init` (a JSON object).
    pub config: serde_json::Value,
    /// The name to register the submission under (default: the name the
    /// component gives itself).
    pub name: Option<String>,
    /// The executable whose hidden subcommand ([`isolate::SUBCOMMAND`])
    /// compiles the component in a child process.
    pub exe: PathBuf,
    /// The compile cache shared with that child.
    pub cache_dir: PathBuf,
    /// Who submits it (recorded in the report; counted by a contract's
    /// `max_scorings_per_day`, which the caller checks first:
    /// [`super::probing::check_cap`]).
    pub submitter: Option<String>,
}

/// A scored (or disqualified) submission, not yet registered.
pub struct Submitted {
    pub report: Report,
    /// The component's bytes, when it was read.
    pub bytes: Option<Vec<u8>>,
    pub name: Option<String>,
    /// Wall time of the whole submission (not in the report: it differs
    /// from run to run).
    pub wall: Duration,
}

impl Submitted {
    /// The submission's record in the report.
    pub fn record(&self) -> &SubmissionRecord {
        self.report.candidates[0].submission.as_ref().expect("a submission report has its record")
    }

    pub fn disqualified(&self) -> Option<&Disqualified> {
        self.record().disqualified.as_ref()
    }
}

/// Run and score a submission against a pre-registered contract.
pub fn submit(
    registry: &mut Registry,
    runtime: &Runtime,
    contract: &Contract,
    options: &SubmitOptions,
    progress: &mut ProgressFactory<'_>,
) -> Result<Submitted> {
    let start = Instant::now();
    let frozen = lookup(registry, contract)?;
    let reference = &contract.file.reference;
    let world = if reference.forecasts.is_some() { World::ForwardModel } else { World::Filter };
    if reference.plugin_set.is_none() && reference.forecasts.is_none() {
        bail!(
            "contract {}'s reference is a registered file, not generated from a plugin-set, so there is no experiment to run a submission on; score results files with `geohost bench score`",
            contract.label()
        );
    }
    if !options.config.is_object() {
        bail!("the submission's config must be a JSON object, got {}", options.config);
    }
    let (mut record, label) = start_record(options, contract.file.budget, world)?;
    let size = record.size;

    let mut run = Run { registry, runtime, contract, frozen: &frozen, options, progress };
    let outcome = run.go(&mut record, &label, world);
    let (public, hidden, bytes) = match outcome {
        Ok(x) => x,
        Err(Verdict::Error(e)) => return Err(e),
        Err(Verdict::Disqualified(d, bytes)) => {
            record.disqualified = Some(d);
            (None, None, bytes)
        }
    };
    record.fuel_total = record.accounting.iter().map(|a| a.used.fuel).sum();

    // The report: the public scoring (or, when the submission never got
    // that far, the contract's reference rows alone) with the submission.
    let mut report = match public {
        Some(report) => report,
        None => score_frozen(run.registry, runtime, contract, &frozen, &[], RUN_BY_HOST)?,
    };
    let verdict = match (&record.disqualified, &hidden) {
        (Some(_), _) => super::score::DISQUALIFIED.to_string(),
        (None, Some(h)) => h.candidates[0].verdict.clone(),
        (None, None) => report.candidates[0].verdict.clone(),
    };
    match report.candidates.first_mut() {
        Some(candidate) => {
            candidate.verdict = verdict.clone();
            candidate.submission = Some(record);
        }
        None => {
            let id = if record.component.is_empty() { format!("(not read: {size} bytes)") } else { record.component.clone() };
            report.inputs.push(id.clone());
            report.candidates.push(CandidateScore {
                scored: Scored { label: label.clone(), id, metrics: BTreeMap::new(), not_applicable: BTreeMap::new() },
                checks: Vec::new(),
                verdict: verdict.clone(),
                provenance: RUN_BY_HOST.into(),
                submission: Some(record),
            });
        }
    }
    report.verdict = verdict;
    report.hidden = hidden;
    Ok(Submitted { report, bytes, name: options.name.clone(), wall: start.elapsed() })
}

/// The record of a submission not yet run (its size read, nothing else),
/// and the label it runs under (the file's stem).
pub(super) fn start_record(options: &SubmitOptions, budget: super::contract::Budget, world: World) -> Result<(SubmissionRecord, String)> {
    let path = &options.component;
    let label = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "submission".into());
    let size = std::fs::metadata(path).with_context(|| format!("cannot read submission {}", path.display()))?.len();
    let record = SubmissionRecord {
        world: world.name().into(),
        component: String::new(),
        size,
        name: None,
        version: None,
        members: None,
        config: options.config.clone(),
        budget,
        accounting: Vec::new(),
        fuel_total: 0,
        disqualified: None,
        submitter: options.submitter.clone(),
    };
    Ok((record, label))
}

/// Register a scored submission's component: kind `submission`, tagged
/// with its world, under `name` or the name it gives itself.
pub(super) fn add_submission(
    registry: &mut Registry,
    bytes: &[u8],
    name: Option<&str>,
    record: &SubmissionRecord,
    step: Option<u8>,
    l_transition: Option<String>,
    contract: &str,
) -> Result<String> {
    let (id, _) = registry.add(
        bytes,
        &NewArtifact {
            kind: "submission".into(),
            name: name.map(String::from).or_else(|| record.name.clone()).unwrap_or_else(|| "submission".into()),
            version: record.version.clone(),
            media_type: "application/wasm".into(),
            step,
            l_transition,
            tags: vec![record.world.clone()],
            metadata: serde_json::json!({ "world": record.world, "config": record.config, "contract": contract }),
            ..Default::default()
        },
    )?;
    Ok(id)
}

/// Why a submission stopped: its own fault (a verdict) or the host's.
pub(super) enum Verdict {
    Disqualified(Disqualified, Option<Vec<u8>>),
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Verdict {
    fn from(e: anyhow::Error) -> Verdict {
        Verdict::Error(e)
    }
}

pub(super) fn disqualified(stage: &str, reason: impl std::fmt::Display, bytes: Option<&[u8]>) -> Verdict {
    Verdict::Disqualified(Disqualified { stage: stage.into(), reason: reason.to_string(), experiment: None, cycle: None }, bytes.map(<[u8]>::to_vec))
}

struct Run<'a, 'p> {
    registry: &'a mut Registry,
    runtime: &'a Runtime,
    contract: &'a Contract,
    frozen: &'a Frozen,
    options: &'a SubmitOptions,
    progress: &'a mut ProgressFactory<'p>,
}

type Outcome = (Option<Report>, Option<HiddenScores>, Option<Vec<u8>>);

impl Run<'_, '_> {
    fn go(&mut self, record: &mut SubmissionRecord, label: &str, world: World) -> Result<Outcome, Verdict> {
        let (sandbox, loaded, bytes) = load_component(self.options, &self.contract.file.budget, record, label, world)?;
        match world {
            World::ForwardModel => self.go_emulator(record, &sandbox, &loaded, bytes),
            _ => self.go_filter(record, &sandbox, &loaded, bytes),
        }
    }

    /// A submitted emulator: forecasts from the reference's initial states
    /// (a fresh instance per experiment, all cases as one ensemble, one
    /// fuel budget for all), scored as an emulator's weights are; then,
    /// for a hidden contract, the same from the initial states of each
    /// hidden twin, whose reference is the model's own forecasts.
    fn go_emulator(&mut self, record: &mut SubmissionRecord, sandbox: &Runtime, loaded: &LoadedComponent, bytes: Vec<u8>) -> Result<Outcome, Verdict> {
        let budget = self.contract.file.budget;
        let reference = Reference::load(self.registry, self.frozen, self.contract)?;
        let config = serde_json::to_string(&self.options.config).expect("JSON serializes");
        let hidden = self.frozen.hidden.clone();
        let mut experiments: Vec<(String, Option<[u8; 32]>)> = vec![("forecasts".into(), None)];
        if let Some(h) = &hidden {
            let seeds = h.seeds(self.registry, &self.contract.id)?;
            experiments.extend(seeds.into_iter().enumerate().map(|(i, s)| (format!("hidden {}", i + 1), Some(s))));
        }
        let spec = self.contract.file.reference.forecasts.clone().context("a forecast contract")?;
        let mut components = Components::load(self.registry, self.runtime, self.frozen)?;
        let (mut fuel_spent, mut public, mut hidden_scores) = (0, None, Vec::new());
        for (experiment, secret) in experiments {
            let at = |v: Verdict, lead: Option<usize>| match v {
                Verdict::Disqualified(d, b) => Verdict::Disqualified(Disqualified { experiment: Some(experiment.clone()), cycle: lead, ..d }, b),
                other => other,
            };
            // The experiment's reference: the frozen one, or a hidden
            // twin's forecasts (in memory only).
            let hidden_truth = match secret {
                None => None,
                Some(seed) => {
                    let h = hidden.as_ref().expect("hidden experiments come from [hidden]");
                    let set = h.plugin_set(self.registry, self.contract, Vec::new(), Some(seed))?;
                    let generated = super::forecast::generate(&set, &spec, self.runtime, Some(&mut *self.registry), self.progress)
                        .with_context(|| format!("generating the {experiment} experiment"))?;
                    let id = geohost_registry::artifact_id(&generated.bytes);
                    Some((TruthFile::parse(&id, generated.bytes)?, id))
                }
            };
            let (truth, truth_id) = match &hidden_truth {
                Some((t, id)) => (t, id.as_str()),
                None => (&reference.truth, self.frozen.reference.as_str()),
            };
            let size = truth.forecast.as_ref().map(|(initial, _)| initial.cols).context("the reference has no forecasts")?;
            let mut model = WasmForward::with_budget(sandbox, loaded, &config, Some(FuelBudget { total: budget.fuel_total, spent: fuel_spent }))
                .map_err(|e| at(disqualified("init", e, Some(&bytes)), None))?;
            let info = geohost_sandbox::model::ForwardModel::info(&model).clone();
            (record.name, record.version) = (Some(info.name.clone()), Some(info.version.clone()));
            if info.state_size != size {
                let reason = format!(
                    "it describes a state of {} values, but the contract's model has {size}: configure it for the model the contract names",
                    info.state_size
                );
                return Err(at(disqualified("init", reason, Some(&bytes)), None));
            }
            let outcome = super::forecast::forecast_reference(&mut model, &info.name, truth, truth_id);
            let used = model.accounting();
            record.accounting.push(ExperimentAccounting { experiment: experiment.clone(), used });
            fuel_spent += used.fuel;
            let output = match outcome {
                Ok(output) => output,
                Err(e) => match e.downcast_ref::<super::forecast::ForecastLead>() {
                    Some(lead) => return Err(at(disqualified("run", format!("{e:#}"), Some(&bytes)), Some(lead.0))),
                    None => return Err(e.context(format!("forecasting the {experiment} experiment")).into()),
                },
            };
            match hidden_truth {
                None => {
                    let candidate = Candidate { id: record.component.clone(), pending: None, prepared: Some(output) };
                    public = Some(score_frozen(self.registry, self.runtime, self.contract, self.frozen, &[candidate], RUN_BY_HOST)?);
                }
                Some((truth, _)) => {
                    let reference = Reference::new(truth, self.contract)?;
                    hidden_scores.push(score_output(&info.name, &record.component, &output, &reference, None, &mut components, true)?.0);
                }
            }
        }
        let hidden = match &hidden {
            Some(h) => {
                let mean = mean_scores(&hidden_scores);
                let checks = run_checks(self.contract, &mean, 0, &[], None);
                let verdict = verdict_of(&checks).to_string();
                let metric = primary_metric(self.contract, self.frozen);
                let ranking = rank(self.contract, &metric, std::iter::once(&mean), None, &[]);
                Some(HiddenScores {
                    experiments: h.experiments,
                    cycles: h.cycles,
                    commitments: h.commitments.clone(),
                    revealed: super::hidden::is_revealed(self.registry, &self.contract.id)?,
                    candidates: vec![HiddenCandidate { scored: mean, per_experiment: hidden_scores.into_iter().map(|s| s.metrics).collect(), checks, verdict }],
                    oracle: None,
                    baselines: Vec::new(),
                    ranking,
                })
            }
            None => None,
        };
        Ok((public, hidden, Some(bytes)))
    }

    /// A submitted filter: the public experiment, then each hidden one.
    fn go_filter(&mut self, record: &mut SubmissionRecord, sandbox: &Runtime, loaded: &LoadedComponent, bytes: Vec<u8>) -> Result<Outcome, Verdict> {
        let budget = self.contract.file.budget;
        let path = self.options.component.as_path();
        let hidden = self.frozen.hidden.clone();
        let public_set = self.experiment_set(hidden.as_ref(), Vec::new(), None)?;
        let problem = self.problem(&public_set)?;
        let config = serde_json::to_string(&self.options.config).expect("JSON serializes");

        let mut experiments: Vec<(String, Option<[u8; 32]>)> = vec![("public".into(), None)];
        if let Some(h) = &hidden {
            let seeds = h.seeds(self.registry, &self.contract.id)?;
            experiments.extend(seeds.into_iter().enumerate().map(|(i, s)| (format!("hidden {}", i + 1), Some(s))));
        }
        let mut fuel_spent = 0;
        let mut public = None;
        let mut hidden_runs = Vec::new();
        for (experiment, secret) in experiments {
            let at = |mut v: Verdict| {
                if let Verdict::Disqualified(d, _) = &mut v {
                    d.experiment = Some(experiment.clone());
                }
                v
            };
            // A fresh instance per experiment: nothing carries over from
            // one experiment to the next, and the total budget is shared.
            let filter = WasmFilter::new(sandbox, loaded, &config, &problem, Some(FuelBudget { total: budget.fuel_total, spent: fuel_spent }))
                .map_err(|e| at(disqualified("init", e, Some(&bytes))))?;
            (record.name, record.version, record.members) = (Some(filter.info.name.clone()), Some(filter.info.version.clone()), Some(filter.info.members));
            let submission = Submission::new(record.component.clone(), self.options.config.clone(), filter);
            let meter = submission.meter();
            let mut methods = vec![Method::from_method(submission)?];
            if secret.is_some() {
                methods.extend(self.hidden_references(hidden.as_ref().expect("hidden experiments come from [hidden]"))?);
            }
            let set = self.experiment_set(hidden.as_ref(), methods, secret)?;
            let cycles = secret.and(hidden.as_ref().map(|h| h.cycles));
            let outcome = super::hidden::run_experiment(&set, self.runtime, self.registry, cycles, self.progress);
            let used = meter.accounting();
            record.accounting.push(ExperimentAccounting { experiment: experiment.clone(), used });
            fuel_spent += used.fuel;
            let outputs = match outcome {
                Ok(outputs) => outputs,
                Err(e) => match e.downcast_ref::<FailedAt>() {
                    Some(failed) => {
                        // The message below the submission's marker: the
                        // sandbox's own words say what went wrong.
                        let marker = failed.to_string();
                        let reason = e.chain().map(|c| c.to_string()).skip_while(|c| *c != marker).skip(1).collect::<Vec<_>>().join(": ");
                        let mut v = at(disqualified("run", reason, Some(&bytes)));
                        if let Verdict::Disqualified(d, _) = &mut v {
                            d.cycle = Some(failed.cycle);
                        }
                        return Err(v);
                    }
                    None => return Err(e.context(format!("running the {experiment} experiment")).into()),
                },
            };
            match secret {
                None => {
                    if outputs.truth_id != self.frozen.reference {
                        return Err(anyhow::anyhow!(
                            "the contract's public experiment gives truth {}, not the frozen reference {}: its plugin-set or plugins changed since pre-registration",
                            outputs.truth_id,
                            self.frozen.reference
                        )
                        .into());
                    }
                    let (label, bytes) = outputs.outputs.into_iter().next().expect("the submission's output");
                    let candidate = Candidate { id: record.component.clone(), pending: Some((bytes, label, path.display().to_string())), prepared: None };
                    public = Some(score_frozen(self.registry, self.runtime, self.contract, self.frozen, &[candidate], RUN_BY_HOST)?);
                }
                Some(_) => hidden_runs.push(outputs),
            }
        }
        let hidden = match &hidden {
            Some(h) => Some(self.score_hidden(h, &record.component, hidden_runs)?),
            None => None,
        };
        Ok((public, hidden, Some(bytes)))
    }

    /// The experiment's plugin-set: the frozen one of a hidden contract,
    /// else the contract's reference plugin-set file.
    fn experiment_set(&self, hidden: Option<&FrozenHidden>, methods: Vec<Method>, secret: Option<[u8; 32]>) -> Result<Loaded> {
        match hidden {
            Some(h) => h.plugin_set(self.registry, self.contract, methods, secret),
            None => {
                let file = self.contract.file.reference.plugin_set.as_ref().expect("checked: a plugin-set reference");
                let mut set = PluginSet::load(&self.contract.dir().join(file)).context("field `reference.plugin_set`")?;
                (set.set.step3, set.set.step4, set.methods) = (None, None, methods);
                Ok(set)
            }
        }
    }

    /// What the filter is told at `init`, from the experiment's plugins.
    fn problem(&self, set: &Loaded) -> Result<Problem> {
        let (model, ..) = crate::run::load_model(self.runtime, Some(self.registry), set)?;
        let (obs, ..) = crate::run::load_obs(self.runtime, Some(self.registry), set, model.info())?;
        let (m, o) = (model.info(), geohost_sandbox::model::ObsOperator::info(&obs));
        let e = &set.set.experiment;
        Ok(Problem {
            state_size: m.state_size,
            obs_size: o.obs_size,
            noise_variance: o.noise_variance.clone(),
            locations: o.locations.clone(),
            grid: m.grid,
            dt: e.dt.unwrap_or(m.default_dt) * e.steps_per_obs as f64,
        })
    }

    /// The methods rerun on each hidden experiment: the method baselines
    /// (in the contract's order), then the oracle's method.
    fn hidden_references(&self, hidden: &FrozenHidden) -> Result<Vec<Method>> {
        let mut methods: Vec<Method> =
            self.contract.file.baselines.iter().filter_map(|b| b.method_spec()).enumerate().map(|(i, m)| m.validate(i + 1)).collect::<Result<_>>()?;
        methods.extend(hidden.oracle()?);
        Ok(methods)
    }

    /// Score every hidden experiment's outputs, average them, check and
    /// rank the submission on the averages.
    fn score_hidden(&mut self, hidden: &FrozenHidden, component: &str, runs: Vec<super::hidden::ExperimentOutputs>) -> Result<HiddenScores> {
        let mut components = Components::load(self.registry, self.runtime, self.frozen)?;
        let method_baselines: Vec<&super::prereg::FrozenBaseline> =
            self.contract.file.baselines.iter().zip(&self.frozen.baselines).filter(|(spec, _)| spec.method.is_some()).map(|(_, b)| b).collect();
        let has_oracle = hidden.oracle_method.is_some();
        let (mut submission, mut baselines, mut oracle) = (Vec::new(), vec![Vec::new(); method_baselines.len()], Vec::new());
        for run in runs {
            let n = run.outputs.len();
            let oracle_output = if has_oracle { Some(run.output(n - 1)?) } else { None };
            let mine = run.output(0)?;
            let outputs: Vec<AnalysisFile> = (1..n).map(|i| run.output(i)).collect::<Result<_>>()?;
            let reference = Reference::new(run.truth, self.contract)?;
            submission.push(score_output(&mine.method, component, &mine, &reference, oracle_output.as_ref(), &mut components, true)?.0);
            for (i, b) in method_baselines.iter().enumerate() {
                baselines[i].push(score_output(&b.label, &b.id, &outputs[i], &reference, oracle_output.as_ref(), &mut components, false)?.0);
            }
            if let (Some(o), Some(id)) = (&oracle_output, &self.frozen.oracle) {
                oracle.push(score_output(&o.method, id, o, &reference, oracle_output.as_ref(), &mut components, false)?.0);
            }
        }
        let baselines: Vec<Scored> = baselines.iter().map(|runs| mean_scores(runs)).collect();
        let oracle = (!oracle.is_empty()).then(|| mean_scores(&oracle));
        let mean = mean_scores(&submission);
        let checks = run_checks(self.contract, &mean, 0, &baselines, oracle.as_ref());
        let verdict = verdict_of(&checks).to_string();
        let metric = primary_metric(self.contract, self.frozen);
        let ranking = rank(self.contract, &metric, std::iter::once(&mean), oracle.as_ref(), &baselines);
        let per_experiment = submission.into_iter().map(|s| s.metrics).collect();
        Ok(HiddenScores {
            experiments: hidden.experiments,
            cycles: hidden.cycles,
            commitments: hidden.commitments.clone(),
            revealed: super::hidden::is_revealed(self.registry, &self.contract.id)?,
            candidates: vec![HiddenCandidate { scored: mean, per_experiment, checks, verdict }],
            oracle,
            baselines,
            ranking,
        })
    }
}

/// Check the size cap before reading, compile in a child under the
/// compile limits, then load from the cache only.
pub(super) fn load_component(
    options: &SubmitOptions,
    budget: &super::contract::Budget,
    record: &mut SubmissionRecord,
    label: &str,
    world: World,
) -> Result<(Runtime, LoadedComponent, Vec<u8>), Verdict> {
    let budget = *budget;
    let path = options.component.as_path();
    let cap = budget.max_component_mib.saturating_mul(1 << 20);
    if record.size > cap {
        return Err(disqualified(
            "size",
            format!(
                "{} is {} bytes, over the contract's cap of {} MiB (`[budget] max_component_mib`); it was not read",
                path.display(),
                record.size,
                budget.max_component_mib
            ),
            None,
        ));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read submission {}", path.display()))?;
    if bytes.len() as u64 > cap {
        return Err(disqualified("size", format!("{} grew past the cap of {} MiB while being read", path.display(), budget.max_component_mib), None));
    }
    record.component = geohost_registry::artifact_id(&bytes);

    // Compiled in a child under the compile limits, then loaded from
    // the cache only.
    let limits = budget.limits();
    let sandbox = Runtime::new(limits, Some(options.cache_dir.clone()))?;
    match isolate::compile_in_child(&options.exe, path, world, &limits, &options.cache_dir, budget.compile_limits()) {
        Ok(()) => {}
        Err(isolate::IsolateError::Spawn { exe, reason }) => return Err(anyhow::anyhow!("cannot run the compiling child process {exe}: {reason}").into()),
        Err(e @ isolate::IsolateError::Limits { .. }) => return Err(disqualified("compile", e, Some(&bytes))),
        Err(isolate::IsolateError::Refused(message)) => return Err(disqualified("load", message, Some(&bytes))),
    }
    let loaded = sandbox.load_compiled(label, path, &bytes, world).map_err(|e| disqualified("load", e, Some(&bytes)))?;
    Ok((sandbox, loaded, bytes))
}

/// The mean of each metric over experiments (vectors element-wise); a
/// metric missing from any experiment is not applicable to the mean.
fn mean_scores(runs: &[Scored]) -> Scored {
    let first = &runs[0];
    let mut metrics = BTreeMap::new();
    let mut not_applicable = BTreeMap::new();
    for r in runs {
        not_applicable.extend(r.not_applicable.clone());
    }
    for (name, value) in &first.metrics {
        let values: Vec<&MetricValue> = runs.iter().filter_map(|r| r.metrics.get(name)).collect();
        if values.len() != runs.len() {
            not_applicable.insert(name.clone(), "not computed on every hidden experiment".into());
            continue;
        }
        let n = runs.len() as f64;
        let mean = match value {
            MetricValue::Scalar(_) => MetricValue::Scalar(values.iter().map(|v| if let MetricValue::Scalar(x) = v { *x } else { f64::NAN }).sum::<f64>() / n),
            MetricValue::Vector(v0) => {
                let mut sum = vec![0.0; v0.len()];
                for v in &values {
                    match v {
                        MetricValue::Vector(v) if v.len() == sum.len() => sum.iter_mut().zip(v).for_each(|(s, x)| *s += x),
                        _ => sum.iter_mut().for_each(|s| *s = f64::NAN),
                    }
                }
                MetricValue::Vector(sum.into_iter().map(|s| s / n).collect())
            }
        };
        metrics.insert(name.clone(), mean);
    }
    Scored { label: first.label.clone(), id: first.id.clone(), metrics, not_applicable }
}

/// Register a submission: the component (kind `submission`) unless it was
/// disqualified or never read, then its report (`score::register`).
/// Returns the report's id.
pub fn register(registry: &mut Registry, submitted: &Submitted, contract: &Contract, report_path: &Path) -> Result<String> {
    if submitted.disqualified().is_none() {
        let bytes = submitted.bytes.as_ref().expect("a scored submission was read");
        let file = &contract.file;
        add_submission(registry, bytes, submitted.name.as_deref(), submitted.record(), file.target_step, file.l_transition.clone(), &contract.id)?;
    }
    super::score::register(registry, &submitted.report, report_path)
}
