//! The `forward-model` world as a [`ForwardModel`].

use super::{Accounting, FuelBudget, Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, ForwardModel, Grid, ModelInfo, Parameter};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "forward-model",
        path: "../../wit",
    });
}

use bindings::geohost::plugin::types::Ensemble;
use bindings::ForwardModel as Bindings;

/// A forward-model plugin running in the sandbox.
pub struct WasmForward {
    instance: Instance<Bindings>,
    info: ModelInfo,
}

impl WasmForward {
    /// Instantiate `loaded` and configure it with `config` (a JSON object).
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str) -> Result<WasmForward, SandboxError> {
        Self::with_budget(runtime, loaded, config, None)
    }

    /// [`WasmForward::new`] with a total fuel `budget` over all its calls,
    /// `init` included (a submitted emulator).
    pub fn with_budget(runtime: &Runtime, loaded: &LoadedComponent, config: &str, budget: Option<FuelBudget>) -> Result<WasmForward, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        instance.set_fuel_budget(budget);
        let info = instance.init(|b, store| b.geohost_plugin_forward().call_init(store, config))?;
        let info = ModelInfo {
            name: info.name,
            version: info.version,
            state_size: info.state_size as usize,
            parameters: info.parameters.into_iter().map(|p| Parameter { name: p.name, value: p.value, units: p.units }).collect(),
            default_dt: info.default_dt,
            state_units: info.state_units,
            time_units: info.time_units,
            grid: info.grid.map(|g| Grid { points: g.points as usize, periodic: g.periodic }),
        };
        if info.state_size == 0 || !(info.default_dt.is_finite() && info.default_dt > 0.0) {
            return Err(SandboxError::Shape {
                plugin: loaded.plugin.clone(),
                call: "init",
                found: format!("state size {} and default dt {}", info.state_size, info.default_dt),
                expected: "a positive state size and a positive, finite time step".into(),
            });
        }
        Ok(WasmForward { instance, info })
    }
}

impl WasmForward {
    /// Fuel, peak memory and calls so far.
    pub fn accounting(&self) -> Accounting {
        self.instance.accounting()
    }
}

impl ForwardModel for WasmForward {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn advance(&mut self, states: &mut DMatrix<f64>, t: f64, dt: f64) -> anyhow::Result<()> {
        let (size, members) = states.shape();
        anyhow::ensure!(
            size == self.info.state_size,
            "shape mismatch: ensemble has state size {size}, plugin `{}` was configured for {}",
            self.instance.plugin,
            self.info.state_size
        );
        let input = Ensemble { members: members as u32, size: size as u32, data: states.as_slice().to_vec() };
        let out = self.instance.call("advance", |b, store| b.geohost_plugin_forward().call_advance(store, &input, t, dt))?;
        if out.members as usize != members || out.size as usize != size || out.data.len() != members * size {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "advance",
                found: format!("{} members × {} values ({} numbers)", out.members, out.size, out.data.len()),
                expected: format!("{members} members × {size} values"),
            }
            .into());
        }
        // Take the returned buffer as the new ensemble instead of copying it.
        *states = DMatrix::from_vec(size, members, out.data);
        if let Some((member, index)) = first_non_finite(states) {
            return Err(SandboxError::NonFinite {
                plugin: self.instance.plugin.clone(),
                call: "advance",
                member,
                index,
                value: states[(index, member)],
                time: t + dt,
            }
            .into());
        }
        Ok(())
    }
}
