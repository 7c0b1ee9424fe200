//! The forward-model and observation-operator traits the DA core is written
//! against. The wasm adapters of this crate and the native reference
//! models (`geohost_da::models`) implement them, so swapping a forward model
//! never touches DA code.
//!
//! Ensembles are `state_size × members` matrices: one column per member.
//! nalgebra stores them column-major, which is exactly the row-major
//! `members × size` layout of the WIT `ensemble` record, so crossing the
//! boundary is a single copy.

use anyhow::Result;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// A named parameter value as a plugin reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    pub value: f64,
    pub units: String,
}

impl Parameter {
    /// A parameter as a plugin reported it, its texts made
    /// [`printable`](crate::printable).
    pub(crate) fn from_plugin(name: &str, value: f64, units: &str) -> Parameter {
        Parameter { name: crate::printable(name), value, units: crate::printable(units) }
    }
}

/// A 1-D grid on which state variable `i` sits at coordinate `i`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub points: usize,
    pub periodic: bool,
}

impl Grid {
    /// Distance between two coordinates on this grid (wrapping if periodic).
    pub fn distance(&self, a: f64, b: f64) -> f64 {
        let d = (a - b).abs();
        if self.periodic {
            d.min(self.points as f64 - d)
        } else {
            d
        }
    }
}

/// One axis of a [`Layout`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    /// The points' coordinates along this axis, strictly increasing.
    pub coordinates: Vec<f64>,
    /// The axis' period when it wraps around.
    pub period: Option<f64>,
}

/// How distances between points of a [`Layout`] are measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Metric {
    /// Euclidean in the coordinates; periodic axes wrap.
    Euclidean,
    /// Great-circle distance on a sphere of `radius`; axes `lat`, `lon` in degrees.
    GreatCircle { radius: f64 },
}

/// Where a model's state variables sit: a grid of `axes` (slowest-varying
/// first; state index = row-major over the axes) and a metric. The
/// LETKF localises with [`Layout::distance`] between coordinates.
///
/// Invariants (checked by [`Layout::check`] when a plugin hands one over):
/// at least one axis, every axis non-empty with finite strictly increasing
/// coordinates, a period (if any) longer than the axis' span, and for the
/// great-circle metric exactly the axes `lat` (within ±90) and `lon` and a
/// positive radius.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub axes: Vec<Axis>,
    pub metric: Metric,
    pub units: String,
}

impl Layout {
    /// The 1-D ring or line of a legacy [`Grid`]: variable `i` at `i`,
    /// wrapping with period `points` if periodic.
    pub fn of_grid(grid: Grid) -> Layout {
        Layout {
            axes: vec![Axis {
                name: "i".into(),
                coordinates: (0..grid.points).map(|i| i as f64).collect(),
                period: grid.periodic.then_some(grid.points as f64),
            }],
            metric: Metric::Euclidean,
            units: "grid points".into(),
        }
    }

    /// A Cartesian grid with `shape[k]` points at 0, 1, … along axis k
    /// (coordinates in grid points), none periodic.
    pub fn cartesian(names: &[&str], shape: &[usize]) -> Layout {
        Layout {
            axes: names
                .iter()
                .zip(shape)
                .map(|(name, &n)| Axis { name: (*name).into(), coordinates: (0..n).map(|i| i as f64).collect(), period: None })
                .collect(),
            metric: Metric::Euclidean,
            units: "grid points".into(),
        }
    }

    /// Number of axes (coordinates per point).
    pub fn ndim(&self) -> usize {
        self.axes.len()
    }

    /// Number of points: the product of the axes' lengths.
    pub fn size(&self) -> usize {
        self.axes.iter().map(|a| a.coordinates.len()).product()
    }

    /// Points along each axis.
    pub fn shape(&self) -> Vec<usize> {
        self.axes.iter().map(|a| a.coordinates.len()).collect()
    }

    /// The coordinates of state variable `index` into `out` (`ndim` long).
    pub fn point(&self, mut index: usize, out: &mut [f64]) {
        for (k, axis) in self.axes.iter().enumerate().rev() {
            let n = axis.coordinates.len();
            out[k] = axis.coordinates[index % n];
            index /= n;
        }
    }

    /// Distance between two points given by their coordinates.
    pub fn distance(&self, a: &[f64], b: &[f64]) -> f64 {
        match self.metric {
            Metric::Euclidean => {
                let along = |k: usize| {
                    let d = (a[k] - b[k]).abs();
                    match self.axes[k].period {
                        Some(p) => {
                            let d = d % p;
                            d.min(p - d)
                        }
                        None => d,
                    }
                };
                if self.axes.len() == 1 {
                    along(0) // no square root: a 1-D distance is exact
                } else {
                    (0..self.axes.len()).map(|k| along(k).powi(2)).sum::<f64>().sqrt()
                }
            }
            Metric::GreatCircle { radius } => {
                // Haversine, well conditioned at small distances.
                let (lat1, lon1, lat2, lon2) = (a[0].to_radians(), a[1].to_radians(), b[0].to_radians(), b[1].to_radians());
                let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
                2.0 * radius * h.sqrt().min(1.0).asin()
            }
        }
    }

    /// How far two points' first coordinates may differ when they are at
    /// most `distance` apart (for a search sorted by the first axis).
    pub fn first_axis_reach(&self, distance: f64) -> f64 {
        match self.metric {
            Metric::Euclidean => distance,
            Metric::GreatCircle { radius } => (distance / radius).to_degrees(),
        }
    }

    /// Check the invariants for a model with `state_size` variables; the
    /// message says what is wrong.
    pub fn check(&self, state_size: usize) -> Result<(), String> {
        if self.axes.is_empty() {
            return Err("the layout has no axes".into());
        }
        for axis in &self.axes {
            let c = &axis.coordinates;
            if c.is_empty() {
                return Err(format!("layout axis `{}` has no points", axis.name));
            }
            if let Some(i) = (0..c.len()).find(|&i| !c[i].is_finite() || (i > 0 && c[i] <= c[i - 1])) {
                return Err(format!("layout axis `{}`: coordinates must be finite and strictly increasing, but point {i} is {}", axis.name, c[i]));
            }
            if let Some(p) = axis.period {
                if !(p.is_finite() && p > c[c.len() - 1] - c[0]) {
                    return Err(format!("layout axis `{}`: period {p} must be finite and longer than the axis' span {}", axis.name, c[c.len() - 1] - c[0]));
                }
            }
        }
        let size = self.axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.coordinates.len()));
        if size != Some(state_size) {
            let shape: Vec<String> = self.axes.iter().map(|a| format!("{} {}", a.coordinates.len(), a.name)).collect();
            return Err(format!(
                "the layout has {} points ({}) but the state has {state_size} variables",
                size.map_or("too many".into(), |n| n.to_string()),
                shape.join(" × ")
            ));
        }
        if let Metric::GreatCircle { radius } = self.metric {
            let names: Vec<&str> = self.axes.iter().map(|a| a.name.as_str()).collect();
            if names != ["lat", "lon"] {
                return Err(format!("the great-circle metric needs the axes `lat` and `lon` (in that order), got {names:?}"));
            }
            if !(radius.is_finite() && radius > 0.0) {
                return Err(format!("the great-circle metric needs a positive radius, got {radius}"));
            }
            if self.axes[0].coordinates.iter().any(|l| l.abs() > 90.0) {
                return Err("latitudes must lie within ±90 degrees".into());
            }
        }
        Ok(())
    }

    /// Check observation coordinates (`obs_size` rows of `ndim` values) against this layout.
    pub fn check_points(&self, coordinates: &[f64], obs_size: usize) -> Result<(), String> {
        if coordinates.len() != obs_size * self.ndim() {
            return Err(format!(
                "{} coordinates for {obs_size} observations on a {}-axis layout (expected {})",
                coordinates.len(),
                self.ndim(),
                obs_size * self.ndim()
            ));
        }
        if let Some(i) = coordinates.iter().position(|v| !v.is_finite()) {
            return Err(format!("observation {}'s coordinate along `{}` is {}", i / self.ndim(), self.axes[i % self.ndim()].name, coordinates[i]));
        }
        Ok(())
    }
}

/// What a forward model says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub parameters: Vec<Parameter>,
    pub default_dt: f64,
    pub state_units: String,
    pub time_units: String,
    pub grid: Option<Grid>,
    /// The state's layout when the model describes one (a
    /// `spatial-forward-model`); see [`ModelInfo::layout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

impl ModelInfo {
    /// The state's layout: the one the model described, else its 1-D grid's.
    pub fn layout(&self) -> Option<Layout> {
        self.layout.clone().or_else(|| self.grid.map(Layout::of_grid))
    }
}

/// What an observation operator says about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObsInfo {
    pub name: String,
    pub version: String,
    pub state_size: usize,
    pub obs_size: usize,
    /// Diagonal of the observation-error covariance R.
    pub noise_variance: Vec<f64>,
    /// Grid coordinate of each observation.
    pub locations: Vec<f64>,
    pub parameters: Vec<Parameter>,
    pub units: String,
}

/// What a static simulator says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimulatorInfo {
    pub name: String,
    pub version: String,
    /// Names and units of the parameters θ, in row order.
    pub parameters: Vec<ParameterInfo>,
    pub output_size: usize,
    pub output_units: String,
    /// Fixed settings resolved from its config.
    pub settings: Vec<Parameter>,
    pub stochastic: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterInfo {
    pub name: String,
    pub units: String,
}

/// y = G(θ) for a batch of parameter vectors: the step-5 simulators.
pub trait Simulator {
    fn info(&self) -> &SimulatorInfo;
    /// Simulate every column of `thetas` (`parameters × batch`); returns
    /// `output_size × batch`. The same thetas and seed give the same
    /// output. Fails on a simulator error, a wrong shape or non-finite
    /// output.
    fn simulate(&mut self, thetas: &DMatrix<f64>, seed: u64) -> Result<DMatrix<f64>>;
}

/// x(t + dt) = M(x(t)) applied to a whole ensemble at once.
pub trait ForwardModel {
    fn info(&self) -> &ModelInfo;
    /// Advance every column of `states` (`state_size × members`) in place.
    /// Fails if the model fails or returns a wrong shape or non-finite values.
    fn advance(&mut self, states: &mut DMatrix<f64>, t: f64, dt: f64) -> Result<()>;
}

/// y = H(x) applied to a whole ensemble at once.
pub trait ObsOperator {
    fn info(&self) -> &ObsInfo;
    /// Observe every column of `states`; returns `obs_size × members`.
    fn observe(&mut self, states: &DMatrix<f64>, t: f64) -> Result<DMatrix<f64>>;
    /// [`ObsOperator::observe`] of the members `columns` of `states` only
    /// (`obs_size × columns.len()`): what a share of the members on its
    /// own thread asks for. The default copies the columns out first; an
    /// operator that copies its input anyway overrides it to copy once.
    fn observe_columns(&mut self, states: &DMatrix<f64>, columns: std::ops::Range<usize>, t: f64) -> Result<DMatrix<f64>> {
        self.observe(&states.columns(columns.start, columns.len()).into_owned(), t)
    }
    /// The observations' coordinates at time `t` in the model's layout
    /// (`obs_size` rows of one value per axis), when the operator gives
    /// them; `None` means its 1-D `locations` hold at every time.
    fn coordinates(&mut self, _t: f64) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
}

/// Check a model/operator pair fits together before anything runs.
pub fn check_pair(model: &ModelInfo, obs: &ObsInfo) -> Result<()> {
    anyhow::ensure!(
        model.state_size == obs.state_size,
        "shape mismatch: forward model `{}` has state size {}, but observation operator `{}` expects {}",
        model.name,
        model.state_size,
        obs.name,
        obs.state_size
    );
    anyhow::ensure!(
        obs.noise_variance.len() == obs.obs_size && obs.locations.len() == obs.obs_size,
        "observation operator `{}` describes {} observations but gives {} noise variances and {} locations",
        obs.name,
        obs.obs_size,
        obs.noise_variance.len(),
        obs.locations.len()
    );
    if let Some((j, v)) = obs.noise_variance.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        anyhow::bail!(
            "observation operator `{}` gives observation {j} an error variance of {v}: data assimilation weighs observations by R⁻¹ and needs R > 0 and finite (a noise-free operator is only for static simulators with noise of their own); give it a positive variance",
            obs.name
        );
    }
    Ok(())
}

/// The first non-finite entry of an ensemble, as (member, index).
pub fn first_non_finite(states: &DMatrix<f64>) -> Option<(usize, usize)> {
    let pos = states.as_slice().iter().position(|v| !v.is_finite())?;
    Some((pos / states.nrows(), pos % states.nrows()))
}
