//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes milliseconds to seconds;
//! loading a serialized one takes well under a millisecond. Entries are
//! keyed by the BLAKE3 hash of the component bytes *and* the engine's
//! compatibility hash, so a different wasmtime version or engine
//! configuration never loads a stale artifact. Only files this host wrote
//! are deserialized (they live in a directory the host owns); a file that
//! fails to load is recompiled and overwritten.

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

    /// Load the compiled form of `bytes`, compiling and storing it on a miss.
    /// Returns the component and whether it came from the cache. Cache I/O
    /// problems never fail the load: the component is compiled instead.
    pub fn load(&self, engine: &Engine, content_hash: &blake3::Hash, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(engine, content_hash);
        if path.is_file() {
            // SAFETY: the file was written by `store` below from
            // `Component::serialize` of this engine configuration (the key
            // includes the compatibility hash), in a directory we own.
            if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
                return Ok((component, true));
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Ok(serialized) = component.serialize() {
            let _ = store_atomically(&path, &serialized);
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
