//! Recording a finished run's outputs in the registry, with their lineage.

use super::Written;
use crate::pluginset::Loaded;
use crate::run::RunOutput;
use anyhow::{Context, Result};
use geohost_registry::{NewArtifact, Registry};

/// What registering a run did.
pub struct Registration {
    /// (artifact id, method label) of each method's output, in method order.
    pub outputs: Vec<(String, String)>,
    pub new_artifacts: usize,
    pub total_artifacts: usize,
    /// `Some(true)` when an earlier run had identical inputs and produced
    /// identical outputs, `Some(false)` when its outputs differed.
    pub identical_to_earlier: Option<bool>,
    pub input_key: String,
}

/// Record a finished run in the registry: both plugins (with their
/// self-descriptions), the plugin-set file, the truth/observations file and
/// each method's output file, with `derived_from` edges to the plugins and
/// `produced_by` edges to the plugin-set. `files` are what
/// [`super::write`] wrote.
pub fn register(registry: &mut Registry, set: &Loaded, result: &RunOutput, files: &Written) -> Result<Registration> {
    let mut added = Vec::new();
    let mut add = |registry: &mut Registry, bytes: &[u8], a: NewArtifact| -> Result<String> {
        let (id, existed) = registry.add(bytes, &a)?;
        added.push(existed);
        Ok(id)
    };
    // Both plugins, with the self-description they gave for this config.
    let described = [
        ("forward-model", serde_json::to_value(&result.model)?, &result.model.name, &result.model.version),
        ("obs-operator", serde_json::to_value(&result.obs)?, &result.obs.name, &result.obs.version),
    ];
    let mut plugin_ids = Vec::new();
    for (record, (world, info, name, version)) in result.plugins.iter().zip(described) {
        if record.kind == "emulator" {
            registry.get(&record.blake3).context("the run's emulator")?;
            plugin_ids.push(record.blake3.clone());
            continue;
        }
        let bytes = std::fs::read(&record.path).or_else(|_| registry.read(&record.blake3))?;
        let id = add(
            registry,
            &bytes,
            NewArtifact {
                kind: "plugin".into(),
                name: name.clone(),
                version: Some(version.clone()),
                media_type: "application/wasm".into(),
                step: Some(1),
                tags: vec![world.into()],
                metadata: serde_json::json!({ "world": world, "description": info, "config": record.config }),
                ..Default::default()
            },
        )?;
        anyhow::ensure!(id == record.blake3, "plugin file {} changed on disk during the run; not registering the run", record.path);
        plugin_ids.push(id);
    }
    let (model_id, obs_id) = (&plugin_ids[0], &plugin_ids[1]);
    let set_id = add(
        registry,
        &set.bytes,
        NewArtifact {
            kind: "plugin-set".into(),
            name: set.name.clone(),
            media_type: "application/toml".into(),
            l_transition: set.set.transition.clone(),
            metadata: serde_json::json!({ "path": set.path.display().to_string() }),
            ..Default::default()
        },
    )?;

    let input_key = geohost_registry::artifact_id(
        serde_json::json!({
            "model": model_id,
            "observations": obs_id,
            "plugin_set": set_id,
            "cycles": result.cycles,
            "methods": result.methods.iter().map(|m| m.label()).collect::<Vec<_>>(),
        })
        .to_string()
        .as_bytes(),
    );
    let earlier = registry.find_run(&input_key)?;

    let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {} to register it", path.display()));
    let truth_id = add(
        registry,
        &read(&files.truth)?,
        NewArtifact {
            kind: "dataset".into(),
            name: format!("{}/truth", set.name),
            media_type: "application/x-netcdf".into(),
            step: Some(1),
            l_transition: set.set.transition.clone(),
            tags: vec!["truth".into(), "observations".into()],
            ..Default::default()
        },
    )?;
    // Step-2 outputs depend on the model; step-4 outputs (through an
    // emulator, named by [model] or made by [step3]) on the emulator.
    let model_is_emulator = result.plugins[0].kind == "emulator";
    let mut output_ids = vec![truth_id.clone()];
    let mut outputs = Vec::new();
    let mut forward_of = vec![(truth_id, model_id.clone())];
    for (method_run, path) in result.methods.iter().zip(&files.methods) {
        let label = method_run.label();
        let through_emulator = method_run.emulator.is_some() || model_is_emulator;
        let mut summary = serde_json::to_value(method_run.summary)?;
        summary["method"] = serde_json::to_value(&method_run.method)?;
        if let Some(e) = &method_run.emulator {
            summary["emulator"] = e.clone().into();
        }
        let role = match method_run.method.role().name() {
            "oracle" if through_emulator => None,
            "candidate" => None,
            role => Some(role.to_string()),
        };
        let id = add(
            registry,
            &read(path)?,
            NewArtifact {
                kind: "run-output".into(),
                name: format!("{}/{}", set.name, label),
                media_type: "application/x-netcdf".into(),
                role,
                step: Some(if through_emulator { 4 } else { 2 }),
                l_transition: set.set.transition.clone(),
                tags: vec![serde_json::to_value(&method_run.method)?["method"].as_str().unwrap_or_default().to_string()],
                metadata: summary,
                ..Default::default()
            },
        )?;
        output_ids.push(id.clone());
        forward_of.push((id.clone(), method_run.emulator.clone().unwrap_or_else(|| model_id.clone())));
        outputs.push((id, label));
    }
    for (id, forward) in &forward_of {
        registry.link(id, forward, "derived_from")?;
        registry.link(id, obs_id, "derived_from")?;
        registry.link(id, &set_id, "produced_by")?;
    }
    let identical_to_earlier = earlier.map(|e| e == output_ids);
    registry.record_run(&input_key, &set_id, &output_ids)?;
    Ok(Registration {
        outputs,
        new_artifacts: added.iter().filter(|existed| !**existed).count(),
        total_artifacts: added.len(),
        identical_to_earlier,
        input_key,
    })
}
