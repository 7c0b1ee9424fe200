//! A forward model built against a *future* contract version
//! (`geohost:plugin@0.2.0`), for the host's version check.

wit_bindgen::generate!({
    inline: r#"
        package geohost:plugin@0.2.0;
        interface forward {
            init: func(config: string) -> result<u32, string>;
            advance: func(states: list<f64>, t: f64, dt: f64) -> result<list<f64>, string>;
        }
        world forward-model {
            export forward;
        }
    "#,
});

struct Future;

impl exports::geohost::plugin::forward::Guest for Future {
    fn init(_config: String) -> Result<u32, String> {
        Ok(40)
    }
    fn advance(states: Vec<f64>, _t: f64, _dt: f64) -> Result<Vec<f64>, String> {
        Ok(states)
    }
}

export!(Future);
