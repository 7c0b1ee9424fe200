//! The cycle report of a retrieval row (the methane L1→L2 row): every
//! step's figures checked against a retrieval cycle contract, in the same
//! report shape as a static problem's ([`crate::static_report`]), and
//! registered with lineage to what it scored.
//!
//! The contract (`contracts/methane-cycle.toml`) states one limit per
//! transition, as the seed report lists them; a missing limit is not
//! checked:
//!
//! ```toml
//! name = "methane-cycle"
//! version = "1.0.0"
//! domain = "…"
//! oracle_strength = "classical_method"   # the matched filter
//! [step2]                          # does the matched filter recover known plumes?
//! ime_slope = [0.76, 1.13]         # IME emission against the truth (OLS slope)
//! min_ime_r2 = 0.9
//! max_detected_from = 50.0         # kg/h: every test scene at or above is detected
//! [step3]                          # does the emulator reproduce the RT spectra?
//! max_band_rmse_over_noise = 0.1   # worst band
//! min_speedup = 100                # per spectrum, against the plugin
//! [step4]                          # does retrieval through the emulator match the physics?
//! max_emulator_vs_physics = 0.1    # rms difference in dx over the retrieval sd
//! [step5]                          # does the direct predictor match step 4?
//! max_rmse_over_step4 = 1.1
//! min_speedup = 1000               # per pixel, against step 4 through the physics
//! max_z_rms_error = 0.2            # |rms((dx − truth)/sd) − 1|: calibrated uncertainty
//! ```

use crate::scenes::{LoadedRetrieval, ScenesFiles, ScenesRun};
use crate::static_report::{Check, CycleReport, StepEntry};
use anyhow::{bail, Context, Result};
use geohost_registry::{artifact_id, NewArtifact, Registry};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalContractFile {
    pub name: String,
    pub version: String,
    pub domain: String,
    /// How far the step-2 oracle can be trusted (one of
    /// [`crate::bench::contract::ORACLE_STRENGTHS`]); the matched filter
    /// is a `classical_method`.
    pub oracle_strength: String,
    #[serde(default)]
    pub step2: Step2Limits,
    #[serde(default)]
    pub step3: Step3Limits,
    #[serde(default)]
    pub step4: Step4Limits,
    #[serde(default)]
    pub step5: Step5Limits,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step2Limits {
    pub ime_slope: Option<[f64; 2]>,
    pub min_ime_r2: Option<f64>,
    pub max_detected_from: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step3Limits {
    pub max_band_rmse_over_noise: Option<f64>,
    pub min_speedup: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step4Limits {
    pub max_emulator_vs_physics: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step5Limits {
    pub max_rmse_over_step4: Option<f64>,
    pub min_speedup: Option<f64>,
    pub max_z_rms_error: Option<f64>,
}

/// A parsed retrieval contract with its bytes (registered as kind `contract`).
#[derive(Clone, Debug)]
pub struct RetrievalContract {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub file: RetrievalContractFile,
}

impl RetrievalContract {
    pub fn load(path: &Path) -> Result<RetrievalContract> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read cycle contract {}", path.display()))?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        let file: RetrievalContractFile = toml::from_str(text).with_context(|| format!("invalid cycle contract {}", path.display()))?;
        if !crate::bench::contract::ORACLE_STRENGTHS.contains(&file.oracle_strength.as_str()) {
            bail!(
                "invalid cycle contract {}: `oracle_strength` must be one of {}, got \"{}\"",
                path.display(),
                crate::bench::contract::ORACLE_STRENGTHS.join(", "),
                file.oracle_strength
            );
        }
        let (s2, s3, s4, s5) = (&file.step2, &file.step3, &file.step4, &file.step5);
        let limits = [
            ("step2.min_ime_r2", s2.min_ime_r2),
            ("step2.max_detected_from", s2.max_detected_from),
            ("step3.max_band_rmse_over_noise", s3.max_band_rmse_over_noise),
            ("step3.min_speedup", s3.min_speedup),
            ("step4.max_emulator_vs_physics", s4.max_emulator_vs_physics),
            ("step5.max_rmse_over_step4", s5.max_rmse_over_step4),
            ("step5.min_speedup", s5.min_speedup),
            ("step5.max_z_rms_error", s5.max_z_rms_error),
        ];
        crate::static_contract::check_positive_limits(path, &limits)?;
        if let Some([lo, hi]) = s2.ime_slope {
            if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi) {
                bail!("invalid cycle contract {}: `step2.ime_slope` must be [low, high] with 0 < low ≤ high, got [{lo}, {hi}]", path.display());
            }
        }
        Ok(RetrievalContract { path: path.to_path_buf(), bytes, file })
    }
}

/// The report of a retrieval run (written as `files`); ids are BLAKE3
/// hashes of the bytes.
pub fn report(run: &ScenesRun, set: &LoadedRetrieval, files: &ScenesFiles) -> CycleReport {
    let plugins: Vec<String> = run.components.iter().map(|(c, ..)| format!("blake3:{}", c.hash.to_hex())).collect();
    let scenes_id = artifact_id(&files.csv.1);
    let mut steps = vec![
        StepEntry {
            step: 1,
            what: "radiative transfer, detector and plume model (the simple model)".into(),
            artifacts: plugins,
            figures: serde_json::json!({ "bands": run.unit_absorption.len() }),
        },
        StepEntry {
            step: 2,
            what: "matched filter and IME on synthetic scenes (the oracle)".into(),
            artifacts: vec![scenes_id.clone(), artifact_id(&files.maps.1)],
            figures: serde_json::json!({
                "scenes": run.rows.len(),
                "background_sd": run.background_sd,
                "ime_slope": run.slope,
                "ime_intercept": run.intercept,
                "ime_r2": run.r2,
                "u_eff": run.u_eff,
                "detection": run.detection,
                "detected_from": detected_from(run),
            }),
        },
    ];
    let p = &run.pixels;
    if let Some(s3) = &p.step3 {
        steps.push(StepEntry {
            step: 3,
            what: format!("emulator {}", s3.name),
            artifacts: vec![s3.id.clone()],
            figures: serde_json::to_value(s3).unwrap_or_default(),
        });
    }
    if let Some(s4) = &p.step4 {
        let artifacts = files.pixels.iter().map(|(_, bytes)| artifact_id(bytes)).collect();
        steps.push(StepEntry {
            step: 4,
            what: "Levenberg–Marquardt retrieval through the emulator".into(),
            artifacts,
            figures: serde_json::to_value(s4).unwrap_or_default(),
        });
    }
    if let Some(s5) = &p.step5 {
        steps.push(StepEntry {
            step: 5,
            what: format!("direct retrieval {}", s5.record.name),
            artifacts: vec![s5.record.id.clone()],
            figures: {
                let mut f = serde_json::to_value(s5).unwrap_or_default();
                if let (Some(o), Some((slope, intercept, r2))) = (f.as_object_mut(), run.direct_fit) {
                    o.insert("scenes_ime".into(), serde_json::json!({ "slope": slope, "intercept": intercept, "r2": r2 }));
                }
                f
            },
        });
    }
    let mut checks = Vec::new();
    if let Some(c) = &set.contract {
        let mut check = |step: u8, what: &str, value: f64, limit: String, pass: bool| checks.push(Check { step, check: what.into(), value, limit, pass });
        let l = &c.file;
        if let Some([lo, hi]) = l.step2.ime_slope {
            check(2, "IME emission slope against the truth", run.slope, format!("within [{lo}, {hi}]"), (lo..=hi).contains(&run.slope));
        }
        if let Some(m) = l.step2.min_ime_r2 {
            check(2, "IME emission r²", run.r2, format!("≥ {m}"), run.r2 >= m);
        }
        if let Some(m) = l.step2.max_detected_from {
            let from = detected_from(run);
            check(2, "every scene detected from (kg/h)", from, format!("≤ {m}"), from <= m);
        }
        if l.step3.max_band_rmse_over_noise.is_some() || l.step3.min_speedup.is_some() {
            match &p.step3 {
                Some(s3) => {
                    if let Some(m) = l.step3.max_band_rmse_over_noise {
                        check(
                            3,
                            "worst band's emulator RMSE over the noise sd",
                            s3.worst_band_rmse_over_noise,
                            format!("< {m}"),
                            s3.worst_band_rmse_over_noise < m,
                        );
                    }
                    if let Some(m) = l.step3.min_speedup {
                        check(3, "emulator speed-up per spectrum", s3.speedup, format!("≥ {m}"), s3.speedup >= m);
                    }
                }
                None => check(3, "the emulator (the set has no [step3])", f64::NAN, "run it".into(), false),
            }
        }
        if let Some(m) = l.step4.max_emulator_vs_physics {
            match &p.step4 {
                Some(s4) => check(
                    4,
                    "retrieval through the emulator − through the physics, rms over the retrieval sd",
                    s4.emulator_vs_physics,
                    format!("< {m}"),
                    s4.emulator_vs_physics < m,
                ),
                None => check(4, "retrieval through the emulator (the set has no [step4])", f64::NAN, "run it".into(), false),
            }
        }
        if l.step5.max_rmse_over_step4.is_some() || l.step5.min_speedup.is_some() || l.step5.max_z_rms_error.is_some() {
            match &p.step5 {
                Some(s5) => {
                    if let Some(m) = l.step5.max_rmse_over_step4 {
                        check(5, "direct retrieval RMSE over step 4's", s5.rmse_over_step4, format!("< {m}"), s5.rmse_over_step4 < m);
                    }
                    if let Some(m) = l.step5.min_speedup {
                        check(
                            5,
                            "direct retrieval speed-up per pixel against step 4 through the physics",
                            s5.speedup_vs_physics,
                            format!("≥ {m}"),
                            s5.speedup_vs_physics >= m,
                        );
                    }
                    if let Some(m) = l.step5.max_z_rms_error {
                        let e = (s5.z_rms - 1.0).abs();
                        check(5, "|rms z − 1| of the direct retrieval's sd", e, format!("< {m}"), e < m);
                    }
                }
                None => check(5, "the direct retrieval (the set has no [step5])", f64::NAN, "run it".into(), false),
            }
        }
    }
    let verdict = match (&set.contract, checks.iter().all(|c| c.pass)) {
        (None, _) => "unchecked",
        (Some(_), true) => "pass",
        (Some(_), false) => "fail",
    }
    .to_string();
    let improve =
        checks.iter().filter(|c| !c.pass).map(|c| format!("step {}: {} is {:.4}, the contract needs {}", c.step, c.check, c.value, c.limit)).collect();
    CycleReport {
        geohost_static_cycle_report: 1,
        name: set.name.clone(),
        plugin_set: artifact_id(&set.bytes),
        contract: set.contract.as_ref().map(
            |c| serde_json::json!({ "id": artifact_id(&c.bytes), "name": c.file.name, "version": c.file.version, "oracle_strength": c.file.oracle_strength }),
        ),
        oracle: Some(scenes_id),
        steps,
        checks,
        verdict,
        improve,
    }
}

/// The smallest emission from which every test scene is detected, kg/h
/// (infinite when the largest is missed).
pub fn detected_from(run: &ScenesRun) -> f64 {
    let mut rows: Vec<_> = run.rows.iter().collect();
    rows.sort_by(|a, b| a.emission.total_cmp(&b.emission));
    let mut from = f64::INFINITY;
    for r in rows.iter().rev() {
        if !r.detected {
            break;
        }
        from = r.emission;
    }
    from
}

/// Register the set, its plugins, the oracle's outputs (step 2, role
/// `oracle`) and the report, all in the set's transition; returns the
/// report's id.
pub fn register(
    registry: &mut Registry,
    run: &ScenesRun,
    set: &LoadedRetrieval,
    files: &ScenesFiles,
    report: &CycleReport,
    report_bytes: &[u8],
) -> Result<String> {
    let l_transition = set.set.transition.clone();
    let plugin_ids = crate::static_run::plugin_ids(&run.components, Some(&mut *registry))?;
    let (set_id, _) = registry.add(
        &set.bytes,
        &NewArtifact {
            kind: "plugin-set".into(),
            name: set.name.clone(),
            media_type: "application/toml".into(),
            metadata: serde_json::json!({ "retrieval": true }),
            l_transition: l_transition.clone(),
            ..Default::default()
        },
    )?;
    let summary: serde_json::Value = serde_json::from_slice(&files.summary.1)?;
    for ((_, bytes), name, media) in [(&files.csv, "matched-filter scenes", "text/csv"), (&files.maps, "matched-filter scene-1", "application/x-netcdf")] {
        let (id, _) = registry.add(
            bytes,
            &NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/{name}", set.name),
                media_type: media.into(),
                role: Some("oracle".into()),
                step: Some(2),
                tags: vec!["matched-filter".into()],
                metadata: summary.clone(),
                l_transition: l_transition.clone(),
                ..Default::default()
            },
        )?;
        for p in &plugin_ids {
            registry.link(&id, p, "derived_from")?;
        }
        registry.link(&id, &set_id, "produced_by")?;
    }
    if let Some((_, bytes)) = &files.pixels {
        let (id, _) = registry.add(
            bytes,
            &NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/pixel retrievals", set.name),
                media_type: "application/x-netcdf".into(),
                step: Some(4),
                tags: vec!["retrieval".into()],
                metadata: serde_json::json!({ "step4": run.pixels.step4, "step5": run.pixels.step5 }),
                l_transition: l_transition.clone(),
                ..Default::default()
            },
        )?;
        for upstream in run.pixels.step3.iter().map(|s| &s.id).chain(run.pixels.step5.iter().map(|s| &s.record.id)) {
            registry.link(&id, upstream, "derived_from")?;
        }
        registry.link(&id, &set_id, "produced_by")?;
    }
    let contract = set.contract.as_ref().map(|c| crate::static_report::ReportContract {
        bytes: &c.bytes,
        name: &c.file.name,
        version: &c.file.version,
        metadata: serde_json::json!({ "retrieval_cycle": true, "domain": c.file.domain, "oracle_strength": c.file.oracle_strength }),
    });
    let report_id = crate::static_report::register_report(registry, &set.name, l_transition, &set_id, report, report_bytes, contract)?;
    for entry in &report.steps {
        for a in &entry.artifacts {
            registry.link(a, &report_id, "scored_by")?;
            if let Some(oracle) = report.oracle.as_ref().filter(|o| entry.step >= 3 && *o != a) {
                registry.link(a, oracle, "validated_against")?;
            }
        }
    }
    Ok(report_id)
}
