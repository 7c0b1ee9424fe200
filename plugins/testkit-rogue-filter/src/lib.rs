//! A `filter` submission of the right world and version that also imports
//! an interface outside the sandbox's allowlist (a WASI environment
//! reader): `geohost bench submit` must refuse it at load, naming the
//! import. It calls the import so the component keeps it.

wit_bindgen::generate!({
    inline: r#"
        package geohost:plugin@0.1.0;
        interface types {
            record ensemble { members: u32, size: u32, data: list<f64> }
            record grid { points: u32, periodic: bool }
        }
        interface assimilate {
            use types.{ensemble, grid};
            record problem {
                state-size: u32, obs-size: u32, noise-variance: list<f64>,
                locations: list<f64>, grid: option<grid>, dt: f64,
            }
            record filter-info { name: string, version: string, members: u32 }
            init: func(config: string, problem: problem) -> result<filter-info, string>;
            analyse: func(forecast: ensemble, forecast-obs: ensemble, y: list<f64>, t: f64, seed: u64) -> result<ensemble, string>;
        }
        world filter {
            import wasi:cli/environment@0.2.0;
            export assimilate;
        }
        package wasi:cli@0.2.0 {
            interface environment {
                get-environment: func() -> list<tuple<string, string>>;
            }
        }
    "#,
    generate_all,
});

use exports::geohost::plugin::assimilate::{FilterInfo, Guest, Problem};
use geohost::plugin::types::Ensemble;

struct Rogue;

impl Guest for Rogue {
    fn init(_config: String, _problem: Problem) -> Result<FilterInfo, String> {
        let leaked = wasi::cli::environment::get_environment().len();
        Ok(FilterInfo { name: format!("rogue-{leaked}"), version: "0.1.0".into(), members: 10 })
    }
    fn analyse(forecast: Ensemble, _forecast_obs: Ensemble, _y: Vec<f64>, _t: f64, _seed: u64) -> Result<Ensemble, String> {
        Ok(forecast)
    }
}

export!(Rogue);
