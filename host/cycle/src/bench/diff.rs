//! `bench diff`: what changed between two reports, metric by metric, with
//! the direction of each change (by the metric's goal).

use super::contract::Goal;
use super::score::{Report, Scored};
use geohost_sandbox::MetricValue;
use serde::Serialize;
use std::fmt::Write as _;

/// One metric of one scored subject in both reports.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MetricChange {
    /// `candidate`, `oracle` or `baseline`.
    pub role: String,
    /// The subject's label in report A and in report B.
    pub label_a: String,
    pub label_b: String,
    pub metric: String,
    pub a: Option<MetricValue>,
    pub b: Option<MetricValue>,
    /// b − a for scalars; for vectors, the change of the goal's distance
    /// from ideal (e.g. a histogram's distance from flat).
    pub change: Option<f64>,
    /// `better`, `worse`, `same`, `changed` (no direction), `added` or
    /// `removed`.
    pub direction: String,
}

/// The comparison of two reports.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    /// Set when the reports were scored under different contracts.
    pub contracts_differ: Option<(String, String)>,
    pub changes: Vec<MetricChange>,
}

/// Pairs of subjects: candidates by label, or the single candidate of each
/// report with each other (e.g. ETKF N=20 against ETKF N=28); baselines and
/// the oracle by label.
fn pairs<'a>(a: &'a Report, b: &'a Report) -> Vec<(&'static str, Option<&'a Scored>, Option<&'a Scored>)> {
    let mut out = Vec::new();
    let (ca, cb): (Vec<&Scored>, Vec<&Scored>) = (a.candidates.iter().map(|c| &c.scored).collect(), b.candidates.iter().map(|c| &c.scored).collect());
    if ca.len() == 1 && cb.len() == 1 {
        out.push(("candidate", Some(ca[0]), Some(cb[0])));
    } else {
        by_label(&mut out, "candidate", &ca, &cb);
    }
    let (oa, ob): (Vec<&Scored>, Vec<&Scored>) = (a.oracle.iter().collect(), b.oracle.iter().collect());
    by_label(&mut out, "oracle", &oa, &ob);
    let (ba, bb): (Vec<&Scored>, Vec<&Scored>) = (a.baselines.iter().collect(), b.baselines.iter().collect());
    by_label(&mut out, "baseline", &ba, &bb);
    out
}

fn by_label<'a>(out: &mut Vec<(&'static str, Option<&'a Scored>, Option<&'a Scored>)>, role: &'static str, a: &[&'a Scored], b: &[&'a Scored]) {
    for x in a {
        out.push((role, Some(*x), b.iter().find(|y| y.label == x.label).copied()));
    }
    for y in b {
        if !a.iter().any(|x| x.label == y.label) {
            out.push((role, None, Some(*y)));
        }
    }
}

/// Compare report `a` (before) with report `b` (after).
pub fn diff(a: &Report, b: &Report, name_a: &str, name_b: &str) -> Diff {
    let goal = |metric: &str| b.goals.get(metric).or_else(|| a.goals.get(metric)).copied().unwrap_or_else(|| Goal::known(metric));
    let mut changes = Vec::new();
    for (role, x, y) in pairs(a, b) {
        let mut metrics: Vec<&String> = x.iter().chain(y.iter()).flat_map(|s| s.metrics.keys()).collect();
        metrics.sort();
        metrics.dedup();
        for metric in metrics {
            let (va, vb) = (x.and_then(|s| s.metrics.get(metric)).cloned(), y.and_then(|s| s.metrics.get(metric)).cloned());
            let g = goal(metric);
            let (change, direction) = match (&va, &vb) {
                (Some(p), Some(q)) => {
                    let change = match (p, q) {
                        (MetricValue::Scalar(p), MetricValue::Scalar(q)) => Some(q - p),
                        _ => g.badness(q).zip(g.badness(p)).map(|(q, p)| q - p),
                    };
                    let direction = if p == q {
                        "same"
                    } else {
                        match (g.badness(p), g.badness(q)) {
                            (Some(bp), Some(bq)) if bq < bp => "better",
                            (Some(bp), Some(bq)) if bq > bp => "worse",
                            (Some(_), Some(_)) => "same",
                            _ => "changed",
                        }
                    };
                    (change, direction)
                }
                (None, Some(_)) => (None, "added"),
                (Some(_), None) => (None, "removed"),
                (None, None) => continue,
            };
            changes.push(MetricChange {
                role: role.into(),
                label_a: x.map(|s| s.label.clone()).unwrap_or_else(|| "-".into()),
                label_b: y.map(|s| s.label.clone()).unwrap_or_else(|| "-".into()),
                metric: metric.clone(),
                a: va,
                b: vb,
                change,
                direction: direction.into(),
            });
        }
    }
    let contracts_differ = (a.contract.id != b.contract.id).then(|| (a.contract.id.clone(), b.contract.id.clone()));
    Diff { a: name_a.into(), b: name_b.into(), contracts_differ, changes }
}

fn show(v: &Option<MetricValue>) -> String {
    match v {
        None => "-".into(),
        Some(MetricValue::Scalar(x)) => number(*x, false),
        Some(MetricValue::Vector(x)) => format!("[{} values]", x.len()),
    }
}

/// The diff as a table.
pub fn table(d: &Diff) -> String {
    let mut s = format!("A: {}\nB: {}\n", d.a, d.b);
    if let Some((a, b)) = &d.contracts_differ {
        let _ = writeln!(s, "note: scored under different contracts ({a} and {b})");
    }
    let width = d.changes.iter().filter(|c| c.direction != "same").map(|c| subject(c).chars().count()).max().unwrap_or(7).max(7);
    let _ = writeln!(s, "{:<width$}  {:<16}  {:>12}  {:>12}  {:>10}  direction", "subject", "metric", "A", "B", "change");
    let unchanged = d.changes.iter().filter(|c| c.direction == "same").count();
    for c in d.changes.iter().filter(|c| c.direction != "same") {
        let change = c.change.map(|x| number(x, true)).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{:<width$}  {:<16}  {:>12}  {:>12}  {:>10}  {}", subject(c), c.metric, show(&c.a), show(&c.b), change, c.direction);
    }
    if unchanged > 0 {
        let mut subjects: Vec<String> = d.changes.iter().filter(|c| c.direction == "same").map(subject).collect();
        subjects.dedup();
        let _ = writeln!(s, "({unchanged} unchanged values not shown: {})", subjects.join(", "));
    }
    s
}

/// Four decimals, or scientific notation for small non-zero values (so a
/// change is never shown as 0.0000).
fn number(x: f64, signed: bool) -> String {
    match (x != 0.0 && x.abs() < 1e-3, signed) {
        (true, true) => format!("{x:+.2e}"),
        (true, false) => format!("{x:.2e}"),
        (false, true) => format!("{x:+.4}"),
        (false, false) => format!("{x:.4}"),
    }
}

fn subject(c: &MetricChange) -> String {
    if c.label_a == c.label_b {
        format!("{}: {}", c.role, c.label_a)
    } else {
        format!("{}: {} → {}", c.role, c.label_a, c.label_b)
    }
}
