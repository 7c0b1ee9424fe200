//! Pre-registration: freezing a contract before anything is scored.
//!
//! Pre-registering resolves everything the contract names to registry ids
//! (the reference truth, generated from its plugin-set if need be; each
//! baseline, run on that truth if it is a method; the metric components;
//! the oracle) and records the contract's bytes under their BLAKE3 id with
//! those ids as [`Frozen`] metadata and lineage edges. From then on:
//! - scoring loads every input through its frozen id, never through a path;
//! - a file claiming the same `name@version` with other bytes is refused
//!   (an edited contract); a new version supersedes the previous one, which
//!   marks every report scored by it stale.

use super::contract::{Check, Contract};
use crate::outputs::read::{AnalysisFile, TruthFile};
use crate::pluginset::PluginSet;
use crate::progress::ProgressFactory;
use anyhow::{bail, Context, Result};
use geohost_registry::{Filter, NewArtifact, Registry};
use geohost_sandbox::{config_json, Runtime, WasmMetric, World};
use serde::{Deserialize, Serialize};

/// Every input of a contract, by registry id, as frozen at pre-registration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Frozen {
    pub contract: String,
    pub name: String,
    pub version: String,
    /// The reference `truth.nc`.
    pub reference: String,
    pub oracle: Option<String>,
    pub oracle_strength: Option<String>,
    pub metrics: Vec<FrozenMetric>,
    pub baselines: Vec<FrozenBaseline>,
    pub warnings: Vec<String>,
    /// The key ids of the publishers whose plugins the contract accepts
    /// (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<String>,
    /// The hidden evaluation, for a contract with `[hidden]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<super::hidden::FrozenHidden>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FrozenMetric {
    /// The component's id.
    pub id: String,
    pub name: String,
    pub version: String,
    /// The config passed to `init`, as JSON.
    pub config: String,
    /// The metrics it computes with that config.
    pub metrics: Vec<String>,
    pub ensemble: bool,
    /// Compared with the oracle's output instead of the truth (`metrics`
    /// then carry the `_vs_oracle` suffix).
    #[serde(default)]
    pub against_oracle: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FrozenBaseline {
    pub label: String,
    pub id: String,
}

/// What [`preregister`] did.
pub struct Outcome {
    pub frozen: Frozen,
    /// False when these exact bytes were already pre-registered.
    pub new: bool,
    /// The earlier version this one superseded, and what that made stale.
    pub superseded: Option<(String, Vec<String>)>,
}

/// The registered contracts named `name`, oldest first.
fn versions(registry: &Registry, name: &str) -> Result<Vec<geohost_registry::Artifact>> {
    registry.list(&Filter { kind: Some("contract".into()), name: Some(name.into()), ..Default::default() })
}

fn edited_error(contract: &Contract, registered: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "contract {} ({}) was pre-registered as {registered}, but {} now hashes to {}: a pre-registered contract cannot change. \
         Restore the pre-registered text (`geohost registry cat {registered}`), or give the contract a new `version` and run \
         `geohost bench register` again (the new version supersedes the old one)",
        contract.label(),
        contract.path.display(),
        contract.path.display(),
        contract.id
    )
}

/// The frozen inputs of a pre-registered contract. Errors when the contract
/// was never pre-registered or when its `name@version` was pre-registered
/// with other bytes (it was edited).
pub fn lookup(registry: &Registry, contract: &Contract) -> Result<Frozen> {
    if let Ok(artifact) = registry.get(&contract.id) {
        if artifact.kind == "contract" {
            return serde_json::from_value(artifact.metadata["frozen"].clone())
                .with_context(|| format!("registry entry {} has no readable pre-registration record", contract.id));
        }
    }
    for a in versions(registry, &contract.file.name)? {
        if a.version.as_deref() == Some(&contract.file.version) {
            return Err(edited_error(contract, &a.id));
        }
    }
    bail!("contract {} ({}) is not pre-registered; run `geohost bench register {}` first", contract.label(), contract.path.display(), contract.path.display())
}

/// With `publishers` (key id, as given) set, the plugin `id` must have been
/// imported from a bundle whose signature one of them verified.
fn check_publisher(registry: &Registry, contract: &Contract, publishers: &[(String, String)], id: &str, what: &str) -> Result<()> {
    if publishers.is_empty() {
        return Ok(());
    }
    let accepted = |key: &str| format!("key {key}");
    let origin = match registry.get(id) {
        Err(_) => "is not in the registry".to_string(),
        Ok(a) if a.imported_from.iter().any(|i| i.verified && publishers.iter().any(|(k, _)| i.publisher == accepted(k))) => return Ok(()),
        Ok(a) if a.imported_from.is_empty() => "was registered locally, not imported from a signed bundle".to_string(),
        Ok(a) => format!("came from {}", a.imported_from.iter().map(geohost_registry::Import::describe).collect::<Vec<_>>().join("; ")),
    };
    let keys: Vec<String> = publishers.iter().map(|(k, given)| format!("{k} ({given})")).collect();
    bail!(
        "{what} ({id}) {origin}, but contract {} accepts plugins only from the publishers {}: import it from a bundle they signed (`geohost registry import BUNDLE --trust KEY.pub`)",
        contract.label(),
        keys.join(", ")
    )
}

/// Pre-register `contract` in `registry` (see the module docs).
pub fn preregister(registry: &mut Registry, runtime: &Runtime, contract: &Contract, progress: &mut ProgressFactory<'_>) -> Result<Outcome> {
    let earlier = versions(registry, &contract.file.name)?;
    if let Some(same) = earlier.iter().find(|a| a.id == contract.id) {
        let frozen = serde_json::from_value(same.metadata["frozen"].clone()).context("reading the earlier pre-registration")?;
        return Ok(Outcome { frozen, new: false, superseded: None });
    }
    if let Some(same_version) = earlier.iter().find(|a| a.version.as_deref() == Some(&contract.file.version)) {
        return Err(edited_error(contract, &same_version.id));
    }
    let file = &contract.file;
    let dir = contract.dir().to_path_buf();
    // Everything is checked before anything is written: a refused contract
    // leaves the registry as it was.
    let publishers = contract.publisher_keys()?;
    if file.hidden.is_some() {
        registry.ensure_private()?;
    }

    // Metric components: configured, their metrics listed.
    let mut components = Vec::new();
    for (i, m) in file.metrics.iter().enumerate() {
        let at = || format!("[[metrics]] #{}", i + 1);
        let (label, bytes) = match (&m.component, &m.artifact) {
            (Some(path), _) => {
                let path = dir.join(path);
                (path.display().to_string(), std::fs::read(&path).with_context(|| format!("{}: cannot read metric component {}", at(), path.display()))?)
            }
            (None, Some(r)) => {
                let id = registry.resolve(r).with_context(at)?;
                (id.clone(), registry.read(&id)?)
            }
            (None, None) => unreachable!("validated"),
        };
        let loaded = runtime.load_bytes(&label, std::path::Path::new(&label), &bytes, World::Metric).with_context(at)?;
        let config = config_json(&m.config);
        let component = WasmMetric::new(runtime, &loaded, &config).with_context(at)?;
        let against_oracle = m.against == super::contract::Against::Oracle;
        let metrics = component.metrics.iter().map(|n| if against_oracle { format!("{n}{}", super::contract::VS_ORACLE) } else { n.clone() }).collect();
        check_publisher(registry, contract, &publishers, &geohost_registry::artifact_id(&bytes), &format!("{}: metric component {label}", at()))?;
        let frozen = FrozenMetric {
            id: geohost_registry::artifact_id(&bytes),
            name: component.name,
            version: component.version,
            config,
            metrics,
            ensemble: m.ensemble,
            against_oracle,
        };
        components.push((frozen, bytes));
    }
    let names: Vec<&str> = components.iter().flat_map(|(m, _)| m.metrics.iter().map(String::as_str)).collect();
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        bail!("metric `{dup}` is computed by more than one [[metrics]] entry; each metric name may appear once");
    }
    if let Some(step) = file.target_step {
        let required = super::contract::required_metrics(step);
        let missing: Vec<&str> = required.iter().copied().filter(|r| !names.contains(r)).collect();
        if !missing.is_empty() {
            bail!(
                "a step-{step} contract must report {}; missing: {}. Add them to a [[metrics]] entry (its `config.metrics`)",
                required.join(" and "),
                missing.join(", ")
            );
        }
    }
    if let Some(primary) = &file.primary_metric {
        if !names.contains(&primary.as_str()) {
            bail!("field `primary_metric`: `{primary}` is not computed by any [[metrics]] entry (they compute {})", names.join(", "));
        }
    }
    for (i, f) in file.failure_modes.iter().enumerate() {
        if let Some(Check::Metric { metric, .. }) = &f.check {
            if !names.contains(&metric.as_str()) {
                bail!("[[failure_modes]] #{}: metric `{metric}` is not computed by any [[metrics]] entry (they compute {})", i + 1, names.join(", "));
            }
        }
    }

    // The reference: generated (with the method baselines) into a scratch
    // directory, or a registered truth.nc.
    let scratch = crate::scratch::private("prereg")?;
    let forecasts = match &file.reference.forecasts {
        Some(spec) => {
            let mut set = PluginSet::load(&dir.join(&spec.plugin_set)).context("field `reference.forecasts.plugin_set`")?;
            (set.set.step3, set.set.step4, set.methods) = (None, None, Vec::new());
            let generated = super::forecast::generate(&set, spec, runtime, Some(&mut *registry), progress)?;
            Some((set, generated))
        }
        None => None,
    };
    let generated = match &file.reference.plugin_set {
        Some(set_path) => {
            let mut set = PluginSet::load(&dir.join(set_path)).context("field `reference.plugin_set`")?;
            // Only the twin and the baselines: not the set's own methods or steps 3–4.
            set.set.step3 = None;
            set.set.step4 = None;
            set.methods = file.baselines.iter().filter_map(|b| b.method_spec()).enumerate().map(|(i, m)| m.validate(i + 1)).collect::<Result<_>>()?;
            let result =
                crate::run::run(&set, runtime, Some(&mut *registry), None, progress, Default::default()).context("generating the reference experiment")?;
            let written = crate::outputs::write(scratch.path(), &result, &set)?;
            Some((set, result, written))
        }
        None => None,
    };
    let outcome = (|| {
        let runs = generated.iter().map(|(_, r, _)| r).chain(forecasts.iter().map(|(_, g)| &g.run));
        for result in runs {
            for p in result.plugins.iter().filter(|p| p.kind == "component") {
                check_publisher(registry, contract, &publishers, &p.blake3, &format!("the reference's {} {}", p.role, p.path))?;
            }
        }
        let truth_bytes = match (&generated, &forecasts, &file.reference.artifact) {
            (Some((_, _, written)), ..) => std::fs::read(&written.truth)?,
            (_, Some((_, g)), _) => g.bytes.clone(),
            (None, None, Some(r)) => registry.read(&registry.resolve(r).context("field `reference.artifact`")?)?,
            (None, None, None) => unreachable!("validated: exactly one reference source"),
        };
        let reference = geohost_registry::artifact_id(&truth_bytes);
        let truth = TruthFile::parse(&reference, truth_bytes).context("field `reference`")?;
        let (state, obs) = (file.carriers.output.shape.iter().product::<usize>(), file.carriers.input.shape.iter().product::<usize>());
        if truth.truth.cols != state {
            bail!(
                "field `carriers.output.shape`: {:?} ({state} values per case), but the reference has {} state variables",
                file.carriers.output.shape,
                truth.truth.cols
            );
        }
        let inputs = truth.obs_size.unwrap_or(truth.truth.cols);
        if inputs != obs {
            bail!("field `carriers.input.shape`: {:?} ({obs} values per case), but the reference has {inputs} inputs per case", file.carriers.input.shape);
        }

        // Baselines, in the contract's order: method outputs (ids of the
        // files just written) or registered outputs of the same experiment.
        let mut method_outputs = generated.iter().flat_map(|(_, result, written)| {
            result
                .methods
                .iter()
                .zip(&written.methods)
                .map(|(r, path)| Ok::<_, anyhow::Error>((r.method.label(), geohost_registry::artifact_id(&std::fs::read(path)?))))
        });
        let mut baselines = Vec::new();
        for (i, b) in file.baselines.iter().enumerate() {
            match &b.artifact {
                None => {
                    let (label, id) = method_outputs.next().expect("one output per method baseline")?;
                    baselines.push(FrozenBaseline { label, id });
                }
                Some(name) => {
                    let id = registry.resolve(name).with_context(|| format!("[[baselines]] #{}", i + 1))?;
                    let output = AnalysisFile::parse(&id, registry.read(&id)?).with_context(|| format!("[[baselines]] #{}", i + 1))?;
                    if output.truth != reference {
                        bail!("[[baselines]] #{}: {id} was run on truth {}, not on the contract's reference {reference}", i + 1, output.truth);
                    }
                    baselines.push(FrozenBaseline { label: output.method, id });
                }
            }
        }
        for (i, f) in file.failure_modes.iter().enumerate() {
            if let Some(Check::Metric { better_than: Some(b), .. }) = &f.check {
                if !baselines.iter().any(|x| &x.label == b) {
                    let labels: Vec<&str> = baselines.iter().map(|x| x.label.as_str()).collect();
                    bail!("[[failure_modes]] #{}: better_than = \"{b}\" is not a baseline; the baselines are {}", i + 1, labels.join(", "));
                }
            }
        }

        // The oracle: registered, of the oracle step, on the same truth.
        let oracle = match &file.oracle {
            None => None,
            Some(r) => {
                let id = registry.resolve(r).with_context(|| format!("field `oracle` (\"{r}\"): the oracle must be registered before the contract"))?;
                let artifact = registry.get(&id)?;
                if let Some(role) = artifact.role.as_deref().filter(|r| *r != "oracle") {
                    bail!(
                        "field `oracle`: {id} ({}) has role `{role}`, not `oracle`; name the oracle artifact (e.g. the classical method's output)",
                        artifact.name
                    );
                }
                if let (Some(step), Some(expected)) = (artifact.step, file.oracle_step) {
                    if step != expected {
                        bail!("field `oracle`: {id} ({}) is a step-{step} artifact, but oracle_step = {expected}", artifact.name);
                    }
                }
                if file.metrics.iter().any(|m| m.against == super::contract::Against::Oracle) && artifact.kind != "run-output" {
                    bail!("field `oracle`: metrics `against = \"oracle\"` need an oracle that is a method output, but {id} is a {}", artifact.kind);
                }
                if artifact.kind == "run-output" {
                    let output = AnalysisFile::parse(&id, registry.read(&id)?).context("field `oracle`")?;
                    if output.truth != reference {
                        bail!("field `oracle`: {id} was run on truth {}, not on the contract's reference {reference}", output.truth);
                    }
                }
                Some(id)
            }
        };
        let hidden = match (&file.hidden, &generated, &forecasts) {
            (Some(spec), Some((set, result, _)), _) => {
                let oracle_method = match &oracle {
                    Some(id) => Some(registry.get(id)?).filter(|a| a.kind == "run-output").and_then(|a| a.metadata.get("method").cloned()),
                    None => None,
                };
                Some(super::hidden::FrozenHidden::draw(spec, &contract.id, set, result, oracle_method)?)
            }
            // Hidden forecast experiments: the model is the oracle, run on
            // every hidden twin; there is no method to rerun.
            (Some(spec), None, Some((set, g))) => Some(super::hidden::FrozenHidden::draw(spec, &contract.id, set, &g.run, None)?),
            (Some(_), None, None) => bail!("[hidden] needs a reference generated from a plugin-set (`plugin_set` or `forecasts`)"),
            (None, ..) => None,
        };
        Ok((reference, baselines, oracle, hidden))
    })();
    let (reference, ordered, oracle, hidden) = outcome?;

    // All checked: record the generated run, the components, the contract.
    if let Some((set, g)) = &forecasts {
        let written = crate::outputs::write(scratch.path(), &g.run, set)?;
        crate::outputs::register(registry, set, &g.run, &written)?;
        let model_id = &g.run.plugins[0].blake3;
        registry.add(
            &g.bytes,
            &NewArtifact {
                kind: "dataset".into(),
                name: format!("{}/forecasts", set.name),
                media_type: "application/x-netcdf".into(),
                step: Some(1),
                tags: vec!["forecasts".into()],
                metadata: serde_json::json!({ "forecasts": file.reference.forecasts }),
                ..Default::default()
            },
        )?;
        registry.link(&reference, model_id, "derived_from")?;
    }
    if let Some((set, result, written)) = &generated {
        crate::outputs::register(registry, set, result, written)?;
    }
    let mut metrics = Vec::new();
    for (m, bytes) in components {
        registry.add(
            &bytes,
            &NewArtifact {
                kind: "plugin".into(),
                name: m.name.clone(),
                version: Some(m.version.clone()),
                media_type: "application/wasm".into(),
                tags: vec!["metric".into()],
                metadata: serde_json::json!({ "world": "metric" }),
                ..Default::default()
            },
        )?;
        metrics.push(m);
    }

    let frozen = Frozen {
        contract: contract.id.clone(),
        name: file.name.clone(),
        version: file.version.clone(),
        reference: reference.clone(),
        oracle: oracle.clone(),
        oracle_strength: file.oracle_strength.clone(),
        metrics,
        baselines: ordered,
        warnings: contract.warnings.clone(),
        publishers: publishers.iter().map(|(k, _)| k.clone()).collect(),
        hidden: hidden.as_ref().map(|(frozen, _)| frozen.clone()),
    };
    let (id, _) = registry.add(
        &contract.bytes,
        &NewArtifact {
            kind: "contract".into(),
            name: file.name.clone(),
            version: Some(file.version.clone()),
            media_type: "application/toml".into(),
            step: file.target_step,
            l_transition: file.l_transition.clone(),
            tags: vec!["pre-registered".into()],
            metadata: serde_json::json!({ "frozen": frozen, "task": file.task }),
            ..Default::default()
        },
    )?;
    if let Some((_, seeds)) = &hidden {
        registry.add_secrets(&id, seeds).context("keeping the hidden experiments' secret seeds")?;
    }
    registry.link(&id, &reference, "derived_from")?;
    for m in &frozen.metrics {
        registry.link(&id, &m.id, "derived_from")?;
    }
    for b in &frozen.baselines {
        registry.link(&id, &b.id, "derived_from")?;
    }
    if let Some(o) = &oracle {
        registry.link(&id, o, "validated_against")?;
    }
    // The newest earlier version not yet superseded is superseded now.
    let mut superseded = None;
    if let Some(previous) = earlier.iter().rev().find(|a| registry.superseded_by(&a.id).ok().flatten().is_none()) {
        let stale = registry.supersede(&previous.id, &id)?;
        superseded = Some((previous.id.clone(), stale));
    }
    Ok(Outcome { frozen, new: true, superseded })
}
