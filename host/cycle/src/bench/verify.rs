//! `geohost bench verify`: recompute a submission's report and say whether
//! every byte matches.
//!
//! Anyone holding the contract's bundle (its contract, reference and
//! plugins by id), the registered submission and, for a hidden contract,
//! its revealed seeds (`bench reveal --import`, each checked against the
//! frozen commitment) can rerun the submission exactly as the host did:
//! wasm execution is deterministic, so the same inputs give the same report
//! bytes, fuel included. A mismatch names what differs: the submission's
//! bytes, a seed, or the report's fields (by path).

use super::contract::Contract;
use super::posterior::{PosteriorContract, PosteriorReport};
use super::score::Report;
use super::submit::SubmitOptions;
use crate::progress::ProgressFactory;
use anyhow::{bail, Context, Result};
use geohost_registry::Registry;
use geohost_sandbox::Runtime;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where to find what the report does not hold.
pub struct VerifyOptions<'a> {
    /// The contract file (default: the registered contract's bytes, with
    /// relative paths resolved from the working directory).
    pub contract: Option<&'a Path>,
    /// The submission's file (default: the registered submission).
    pub component: Option<&'a Path>,
    /// As for `bench submit`: the compiling child and its cache.
    pub exe: PathBuf,
    pub cache_dir: PathBuf,
}

/// The outcome: whether every byte matched, and what differed.
#[derive(Debug, serde::Serialize)]
pub struct Verification {
    pub report: String,
    pub contract: String,
    pub submission: String,
    pub matches: bool,
    /// What differs, each naming the part (empty when it matches).
    pub differences: Vec<String>,
}

/// Recompute the report in `report_bytes` and compare.
pub fn verify(
    registry: &mut Registry,
    runtime: &Runtime,
    report_bytes: &[u8],
    options: &VerifyOptions<'_>,
    progress: &mut ProgressFactory<'_>,
) -> Result<Verification> {
    let report_id = geohost_registry::artifact_id(report_bytes);
    let value: Value = serde_json::from_slice(report_bytes).context("the report is not JSON written by geohost")?;
    let posterior = value["kind"] == "posterior";
    let retrieval = value["kind"] == "retrieval";
    let contract_id = value["contract"]["id"].as_str().context("the report names no contract")?.to_string();
    let record = if posterior || retrieval { &value["submission"] } else { &value["candidates"][0]["submission"] };
    let (component, config, submitter) = (record["component"].as_str(), record["config"].clone(), record["submitter"].as_str().map(String::from));
    let component = component
        .filter(|c| c.starts_with("blake3:"))
        .context("the report is not a submission's report (no submitted component was read), so there is nothing to rerun")?
        .to_string();
    let mut differences = Vec::new();

    // The submission's bytes: the given file, else the registered one.
    let bytes = match options.component {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => registry
            .read(&component)
            .with_context(|| format!("the report scored submission {component}, which this registry does not hold (import its bundle, or give --component)"))?,
    };
    let actual = geohost_registry::artifact_id(&bytes);
    if actual != component {
        differences.push(format!("submission: the bytes given hash to {actual}, but the report scored {component}"));
        return Ok(Verification { report: report_id, contract: contract_id, submission: component, matches: false, differences });
    }
    let scratch = crate::scratch::private("verify")?;
    let file = scratch.path().join("submission.wasm");
    std::fs::write(&file, &bytes)?;
    let submit = SubmitOptions { component: file, config, name: None, exe: options.exe.clone(), cache_dir: options.cache_dir.clone(), submitter };

    // The recomputed report's bytes, serialised as `bench submit` writes them.
    let recomputed = (|| -> Result<Vec<u8>> {
        let artifact =
            registry.get(&contract_id).with_context(|| format!("the report's contract {contract_id} is not in this registry: import its bundle first"))?;
        let contract_bytes = match options.contract {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => registry.read(&contract_id)?,
        };
        if geohost_registry::artifact_id(&contract_bytes) != contract_id {
            bail!("the contract file given is not the report's contract {contract_id}");
        }
        let path = options.contract.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{}.toml", artifact.name)));
        if retrieval {
            let Some(path) = options.contract else {
                bail!("give the retrieval benchmark's file with --contract: its plugin-set is read relative to it");
            };
            let contract = super::retrieval::RetrievalContract::load(path)?;
            let (mut report, _) = super::retrieval::submit(registry, runtime, &contract, &submit)?;
            report.revealed = serde_json::from_value::<super::retrieval::RetrievalReport>(value.clone()).map(|r| r.revealed).unwrap_or(false);
            Ok(serde_json::to_vec_pretty(&report)?)
        } else if posterior {
            let Some(path) = options.contract else {
                bail!("give the posterior benchmark's file with --contract: its plugin-set is read relative to it");
            };
            let contract = PosteriorContract::load(path)?;
            let (mut report, _) = super::posterior::submit(registry, runtime, &contract, &submit)?;
            report.revealed = serde_json::from_value::<PosteriorReport>(value.clone()).map(|r| r.revealed).unwrap_or(false);
            Ok(serde_json::to_vec_pretty(&report)?)
        } else {
            let contract = Contract::parse(&path, contract_bytes)?;
            let mut report = super::submit::submit(registry, runtime, &contract, &submit, progress)?.report;
            let original: Report = serde_json::from_value(value.clone()).context("the report is not a contract report")?;
            if let (Some(h), Some(o)) = (report.hidden.as_mut(), original.hidden.as_ref()) {
                h.revealed = o.revealed;
            }
            Ok(serde_json::to_vec_pretty(&report)?)
        }
    })();
    drop(scratch);
    let bytes = recomputed?;
    if bytes != report_bytes {
        diff_values("", &value, &serde_json::from_slice(&bytes)?, &mut differences);
        if differences.is_empty() {
            differences.push("report: the same content, but not the bytes geohost writes (reformatted?)".into());
        }
    }
    Ok(Verification { report: report_id, contract: contract_id, submission: component, matches: differences.is_empty(), differences })
}

/// The paths at which `a` (the report as given) and `b` (recomputed)
/// differ, at most 20.
fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if out.len() >= 20 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                diff_values(&format!("{path}.{key}"), x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff_values(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ => out.push(format!("report{path}: the report says {}, recomputed {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
