//! One module per `geohost` command (as wasmtime's `src/commands/`), each a
//! thin layer over the library crates; the options they share are here.

pub mod bench;
pub mod export;
pub mod inspect;
pub mod matrix;
pub mod new;
pub mod perf;
pub mod posterior;
pub mod registry;
pub mod report;
pub mod run;
pub mod train;

use anyhow::Result;
use clap::Args;
use geohost_cycle::progress::{Progress, Silent};
use geohost_sandbox::{CompileCache, Limits, Runtime};
use indicatif::{ProgressBar, ProgressStyle};

/// Sandbox limits and caching (override the plugin-set's `[limits]`).
#[derive(Args)]
pub struct SandboxArgs {
    /// Instruction budget per plugin call (0 = unmetered).
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline per plugin call, in ms.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Linear-memory cap per plugin, in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Maximum wasm stack, in KiB.
    #[arg(long)]
    stack_kib: Option<u64>,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
}

impl SandboxArgs {
    /// Whether --no-cache was given.
    pub fn no_cache(&self) -> bool {
        self.no_cache
    }

    pub fn runtime(&self, base: Limits) -> Result<Runtime> {
        let limits = Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            memory_mib: self.memory_mib.unwrap_or(base.memory_mib),
            stack_kib: self.stack_kib.unwrap_or(base.stack_kib),
            // Only a plugin-set's `[limits]` turns it off, so that the
            // recorded plugin-set says so; scoring always keeps it.
            nan_canonicalization: base.nan_canonicalization,
        };
        let cache = if self.no_cache { None } else { CompileCache::default_dir() };
        Runtime::new(limits, cache)
    }
}

/// A progress bar for one task.
struct Bar {
    bar: ProgressBar,
    total: usize,
}

impl Progress for Bar {
    fn tick(&mut self, k: usize) {
        self.bar.set_position(k as u64 + 1);
        if k + 1 >= self.total {
            self.bar.finish();
        }
    }
    fn message(&mut self, message: String) {
        self.bar.set_message(message);
    }
    fn finish(&mut self) {
        self.bar.finish();
    }
}

pub fn progress_factory(quiet: bool) -> impl FnMut(&str, usize) -> Box<dyn Progress> {
    move |label, total| {
        if quiet {
            return Box::new(Silent);
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:<36} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}").expect("valid template").progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(Bar { bar, total })
    }
}
