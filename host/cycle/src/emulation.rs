//! Steps 3 and 4 of a dynamic run: a neural emulator of the step-1
//! forward model, trained on simulations drawn from its component
//! (`geohost_learn`'s dataset, networks and training loop), cached in the
//! registry, and run in the model's place by the same DA code.

use crate::progress::ProgressFactory;
use anyhow::{Context, Result};
use geohost_learn::dataset::{self, DatasetSpec};
use geohost_learn::net::Arch;
use geohost_learn::neural::NeuralForward;
use geohost_learn::train;
use geohost_registry::{NewArtifact, Registry};
use geohost_sandbox::model::ForwardModel;
use serde::{Deserialize, Serialize};
use train::TrainSpec;

/// The plugin-set's `[step3]`: how to draw the dataset and train the
/// emulator of its `[model]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step3Spec {
    /// Registry name of the emulator (default `<plugin-set name>/emulator`).
    pub name: Option<String>,
    pub dataset: DatasetSpec,
    pub network: Arch,
    pub training: TrainSpec,
}

impl Step3Spec {
    pub fn validate(&self) -> Result<()> {
        self.dataset.validate("step3.dataset")?;
        self.network.validate("step3.network")?;
        self.training.validate("step3.training")
    }
}

/// The plugin-set's `[step4]`: which `[[method]]`s to run again with the
/// emulator in place of the model.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step4Spec {
    /// Method labels as the results table shows them (default: every
    /// ensemble method).
    pub methods: Option<Vec<String>>,
}

/// The `[[method]]`s `[step4]` selects (every ensemble method by default).
pub fn step4_methods<'a>(step4: &Step4Spec, methods: &'a [geohost_da::Method]) -> Result<Vec<&'a geohost_da::Method>> {
    match &step4.methods {
        None => Ok(methods.iter().filter(|m| m.role() == geohost_da::Role::Oracle).collect()),
        Some(labels) => labels
            .iter()
            .map(|label| {
                methods.iter().find(|m| &m.label() == label).ok_or_else(|| {
                    let known: Vec<String> = methods.iter().map(|m| m.label()).collect();
                    anyhow::anyhow!("step4.methods: \"{label}\" is not a [[method]] of this set; its methods are: {}", known.join(", "))
                })
            })
            .collect(),
    }
}

/// What step 3 produced, for the table and the registry.
#[derive(Clone, Debug, Serialize)]
pub struct EmulatorRecord {
    /// Registry id of the weights (computed even without a registry).
    pub id: String,
    pub name: String,
    pub dataset: String,
    pub dataset_cache_hit: bool,
    pub samples: usize,
    /// False when identical training inputs had been trained before and
    /// the stored weights were loaded.
    pub trained: bool,
    /// One-step validation RMSE and the state's standard deviation.
    pub val_rmse: f64,
    pub state_std: f64,
    pub epochs: usize,
    pub best_epoch: usize,
    /// Training throughput, when trained in this run.
    pub samples_per_s: Option<f64>,
}

/// Step 3: draw (or load) the dataset from `model`, train (or load) the
/// emulator, and register both (`dataset derived_from model`, `emulator
/// trained_on dataset` and `derived_from model`, role `emulator`, step 3).
/// `model_id` is the forward component's id; it must be registered when a
/// registry is given.
#[allow(clippy::too_many_arguments)]
pub fn step3(
    mut registry: Option<&mut Registry>,
    model: &mut dyn ForwardModel,
    model_id: &str,
    model_config: &serde_json::Value,
    spec: &Step3Spec,
    dt: f64,
    set_name: &str,
    progress: &mut ProgressFactory<'_>,
) -> Result<(NeuralForward, EmulatorRecord)> {
    let name = spec.name.clone().unwrap_or_else(|| format!("{set_name}/emulator"));
    let samples = spec.dataset.samples();
    let mut bar = progress("step 3: simulation dataset", spec.dataset.pairs_per_trajectory);
    let mut tick = |k: usize| bar.tick(k);
    let stored = match registry.as_deref_mut() {
        Some(reg) => dataset::cached(reg, model, model_id, model_config, &spec.dataset, dt, &format!("{set_name}/simulation"), &mut tick)?,
        None => {
            let d = dataset::simulate(model, &spec.dataset, dt, &mut tick)?;
            dataset::Stored {
                id: String::new(),
                key: dataset::request_key(model_id, model_config, &spec.dataset, dt),
                cache_hit: false,
                bytes: Vec::new(),
                dataset: d,
            }
        }
    };
    bar.tick(spec.dataset.pairs_per_trajectory - 1);
    // Identical training inputs give identical weights: look them up first.
    let key = geohost_registry::artifact_id(
        serde_json::json!({ "emulator_format": 1, "dataset": stored.key, "network": spec.network, "training": spec.training }).to_string().as_bytes(),
    );
    // The record reads the figures stored with the weights, whichever way
    // they were obtained.
    let record = |forward: &NeuralForward, samples_per_s: Option<f64>| {
        let t = &forward.training;
        EmulatorRecord {
            id: forward.id.clone(),
            name: name.clone(),
            dataset: stored.id.clone(),
            dataset_cache_hit: stored.cache_hit,
            samples,
            trained: samples_per_s.is_some(),
            val_rmse: t["val_rmse"].as_f64().unwrap_or(f64::NAN),
            state_std: t["state_std"].as_f64().unwrap_or(f64::NAN),
            epochs: t["history"].as_array().map_or(0, |h| h.len()),
            best_epoch: t["best_epoch"].as_u64().unwrap_or(0) as usize,
            samples_per_s,
        }
    };
    if let Some(reg) = registry.as_deref() {
        if let Some(id) = reg.find_run(&key)?.and_then(|ids| ids.into_iter().next()) {
            let bytes = reg.read(&id).with_context(|| format!("loading emulator {id}"))?;
            let forward = NeuralForward::from_bytes(&id, &bytes)?;
            let record = record(&forward, None);
            return Ok((forward, record));
        }
    }

    let mut bar = progress("step 3: training", spec.training.max_epochs);
    let trained = train::train(spec.network.clone(), &stored.dataset, &spec.training, &mut |epoch, train_loss, val_loss| {
        bar.message(format!("train {train_loss:.2e} val {val_loss:.2e}"));
        bar.tick(epoch);
    })?;
    bar.finish();
    let training = serde_json::json!({
        "model": model.info(),
        "model_id": model_id,
        "dataset": stored.id,
        "spec": spec,
        "history": trained.history,
        "best_epoch": trained.best_epoch,
        "val_rmse": trained.val_rmse,
        "state_std": trained.state_std,
    });
    let bytes = trained.net.to_safetensors(&training)?;
    let artifact = NewArtifact {
        kind: "weights".into(),
        name: name.clone(),
        media_type: "application/vnd.safetensors".into(),
        role: Some("emulator".into()),
        step: Some(3),
        tags: vec![serde_json::to_value(&spec.network)?["architecture"].as_str().unwrap_or_default().to_string()],
        metadata: serde_json::json!({
            "val_rmse": trained.val_rmse,
            "state_std": trained.state_std,
            "samples_per_s": trained.samples_per_s,
            "train_samples": trained.train_samples,
            "epochs": trained.history.len(),
            "best_epoch": trained.best_epoch,
            "network": spec.network,
        }),
        ..Default::default()
    };
    let id = geohost_registry::add_trained(registry, &key, &bytes, &artifact, &stored.id, &[model_id])?;
    let forward = NeuralForward::from_bytes(&id, &bytes)?;
    let record = record(&forward, Some(trained.samples_per_s));
    Ok((forward, record))
}
