//! Shared helpers for the integration tests: where the real plugin
//! components and the real binary are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("host/cli lives two levels below the repository root")
}

/// A built plugin component. The tests need `plugins/build.sh` to have run
/// (scripts/test.sh does it first).
pub fn plugin(name: &str) -> PathBuf {
    let path = repo_root().join("plugins").join("dist").join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the plugins first with plugins/build.sh (scripts/test.sh does)", path.display());
    path
}

/// The `geohost` binary with an isolated compile cache.
pub fn geohost(cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_geohost"));
    cmd.env("GEOHOST_CACHE_DIR", cache);
    cmd.env("GEOHOST_REGISTRY", cache.join("registry"));
    cmd
}

/// The compile cache shared by tests that load the big interpreter
/// components (Python, JavaScript: 10–20 s each to compile): entries are
/// keyed by content hash, checksummed and written atomically, so parallel
/// tests share them safely.
pub fn shared_cache() -> PathBuf {
    repo_root().join("target").join("test-compile-cache")
}

/// [`geohost`] with its own registry under `dir` but the [`shared_cache`].
pub fn geohost_shared_cache(dir: &Path) -> Command {
    let mut cmd = geohost(dir);
    cmd.env("GEOHOST_CACHE_DIR", shared_cache());
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plugin-set file for Lorenz-96 with the given methods and cycles,
/// pointing at the built plugins.
pub fn lorenz96_set(dir: &Path, cycles: usize, methods: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
plugin = "{model}"
config = {{ F = 8.0, size = 40 }}

[observations]
plugin = "{obs}"
config = {{ select = "all", variance = 1.0 }}

[experiment]
cycles = {cycles}
burn_in = 5.0
seed = 1
x0 = "e0"
x0_variance = 0.001

{methods}
"#,
        model = plugin("lorenz96").display(),
        obs = plugin("obs-subset").display(),
    );
    let path = dir.join("set.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A small QG twin's plugin-set `NAME.toml` (33 × 33 basin, 100
/// observations on moving tracks, R = 4 I) with the given `[experiment]`
/// and later sections (`rest`).
pub fn qg_set(dir: &Path, name: &str, rest: &str) -> PathBuf {
    let text = format!(
        r#"
name = "{name}"
[model]
plugin = "{model}"
config = {{ refinement = 5, max_dt = 1.25 }}
[observations]
plugin = "{obs}"
config = {{ shape = [33, 33], count = 100, variance = 4.0 }}
{rest}
"#,
        model = plugin("qg").display(),
        obs = plugin("obs-tracks").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
