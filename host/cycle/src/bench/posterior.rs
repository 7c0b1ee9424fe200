//! Posterior benchmarks: step 5 of a static problem, scored on
//! observations the submitter never sees.
//!
//! A posterior benchmark is a TOML file with a `[posterior]` table naming a
//! static plugin-set (simulator, observation operator, prior, and an
//! `mcmc` [[method]]: the oracle). A candidate is a `posterior` component
//! (a submission, or a predictor exported with `geohost export
//! posterior`); a results file is never accepted, since anyone can rerun
//! the public observation's MCMC. Each experiment is one observation: the
//! public one is the plugin-set's own (`[experiment]`); each hidden one has
//! a true θ drawn from the prior with a secret seed (kept, with commitments,
//! exactly as for a hidden filter contract: `super::hidden`) and its
//! synthetic observation. For every experiment the host runs the MCMC
//! oracle at scoring time, asks the candidate (and every `[[baselines]]`
//! predictor) for `draws` draws, and scores each with the C2ST against
//! the oracle's samples (0.5: indistinguishable). The official score is
//! the mean over the hidden experiments (the public one when there are
//! none); `max_c2st` makes it a pass/fail check.
//!
//! ```toml
//! name = "plume-step5"
//! version = "1.0.0"
//! task = "Amortized posterior of the plume source from one column image"
//! [posterior]
//! plugin_set = "../cycles/plume-quick.toml"
//! draws = 2000
//! max_c2st = 0.65
//! [hidden]
//! experiments = 3
//! [[baselines]]
//! predictor = "plume-posterior-quick-stage1"
//! [budget]                  # as for every submission
//! fuel_total = 1_000_000_000_000
//! ```

use super::component;
use super::contract::Budget;
use super::hidden::commitment;
use super::score::{ContractRef, SubmissionRecord, DISQUALIFIED};
use super::submit::{disqualified, load_component, start_record, SubmitOptions, Verdict};
use crate::static_run::{forward, plugin_ids, setup, LoadedStatic, StaticMethod, StaticSet};
use anyhow::{bail, Context, Result};
use geohost_da::params::{mcmc, synthesize, Problem};
use geohost_learn::c2st::c2st;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::ObsOperator;
use geohost_sandbox::{FuelBudget, Runtime, WasmPosterior, World};
use nalgebra::DMatrix;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Most hidden observations a posterior benchmark may ask for (each runs
/// the MCMC oracle at scoring time).
pub const MAX_HIDDEN: usize = 32;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PosteriorContractFile {
    pub name: String,
    pub version: String,
    pub task: String,
    pub posterior: PosteriorSpec,
    pub hidden: Option<HiddenObservations>,
    #[serde(default)]
    pub baselines: Vec<PredictorBaseline>,
    #[serde(default)]
    pub budget: Budget,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PosteriorSpec {
    /// The static plugin-set (relative to the contract file).
    pub plugin_set: PathBuf,
    /// Draws asked of each candidate per observation.
    #[serde(default = "default_draws")]
    pub draws: usize,
    /// Fail a candidate whose official C2ST is above this.
    pub max_c2st: Option<f64>,
}

fn default_draws() -> usize {
    2000
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenObservations {
    /// Hidden observations, each with a θ drawn from the prior.
    pub experiments: usize,
    /// Anti-probing: hidden scorings one submitter may have per 24 hours
    /// (`bench submit --submitter NAME` then required; see `super::probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scorings_per_day: Option<u32>,
    /// Anti-probing: the leaderboard publishes hidden scores rounded to
    /// this until the seeds are revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_precision: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PredictorBaseline {
    /// A registered step-5 predictor (reference with role predictor).
    pub predictor: String,
}

/// Whether a contract file is a posterior benchmark (has `[posterior]`).
pub fn is_posterior(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).map(|t| t.contains_key("posterior")).unwrap_or(false)
}

/// A loaded, validated posterior benchmark.
pub struct PosteriorContract {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Registry id of the file's bytes.
    pub id: String,
    pub file: PosteriorContractFile,
    pub set: LoadedStatic,
    /// The set's MCMC method: the oracle.
    pub oracle: StaticMethod,
}

impl PosteriorContract {
    pub fn load(path: &Path) -> Result<PosteriorContract> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read contract file {}", path.display()))?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("contract file {} is not UTF-8", path.display()))?;
        let file: PosteriorContractFile = toml::from_str(text).with_context(|| format!("invalid contract file {}", path.display()))?;
        let fail = |msg: String| anyhow::anyhow!("invalid contract file {}: {msg}", path.display());
        for (field, value) in [("name", &file.name), ("version", &file.version), ("task", &file.task)] {
            if value.trim().is_empty() || value.contains('@') {
                return Err(fail(format!("field `{field}` must be non-empty and without `@`")));
            }
        }
        if !(100..=100_000).contains(&file.posterior.draws) {
            return Err(fail(format!("field `posterior.draws`: expected 100 to 100000 draws, got {}", file.posterior.draws)));
        }
        if file.posterior.max_c2st.is_some_and(|m| !(0.5..=1.0).contains(&m)) {
            return Err(fail("field `posterior.max_c2st`: a C2ST lies between 0.5 and 1".into()));
        }
        if let Some(h) = &file.hidden {
            if !(1..=MAX_HIDDEN).contains(&h.experiments) {
                return Err(fail(format!("field `hidden.experiments`: expected 1 to {MAX_HIDDEN}, got {}", h.experiments)));
            }
            super::probing::validate(h.max_scorings_per_day, h.publish_precision).map_err(|e| fail(e.to_string()))?;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let set = StaticSet::load(&dir.join(&file.posterior.plugin_set)).map_err(|e| fail(format!("field `posterior.plugin_set`: {e:#}")))?;
        let oracle =
            set.set.methods.iter().find(|m| matches!(m, StaticMethod::Mcmc { .. })).cloned().ok_or_else(|| {
                fail(format!("the plugin-set {} has no mcmc [[method]]: the oracle of a posterior benchmark is its MCMC", set.path.display()))
            })?;
        if set.set.experiment.is_none() {
            return Err(fail(format!(
                "the plugin-set {} has no [experiment]: a posterior benchmark's public observation is its synthetic one",
                set.path.display()
            )));
        }
        Ok(PosteriorContract { path: path.into(), id: geohost_registry::artifact_id(&bytes), bytes, file, set, oracle })
    }

    pub fn label(&self) -> String {
        format!("{}@{}", self.file.name, self.file.version)
    }
}

/// What pre-registration freezes (the contract's registry metadata).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FrozenPosterior {
    pub contract: String,
    /// The static plugin-set's bytes and its simulator and observation
    /// operator, by registry id.
    pub plugin_set: String,
    pub simulator: String,
    pub observations: String,
    pub oracle: String,
    pub draws: usize,
    pub max_c2st: Option<f64>,
    /// Baseline predictors: (label, id).
    pub baselines: Vec<(String, String)>,
    /// Commitments of the hidden observations' secret seeds.
    pub commitments: Vec<String>,
}

/// Pre-register: register the plugin-set and its plugins, resolve the
/// baselines, draw the secret seeds. Returns the record and whether it is
/// new (registering the same file again changes nothing).
pub fn preregister(registry: &mut Registry, runtime: &Runtime, contract: &PosteriorContract) -> Result<(FrozenPosterior, bool)> {
    if let Some(frozen) = component::already_registered(registry, &contract.id, &contract.file.name, &contract.file.version)? {
        return Ok((frozen, false));
    }
    if contract.file.hidden.as_ref().is_some_and(|h| h.experiments > 0) {
        registry.ensure_private()?;
    }
    let mut baselines = Vec::new();
    for (i, b) in contract.file.baselines.iter().enumerate() {
        let artifact = registry.get_with_role(&b.predictor, "predictor").with_context(|| format!("[[baselines]] #{}: predictor `{}`", i + 1, b.predictor))?;
        // Loadable now, not first at scoring time.
        geohost_learn::refine::Predictor::from_safetensors(&artifact.id, &registry.read(&artifact.id)?)?;
        baselines.push((artifact.name, artifact.id));
    }
    let setup = setup(&contract.set, runtime, Some(registry))?;
    let ids = plugin_ids(&setup.components, Some(registry))?;
    let set_id = component::register_set(registry, &contract.set.bytes, &contract.set.name, contract.set.set.transition.clone())?;
    let seeds = super::hidden::draw_seeds(contract.file.hidden.as_ref().map_or(0, |h| h.experiments))?;
    let frozen = FrozenPosterior {
        contract: contract.id.clone(),
        plugin_set: set_id.clone(),
        simulator: ids[0].clone(),
        observations: ids[1].clone(),
        oracle: contract.oracle.label(),
        draws: contract.file.posterior.draws,
        max_c2st: contract.file.posterior.max_c2st,
        baselines,
        commitments: seeds.iter().map(|s| commitment(s, &contract.id)).collect(),
    };
    component::register_frozen(
        registry,
        &contract.bytes,
        NewArtifact {
            name: contract.file.name.clone(),
            version: Some(contract.file.version.clone()),
            step: Some(5),
            l_transition: contract.set.set.transition.clone(),
            metadata: serde_json::json!({ "posterior": true, "frozen": frozen }),
            ..Default::default()
        },
        &set_id,
        &frozen.baselines,
        &seeds,
    )?;
    Ok((frozen, true))
}

/// One observation's scores.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExperimentScores {
    /// `public` or `hidden N`.
    pub experiment: String,
    /// The oracle's largest split-R̂ (above 1.05: not converged).
    pub oracle_r_hat: f64,
    /// The candidate's C2ST against the oracle (absent when disqualified).
    pub candidate: Option<f64>,
    /// Each baseline's, in the contract's order.
    pub baselines: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ranked {
    pub label: String,
    pub role: String,
    pub c2st: f64,
}

/// A posterior benchmark's report: deterministic (no timestamps), so
/// rescoring the same component gives the same bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PosteriorReport {
    pub kind: String,
    pub contract: ContractRef,
    pub oracle: String,
    pub draws: usize,
    pub max_c2st: Option<f64>,
    pub commitments: Vec<String>,
    /// Whether the seeds had been revealed when this was scored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revealed: bool,
    pub candidate: String,
    pub provenance: String,
    pub submission: SubmissionRecord,
    pub baselines: Vec<(String, String)>,
    pub experiments: Vec<ExperimentScores>,
    /// Mean C2ST over the hidden observations (the public one's when there
    /// are none): what ranks.
    pub candidate_c2st: Option<f64>,
    pub baseline_c2st: Vec<f64>,
    /// Lower is better.
    pub ranking: Vec<Ranked>,
    pub verdict: String,
}

/// A 64-bit seed for `what` from an experiment's seed material.
fn derive(what: &str, material: &[u8]) -> u64 {
    u64::from_le_bytes(blake3::derive_key(&format!("geohost posterior benchmark {what}"), material)[..8].try_into().expect("8 bytes"))
}

/// Run and score a `posterior` component. Returns the report and, when it
/// was read, the component's bytes (for registration).
pub fn submit(registry: &mut Registry, runtime: &Runtime, contract: &PosteriorContract, options: &SubmitOptions) -> Result<(PosteriorReport, Option<Vec<u8>>)> {
    let frozen: FrozenPosterior = component::frozen(registry, &contract.id, &contract.label(), &contract.path)?;
    component::check_set(&contract.set.path, &contract.set.bytes, &frozen.plugin_set, &contract.label())?;
    let mut setup = setup(&contract.set, runtime, Some(registry))?;
    let ids = plugin_ids(&setup.components, None)?;
    component::check_plugins(&contract.set.path, &ids, [&frozen.simulator, &frozen.observations], &contract.label())?;
    let seeds = super::hidden::checked_seeds(registry, &contract.id, &frozen.commitments)?;
    let budget = contract.file.budget;
    let (mut record, label) = start_record(options, budget, World::Posterior)?;
    let size = record.size;
    let mut bytes = None;
    let prior = setup.prior.clone();
    let r = setup.obs.info().noise_variance.clone();
    let sim_seed = contract.set.set.seed();

    // The observations: the public one, then one per secret seed.
    let mut observations = Vec::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sim_seed);
    let (_, y) = synthesize((&mut setup.simulator, &mut setup.obs), &prior, contract.set.set.truth(), sim_seed, &mut rng)?;
    observations.push(("public".to_string(), y, sim_seed.to_le_bytes().to_vec()));
    for (k, seed) in seeds.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(*seed);
        let (_, y) = synthesize((&mut setup.simulator, &mut setup.obs), &prior, None, sim_seed, &mut rng)?;
        observations.push((format!("hidden {}", k + 1), y, seed.to_vec()));
    }

    let StaticMethod::Mcmc { walkers, steps, burn_in, temperatures, synthetic_likelihood } = contract.oracle else {
        bail!("the oracle of a posterior benchmark is an MCMC method")
    };
    crate::static_run::check_likelihoods(geohost_sandbox::model::Simulator::info(&setup.simulator), &r, std::slice::from_ref(&contract.oracle))?;
    let baselines: Vec<geohost_learn::refine::Predictor> =
        frozen.baselines.iter().map(|(_, id)| Ok(geohost_learn::refine::Predictor::from_safetensors(id, &registry.read(id)?)?.0)).collect::<Result<_>>()?;
    let draws = frozen.draws;
    let mut experiments = Vec::new();
    // The component, loaded and matched to the problem; else the reason
    // it is disqualified.
    let mut candidate = None;
    match load_component(options, &budget, &mut record, &label, World::Posterior) {
        Err(v) => record.disqualified = verdict_of(v)?,
        Ok((sandbox, loaded, read)) => {
            bytes = Some(read);
            match WasmPosterior::new(&sandbox, &loaded, &serde_json::to_string(&options.config)?, Some(FuelBudget { total: budget.fuel_total, spent: 0 })) {
                Err(e) => record.disqualified = verdict_of(disqualified("init", e, None))?,
                Ok(p) => {
                    (record.name, record.version) = (Some(p.info.name.clone()), Some(p.info.version.clone()));
                    if p.info.parameters != prior.names || p.info.data_size != r.len() {
                        let reason = format!(
                            "it samples parameters [{}] from data of size {}, but the contract's problem has parameters [{}] and data of size {}",
                            p.info.parameters.join(", "),
                            p.info.data_size,
                            prior.names.join(", "),
                            r.len()
                        );
                        record.disqualified = verdict_of(disqualified("init", reason, None))?;
                    } else {
                        candidate = Some(p);
                    }
                }
            }
        }
    }
    for (experiment, y, material) in &observations {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive("oracle", material));
        let mut problem = Problem {
            prior: prior.clone(),
            simulator: &mut setup.simulator,
            obs: &mut setup.obs,
            y: y.clone(),
            r: r.clone().into(),
            seed: sim_seed,
            simulations: 0,
            synthetic: synthetic_likelihood,
        };
        let chains = mcmc::run(&mut problem, &mcmc::Spec { walkers, steps, burn_in, a: 2.0, temperatures }, &mut rng)
            .with_context(|| format!("the MCMC oracle on the {experiment} observation"))?;
        drop(problem);
        let oracle_r_hat = chains.diagnostics.r_hat.iter().cloned().fold(1.0, f64::max);
        let mut pick = rand_chacha::ChaCha8Rng::seed_from_u64(derive("subsample", material));
        let cols = rand::seq::index::sample(&mut pick, chains.samples.ncols(), draws.min(chains.samples.ncols())).into_vec();
        let reference = chains.samples.select_columns(&cols);
        let score = |q: &DMatrix<f64>| c2st(&reference, q, Default::default());
        let mut candidate_c2st = None;
        if let Some(posterior) = candidate.as_mut() {
            let result = posterior.sample(y.as_slice(), draws, derive("draws", material));
            match result {
                Ok(q) => candidate_c2st = Some(score(&q)?),
                Err(e) => {
                    let mut d = verdict_of(disqualified("run", e, None))?;
                    if let Some(d) = &mut d {
                        d.experiment = Some(experiment.clone());
                    }
                    record.disqualified = d;
                    candidate = None;
                }
            }
        }
        let mut baseline_c2st = Vec::new();
        for (b, (label, _)) in baselines.iter().zip(&frozen.baselines) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(derive("baseline draws", material));
            let q = b
                .condition(y.as_slice(), &mut forward(&mut setup.simulator, &mut setup.obs, sim_seed))
                .and_then(|c| c.sample(draws, &mut rng))
                .with_context(|| format!("baseline {label} on the {experiment} observation"))?;
            baseline_c2st.push(score(&q)?);
        }
        experiments.push(ExperimentScores { experiment: experiment.clone(), oracle_r_hat, candidate: candidate_c2st, baselines: baseline_c2st });
    }
    if let Some(posterior) = &candidate {
        record.accounting = vec![super::score::ExperimentAccounting { experiment: "all".into(), used: posterior.accounting() }];
        record.fuel_total = posterior.accounting().fuel;
    }

    // The official score: the hidden mean, else the public one.
    let official: Vec<&ExperimentScores> = match experiments.len() {
        1 => experiments.iter().collect(),
        _ => experiments.iter().skip(1).collect(),
    };
    let mean = |f: &dyn Fn(&ExperimentScores) -> Option<f64>| -> Option<f64> {
        let v: Option<Vec<f64>> = official.iter().map(|e| f(e)).collect();
        v.map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let candidate_c2st = if record.disqualified.is_some() { None } else { mean(&|e| e.candidate) };
    let baseline_c2st: Vec<f64> = (0..frozen.baselines.len()).map(|i| mean(&|e| Some(e.baselines[i])).expect("every baseline is scored")).collect();
    let mut ranking: Vec<Ranked> =
        frozen.baselines.iter().zip(&baseline_c2st).map(|((l, _), c)| Ranked { label: l.clone(), role: "baseline".into(), c2st: *c }).collect();
    if let Some(c) = candidate_c2st {
        ranking.push(Ranked { label: record.name.clone().unwrap_or(label.clone()), role: "candidate".into(), c2st: c });
    }
    ranking.sort_by(|a, b| a.c2st.total_cmp(&b.c2st));
    let verdict = match (&record.disqualified, candidate_c2st, frozen.max_c2st) {
        (Some(_), ..) => DISQUALIFIED.to_string(),
        (None, Some(c), Some(max)) if c > max => "fail".into(),
        _ => "pass".into(),
    };
    let report = PosteriorReport {
        kind: "posterior".into(),
        contract: ContractRef {
            id: contract.id.clone(),
            name: contract.file.name.clone(),
            version: contract.file.version.clone(),
            task: contract.file.task.clone(),
            target_step: Some(5),
            oracle_step: Some(2),
            l_transition: contract.set.set.transition.clone(),
        },
        oracle: frozen.oracle.clone(),
        draws,
        max_c2st: frozen.max_c2st,
        commitments: frozen.commitments.clone(),
        revealed: super::hidden::is_revealed(registry, &contract.id)?,
        candidate: if record.component.is_empty() { format!("(not read: {size} bytes)") } else { record.component.clone() },
        provenance: super::score::RUN_BY_HOST.into(),
        submission: record,
        baselines: frozen.baselines.clone(),
        experiments,
        candidate_c2st,
        baseline_c2st,
        ranking,
        verdict,
    };
    Ok((report, bytes))
}

/// A disqualification, or the host's own error.
pub(super) fn verdict_of(v: Verdict) -> Result<Option<super::score::Disqualified>> {
    match v {
        Verdict::Disqualified(d, _) => Ok(Some(d)),
        Verdict::Error(e) => Err(e),
    }
}

/// The report as a table.
pub fn table(report: &PosteriorReport) -> String {
    let mut s = String::new();
    let c = &report.contract;
    let _ = writeln!(
        s,
        "posterior benchmark {}@{} ({}): C2ST against {} ({} draws; 0.5 = indistinguishable)",
        c.name, c.version, c.id, report.oracle, report.draws
    );
    let mut header = format!("{:<12} {:>10}", "experiment", "candidate");
    for (label, _) in &report.baselines {
        let _ = write!(header, " {:>28}", label);
    }
    let _ = writeln!(s, "{header}  oracle R-hat");
    for e in &report.experiments {
        let mut row = format!("{:<12} {:>10}", e.experiment, e.candidate.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into()));
        for v in &e.baselines {
            let _ = write!(row, " {:>28.3}", v);
        }
        let _ = writeln!(s, "{row}  {:.3}", e.oracle_r_hat);
    }
    if report.revealed {
        let _ = writeln!(s, "the seeds were revealed before this was scored: the hidden scores are not blind");
    }
    let order: Vec<String> = report.ranking.iter().map(|r| format!("{} ({}) {:.3}", r.label, r.role, r.c2st)).collect();
    let _ = writeln!(s, "ranking by mean C2ST{}: {}", if report.experiments.len() > 1 { " (hidden observations)" } else { "" }, order.join(" < "));
    component::submission_lines(&mut s, &report.submission, &report.provenance, &report.candidate, "observation", &report.verdict);
    s
}

/// Register the report (kind `report`, step 5, `derived_from` the
/// contract) and, unless it was disqualified, the component (kind
/// `submission`, `scored_by` the report). Returns the report's id.
pub fn register(registry: &mut Registry, report: &PosteriorReport, bytes: Option<&[u8]>, name: Option<&str>, path: &Path) -> Result<String> {
    let json = serde_json::to_vec_pretty(report)?;
    component::register_report(registry, &json, &report.contract, &report.verdict, &report.submission, bytes, name, path)
}
