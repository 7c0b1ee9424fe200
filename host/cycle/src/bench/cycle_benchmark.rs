//! Cycle benchmarks: the stage contracts of one domain's cycle, scored
//! together on a set of candidate artifacts (step → artifact) into one
//! cycle report.
//!
//! The cycle file is TOML: `name`, `version`, `domain` and one
//! `[[stages]] contract = "PATH"` per stage (paths relative to the file).
//! Each stage contract is a cycle-stage contract (it has `target_step`);
//! two stages may not target the same step. Like a contract, a cycle file
//! is pre-registered by `bench register` and frozen from then on.

use super::contract::Contract;
use super::prereg;
use super::score::{self, Report};
use crate::progress::ProgressFactory;
use anyhow::{bail, Context, Result};
use geohost_registry::{Filter, NewArtifact, Registry};
use geohost_sandbox::Runtime;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CycleFile {
    pub name: String,
    pub version: String,
    pub domain: String,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub contract: PathBuf,
}

/// A parsed cycle file with its stage contracts.
pub struct Cycle {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub id: String,
    pub file: CycleFile,
    pub stages: Vec<Contract>,
}

/// Is this TOML text a cycle file (it has `[[stages]]`)?
pub fn is_cycle(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("stages"))
}

impl Cycle {
    pub fn load(path: &Path) -> Result<Cycle> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read cycle benchmark {}", path.display()))?;
        let text = String::from_utf8(bytes.clone()).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        let file: CycleFile = toml::from_str(&text).with_context(|| format!("invalid cycle benchmark {}", path.display()))?;
        if file.stages.is_empty() {
            bail!("invalid cycle benchmark {}: no [[stages]]; name at least one stage contract", path.display());
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut stages: Vec<Contract> = Vec::new();
        for (i, s) in file.stages.iter().enumerate() {
            let contract = Contract::load(&dir.join(&s.contract)).with_context(|| format!("{}: [[stages]] #{}", path.display(), i + 1))?;
            let Some(step) = contract.file.target_step else {
                bail!("{}: [[stages]] #{}: {} is not a cycle-stage contract (it has no target_step)", path.display(), i + 1, contract.path.display());
            };
            if stages.iter().any(|c| c.file.target_step == Some(step)) {
                bail!("{}: [[stages]] #{}: two stages target step {step}", path.display(), i + 1);
            }
            stages.push(contract);
        }
        let id = geohost_registry::artifact_id(&bytes);
        Ok(Cycle { path: path.into(), bytes, id, file, stages })
    }

    fn label(&self) -> String {
        format!("{}@{}", self.file.name, self.file.version)
    }
}

/// Pre-register every stage contract, then the cycle file (derived from
/// them). Returns the cycle's id.
pub fn preregister(registry: &mut Registry, runtime: &Runtime, cycle: &Cycle, progress: &mut ProgressFactory<'_>) -> Result<String> {
    check_not_edited(registry, cycle)?;
    let mut stage_ids = Vec::new();
    for contract in &cycle.stages {
        prereg::preregister(registry, runtime, contract, progress).with_context(|| format!("pre-registering stage contract {}", contract.path.display()))?;
        stage_ids.push(contract.id.clone());
    }
    let (id, _) = registry.add(
        &cycle.bytes,
        &NewArtifact {
            kind: "contract".into(),
            name: cycle.file.name.clone(),
            version: Some(cycle.file.version.clone()),
            media_type: "application/toml".into(),
            tags: vec!["cycle".into(), "pre-registered".into()],
            metadata: serde_json::json!({ "domain": cycle.file.domain, "stages": stage_ids }),
            ..Default::default()
        },
    )?;
    for s in &stage_ids {
        registry.link(&id, s, "derived_from")?;
    }
    Ok(id)
}

fn check_not_edited(registry: &Registry, cycle: &Cycle) -> Result<()> {
    for a in registry.list(&Filter { kind: Some("contract".into()), name: Some(cycle.file.name.clone()), ..Default::default() })? {
        if a.version.as_deref() == Some(&cycle.file.version) && a.id != cycle.id {
            bail!(
                "cycle benchmark {} ({}) was pre-registered as {}, but the file now hashes to {}: a pre-registered cycle benchmark cannot change; give it a new version",
                cycle.label(),
                cycle.path.display(),
                a.id,
                cycle.id
            );
        }
    }
    Ok(())
}

/// One stage of a cycle report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageReport {
    pub step: u8,
    pub contract: String,
    /// The stage's report, or why it was not scored.
    pub report: Option<Report>,
    pub not_scored: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CycleReport {
    pub geohost_cycle_report: u32,
    pub cycle: String,
    pub name: String,
    pub version: String,
    pub domain: String,
    pub stages: Vec<StageReport>,
    /// `pass` when every scored stage passes; `incomplete` when a stage had
    /// no candidate.
    pub verdict: String,
}

/// Score `candidates` (step → registry id) against every stage.
pub fn score(registry: &Registry, runtime: &Runtime, cycle: &Cycle, candidates: &[(u8, score::Candidate)]) -> Result<CycleReport> {
    check_not_edited(registry, cycle)?;
    registry
        .get(&cycle.id)
        .map_err(|_| anyhow::anyhow!("cycle benchmark {} is not pre-registered; run `geohost bench register {}` first", cycle.label(), cycle.path.display()))?;
    for (step, _) in candidates {
        if !cycle.stages.iter().any(|c| c.file.target_step == Some(*step)) {
            bail!("no stage of {} targets step {step}", cycle.label());
        }
    }
    let mut stages = Vec::new();
    for contract in &cycle.stages {
        let step = contract.file.target_step.expect("checked on load");
        let ids: Vec<score::Candidate> = candidates.iter().filter(|(s, _)| *s == step).map(|(_, c)| c.clone()).collect();
        let (report, not_scored) = if ids.is_empty() {
            (None, Some(format!("no candidate for step {step}")))
        } else {
            (Some(score::score(registry, runtime, contract, &ids).with_context(|| format!("stage {step} ({})", contract.label()))?), None)
        };
        stages.push(StageReport { step, contract: contract.id.clone(), report, not_scored });
    }
    let verdict = if stages.iter().any(|s| s.report.is_none()) {
        "incomplete"
    } else if stages.iter().all(|s| s.report.as_ref().is_some_and(|r| r.verdict == "pass")) {
        "pass"
    } else {
        "fail"
    };
    Ok(CycleReport {
        geohost_cycle_report: 1,
        cycle: cycle.id.clone(),
        name: cycle.file.name.clone(),
        version: cycle.file.version.clone(),
        domain: cycle.file.domain.clone(),
        stages,
        verdict: verdict.into(),
    })
}

/// Write and register a cycle report: each candidate `scored_by` it (and
/// `validated_against` its stage's oracle), the report `derived_from` the
/// cycle benchmark and each stage contract.
pub fn register(registry: &mut Registry, report: &CycleReport, path: &Path) -> Result<String> {
    let bytes = serde_json::to_vec_pretty(report)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, &bytes).with_context(|| format!("cannot write report {}", path.display()))?;
    let (id, _) = registry.add(
        &bytes,
        &NewArtifact {
            kind: "report".into(),
            name: format!("cycle-report/{}", report.name),
            version: Some(report.version.clone()),
            media_type: "application/json".into(),
            tags: vec!["cycle".into(), report.verdict.clone()],
            metadata: serde_json::json!({ "cycle": report.cycle, "verdict": report.verdict }),
            ..Default::default()
        },
    )?;
    registry.link(&id, &report.cycle, "derived_from")?;
    for stage in &report.stages {
        registry.link(&id, &stage.contract, "derived_from")?;
        for c in stage.report.iter().flat_map(|r| r.candidates.iter()) {
            registry.link(&c.scored.id, &id, "scored_by")?;
            if let Some(oracle) = stage.report.as_ref().and_then(|r| r.oracle.as_ref()) {
                if oracle.id != c.scored.id {
                    registry.link(&c.scored.id, &oracle.id, "validated_against")?;
                }
            }
        }
    }
    Ok(id)
}
