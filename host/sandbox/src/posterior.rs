//! The `posterior` world: an amortized posterior for a static problem as a
//! component (a step-5 submission, or a predictor exported with `geohost
//! export posterior`).

use super::{Accounting, FuelBudget, Instance, LoadedComponent, Runtime, SandboxError};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "posterior",
        path: "../../wit",
    });
}

use bindings::geohost::plugin::types::Ensemble;
use bindings::Posterior as Bindings;

/// What a posterior says about itself after `init`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PosteriorInfo {
    pub name: String,
    pub version: String,
    /// The parameters of every θ, in order.
    pub parameters: Vec<String>,
    pub data_size: usize,
    pub has_log_prob: bool,
}

/// Most draws the host asks for in one call, and most parameters a
/// posterior may declare: bounds on what an untrusted component can make
/// the host copy.
pub const MAX_DRAWS: usize = 1_000_000;
pub const MAX_PARAMETERS: usize = 1_000;

/// A posterior component running in the sandbox.
pub struct WasmPosterior {
    instance: Instance<Bindings>,
    pub info: PosteriorInfo,
}

impl WasmPosterior {
    /// Instantiate `loaded` and configure it with `config` (a JSON object).
    /// `budget` caps the instructions of all its calls together.
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str, budget: Option<FuelBudget>) -> Result<WasmPosterior, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        instance.set_fuel_budget(budget);
        let info = instance.init(|b, store| b.geohost_plugin_infer().call_init(store, config))?;
        let info = PosteriorInfo {
            name: crate::printable(&info.name),
            version: crate::printable(&info.version),
            parameters: info.parameters.iter().map(|p| crate::printable(p)).collect(),
            data_size: info.data_size as usize,
            has_log_prob: info.has_log_prob,
        };
        if info.parameters.is_empty() || info.parameters.len() > MAX_PARAMETERS || info.data_size == 0 {
            return Err(SandboxError::Shape {
                plugin: loaded.plugin.clone(),
                call: "init",
                found: format!("{} parameters and data of size {}", info.parameters.len(), info.data_size),
                expected: format!("1 to {MAX_PARAMETERS} parameters and a positive data size"),
            });
        }
        Ok(WasmPosterior { instance, info })
    }

    /// Fuel, peak memory and calls so far.
    pub fn accounting(&self) -> Accounting {
        self.instance.accounting()
    }

    fn check_y(&self, call: &'static str, y: &[f64]) -> Result<(), SandboxError> {
        if y.len() != self.info.data_size {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call,
                found: format!("an observation of {} values to take", y.len()),
                expected: format!("{} values (its data size)", self.info.data_size),
            });
        }
        Ok(())
    }

    /// `n` draws given `y`, as `d × n` (draws as columns), all finite.
    pub fn sample(&mut self, y: &[f64], n: usize, seed: u64) -> Result<DMatrix<f64>, SandboxError> {
        self.check_y("sample", y)?;
        let d = self.info.parameters.len();
        let n = n.min(MAX_DRAWS);
        let out = self.instance.call("sample", |b, store| b.geohost_plugin_infer().call_sample(store, y, n as u32, seed))?;
        if out.members as usize != n || out.size as usize != d || out.data.len() != n * d {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "sample",
                found: format!("{} draws × {} values ({} numbers)", out.members, out.size, out.data.len()),
                expected: format!("{n} draws × {d} values"),
            });
        }
        let draws = DMatrix::from_vec(d, n, out.data);
        if let Some((member, index)) = crate::model::first_non_finite(&draws) {
            return Err(SandboxError::NonFiniteOutput {
                plugin: self.instance.plugin.clone(),
                call: "sample",
                row: member,
                index,
                value: draws[(index, member)],
            });
        }
        Ok(draws)
    }

    /// log q(θ | y) for each column of `thetas` (`d × n`); NaN is refused,
    /// −∞ allowed (outside the support).
    pub fn log_prob(&mut self, y: &[f64], thetas: &DMatrix<f64>) -> Result<Vec<f64>, SandboxError> {
        self.check_y("log-prob", y)?;
        let (d, n) = thetas.shape();
        let input = Ensemble { members: n as u32, size: d as u32, data: thetas.as_slice().to_vec() };
        let out = self.instance.call("log-prob", |b, store| b.geohost_plugin_infer().call_log_prob(store, y, &input))?;
        if out.len() != n {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "log-prob",
                found: format!("{} values", out.len()),
                expected: format!("{n} values, one per θ"),
            });
        }
        if let Some(row) = out.iter().position(|v| v.is_nan() || *v == f64::INFINITY) {
            return Err(SandboxError::NonFiniteOutput { plugin: self.instance.plugin.clone(), call: "log-prob", row, index: 0, value: out[row] });
        }
        Ok(out)
    }
}
