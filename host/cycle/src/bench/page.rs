//! A contract's report as a self-contained page (`bench score --html`,
//! `bench submit --html`): the verdict, every scored row's metrics (the
//! hidden section first when there is one, as it is the official one), the
//! failure-mode checks of each candidate, the forecast-error growth of the
//! rows that have `rmse_by_lead` (an emulator against its model), and the
//! rank histograms of the rows that have one, as bar charts. The page is named by the report's id.

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
    if let Some(h) = &report.hidden {
        let mut rows: Vec<(&str, &Scored)> = h.candidates.iter().map(|x| ("candidate", &x.scored)).collect();
        rows.extend(h.oracle.iter().map(|o| ("oracle", o)));
        rows.extend(h.baselines.iter().map(|b| ("baseline", b)));
        section(
            &mut body,
            "hidden",
            &format!(
                "Hidden experiments ({} × {} cycles): the official scores{}",
                h.experiments,
                h.cycles,
                if h.revealed { ", scored after the reveal" } else { "" }
            ),
            &rows,
        );
        for x in &h.candidates {
            checks(&mut body, &x.scored.label, &x.checks);
        }
    }
    let mut rows: Vec<(&str, &Scored)> = report.candidates.iter().map(|x| ("candidate", &x.scored)).collect();
    rows.extend(report.oracle.iter().map(|o| ("oracle", o)));
    rows.extend(report.baselines.iter().map(|b| ("baseline", b)));
    section(&mut body, "public", if report.hidden.is_some() { "Public experiment (for development)" } else { "Scores" }, &rows);
    for x in &report.candidates {
        checks(&mut body, &x.scored.label, &x.checks);
    }
    for w in &report.warnings {
        let _ = writeln!(body, "<p class=\"note\">warning: {}</p>", escape(w));
    }
    page(&title, &body)
}
