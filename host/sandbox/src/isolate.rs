//! Compile isolation: validating and compiling an untrusted component in a
//! child process under address-space and CPU-time limits.
//!
//! Denial of service at compile time (a function body that makes Cranelift
//! take minutes or gigabytes) is outside wasmtime's security model, so a
//! component from a submitter is never compiled in the host process. The
//! parent ([`compile_in_child`]) runs its own executable's hidden
//! subcommand, which calls [`child_main`]: that sets `RLIMIT_AS` and
//! `RLIMIT_CPU` on itself, then loads the component exactly as
//! [`super::Runtime::load`] does, which leaves the compiled form in the
//! compile cache. The parent then loads it from the cache only
//! ([`super::Runtime::load_compiled`]), never compiling it itself; a bomb
//! costs one child, not the host.
//!
//! Invariant: the child builds its engine from the same [`Limits`] as the
//! parent's runtime, so the cache entry it writes is the one the parent
//! looks up (the cache key includes the engine's compatibility hash).

use super::{Limits, Runtime, World};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Limits of the compiling child.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompileLimits {
    /// Address space of the child, in MiB.
    pub memory_mib: u64,
    /// CPU time of the child, in seconds.
    pub cpu_s: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits { memory_mib: 4096, cpu_s: 60 }
    }
}

/// The name of the hidden subcommand the executable must route to
/// [`child_main`].
pub const SUBCOMMAND: &str = "__compile-isolated";

/// Why an isolated compile failed.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// The component was refused (malformed, wrong world, a forbidden
    /// import): the child's message.
    #[error("{0}")]
    Refused(String),
    /// The child was killed or gave up: a compile-time bomb, or limits too
    /// tight for an honest component.
    #[error("compiling {file} exceeded the compile limits ({memory_mib} MiB of address space, {cpu_s} s of CPU): {how}; the component is refused (a smaller component, or a contract with larger `[budget] compile_memory_mib` / `compile_cpu_s`, is needed)")]
    Limits { file: String, memory_mib: u64, cpu_s: u64, how: String },
    #[error("cannot run the compiling child process {exe}: {reason}")]
    Spawn { exe: String, reason: String },
}

/// Compile `file` for `world` in a child process (`exe SUBCOMMAND …`),
/// leaving the compiled component in `cache_dir`'s compile cache.
pub fn compile_in_child(exe: &Path, file: &Path, world: World, limits: &Limits, cache_dir: &Path, compile: CompileLimits) -> Result<(), IsolateError> {
    let limits_json = serde_json::to_string(limits).expect("limits serialize");
    let compile_json = serde_json::to_string(&compile).expect("compile limits serialize");
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(world.name())
        .arg(file)
        .arg(cache_dir)
        .arg(limits_json)
        .arg(compile_json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Fewer malloc arenas: each reserves 64 MiB of address space per
        // thread, which would count against RLIMIT_AS on a many-core host.
        .env("MALLOC_ARENA_MAX", "2")
        .spawn()
        .map_err(|e| IsolateError::Spawn { exe: exe.display().to_string(), reason: e.to_string() })?;
    // CPU time bounds a spinning compile; the wall clock also bounds one
    // that sleeps or waits on memory.
    let wall = Duration::from_secs(compile.cpu_s.saturating_mul(2) + 10);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > wall => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(IsolateError::Limits {
                    file: file.display().to_string(),
                    memory_mib: compile.memory_mib,
                    cpu_s: compile.cpu_s,
                    how: format!("still compiling after {} s of wall time; killed", wall.as_secs()),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(IsolateError::Spawn { exe: exe.display().to_string(), reason: e.to_string() }),
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read as _;
        let _ = pipe.by_ref().take(64 * 1024).read_to_string(&mut stderr);
    }
    let stderr = stderr.trim().to_string();
    match status.code() {
        Some(0) => Ok(()),
        Some(REFUSED) => Err(IsolateError::Refused(stderr)),
        code => {
            let how = match (code, signal_of(&status)) {
                (_, Some(libc::SIGXCPU)) | (_, Some(libc::SIGKILL)) => "the child ran out of CPU time or was killed".to_string(),
                (_, Some(sig)) => format!("the child died of signal {sig} (an allocation beyond its address space aborts it)"),
                (Some(code), None) => {
                    format!("the child exited with status {code}{}", if stderr.is_empty() { String::new() } else { format!(": {}", last_line(&stderr)) })
                }
                (None, None) => "the child ended abnormally".to_string(),
            };
            Err(IsolateError::Limits { file: file.display().to_string(), memory_mib: compile.memory_mib, cpu_s: compile.cpu_s, how })
        }
    }
}

/// Exit status of a child that refused the component (its message is on
/// stderr).
const REFUSED: i32 = 3;

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s)
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// The child's side: `args` are the world, the file, the cache directory,
/// the runtime limits and the compile limits, as [`compile_in_child`]
/// passes them. Returns the process exit status.
pub fn child_main(args: &[String]) -> i32 {
    let [world, file, cache_dir, limits, compile] = args else {
        eprintln!("{SUBCOMMAND}: internal subcommand; expected WORLD FILE CACHE_DIR LIMITS COMPILE_LIMITS");
        return 2;
    };
    let (Some(world), Ok(limits), Ok(compile)) = (World::parse(world), serde_json::from_str::<Limits>(limits), serde_json::from_str::<CompileLimits>(compile))
    else {
        eprintln!("{SUBCOMMAND}: malformed arguments");
        return 2;
    };
    if let Err(e) = restrict(compile) {
        eprintln!("{SUBCOMMAND}: cannot set the compile limits: {e}");
        return 2;
    }
    let runtime = match Runtime::new(limits, Some(cache_dir.into())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{SUBCOMMAND}: {e:#}");
            return 2;
        }
    };
    match runtime.load("submission", Path::new(file), world) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            REFUSED
        }
    }
}

/// Limit this process's address space and CPU time.
#[cfg(unix)]
fn restrict(compile: CompileLimits) -> std::io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit reads a valid rlimit struct; it affects only this process.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let bytes = compile.memory_mib.saturating_mul(1 << 20);
    set(libc::RLIMIT_AS, bytes, bytes)?;
    set(libc::RLIMIT_CPU, compile.cpu_s, compile.cpu_s + 1)
}

#[cfg(not(unix))]
fn restrict(_: CompileLimits) -> std::io::Result<()> {
    Err(std::io::Error::other("compile isolation needs a Unix host"))
}
