//! Export and import: a self-contained bundle (a tar file) carrying the
//! blobs of a set of artifacts, their records and the lineage edges among
//! them, optionally signed by its publisher.
//!
//! Layout: `manifest.json` (format version, publisher, artifacts, edges),
//! `manifest.minisig` (optional: a minisign signature of the manifest,
//! see [`crate::signing`]) and `objects/<64 hex>` per blob.
//!
//! Import is the registry's trust boundary. Invariants:
//! - every entry is streamed and hashed with a cap on its size and on the
//!   bundle's total, so a huge or malformed tar cannot exhaust memory or
//!   disk; nothing is read whole but the manifest and the signature;
//! - a bundle is taken whole or not at all: any corrupt blob, missing
//!   blob, unexpected entry, bad signature or name conflict refuses it
//!   before a row is written, and its staged blobs are removed;
//! - a frozen name (a plugin or contract `name@version`, see
//!   [`crate::schema::FROZEN_KINDS`]) keeps naming what it named: an
//!   artifact that would take it with other bytes is a conflict. Plugins
//!   may be kept as `name@version+<short id>` when the user asks
//!   (`rename_conflicts`); contracts never;
//! - each imported artifact records the bundle's id (the BLAKE3 of its
//!   manifest) and its publisher (the verified signing key, or what the
//!   bundle claims, marked unverified).

use super::{Artifact, Edge, Import, Registry};
use crate::schema::{self, FROZEN_KINDS};
use crate::signing;
use crate::store::Staged;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

const FORMAT: &str = "geohost-bundle/1";
const MANIFEST: &str = "manifest.json";
const SIGNATURE: &str = "manifest.minisig";
/// The manifest and the signature are read whole: cap them.
const MANIFEST_CAP: u64 = 64 << 20;
const SIGNATURE_CAP: u64 = 64 << 10;

/// The bundle's table of contents. Artifacts carry their full records;
/// stale marks and import records are local state and are not imported.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    /// Who says they published it (checked only through a signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publisher: Option<String>,
    artifacts: Vec<Artifact>,
    edges: Vec<Edge>,
}

/// How to export.
#[derive(Default)]
pub struct ExportOptions<'a> {
    /// Sign the manifest with this minisign secret key file.
    pub sign: Option<&'a Path>,
    /// The publisher's name, recorded in the manifest.
    pub publisher: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub artifacts: Vec<String>,
    /// The bundle's id (BLAKE3 of its manifest).
    pub bundle: String,
    /// The signing key's id, when signed.
    pub signed_by: Option<String>,
}

/// Export `ids` and their whole ancestry (all artifacts when `ids` is
/// empty) to a bundle at `path`.
pub fn export(registry: &Registry, ids: &[String], path: &Path, options: &ExportOptions<'_>) -> Result<ExportReport> {
    let secret = options.sign.map(signing::load_secret).transpose()?;
    let mut set = BTreeSet::new();
    if ids.is_empty() {
        for a in registry.list(&Default::default())? {
            set.insert(a.id);
        }
    } else {
        for id in ids {
            set.insert(id.clone());
            for e in registry.lineage(id, true)? {
                set.insert(e.src);
                set.insert(e.dst);
            }
        }
    }
    let ids: Vec<String> = set.into_iter().collect();
    let artifacts: Vec<Artifact> = ids
        .iter()
        .map(|id| {
            let mut a = registry.get(id)?;
            a.stale = false;
            a.imported_from.clear();
            Ok(a)
        })
        .collect::<Result<_>>()?;
    let edges = registry.edges_among(&ids)?;
    let manifest = serde_json::to_vec_pretty(&Manifest { format: FORMAT.into(), publisher: options.publisher.clone(), artifacts, edges })?;
    let signature = secret.as_ref().map(|sk| signing::sign(sk, &manifest)).transpose()?;
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut tar = tar::Builder::new(file);
    let append = |tar: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)?;
        Ok(())
    };
    append(&mut tar, MANIFEST, &manifest)?;
    if let Some(sig) = &signature {
        append(&mut tar, SIGNATURE, sig.as_bytes())?;
    }
    for id in &ids {
        let bytes = registry.store().get(id).with_context(|| format!("exporting {id}"))?;
        append(&mut tar, &format!("objects/{}", super::store::hex_of(id)?), &bytes)?;
    }
    tar.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving the bundle to {}", path.display()))?;
    Ok(ExportReport { artifacts: ids, bundle: super::artifact_id(&manifest), signed_by: signature.as_deref().and_then(signing::claimed_signer) })
}

/// How to import.
pub struct ImportOptions {
    /// Keep a plugin whose `name@version` is taken (by other bytes) as
    /// `name@version+<short id>` instead of refusing the bundle.
    pub rename_conflicts: bool,
    /// Largest blob accepted, in bytes.
    pub max_entry: u64,
    /// Largest total of blobs accepted, in bytes.
    pub max_total: u64,
    /// Public keys trusted besides those in the registry's `trusted-keys/`.
    /// With any trusted key, unsigned and wrongly signed bundles are refused.
    pub trust: Vec<minisign::PublicKey>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { rename_conflicts: false, max_entry: 4 << 30, max_total: 16 << 30, trust: Vec::new() }
    }
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub artifacts: usize,
    pub new_artifacts: usize,
    pub edges: usize,
    /// The bundle's id (BLAKE3 of its manifest).
    pub bundle: String,
    pub publisher: String,
    pub verified: bool,
    /// Plugins kept under another version: (id, name, new version).
    pub renamed: Vec<(String, String, String)>,
}

/// Import a bundle (see the module's invariants).
pub fn import(registry: &mut Registry, path: &Path, options: &ImportOptions) -> Result<ImportReport> {
    registry.explained(|registry| import_unexplained(registry, path, options))
}

fn import_unexplained(registry: &mut Registry, path: &Path, options: &ImportOptions) -> Result<ImportReport> {
    let shown = path.display().to_string();
    let refuse = |why: String| anyhow::anyhow!("bundle {shown} refused, nothing was imported: {why}");
    let file = std::fs::File::open(path).with_context(|| format!("cannot open bundle {shown}"))?;
    let mut archive = tar::Archive::new(file);
    let (mut manifest_bytes, mut signature) = (None, None);
    let mut staged: BTreeMap<String, Staged> = BTreeMap::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(|e| refuse(format!("not a tar file ({e})")))? {
        let mut entry = entry.map_err(|e| refuse(format!("not a readable tar file ({e})")))?;
        let name = entry.path().map_err(|e| refuse(format!("an entry has an unreadable name ({e})")))?.to_string_lossy().into_owned();
        if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(refuse(format!("entry `{name}` is not a regular file")));
        }
        let size = entry.header().size().map_err(|e| refuse(format!("entry `{name}` has no readable size ({e})")))?;
        if name == MANIFEST || name == SIGNATURE {
            let cap = if name == MANIFEST { MANIFEST_CAP } else { SIGNATURE_CAP };
            if size > cap {
                return Err(refuse(format!("{name} is {size} bytes, over its cap of {cap}")));
            }
            let mut bytes = Vec::new();
            (&mut entry).take(cap + 1).read_to_end(&mut bytes).map_err(|e| refuse(format!("reading {name}: {e}")))?;
            let slot = if name == MANIFEST { &mut manifest_bytes } else { &mut signature };
            if slot.replace(bytes).is_some() {
                return Err(refuse(format!("it has two {name} entries")));
            }
        } else if let Some(hex) = name.strip_prefix("objects/") {
            let id = format!("blake3:{hex}");
            super::store::hex_of(&id).map_err(|_| refuse(format!("entry `{name}` is not named by a blob id")))?;
            if size > options.max_entry {
                return Err(refuse(format!("blob {id} is {size} bytes, over the cap of {} per blob (raise --max-entry-mib to accept it)", options.max_entry)));
            }
            total += size;
            if total > options.max_total {
                return Err(refuse(format!("its blobs add up to more than the cap of {} bytes (raise --max-total-mib to accept it)", options.max_total)));
            }
            let blob = registry.store().stage(&mut entry, size).map_err(|e| refuse(format!("reading blob {id}: {e:#}")))?;
            if blob.id != id {
                return Err(refuse(format!("blob {id} is corrupt (its bytes hash to {})", blob.id)));
            }
            if staged.insert(id.clone(), blob).is_some() {
                return Err(refuse(format!("blob {id} appears twice")));
            }
        } else {
            return Err(refuse(format!("unexpected entry `{name}` (a bundle holds {MANIFEST}, {SIGNATURE} and objects/<id>)")));
        }
    }
    let manifest_bytes = manifest_bytes.ok_or_else(|| refuse(format!("it has no {MANIFEST}; is it a geohost bundle?")))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| refuse(format!("invalid {MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refuse(format!("its format is `{}`; this geohost reads `{FORMAT}`", manifest.format)));
    }
    let bundle = super::artifact_id(&manifest_bytes);

    // Who published it.
    let mut trusted = signing::trusted_keys(registry.dir())?;
    trusted.extend(options.trust.iter().cloned());
    let signature = signature.map(|s| String::from_utf8(s).map_err(|_| refuse(format!("{SIGNATURE} is not text")))).transpose()?;
    let (publisher, verified) = match (&signature, trusted.is_empty()) {
        (Some(sig), false) => (format!("key {}", signing::verify(&trusted, sig, &manifest_bytes).map_err(|e| refuse(format!("{e:#}")))?), true),
        (None, false) => {
            return Err(refuse(
                "it is not signed, and this import trusts only signed bundles (from the keys given with --trust or in the registry's trusted-keys/)".into(),
            ))
        }
        (sig, true) => {
            let claimed = manifest.publisher.clone().unwrap_or_else(|| "no publisher named".into());
            let signer = sig
                .as_deref()
                .and_then(signing::claimed_signer)
                .map(|k| format!(", signed by key {k} (no trusted key to check it)"))
                .unwrap_or_else(|| ", unsigned".into());
            (format!("{claimed}{signer}"), false)
        }
    };

    // Every record has its blob, of the size it says, and nothing else rides along.
    for a in &manifest.artifacts {
        let blob = staged.get(&a.id).ok_or_else(|| refuse(format!("the blob of {} ({}) is missing", a.id, a.name)))?;
        if blob.size != a.size {
            return Err(refuse(format!("{} ({}) says it is {} bytes, its blob is {}", a.id, a.name, a.size, blob.size)));
        }
    }
    let listed: BTreeSet<&String> = manifest.artifacts.iter().map(|a| &a.id).collect();
    if let Some(extra) = staged.keys().find(|id| !listed.contains(id)) {
        return Err(refuse(format!("blob {extra} is not in the manifest")));
    }

    // Frozen names: conflicts with this registry and within the bundle.
    let mut artifacts = manifest.artifacts;
    let mut conflicts = Vec::new();
    let mut renamed = Vec::new();
    let mut taken: BTreeMap<(String, String, String), String> = BTreeMap::new();
    for a in &mut artifacts {
        let (Some(version), true) = (a.version.clone(), FROZEN_KINDS.contains(&a.kind.as_str())) else { continue };
        if registry.get(&a.id).is_ok() {
            continue; // the same bytes are already here, under their own record
        }
        let key = (a.kind.clone(), a.name.clone(), version.clone());
        let holder = match registry.frozen_holder(&a.kind, &a.name, Some(&version))? {
            Some((other, created)) => Some(format!("{other} (here, registered {created})")),
            None => taken.get(&key).map(|other| format!("{other} (in the same bundle)")),
        };
        match holder {
            Some(_) if a.kind == "plugin" && options.rename_conflicts => {
                let new_version = schema::renamed_version(&version, &a.id);
                renamed.push((a.id.clone(), a.name.clone(), new_version.clone()));
                a.version = Some(new_version);
            }
            Some(holder) => conflicts.push(format!(
                "  {} {}@{version} is {} in the bundle but already names {holder}{}",
                a.kind,
                a.name,
                a.id,
                if a.kind == "plugin" { "" } else { "; a contract's name cannot be taken over" }
            )),
            None => {
                taken.insert(key, a.id.clone());
            }
        }
    }
    if !conflicts.is_empty() {
        let hint = if conflicts.iter().any(|c| c.trim_start().starts_with("plugin ")) && !options.rename_conflicts {
            "\n--rename-conflicts keeps conflicting plugins as name@version+<short id>; contracts have no override"
        } else {
            ""
        };
        return Err(refuse(format!("it would give frozen names to other bytes:\n{}{hint}", conflicts.join("\n"))));
    }

    // Blobs durably in place first, then every row in one transaction.
    let count = artifacts.len();
    for blob in staged.into_values() {
        registry.store().commit(blob)?;
    }
    let import = Import { bundle: bundle.clone(), publisher: publisher.clone(), verified, source: shown.clone(), imported: super::now() };
    let new_artifacts = registry.import_records(&artifacts, &manifest.edges, &import).with_context(|| format!("importing bundle {shown}"))?;
    Ok(ImportReport { artifacts: count, new_artifacts, edges: manifest.edges.len(), bundle, publisher, verified, renamed })
}
