//! What a DA method is to the rest of geohost: a [`DaMethod`] (its
//! parameters, label, role and how it runs, all in the method's own file)
//! and one line in `crate::METHODS` that gives it its `method = "…"` names.
//!
//! Adding a method touches its file and one line of `crate::METHODS`: DAPPER's
//! "a method is a class". Plugin-sets and contracts name methods by those
//! names; parameters are read through [`Params`], which names the
//! `[[method]]` table in every error and refuses parameters the method does
//! not take.

use crate::ensemble::{Execution, Trajectory};
use crate::twin::Twin;
use anyhow::{bail, Context, Result};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use rand::SeedableRng;
use serde::{Serialize, Serializer};
use std::sync::Arc;

/// Reads a method's parameters into a [`Method`].
pub type Parse = fn(&mut Params) -> Result<Method>;

/// What a method's outputs are to the registry and the cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A classical reference without an ensemble (climatology, OI, 3D-Var).
    Baseline,
    /// An ensemble method: step 2's oracle, run again through the emulator
    /// in step 4 unless `[step4] methods` says otherwise.
    Oracle,
    /// A submitted method being scored (its outputs are never registered).
    Candidate,
}

impl Role {
    /// The registry's role name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Baseline => "baseline",
            Role::Oracle => "oracle",
            Role::Candidate => "candidate",
        }
    }
}

/// One DA method with its parameters.
pub trait DaMethod: std::fmt::Debug + Send + Sync {
    /// The method's tag in JSON (`"method": "ETKF"`), as DAPPER names it.
    fn tag(&self) -> &'static str;
    /// A short label with the parameters, e.g. `ETKF N=28 infl=1.02 rot`:
    /// file names, tables and the method's seed derive from it.
    fn label(&self) -> String;
    fn role(&self) -> Role;
    /// Whether the method reads the twin's climatological covariance
    /// ([`Twin::clim_cov`]): the twin keeps it only when a method of the
    /// run does (its update costs size² per model step).
    fn uses_climatological_covariance(&self) -> bool {
        false
    }
    /// Run on a twin experiment; `rng` drives the method's own randomness
    /// (initial ensemble, perturbations, rotations); `execution` says which
    /// analysis ensembles to keep and which processes share the work (every
    /// rank of a team calls `run` with the same arguments and gets the same
    /// trajectory; methods without an ensemble just run on each).
    fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        rng: &mut rand_chacha::ChaCha8Rng,
        execution: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory>;
}

/// A method read from its parameters; `Self: Serialize` gives the
/// parameters as JSON under the literature's names (`N`, `infl`, `xB`…).
pub trait FromParams: DaMethod + Serialize + Sized + 'static {
    fn from_params(p: &mut Params) -> Result<Self>;
}

/// The [`Parse`] of method type `M`, for the registration table
/// (`crate::METHODS`).
pub fn parse<M: FromParams>(p: &mut Params) -> Result<Method> {
    let method = M::from_params(p)?;
    p.finish()?;
    let params = serde_json::to_value(&method).context("serialising the method's parameters")?;
    Ok(Method { inner: Arc::new(method), params })
}

/// A DA method ready to run: cheap to clone, compared and serialised by
/// its tag and parameters (`{"method": "ETKF", "N": 28, …}`).
#[derive(Clone, Debug)]
pub struct Method {
    inner: Arc<dyn DaMethod>,
    params: serde_json::Value,
}

impl Method {
    /// A method built by the host rather than read from parameters (e.g. a
    /// [`crate::submission::Submission`]); serialised by its tag and
    /// `Serialize` fields.
    pub fn from_method<M: DaMethod + Serialize + 'static>(method: M) -> Result<Method> {
        let params = serde_json::to_value(&method).context("serialising the method's parameters")?;
        Ok(Method { inner: Arc::new(method), params })
    }

    pub fn label(&self) -> String {
        self.inner.label()
    }

    pub fn role(&self) -> Role {
        self.inner.role()
    }

    /// See [`DaMethod::uses_climatological_covariance`].
    pub fn uses_climatological_covariance(&self) -> bool {
        self.inner.uses_climatological_covariance()
    }

    /// The JSON tag (`ETKF`, `Var3D`, …).
    pub fn tag(&self) -> &'static str {
        self.inner.tag()
    }

    /// Run the method on a twin experiment. `seed` drives the method's own
    /// randomness, so methods are independent of the order they run in.
    pub fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        seed: u64,
        execution: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        self.inner.run(twin, model, obs, &mut rng, execution, progress)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Method) -> bool {
        self.tag() == other.tag() && self.params == other.params
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        map.insert("method".into(), self.tag().into());
        if let serde_json::Value::Object(params) = &self.params {
            map.extend(params.clone());
        }
        map.serialize(serializer)
    }
}

/// A method's parameter table, read one parameter at a time; whatever is
/// left when the method is done is an error ([`Params::finish`]).
pub struct Params {
    table: toml::Table,
    at: String,
}

impl Params {
    /// `table` read for the method `at` names (e.g. `[[method]] #2`).
    pub fn new(table: toml::Table, at: &str) -> Params {
        Params { table, at: at.to_string() }
    }

    /// Where these parameters come from, for errors.
    pub fn at(&self) -> &str {
        &self.at
    }

    /// An optional number (integers are accepted).
    pub fn f64(&mut self, name: &str) -> Result<Option<f64>> {
        match self.table.remove(name) {
            None => Ok(None),
            Some(toml::Value::Float(v)) => Ok(Some(v)),
            Some(toml::Value::Integer(v)) => Ok(Some(v as f64)),
            Some(other) => bail!("{}: `{name}` must be a number, got {other}", self.at),
        }
    }

    /// An optional non-negative integer.
    pub fn usize(&mut self, name: &str) -> Result<Option<usize>> {
        match self.table.remove(name) {
            None => Ok(None),
            Some(toml::Value::Integer(v)) if v >= 0 => Ok(Some(v as usize)),
            Some(other) => bail!("{}: `{name}` must be a non-negative integer, got {other}", self.at),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.table.remove(name) {
            None => Ok(None),
            Some(toml::Value::Boolean(v)) => Ok(Some(v)),
            Some(other) => bail!("{}: `{name}` must be true or false, got {other}", self.at),
        }
    }

    /// A positive, finite number (`what` says what it is, for errors).
    pub fn positive(&mut self, name: &str, default: Option<f64>, what: &str) -> Result<f64> {
        let value = match (self.f64(name)?, default) {
            (Some(v), _) => v,
            (None, Some(d)) => d,
            (None, None) => bail!("{}: `{name}` ({what}) is required", self.at),
        };
        if !(value.is_finite() && value > 0.0) {
            bail!("{}: `{name}` must be a positive number, got {value}", self.at);
        }
        Ok(value)
    }

    /// Refuse any parameter the method did not read.
    pub fn finish(&mut self) -> Result<()> {
        match self.table.keys().next() {
            Some(name) => bail!("{}: `{name}` does not apply to this method", self.at),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: &str, toml_text: &str) -> Result<Method> {
        crate::parse_method(kind, &toml_text.parse::<toml::Table>().unwrap(), "[[method]] #1")
    }

    #[test]
    fn every_registered_name_parses_and_labels_round_trip_through_json() {
        let cases = [
            ("climatology", "", "Climatology", "Climatology"),
            ("OI", "", "OptInterp", "OptInterp"),
            ("3dvar", "xB = 0.02", "3D-Var xB=0.02", "Var3D"),
            ("enkf", "N = 40\ninfl = 1.06", "EnKF PertObs N=40 infl=1.06", "EnKF"),
            ("etkf", "N = 28\ninfl = 1.02\nrot = true", "ETKF N=28 infl=1.02 rot", "ETKF"),
            ("letkf", "N = 7\ninfl = 1.04\nloc_rad = 4", "LETKF N=7 infl=1.04 loc_rad=4", "LETKF"),
        ];
        for (kind, params, label, tag) in cases {
            let m = parse(kind, params).unwrap();
            assert_eq!((m.label().as_str(), m.tag()), (label, tag));
            let json = serde_json::to_value(&m).unwrap();
            assert_eq!(json["method"], tag);
        }
        let etkf = serde_json::to_value(parse("etkf", "N = 28\ninfl = 1.02").unwrap()).unwrap();
        assert_eq!(etkf, serde_json::json!({ "method": "ETKF", "N": 28, "infl": 1.02, "rot": false }));
        assert_eq!(parse("etkf", "N = 20").unwrap().role(), Role::Oracle);
        assert_eq!(parse("3dvar", "").unwrap().role(), Role::Baseline);
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |kind, params| format!("{:#}", parse(kind, params).unwrap_err());
        assert!(err("etkf", "infl = 1.0").contains("[[method]] #1: `N` (ensemble size) is required"));
        assert!(err("etkf", "N = 1").contains("`N` must be at least 2, got 1"));
        assert!(err("etkf", "N = 10\nxB = 1").contains("`xB` does not apply to this method"));
        assert!(err("climatology", "N = 10").contains("`N` does not apply to this method"));
        assert!(err("enkf", "N = 10\ninfl = -1").contains("`infl` must be a positive number, got -1"));
        assert!(err("letkf", "N = 10").contains("`loc_rad` (localisation radius, grid units) is required"));
        assert!(err("etkf", "N = \"ten\"").contains("`N` must be a non-negative integer"));
        assert!(err("kalman", "").contains("unknown method \"kalman\"; choose climatology, oi, 3dvar, enkf, etkf, letkf"));
    }
}
