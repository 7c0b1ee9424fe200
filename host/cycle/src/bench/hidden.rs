//! Hidden evaluation: experiments whose seeds only the host knows.
//!
//! A contract with `[hidden]` has, at pre-registration, one 256-bit seed
//! per evaluation experiment drawn from the OS. The seeds go to the
//! registry's private `secrets` table (bundles never carry it); the
//! contract's record freezes only their commitments, BLAKE3(seed ‖
//! contract id), so that revealing the seeds after a benchmark closes lets
//! anyone check them and rescore bit for bit.
//!
//! A hidden experiment is the contract's reference plugin-set, as
//! registered at pre-registration (its text and its plugins by id), with
//! the secret in place of `experiment.seed`: a fresh truth and fresh
//! observations that no submitter can regenerate. Its truth and outputs
//! are written to a private scratch directory, read back for scoring and
//! deleted; nothing of it enters the registry.

use super::contract::{Contract, HiddenSpec};
use crate::outputs::read::{AnalysisFile, TruthFile};
use crate::pluginset::{Loaded, PluginSet, Source};
use crate::progress::ProgressFactory;
use crate::run::RunOutput;
use anyhow::{bail, Context, Result};
use geohost_da::Method;
use geohost_registry::Registry;
use geohost_sandbox::Runtime;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};

/// The hidden part of a pre-registered contract's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FrozenHidden {
    pub experiments: usize,
    /// Observation cycles of each hidden experiment.
    pub cycles: usize,
    /// BLAKE3(seed ‖ contract id) per experiment, `blake3:`-prefixed hex.
    pub commitments: Vec<String>,
    /// The reference plugin-set's registered text, and its plugins.
    pub plugin_set: String,
    pub model: String,
    pub observations: String,
    /// The oracle's method (its registry record), rerun on every hidden
    /// experiment so that checks against the oracle compare like with like.
    pub oracle_method: Option<serde_json::Value>,
}

/// The commitment to `seed` for contract `contract_id`.
pub fn commitment(seed: &[u8; 32], contract_id: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(seed);
    hasher.update(contract_id.as_bytes());
    format!("blake3:{}", hasher.finalize().to_hex())
}

impl FrozenHidden {
    /// Draw the secret seeds for `spec` and freeze their commitments, for
    /// the reference run `result` of plugin-set `set`. Returns the record
    /// and the seeds (for the registry's private table).
    pub fn draw(spec: &HiddenSpec, contract_id: &str, set: &Loaded, result: &RunOutput, oracle_method: Option<serde_json::Value>) -> Result<(FrozenHidden, Vec<[u8; 32]>)> {
        if result.plugins[0].kind != "component" {
            bail!("[hidden] experiments are generated with the reference plugin-set's model, which must be a component, not an emulator");
        }
        let mut seeds = vec![[0u8; 32]; spec.experiments];
        for seed in &mut seeds {
            rand::rngs::OsRng.try_fill_bytes(seed).context("drawing a secret seed from the operating system")?;
        }
        let frozen = FrozenHidden {
            experiments: spec.experiments,
            cycles: spec.cycles.unwrap_or(result.cycles),
            commitments: seeds.iter().map(|s| commitment(s, contract_id)).collect(),
            plugin_set: geohost_registry::artifact_id(&set.bytes),
            model: result.plugins[0].blake3.clone(),
            observations: result.plugins[1].blake3.clone(),
            oracle_method,
        };
        Ok((frozen, seeds))
    }

    /// The secret seeds from `registry`, each checked against its
    /// commitment.
    pub fn seeds(&self, registry: &Registry, contract_id: &str) -> Result<Vec<[u8; 32]>> {
        let seeds = registry.secrets(contract_id)?;
        if seeds.len() != self.experiments {
            bail!(
                "this registry holds {} of the {} secret seeds of contract {contract_id}: only the registry that pre-registered a hidden contract can score it (an imported contract has no seeds)",
                seeds.len(),
                self.experiments
            );
        }
        for (i, (seed, expected)) in seeds.iter().zip(&self.commitments).enumerate() {
            if &commitment(seed, contract_id) != expected {
                bail!("secret seed {} of contract {contract_id} does not match its frozen commitment {expected}: the registry's secrets table was altered", i + 1);
            }
        }
        Ok(seeds)
    }

    /// The reference plugin-set as frozen (its registered text, its plugins
    /// by id), running `methods`; `secret` selects a hidden experiment
    /// (`None`: the public one).
    pub fn plugin_set(&self, registry: &Registry, contract: &Contract, methods: Vec<Method>, secret: Option<[u8; 32]>) -> Result<Loaded> {
        let text = String::from_utf8(registry.read(&self.plugin_set)?).context("the frozen reference plugin-set is not UTF-8")?;
        let path = contract.dir().join(contract.file.reference.plugin_set.as_deref().unwrap_or(std::path::Path::new("reference.toml")));
        let mut set = PluginSet::parse(&path, text).context("the frozen reference plugin-set")?;
        (set.set.step3, set.set.step4) = (None, None);
        (set.model, set.obs) = (Source::Artifact(self.model.clone()), Source::Artifact(self.observations.clone()));
        set.methods = methods;
        set.secret = secret;
        Ok(set)
    }

    /// The oracle's method, to rerun on a hidden experiment.
    pub fn oracle(&self) -> Result<Option<Method>> {
        let Some(value) = &self.oracle_method else { return Ok(None) };
        let mut table: toml::Table = serde_json::from_value(value.clone()).context("the frozen oracle method")?;
        let kind = match table.remove("method") {
            Some(toml::Value::String(kind)) => kind,
            _ => bail!("the frozen oracle method has no `method` name"),
        };
        Ok(Some(geohost_da::parse_method(&kind, &table, "the contract's oracle method")?))
    }
}

/// One experiment's truth and method outputs, read back from disk.
pub struct ExperimentOutputs {
    pub truth_id: String,
    pub truth: TruthFile,
    /// (method label, output bytes), in method order.
    pub outputs: Vec<(String, Vec<u8>)>,
}

impl ExperimentOutputs {
    pub fn output(&self, i: usize) -> Result<AnalysisFile> {
        let (label, bytes) = &self.outputs[i];
        AnalysisFile::parse(label, bytes.clone())
    }
}

/// Run `set` (its twin and methods) with `cycles`, and read the files back
/// from a private scratch directory that is removed afterwards.
pub fn run_experiment(set: &Loaded, runtime: &Runtime, registry: &mut Registry, cycles: Option<usize>, progress: &mut ProgressFactory<'_>) -> Result<ExperimentOutputs> {
    let result = crate::run::run(set, runtime, Some(registry), cycles, progress)?;
    let scratch = private_scratch()?;
    let read = (|| {
        let written = crate::outputs::write(&scratch, &result, set)?;
        let truth_bytes = std::fs::read(&written.truth)?;
        let truth_id = geohost_registry::artifact_id(&truth_bytes);
        let truth = TruthFile::parse(&truth_id, truth_bytes)?;
        let mut outputs = Vec::new();
        for (m, path) in result.methods.iter().zip(&written.methods) {
            outputs.push((m.label(), std::fs::read(path)?));
        }
        Ok(ExperimentOutputs { truth_id, truth, outputs })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    read
}

/// A fresh directory only this user can read.
fn private_scratch() -> Result<std::path::PathBuf> {
    let mut tag = [0u8; 8];
    rand::rngs::OsRng.try_fill_bytes(&mut tag).context("drawing a scratch directory name")?;
    let dir = std::env::temp_dir().join(format!("geohost-hidden-{}-{}", std::process::id(), u64::from_le_bytes(tag)));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).with_context(|| format!("cannot create the scratch directory {}", dir.display()))?;
    Ok(dir)
}
