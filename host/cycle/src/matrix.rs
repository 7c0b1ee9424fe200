//! `geohost matrix`: the seed report's organising picture, from the
//! registry. Rows are the L0–L4 data-tier transitions (L0→L1 calibration,
//! L1→L2 retrieval, L2→L3 gap-filling, L3→L3 analysis, L3→L4 forecast),
//! columns the six steps of the cycle; a cell lists the artifacts
//! registered for that step of that transition, the contracts that target
//! it with their latest verdict, and what in it is stale and why.
//!
//! A cycle benchmark (its contract and its reports) sits in step 6 of the
//! rows of its stages, and its report's stage verdicts count as reports of
//! the stage contracts. An artifact registered with a step but no
//! transition of its own (a
//! plugin: one component can serve several plugin-sets) sits in the rows of
//! the artifacts derived from it; one without any (static problems such as
//! the plume inversion, whose plugin-sets do not name a transition) in a
//! last row, `unplaced`. A row whose later steps are filled but whose step 1
//! (the physics model) is empty was entered data-first: its cells are marked
//! physics-unverified, as the seed report asks.

use anyhow::Result;
use geohost_registry::{Artifact, Filter, Registry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The transitions in their order along the data tiers.
pub const TRANSITIONS: [(&str, &str); 5] =
    [("L0_L1", "L0→L1 calibration"), ("L1_L2", "L1→L2 retrieval"), ("L2_L3", "L2→L3 gap-filling"), ("L3_L3", "L3→L3 analysis"), ("L3_L4", "L3→L4 forecast")];

/// The six steps of the cycle.
pub const STEPS: [&str; 6] = ["simple model", "oracle", "emulator", "emulator-based inference", "amortized inference", "improve"];

#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    pub rows: Vec<Row>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `L3_L4`, … or `unplaced`.
    pub transition: String,
    pub title: String,
    /// `physics-first` (step 1 is filled), `data-first` (later steps only:
    /// physics-unverified) or `empty`.
    pub entry: String,
    pub cells: Vec<Cell>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub step: u8,
    pub artifacts: Vec<Entry>,
    pub contracts: Vec<ContractCell>,
    /// Stale artifacts of the cell, each with why.
    pub stale: Vec<String>,
    pub physics_unverified: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    pub version: Option<String>,
    pub id: String,
    pub role: Option<String>,
    pub stale: bool,
    /// A report's own verdict (a cycle report), when it has one.
    pub verdict: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ContractCell {
    pub name: String,
    pub version: Option<String>,
    pub id: String,
    /// The verdict of its latest report, if anything was scored.
    pub verdict: Option<String>,
    pub report: Option<String>,
    pub reports: usize,
    pub stale: bool,
}

fn verdict_of(registry: &Registry, report: &Artifact) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(&registry.read(&report.id).ok()?).ok()?;
    value["verdict"].as_str().map(String::from)
}

/// The matrix of everything in `registry`.
pub fn matrix(registry: &Registry) -> Result<Matrix> {
    let all = registry.list(&Filter::default())?;
    let reasons: BTreeMap<String, String> = registry.stale()?.into_iter().map(|(a, cause)| (a.id, cause)).collect();
    let name_of = |id: &str| all.iter().find(|a| a.id == id).map(|a| format!("{}{}", a.name, a.version.as_ref().map(|v| format!("@{v}")).unwrap_or_default()));
    // Verdicts of each contract: (when, verdict, report) from its own
    // reports and from the stages of cycle-benchmark reports.
    let mut scored: BTreeMap<String, Vec<(String, Option<String>, String)>> = BTreeMap::new();
    // Cycle benchmarks (their contract and reports have no step): step 6 of
    // the rows of their stages.
    let mut improve: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in all.iter().filter(|a| a.kind == "contract" && a.tags.iter().any(|t| t == "cycle")) {
        let stages: Vec<String> = a.metadata["stages"].as_array().map(|v| v.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
        let mut rows: Vec<String> = stages.iter().filter_map(|id| all.iter().find(|x| &x.id == id).and_then(|x| x.l_transition.clone())).collect();
        rows.sort();
        rows.dedup();
        improve.insert(a.id.clone(), rows);
    }
    for report in all.iter().filter(|a| a.kind == "report") {
        if let Some(contract) = report.metadata["contract"].as_str() {
            scored.entry(contract.to_string()).or_default().push((report.created.clone(), verdict_of(registry, report), report.id.clone()));
        }
        if let Some(cycle) = report.metadata["cycle"].as_str() {
            let value: serde_json::Value = serde_json::from_slice(&registry.read(&report.id)?).unwrap_or_default();
            for stage in value["stages"].as_array().map(Vec::as_slice).unwrap_or_default() {
                // A stage with no candidate was not scored: no report of it.
                if let Some(contract) = stage["contract"].as_str().filter(|_| stage["report"].is_object()) {
                    let verdict = stage["report"]["verdict"].as_str().map(String::from);
                    scored.entry(contract.to_string()).or_default().push((report.created.clone(), verdict, report.id.clone()));
                }
            }
            scored.entry(cycle.to_string()).or_default().push((report.created.clone(), value["verdict"].as_str().map(String::from), report.id.clone()));
            let rows = improve.get(cycle).cloned().unwrap_or_default();
            improve.insert(report.id.clone(), rows);
        }
    }
    // The rows each artifact of a step sits in.
    let mut rows_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, rows) in &improve {
        rows_of.insert(id.as_str(), rows.clone());
    }
    for a in all.iter().filter(|a| a.step.is_some()) {
        let rows = match &a.l_transition {
            Some(t) => vec![t.clone()],
            None => {
                let mut from: Vec<String> =
                    registry.descendants(&a.id)?.iter().filter_map(|d| all.iter().find(|x| &x.id == d).and_then(|x| x.l_transition.clone())).collect();
                from.sort();
                from.dedup();
                if from.is_empty() {
                    vec!["unplaced".to_string()]
                } else {
                    from
                }
            }
        };
        rows_of.insert(&a.id, rows);
    }
    let mut keys: Vec<(String, String)> = TRANSITIONS.iter().map(|(k, t)| (k.to_string(), t.to_string())).collect();
    keys.push(("unplaced".into(), "no transition declared (e.g. a static problem's plugin-set)".into()));
    let mut rows = Vec::new();
    for (key, title) in keys {
        let in_row = |a: &&Artifact| rows_of.get(a.id.as_str()).is_some_and(|r| r.contains(&key));
        let mut cells = Vec::new();
        for step in 1..=6u8 {
            let step_of = |a: &Artifact| a.step.or_else(|| improve.contains_key(&a.id).then_some(6));
            let here: Vec<&Artifact> = all.iter().filter(in_row).filter(|a| step_of(a) == Some(step)).collect();
            let mut cell = Cell { step, artifacts: Vec::new(), contracts: Vec::new(), stale: Vec::new(), physics_unverified: false };
            for a in &here {
                if a.stale {
                    let cause = reasons.get(&a.id).map(|c| name_of(c).unwrap_or_else(|| c.clone())).unwrap_or_else(|| "?".into());
                    cell.stale.push(format!("{} ({}): {cause} was superseded", a.name, short(&a.id)));
                }
                match a.kind.as_str() {
                    "contract" => {
                        let reports = scored.get(&a.id).map(Vec::as_slice).unwrap_or_default();
                        let latest = reports.iter().max_by(|x, y| x.0.cmp(&y.0));
                        cell.contracts.push(ContractCell {
                            name: a.name.clone(),
                            version: a.version.clone(),
                            id: a.id.clone(),
                            verdict: latest.and_then(|r| r.1.clone()),
                            report: latest.map(|r| r.2.clone()),
                            reports: reports.len(),
                            stale: a.stale,
                        });
                    }
                    // A contract's reports are summarised by its verdict.
                    "report" if a.metadata["contract"].is_string() => {}
                    _ => cell.artifacts.push(Entry {
                        kind: a.kind.clone(),
                        name: a.name.clone(),
                        version: a.version.clone(),
                        id: a.id.clone(),
                        role: a.role.clone(),
                        stale: a.stale,
                        verdict: if a.kind == "report" { verdict_of(registry, a) } else { None },
                    }),
                }
            }
            cells.push(cell);
        }
        let filled = |c: &Cell| !c.artifacts.is_empty() || !c.contracts.is_empty();
        let entry = if filled(&cells[0]) {
            "physics-first"
        } else if cells.iter().any(filled) {
            for cell in cells.iter_mut().filter(|c| filled(c)) {
                cell.physics_unverified = true;
            }
            "data-first"
        } else {
            "empty"
        };
        rows.push(Row { transition: key, title, entry: entry.into(), cells });
    }
    Ok(Matrix { rows })
}

fn short(id: &str) -> &str {
    &id[..id.len().min("blake3:".len() + 12)]
}

/// The matrix as text: one block per non-empty row, one line per filled
/// cell (the first artifacts by name, the contracts with their verdicts,
/// the stale count and why).
pub fn table(m: &Matrix) -> String {
    let mut s = String::new();
    for row in m.rows.iter().filter(|r| r.entry != "empty") {
        let entry = if row.entry == "data-first" { "data-first: physics-unverified" } else { "physics-first" };
        let _ = writeln!(s, "{} ({entry})", row.title);
        for cell in &row.cells {
            let (a, c) = (&cell.artifacts, &cell.contracts);
            if a.is_empty() && c.is_empty() {
                let _ = writeln!(s, "  {} {:<26} -", cell.step, STEPS[cell.step as usize - 1]);
                continue;
            }
            let mut parts = Vec::new();
            let mut names: Vec<String> = a
                .iter()
                .map(|e| {
                    let role = e.role.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default();
                    let verdict = e.verdict.as_ref().map(|v| format!(": {v}")).unwrap_or_default();
                    format!("{}{}{role}{verdict}", e.name, e.version.as_ref().map(|v| format!("@{v}")).unwrap_or_default())
                })
                .collect();
            // Roles first: the oracle and emulators are what a reader looks for.
            names.sort_by_key(|n| !n.contains(" ["));
            if !names.is_empty() {
                let more = names.len().saturating_sub(4);
                names.truncate(4);
                parts.push(format!("{}{}", names.join(", "), if more > 0 { format!(" (+{more} more)") } else { String::new() }));
            }
            for contract in c {
                let verdict = match (&contract.verdict, contract.reports) {
                    (Some(v), n) => format!("{v} ({n} report{})", if n == 1 { "" } else { "s" }),
                    (None, _) => "not scored".into(),
                };
                parts.push(format!("contract {}@{}: {verdict}", contract.name, contract.version.as_deref().unwrap_or("?")));
            }
            if !cell.stale.is_empty() {
                parts.push(format!("STALE {}: {}", cell.stale.len(), cell.stale.iter().take(2).cloned().collect::<Vec<_>>().join("; ")));
            }
            let _ = writeln!(s, "  {} {:<26} {}", cell.step, STEPS[cell.step as usize - 1], parts.join(" | "));
        }
    }
    if s.is_empty() {
        s = "the registry holds no artifact of a step of the cycle yet (geohost run a plugin-set first)\n".into();
    }
    s
}

/// The matrix as a self-contained page: one table, transitions down and
/// steps across; a cell's class says `stale` or `unverified`
/// (physics-unverified), its `data-step` and `data-transition` where it is.
pub fn html(m: &Matrix) -> String {
    use crate::html::{escape, page};
    let mut body = String::from("<h1>The L0–L4 × step matrix</h1>\n<p class=\"note\">Each cell: the artifacts registered for that step of that transition, the contracts that target it with the verdict of their latest report, and what is stale and why. A dashed cell is physics-unverified: its row was entered without a physics model (step 1).</p>\n<table id=\"matrix\">\n<tr><th>transition</th>");
    for (i, step) in STEPS.iter().enumerate() {
        let _ = write!(body, "<th>{} {}</th>", i + 1, escape(step));
    }
    body.push_str("</tr>\n");
    for row in &m.rows {
        let _ = write!(
            body,
            r#"<tr data-transition="{}" data-entry="{}"><th>{}<br><span class="note">{}</span></th>"#,
            escape(&row.transition),
            escape(&row.entry),
            escape(&row.title),
            escape(&row.entry)
        );
        for cell in &row.cells {
            let mut class = Vec::new();
            if !cell.stale.is_empty() {
                class.push("stale");
            }
            if cell.physics_unverified {
                class.push("unverified");
            }
            let _ = write!(body, r#"<td class="{}" data-step="{}">"#, class.join(" "), cell.step);
            for c in &cell.contracts {
                let verdict = c.verdict.as_deref().unwrap_or("not scored");
                let _ = write!(
                    body,
                    r#"<div class="contract">contract {}@{}: <span class="verdict-{}">{}</span></div>"#,
                    escape(&c.name),
                    escape(c.version.as_deref().unwrap_or("?")),
                    escape(verdict),
                    escape(verdict)
                );
            }
            for a in &cell.artifacts {
                let role = a.role.as_ref().map(|r| format!(" <b>[{}]</b>", escape(r))).unwrap_or_default();
                let verdict = a.verdict.as_ref().map(|v| format!(r#": <span class="verdict-{0}">{0}</span>"#, escape(v))).unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<div class="artifact" data-id="{}" title="{} {}">{}{}{}{}</div>"#,
                    escape(&a.id),
                    escape(&a.kind),
                    escape(&a.id),
                    escape(&a.name),
                    a.version.as_ref().map(|v| format!("@{}", escape(v))).unwrap_or_default(),
                    role,
                    verdict
                );
            }
            for s in &cell.stale {
                let _ = write!(body, r#"<div class="note">stale: {}</div>"#, escape(s));
            }
            body.push_str("</td>");
        }
        body.push_str("</tr>\n");
    }
    body.push_str("</table>\n");
    page("geohost matrix", &body)
}
