//! The `static-model` world as a [`Simulator`].

use super::{Accounting, FuelBudget, Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, Parameter, ParameterInfo, Simulator, SimulatorInfo};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "static-model",
        path: "../../wit",
    });
}

use bindings::geohost::plugin::types::Ensemble;
use bindings::StaticModel as Bindings;

/// A static simulator plugin running in the sandbox.
pub struct WasmSimulator {
    instance: Instance<Bindings>,
    info: SimulatorInfo,
}

impl WasmSimulator {
    /// Instantiate `loaded` and configure it with `config` (a JSON object).
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str) -> Result<WasmSimulator, SandboxError> {
        Self::with_budget(runtime, loaded, config, None)
    }

    /// [`WasmSimulator::new`] with a total fuel `budget` over all its calls,
    /// `init` included (a submitted emulator).
    pub fn with_budget(runtime: &Runtime, loaded: &LoadedComponent, config: &str, budget: Option<FuelBudget>) -> Result<WasmSimulator, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        instance.set_fuel_budget(budget);
        let info = instance.init(|b, store| b.geohost_plugin_simulate().call_init(store, config))?;
        let info = SimulatorInfo {
            name: crate::printable(&info.name),
            version: crate::printable(&info.version),
            parameters: info.parameters.into_iter().map(|p| ParameterInfo { name: crate::printable(&p.name), units: crate::printable(&p.units) }).collect(),
            output_size: info.output_size as usize,
            output_units: crate::printable(&info.output_units),
            settings: info.settings.into_iter().map(|p| Parameter::from_plugin(&p.name, p.value, &p.units)).collect(),
            stochastic: info.stochastic,
        };
        if info.parameters.is_empty() || info.output_size == 0 {
            return Err(SandboxError::Config {
                plugin: instance.plugin.clone(),
                message: format!(
                    "its description has {} parameters and output size {}; a simulator needs both positive",
                    info.parameters.len(),
                    info.output_size
                ),
            });
        }
        Ok(WasmSimulator { instance, info })
    }

    /// Fuel, peak memory and calls so far (fuel is counted only under a
    /// runtime with a fuel limit).
    pub fn accounting(&self) -> Accounting {
        self.instance.accounting()
    }
}

impl Simulator for WasmSimulator {
    fn info(&self) -> &SimulatorInfo {
        &self.info
    }

    fn simulate(&mut self, thetas: &DMatrix<f64>, seed: u64) -> anyhow::Result<DMatrix<f64>> {
        let (size, batch) = thetas.shape();
        let n = self.info.parameters.len();
        anyhow::ensure!(size == n, "shape mismatch: {size} parameters per row, but plugin `{}` takes {n}", self.instance.plugin);
        let input = Ensemble { members: batch as u32, size: size as u32, data: thetas.as_slice().to_vec() };
        let out = self.instance.call("simulate", |b, store| b.geohost_plugin_simulate().call_simulate(store, &input, seed))?;
        let p = self.info.output_size;
        if out.members as usize != batch || out.size as usize != p || out.data.len() != batch * p {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "simulate",
                found: format!("{} rows × {} values ({} numbers)", out.members, out.size, out.data.len()),
                expected: format!("{batch} rows × {p} outputs"),
            }
            .into());
        }
        let y = DMatrix::from_vec(p, batch, out.data);
        if let Some((row, index)) = first_non_finite(&y) {
            return Err(SandboxError::NonFiniteOutput { plugin: self.instance.plugin.clone(), call: "simulate", row, index, value: y[(index, row)] }.into());
        }
        Ok(y)
    }
}
