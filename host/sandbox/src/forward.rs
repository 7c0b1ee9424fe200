//! The `forward-model` world (and `spatial-forward-model`, which adds the
//! state's layout) as a [`ForwardModel`].

use super::{Accounting, FuelBudget, Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, Axis, ForwardModel, Grid, Layout, Metric, ModelInfo, Parameter};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "spatial-forward-model",
        path: "../../wit",
    });
}

use bindings::exports::geohost::plugin::{forward, spatial};
use bindings::geohost::plugin::types::Ensemble;

/// A forward model's exports: `forward` always, `spatial` when the
/// component has it (0.1.1 and later; a 0.1.0 component has not).
struct Bindings {
    forward: forward::Guest,
    spatial: Option<spatial::Guest>,
}

impl Bindings {
    fn geohost_plugin_forward(&self) -> &forward::Guest {
        &self.forward
    }

    fn instantiate(
        store: &mut wasmtime::Store<super::limits::StoreLimiter>,
        component: &wasmtime::component::Component,
        linker: &wasmtime::component::Linker<super::limits::StoreLimiter>,
    ) -> wasmtime::Result<Bindings> {
        let pre = linker.instantiate_pre(component)?;
        let forward = forward::GuestIndices::new(&pre)?;
        let spatial = spatial::GuestIndices::new(&pre).ok();
        let instance = pre.instantiate(&mut *store)?;
        Ok(Bindings { forward: forward.load(&mut *store, &instance)?, spatial: spatial.map(|s| s.load(&mut *store, &instance)).transpose()? })
    }
}

/// The host's [`Layout`] from the WIT record.
fn layout(l: spatial::Layout) -> Layout {
    Layout {
        axes: l.dims.into_iter().map(|d| Axis { name: crate::printable(&d.name), coordinates: d.coordinates, period: d.period }).collect(),
        metric: match l.metric {
            spatial::Metric::Euclidean => Metric::Euclidean,
            spatial::Metric::GreatCircle(radius) => Metric::GreatCircle { radius },
        },
        units: crate::printable(&l.units),
    }
}

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
        let mut instance = Instance::new(runtime, loaded, Bindings::instantiate)?;
        instance.set_fuel_budget(budget);
        let info = instance.init(|b, store| b.geohost_plugin_forward().call_init(store, config))?;
        let info = ModelInfo {
            name: crate::printable(&info.name),
            version: crate::printable(&info.version),
            state_size: info.state_size as usize,
            parameters: info.parameters.into_iter().map(|p| Parameter::from_plugin(&p.name, p.value, &p.units)).collect(),
            default_dt: info.default_dt,
            state_units: crate::printable(&info.state_units),
            time_units: crate::printable(&info.time_units),
            grid: info.grid.map(|g| Grid { points: g.points as usize, periodic: g.periodic }),
            layout: None,
        };
        let mut info = info;
        if instance.bindings.spatial.is_some() {
            let described = instance.call("state-layout", |b, store| {
                b.spatial.as_ref().expect("checked: the component exports `spatial`").call_state_layout(&mut *store).map(Ok::<_, String>)
            })?;
            if let Some(described) = described {
                let described = layout(described);
                described.check(info.state_size).map_err(|problem| SandboxError::Shape {
                    plugin: loaded.plugin.clone(),
                    call: "state-layout",
                    found: problem,
                    expected: "a layout whose axes cover the state (see wit/plugin.wit, interface `spatial`)".into(),
                })?;
                info.layout = Some(described);
            }
        }
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
        // Lend the ensemble's buffer to the call rather than copying it (a
        // megabyte per step at Lorenz-96-4000 × 20); it comes back on error.
        let data: Vec<f64> = std::mem::replace(states, DMatrix::zeros(0, 0)).data.into();
        let input = Ensemble { members: members as u32, size: size as u32, data };
        let out = match self.instance.call("advance", |b, store| b.geohost_plugin_forward().call_advance(store, &input, t, dt)) {
            Ok(out) => out,
            Err(e) => {
                *states = DMatrix::from_vec(size, members, input.data);
                return Err(e.into());
            }
        };
        if out.members as usize != members || out.size as usize != size || out.data.len() != members * size {
            *states = DMatrix::from_vec(size, members, input.data);
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
