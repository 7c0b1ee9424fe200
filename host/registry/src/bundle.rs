//! Export and import: a self-contained bundle (a tar file) carrying the
//! blobs of a set of artifacts, their records and the lineage edges among
//! them.
//!
//! Layout: `manifest.json` (format version, artifacts, edges) and
//! `objects/<64 hex>` per blob. Import re-hashes every blob against its id
//! before storing it and refuses the whole bundle on any mismatch.

use super::{Artifact, Edge, Registry};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

const FORMAT: &str = "geohost-bundle/1";

/// The bundle's table of contents. Artifacts carry their full records;
/// stale marks are local state and are not imported.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    artifacts: Vec<Artifact>,
    edges: Vec<Edge>,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub artifacts: usize,
    pub new_artifacts: usize,
    pub edges: usize,
}

/// Export `ids` and their whole ancestry (all artifacts when `ids` is
/// empty) to a bundle at `path`. Returns the exported ids.
pub fn export(registry: &Registry, ids: &[String], path: &Path) -> Result<Vec<String>> {
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
    let artifacts: Vec<Artifact> = ids.iter().map(|id| registry.get(id)).collect::<Result<_>>()?;
    let edges = registry.edges_among(&ids)?;
    let manifest = Manifest { format: FORMAT.into(), artifacts, edges };
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
    append(&mut tar, "manifest.json", &serde_json::to_vec_pretty(&manifest)?)?;
    for id in &ids {
        let bytes = registry.store().get(id).with_context(|| format!("exporting {id}"))?;
        append(&mut tar, &format!("objects/{}", super::store::hex_of(id)?), &bytes)?;
    }
    tar.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving the bundle to {}", path.display()))?;
    Ok(ids)
}

/// Import a bundle: every blob is checked against its id first; then blobs,
/// records and edges are added (existing ones are kept).
pub fn import(registry: &mut Registry, path: &Path) -> Result<ImportReport> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut manifest: Option<Manifest> = None;
    let mut blobs: std::collections::HashMap<String, Vec<u8>> = Default::default();
    for entry in archive.entries().with_context(|| format!("{} is not a geohost bundle (tar)", path.display()))? {
        let mut entry = entry.with_context(|| format!("{} is not a readable geohost bundle (tar)", path.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        if name == "manifest.json" {
            manifest = Some(serde_json::from_slice(&bytes).with_context(|| format!("{}: invalid manifest.json", path.display()))?);
        } else if let Some(hex) = name.strip_prefix("objects/") {
            let id = format!("blake3:{hex}");
            let actual = super::artifact_id(&bytes);
            if actual != id {
                bail!("bundle {}: blob {id} is corrupt (its bytes hash to {actual}); nothing was imported", path.display());
            }
            blobs.insert(id, bytes);
        }
    }
    let manifest = manifest.with_context(|| format!("{} has no manifest.json; is it a geohost bundle?", path.display()))?;
    if manifest.format != FORMAT {
        bail!("bundle {} has format `{}`; this geohost reads `{FORMAT}`", path.display(), manifest.format);
    }
    for a in &manifest.artifacts {
        if !blobs.contains_key(&a.id) {
            bail!("bundle {}: the blob of {} ({}) is missing; nothing was imported", path.display(), a.id, a.name);
        }
    }
    let mut report = ImportReport::default();
    for a in &manifest.artifacts {
        registry.store().put(&blobs[&a.id])?;
        report.artifacts += 1;
        if registry.insert_record(a)? {
            report.new_artifacts += 1;
        }
    }
    for e in &manifest.edges {
        registry.link(&e.src, &e.dst, &e.kind)?;
        report.edges += 1;
    }
    Ok(report)
}
