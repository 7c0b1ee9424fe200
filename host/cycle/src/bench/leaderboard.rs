//! `geohost bench leaderboard`: everything scored under a contract (all its
//! versions), ranked by the official score.
//!
//! The rows come from the registry's reports (kind `report`, derived from a
//! version of the contract): one row per candidate and configuration, from
//! its latest report. The official score is the hidden mean of the primary
//! metric for a hidden contract, the public one otherwise (C2ST for a
//! posterior benchmark, the ranked metric of a retrieval benchmark), in
//! the metric's own direction. Disqualified
//! submissions are listed below the ranked rows. The oracle and the
//! baselines of the latest report are reference rows. A row scored after
//! the contract's seeds were revealed is marked: its hidden score is not
//! blind. Self-reported results files are marked as such.

use super::contract::Goal;
use super::posterior::PosteriorReport;
use super::retrieval::RetrievalReport;
use super::score::{Report, Scored, DISQUALIFIED};
use anyhow::{bail, Result};
use geohost_registry::{Filter, Registry};
use geohost_sandbox::MetricValue;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    pub rank: Option<usize>,
    pub label: String,
    /// The candidate's id (a submission's component, a results file).
    pub id: String,
    /// `candidate`, `oracle` or `baseline`.
    pub role: String,
    /// `component` (run by the host), `self-reported` (a file), or empty
    /// for reference rows.
    pub provenance: String,
    /// The official score and what it is.
    pub score: Option<f64>,
    pub scored_on: String,
    pub fuel: Option<u64>,
    pub verdict: String,
    pub config: Option<serde_json::Value>,
    pub contract_version: String,
    pub report: String,
    pub date: String,
    /// The contract version was superseded or its inputs changed.
    pub stale: bool,
    /// Scored after the seeds were revealed: not blind.
    pub revealed: bool,
    /// The hidden score is published rounded to this (the contract's
    /// `publish_precision`, until its seeds are revealed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounded_to: Option<f64>,
}

impl Row {
    /// The rank column: the rank, `-` for an unranked candidate, else the
    /// reference row's role.
    fn rank_label(&self) -> String {
        self.rank.map(|r| r.to_string()).unwrap_or_else(|| if self.role == "candidate" { "-".into() } else { self.role.clone() })
    }

    /// What the row's score is not: fresh (`stale`) or blind (`after reveal`).
    fn notes(&self) -> Vec<&'static str> {
        [(self.stale, "stale"), (self.revealed, "after reveal")].into_iter().filter(|(on, _)| *on).map(|(_, note)| note).collect()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Leaderboard {
    pub contract: String,
    pub metric: String,
    /// The metric's direction (`lower`, `higher`, … in JSON).
    pub goal: Goal,
    pub rows: Vec<Row>,
    pub reference: Vec<Row>,
}

/// The leaderboard of contract `name` (every registered version).
pub fn leaderboard(registry: &Registry, name: &str) -> Result<Leaderboard> {
    let versions = registry.list(&Filter { kind: Some("contract".into()), name: Some(name.into()), ..Default::default() })?;
    if versions.is_empty() {
        bail!("no contract named `{name}` is registered; pre-register it with `geohost bench register`");
    }
    let reports = registry.list(&Filter { kind: Some("report".into()), ..Default::default() })?;
    let (mut metric, mut goal) = (String::new(), Goal::Lower);
    // (candidate id, config) → row, the latest report winning.
    let mut best: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut reference: Vec<Row> = Vec::new();
    // The reference rows come from the latest report with hidden scores
    // (a disqualified submission's report has none), else the latest.
    let mut latest = (false, String::new());
    for r in reports.iter().filter(|r| versions.iter().any(|v| r.metadata["contract"].as_str() == Some(&v.id))) {
        let version = versions.iter().find(|v| r.metadata["contract"].as_str() == Some(&v.id)).expect("filtered above");
        let bytes = registry.read(&r.id)?;
        let stale = r.stale || version.stale;
        // Anti-probing: hidden scores published rounded until the reveal.
        let publish = match super::probing::publish_precision(&registry.read(&version.id)?) {
            Some(p) if !super::hidden::is_revealed(registry, &version.id)? => Some(p),
            _ => None,
        };
        let base = |label: &str, id: &str, role: &str| Row {
            rank: None,
            label: label.into(),
            id: id.into(),
            role: role.into(),
            provenance: String::new(),
            score: None,
            scored_on: String::new(),
            fuel: None,
            verdict: String::new(),
            config: None,
            contract_version: version.version.clone().unwrap_or_default(),
            report: r.id.clone(),
            date: r.created.clone(),
            stale,
            revealed: false,
            rounded_to: None,
        };
        let mut rows = Vec::new();
        let mut refs = Vec::new();
        let has_hidden;
        if let Ok(p) = serde_json::from_slice::<RetrievalReport>(&bytes) {
            (metric, goal) = (p.metric.clone(), Goal::Lower);
            let on = if p.experiments.len() > 1 { "hidden mean" } else { "public" };
            has_hidden = p.experiments.len() > 1 && p.submission.disqualified.is_none();
            let mut row = base(p.submission.name.as_deref().unwrap_or("submission"), &p.candidate, "candidate");
            let score = p.candidate_scores.as_ref().and_then(|s| s.get(&p.metric).copied());
            (row.provenance, row.score, row.scored_on) = (p.provenance.clone(), score, on.into());
            (row.fuel, row.verdict, row.config, row.revealed) =
                (Some(p.submission.fuel_total), p.verdict.clone(), Some(p.submission.config.clone()), p.revealed);
            rows.push(row);
            for ((label, id), scores) in p.baselines.iter().zip(&p.baseline_scores) {
                let mut row = base(label, id, "baseline");
                (row.score, row.scored_on) = (scores.get(&p.metric).copied(), on.into());
                refs.push(row);
            }
        } else if let Ok(p) = serde_json::from_slice::<PosteriorReport>(&bytes) {
            (metric, goal) = ("c2st".into(), Goal::Lower);
            let on = if p.experiments.len() > 1 { "hidden mean" } else { "public" };
            has_hidden = p.experiments.len() > 1 && p.submission.disqualified.is_none();
            let mut row = base(p.submission.name.as_deref().unwrap_or("submission"), &p.candidate, "candidate");
            (row.provenance, row.score, row.scored_on) = (p.provenance.clone(), p.candidate_c2st, on.into());
            (row.fuel, row.verdict, row.config, row.revealed) =
                (Some(p.submission.fuel_total), p.verdict.clone(), Some(p.submission.config.clone()), p.revealed);
            rows.push(row);
            for ((label, id), c2st) in p.baselines.iter().zip(&p.baseline_c2st) {
                let mut row = base(label, id, "baseline");
                (row.score, row.scored_on) = (Some(*c2st), on.into());
                refs.push(row);
            }
        } else {
            let report: Report = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("report {} cannot be read: {e}", r.id))?;
            metric = report.ranking.metric.clone();
            goal = report.goals.get(&metric).copied().unwrap_or(Goal::Lower);
            let value = |s: &Scored| {
                s.metrics.get(&metric).and_then(|v| match v {
                    MetricValue::Scalar(x) => Some(*x),
                    MetricValue::Vector(v) if !v.is_empty() => Some(v.iter().sum::<f64>() / v.len() as f64),
                    _ => None,
                })
            };
            for (i, c) in report.candidates.iter().enumerate() {
                let mut row = base(&c.scored.label, &c.scored.id, "candidate");
                row.provenance = c.provenance.clone();
                row.verdict = c.verdict.clone();
                match &report.hidden {
                    Some(h) => {
                        let hidden = h.candidates.get(i);
                        (row.score, row.scored_on, row.revealed) = (hidden.and_then(|x| value(&x.scored)), "hidden mean".into(), h.revealed);
                    }
                    None => (row.score, row.scored_on) = (value(&c.scored), "public".into()),
                }
                if let Some(sub) = &c.submission {
                    (row.fuel, row.config) = (Some(sub.fuel_total), Some(sub.config.clone()));
                    if sub.disqualified.is_some() {
                        (row.score, row.scored_on) = (None, String::new());
                    }
                }
                rows.push(row);
            }
            let (oracle, baselines) = match &report.hidden {
                Some(h) => (h.oracle.clone(), h.baselines.clone()),
                None => (report.oracle.clone(), report.baselines.clone()),
            };
            let on = if report.hidden.is_some() { "hidden mean" } else { "public" };
            has_hidden = report.hidden.is_some();
            for (s, role) in oracle.iter().map(|o| (o, "oracle")).chain(baselines.iter().map(|b| (b, "baseline"))) {
                let mut row = base(&s.label, &s.id, role);
                (row.score, row.scored_on) = (value(s), on.into());
                refs.push(row);
            }
        }
        if let Some(p) = publish {
            for row in rows.iter_mut().chain(refs.iter_mut()).filter(|row| row.scored_on == "hidden mean") {
                row.score = row.score.map(|x| super::probing::round_to(x, p));
                row.rounded_to = Some(p);
            }
        }
        if (has_hidden, r.created.clone()) >= latest {
            latest = (has_hidden, r.created.clone());
            reference = refs;
        }
        for row in rows {
            let key = (row.id.clone(), row.config.as_ref().map(|c| c.to_string()).unwrap_or_default());
            match best.get(&key) {
                Some(old) if old.date > row.date => {}
                _ => {
                    best.insert(key, row);
                }
            }
        }
    }
    let badness = |row: &Row| row.score.and_then(|x| goal.badness(&MetricValue::Scalar(x)));
    let mut rows: Vec<Row> = best.into_values().collect();
    rows.sort_by(|a, b| match (a.verdict == DISQUALIFIED, b.verdict == DISQUALIFIED) {
        (false, true) => std::cmp::Ordering::Less,
        (true, false) => std::cmp::Ordering::Greater,
        _ => match (badness(a), badness(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.date.cmp(&b.date),
        },
    });
    let mut rank = 0;
    for row in &mut rows {
        if badness(row).is_some() && row.verdict != DISQUALIFIED {
            rank += 1;
            row.rank = Some(rank);
        }
    }
    Ok(Leaderboard { contract: name.into(), metric, goal, rows, reference })
}

/// `leaderboard of C by METRIC (lower is better)`.
fn title(board: &Leaderboard) -> String {
    format!("leaderboard of {} by {} ({} is better)", board.contract, board.metric, format!("{:?}", board.goal).to_lowercase())
}

/// The leaderboard as a table, its columns as wide as their longest entry.
pub fn table(board: &Leaderboard) -> String {
    let rows: Vec<&Row> = board.rows.iter().chain(&board.reference).collect();
    let label = |row: &Row| match row.config.as_ref().filter(|c| c.as_object().is_some_and(|o| !o.is_empty())) {
        Some(c) => format!("{} {c}", row.label),
        None => row.label.clone(),
    };
    let rank_width = rows.iter().map(|r| r.rank_label().len()).max().unwrap_or(0).max(4);
    let label_width = rows.iter().map(|r| label(r).chars().count()).max().unwrap_or(0).max(9);
    let mut s = String::new();
    let _ = writeln!(s, "{}", title(board));
    if let Some(p) = rows.iter().find_map(|r| r.rounded_to) {
        let _ =
            writeln!(s, "hidden scores are published rounded to {p} until the contract's seeds are revealed (full precision stays in the registry's reports)");
    }
    let _ = writeln!(
        s,
        "{:>rank_width$}  {:<label_width$} {:>10}  {:<13} {:<13} {:>14}  {:<12} {:<8} id",
        "rank", "candidate", "score", "scored on", "provenance", "fuel", "verdict", "version"
    );
    for row in rows {
        let notes = row.notes();
        let _ = writeln!(
            s,
            "{:>rank_width$}  {:<label_width$} {:>10}  {:<13} {:<13} {:>14}  {:<12} {:<8} {}{}",
            row.rank_label(),
            label(row),
            row.score.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            row.scored_on,
            row.provenance,
            row.fuel.map(|f| f.to_string()).unwrap_or_default(),
            row.verdict,
            row.contract_version,
            &row.id[..row.id.len().min(19)],
            if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) }
        );
    }
    s
}

/// The leaderboard as a self-contained page: the ranked table (rows with
/// `data-rank` and `data-id`), the reference rows, and the official score
/// against fuel with the Pareto front of the ranked candidates (no other
/// candidate both cheaper and better).
pub fn html(board: &Leaderboard) -> String {
    use crate::html::{escape, page, scatter, Point};
    let badness = |x: f64| board.goal.badness(&MetricValue::Scalar(x)).unwrap_or(f64::INFINITY);
    let title = title(board);
    let mut body = format!("<h1>{}</h1>\n", escape(&title));
    if let Some(p) = board.rows.iter().chain(&board.reference).find_map(|r| r.rounded_to) {
        let _ = writeln!(body, r#"<p class="note" id="rounding">Hidden scores are published rounded to {p} until the contract's seeds are revealed.</p>"#);
    }
    let _ = writeln!(
        body,
        "<table id=\"leaderboard\">\n<tr><th>rank</th><th>candidate</th><th>config</th><th>{}</th><th>scored on</th><th>provenance</th><th>fuel</th><th>verdict</th><th>version</th><th>id</th><th>date</th></tr>",
        escape(&board.metric)
    );
    for row in board.rows.iter().chain(&board.reference) {
        let class = if row.role != "candidate" {
            "reference"
        } else if row.verdict == DISQUALIFIED {
            "disqualified"
        } else {
            "candidate"
        };
        let notes = row.notes();
        let _ = writeln!(
            body,
            r#"<tr class="{class}" data-role="{}" data-rank="{}" data-id="{}"><td>{}</td><td>{}{}</td><td><code>{}</code></td><td class="num">{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="verdict-{}">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>"#,
            escape(&row.role),
            row.rank.map(|r| r.to_string()).unwrap_or_default(),
            escape(&row.id),
            escape(&row.rank_label()),
            escape(&row.label),
            if notes.is_empty() { String::new() } else { format!(" <span class=\"note\">({})</span>", notes.join(", ")) },
            row.config.as_ref().filter(|c| c.as_object().is_some_and(|o| !o.is_empty())).map(|c| escape(&c.to_string())).unwrap_or_default(),
            row.score.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
            escape(&row.scored_on),
            escape(&row.provenance),
            row.fuel.map(|f| f.to_string()).unwrap_or_default(),
            escape(&row.verdict),
            escape(&row.verdict),
            escape(&row.contract_version),
            escape(&row.id[..row.id.len().min(19)]),
            escape(row.date.get(..10).unwrap_or(&row.date)),
        );
    }
    body.push_str("</table>\n");
    // Score against fuel: the ranked candidates, their Pareto front.
    let ranked: Vec<&Row> = board.rows.iter().filter(|r| r.rank.is_some() && r.fuel.is_some_and(|f| f > 0)).collect();
    let points: Vec<Point> = ranked
        .iter()
        .map(|r| {
            let (fuel, score) = (r.fuel.unwrap_or(0), r.score.unwrap_or(f64::NAN));
            let dominated = ranked.iter().any(|o| {
                let (of, os) = (o.fuel.unwrap_or(0), o.score.unwrap_or(f64::NAN));
                of <= fuel && badness(os) <= badness(score) && (of < fuel || badness(os) < badness(score))
            });
            Point { x: fuel as f64, y: score, label: format!("{} ({} fuel)", r.label, fuel), on_front: !dominated }
        })
        .collect();
    let _ = writeln!(body, "<h2>{} against fuel</h2>", escape(&board.metric));
    let _ = writeln!(
        body,
        r#"<p class="note">Each ranked submission run by the host: its official score against the fuel (≈ wasm instructions) it used on all experiments. Orange: the Pareto front (no other candidate both cheaper and better).</p>"#
    );
    body.push_str(&scatter(
        "score-vs-fuel",
        &points,
        "fuel (wasm instructions, log scale)",
        &format!("{} ({})", board.metric, board.rows.first().map(|r| r.scored_on.as_str()).unwrap_or("")),
        true,
    ));
    page(&title, &body)
}
