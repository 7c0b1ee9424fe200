//! The `filter` world: a DA method submitted as a component, called once
//! per cycle with the forecast ensemble and returning the analysis.

use super::{Accounting, FuelBudget, Instance, LoadedComponent, Runtime, SandboxError};
use crate::model::{first_non_finite, Grid};
use nalgebra::{DMatrix, DVector};

mod bindings {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../../wit",
    });
}

use bindings::exports::geohost::plugin::assimilate;
use bindings::geohost::plugin::types::Ensemble;
use bindings::Filter as Bindings;

/// What the host tells a filter at `init`: the assimilation problem.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub state_size: usize,
    pub obs_size: usize,
    /// Diagonal of R.
    pub noise_variance: Vec<f64>,
    pub locations: Vec<f64>,
    pub grid: Option<Grid>,
    /// Model time between two analyses.
    pub dt: f64,
}

/// What a filter says about itself after `init`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FilterInfo {
    pub name: String,
    pub version: String,
    /// Ensemble size N.
    pub members: usize,
}

/// Largest ensemble a filter may ask for: the host draws and stores every
/// member, so an absurd N from an untrusted component must not become an
/// allocation of the host's.
pub const MAX_MEMBERS: usize = 10_000;

/// A filter component running in the sandbox.
pub struct WasmFilter {
    instance: Instance<Bindings>,
    pub info: FilterInfo,
    problem: Problem,
}

impl WasmFilter {
    /// Instantiate `loaded` and configure it with `config` (a JSON object)
    /// for `problem`. `budget` caps the instructions of all its calls
    /// together (a contract's total), on top of the per-call limit.
    pub fn new(runtime: &Runtime, loaded: &LoadedComponent, config: &str, problem: &Problem, budget: Option<FuelBudget>) -> Result<WasmFilter, SandboxError> {
        let mut instance = Instance::new(runtime, loaded, |store, component, linker| Bindings::instantiate(store, component, linker))?;
        instance.set_fuel_budget(budget);
        let wit_problem = assimilate::Problem {
            state_size: problem.state_size as u32,
            obs_size: problem.obs_size as u32,
            noise_variance: problem.noise_variance.clone(),
            locations: problem.locations.clone(),
            grid: problem.grid.map(|g| bindings::geohost::plugin::types::Grid { points: g.points as u32, periodic: g.periodic }),
            dt: problem.dt,
        };
        let info = instance.init(|b, store| b.geohost_plugin_assimilate().call_init(store, config, &wit_problem))?;
        let info = FilterInfo { name: crate::printable(&info.name), version: crate::printable(&info.version), members: info.members as usize };
        if !(2..=MAX_MEMBERS).contains(&info.members) {
            return Err(SandboxError::Shape {
                plugin: loaded.plugin.clone(),
                call: "init",
                found: format!("an ensemble of {} members", info.members),
                expected: format!("between 2 and {MAX_MEMBERS} members"),
            });
        }
        Ok(WasmFilter { instance, info, problem: problem.clone() })
    }

    /// Fuel, peak memory and calls so far.
    pub fn accounting(&self) -> Accounting {
        self.instance.accounting()
    }

    /// The analysis of `forecast` (`state × N`, members as columns) given
    /// its observed image `forecast_obs` (`obs × N`) and `y` at time `t`.
    pub fn analyse(&mut self, forecast: &DMatrix<f64>, forecast_obs: &DMatrix<f64>, y: &DVector<f64>, t: f64, seed: u64) -> Result<DMatrix<f64>, SandboxError> {
        let (m, n) = forecast.shape();
        let p = forecast_obs.nrows();
        debug_assert_eq!((m, p), (self.problem.state_size, self.problem.obs_size));
        let x = Ensemble { members: n as u32, size: m as u32, data: forecast.as_slice().to_vec() };
        let hx = Ensemble { members: n as u32, size: p as u32, data: forecast_obs.as_slice().to_vec() };
        let out = self.instance.call("analyse", |b, store| b.geohost_plugin_assimilate().call_analyse(store, &x, &hx, y.as_slice(), t, seed))?;
        if out.members as usize != n || out.size as usize != m || out.data.len() != n * m {
            return Err(SandboxError::Shape {
                plugin: self.instance.plugin.clone(),
                call: "analyse",
                found: format!("{} members × {} values ({} numbers)", out.members, out.size, out.data.len()),
                expected: format!("{n} members × {m} values (the forecast's shape)"),
            });
        }
        let analysis = DMatrix::from_vec(m, n, out.data);
        if let Some((member, index)) = first_non_finite(&analysis) {
            return Err(SandboxError::NonFinite {
                plugin: self.instance.plugin.clone(),
                call: "analyse",
                member,
                index,
                value: analysis[(index, member)],
                time: t,
            });
        }
        Ok(analysis)
    }
}
