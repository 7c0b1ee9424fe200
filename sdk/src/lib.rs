//! Write geohost plugins in plain Rust.
//!
//! A plugin is a WebAssembly component implementing one world of the
//! `geohost:plugin@0.1.1` WIT package (see `wit/plugin.wit`). This crate
//! hides the WIT bindings: implement [`ForwardModel`] or [`ObsOperator`] on
//! your own type, call one export macro, and build for
//! `wasm32-unknown-unknown` (see `plugins/build.sh`).
//!
//! ```ignore
//! use geohost_sdk::{Config, ForwardModel, ModelInfo, Grid};
//!
//! struct Decay { rate: f64, n: usize }
//!
//! impl ForwardModel for Decay {
//!     fn init(config: &Config) -> Result<Self, String> {
//!         config.allow_only(&["rate", "size"])?;
//!         Ok(Decay { rate: config.f64_or("rate", 1.0)?, n: config.usize_or("size", 3)? })
//!     }
//!     fn info(&self) -> ModelInfo {
//!         ModelInfo::new("decay", env!("CARGO_PKG_VERSION"), self.n, 0.1)
//!     }
//!     fn step(&mut self, x: &mut [f64], _t: f64, dt: f64) -> Result<(), String> {
//!         x.iter_mut().for_each(|v| *v *= (-self.rate * dt).exp());
//!         Ok(())
//!     }
//! }
//!
//! geohost_sdk::export_forward_model!(Decay);
//! ```
//!
//! The host calls `init` once with the plugin's config (a JSON object built
//! from the plugin-set file), then calls the model on whole ensembles; the
//! SDK loops over members for you unless you override
//! [`ForwardModel::advance_ensemble`].

// Lets the generated bindings name this crate the same way from inside it
// and from the plugin crates that expand the export macros.
extern crate self as geohost_sdk;

mod config;
/// Time integrators (RK4), shared with the native host so both give the same bits.
pub use geohost_integrate as integrate;

pub use config::Config;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generated bindings (not a stable API: use the traits below).
#[doc(hidden)]
pub mod bindings {
    // The 0.1.1 worlds that add `spatial` / `located` to the forward model
    // and the operator: a model or operator without a layout answers none.
    pub mod forward_model {
        wit_bindgen::generate!({
            world: "spatial-forward-model",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::forward_model",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
    pub mod obs_operator {
        wit_bindgen::generate!({
            world: "located-obs-operator",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::obs_operator",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
    pub mod static_model {
        wit_bindgen::generate!({
            world: "static-model",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::static_model",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
    pub mod filter {
        wit_bindgen::generate!({
            world: "filter",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::filter",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
    pub mod posterior {
        wit_bindgen::generate!({
            world: "posterior",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::posterior",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
    pub mod metric {
        wit_bindgen::generate!({
            world: "metric",
            path: "../wit",
            pub_export_macro: true,
            default_bindings_module: "geohost_sdk::bindings::metric",
            runtime_path: "geohost_sdk::__wit_bindgen::rt",
        });
    }
}

/// A named parameter value, recorded by the host in the run's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub value: f64,
    pub units: String,
}

impl Parameter {
    pub fn new(name: &str, value: f64, units: &str) -> Self {
        Parameter { name: name.into(), value, units: units.into() }
    }
}

/// A 1-D grid: state variable `i` sits at coordinate `i`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    pub points: usize,
    pub periodic: bool,
}

/// What a forward model says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub parameters: Vec<Parameter>,
    pub default_dt: f64,
    pub state_units: String,
    pub time_units: String,
    pub grid: Option<Grid>,
}

/// One axis of a [`Layout`].
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub name: String,
    /// The points' coordinates along the axis, strictly increasing.
    pub coordinates: Vec<f64>,
    /// The axis' period when it wraps around.
    pub period: Option<f64>,
}

/// How the host measures distances on a [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distance {
    /// Euclidean in the coordinates (periodic axes wrap).
    Euclidean,
    /// Great-circle distance on a sphere of this radius; axes `lat`, `lon` in degrees.
    GreatCircle { radius: f64 },
}

/// Where the state variables sit (WIT `spatial.layout`): axes slowest-
/// varying first, state index row-major over them. Localised methods use
/// it; see [`ForwardModel::layout`].
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub axes: Vec<Axis>,
    pub distance: Distance,
    pub units: String,
}

impl Layout {
    /// A Cartesian grid of `shape[k]` points at 0, 1, … along axis
    /// `names[k]` (distances in grid points), no axis periodic.
    pub fn cartesian(names: &[&str], shape: &[usize]) -> Layout {
        Layout {
            axes: names
                .iter()
                .zip(shape)
                .map(|(name, &n)| Axis { name: (*name).into(), coordinates: (0..n).map(|i| i as f64).collect(), period: None })
                .collect(),
            distance: Distance::Euclidean,
            units: "grid points".into(),
        }
    }
}

impl ModelInfo {
    /// A description with no parameters, dimensionless units and no grid.
    pub fn new(name: &str, version: &str, state_size: usize, default_dt: f64) -> Self {
        ModelInfo {
            name: name.into(),
            version: version.into(),
            state_size,
            parameters: Vec::new(),
            default_dt,
            state_units: "1".into(),
            time_units: "1".into(),
            grid: None,
        }
    }
}

/// What an observation operator says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct ObsInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub obs_size: usize,
    /// Diagonal of R, one positive variance per observation.
    pub noise_variance: Vec<f64>,
    /// Grid coordinate of each observation (for localisation).
    pub locations: Vec<f64>,
    pub parameters: Vec<Parameter>,
    pub units: String,
}

/// A dynamical model x(t + dt) = M(x(t)), advanced one member at a time
/// (or a whole ensemble at once, see [`ForwardModel::advance_ensemble`]).
pub trait ForwardModel: Sized + 'static {
    /// Build the model from its config; unknown or ill-typed keys should be
    /// errors that name the key.
    fn init(config: &Config) -> Result<Self, String>;
    /// Describe the configured model.
    fn info(&self) -> ModelInfo;
    /// Advance one state vector in place from `t` by `dt`.
    fn step(&mut self, x: &mut [f64], t: f64, dt: f64) -> Result<(), String>;
    /// The state's layout on a grid of any dimension (for localisation);
    /// `None` (the default) leaves only [`ModelInfo::grid`].
    fn layout(&self) -> Option<Layout> {
        None
    }
    /// Advance `states` (row-major, `state_size` values per member) in
    /// place. The default calls [`ForwardModel::step`] on each member.
    fn advance_ensemble(&mut self, states: &mut [f64], state_size: usize, t: f64, dt: f64) -> Result<(), String> {
        for member in states.chunks_exact_mut(state_size) {
            self.step(member, t, dt)?;
        }
        Ok(())
    }
}

/// What a static simulator says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulatorInfo {
    pub name: String,
    pub version: String,
    /// (name, units) of each parameter θ, in row order.
    pub parameters: Vec<(String, String)>,
    pub output_size: usize,
    pub output_units: String,
    /// Fixed settings resolved from the config (for the record).
    pub settings: Vec<Parameter>,
    /// Whether [`StaticModel::simulate`] draws noise from its `rng`.
    pub stochastic: bool,
}

/// A static simulator y = G(θ) (the `static-model` world), simulated one
/// parameter vector at a time.
pub trait StaticModel: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn info(&self) -> SimulatorInfo;
    /// Simulate `theta` into `y` (already sized `output_size`). `rng` is
    /// seeded by the host per call and per row: a deterministic simulator
    /// ignores it.
    fn simulate(&mut self, theta: &[f64], y: &mut [f64], rng: &mut SplitMix64) -> Result<(), String>;
}

/// A small seeded generator for simulator noise (SplitMix64: fast, and
/// the same stream on every platform).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform on [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// An observation operator y = H(x) with a diagonal error covariance.
pub trait ObsOperator: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn info(&self) -> ObsInfo;
    /// Observe one state `x` into `y` (already sized `obs_size`).
    fn observe(&mut self, x: &[f64], y: &mut [f64], t: f64) -> Result<(), String>;
    /// The coordinates of the observations made at `t` in the forward
    /// model's [`Layout`] (`obs_size` rows of one value per axis), for
    /// operators whose observations move or sit on a multi-dimensional
    /// grid; `None` (the default) means [`ObsInfo::locations`] at all times.
    fn coordinates(&mut self, _t: f64) -> Option<Vec<f64>> {
        None
    }
}

/// A `rows × cols` row-major table: one row per case, one column per variable.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [f64],
}

impl<'a> Table<'a> {
    pub fn row(&self, r: usize) -> &'a [f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// An ensemble per case: `members × rows × cols`, member-major.
#[derive(Clone, Copy, Debug)]
pub struct EnsembleTable<'a> {
    pub members: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [f64],
}

impl<'a> EnsembleTable<'a> {
    /// Member `m`'s value for case `r`, variable `c`.
    pub fn at(&self, m: usize, r: usize, c: usize) -> f64 {
        self.data[(m * self.rows + r) * self.cols + c]
    }
}

/// What a metric is given: shapes are checked by the SDK before `compute`.
#[derive(Clone, Copy, Debug)]
pub struct MetricInput<'a> {
    pub prediction: Table<'a>,
    pub reference: Table<'a>,
    pub members: Option<EnsembleTable<'a>>,
}

/// A metric result: a number or a vector (e.g. a rank histogram).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<f64>),
}

/// What a metric plugin says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricInfo {
    pub name: String,
    pub version: String,
    /// The metric names `compute` returns, in order.
    pub metrics: Vec<String>,
}

/// A verification metric (the `metric` world).
pub trait Metric: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn info(&self) -> MetricInfo;
    /// Compute every configured metric, named as in [`MetricInfo::metrics`].
    fn compute(&mut self, input: &MetricInput<'_>) -> Result<Vec<(String, Value)>, String>;
}

/// The assimilation problem a [`Filter`] is configured for (given once,
/// at `init`).
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub state_size: usize,
    pub obs_size: usize,
    /// Diagonal of the observation-error covariance R.
    pub noise_variance: Vec<f64>,
    /// Grid coordinate of each observation.
    pub locations: Vec<f64>,
    pub grid: Option<Grid>,
    /// Model time between two analyses.
    pub dt: f64,
}

/// What a filter says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterInfo {
    pub name: String,
    pub version: String,
    /// Ensemble size N: the host draws N initial members.
    pub members: usize,
}

/// An ensemble of `members` rows of `size` values each, row-major (member
/// `j` is `data[j * size..(j + 1) * size]`).
#[derive(Debug)]
pub struct Members<'a> {
    pub members: usize,
    pub size: usize,
    pub data: &'a mut [f64],
}

impl Members<'_> {
    pub fn member(&self, j: usize) -> &[f64] {
        &self.data[j * self.size..(j + 1) * self.size]
    }
    pub fn member_mut(&mut self, j: usize) -> &mut [f64] {
        &mut self.data[j * self.size..(j + 1) * self.size]
    }
}

/// A data-assimilation method (the `filter` world): a benchmark
/// submission. The host runs the twin experiment; the filter only ever
/// sees forecasts, their observed images and the observations.
pub trait Filter: Sized + 'static {
    /// Build the filter from its config for `problem`.
    fn init(config: &Config, problem: &Problem) -> Result<Self, String>;
    fn info(&self) -> FilterInfo;
    /// Replace the forecast ensemble `x` (`N × state_size`) by the analysis,
    /// given its observed image `hx` (`N × obs_size`, row-major) and the
    /// observation `y` at time `t`. `rng` is seeded by the host for this
    /// cycle: use it for any randomness, so reruns give the same bits.
    fn analyse(&mut self, x: &mut Members<'_>, hx: &[f64], y: &[f64], t: f64, rng: &mut SplitMix64) -> Result<(), String>;
}

/// What an amortized posterior says about itself after `init`.
#[derive(Clone, Debug, PartialEq)]
pub struct PosteriorInfo {
    pub name: String,
    pub version: String,
    /// The parameters of every θ, in the prior's order.
    pub parameters: Vec<String>,
    /// Length of one observation y.
    pub data_size: usize,
}

/// An amortized posterior for a static problem (the `posterior` world):
/// a step-5 benchmark submission. Draws are returned draw-major: draw `i`
/// is `out[i * d..(i + 1) * d]` with `d = parameters.len()`.
pub trait Posterior: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn info(&self) -> PosteriorInfo;
    /// Fill `out` (`n × d`, draw-major) with draws from q(θ | y), inside
    /// the prior's support. `rng` is seeded by the host for this call.
    fn sample(&mut self, y: &[f64], n: usize, out: &mut [f64], rng: &mut SplitMix64) -> Result<(), String>;
    /// Whether [`Posterior::log_prob`] is implemented.
    fn has_log_prob(&self) -> bool {
        false
    }
    /// log q(θ | y) of each row of `thetas` (`n × d`), up to a constant in
    /// θ; −∞ outside the support.
    fn log_prob(&mut self, _y: &[f64], _thetas: &[f64], _out: &mut [f64]) -> Result<(), String> {
        Err("this posterior does not implement log-prob".into())
    }
}

/// Glue between the generated bindings and the traits; used by the export
/// macros, not by plugin authors.
#[doc(hidden)]
pub mod glue {
    use super::*;
    use bindings::forward_model::exports::geohost::plugin::forward as fwd;
    use bindings::forward_model::geohost::plugin::types as fwd_types;
    use bindings::obs_operator::exports::geohost::plugin::observe as obs;
    use bindings::obs_operator::geohost::plugin::types as obs_types;
    use std::cell::RefCell;

    pub type FwdEnsemble = fwd_types::Ensemble;
    pub type FwdInfo = fwd::ModelInfo;
    pub type ObsEnsemble = obs_types::Ensemble;
    pub type ObsInfoWit = obs::ObsInfo;

    /// The configured plugin instance. Components are single-threaded, so
    /// a thread-local is simply a global.
    /// Holds the instance with the sizes from its description (input and
    /// output values per member), so calls need not rebuild the description.
    pub struct Slot<T>(RefCell<Option<(T, usize, usize)>>);

    impl<T> Default for Slot<T> {
        fn default() -> Self {
            Slot::new()
        }
    }

    impl<T> Slot<T> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }
        fn set(&self, value: T, in_size: usize, out_size: usize) {
            *self.0.borrow_mut() = Some((value, in_size, out_size));
        }
        fn with<R>(&self, f: impl FnOnce(&mut T, usize, usize) -> Result<R, String>) -> Result<R, String> {
            match self.0.borrow_mut().as_mut() {
                Some((value, in_size, out_size)) => f(value, *in_size, *out_size),
                None => Err("plugin used before init: call init(config) first".into()),
            }
        }
    }

    fn parse(config: &str) -> Result<Config, String> {
        Config::parse(config)
    }

    fn check_shape(members: u32, size: u32, len: usize, expected_size: usize) -> Result<(), String> {
        if size as usize != expected_size {
            return Err(format!("ensemble has {size} values per member, the plugin was configured for {expected_size}"));
        }
        if members as usize * size as usize != len {
            return Err(format!("ensemble data has {len} values, but members × size = {members} × {size}"));
        }
        Ok(())
    }

    use bindings::metric::exports::geohost::plugin::score;
    pub type ScoreInput = score::MetricInput;
    pub type ScoreInfo = score::MetricInfo;
    pub type ScoreValue = score::MetricValue;

    fn table<'a>(t: &'a score::Table, what: &str) -> Result<Table<'a>, String> {
        if t.rows as usize * t.cols as usize != t.data.len() {
            return Err(format!("{what} has {} values, but rows × cols = {} × {}", t.data.len(), t.rows, t.cols));
        }
        Ok(Table { rows: t.rows as usize, cols: t.cols as usize, data: &t.data })
    }

    pub fn metric_init<M: Metric>(slot: &Slot<M>, config: String) -> Result<ScoreInfo, String> {
        let metric = M::init(&parse(&config)?)?;
        let info = metric.info();
        slot.set(metric, 0, 0);
        Ok(ScoreInfo { name: info.name, version: info.version, metrics: info.metrics })
    }

    pub fn metric_compute<M: Metric>(slot: &Slot<M>, input: ScoreInput) -> Result<Vec<ScoreValue>, String> {
        slot.with(|metric, _, _| {
            let prediction = table(&input.prediction, "prediction")?;
            let reference = table(&input.reference, "reference")?;
            if (prediction.rows, prediction.cols) != (reference.rows, reference.cols) {
                return Err(format!("prediction is {} × {} but reference is {} × {}", prediction.rows, prediction.cols, reference.rows, reference.cols));
            }
            let members = match &input.members {
                None => None,
                Some(e) => {
                    if (e.rows, e.cols) != (input.reference.rows, input.reference.cols) {
                        return Err(format!("members are {} × {} per member but reference is {} × {}", e.rows, e.cols, reference.rows, reference.cols));
                    }
                    if e.members as usize * e.rows as usize * e.cols as usize != e.data.len() || e.members < 2 {
                        return Err(format!("members has {} values for {} members × {} × {} (at least 2 members)", e.data.len(), e.members, e.rows, e.cols));
                    }
                    Some(EnsembleTable { members: e.members as usize, rows: e.rows as usize, cols: e.cols as usize, data: &e.data })
                }
            };
            let results = metric.compute(&MetricInput { prediction, reference, members })?;
            Ok(results
                .into_iter()
                .map(|(name, value)| ScoreValue {
                    name,
                    value: match value {
                        Value::Scalar(x) => score::Value::Scalar(x),
                        Value::Vector(v) => score::Value::Vector(v),
                    },
                })
                .collect())
        })
    }

    use bindings::static_model::exports::geohost::plugin::simulate as sim;
    use bindings::static_model::geohost::plugin::types as sim_types;
    pub type SimEnsemble = sim_types::Ensemble;
    pub type SimInfo = sim::SimulatorInfo;

    pub fn static_init<S: StaticModel>(slot: &Slot<S>, config: String) -> Result<SimInfo, String> {
        let model = S::init(&parse(&config)?)?;
        let info = model.info();
        slot.set(model, info.parameters.len(), info.output_size);
        Ok(SimInfo {
            name: info.name,
            version: info.version,
            parameters: info.parameters.into_iter().map(|(name, units)| sim::ParameterInfo { name, units }).collect(),
            output_size: info.output_size as u32,
            output_units: info.output_units,
            settings: info.settings.into_iter().map(|p| sim_types::Parameter { name: p.name, value: p.value, units: p.units }).collect(),
            stochastic: info.stochastic,
        })
    }

    pub fn static_simulate<S: StaticModel>(slot: &Slot<S>, thetas: SimEnsemble, seed: u64) -> Result<SimEnsemble, String> {
        slot.with(|model, n_params, out_size| {
            check_shape(thetas.members, thetas.size, thetas.data.len(), n_params)?;
            let mut out = vec![0.0; thetas.members as usize * out_size];
            for (row, (theta, y)) in thetas.data.chunks_exact(n_params).zip(out.chunks_exact_mut(out_size)).enumerate() {
                // One stream per row, so a row's noise does not depend on the batch it came in.
                let mut rng = SplitMix64::new(seed ^ (row as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
                model.simulate(theta, y, &mut rng).map_err(|e| format!("row {row}: {e}"))?;
            }
            Ok(SimEnsemble { members: thetas.members, size: out_size as u32, data: out })
        })
    }

    use bindings::filter::exports::geohost::plugin::assimilate as da;
    use bindings::filter::geohost::plugin::types as da_types;
    pub type DaEnsemble = da_types::Ensemble;
    pub type DaProblem = da::Problem;
    pub type DaInfo = da::FilterInfo;

    /// The filter with its problem (kept for shape checks).
    pub struct FilterSlot<F>(RefCell<Option<(F, Problem, usize)>>);

    impl<F> Default for FilterSlot<F> {
        fn default() -> Self {
            FilterSlot::new()
        }
    }

    impl<F> FilterSlot<F> {
        pub const fn new() -> Self {
            FilterSlot(RefCell::new(None))
        }
    }

    pub fn filter_init<F: Filter>(slot: &FilterSlot<F>, config: String, problem: DaProblem) -> Result<DaInfo, String> {
        let problem = Problem {
            state_size: problem.state_size as usize,
            obs_size: problem.obs_size as usize,
            noise_variance: problem.noise_variance,
            locations: problem.locations,
            grid: problem.grid.map(|g| Grid { points: g.points as usize, periodic: g.periodic }),
            dt: problem.dt,
        };
        let filter = F::init(&parse(&config)?, &problem)?;
        let info = filter.info();
        let members = info.members;
        *slot.0.borrow_mut() = Some((filter, problem, members));
        Ok(DaInfo { name: info.name, version: info.version, members: members as u32 })
    }

    pub fn filter_analyse<F: Filter>(slot: &FilterSlot<F>, mut x: DaEnsemble, hx: DaEnsemble, y: Vec<f64>, t: f64, seed: u64) -> Result<DaEnsemble, String> {
        let mut guard = slot.0.borrow_mut();
        let Some((filter, problem, members)) = guard.as_mut() else { return Err("filter used before init: call init(config, problem) first".into()) };
        check_shape(x.members, x.size, x.data.len(), problem.state_size)?;
        check_shape(hx.members, hx.size, hx.data.len(), problem.obs_size)?;
        if x.members as usize != *members || hx.members != x.members {
            return Err(format!("expected {members} members in the forecast and its image, got {} and {}", x.members, hx.members));
        }
        if y.len() != problem.obs_size {
            return Err(format!("y has {} values, the problem has {} observations", y.len(), problem.obs_size));
        }
        let mut rng = SplitMix64::new(seed);
        filter.analyse(&mut Members { members: *members, size: problem.state_size, data: &mut x.data }, &hx.data, &y, t, &mut rng)?;
        Ok(x)
    }

    use bindings::posterior::exports::geohost::plugin::infer as inf;
    use bindings::posterior::geohost::plugin::types as inf_types;
    pub type InfEnsemble = inf_types::Ensemble;
    pub type InfInfo = inf::PosteriorInfo;

    /// Draws asked for in one call, at most: a bound on the memory one call
    /// asks the host to copy.
    pub const MAX_DRAWS: usize = 1_000_000;

    /// The posterior with its shapes (parameters, data size).
    pub struct PosteriorSlot<P>(RefCell<Option<(P, usize, usize)>>);

    impl<P> Default for PosteriorSlot<P> {
        fn default() -> Self {
            PosteriorSlot::new()
        }
    }

    impl<P> PosteriorSlot<P> {
        pub const fn new() -> Self {
            PosteriorSlot(RefCell::new(None))
        }
    }

    pub fn posterior_init<P: Posterior>(slot: &PosteriorSlot<P>, config: String) -> Result<InfInfo, String> {
        let posterior = P::init(&parse(&config)?)?;
        let info = posterior.info();
        let has_log_prob = posterior.has_log_prob();
        *slot.0.borrow_mut() = Some((posterior, info.parameters.len(), info.data_size));
        Ok(InfInfo { name: info.name, version: info.version, parameters: info.parameters, data_size: info.data_size as u32, has_log_prob })
    }

    fn posterior_checked<'a, P>(guard: &'a mut Option<(P, usize, usize)>, y: &[f64]) -> Result<(&'a mut P, usize), String> {
        let Some((posterior, d, data_size)) = guard.as_mut() else { return Err("posterior used before init: call init(config) first".into()) };
        if y.len() != *data_size {
            return Err(format!("y has {} values, the posterior takes {data_size}", y.len()));
        }
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(format!("y's value {i} is {}", y[i]));
        }
        Ok((posterior, *d))
    }

    pub fn posterior_sample<P: Posterior>(slot: &PosteriorSlot<P>, y: Vec<f64>, n: u32, seed: u64) -> Result<InfEnsemble, String> {
        let mut guard = slot.0.borrow_mut();
        let (posterior, d) = posterior_checked(&mut guard, &y)?;
        let n = n as usize;
        if n > MAX_DRAWS {
            return Err(format!("{n} draws asked for in one call; at most {MAX_DRAWS}"));
        }
        let mut out = vec![0.0; n * d];
        posterior.sample(&y, n, &mut out, &mut SplitMix64::new(seed))?;
        Ok(InfEnsemble { members: n as u32, size: d as u32, data: out })
    }

    pub fn posterior_log_prob<P: Posterior>(slot: &PosteriorSlot<P>, y: Vec<f64>, thetas: InfEnsemble) -> Result<Vec<f64>, String> {
        let mut guard = slot.0.borrow_mut();
        let (posterior, d) = posterior_checked(&mut guard, &y)?;
        check_shape(thetas.members, thetas.size, thetas.data.len(), d)?;
        let mut out = vec![0.0; thetas.members as usize];
        posterior.log_prob(&y, &thetas.data, &mut out)?;
        Ok(out)
    }

    pub fn forward_init<M: ForwardModel>(slot: &Slot<M>, config: String) -> Result<FwdInfo, String> {
        let model = M::init(&parse(&config)?)?;
        let info = model.info();
        slot.set(model, info.state_size, info.state_size);
        Ok(FwdInfo {
            name: info.name,
            version: info.version,
            state_size: info.state_size as u32,
            parameters: info.parameters.into_iter().map(|p| fwd_types::Parameter { name: p.name, value: p.value, units: p.units }).collect(),
            default_dt: info.default_dt,
            state_units: info.state_units,
            time_units: info.time_units,
            grid: info.grid.map(|g| fwd_types::Grid { points: g.points as u32, periodic: g.periodic }),
        })
    }

    pub type FwdLayout = bindings::forward_model::exports::geohost::plugin::spatial::Layout;

    pub fn forward_layout<M: ForwardModel>(slot: &Slot<M>) -> Option<FwdLayout> {
        use bindings::forward_model::exports::geohost::plugin::spatial as sp;
        let layout = slot.with(|model, _, _| Ok(model.layout())).ok().flatten()?;
        Some(sp::Layout {
            dims: layout.axes.into_iter().map(|a| sp::Dimension { name: a.name, coordinates: a.coordinates, period: a.period }).collect(),
            metric: match layout.distance {
                Distance::Euclidean => sp::Metric::Euclidean,
                Distance::GreatCircle { radius } => sp::Metric::GreatCircle(radius),
            },
            units: layout.units,
        })
    }

    pub fn obs_coordinates<H: ObsOperator>(slot: &Slot<H>, t: f64) -> Option<Vec<f64>> {
        slot.with(|op, _, _| Ok(op.coordinates(t))).ok().flatten()
    }

    pub fn forward_advance<M: ForwardModel>(slot: &Slot<M>, mut states: FwdEnsemble, t: f64, dt: f64) -> Result<FwdEnsemble, String> {
        slot.with(|model, n, _| {
            check_shape(states.members, states.size, states.data.len(), n)?;
            model.advance_ensemble(&mut states.data, n, t, dt)?;
            Ok(states)
        })
    }

    pub fn obs_init<H: ObsOperator>(slot: &Slot<H>, config: String) -> Result<ObsInfoWit, String> {
        let op = H::init(&parse(&config)?)?;
        let info = op.info();
        if info.noise_variance.len() != info.obs_size || info.locations.len() != info.obs_size {
            return Err(format!(
                "obs-info is inconsistent: obs_size {} but {} noise variances and {} locations",
                info.obs_size,
                info.noise_variance.len(),
                info.locations.len()
            ));
        }
        slot.set(op, info.state_size, info.obs_size);
        Ok(ObsInfoWit {
            name: info.name,
            version: info.version,
            state_size: info.state_size as u32,
            obs_size: info.obs_size as u32,
            noise_variance: info.noise_variance,
            locations: info.locations,
            parameters: info.parameters.into_iter().map(|p| obs_types::Parameter { name: p.name, value: p.value, units: p.units }).collect(),
            units: info.units,
        })
    }

    pub fn obs_observe<H: ObsOperator>(slot: &Slot<H>, states: ObsEnsemble, t: f64) -> Result<ObsEnsemble, String> {
        slot.with(|op, state_size, obs_size| {
            check_shape(states.members, states.size, states.data.len(), state_size)?;
            let mut out = vec![0.0; states.members as usize * obs_size];
            for (x, y) in states.data.chunks_exact(state_size).zip(out.chunks_exact_mut(obs_size)) {
                op.observe(x, y, t)?;
            }
            Ok(ObsEnsemble { members: states.members, size: obs_size as u32, data: out })
        })
    }
}

/// Export a [`ForwardModel`] implementation as the plugin's
/// `spatial-forward-model` world (`forward`, and `spatial` answering
/// [`ForwardModel::layout`]). Use once per plugin crate.
#[macro_export]
macro_rules! export_forward_model {
    ($model:ty) => {
        thread_local! {
            static __GEOHOST_MODEL: $crate::glue::Slot<$model> = const { $crate::glue::Slot::new() };
        }
        struct __GeohostForward;
        impl $crate::bindings::forward_model::exports::geohost::plugin::forward::Guest for __GeohostForward {
            fn init(config: String) -> Result<$crate::glue::FwdInfo, String> {
                __GEOHOST_MODEL.with(|slot| $crate::glue::forward_init::<$model>(slot, config))
            }
            fn advance(states: $crate::glue::FwdEnsemble, t: f64, dt: f64) -> Result<$crate::glue::FwdEnsemble, String> {
                __GEOHOST_MODEL.with(|slot| $crate::glue::forward_advance::<$model>(slot, states, t, dt))
            }
        }
        impl $crate::bindings::forward_model::exports::geohost::plugin::spatial::Guest for __GeohostForward {
            fn state_layout() -> Option<$crate::glue::FwdLayout> {
                __GEOHOST_MODEL.with(|slot| $crate::glue::forward_layout::<$model>(slot))
            }
        }
        $crate::bindings::forward_model::export!(__GeohostForward);
    };
}

/// Export a [`StaticModel`] implementation as the plugin's `static-model`
/// world. Use once per plugin crate.
#[macro_export]
macro_rules! export_static_model {
    ($model:ty) => {
        thread_local! {
            static __GEOHOST_STATIC: $crate::glue::Slot<$model> = const { $crate::glue::Slot::new() };
        }
        struct __GeohostStatic;
        impl $crate::bindings::static_model::exports::geohost::plugin::simulate::Guest for __GeohostStatic {
            fn init(config: String) -> Result<$crate::glue::SimInfo, String> {
                __GEOHOST_STATIC.with(|slot| $crate::glue::static_init::<$model>(slot, config))
            }
            fn simulate(thetas: $crate::glue::SimEnsemble, seed: u64) -> Result<$crate::glue::SimEnsemble, String> {
                __GEOHOST_STATIC.with(|slot| $crate::glue::static_simulate::<$model>(slot, thetas, seed))
            }
        }
        $crate::bindings::static_model::export!(__GeohostStatic);
    };
}

/// Export a [`Metric`] implementation as the plugin's `metric` world.
#[macro_export]
macro_rules! export_metric {
    ($metric:ty) => {
        thread_local! {
            static __GEOHOST_METRIC: $crate::glue::Slot<$metric> = const { $crate::glue::Slot::new() };
        }
        struct __GeohostMetric;
        impl $crate::bindings::metric::exports::geohost::plugin::score::Guest for __GeohostMetric {
            fn init(config: String) -> Result<$crate::glue::ScoreInfo, String> {
                __GEOHOST_METRIC.with(|slot| $crate::glue::metric_init::<$metric>(slot, config))
            }
            fn compute(input: $crate::glue::ScoreInput) -> Result<Vec<$crate::glue::ScoreValue>, String> {
                __GEOHOST_METRIC.with(|slot| $crate::glue::metric_compute::<$metric>(slot, input))
            }
        }
        $crate::bindings::metric::export!(__GeohostMetric);
    };
}

/// Export a [`Filter`] implementation as the plugin's `filter` world (a
/// benchmark submission). Use once per plugin crate.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        thread_local! {
            static __GEOHOST_FILTER: $crate::glue::FilterSlot<$filter> = const { $crate::glue::FilterSlot::new() };
        }
        struct __GeohostFilter;
        impl $crate::bindings::filter::exports::geohost::plugin::assimilate::Guest for __GeohostFilter {
            fn init(config: String, problem: $crate::glue::DaProblem) -> Result<$crate::glue::DaInfo, String> {
                __GEOHOST_FILTER.with(|slot| $crate::glue::filter_init::<$filter>(slot, config, problem))
            }
            fn analyse(
                forecast: $crate::glue::DaEnsemble,
                forecast_obs: $crate::glue::DaEnsemble,
                y: Vec<f64>,
                t: f64,
                seed: u64,
            ) -> Result<$crate::glue::DaEnsemble, String> {
                __GEOHOST_FILTER.with(|slot| $crate::glue::filter_analyse::<$filter>(slot, forecast, forecast_obs, y, t, seed))
            }
        }
        $crate::bindings::filter::export!(__GeohostFilter);
    };
}

/// Export a [`Posterior`] implementation as the plugin's `posterior` world
/// (an amortized posterior, a step-5 submission). Use once per plugin crate.
#[macro_export]
macro_rules! export_posterior {
    ($posterior:ty) => {
        thread_local! {
            static __GEOHOST_POSTERIOR: $crate::glue::PosteriorSlot<$posterior> = const { $crate::glue::PosteriorSlot::new() };
        }
        struct __GeohostPosterior;
        impl $crate::bindings::posterior::exports::geohost::plugin::infer::Guest for __GeohostPosterior {
            fn init(config: String) -> Result<$crate::glue::InfInfo, String> {
                __GEOHOST_POSTERIOR.with(|slot| $crate::glue::posterior_init::<$posterior>(slot, config))
            }
            fn sample(y: Vec<f64>, n: u32, seed: u64) -> Result<$crate::glue::InfEnsemble, String> {
                __GEOHOST_POSTERIOR.with(|slot| $crate::glue::posterior_sample::<$posterior>(slot, y, n, seed))
            }
            fn log_prob(y: Vec<f64>, thetas: $crate::glue::InfEnsemble) -> Result<Vec<f64>, String> {
                __GEOHOST_POSTERIOR.with(|slot| $crate::glue::posterior_log_prob::<$posterior>(slot, y, thetas))
            }
        }
        $crate::bindings::posterior::export!(__GeohostPosterior);
    };
}

/// Export an [`ObsOperator`] implementation as the plugin's
/// `located-obs-operator` world (`observe`, and `located` answering
/// [`ObsOperator::coordinates`]). Use once per plugin crate.
#[macro_export]
macro_rules! export_obs_operator {
    ($op:ty) => {
        thread_local! {
            static __GEOHOST_OBS: $crate::glue::Slot<$op> = const { $crate::glue::Slot::new() };
        }
        struct __GeohostObs;
        impl $crate::bindings::obs_operator::exports::geohost::plugin::observe::Guest for __GeohostObs {
            fn init(config: String) -> Result<$crate::glue::ObsInfoWit, String> {
                __GEOHOST_OBS.with(|slot| $crate::glue::obs_init::<$op>(slot, config))
            }
            fn observe(states: $crate::glue::ObsEnsemble, t: f64) -> Result<$crate::glue::ObsEnsemble, String> {
                __GEOHOST_OBS.with(|slot| $crate::glue::obs_observe::<$op>(slot, states, t))
            }
        }
        impl $crate::bindings::obs_operator::exports::geohost::plugin::located::Guest for __GeohostObs {
            fn coordinates(t: f64) -> Option<Vec<f64>> {
                __GEOHOST_OBS.with(|slot| $crate::glue::obs_coordinates::<$op>(slot, t))
            }
        }
        $crate::bindings::obs_operator::export!(__GeohostObs);
    };
}
