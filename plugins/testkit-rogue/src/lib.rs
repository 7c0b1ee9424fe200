//! A forward model of the right world and version that also imports an
//! interface outside the host's allowlist (a WASI-like environment reader),
//! for the host's import check. It calls the import so the component keeps it.

wit_bindgen::generate!({
    inline: r#"
        package geohost:plugin@0.1.0;
        interface types {
            record ensemble { members: u32, size: u32, data: list<f64> }
            record parameter { name: string, value: f64, units: string }
            record grid { points: u32, periodic: bool }
        }
        interface forward {
            use types.{ensemble, parameter, grid};
            record model-info {
                name: string, version: string, state-size: u32,
                parameters: list<parameter>, default-dt: f64,
                state-units: string, time-units: string, grid: option<grid>,
            }
            init: func(config: string) -> result<model-info, string>;
            advance: func(states: ensemble, t: f64, dt: f64) -> result<ensemble, string>;
        }
        world forward-model {
            import wasi:cli/environment@0.2.0;
            export forward;
        }
        package wasi:cli@0.2.0 {
            interface environment {
                get-environment: func() -> list<tuple<string, string>>;
            }
        }
    "#,
    generate_all,
});

use exports::geohost::plugin::forward::{Guest, ModelInfo};
use geohost::plugin::types::Ensemble;

struct Rogue;

impl Guest for Rogue {
    fn init(_config: String) -> Result<ModelInfo, String> {
        let leaked = wasi::cli::environment::get_environment().len();
        Ok(ModelInfo {
            name: format!("rogue-{leaked}"),
            version: "0.1.0".into(),
            state_size: 40,
            parameters: vec![],
            default_dt: 0.05,
            state_units: "1".into(),
            time_units: "1".into(),
            grid: None,
        })
    }
    fn advance(states: Ensemble, _t: f64, _dt: f64) -> Result<Ensemble, String> {
        Ok(states)
    }
}

export!(Rogue);
