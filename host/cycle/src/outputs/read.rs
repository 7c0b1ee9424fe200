//! Reading geohost's NetCDF files back (for scoring): `truth.nc` and a
//! method's output file, from disk or from registry bytes.
//!
//! Errors name the file and the variable or attribute that is missing or
//! malformed, and say which geohost file was expected.

use anyhow::{bail, Result};
pub use geohost_netcdf::Array2;
use geohost_netcdf::Reader;

/// The truth of a twin experiment (`truth.nc`).
#[derive(Debug)]
pub struct TruthFile {
    pub times: Vec<f64>,
    pub truth: Array2,
    /// Observations per time (`None` in a forecast reference, whose input
    /// is an initial state).
    pub obs_size: Option<usize>,
    /// For a forecast reference: the initial state of each case
    /// (`case × state`) and the rows per case.
    pub forecast: Option<(Array2, usize)>,
}

/// One method's output file.
#[derive(Clone, Debug)]
pub struct AnalysisFile {
    pub times: Vec<f64>,
    pub analysis_mean: Array2,
    /// BLAKE3 id of the `truth.nc` the method was run against.
    pub truth: String,
    /// The method's label (e.g. `ETKF N=28 infl=1.02 rot`).
    pub method: String,
    /// Kept analysis ensembles, when the run kept any.
    pub members: Option<Members>,
}

/// Analysis ensembles at `times`: `data` is `(time, member, state)`.
#[derive(Clone, Debug)]
pub struct Members {
    pub times: Vec<f64>,
    pub members: usize,
    pub state: usize,
    pub data: Vec<f64>,
}

impl Members {
    /// Member `j` at kept time `t`.
    pub fn at(&self, t: usize, j: usize) -> &[f64] {
        let start = (t * self.members + j) * self.state;
        &self.data[start..start + self.state]
    }
}

/// What these readers expect, for errors.
const RUN_FILE: &str = "a file written by `geohost run`";

impl TruthFile {
    /// Parse `truth.nc` bytes; `label` names the file in errors.
    pub fn parse(label: &str, bytes: Vec<u8>) -> Result<TruthFile> {
        let mut r = Reader::open(label, bytes, RUN_FILE)?;
        let (k, m) = (r.dim("time")?, r.dim("state")?);
        let times = r.var("time", k)?;
        let truth = Array2 { rows: k, cols: m, data: r.var("truth", k * m)? };
        if r.has_var("initial") {
            let cases = r.dim("case")?;
            let initial = Array2 { rows: cases, cols: m, data: r.var("initial", cases * m)? };
            if cases == 0 || k % cases != 0 {
                bail!("{label}: {k} forecast rows are not a whole number of leads for {cases} cases");
            }
            return Ok(TruthFile { times, truth, obs_size: None, forecast: Some((initial, k / cases)) });
        }
        Ok(TruthFile { times, truth, obs_size: Some(r.dim("obs")?), forecast: None })
    }
}

impl AnalysisFile {
    /// Parse a method's output bytes; `label` names the file in errors.
    pub fn parse(label: &str, bytes: Vec<u8>) -> Result<AnalysisFile> {
        let mut r = Reader::open(label, bytes, RUN_FILE)?;
        if r.has_var("truth") {
            bail!("{label} is a truth/observations file, not a method's output; pass one of the method files beside it");
        }
        let (k, m) = (r.dim("time")?, r.dim("state")?);
        let times = r.var("time", k)?;
        let analysis_mean = Array2 { rows: k, cols: m, data: r.var("analysis_mean", k * m)? };
        let members = if r.has_var("analysis_members") {
            let (kt, n) = (r.dim("member_time")?, r.dim("member")?);
            Some(Members { times: r.var("member_time", kt)?, members: n, state: m, data: r.var("analysis_members", kt * n * m)? })
        } else {
            None
        };
        Ok(AnalysisFile { times, analysis_mean, truth: r.attr("truth")?, method: r.attr("method")?, members })
    }
}

/// `observation.nc` of a static run: the true parameters and y.
pub struct ObservationFile {
    pub truth: Vec<f64>,
    pub y: Vec<f64>,
}

impl ObservationFile {
    pub fn parse(label: &str, bytes: Vec<u8>) -> Result<ObservationFile> {
        let mut r = Reader::open(label, bytes, RUN_FILE)?;
        if !r.has_var("y") {
            bail!("{label}: no variable `y`; expected an observation.nc written by `geohost run` on a static plugin-set");
        }
        let (d, p) = (r.dim("parameter")?, r.dim("obs")?);
        Ok(ObservationFile { truth: r.var("truth", d)?, y: r.var("y", p)? })
    }
}
