//! The `obs-operator` world as an [`ObsOperator`].

use super::{Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, ObsInfo, ObsOperator, Parameter};
use nalgebra::DMatrix;

mod bindings {
    wasmtime::component::bindgen!({
        world: "obs-operator",
        path: "../../wit",
    });
}

use bindings::geohost::plugin::types::Ensemble;
use bindings::ObsOperator as Bindings;

/// An observation-operator plugin running in the sandbox.
pub struct WasmObs {
    instance: Instance<Bindings>,
    info: ObsInfo,
}

impl WasmObs {
    /// Instantiate `loaded` and configure it with `config` (a JSON object).
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str) -> Result<WasmObs, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        let info = instance.init(|b, store| b.geohost_plugin_observe().call_init(store, config))?;
        let info = ObsInfo {
            name: info.name,
            version: info.version,
            state_size: info.state_size as usize,
            obs_size: info.obs_size as usize,
            noise_variance: info.noise_variance,
            locations: info.locations,
            parameters: info.parameters.into_iter().map(|p| Parameter { name: p.name, value: p.value, units: p.units }).collect(),
            units: info.units,
        };
        Ok(WasmObs { instance, info })
    }
}

impl ObsOperator for WasmObs {
    fn info(&self) -> &ObsInfo {
        &self.info
    }

    fn observe(&mut self, states: &DMatrix<f64>, t: f64) -> anyhow::Result<DMatrix<f64>> {
        let (size, members) = states.shape();
        anyhow::ensure!(
            size == self.info.state_size,
            "shape mismatch: ensemble has state size {size}, plugin `{}` expects {}",
            self.instance.plugin,
            self.info.state_size
        );
        let input = Ensemble { members: members as u32, size: size as u32, data: states.as_slice().to_vec() };
        let out = self.instance.call("observe", |b, store| b.geohost_plugin_observe().call_observe(store, &input, t))?;
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
}
