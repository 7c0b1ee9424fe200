//! A deliberately misbehaving `filter` submission, for the tests of
//! `geohost bench submit`. It behaves (returns the forecast unchanged)
//! until cycle `at` (0-based, default 0), then misbehaves by `mode`:
//! - `"ok"`: never misbehaves
//! - `"spin"`: `analyse` never returns (per-call fuel)
//! - `"hog"`: `analyse` allocates without bound (memory)
//! - `"recurse"`: `analyse` recurses without bound (stack)
//! - `"members"`: returns one member too few
//! - `"nan"`: returns a NaN in member 0
//! - `"trap"`: panics (a wasm trap)
//! - `"burn"`: every call burns `work` loop iterations (default 10⁶), so a
//!   long run exhausts a small total fuel budget late, never one call
//! - `"init-error"`: refuses its config
//! - `"shout"`: names itself with a terminal colour code, and `analyse`
//!   returns an error of 100,000 characters that starts with terminal
//!   control sequences (clear the screen, set the clipboard)
//!
//! Config keys: `mode`, `at`, `N` (default 10), `work`.

use geohost_sdk::{Config, Filter, FilterInfo, Members, Problem, SplitMix64};
use std::cell::Cell;

thread_local! {
    static CYCLE: Cell<usize> = const { Cell::new(0) };
}

struct Hostile {
    mode: String,
    at: usize,
    n: usize,
    work: u64,
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[depth as usize % 256] = depth as u8;
    let mut local = [0u8; 256];
    local[0] = buf[0];
    recurse(std::hint::black_box(depth + 1), &mut local) + local[1] as u64
}

impl Filter for Hostile {
    fn init(config: &Config, _problem: &Problem) -> Result<Self, String> {
        config.allow_only(&["mode", "at", "N", "work"])?;
        let mode = config.str_or("mode", "ok")?;
        if mode == "init-error" {
            return Err("refusing to start: mode is init-error".into());
        }
        Ok(Hostile { mode, at: config.usize_or("at", 0)?, n: config.usize_or("N", 10)?, work: config.usize_or("work", 1_000_000)? as u64 })
    }

    fn info(&self) -> FilterInfo {
        let name = if self.mode == "shout" { "testkit-hostile-filter\x1b[31m" } else { "testkit-hostile-filter" };
        FilterInfo { name: name.into(), version: env!("CARGO_PKG_VERSION").into(), members: self.n }
    }

    fn analyse(&mut self, x: &mut Members<'_>, _hx: &[f64], _y: &[f64], _t: f64, _rng: &mut SplitMix64) -> Result<(), String> {
        let k = CYCLE.with(|c| c.replace(c.get() + 1));
        if self.mode == "burn" {
            let mut acc = 0u64;
            for i in 0..self.work {
                acc = std::hint::black_box(acc.wrapping_add(i));
            }
            x.data[0] += (acc & 1) as f64 * 0.0;
            return Ok(());
        }
        if k < self.at {
            return Ok(());
        }
        match self.mode.as_str() {
            "spin" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[0] = 1;
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            "recurse" => {
                let mut buf = [0u8; 256];
                x.data[0] = recurse(0, &mut buf) as f64;
            }
            "nan" => x.data[0] = f64::NAN,
            "trap" => panic!("hostile filter: deliberate panic at cycle {k}"),
            "shout" => return Err(format!("\x1b[2J\x1b]52;c;cHduZWQ=\x07\u{202e}cleared{}", "!".repeat(100_000))),
            _ => {}
        }
        Ok(())
    }
}

// "members" breaks the WIT contract itself (a short ensemble), which the
// SDK's trait cannot express: wrap the generated export by hand.
mod export {
    use super::Hostile;
    use geohost_sdk::bindings::filter::exports::geohost::plugin::assimilate::{FilterInfo, Guest, Problem};
    use geohost_sdk::bindings::filter::geohost::plugin::types::Ensemble;
    use geohost_sdk::glue::FilterSlot;

    thread_local! {
        static SLOT: FilterSlot<Hostile> = const { FilterSlot::new() };
        static SHORT_AT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    struct Export;

    impl Guest for Export {
        fn init(config: String, problem: Problem) -> Result<FilterInfo, String> {
            let parsed = geohost_sdk::Config::parse(&config)?;
            if parsed.str_or("mode", "ok")? == "members" {
                SHORT_AT.with(|s| s.set(Some(parsed.usize_or("at", 0).unwrap_or(0))));
            }
            SLOT.with(|slot| geohost_sdk::glue::filter_init::<Hostile>(slot, config, problem))
        }
        fn analyse(forecast: Ensemble, forecast_obs: Ensemble, y: Vec<f64>, t: f64, seed: u64) -> Result<Ensemble, String> {
            let k = CALLS.with(|c| c.replace(c.get() + 1));
            let mut out = SLOT.with(|slot| geohost_sdk::glue::filter_analyse::<Hostile>(slot, forecast, forecast_obs, y, t, seed))?;
            if SHORT_AT.with(|s| s.get()).is_some_and(|at| k >= at) {
                out.members -= 1;
                let keep = out.members as usize * out.size as usize;
                out.data.truncate(keep);
            }
            Ok(out)
        }
    }

    geohost_sdk::bindings::filter::export!(Export);
}
