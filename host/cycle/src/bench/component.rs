//! What the benchmarks that score only components on hidden data
//! (posterior benchmarks, retrieval benchmarks) share: a contract's frozen
//! record in the registry, the checks that its inputs have not changed, the
//! submission's lines of the report table, and the report's registration.

use super::score::{ContractRef, SubmissionRecord};
use super::submit::add_submission;
use anyhow::{bail, Context, Result};
use geohost_registry::{NewArtifact, Registry};
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use std::path::Path;

/// The frozen record of contract `id` when it is already registered
/// (`None` when it is new); an error when `name@version` is registered
/// with other bytes (a registered contract cannot change).
pub(super) fn already_registered<T: DeserializeOwned>(registry: &Registry, id: &str, name: &str, version: &str) -> Result<Option<T>> {
    if let Ok(existing) = registry.get(id) {
        return serde_json::from_value(existing.metadata["frozen"].clone()).context("the registered contract's frozen record").map(Some);
    }
    if let Some((other, created)) = registry.frozen_holder("contract", name, Some(version))? {
        bail!("contract {name}@{version} is already registered as {other} ({created}) with other bytes, and a registered contract cannot change: give this one another version");
    }
    Ok(None)
}

/// Register a component-scored contract's plugin-set (its `bytes`, `name`
/// and L-transition); returns its id.
pub(super) fn register_set(registry: &mut Registry, bytes: &[u8], name: &str, transition: Option<String>) -> Result<String> {
    let set =
        NewArtifact { kind: "plugin-set".into(), name: name.into(), media_type: "application/toml".into(), l_transition: transition, ..Default::default() };
    Ok(registry.add(bytes, &set)?.0)
}

/// Register a contract once its record is frozen: `bytes` as `contract`
/// (the caller's name, version, step, transition and metadata, which
/// holds the record under `frozen`; kind, media type and the
/// `pre-registered` tag are set here), derived from its plugin-set and its
/// baselines (`(name, id)`), with the hidden experiments' secret seeds.
pub(super) fn register_frozen(
    registry: &mut Registry,
    bytes: &[u8],
    contract: NewArtifact,
    set_id: &str,
    baselines: &[(String, String)],
    seeds: &[[u8; 32]],
) -> Result<()> {
    let contract = NewArtifact { kind: "contract".into(), media_type: "application/toml".into(), tags: vec!["pre-registered".into()], ..contract };
    let (id, _) = registry.add(bytes, &contract)?;
    registry.link(&id, set_id, "derived_from")?;
    for (_, b) in baselines {
        registry.link(&id, b, "derived_from")?;
    }
    registry.add_secrets(&id, seeds).context("keeping the hidden experiments' secret seeds")
}

/// The frozen record of pre-registered contract `id` (`label`, read from
/// `path`), or how to pre-register it.
pub(super) fn frozen<T: DeserializeOwned>(registry: &Registry, id: &str, label: &str, path: &Path) -> Result<T> {
    let artifact = registry
        .get(id)
        .with_context(|| format!("contract {label} ({}) is not pre-registered; run `geohost bench register {}` first", path.display(), path.display()))?;
    serde_json::from_value(artifact.metadata["frozen"].clone()).context("the registered contract's frozen record")
}

/// The plugin-set at `set_path` (its bytes `set_bytes`) is the one frozen
/// (`frozen_set`) for contract `label`.
pub(super) fn check_set(set_path: &Path, set_bytes: &[u8], frozen_set: &str, label: &str) -> Result<()> {
    if geohost_registry::artifact_id(set_bytes) != frozen_set {
        bail!("the plugin-set {} changed since contract {label} was pre-registered: pre-register a new version of the contract", set_path.display());
    }
    Ok(())
}

/// Its simulator and observation operator (`plugins`, by id) are the ones
/// frozen.
pub(super) fn check_plugins(set_path: &Path, plugins: &[String], frozen_plugins: [&str; 2], label: &str) -> Result<()> {
    if plugins != frozen_plugins {
        bail!("the plugins of {} changed since contract {label} was pre-registered: pre-register a new version of the contract", set_path.display());
    }
    Ok(())
}

/// The table's last lines: the submission's provenance and fuel, why it was
/// disqualified (at which `unit`: `observation`, `experiment`), the verdict.
pub(super) fn submission_lines(s: &mut String, sub: &SubmissionRecord, provenance: &str, candidate: &str, unit: &str, verdict: &str) {
    let _ = writeln!(
        s,
        "{}: provenance {provenance} ({candidate}, {} bytes), fuel {} of {}",
        sub.name.as_deref().unwrap_or("submission"),
        sub.size,
        sub.fuel_total,
        sub.budget.fuel_total
    );
    if let Some(d) = &sub.disqualified {
        let at = d.experiment.as_ref().map(|e| format!(", {e} {unit}")).unwrap_or_default();
        let _ = writeln!(s, "DISQUALIFIED (stage {}{at}): {}", d.stage, d.reason);
    }
    let _ = writeln!(s, "verdict: {verdict}");
}

/// Write the report's bytes `json` to `path` and register them (kind
/// `report`, `derived_from` the contract) and, unless the submission was
/// disqualified, its component `bytes` (kind `submission`, `scored_by` the
/// report). Returns the report's id.
#[allow(clippy::too_many_arguments)]
pub(super) fn register_report(
    registry: &mut Registry,
    json: &[u8],
    contract: &ContractRef,
    verdict: &str,
    submission: &SubmissionRecord,
    bytes: Option<&[u8]>,
    name: Option<&str>,
    path: &Path,
) -> Result<String> {
    super::score::write_report(path, json)?;
    let step = contract.target_step;
    let (id, _) = registry.add(
        json,
        &NewArtifact {
            kind: "report".into(),
            name: format!("report/{}", contract.name),
            version: Some(contract.version.clone()),
            media_type: "application/json".into(),
            step,
            l_transition: contract.l_transition.clone(),
            tags: vec![verdict.into()],
            metadata: serde_json::json!({ "path": path.display().to_string(), "contract": contract.id }),
            ..Default::default()
        },
    )?;
    registry.link(&id, &contract.id, "derived_from")?;
    if let (None, Some(bytes)) = (&submission.disqualified, bytes) {
        let sub = add_submission(registry, bytes, name, submission, step, contract.l_transition.clone(), &contract.id)?;
        registry.link(&sub, &id, "scored_by")?;
    }
    Ok(id)
}
