//! The content-addressed blob store: `objects/blake3/ab/cdef…` under the
//! registry directory.
//!
//! Invariants:
//! - A blob's file name is the BLAKE3 hash of its bytes.
//! - A blob is written to a temporary file, fsynced, renamed into place and
//!   its directory fsynced *before* any database row names it, so a crash
//!   can leave an unreferenced blob (collected by `gc`) but never a row
//!   naming a missing or partial blob.
//! - Every read re-hashes the bytes; a mismatch is an integrity error.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `blake3:<64 hex>`, the identity of every artifact.
pub fn artifact_id(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// The hex part of an artifact id, checked.
pub fn hex_of(id: &str) -> Result<&str> {
    match id.strip_prefix("blake3:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => Ok(hex),
        _ => bail!("`{id}` is not an artifact id (expected blake3: followed by 64 lowercase hex digits)"),
    }
}

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn new(registry_dir: &Path) -> Self {
        BlobStore { root: registry_dir.join("objects").join("blake3") }
    }

    pub fn path_of(&self, id: &str) -> Result<PathBuf> {
        let hex = hex_of(id)?;
        Ok(self.root.join(&hex[..2]).join(&hex[2..]))
    }

    /// Store `bytes` durably; returns the id. Idempotent: an existing blob
    /// with the right content is left as it is (a corrupt one is replaced).
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let id = artifact_id(bytes);
        self.put_hashed(bytes, &id)?;
        Ok(id)
    }

    /// [`BlobStore::put`] for bytes whose id the caller has computed
    /// already (`id` must be `artifact_id(bytes)`), so they are hashed once.
    pub(crate) fn put_hashed(&self, bytes: &[u8], id: &str) -> Result<()> {
        let path = self.path_of(id)?;
        if let Ok(existing) = std::fs::read(&path) {
            if artifact_id(&existing) == id {
                return Ok(());
            }
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let result = (|| -> Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| format!("writing blob {}", path.display()))
    }

    /// Read a blob and check its hash. Missing and corrupt blobs are
    /// errors that say which and what to do.
    pub fn get(&self, id: &str) -> Result<Vec<u8>> {
        let path = self.path_of(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("integrity error: blob {id} is missing from the store ({}); restore it from an export or re-run what produced it", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading blob {}", path.display())),
        };
        let actual = artifact_id(&bytes);
        if actual != id {
            bail!(
                "integrity error: blob {} is corrupt (its bytes hash to {actual}); it will not be used. Restore it from an export or re-run what produced it",
                path.display()
            );
        }
        Ok(bytes)
    }

    /// Check one blob without keeping its bytes: Ok(true) intact,
    /// Ok(false) corrupt, Err for missing.
    pub fn check(&self, id: &str) -> Result<Option<bool>> {
        let path = self.path_of(id)?;
        let mut hasher = blake3::Hasher::new();
        match hasher.update_mmap(&path) {
            Ok(_) => Ok(Some(format!("blake3:{}", hasher.finalize().to_hex()) == id)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Every blob id present on disk (temporary files excluded).
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else { return Ok(ids) };
        for dir in dirs {
            let dir = dir?;
            let prefix = dir.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !dir.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(dir.path())? {
                let name = file?.file_name().to_string_lossy().into_owned();
                if name.len() == 62 && !name.starts_with('.') {
                    ids.push(format!("blake3:{prefix}{name}"));
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Remove temporary files left by writers that died mid-write (older
    /// than `age`, so a live writer's file is never touched). Returns how
    /// many were removed.
    pub fn remove_abandoned_temporaries(&self, age: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        let Ok(dirs) = std::fs::read_dir(&self.root) else { return Ok(0) };
        for dir in dirs {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(dir.path())? {
                let file = file?;
                let old = file.metadata()?.modified()?.elapsed().map(|e| e > age).unwrap_or(false);
                if file.file_name().to_string_lossy().starts_with(".tmp-") && old {
                    std::fs::remove_file(file.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Stream `reader` into a temporary file of the store, hashing it on
    /// the way, with no more than `cap` bytes read (a longer stream is an
    /// error, and only `cap` + 1 bytes were read). Memory stays bounded by
    /// one buffer whatever the size. The blob is not visible under its id
    /// until [`BlobStore::commit`]; a dropped [`Staged`] removes its file.
    pub fn stage(&self, reader: &mut impl std::io::Read, cap: u64) -> Result<Staged> {
        let dir = self.root.join("staging");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let mut staged = Staged { file: tmp, id: String::new(), size: 0, committed: false };
        let mut file = File::create(&staged.file).with_context(|| format!("creating {}", staged.file.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            staged.size += n as u64;
            if staged.size > cap {
                bail!("more than {cap} bytes");
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
        }
        file.sync_all()?;
        staged.id = format!("blake3:{}", hasher.finalize().to_hex());
        Ok(staged)
    }

    /// Move a staged blob into place under its id (durably). A blob that is
    /// already there intact is kept and the staged copy dropped.
    pub fn commit(&self, mut staged: Staged) -> Result<()> {
        if self.check(&staged.id)? == Some(true) {
            return Ok(());
        }
        let path = self.path_of(&staged.id)?;
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::rename(&staged.file, &path).with_context(|| format!("moving a staged blob to {}", path.display()))?;
        staged.committed = true;
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.path_of(id)?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }
}

/// A blob streamed into the store but not yet under its id (see
/// [`BlobStore::stage`]).
pub struct Staged {
    file: PathBuf,
    /// The id of the bytes read.
    pub id: String,
    pub size: u64,
    committed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// A per-process counter for temporary names (several threads may write).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_blake3_of_the_bytes_and_malformed_ids_are_refused() {
        // BLAKE3's published hash of the empty input.
        assert_eq!(artifact_id(b""), "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        for bad in ["af1349b9", "blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262", "blake3:../../etc/passwd", "sha256:00"] {
            let err = hex_of(bad).unwrap_err().to_string();
            assert!(err.contains("is not an artifact id"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_stored_blob_reads_back_and_a_flipped_byte_or_missing_file_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let id = store.put(b"some bytes").unwrap();
        assert_eq!(id, artifact_id(b"some bytes"));
        assert_eq!(store.put(b"some bytes").unwrap(), id, "putting the same bytes again is idempotent");
        assert_eq!(store.get(&id).unwrap(), b"some bytes");
        assert_eq!(store.check(&id).unwrap(), Some(true));
        assert_eq!(store.list().unwrap(), vec![id.clone()]);

        let path = store.path_of(&id).unwrap();
        std::fs::write(&path, b"some bytez").unwrap();
        let err = store.get(&id).unwrap_err().to_string();
        assert!(err.contains("integrity error") && err.contains("is corrupt"), "{err}");
        assert_eq!(store.check(&id).unwrap(), Some(false));
        // Putting the right bytes again repairs the corrupt blob.
        store.put(b"some bytes").unwrap();
        assert_eq!(store.get(&id).unwrap(), b"some bytes");

        std::fs::remove_file(&path).unwrap();
        let err = store.get(&id).unwrap_err().to_string();
        assert!(err.contains("integrity error") && err.contains("is missing"), "{err}");
        assert_eq!(store.check(&id).unwrap(), None);
    }
}
