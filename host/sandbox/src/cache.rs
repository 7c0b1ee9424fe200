//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes milliseconds to seconds;
//! loading a serialized one takes well under a millisecond. Entries are
//! keyed by the BLAKE3 hash of the component bytes *and* the engine's
//! compatibility hash, so a different wasmtime version or engine
//! configuration never loads a stale artifact. Each entry starts with the
//! BLAKE3 hash of the serialized bytes after it, checked before
//! deserializing, so a corrupted or truncated entry is recompiled (and
//! overwritten), never executed. Entries are read into memory rather than
//! memory-mapped, so a concurrent rewrite cannot pull code from under a
//! running plugin.
//!
//! The checksum is no defence against someone who can write the
//! directory: anyone can recompute it, and a planted entry is native code
//! that runs outside the sandbox. So the directory must be this user's
//! alone (created with mode 0700; refused when another user owns it or
//! its group or others may write to it).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache directory: `$GEOHOST_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/geohost`, else `~/.cache/geohost`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("GEOHOST_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("geohost"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("geohost"))
    }

    /// The cache under `dir` (its `compiled` folder, created with mode
    /// 0700 when missing). An error, saying what to do, when it cannot be
    /// created or is not private to this user.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("compiled");
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        let fixes = "set GEOHOST_CACHE_DIR to a directory of your own, or pass --no-cache";
        builder.create(&dir).map_err(|e| anyhow::anyhow!("cannot create the compile cache {}: {e}; {fixes}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // Through a link, its target: what entries are read from.
            let meta = std::fs::metadata(&dir).map_err(|e| anyhow::anyhow!("cannot read the compile cache {}: {e}; {fixes}", dir.display()))?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            let problem = if !meta.is_dir() {
                Some("is not a directory".to_string())
            } else if meta.uid() != me {
                Some(format!("belongs to user {}, not to you ({me})", meta.uid()))
            } else if meta.mode() & 0o022 != 0 {
                Some(format!("can be written by its group or by others (mode {:o})", meta.mode() & 0o777))
            } else {
                None
            };
            if let Some(problem) = problem {
                anyhow::bail!(
                    "the compile cache {} {problem}: whoever can write it can plant compiled code that geohost would run outside the sandbox; \
                     `chmod 700` it if it is yours, {fixes}",
                    dir.display()
                );
            }
        }
        Ok(CompileCache { dir })
    }

    fn entry(&self, engine: &Engine, content_hash: &blake3::Hash) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{}-{:016x}.cwasm", content_hash.to_hex(), hasher.finish()))
    }

    /// The cached compiled form of the component with `content_hash`, if
    /// a valid entry exists; never compiles.
    pub fn get(&self, engine: &Engine, content_hash: &blake3::Hash) -> Option<Component> {
        let entry = std::fs::read(self.entry(engine, content_hash)).ok()?;
        if entry.len() > 32 && blake3::hash(&entry[32..]).as_bytes() == &entry[..32] {
            // SAFETY: as in `load`: our own serialization for this engine
            // configuration, checksummed.
            return unsafe { Component::deserialize(engine, &entry[32..]) }.ok();
        }
        None
    }

    /// Load the compiled form of `bytes`, compiling and storing it on a miss.
    /// Returns the component and whether it came from the cache. Cache I/O
    /// problems never fail the load: the component is compiled instead.
    pub fn load(&self, engine: &Engine, content_hash: &blake3::Hash, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(engine, content_hash);
        if let Ok(entry) = std::fs::read(&path) {
            if entry.len() > 32 && blake3::hash(&entry[32..]).as_bytes() == &entry[..32] {
                // SAFETY: these bytes are exactly what `Component::serialize`
                // produced for this engine configuration (the key includes
                // the compatibility hash; the checksum rules out corruption).
                if let Ok(component) = unsafe { Component::deserialize(engine, &entry[32..]) } {
                    return Ok((component, true));
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Ok(serialized) = component.serialize() {
            let mut entry = Vec::with_capacity(32 + serialized.len());
            entry.extend_from_slice(blake3::hash(&serialized).as_bytes());
            entry.extend_from_slice(&serialized);
            let _ = store_atomically(&path, &entry);
        }
        Ok((component, false))
    }
}

/// Write `bytes` to `path` via a temporary file and rename, so a reader
/// never sees a partial file.
fn store_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::CompileCache;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_cache_is_created_private_and_refused_when_others_can_write_it() {
        let home = std::env::temp_dir().join(format!("geohost-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        CompileCache::open(&home).unwrap();
        let compiled = home.join("compiled");
        assert_eq!(std::fs::metadata(&compiled).unwrap().permissions().mode() & 0o777, 0o700);
        for mode in [0o770, 0o702, 0o777] {
            std::fs::set_permissions(&compiled, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = CompileCache::open(&home).err().expect("a cache others can write was accepted").to_string();
            assert!(err.contains(&compiled.display().to_string()) && err.contains(&format!("mode {mode:o}")) && err.contains("--no-cache"), "{err}");
        }
        // A link is judged by the directory it leads to.
        std::fs::remove_dir(&compiled).unwrap();
        let elsewhere = home.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &compiled).unwrap();
        let err = CompileCache::open(&home).err().expect("a link to a directory others can write was accepted").to_string();
        assert!(err.contains("mode 777"), "{err}");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        CompileCache::open(&home).unwrap();
        std::fs::remove_dir_all(&home).unwrap();
    }
}
