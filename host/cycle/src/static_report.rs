//! The cycle report of a static problem: every step's artifact with its
//! figures, checked against a cycle contract ([`crate::static_contract`];
//! step 6: the evaluation that says what to improve), and its
//! registration with lineage to everything it scored.

pub use crate::static_contract::CycleContract;
use crate::static_run::{LoadedStatic, StaticFiles, StaticRun};
use anyhow::Result;
use geohost_registry::artifact_id;
use geohost_registry::{NewArtifact, Registry};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct StepEntry {
    pub step: u8,
    pub what: String,
    pub artifacts: Vec<String>,
    pub figures: serde_json::Value,
}

/// One contract limit against the measured value.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub step: u8,
    pub check: String,
    pub value: f64,
    pub limit: String,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CycleReport {
    pub geohost_static_cycle_report: u32,
    pub name: String,
    pub plugin_set: String,
    pub contract: Option<serde_json::Value>,
    /// The step-2 artifact the later steps are scored against (MCMC).
    pub oracle: Option<String>,
    pub steps: Vec<StepEntry>,
    pub checks: Vec<Check>,
    /// `pass` (every check passed), `fail`, or `unchecked` (no contract).
    pub verdict: String,
    /// Step 6: what to improve, one line per failed check.
    pub improve: Vec<String>,
}

/// The report of `run` (written as `files`). Ids are BLAKE3 hashes of the
/// bytes, so they are the registry's ids whether or not one is used.
pub fn report(run: &StaticRun, set: &LoadedStatic, files: &StaticFiles) -> CycleReport {
    let plugins: Vec<String> = run.components.iter().map(|(c, ..)| format!("blake3:{}", c.hash.to_hex())).collect();
    let mut steps = vec![StepEntry {
        step: 1,
        what: "simulator and observation operator (the simple model)".into(),
        artifacts: plugins.clone(),
        figures: serde_json::json!({ "parameters": run.prior.names, "observations": run.y.len(), "observation": artifact_id(&files.observation.1) }),
    }];
    let mut oracle = None;
    for (p, (_, bytes)) in run.posteriors.iter().zip(&files.posteriors) {
        let id = artifact_id(bytes);
        if matches!(p.method, crate::static_run::StaticMethod::Mcmc { .. }) {
            oracle = Some(id.clone());
        }
        steps.push(StepEntry {
            step: 2,
            what: p.method.label(),
            artifacts: vec![id],
            figures: serde_json::json!({ "moments": crate::static_run::moments(&p.samples), "seconds": p.seconds, "simulations": p.simulations, "diagnostics": p.diagnostics }),
        });
    }
    let limits = set.contract.as_ref().map(|c| c.file.clone());
    let mut checks = Vec::new();
    let mut check = |step: u8, what: &str, value: f64, limit: Option<f64>, below: bool| {
        if let Some(l) = limit {
            let pass = if below { value < l } else { value >= l };
            checks.push(Check { step, check: what.into(), value, limit: format!("{} {l}", if below { "<" } else { "≥" }), pass });
        }
    };
    if let (Some(s34), Some((_, bytes))) = (&run.step34, &files.step4) {
        let t = &s34.training;
        steps.push(StepEntry {
            step: 3,
            what: format!("neural emulator {} of the observed simulator", s34.name),
            artifacts: vec![s34.emulator_id.clone(), s34.dataset.clone()],
            figures: {
                let mut f = serde_json::to_value(t).unwrap_or_default();
                f["loaded_from_registry"] = s34.cache_hit.into();
                f
            },
        });
        check(3, "emulator held-out RMSE / observation noise sd", t.val_rmse_over_noise, limits.as_ref().and_then(|l| l.step3.max_rmse_over_noise), true);
        let p = &s34.posterior;
        steps.push(StepEntry {
            step: 4,
            what: format!("{} through the emulator", p.method.label()),
            artifacts: vec![artifact_id(bytes)],
            figures: serde_json::json!({ "moments": crate::static_run::moments(&p.samples), "seconds": p.seconds, "c2st_vs_oracle": s34.c2st_vs_mcmc, "diagnostics": p.diagnostics }),
        });
        check(4, "C2ST vs the MCMC oracle", s34.c2st_vs_mcmc, limits.as_ref().and_then(|l| l.step4.max_c2st), true);
    }
    if let Some(s5) = &run.step5 {
        // Held-out observations: with an MCMC reference, or a reference
        // posterior from a file (check_reference).
        let all: Vec<f64> = s5.held_out_c2st.iter().chain(&s5.reference_c2st).copied().collect();
        let held_out = (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64);
        let speedup = s5.mcmc_seconds.map(|s| s * 1e3 / s5.sample_ms);
        steps.push(StepEntry {
            step: 5,
            what: format!("amortized posterior {} (mixture density network)", s5.record.name),
            artifacts: vec![s5.record.id.clone(), s5.record.dataset.clone()],
            figures: serde_json::json!({
                "c2st_vs_oracle": s5.c2st_vs_mcmc,
                "held_out_c2st": s5.held_out_c2st,
                "held_out_reference_r_hat": s5.held_out_r_hat,
                "reference_c2st": s5.reference_c2st,
                "held_out_c2st_mean": held_out,
                "calibration": s5.calibration,
                "sample_ms": s5.sample_ms,
                "mcmc_seconds": s5.mcmc_seconds,
                "speedup": speedup,
                "training": s5.record.training,
                "loaded_from_registry": s5.record.predictor_cache_hit,
            }),
        });
        let l5 = limits.as_ref().map(|l| l.step5.clone()).unwrap_or_default();
        if let Some(c) = held_out {
            check(5, "mean C2ST vs the reference posteriors of the held-out observations", c, l5.max_c2st, true);
        }
        check(5, "max |expected coverage − level|", s5.calibration.max_coverage_error, l5.max_coverage_error, true);
        if let Some(s) = speedup {
            check(5, "speed-up of amortized sampling over MCMC", s, l5.min_speedup, false);
        }
    }
    let verdict = match (&set.contract, checks.iter().all(|c| c.pass)) {
        (None, _) => "unchecked",
        (Some(_), true) => "pass",
        (Some(_), false) => "fail",
    };
    let improve = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| match c.step {
            3 => format!("step 3: {} is {:.3} (needs {}): more simulations or a wider emulator", c.check, c.value, c.limit),
            4 => format!("step 4: {} is {:.3} (needs {}): improve the step-3 emulator first", c.check, c.value, c.limit),
            _ => format!("step 5: {} is {:.3} (needs {}): more simulations, an embedding network or a flow", c.check, c.value, c.limit),
        })
        .collect();
    CycleReport {
        geohost_static_cycle_report: 1,
        name: set.name.clone(),
        plugin_set: artifact_id(&set.bytes),
        contract: set.contract.as_ref().map(|c| serde_json::json!({ "id": c.id(), "name": c.file.name, "version": c.file.version, "domain": c.file.domain })),
        oracle,
        steps,
        checks,
        verdict: verdict.into(),
        improve,
    }
}

/// The checks as lines for the terminal.
pub fn summary(report: &CycleReport) -> String {
    let mut s = String::new();
    for c in &report.checks {
        s.push_str(&format!("cycle check, step {}: {} = {:.3} ({}) {}\n", c.step, c.check, c.value, c.limit, if c.pass { "pass" } else { "FAIL" }));
    }
    s.push_str(&format!("cycle report {}: verdict {}\n", report.name, report.verdict));
    s
}

/// Register the plugins, the observation and every posterior (step 2,
/// role `oracle`, `derived_from` the plugins and the observation), step
/// 4's posterior (`derived_from` the emulator and the observation) and
/// the cycle report (kind report, step 6, `derived_from` the plugin-set
/// and its contract; every step's artifact `scored_by` it, steps 4 and 5
/// `validated_against` the MCMC oracle). Returns the report's id.
pub fn register(
    registry: &mut Registry,
    run: &StaticRun,
    set: &LoadedStatic,
    files: &StaticFiles,
    report: &CycleReport,
    report_bytes: &[u8],
) -> Result<String> {
    // The set's transition on everything the run writes places it (and,
    // through lineage, its plugins and trained networks) in that row of
    // `geohost matrix`.
    let l_transition = set.set.transition.clone();
    let plugin_ids = crate::static_run::plugin_ids(&run.components, Some(&mut *registry))?;
    let (set_id, _) = registry.add(
        &set.bytes,
        &NewArtifact {
            kind: "plugin-set".into(),
            name: set.name.clone(),
            media_type: "application/toml".into(),
            metadata: serde_json::json!({ "static": true }),
            l_transition: l_transition.clone(),
            ..Default::default()
        },
    )?;
    let (obs_id, _) = registry.add(
        &files.observation.1,
        &NewArtifact {
            kind: "run-output".into(),
            name: format!("{}/observation", set.name),
            media_type: "application/x-netcdf".into(),
            step: Some(2),
            tags: vec!["observation".into()],
            metadata: serde_json::json!({ "truth": run.truth, "parameters": run.prior.names }),
            l_transition: l_transition.clone(),
            ..Default::default()
        },
    )?;
    for p in &plugin_ids {
        registry.link(&obs_id, p, "derived_from")?;
    }
    registry.link(&obs_id, &set_id, "produced_by")?;
    for (post, (_, bytes)) in run.posteriors.iter().zip(&files.posteriors) {
        let (id, _) = registry.add(
            bytes,
            &NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/{}", set.name, post.method.label()),
                media_type: "application/x-netcdf".into(),
                role: Some("oracle".into()),
                step: Some(2),
                tags: vec!["posterior".into()],
                metadata: serde_json::json!({
                    "method": post.method,
                    "samples": post.samples.ncols(),
                    "seconds": post.seconds,
                    "simulations": post.simulations,
                    "diagnostics": post.diagnostics,
                }),
                l_transition: l_transition.clone(),
                ..Default::default()
            },
        )?;
        for p in &plugin_ids {
            registry.link(&id, p, "derived_from")?;
        }
        registry.link(&id, &obs_id, "derived_from")?;
        registry.link(&id, &set_id, "produced_by")?;
    }
    if let (Some(s34), Some((_, bytes))) = (&run.step34, &files.step4) {
        let (id, _) = registry.add(
            bytes,
            &NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/{} via {}", set.name, s34.posterior.method.label(), s34.name),
                media_type: "application/x-netcdf".into(),
                step: Some(4),
                tags: vec!["posterior".into(), "emulator".into()],
                metadata: serde_json::json!({ "method": s34.posterior.method, "emulator": s34.emulator_id, "seconds": s34.posterior.seconds, "c2st_vs_oracle": s34.c2st_vs_mcmc, "diagnostics": s34.posterior.diagnostics }),
                l_transition: l_transition.clone(),
                ..Default::default()
            },
        )?;
        registry.link(&id, &s34.emulator_id, "derived_from")?;
        registry.link(&id, &obs_id, "derived_from")?;
        registry.link(&id, &set_id, "produced_by")?;
    }
    let contract = set.contract.as_ref().map(|c| ReportContract {
        bytes: &c.bytes,
        name: &c.file.name,
        version: &c.file.version,
        metadata: serde_json::json!({ "static_cycle": true, "domain": c.file.domain }),
    });
    let report_id = register_report(registry, &set.name, l_transition, &set_id, report, report_bytes, contract)?;
    for entry in &report.steps {
        for (k, a) in entry.artifacts.iter().enumerate() {
            registry.link(a, &report_id, "scored_by")?;
            // The step's own output (first), not the dataset it trained on.
            if let Some(oracle) = report.oracle.as_ref().filter(|o| entry.step >= 4 && k == 0 && *o != a) {
                registry.link(a, oracle, "validated_against")?;
            }
        }
    }
    Ok(report_id)
}

/// A cycle contract as [`register_report`] records it.
pub(crate) struct ReportContract<'a> {
    pub bytes: &'a [u8],
    pub name: &'a str,
    pub version: &'a str,
    pub metadata: serde_json::Value,
}

/// Register a cycle report (kind `report`, step 6, tagged with its
/// verdict) `derived_from` its plugin-set and, when there is one, its
/// contract (kind `contract`), all in `l_transition`; returns its id.
pub(crate) fn register_report(
    registry: &mut Registry,
    set_name: &str,
    l_transition: Option<String>,
    set_id: &str,
    report: &CycleReport,
    report_bytes: &[u8],
    contract: Option<ReportContract<'_>>,
) -> Result<String> {
    let (report_id, _) = registry.add(
        report_bytes,
        &NewArtifact {
            kind: "report".into(),
            name: format!("cycle-report/{set_name}"),
            media_type: "application/json".into(),
            step: Some(6),
            tags: vec!["cycle".into(), report.verdict.clone()],
            metadata: serde_json::json!({ "verdict": report.verdict, "oracle": report.oracle }),
            l_transition: l_transition.clone(),
            ..Default::default()
        },
    )?;
    registry.link(&report_id, set_id, "derived_from")?;
    if let Some(c) = contract {
        let (cid, _) = registry.add(
            c.bytes,
            &NewArtifact {
                kind: "contract".into(),
                name: c.name.into(),
                version: Some(c.version.into()),
                media_type: "application/toml".into(),
                metadata: c.metadata,
                l_transition,
                ..Default::default()
            },
        )?;
        registry.link(&report_id, &cid, "derived_from")?;
    }
    Ok(report_id)
}
