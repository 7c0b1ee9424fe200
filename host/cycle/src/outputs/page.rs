//! `geohost report OUTDIR --html`: a run's outputs as one self-contained
//! page. A twin experiment's: the results table of `summary.json`, the
//! analysis RMSE and spread of every method over time (log scale), and the
//! rank histogram of each method that kept ensembles (the truth's rank
//! among the members, over every kept time after the burn-in and every
//! variable: flat for a calibrated ensemble, U-shaped for an
//! under-dispersive one). A static problem's: the cycle report's verdict
//! and checks, each parameter's posterior marginal from every method
//! (MCMC, ES-MDA, step 4 through the emulator, step 5's amortized
//! posterior) with the truth, and step 5's coverage curve.

use super::read::{AnalysisFile, TruthFile};
use crate::html::{bars, escape, lines, page, pairs, Cloud, Series};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One method's output file, read for the page.
struct MethodFile {
    label: String,
    times: Vec<f64>,
    rmse_a: Vec<f64>,
    spread_a: Vec<f64>,
    analysis: AnalysisFile,
}

fn read_method(path: &Path) -> Result<MethodFile> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {label}"))?;
    let analysis = AnalysisFile::parse(&label, bytes.clone())?;
    let mut r = geohost_netcdf::Reader::open(&label, bytes, "a method's output written by `geohost run`")?;
    let k = r.dim("time")?;
    Ok(MethodFile { label: analysis.method.clone(), times: r.var("time", k)?, rmse_a: r.var("rmse_a", k)?, spread_a: r.var("spread_a", k)?, analysis })
}

/// The truth's rank among the members, counted over kept times after
/// `burn_in` and every variable: `N + 1` bins, as fractions.
pub fn rank_histogram(truth: &TruthFile, analysis: &AnalysisFile, burn_in: f64) -> Option<Vec<f64>> {
    let members = analysis.members.as_ref()?;
    let mut counts = vec![0usize; members.members + 1];
    for (t, time) in members.times.iter().enumerate().filter(|(_, time)| **time > burn_in) {
        let row = truth.times.iter().position(|x| (x - time).abs() < 1e-9)?;
        let x = truth.truth.row(row);
        for (i, xi) in x.iter().enumerate() {
            let rank = (0..members.members).filter(|&j| members.at(t, j)[i] < *xi).count();
            counts[rank] += 1;
        }
    }
    let total: usize = counts.iter().sum();
    (total > 0).then(|| counts.iter().map(|c| *c as f64 / total as f64).collect())
}

/// The page of the run in `dir` (a `geohost run --out` folder).
pub fn run_page(dir: &Path) -> Result<String> {
    if dir.join("observation.nc").is_file() && !dir.join("truth.nc").exists() {
        return static_page(dir);
    }
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&summary_path)
            .with_context(|| format!("{} is not a run's output folder (no summary.json; written by `geohost run --out`)", dir.display()))?,
    )
    .with_context(|| format!("{} is not JSON written by geohost", summary_path.display()))?;
    let truth_path = dir.join("truth.nc");
    let truth =
        TruthFile::parse(&truth_path.display().to_string(), std::fs::read(&truth_path).with_context(|| format!("cannot read {}", truth_path.display()))?)?;
    let burn_in = summary["chronology"]["burn_in"].as_f64().unwrap_or(0.0);
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nc") && p.file_name().is_some_and(|n| n != "truth.nc"))
        .collect();
    files.sort();
    let methods = files.iter().map(|p| read_method(p)).collect::<Result<Vec<_>>>()?;
    if methods.is_empty() {
        bail!("{} has no method output (*.nc beside truth.nc)", dir.display());
    }
    let set = summary["plugin_set"]["path"]
        .as_str()
        .map(|p| Path::new(p).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
        .unwrap_or_default();
    let title = format!("run of {set} ({})", dir.display());
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    let model = &summary["model"];
    let _ = writeln!(
        body,
        r#"<p class="note">model {} {} ({} variables), observations {} ({} per cycle); {} cycles, time means after t &gt; {burn_in}.</p>"#,
        escape(model["name"].as_str().unwrap_or("?")),
        escape(model["version"].as_str().unwrap_or("")),
        model["state_size"],
        escape(summary["observations"]["name"].as_str().unwrap_or("?")),
        summary["observations"]["obs_size"],
        summary["chronology"]["cycles"],
    );
    body.push_str("<table id=\"results\">\n<tr><th>method</th><th>rmse.a</th><th>spread.a</th><th>rmse.f</th><th>ms/cycle</th></tr>\n");
    let num = |v: &serde_json::Value| v.as_f64().map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    for r in summary["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            body,
            r#"<tr data-method="{0}"><td>{0}</td><td class="num">{1}</td><td class="num">{2}</td><td class="num">{3}</td><td class="num">{4}</td></tr>"#,
            escape(r["label"].as_str().unwrap_or("?")),
            num(&r["rmse_a"]),
            num(&r["spread_a"]),
            num(&r["rmse_f"]),
            num(&r["ms_per_cycle"]),
        );
    }
    body.push_str("</table>\n<h2>Analysis RMSE over time</h2>\n");
    // At most about 1500 points a line: every k-th cycle of a long run.
    let series = |f: fn(&MethodFile) -> &Vec<f64>| -> Vec<Series> {
        methods
            .iter()
            .map(|m| {
                let k = m.times.len().div_ceil(1500).max(1);
                Series { label: m.label.clone(), x: m.times.iter().step_by(k).copied().collect(), y: f(m).iter().step_by(k).copied().collect() }
            })
            .collect()
    };
    body.push_str(&lines("rmse-over-time", &series(|m| &m.rmse_a), "time", "analysis RMSE (log scale)", true));
    body.push_str("<h2>Analysis spread over time</h2>\n");
    body.push_str(&lines("spread-over-time", &series(|m| &m.spread_a), "time", "analysis spread (log scale)", true));
    let histograms: Vec<(String, Vec<f64>)> =
        methods.iter().filter_map(|m| rank_histogram(&truth, &m.analysis, burn_in).map(|h| (m.label.clone(), h))).collect();
    if !histograms.is_empty() {
        body.push_str("<h2>Rank histograms</h2>\n<p class=\"note\">The truth's rank among the kept analysis members, over the kept times after the burn-in and every variable: flat for a calibrated ensemble, U-shaped for an under-dispersive one.</p>\n");
        for (i, (label, h)) in histograms.iter().enumerate() {
            let _ = writeln!(body, "<figure class=\"rank-histogram\" data-method=\"{}\"><figcaption>{}</figcaption>", escape(label), escape(label));
            body.push_str(&bars(&format!("rank-histogram-{i}"), h, "rank of the truth among the members", "fraction"));
            body.push_str("</figure>\n");
        }
    }
    Ok(page(&title, &body))
}

/// Every method's posterior samples in a static run's folder:
/// (label, parameters × samples as rows per parameter).
fn static_samples(dir: &Path) -> Result<Vec<(String, Vec<Vec<f64>>)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "nc") && p.file_name().is_some_and(|n| n != "observation.nc"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let label = path.display().to_string();
        let mut r = geohost_netcdf::Reader::open(&label, std::fs::read(&path)?, "posterior samples written by `geohost run`")?;
        if !r.has_var("samples") {
            continue;
        }
        let (n, d) = (r.dim("sample")?, r.dim("parameter")?);
        let data = r.var("samples", n * d)?;
        let rows = (0..d).map(|i| (0..n).map(|j| data[j * d + i]).collect()).collect();
        let method = r.attr("method").unwrap_or(label);
        // Step 4 reruns a method through the emulator under its own label.
        let method = if r.attr("emulator").is_ok() { format!("{method} via emulator (step 4)") } else { method };
        out.push((method, rows));
    }
    Ok(out)
}

/// A histogram of `values` over [lo, hi] in `bins` bins as a step line
/// (a density: it integrates to one).
fn density_steps(values: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in values {
        let b = ((v - lo) / width).floor();
        if b >= 0.0 && (b as usize) < bins {
            counts[b as usize] += 1;
        }
    }
    let scale = 1.0 / (values.len().max(1) as f64 * width);
    let (mut x, mut y) = (vec![lo], vec![0.0]);
    for (b, c) in counts.iter().enumerate() {
        let d = *c as f64 * scale;
        x.extend([lo + b as f64 * width, lo + (b + 1) as f64 * width]);
        y.extend([d, d]);
    }
    x.push(hi);
    y.push(0.0);
    (x, y)
}

/// The page of a static problem's run folder (`observation.nc`, one
/// `<method>.nc` of samples per method, `cycle-report.json`).
fn static_page(dir: &Path) -> Result<String> {
    let obs_path = dir.join("observation.nc");
    let mut r = geohost_netcdf::Reader::open(&obs_path.display().to_string(), std::fs::read(&obs_path)?, "observation.nc of a static run")?;
    let names: Vec<String> = r.attr("parameters")?.split_whitespace().map(String::from).collect();
    let truth = r.var("truth", names.len())?;
    let methods = static_samples(dir)?;
    if methods.is_empty() {
        bail!("{} has no posterior samples (*.nc beside observation.nc)", dir.display());
    }
    let report: Option<serde_json::Value> = std::fs::read(dir.join("cycle-report.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let set = report.as_ref().and_then(|r| r["name"].as_str()).unwrap_or("static run").to_string();
    let title = format!("run of {set} ({})", dir.display());
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    if let Some(report) = &report {
        let verdict = report["verdict"].as_str().unwrap_or("?");
        let _ = writeln!(body, r#"<p>cycle report verdict: <span id="verdict" class="verdict-{0}">{0}</span></p>"#, escape(verdict));
        body.push_str("<table id=\"checks\">\n<tr><th>step</th><th>check</th><th>value</th><th>limit</th><th>result</th></tr>\n");
        for c in report["checks"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let pass = c["pass"].as_bool() == Some(true);
            let _ = writeln!(
                body,
                r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td class="{}">{}</td></tr>"#,
                c["step"],
                escape(c["check"].as_str().unwrap_or("")),
                c["value"].as_f64().map(|v| format!("{v:.4}")).unwrap_or_default(),
                escape(c["limit"].as_str().unwrap_or("")),
                if pass { "verdict-pass" } else { "verdict-fail" },
                if pass { "pass" } else { "FAIL" }
            );
        }
        body.push_str("</table>\n");
    }
    body.push_str("<h2>Posterior marginals</h2>\n<p class=\"note\">Each method's samples for the run's observation as a density histogram; the vertical line is the truth.</p>\n");
    for (i, name) in names.iter().enumerate() {
        let all: Vec<f64> = methods.iter().flat_map(|(_, rows)| rows[i].iter().copied()).chain([truth[i]]).filter(|v| v.is_finite()).collect();
        let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let pad = if hi > lo { 0.02 * (hi - lo) } else { 1.0 };
        let (lo, hi) = (lo - pad, hi + pad);
        let mut series: Vec<Series> = methods
            .iter()
            .map(|(label, rows)| {
                let (x, y) = density_steps(&rows[i], lo, hi, 40);
                Series { label: label.clone(), x, y }
            })
            .collect();
        let top = series.iter().flat_map(|s| s.y.iter().copied()).fold(0.0, f64::max);
        series.push(Series { label: format!("truth {:.4}", truth[i]), x: vec![truth[i], truth[i]], y: vec![0.0, top] });
        let _ = writeln!(body, "<figure class=\"marginal\" data-parameter=\"{}\"><figcaption>{}</figcaption>", escape(name), escape(name));
        body.push_str(&lines(&format!("marginal-{i}"), &series, name, "density", false));
        body.push_str("</figure>\n");
    }
    if names.len() > 1 {
        body.push_str("<h2>Posterior pairs</h2>\n<p class=\"note\">Each pair of parameters: every method's draws (at most 400 shown per method), the cross is the truth. Correlations and bent or separated modes show here, not in the marginals.</p>\n");
        let clouds: Vec<Cloud> = methods.iter().map(|(label, rows)| Cloud { label, rows }).collect();
        body.push_str(&pairs("pairs", &names, &clouds, Some(&truth)));
    }
    let calibration = report.as_ref().and_then(|r| r["steps"].as_array()?.iter().find(|s| s["step"] == 5).map(|s| s["figures"]["calibration"].clone()));
    if let Some(cal) = calibration.filter(|c| c["levels"].is_array()) {
        let nums = |v: &serde_json::Value| v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<f64>>()).unwrap_or_default();
        let (levels, coverage) = (nums(&cal["levels"]), nums(&cal["coverage"]));
        body.push_str("<h2>Step 5: coverage</h2>\n<p class=\"note\">The fraction of held-out true parameters inside each credible region of the amortized posterior, against the credible level: on the diagonal when it is calibrated, below it when it is over-confident.</p>\n");
        let series = [
            Series { label: "amortized posterior".into(), x: levels.clone(), y: coverage },
            Series { label: "calibrated (diagonal)".into(), x: vec![0.0, 1.0], y: vec![0.0, 1.0] },
        ];
        body.push_str(&lines("coverage", &series, "credible level", "expected coverage", false));
    }
    Ok(page(&title, &body))
}
