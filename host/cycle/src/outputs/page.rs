//! `geohost report OUTDIR --html`: a run's outputs as one self-contained
//! page: the results table of `summary.json`, the analysis RMSE and spread
//! of every method over time (log scale), and the rank histogram of each
//! method that kept ensembles (the truth's rank among the members, over
//! every kept time after the burn-in and every variable: flat for a
//! calibrated ensemble, U-shaped for an under-dispersive one).

use super::read::{AnalysisFile, TruthFile};
use crate::html::{bars, escape, lines, page, Series};
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
