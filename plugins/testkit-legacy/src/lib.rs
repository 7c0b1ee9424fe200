//! A forward model built against the original `geohost:plugin@0.1.0` WIT
//! (before `spatial` was added in 0.1.1), as every plugin published before
//! then was: the host must keep loading and running it. The model is a
//! damping `x ← x·exp(−dt)` on a 40-point ring, so a test can check its output.

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
            export forward;
        }
    "#,
});

use exports::geohost::plugin::forward::{Guest, ModelInfo};
use geohost::plugin::types::{Ensemble, Grid};

struct Legacy;

impl Guest for Legacy {
    fn init(_config: String) -> Result<ModelInfo, String> {
        Ok(ModelInfo {
            name: "testkit-legacy".into(),
            version: "0.1.0".into(),
            state_size: 40,
            parameters: vec![],
            default_dt: 0.05,
            state_units: "1".into(),
            time_units: "1".into(),
            grid: Some(Grid { points: 40, periodic: true }),
        })
    }
    fn advance(mut states: Ensemble, _t: f64, dt: f64) -> Result<Ensemble, String> {
        let decay = (-dt).exp();
        states.data.iter_mut().for_each(|v| *v *= decay);
        Ok(states)
    }
}

export!(Legacy);
