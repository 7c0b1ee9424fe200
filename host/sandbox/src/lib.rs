//! The wasm sandbox: loads plugin components, checks their world, version
//! and imports, and calls them under limits.
//!
//! Invariants:
//! - A component is only instantiated after its exports name the expected
//!   interface at the accepted version and its imports are all allowlisted;
//!   plugins get no WASI and no host functions.
//! - Every call runs with fresh fuel and a fresh deadline; memory growth is
//!   capped by the store's limiter.
//! - Any failure (trap, exhausted limit, error result, wrong shape,
//!   non-finite output) becomes a [`SandboxError`] naming the plugin; after
//!   a trap the instance is poisoned and refuses further calls.
//! - Floats are deterministic: NaN bits are canonicalised, so the same
//!   plugin gives the same bits on every run.
//!
//! [`model`] holds the forward-model, observation-operator and simulator
//! traits that the wasm adapters here and the native models of the DA
//! crate implement.

mod cache;
mod filter;
mod forward;
pub mod isolate;
pub mod limits;
mod metric;
pub mod model;
mod observe;
mod posterior;
mod simulate;

pub use cache::CompileCache;
pub use filter::{FilterInfo, Problem, WasmFilter, MAX_MEMBERS};
pub use forward::WasmForward;
pub use limits::Limits;
pub use metric::{MemberTable, MetricValue, Table, WasmMetric};
pub use observe::WasmObs;
pub use posterior::{PosteriorInfo, WasmPosterior};
pub use simulate::WasmSimulator;

use limits::StoreLimiter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, ProfilingStrategy, Store, Trap};

/// The WIT package version this host implements.
pub const PACKAGE: &str = "geohost:plugin";
pub const PACKAGE_VERSION: &str = "0.1.1";
/// The semver track this host accepts: every 0.1.x component (a 0.1.0
/// one lacks only the interfaces 0.1.1 added).
pub const PACKAGE_TRACK: &str = "0.1";

/// How often the ticker thread advances the engine epoch; deadlines are
/// counted in these ticks. The ticker wakes this often for the whole
/// run, and on a machine whose cores are all busy each wake takes a core
/// from a worker (every 2 ms cost a QG forecast's second thread some 1%):
/// deadlines are seconds, so a coarse tick loses nothing.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A plugin kind: the world a component must implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    ForwardModel,
    ObsOperator,
    Metric,
    StaticModel,
    /// A DA method submitted as a component (benchmark submissions).
    Filter,
    /// An amortized posterior of a static problem (step-5 submissions).
    Posterior,
}

impl World {
    /// The WIT world name.
    pub fn name(self) -> &'static str {
        match self {
            World::ForwardModel => "forward-model",
            World::ObsOperator => "obs-operator",
            World::Metric => "metric",
            World::StaticModel => "static-model",
            World::Filter => "filter",
            World::Posterior => "posterior",
        }
    }
    /// The interface (without version) the world exports.
    fn interface(self) -> &'static str {
        match self {
            World::ForwardModel => "geohost:plugin/forward",
            World::ObsOperator => "geohost:plugin/observe",
            World::Metric => "geohost:plugin/score",
            World::StaticModel => "geohost:plugin/simulate",
            World::Filter => "geohost:plugin/assimilate",
            World::Posterior => "geohost:plugin/infer",
        }
    }
    fn all() -> [World; 6] {
        [World::ForwardModel, World::ObsOperator, World::Metric, World::StaticModel, World::Filter, World::Posterior]
    }

    /// The world named `name` (as `World::name` spells it).
    pub fn parse(name: &str) -> Option<World> {
        World::all().into_iter().find(|w| w.name() == name)
    }
}

/// Interfaces a plugin may import. `types` carries only type definitions
/// (no functions), so importing it grants nothing.
const IMPORT_ALLOWLIST: &[&str] = &["geohost:plugin/types@0.1.0", "geohost:plugin/types@0.1.1"];

/// Everything that can go wrong with a plugin. Each message names the
/// plugin and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("plugin `{plugin}`: cannot read {path}: {source}")]
    Read { plugin: String, path: PathBuf, source: std::io::Error },
    #[error("plugin `{plugin}`: {path} is not a WebAssembly component: {reason}")]
    Malformed { plugin: String, path: PathBuf, reason: String },
    #[error("plugin `{plugin}`: {path} is a {found} plugin, not a {expected} plugin (it exports {exports}); use it where a {found} is expected")]
    WrongWorld { plugin: String, path: PathBuf, found: &'static str, expected: &'static str, exports: String },
    #[error("plugin `{plugin}`: {path} was built for {found}, but this host accepts {PACKAGE}@{PACKAGE_TRACK}.x (up to {PACKAGE_VERSION}); rebuild the plugin against this host's wit/ package")]
    WrongVersion { plugin: String, path: PathBuf, found: String },
    #[error("plugin `{plugin}`: {path} exports none of the {expected} world's interfaces (expected `{interface}@{PACKAGE_TRACK}.x`; it exports: {exports})")]
    NotAPlugin { plugin: String, path: PathBuf, expected: &'static str, interface: &'static str, exports: String },
    #[error("plugin `{plugin}`: {path} imports `{import}`, which the sandbox does not provide (plugins may import only: {allowed}); build it without WASI or host imports (target wasm32-unknown-unknown)")]
    ForbiddenImport { plugin: String, path: PathBuf, import: String, allowed: String },
    #[error("plugin `{plugin}`: could not instantiate: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin `{plugin}` rejected its config: {message}")]
    Config { plugin: String, message: String },
    #[error("plugin `{plugin}` returned an error from `{call}`: {message}")]
    Returned { plugin: String, call: &'static str, message: String },
    #[error("plugin `{plugin}` ran out of fuel in `{call}` (limit {fuel} instructions per call): it may loop forever; raise `limits.fuel` (or --fuel) if it needs more")]
    OutOfFuel { plugin: String, call: &'static str, fuel: u64 },
    #[error("plugin `{plugin}` used up its total fuel budget of {total} instructions in `{call}` (all its calls together); it needs a cheaper algorithm, or a contract with a larger `[budget] fuel_total`")]
    FuelBudget { plugin: String, call: &'static str, total: u64 },
    #[error("plugin `{plugin}` exceeded its wall-clock deadline of {deadline_ms} ms in `{call}` and was interrupted; raise `limits.deadline_ms` (or --deadline-ms) if it needs longer")]
    Deadline { plugin: String, call: &'static str, deadline_ms: u64 },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB in `{call}` (it asked for {asked_mib} MiB); raise `limits.memory_mib` (or --memory-mib) if it needs more")]
    Memory { plugin: String, call: &'static str, limit_mib: u64, asked_mib: u64 },
    #[error("plugin `{plugin}` overflowed its wasm stack ({stack_kib} KiB) in `{call}`: unbounded recursion? raise `limits.stack_kib` if it needs more")]
    StackOverflow { plugin: String, call: &'static str, stack_kib: u64 },
    #[error("plugin `{plugin}` trapped in `{call}`: {trap} ({hint})")]
    Trap { plugin: String, call: &'static str, trap: String, hint: &'static str },
    #[error("plugin `{plugin}`: `{call}` returned {found}, expected {expected}")]
    Shape { plugin: String, call: &'static str, found: String, expected: String },
    #[error("plugin `{plugin}`: `{call}` returned a non-finite value ({value}) for member {member}, index {index} at t = {time}; the model may have diverged")]
    NonFinite { plugin: String, call: &'static str, member: usize, index: usize, value: f64, time: f64 },
    #[error("plugin `{plugin}`: `{call}` returned a non-finite value ({value}) for row {row}, output {index}; check that row's parameters against the simulator's domain")]
    NonFiniteOutput { plugin: String, call: &'static str, row: usize, index: usize, value: f64 },
    #[error("plugin `{plugin}` cannot be called again: it failed earlier ({first}) and its instance was discarded")]
    Poisoned { plugin: String, first: String },
}

/// How much of a plugin's own text (an error message, its name) is kept.
pub const MAX_PLUGIN_TEXT: usize = 4096;

/// Text a plugin wrote (an error message, its name or version, the names
/// and units of its parameters, metrics and axes), made safe
/// to print and to keep: control characters other than newline and tab,
/// and the bidirectional overrides, are escaped (`\u{1b}`), since a
/// terminal acts on them (it clears the screen, rewrites lines, sets the
/// clipboard) and the overrides make text read other than it is; past
/// [`MAX_PLUGIN_TEXT`] characters the rest is cut, and counted.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PLUGIN_TEXT));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_PLUGIN_TEXT {
            out.push_str(&format!("… ({} more characters)", text.chars().count() - i));
            break;
        }
        let hidden = (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A compiled, checked component, ready to instantiate.
pub struct LoadedComponent {
    pub plugin: String,
    pub path: PathBuf,
    /// BLAKE3 of the component bytes.
    pub hash: blake3::Hash,
    pub size: usize,
    pub component: Component,
    pub from_cache: bool,
    /// What it was built from, as far as its bytes tell.
    pub language: Language,
}

/// The language a component was built from, as far as its bytes tell. It
/// decides what a trap most likely means, so messages can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust, or another language compiled to wasm directly.
    Rust,
    /// CPython in the component, built by componentize-py.
    Python,
    /// A JavaScript engine in the component, built by componentize-js.
    JavaScript,
}

impl Language {
    /// Recognise the interpreters that componentize-py and componentize-js
    /// embed by the names their runtimes export.
    pub fn of(bytes: &[u8]) -> Language {
        if memchr::memmem::find(bytes, b"componentize_py").is_some() {
            Language::Python
        } else if memchr::memmem::find(bytes, b"StarlingMonkey").is_some() || memchr::memmem::find(bytes, b"componentize-js").is_some() {
            Language::JavaScript
        } else {
            Language::Rust
        }
    }

    /// What an `unreachable` trap (or most other traps) of such a component means.
    pub fn trap_hint(self) -> &'static str {
        match self {
            Language::Rust => "a Rust plugin traps like this when it panics",
            Language::Python => {
                "a Python component (componentize-py) traps like this when it calls print, time, random or files, which the sandbox does not provide \
                 (WASI is stubbed out), or when an exception escapes an export: remove the call, and return errors (sdk/python's adapters turn exceptions into errors)"
            }
            Language::JavaScript => {
                "a JavaScript component (componentize-js) traps like this when it calls console.log, Date.now, Math.random or another host API, \
                 which the sandbox does not provide, or when an exception escapes an export"
            }
        }
    }
}

/// The engine, limits, compile cache and epoch ticker shared by all plugins
/// of a run.
pub struct Runtime {
    engine: Engine,
    limits: Limits,
    cache: Option<CompileCache>,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Build an engine for `limits`. `cache_dir` enables the compiled
    /// component cache ([`CompileCache::open`]: an error when it is not
    /// private to this user).
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        limits.validate()?;
        let cache = cache_dir.map(|dir| CompileCache::open(&dir)).transpose()?;
        let mut config = Config::new();
        config
            .consume_fuel(limits.fuel > 0)
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack_kib as usize * 1024)
            .cranelift_nan_canonicalization(limits.nan_canonicalization)
            .relaxed_simd_deterministic(true);
        // For plugin authors profiling their code: `perf record` then
        // names the compiled wasm functions (perf reads /tmp/perf-PID.map).
        if std::env::var_os("GEOHOST_PERFMAP").is_some() {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(&engine, ticker_stop.clone());
        Ok(Runtime { engine, limits, cache, ticker_stop })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from the cache) and check a component file
    /// against `world`. `plugin` is the name used in error messages.
    pub fn load(&self, plugin: &str, path: &Path, world: World) -> Result<LoadedComponent, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| SandboxError::Read { plugin: plugin.into(), path: path.into(), source })?;
        self.load_bytes(plugin, path, &bytes, world)
    }

    /// As [`Runtime::load`], for bytes already in memory (e.g. read from
    /// the registry); `path` names their origin in messages.
    pub fn load_bytes(&self, plugin: &str, path: &Path, bytes: &[u8], world: World) -> Result<LoadedComponent, SandboxError> {
        let malformed = |reason: String| SandboxError::Malformed { plugin: plugin.into(), path: path.into(), reason };
        check_header(bytes).map_err(&malformed)?;
        let hash = blake3::hash(bytes);
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.load(&self.engine, &hash, bytes),
            None => Component::new(&self.engine, bytes).map(|c| (c, false)),
        }
        .map_err(|e| malformed(format!("{e:#}")))?;
        check_world(&self.engine, &component, plugin, path, world)?;
        Ok(LoadedComponent { plugin: plugin.into(), path: path.into(), hash, size: bytes.len(), component, from_cache, language: Language::of(bytes) })
    }

    /// As [`Runtime::load_bytes`], but only from the compile cache: the
    /// component must have been compiled already (by
    /// [`isolate::compile_in_child`]); it is never compiled here.
    pub fn load_compiled(&self, plugin: &str, path: &Path, bytes: &[u8], world: World) -> Result<LoadedComponent, SandboxError> {
        let malformed = |reason: String| SandboxError::Malformed { plugin: plugin.into(), path: path.into(), reason };
        check_header(bytes).map_err(&malformed)?;
        let hash = blake3::hash(bytes);
        let component = self.cache.as_ref().and_then(|cache| cache.get(&self.engine, &hash)).ok_or_else(|| {
            malformed("no compiled form in the compile cache (the isolated compile did not leave one); refusing to compile it in the host process".into())
        })?;
        check_world(&self.engine, &component, plugin, path, world)?;
        Ok(LoadedComponent { plugin: plugin.into(), path: path.into(), hash, size: bytes.len(), component, from_cache: true, language: Language::of(bytes) })
    }

    /// A fresh store with this runtime's limits.
    fn store(&self) -> Store<StoreLimiter> {
        let mut store = Store::new(&self.engine, StoreLimiter::new(&self.limits));
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store
    }

    /// A linker for plugin worlds: it defines nothing, since plugins import
    /// nothing but type-only interfaces.
    fn linker(&self) -> Linker<StoreLimiter> {
        Linker::new(&self.engine)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advance the engine epoch every [`EPOCH_TICK`] until stopped or the
/// engine is gone. Without this thread, epoch deadlines would never fire.
fn spawn_ticker(engine: &Engine, stop: Arc<AtomicBool>) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("geohost-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Distinguish "not wasm at all" and "a core module" from a component
/// before handing bytes to the compiler, for a clearer message.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("the file does not start with the wasm magic bytes `\\0asm`".into());
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => {
            Err("it is a core wasm module, not a component; link it with wasm-component-ld (plugins/build.sh does) or run `wasm-tools component new`".into())
        }
        other => Err(format!("unknown wasm version/layer bytes {other:02x?}")),
    }
}

fn check_world(engine: &Engine, component: &Component, plugin: &str, path: &Path, world: World) -> Result<(), SandboxError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let listed = || if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
    // Any 0.1.x export: wasmtime finds a 0.1.0 export under the 0.1.1 name
    // (one semver track), and the worlds 0.1.0 had are unchanged.
    let on_track = |e: &String| {
        e.strip_prefix(world.interface())
            .and_then(|rest| rest.strip_prefix('@'))
            .and_then(|v| v.strip_prefix(PACKAGE_TRACK))
            .and_then(|v| v.strip_prefix('.'))
            .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
    };
    if !exports.iter().any(on_track) {
        let versioned = format!("{}@", world.interface());
        if let Some(found) = exports.iter().find(|e| e.starts_with(&versioned) || *e == world.interface()) {
            let version = found.split_once('@').map(|(_, v)| v).unwrap_or("an unversioned package");
            return Err(SandboxError::WrongVersion { plugin: plugin.into(), path: path.into(), found: format!("{PACKAGE}@{version}") });
        }
        if let Some(other) = World::all().into_iter().find(|w| exports.iter().any(|e| e.starts_with(w.interface()))) {
            return Err(SandboxError::WrongWorld { plugin: plugin.into(), path: path.into(), found: other.name(), expected: world.name(), exports: listed() });
        }
        return Err(SandboxError::NotAPlugin {
            plugin: plugin.into(),
            path: path.into(),
            expected: world.name(),
            interface: world.interface(),
            exports: listed(),
        });
    }
    for (import, _) in ty.imports(engine) {
        if !IMPORT_ALLOWLIST.contains(&import) {
            return Err(SandboxError::ForbiddenImport {
                plugin: plugin.into(),
                path: path.into(),
                import: import.to_string(),
                allowed: IMPORT_ALLOWLIST.join(", "),
            });
        }
    }
    Ok(())
}

/// One instantiated plugin: its store and bindings, plus the bookkeeping
/// that turns failures into [`SandboxError`]s. Shared by the world adapters.
struct Instance<B> {
    plugin: String,
    language: Language,
    store: Store<StoreLimiter>,
    bindings: B,
    limits: Limits,
    /// Set after a trap or exhausted limit: the instance must not be reused.
    poisoned: Option<String>,
    /// Fuel left for all calls together (`None`: only the per-call limit).
    fuel_budget: Option<u64>,
    /// The budget as set, for messages.
    fuel_total: Option<u64>,
    /// Fuel armed for the call in progress.
    armed: u64,
    used: Accounting,
}

/// A total fuel budget shared by several instances of one component (e.g.
/// a submission's runs): `spent` of `total` went to earlier instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuelBudget {
    pub total: u64,
    pub spent: u64,
}

/// What an instance has consumed so far. Fuel and memory depend only on the
/// component and its inputs (wasm execution is deterministic, NaNs
/// canonicalised), so they are the same on every machine and every rerun.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accounting {
    /// Fuel (≈ wasm instructions) consumed by all calls, `init` included.
    pub fuel: u64,
    /// The largest linear memory the instance grew to, in bytes.
    pub peak_memory_bytes: u64,
    /// Calls made (`init` included).
    pub calls: u64,
}

impl<B> Instance<B> {
    fn new(
        runtime: &Runtime,
        loaded: &LoadedComponent,
        instantiate: impl FnOnce(&mut Store<StoreLimiter>, &Component, &Linker<StoreLimiter>) -> wasmtime::Result<B>,
    ) -> Result<Self, SandboxError> {
        let mut store = runtime.store();
        let limits = *runtime.limits();
        arm(&mut store, &limits, limits.fuel);
        let bindings = instantiate(&mut store, &loaded.component, &runtime.linker())
            .map_err(|e| SandboxError::Instantiate { plugin: loaded.plugin.clone(), reason: format!("{e:#}") })?;
        let armed = limits.fuel;
        Ok(Instance {
            plugin: loaded.plugin.clone(),
            language: loaded.language,
            store,
            bindings,
            limits,
            poisoned: None,
            fuel_budget: None,
            fuel_total: None,
            armed,
            used: Accounting::default(),
        })
    }

    /// Cap the fuel of all later calls together at what is left of a
    /// total budget (`total`, of which `spent` went to earlier instances).
    fn set_fuel_budget(&mut self, budget: Option<FuelBudget>) {
        (self.fuel_budget, self.fuel_total) = match budget {
            Some(b) => (Some(b.total.saturating_sub(b.spent)), Some(b.total)),
            None => (None, None),
        };
    }

    fn accounting(&self) -> Accounting {
        Accounting { peak_memory_bytes: self.store.data().peak_memory as u64, ..self.used }
    }

    /// Refill fuel (the per-call limit, or what is left of the total
    /// budget if that is less) and reset the deadline before a call.
    fn arm(&mut self) {
        self.armed = match self.fuel_budget {
            Some(left) if self.limits.fuel > 0 => left.min(self.limits.fuel),
            _ => self.limits.fuel,
        };
        arm(&mut self.store, &self.limits, self.armed);
    }

    /// Count the fuel the last call burnt against the budget.
    fn settle(&mut self) {
        self.used.calls += 1;
        if self.limits.fuel > 0 {
            let burnt = self.armed.saturating_sub(self.store.get_fuel().unwrap_or(0));
            self.used.fuel += burnt;
            if let Some(left) = &mut self.fuel_budget {
                *left = left.saturating_sub(burnt);
            }
        }
    }

    /// Run one call under fresh limits. `Ok(Err(msg))` from the plugin (a
    /// WIT error result) becomes [`SandboxError::Returned`]; a trap poisons
    /// the instance.
    fn call<T>(&mut self, call: &'static str, f: impl FnOnce(&B, &mut Store<StoreLimiter>) -> wasmtime::Result<Result<T, String>>) -> Result<T, SandboxError> {
        if let Some(first) = &self.poisoned {
            return Err(SandboxError::Poisoned { plugin: self.plugin.clone(), first: first.clone() });
        }
        self.arm();
        let result = f(&self.bindings, &mut self.store);
        self.settle();
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(SandboxError::Returned { plugin: self.plugin.clone(), call, message: printable(&message) }),
            Err(error) => {
                let error = self.classify(call, error);
                self.poisoned = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Call `init`: an error result there means the plugin refused its
    /// config, reported as [`SandboxError::Config`].
    fn init<T>(&mut self, f: impl FnOnce(&B, &mut Store<StoreLimiter>) -> wasmtime::Result<Result<T, String>>) -> Result<T, SandboxError> {
        self.call("init", f).map_err(|e| match e {
            SandboxError::Returned { plugin, message, .. } => SandboxError::Config { plugin, message },
            other => other,
        })
    }

    fn classify(&mut self, call: &'static str, error: wasmtime::Error) -> SandboxError {
        let plugin = self.plugin.clone();
        if let Some(asked) = self.store.data_mut().refused_memory.take() {
            return SandboxError::Memory { plugin, call, limit_mib: self.limits.memory_mib, asked_mib: (asked as u64).div_ceil(1 << 20) };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) if self.armed < self.limits.fuel => SandboxError::FuelBudget { plugin, call, total: self.fuel_total.unwrap_or(0) },
            Some(Trap::OutOfFuel) => SandboxError::OutOfFuel { plugin, call, fuel: self.limits.fuel },
            Some(Trap::Interrupt) => SandboxError::Deadline { plugin, call, deadline_ms: self.limits.deadline_ms },
            Some(Trap::StackOverflow) => SandboxError::StackOverflow { plugin, call, stack_kib: self.limits.stack_kib },
            Some(Trap::MemoryOutOfBounds) => SandboxError::Trap {
                plugin,
                call,
                trap: Trap::MemoryOutOfBounds.to_string(),
                hint: "a Rust plugin traps like this when its stack, which lives in linear memory, overflows: unbounded recursion? Or a bad pointer",
            },
            Some(trap) => SandboxError::Trap { plugin, call, trap: trap.to_string(), hint: self.language.trap_hint() },
            // The message may quote the plugin's own function names.
            None => SandboxError::Trap { plugin, call, trap: printable(&format!("{error:#}")), hint: self.language.trap_hint() },
        }
    }
}

/// Set `fuel` and reset the deadline before a call. The next tick may
/// come at once, so the deadline is one tick more than the limit's: a
/// call gets at least `deadline_ms`, and at most one tick more.
fn arm(store: &mut Store<StoreLimiter>, limits: &Limits, fuel: u64) {
    if limits.fuel > 0 {
        store.set_fuel(fuel).expect("fuel is enabled on this engine");
    }
    let ticks = limits.deadline().as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1;
    store.set_epoch_deadline(ticks);
}

/// Serialize a plugin config (a TOML table from the plugin-set) to the
/// JSON document `init` takes.
pub fn config_json(config: &toml::Table) -> String {
    serde_json::to_string(config).expect("TOML values always serialize to JSON")
}
