//! A deliberately misbehaving forward model, for the sandbox tests.
//!
//! It implements the WIT interface directly (not through the SDK traits) so
//! that it can break the contract in ways the SDK would prevent. Config:
//! `size` (default 40) and `mode`:
//! - `"ok"`: identity model (behaves)
//! - `"init-error"`: `init` returns an error
//! - `"trap"`: `advance` panics (a wasm trap)
//! - `"spin"`: `advance` never returns
//! - `"hog"`: `advance` allocates without bound
//! - `"recurse"`: `advance` recurses without bound
//! - `"short"`: `advance` returns fewer values than it was given
//! - `"nan"`: `advance` returns NaNs
//! - `"error"`: `advance` returns an error result
//! - `"nan-sign"`: `advance` returns the sign (±1) of a NaN it makes as 0/0,
//!   which is the hardware's unless the host canonicalises NaNs
//! - `"nan-many"`: `advance` returns NaNs when given more than one member
//!   (a single truth run behaves; an ensemble split over processes fails
//!   on some of them only)
//! - `"bad-layout"`: behaves, but its `spatial` layout has one point fewer
//!   than the state (the host must refuse it at load)

use geohost_sdk::bindings::forward_model::exports::geohost::plugin::forward::{Guest, ModelInfo};
use geohost_sdk::bindings::forward_model::exports::geohost::plugin::spatial;
use geohost_sdk::bindings::forward_model::geohost::plugin::types::{Ensemble, Grid};
use geohost_sdk::Config;
use std::cell::RefCell;

thread_local! {
    static MODE: RefCell<String> = RefCell::new(String::new());
    static SIZE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[depth as usize % 256] = depth as u8;
    let mut local = [0u8; 256];
    local[0] = buf[0];
    recurse(std::hint::black_box(depth + 1), &mut local) + local[1] as u64
}

impl Guest for Hostile {
    fn init(config: String) -> Result<ModelInfo, String> {
        let config = Config::parse(&config)?;
        config.allow_only(&["mode", "size"])?;
        let mode = config.str_or("mode", "ok")?;
        let size = config.usize_or("size", 40)? as u32;
        if mode == "init-error" {
            return Err("refusing to start: mode is init-error".into());
        }
        MODE.with(|m| *m.borrow_mut() = mode);
        SIZE.with(|s| s.set(size as usize));
        Ok(ModelInfo {
            name: "testkit-hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: size,
            parameters: vec![],
            default_dt: 0.05,
            state_units: "1".into(),
            time_units: "1".into(),
            grid: Some(Grid { points: size, periodic: true }),
        })
    }

    fn advance(mut states: Ensemble, _t: f64, _dt: f64) -> Result<Ensemble, String> {
        let mode = MODE.with(|m| m.borrow().clone());
        match mode.as_str() {
            "trap" => panic!("hostile plugin: deliberate panic"),
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
                let d = recurse(0, &mut buf);
                states.data[0] = d as f64;
            }
            "short" => {
                states.data.truncate(states.data.len() / 2);
            }
            "nan" => {
                states.data.iter_mut().for_each(|v| *v = f64::NAN);
            }
            "nan-many" if states.members > 1 => {
                states.data.iter_mut().for_each(|v| *v = f64::NAN);
            }
            "error" => return Err("deliberate error result".into()),
            "nan-sign" => {
                let nan = std::hint::black_box(0.0f64) / std::hint::black_box(0.0f64);
                states.data.iter_mut().for_each(|v| *v = 1.0f64.copysign(nan));
            }
            _ => {}
        }
        Ok(states)
    }
}

impl spatial::Guest for Hostile {
    fn state_layout() -> Option<spatial::Layout> {
        let size = SIZE.with(|s| s.get());
        (MODE.with(|m| m.borrow().clone()) == "bad-layout").then(|| spatial::Layout {
            dims: vec![spatial::Dimension { name: "x".into(), coordinates: (1..size).map(|i| i as f64).collect(), period: None }],
            metric: spatial::Metric::Euclidean,
            units: "grid points".into(),
        })
    }
}

geohost_sdk::bindings::forward_model::export!(Hostile);
