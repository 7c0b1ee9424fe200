//! The `metric` world: verification metrics computed in the sandbox.

use super::{Instance, LoadedComponent, Runtime, SandboxError};
use serde::{Deserialize, Serialize};

mod bindings {
    wasmtime::component::bindgen!({
        world: "metric",
        path: "../../wit",
    });
}

use bindings::exports::geohost::plugin::score;
use bindings::Metric as Bindings;

/// A `rows × cols` row-major table (cases × variables).
#[derive(Clone, Debug)]
pub struct Table {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

/// Ensemble members per case, `members × rows × cols`, member-major.
#[derive(Clone, Debug)]
pub struct MemberTable {
    pub members: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

/// A metric's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Scalar(f64),
    Vector(Vec<f64>),
}

/// A metric plugin running in the sandbox.
pub struct WasmMetric {
    instance: Instance<Bindings>,
    pub name: String,
    pub version: String,
    /// The metrics `compute` returns, in order.
    pub metrics: Vec<String>,
}

impl WasmMetric {
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str) -> Result<WasmMetric, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        let info = instance.init(|b, store| b.geohost_plugin_score().call_init(store, config))?;
        Ok(WasmMetric {
            instance,
            name: crate::printable(&info.name),
            version: crate::printable(&info.version),
            metrics: info.metrics.iter().map(|m| crate::printable(m)).collect(),
        })
    }

    /// Score `prediction` against `reference` (and `members`, if given).
    /// The plugin must return exactly the metrics it announced.
    pub fn compute(&mut self, prediction: &Table, reference: &Table, members: Option<&MemberTable>) -> Result<Vec<(String, MetricValue)>, SandboxError> {
        let table = |t: &Table| score::Table { rows: t.rows as u32, cols: t.cols as u32, data: t.data.clone() };
        let input = score::MetricInput {
            prediction: table(prediction),
            reference: table(reference),
            members: members.map(|m| score::EnsembleTable { members: m.members as u32, rows: m.rows as u32, cols: m.cols as u32, data: m.data.clone() }),
        };
        let values = self.instance.call("compute", |b, store| b.geohost_plugin_score().call_compute(store, &input))?;
        let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
        if names != self.metrics.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "compute",
                found: format!("metrics [{}]", names.join(", ")),
                expected: format!("the metrics it announced, [{}]", self.metrics.join(", ")),
            });
        }
        Ok(values
            .into_iter()
            .map(|v| {
                let value = match v.value {
                    score::Value::Scalar(x) => MetricValue::Scalar(x),
                    score::Value::Vector(x) => MetricValue::Vector(x),
                };
                (v.name, value)
            })
            .collect())
    }
}
