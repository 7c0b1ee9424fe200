//! Forecast references, for contracts that score an emulator against its
//! model (step 3): free forecasts of the model from states on its
//! attractor, and the same forecasts made by a candidate emulator.
//!
//! The initial states are the twin experiment's truth at `cases` cycles,
//! `spacing` cycles apart, from the first cycle after the burn-in; each is
//! advanced `leads` model steps. The reference file is NetCDF:
//! `truth(time, state)` with rows case-major (case c, lead l at row
//! c·leads + l), `time` the lead time, `initial(case, state)`.

use crate::outputs::read::{AnalysisFile, Array2, TruthFile};
use crate::pluginset::Loaded;
use crate::progress::ProgressFactory;
use anyhow::{bail, Context, Result};
use geohost_learn::neural::NeuralForward;
use geohost_sandbox::model::ForwardModel;
use geohost_sandbox::Runtime;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForecastSpec {
    /// The plugin-set whose model and twin experiment give the forecasts.
    pub plugin_set: PathBuf,
    pub cases: usize,
    /// Cycles between initial states.
    pub spacing: usize,
    /// Model steps per forecast.
    pub leads: usize,
}

/// The model's forecasts, as reference bytes, with the run that made the
/// twin (to register its plugins and truth).
pub struct Generated {
    pub bytes: Vec<u8>,
    pub run: crate::run::RunOutput,
}

/// The lead a forecast failed at (1-based), as context on its error: a
/// submitted emulator's disqualification names it.
#[derive(Clone, Copy, Debug)]
pub struct ForecastLead(pub usize);

impl std::fmt::Display for ForecastLead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "forecast lead {}", self.0)
    }
}

/// Advance `initial` (`state × cases`) `leads` steps of `dt` with `model`,
/// collecting rows case-major.
pub fn forecast(model: &mut dyn ForwardModel, initial: &DMatrix<f64>, leads: usize, dt: f64) -> Result<Array2> {
    let (m, cases) = initial.shape();
    let mut e = initial.clone();
    let mut data = vec![0.0; cases * leads * m];
    for l in 0..leads {
        model.advance(&mut e, l as f64 * dt, dt).with_context(|| ForecastLead(l + 1))?;
        for c in 0..cases {
            let row = c * leads + l;
            data[row * m..(row + 1) * m].copy_from_slice(e.column(c).as_slice());
        }
    }
    Ok(Array2 { rows: cases * leads, cols: m, data })
}

/// Generate the reference: the twin (no methods), then the model's
/// forecasts from its truth.
pub fn generate(
    set: &Loaded,
    spec: &ForecastSpec,
    runtime: &Runtime,
    registry: Option<&mut geohost_registry::Registry>,
    progress: &mut ProgressFactory<'_>,
) -> Result<Generated> {
    if spec.cases == 0 || spec.spacing == 0 || spec.leads == 0 {
        bail!("field `reference.forecasts`: cases, spacing and leads must be at least 1");
    }
    let registry_ro = registry.as_deref().map(|r| r as &geohost_registry::Registry);
    let (mut model, record, _) = crate::run::load_model(runtime, registry_ro, set)?;
    let run = crate::run::run(set, runtime, registry, None, progress, Default::default()).context("generating the reference experiment")?;
    let twin = &run.twin;
    let first = twin.times.iter().position(|t| *t > twin.chronology.burn_in).context("no cycle after the burn-in to start forecasts from")?;
    let last = first + (spec.cases - 1) * spec.spacing;
    if last >= twin.times.len() {
        bail!(
            "field `reference.forecasts`: {} cases {} cycles apart need {} cycles after the burn-in, but the experiment has {}",
            spec.cases,
            spec.spacing,
            last - first + 1,
            twin.times.len() - first
        );
    }
    let m = twin.truth.nrows();
    let initial = DMatrix::from_fn(m, spec.cases, |i, c| twin.truth[(i, first + c * spec.spacing)]);
    let dt = twin.chronology.dt;
    let forecasts = forecast(model.as_mut(), &initial, spec.leads, dt)?;
    let times: Vec<f64> = (0..spec.cases).flat_map(|_| (0..spec.leads).map(|l| (l + 1) as f64 * dt)).collect();

    use geohost_netcdf::{common_attrs, nc_bytes, Var};
    let spec_json = serde_json::json!({ "cases": spec.cases, "spacing": spec.spacing, "leads": spec.leads, "first_cycle": first, "dt": dt });
    let mut attrs = common_attrs();
    attrs.extend([
        ("kind", "forecasts".to_string()),
        ("model", format!("{} {} ({})", run.model.name, run.model.version, record.blake3)),
        ("forecasts", spec_json.to_string()),
    ]);
    let units = run.model.state_units.as_str();
    let bytes = nc_bytes(
        &[("time", forecasts.rows), ("state", m), ("case", spec.cases)],
        &[
            Var { name: "time", dims: &["time"], data: &times, units: &run.model.time_units, long_name: "lead time" },
            Var { name: "truth", dims: &["time", "state"], data: &forecasts.data, units, long_name: "model forecast (rows: case-major, lead within case)" },
            // `initial` is state × case, column-major: case-major rows as stored.
            Var { name: "initial", dims: &["case", "state"], data: initial.as_slice(), units, long_name: "initial state of each forecast" },
        ],
        &attrs,
    );
    Ok(Generated { bytes: bytes?, run })
}

/// A weights candidate's forecasts from the reference's initial states,
/// as an output the scorer reads like any other.
pub fn emulate(id: &str, name: &str, weights: &[u8], reference: &TruthFile, reference_id: &str) -> Result<AnalysisFile> {
    if reference.forecast.is_none() {
        bail!("{id} ({name}) is an emulator's weights; it can only be scored against a forecast reference ([reference] forecasts = …)");
    }
    let mut emulator = NeuralForward::from_bytes(id, weights)?;
    forecast_reference(&mut emulator, name, reference, reference_id).with_context(|| format!("forecasting with emulator {name} ({id})"))
}

/// Any model's forecasts from a forecast reference's initial states, as
/// an output labelled `name` (an emulator's weights, or a submitted
/// `forward-model` component).
pub fn forecast_reference(model: &mut dyn ForwardModel, name: &str, reference: &TruthFile, reference_id: &str) -> Result<AnalysisFile> {
    let Some((initial, leads)) = &reference.forecast else {
        bail!("the reference {reference_id} is not a forecast reference ([reference] forecasts = …)");
    };
    let dt = reference.times[0];
    // `initial` is case × state row-major: as a state × case matrix.
    let start = DMatrix::from_row_slice(initial.rows, initial.cols, &initial.data).transpose();
    let prediction = forecast(model, &start, *leads, dt)?;
    Ok(AnalysisFile { times: reference.times.clone(), analysis_mean: prediction, truth: reference_id.to_string(), method: name.to_string(), members: None })
}
