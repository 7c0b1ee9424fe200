//! The local ETKF (Hunt et al. 2007), as in DAPPER: the state is split into
//! batches of neighbouring grid points (pairs, for Lorenz-96); each batch
//! gets its own ETKF update from the observations near it, whose influence
//! is tapered with Gaspari–Cohn (R-localisation: the taper multiplies R⁻¹,
//! i.e. √taper multiplies the whitened anomalies and innovation). The
//! local analyses run on [`default_threads`] threads when there are enough
//! of them; the result does not depend on the number of threads.

use super::ensemble::{self, Analysis, EnsembleParams, Record, Trajectory};
use super::etkf::{transform, whiten};
use super::linalg::center;
use super::method::{DaMethod, FromParams, Params, Role};
use super::twin::Twin;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, Grid, ObsOperator};
use nalgebra::{DMatrix, DVector};

/// Observations whose taper falls below this are left out (DAPPER's cutoff).
const TAPER_CUTOFF: f64 = 1e-3;

/// Gaspari–Cohn (1999, eq. 4.10) fifth-order piecewise rational taper of
/// distance `d`, with half-width `c`: 1 at 0, 0 from 2c on.
pub fn gaspari_cohn(d: f64, c: f64) -> f64 {
    let r = d / c;
    if r <= 1.0 {
        let (r2, r3) = (r * r, r * r * r);
        1.0 + r2 * (-r3 / 4.0 + r2 / 2.0) + r3 * (5.0 / 8.0) - r2 * (5.0 / 3.0)
    } else if r <= 2.0 {
        let (r2, r3) = (r * r, r * r * r);
        r2 * (r3 / 12.0 - r2 / 2.0) + r3 * (5.0 / 8.0) + r2 * (5.0 / 3.0) - r * 5.0 + 4.0 - (2.0 / 3.0) / r
    } else {
        0.0
    }
}

/// A batch of state indices and the tapered observations it uses.
struct LocalDomain {
    state: Vec<usize>,
    obs: Vec<usize>,
    sqrt_taper: Vec<f64>,
}

/// `method = "letkf"`: the LETKF with `N` members, inflation, rotations and
/// localisation radius `loc_rad` (grid units; `inf` for none). It needs the
/// forward model's grid.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LETKF {
    #[serde(flatten)]
    pub ensemble: EnsembleParams,
    pub loc_rad: f64,
}

impl FromParams for LETKF {
    fn from_params(p: &mut Params) -> Result<LETKF> {
        let ensemble = EnsembleParams::from_params(p)?;
        let loc_rad = p.f64("loc_rad")?.with_context(|| format!("{}: `loc_rad` (localisation radius, grid units) is required", p.at()))?;
        if loc_rad.is_nan() || loc_rad <= 0.0 {
            anyhow::bail!("{}: `loc_rad` must be positive (use inf for no localisation), got {loc_rad}", p.at());
        }
        Ok(LETKF { ensemble, loc_rad })
    }
}

impl DaMethod for LETKF {
    fn tag(&self) -> &'static str {
        "LETKF"
    }
    fn label(&self) -> String {
        format!("{} loc_rad={}", self.ensemble.label("LETKF"), self.loc_rad)
    }
    fn role(&self) -> Role {
        Role::Oracle
    }
    fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        rng: &mut rand_chacha::ChaCha8Rng,
        record: Record,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        let grid = model.info().grid.ok_or_else(|| anyhow::anyhow!("LETKF needs a spatial grid, but forward model `{}` declares none", model.info().name))?;
        let mut letkf = Letkf::new(grid, &obs.info().locations, self.loc_rad, 2);
        ensemble::cycle(twin, model, obs, self.ensemble.n, &mut letkf, self.ensemble.post_process(), record, rng, progress)
    }
}

pub struct Letkf {
    domains: Vec<LocalDomain>,
    /// Threads the local analyses are split over.
    threads: usize,
}

/// Fewest local domains per thread: below this a thread costs more than
/// it saves (Lorenz-96's 20 pairs run on one).
const DOMAINS_PER_THREAD: usize = 64;

/// Threads for the local analyses: `GEOHOST_THREADS` when set (≥ 1), else
/// the machine's available parallelism.
pub fn default_threads() -> usize {
    std::env::var("GEOHOST_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&t| t >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Letkf {
    /// Set up the local domains once: batches of `batch` consecutive grid
    /// points; `loc_rad` in grid units (the GC half-width is 1.82·loc_rad,
    /// DAPPER's convention; `f64::INFINITY` means no localisation).
    pub fn new(grid: Grid, obs_locations: &[f64], loc_rad: f64, batch: usize) -> Letkf {
        let c = 1.82 * loc_rad;
        // The observations by coordinate: a domain's candidates are those
        // within the taper's support 2c of its centre (or of the centre
        // shifted by a period), found by binary search instead of a scan.
        let mut by_location: Vec<(f64, usize)> = obs_locations.iter().copied().zip(0..).collect();
        by_location.sort_by(|a, b| a.0.total_cmp(&b.0));
        let within = |x: f64, out: &mut Vec<usize>| {
            let lo = by_location.partition_point(|(l, _)| *l < x - 2.0 * c);
            let hi = by_location.partition_point(|(l, _)| *l <= x + 2.0 * c);
            out.extend(by_location[lo..hi].iter().map(|(_, j)| *j));
        };
        let domains = (0..grid.points)
            .step_by(batch)
            .map(|start| {
                let state: Vec<usize> = (start..(start + batch).min(grid.points)).collect();
                let centre = state.iter().map(|&i| i as f64).sum::<f64>() / state.len() as f64;
                let mut candidates = Vec::new();
                if loc_rad.is_infinite() {
                    candidates.extend(0..obs_locations.len());
                } else {
                    within(centre, &mut candidates);
                    if grid.periodic {
                        within(centre - grid.points as f64, &mut candidates);
                        within(centre + grid.points as f64, &mut candidates);
                    }
                    // In observation order, as a scan would give them (the
                    // local analysis sums in this order).
                    candidates.sort_unstable();
                    candidates.dedup();
                }
                let (obs, sqrt_taper) = candidates
                    .into_iter()
                    .filter_map(|j| {
                        let taper = if loc_rad.is_infinite() { 1.0 } else { gaspari_cohn(grid.distance(centre, obs_locations[j]), c) };
                        (taper > TAPER_CUTOFF).then_some((j, taper.sqrt()))
                    })
                    .unzip();
                LocalDomain { state, obs, sqrt_taper }
            })
            .collect();
        Letkf { domains, threads: default_threads() }
    }

    /// Split the local analyses over `threads` threads (at least one);
    /// the analysis is the same to the bit whatever the number.
    pub fn with_threads(mut self, threads: usize) -> Letkf {
        self.threads = threads.max(1);
        self
    }
}

/// One local domain's analysis: its rows of the updated ensemble
/// (`state.len() × N`), or `None` when no observation is near.
fn local_analysis(domain: &LocalDomain, mu: &DVector<f64>, a: &DMatrix<f64>, s: &DMatrix<f64>, dy: &DVector<f64>) -> Option<DMatrix<f64>> {
    if domain.obs.is_empty() {
        return None; // nothing nearby: the forecast stands
    }
    let n = a.ncols();
    let s_loc = DMatrix::from_fn(domain.obs.len(), n, |jl, k| s[(domain.obs[jl], k)] * domain.sqrt_taper[jl]);
    let dy_loc = DVector::from_fn(domain.obs.len(), |jl, _| dy[domain.obs[jl]] * domain.sqrt_taper[jl]);
    let (w, t) = transform(&s_loc, &dy_loc);
    let a_loc = a.select_rows(&domain.state);
    let update = &a_loc * t; // anomalies
    let dmu = &a_loc * w;
    Some(DMatrix::from_fn(domain.state.len(), n, |il, k| mu[domain.state[il]] + dmu[il] + update[(il, k)]))
}

impl Analysis for Letkf {
    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, _rng: &mut dyn rand::RngCore) -> Result<()> {
        let (mu, a) = center(e);
        let (s, dy) = whiten(eo, y, r);
        // The local analyses are independent: contiguous shares of the
        // domains on scoped threads, each writing its own rows afterwards.
        let threads = self.threads.min(self.domains.len() / DOMAINS_PER_THREAD).max(1);
        let share = self.domains.len().div_ceil(threads);
        let results: Vec<Option<DMatrix<f64>>> = if threads == 1 {
            self.domains.iter().map(|d| local_analysis(d, &mu, &a, &s, &dy)).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .domains
                    .chunks(share)
                    .map(|chunk| {
                        let (mu, a, s, dy) = (&mu, &a, &s, &dy);
                        scope.spawn(move || chunk.iter().map(|d| local_analysis(d, mu, a, s, dy)).collect::<Vec<_>>())
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().expect("a local analysis thread panicked")).collect()
            })
        };
        for (domain, rows) in self.domains.iter().zip(results) {
            if let Some(rows) = rows {
                for (il, &i) in domain.state.iter().enumerate() {
                    e.row_mut(i).copy_from(&rows.row(il));
                }
            }
        }
        Ok(())
    }
}
