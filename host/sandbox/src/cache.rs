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

    pub fn new(dir: PathBuf) -> Self {
        CompileCache { dir: dir.join("compiled") }
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
