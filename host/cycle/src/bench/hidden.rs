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

/// `n` secret seeds of 256 bits from the operating system.
pub fn draw_seeds(n: usize) -> Result<Vec<[u8; 32]>> {
    let mut seeds = vec![[0u8; 32]; n];
    for seed in &mut seeds {
        rand::rngs::OsRng.try_fill_bytes(seed).context("drawing a secret seed from the operating system")?;
    }
    Ok(seeds)
}

/// The secret seeds of contract `contract_id` from `registry`, each checked
/// against its frozen commitment.
pub fn checked_seeds(registry: &Registry, contract_id: &str, commitments: &[String]) -> Result<Vec<[u8; 32]>> {
    let seeds = registry.secrets(contract_id)?;
    if seeds.len() != commitments.len() {
        bail!(
            "this registry holds {} of the {} secret seeds of contract {contract_id}: only the registry that pre-registered a hidden contract can score it (an imported contract has no seeds)",
            seeds.len(),
            commitments.len()
        );
    }
    for (i, (seed, expected)) in seeds.iter().zip(commitments).enumerate() {
        if &commitment(seed, contract_id) != expected {
            bail!("secret seed {} of contract {contract_id} does not match its frozen commitment {expected}: the registry's secrets table was altered", i + 1);
        }
    }
    Ok(seeds)
}

impl FrozenHidden {
    /// Draw the secret seeds for `spec` and freeze their commitments, for
    /// the reference run `result` of plugin-set `set`. Returns the record
    /// and the seeds (for the registry's private table).
    pub fn draw(
        spec: &HiddenSpec,
        contract_id: &str,
        set: &Loaded,
        result: &RunOutput,
        oracle_method: Option<serde_json::Value>,
    ) -> Result<(FrozenHidden, Vec<[u8; 32]>)> {
        if result.plugins[0].kind != "component" {
            bail!("[hidden] experiments are generated with the reference plugin-set's model, which must be a component, not an emulator");
        }
        let seeds = draw_seeds(spec.experiments)?;
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
        checked_seeds(registry, contract_id, &self.commitments)
    }

    /// The reference plugin-set as frozen (its registered text, its plugins
    /// by id), running `methods`; `secret` selects a hidden experiment
    /// (`None`: the public one).
    pub fn plugin_set(&self, registry: &Registry, contract: &Contract, methods: Vec<Method>, secret: Option<[u8; 32]>) -> Result<Loaded> {
        let text = String::from_utf8(registry.read(&self.plugin_set)?).context("the frozen reference plugin-set is not UTF-8")?;
        let reference = &contract.file.reference;
        let file = reference.plugin_set.as_deref().or(reference.forecasts.as_ref().map(|f| f.plugin_set.as_path()));
        let path = contract.dir().join(file.unwrap_or(std::path::Path::new("reference.toml")));
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
pub fn run_experiment(
    set: &Loaded,
    runtime: &Runtime,
    registry: &mut Registry,
    cycles: Option<usize>,
    progress: &mut ProgressFactory<'_>,
) -> Result<ExperimentOutputs> {
    let result = crate::run::run(set, runtime, Some(registry), cycles, progress, Default::default())?;
    let scratch = crate::scratch::private("hidden")?;
    let written = crate::outputs::write(scratch.path(), &result, set)?;
    let truth_bytes = std::fs::read(&written.truth)?;
    let truth_id = geohost_registry::artifact_id(&truth_bytes);
    let truth = TruthFile::parse(&truth_id, truth_bytes)?;
    let mut outputs = Vec::new();
    for (m, path) in result.methods.iter().zip(&written.methods) {
        outputs.push((m.label(), std::fs::read(path)?));
    }
    Ok(ExperimentOutputs { truth_id, truth, outputs })
}

/// The tag a contract gets when its seeds are revealed.
pub const REVEALED: &str = "revealed";

/// A hidden contract's seeds, made public after its benchmark closed:
/// anyone can check each against its frozen commitment and rescore.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Revealed {
    pub contract: String,
    pub name: String,
    pub version: Option<String>,
    pub seeds: Vec<RevealedSeed>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RevealedSeed {
    pub commitment: String,
    /// The 256-bit seed, hex.
    pub seed: String,
}

/// The commitments frozen in a registered hidden contract's record (a
/// filter contract's `hidden.commitments`, a posterior benchmark's
/// `commitments`).
fn frozen_commitments(registry: &Registry, contract_id: &str) -> Result<(geohost_registry::Artifact, Vec<String>)> {
    let artifact = registry.get(contract_id)?;
    if artifact.kind != "contract" {
        bail!("{contract_id} ({}) is a {}, not a contract", artifact.name, artifact.kind);
    }
    let frozen = &artifact.metadata["frozen"];
    let list = frozen["hidden"]["commitments"].as_array().or_else(|| frozen["commitments"].as_array());
    let commitments: Vec<String> = list.map(|l| l.iter().filter_map(|c| c.as_str().map(String::from)).collect()).unwrap_or_default();
    if commitments.is_empty() {
        bail!("contract {contract_id} ({}) has no hidden experiments, so there is nothing to reveal", artifact.name);
    }
    Ok((artifact, commitments))
}

/// Reveal a hidden contract's seeds (checked against their commitments),
/// register them as a `reveal` artifact `derived_from` the contract (so
/// bundles carry them), and tag the contract [`REVEALED`]: later reports
/// say their hidden scores were not blind. Returns the seeds and the
/// artifact's id.
pub fn reveal(registry: &mut Registry, contract_id: &str) -> Result<(Revealed, String)> {
    let (artifact, commitments) = frozen_commitments(registry, contract_id)?;
    let seeds = registry.secrets(contract_id)?;
    if seeds.len() != commitments.len() {
        bail!(
            "this registry holds {} of the {} secret seeds of contract {contract_id}: only the registry that pre-registered it can reveal them",
            seeds.len(),
            commitments.len()
        );
    }
    let mut revealed = Vec::new();
    for (i, (seed, expected)) in seeds.iter().zip(&commitments).enumerate() {
        if &commitment(seed, contract_id) != expected {
            bail!("secret seed {} of contract {contract_id} does not match its frozen commitment {expected}: the registry's secrets table was altered", i + 1);
        }
        revealed.push(RevealedSeed { commitment: expected.clone(), seed: seed.iter().map(|b| format!("{b:02x}")).collect() });
    }
    tag_revealed(registry, &artifact)?;
    let revealed = Revealed { contract: contract_id.into(), name: artifact.name, version: artifact.version, seeds: revealed };
    let bytes = serde_json::to_vec_pretty(&revealed)?;
    let (id, _) = registry.add(
        &bytes,
        &geohost_registry::NewArtifact {
            kind: "reveal".into(),
            name: format!("reveal/{}", revealed.name),
            version: revealed.version.clone(),
            media_type: "application/json".into(),
            metadata: serde_json::json!({ "contract": contract_id }),
            ..Default::default()
        },
    )?;
    registry.link(&id, contract_id, "derived_from")?;
    Ok((revealed, id))
}

/// Load revealed seeds into this registry (one that imported the contract
/// from a bundle), after checking every seed against the commitment frozen
/// in the contract's record, so that its reports can be rescored here.
pub fn import_revealed(registry: &mut Registry, revealed: &Revealed) -> Result<()> {
    let (artifact, commitments) = frozen_commitments(registry, &revealed.contract)
        .with_context(|| format!("import the bundle holding contract {} first (`geohost registry import`)", revealed.contract))?;
    if revealed.seeds.len() != commitments.len() {
        bail!("{} seeds revealed, but contract {} committed to {}", revealed.seeds.len(), revealed.contract, commitments.len());
    }
    let mut seeds = Vec::new();
    for (i, (r, expected)) in revealed.seeds.iter().zip(&commitments).enumerate() {
        let bytes: Vec<u8> = (0..r.seed.len())
            .step_by(2)
            .map(|k| r.seed.get(k..k + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<_>>()
            .with_context(|| format!("seed {} is not hex", i + 1))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("seed {} is not 32 bytes", i + 1))?;
        if &commitment(&seed, &revealed.contract) != expected {
            bail!("revealed seed {} does not match the commitment {expected} frozen in contract {}: not the contract's seed", i + 1, revealed.contract);
        }
        seeds.push(seed);
    }
    if registry.secrets(&revealed.contract)?.is_empty() {
        registry.add_revealed_seeds(&revealed.contract, &seeds)?;
    }
    tag_revealed(registry, &artifact)
}

fn tag_revealed(registry: &mut Registry, artifact: &geohost_registry::Artifact) -> Result<()> {
    let bytes = registry.read(&artifact.id)?;
    registry.add(
        &bytes,
        &geohost_registry::NewArtifact {
            kind: artifact.kind.clone(),
            name: artifact.name.clone(),
            version: artifact.version.clone(),
            media_type: artifact.media_type.clone(),
            tags: vec![REVEALED.into()],
            ..Default::default()
        },
    )?;
    Ok(())
}

/// Whether the contract's seeds have been revealed.
pub fn is_revealed(registry: &Registry, contract_id: &str) -> Result<bool> {
    Ok(registry.get(contract_id)?.tags.iter().any(|t| t == REVEALED))
}
