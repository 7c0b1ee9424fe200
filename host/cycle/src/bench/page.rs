//! A contract's report as a self-contained page (`bench score --html`,
//! `bench submit --html`): the verdict, every scored row's metrics (the
//! hidden section first when there is one, as it is the official one), the
//! failure-mode checks of each candidate, the forecast-error growth of the
//! rows that have `rmse_by_lead` (an emulator against its model), and the
//! rank histograms of the rows that have one, as bar charts. The page is named by the report's id.
//! A cycle benchmark's report (`bench cycle --html`) is one page with a
//! summary row per stage and each stage's sections.

use super::cycle_benchmark::CycleReport;
use super::score::{CheckResult, Report, Scored};
use crate::html::{bars, escape, lines, page, Series};
use geohost_sandbox::MetricValue;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// One section's rows: (role, scored).
fn section(body: &mut String, id: &str, heading: &str, rows: &[(&str, &Scored)]) {
    let metrics: BTreeSet<&String> = rows.iter().flat_map(|(_, s)| s.metrics.keys()).collect();
    let _ = writeln!(body, "<h2>{}</h2>\n<table id=\"{id}\">\n<tr><th>role</th><th>row</th>", escape(heading));
    for m in &metrics {
        let _ = write!(body, "<th>{}</th>", escape(m));
    }
    body.push_str("</tr>\n");
    for (role, s) in rows {
        let _ = write!(
            body,
            r#"<tr class="{}" data-role="{}" data-id="{}"><td>{}</td><td>{}</td>"#,
            if *role == "candidate" { "candidate" } else { "reference" },
            escape(role),
            escape(&s.id),
            escape(role),
            escape(&s.label)
        );
        for m in &metrics {
            let cell = match s.metrics.get(*m) {
                Some(MetricValue::Scalar(x)) => format!("{x:.4}"),
                Some(MetricValue::Vector(v)) => format!("{} values", v.len()),
                None => s.not_applicable.get(*m).map(|_| "n/a".to_string()).unwrap_or_else(|| "-".into()),
            };
            let _ = write!(body, r#"<td class="num" data-metric="{}">{}</td>"#, escape(m), escape(&cell));
        }
        body.push_str("</tr>\n");
    }
    body.push_str("</table>\n");
    // Forecast-error growth: every row's error by lead on one chart (an
    // emulator against the model, persistence and the other references).
    let growth: Vec<Series> = rows
        .iter()
        .filter_map(|(role, s)| match s.metrics.get("rmse_by_lead") {
            Some(MetricValue::Vector(v)) if !v.is_empty() => {
                Some(Series { label: format!("{} ({role})", s.label), x: (1..=v.len()).map(|l| l as f64).collect(), y: v.clone() })
            }
            _ => None,
        })
        .collect();
    if !growth.is_empty() {
        let _ = writeln!(body, "<h3>Forecast-error growth</h3>");
        body.push_str(&lines(&format!("{id}-rmse-by-lead"), &growth, "lead (steps)", "RMSE (log scale)", true));
    }
    let mut n = 0;
    for (role, s) in rows {
        if let Some(MetricValue::Vector(h)) = s.metrics.get("rank_histogram") {
            let _ = writeln!(
                body,
                "<figure class=\"rank-histogram\" data-id=\"{}\"><figcaption>{} ({})</figcaption>",
                escape(&s.id),
                escape(&s.label),
                escape(role)
            );
            body.push_str(&bars(&format!("{id}-rank-histogram-{n}"), h, "rank of the truth among the members", "fraction"));
            body.push_str("</figure>\n");
            n += 1;
        }
    }
}

fn checks(body: &mut String, label: &str, checks: &[CheckResult]) {
    if checks.is_empty() {
        return;
    }
    let _ = writeln!(
        body,
        "<table class=\"checks\" data-candidate=\"{}\">\n<tr><th>check of {}</th><th>value</th><th>result</th></tr>",
        escape(label),
        escape(label)
    );
    for c in checks {
        let (class, result) = match c.passed {
            Some(true) => ("verdict-pass", "ok"),
            Some(false) => ("verdict-fail", "FAIL"),
            None => ("note", "stated"),
        };
        let value = c.value.map(|v| format!("{v:.4}")).unwrap_or_default();
        let _ = writeln!(body, r#"<tr><td>{}</td><td class="num">{value}</td><td class="{class}">{result}</td></tr>"#, escape(&c.failure_mode));
    }
    body.push_str("</table>\n");
}

/// The page of `report`, whose registry id is `id`.
pub fn html(report: &Report, id: &str) -> String {
    let c = &report.contract;
    let title = format!("report {} of {}@{}", &id[..id.len().min(19)], c.name, c.version);
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    let _ = writeln!(
        body,
        r#"<p>{}</p><p>verdict: <span id="verdict" class="verdict-{1}">{1}</span>; ranked by <b>{2}</b>; contract <code>{3}</code>; report <code>{4}</code></p>"#,
        escape(&c.task),
        escape(&report.verdict),
        escape(&report.ranking.metric),
        escape(&c.id),
        escape(id)
    );
    report_sections(&mut body, report, "");
    page(&title, &body)
}

/// A report's sections (hidden, public, checks, warnings); element ids
/// start with `prefix` so that several reports fit on one page.
fn report_sections(body: &mut String, report: &Report, prefix: &str) {
    if let Some(h) = &report.hidden {
        let mut rows: Vec<(&str, &Scored)> = h.candidates.iter().map(|x| ("candidate", &x.scored)).collect();
        rows.extend(h.oracle.iter().map(|o| ("oracle", o)));
        rows.extend(h.baselines.iter().map(|b| ("baseline", b)));
        section(
            body,
            &format!("{prefix}hidden"),
            &format!(
                "Hidden experiments ({} × {} cycles): the official scores{}",
                h.experiments,
                h.cycles,
                if h.revealed { ", scored after the reveal" } else { "" }
            ),
            &rows,
        );
        for x in &h.candidates {
            checks(body, &x.scored.label, &x.checks);
        }
    }
    let mut rows: Vec<(&str, &Scored)> = report.candidates.iter().map(|x| ("candidate", &x.scored)).collect();
    rows.extend(report.oracle.iter().map(|o| ("oracle", o)));
    rows.extend(report.baselines.iter().map(|b| ("baseline", b)));
    section(body, &format!("{prefix}public"), if report.hidden.is_some() { "Public experiment (for development)" } else { "Scores" }, &rows);
    for x in &report.candidates {
        checks(body, &x.scored.label, &x.checks);
    }
    for w in &report.warnings {
        let _ = writeln!(body, "<p class=\"note\">warning: {}</p>", escape(w));
    }
}

/// The page of a cycle benchmark's report (`bench cycle --html`), whose
/// registry id is `id`: the verdict, one summary row per stage (step,
/// contract, verdict, the candidate's primary score against the oracle's),
/// then each scored stage's sections under `<section class="stage"
/// data-step=N>` with element ids prefixed `stage-N-`.
pub fn cycle_html(report: &CycleReport, id: &str) -> String {
    let title = format!("cycle report {} of {}@{}", &id[..id.len().min(19)], report.name, report.version);
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    let _ = writeln!(
        body,
        r#"<p>{}</p><p>verdict: <span id="verdict" class="verdict-{1}">{1}</span>; cycle benchmark <code>{2}</code>; report <code>{3}</code></p>"#,
        escape(&report.domain),
        escape(&report.verdict),
        escape(&report.cycle),
        escape(id)
    );
    body.push_str(
        "<table id=\"stages\">\n<tr><th>step</th><th>contract</th><th>verdict</th><th>ranked by</th><th>candidate</th><th>score</th><th>oracle</th></tr>\n",
    );
    for stage in &report.stages {
        let _ = write!(body, r#"<tr data-step="{}"><td>{}</td>"#, stage.step, stage.step);
        match (&stage.report, &stage.not_scored) {
            (Some(r), _) => {
                let metric = &r.ranking.metric;
                let official = |s: &Scored| match s.metrics.get(metric) {
                    Some(MetricValue::Scalar(x)) => format!("{x:.4}"),
                    _ => "-".into(),
                };
                // The hidden section is the official one when there is one.
                let (candidates, oracle) = match &r.hidden {
                    Some(h) => (h.candidates.iter().map(|c| &c.scored).collect::<Vec<_>>(), h.oracle.as_ref()),
                    None => (r.candidates.iter().map(|c| &c.scored).collect(), r.oracle.as_ref()),
                };
                let _ = writeln!(
                    body,
                    r#"<td>{}@{}</td><td class="verdict-{2}">{2}</td><td>{3}</td><td>{4}</td><td class="num">{5}</td><td class="num">{6}</td></tr>"#,
                    escape(&r.contract.name),
                    escape(&r.contract.version),
                    escape(&r.verdict),
                    escape(metric),
                    escape(&candidates.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join(", ")),
                    escape(&candidates.iter().map(|c| official(c)).collect::<Vec<_>>().join(", ")),
                    oracle.map(official).unwrap_or_else(|| "-".into())
                );
            }
            (None, why) => {
                let _ = writeln!(
                    body,
                    r#"<td><code>{}</code></td><td class="note">not scored</td><td colspan="4" class="note">{}</td></tr>"#,
                    escape(&stage.contract),
                    escape(why.as_deref().unwrap_or(""))
                );
            }
        }
    }
    body.push_str("</table>\n");
    for stage in &report.stages {
        if let Some(r) = &stage.report {
            let _ = writeln!(
                body,
                r#"<section class="stage" data-step="{0}"><h2>Step {0}: {1}@{2} — <span class="verdict-{3}">{3}</span></h2><p>{4}</p>"#,
                stage.step,
                escape(&r.contract.name),
                escape(&r.contract.version),
                escape(&r.verdict),
                escape(&r.contract.task)
            );
            report_sections(&mut body, r, &format!("stage-{}-", stage.step));
            body.push_str("</section>\n");
        }
    }
    page(&title, &body)
}
