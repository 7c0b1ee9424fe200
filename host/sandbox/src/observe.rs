//! The `obs-operator` world (and `located-obs-operator`, which adds the
//! observations' coordinates) as an [`ObsOperator`].

use super::{Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, ObsInfo, ObsOperator, Parameter};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "located-obs-operator",
        path: "../../wit",
    });
}

use bindings::exports::geohost::plugin::{located, observe};
use bindings::geohost::plugin::types::Ensemble;

/// An operator's exports: `observe` always, `located` when the component
/// has it (0.1.1 and later).
struct Bindings {
    observe: observe::Guest,
    located: Option<located::Guest>,
}

impl Bindings {
    fn geohost_plugin_observe(&self) -> &observe::Guest {
        &self.observe
    }

    fn instantiate(
        store: &mut wasmtime::Store<super::limits::StoreLimiter>,
        component: &wasmtime::component::Component,
        linker: &wasmtime::component::Linker<super::limits::StoreLimiter>,
    ) -> wasmtime::Result<Bindings> {
        let pre = linker.instantiate_pre(component)?;
        let observe = observe::GuestIndices::new(&pre)?;
        let located = located::GuestIndices::new(&pre).ok();
        let instance = pre.instantiate(&mut *store)?;
        Ok(Bindings { observe: observe.load(&mut *store, &instance)?, located: located.map(|l| l.load(&mut *store, &instance)).transpose()? })
    }
}

/// An observation-operator plugin running in the sandbox.
pub struct WasmObs {
    instance: Instance<Bindings>,
    info: ObsInfo,
    /// The call's copy of the ensemble, kept from call to call: a fresh
    /// buffer of a large ensemble costs its page faults on every call.
    input: Vec<f64>,
}

impl WasmObs {
    /// Instantiate `loaded` and configure it with `config` (a JSON object).
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str) -> Result<WasmObs, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, Bindings::instantiate)?;
        let info = instance.init(|b, store| b.geohost_plugin_observe().call_init(store, config))?;
        let info = ObsInfo {
            name: crate::printable(&info.name),
            version: crate::printable(&info.version),
            state_size: info.state_size as usize,
            obs_size: info.obs_size as usize,
            noise_variance: info.noise_variance,
            locations: info.locations,
            parameters: info.parameters.into_iter().map(|p| Parameter::from_plugin(&p.name, p.value, &p.units)).collect(),
            units: crate::printable(&info.units),
        };
        Ok(WasmObs { instance, info, input: Vec::new() })
    }
}

impl ObsOperator for WasmObs {
    fn info(&self) -> &ObsInfo {
        &self.info
    }

    fn observe(&mut self, states: &DMatrix<f64>, t: f64) -> anyhow::Result<DMatrix<f64>> {
        self.observe_columns(states, 0..states.ncols(), t)
    }

    fn observe_columns(&mut self, states: &DMatrix<f64>, columns: std::ops::Range<usize>, t: f64) -> anyhow::Result<DMatrix<f64>> {
        let size = states.nrows();
        anyhow::ensure!(
            size == self.info.state_size,
            "shape mismatch: ensemble has state size {size}, plugin `{}` expects {}",
            self.instance.plugin,
            self.info.state_size
        );
        let members = columns.len();
        // Columns are contiguous (column-major): the members are one slice.
        let mut data = std::mem::take(&mut self.input);
        data.clear();
        data.extend_from_slice(&states.as_slice()[columns.start * size..columns.end * size]);
        let input = Ensemble { members: members as u32, size: size as u32, data };
        let out = self.instance.call("observe", |b, store| b.geohost_plugin_observe().call_observe(store, &input, t));
        self.input = input.data;
        let out = out?;
        let p = self.info.obs_size;
        if out.members as usize != members || out.size as usize != p || out.data.len() != members * p {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "observe",
                found: format!("{} members × {} values ({} numbers)", out.members, out.size, out.data.len()),
                expected: format!("{members} members × {p} observations"),
            }
            .into());
        }
        let y = DMatrix::from_vec(p, members, out.data);
        if let Some((member, index)) = first_non_finite(&y) {
            return Err(
                SandboxError::NonFinite { plugin: self.instance.plugin.clone(), call: "observe", member, index, value: y[(index, member)], time: t }.into()
            );
        }
        Ok(y)
    }

    fn coordinates(&mut self, t: f64) -> anyhow::Result<Option<Vec<f64>>> {
        if self.instance.bindings.located.is_none() {
            return Ok(None);
        }
        let coordinates = self.instance.call("coordinates", |b, store| {
            b.located.as_ref().expect("checked: the component exports `located`").call_coordinates(&mut *store, t).map(Ok::<_, String>)
        })?;
        if let Some(c) = &coordinates {
            let p = self.info.obs_size;
            if c.is_empty() || c.len() % p != 0 || c.iter().any(|v| !v.is_finite()) {
                return Err(SandboxError::Shape {
                    plugin: self.instance.plugin.clone(),
                    call: "coordinates",
                    found: format!("{} values{}", c.len(), if c.iter().any(|v| !v.is_finite()) { " (some not finite)" } else { "" }),
                    expected: format!("{p} observations × the layout's axes, all finite"),
                }
                .into());
            }
        }
        Ok(coordinates)
    }
}
