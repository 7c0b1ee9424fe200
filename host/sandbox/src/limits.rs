//! Per-call resource limits for untrusted plugins.
//!
//! Every call into a plugin runs with a fresh instruction budget (fuel), a
//! wall-clock deadline (epoch interruption, driven by the runtime's ticker
//! thread), a cap on linear memory and tables (a [`ResourceLimiter`]), and
//! the engine's maximum wasm stack. Each exhausted limit maps to its own
//! [`super::SandboxError`] variant.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Limits applied to every plugin call. Defaults suit the reference models
/// with a wide margin; a plugin-set's `[limits]` table or the command line
/// can change them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Instruction budget per call (wasmtime fuel units, roughly one per
    /// wasm instruction); 0 disables fuel metering.
    pub fuel: u64,
    /// Wall-clock deadline per call, in milliseconds.
    pub deadline_ms: u64,
    /// Cap on a plugin's linear memory, in MiB.
    pub memory_mib: u64,
    /// Maximum wasm stack, in KiB.
    pub stack_kib: u64,
    /// Replace every NaN a float instruction produces by the one canonical
    /// NaN (wasmtime's `cranelift_nan_canonicalization`), so that a plugin
    /// cannot see hardware-dependent NaN signs and payloads and gives the
    /// same bits on every machine. On by default, and always on when
    /// scoring (`geohost bench` takes no `[limits]`). A plugin-set may turn
    /// it off for a run of plugins it trusts not to look inside NaNs: it
    /// costs about a compare and a blend per float operation (half of
    /// Lorenz-96's sandboxed step; see `geohost perf da`).
    pub nan_canonicalization: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { fuel: 2_000_000_000, deadline_ms: 10_000, memory_mib: 512, stack_kib: 512, nan_canonicalization: true }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(1 << 20)
    }
    /// Reject limits that would make every call fail or disable a guard.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.deadline_ms > 0, "limits.deadline_ms must be positive");
        anyhow::ensure!(self.memory_mib > 0, "limits.memory_mib must be positive");
        anyhow::ensure!((16..=1 << 20).contains(&self.stack_kib), "limits.stack_kib must be between 16 and 1048576, got {}", self.stack_kib);
        Ok(())
    }
}

/// Store data: the memory/table limiter, which remembers a refused growth
/// so the resulting trap can be reported as a memory-limit error.
pub struct StoreLimiter {
    max_memory: usize,
    max_table_elements: usize,
    /// Bytes asked for by the last refused memory growth.
    pub refused_memory: Option<usize>,
    /// The largest memory size granted so far, in bytes.
    pub peak_memory: usize,
}

impl StoreLimiter {
    pub fn new(limits: &Limits) -> Self {
        StoreLimiter { max_memory: limits.memory_bytes(), max_table_elements: 1 << 20, refused_memory: None, peak_memory: 0 }
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.refused_memory = Some(desired);
            // An error (rather than Ok(false)) traps at the growth itself,
            // so the plugin cannot carry on with a failed allocation.
            return Err(wasmtime::Error::msg(format!("memory limit reached: asked for {desired} bytes, the limit is {}", self.max_memory)));
        }
        self.peak_memory = self.peak_memory.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}
