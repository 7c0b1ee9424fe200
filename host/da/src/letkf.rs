//! The local ETKF (Hunt et al. 2007), as in DAPPER: the state is split into
//! batches of neighbouring grid points (pairs, for Lorenz-96); each batch
//! gets its own ETKF update from the observations near it, whose influence
//! is tapered with Gaspari–Cohn (R-localisation: the taper multiplies R⁻¹,
//! i.e. √taper multiplies the whitened anomalies and innovation), the
//! transform applied to the batch's rows without forming it
//! ([`super::etkf::apply_transform_into`]). The local analyses are split over the ranks of an MPI job ([`Team`]) and,
//! within a process, over [`default_threads`] threads when there are
//! enough of them; the result does not depend on either number.

use super::ensemble::{self, Analysis, EnsembleParams, Execution, Trajectory};
use super::etkf::{apply_transform_into, TransformWork};
use super::linalg::{buffer_matrix, buffer_slice, mean_on, padded_len, padded_transpose_on};
use super::method::{DaMethod, FromParams, Params, Role};
use super::pool::{threads_for, unpoisoned, Pool};
use super::team::{share, Solo, Team};
use super::twin::Twin;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, Layout, ObsOperator};
use nalgebra::{DMatrix, DVector};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// A batch of neighbouring state variables: their indices and centre.
struct Batch {
    state: Vec<usize>,
    centre: Vec<f64>,
}

/// The tapered observations one batch uses (indices in ascending order).
#[derive(Default)]
struct LocalObs {
    obs: Vec<usize>,
    sqrt_taper: Vec<f64>,
}

/// `method = "letkf"`: the LETKF with `N` members, inflation, rotations and
/// localisation radius `loc_rad` (in the layout's units, grid points for a
/// 1-D grid; `inf` for none). It needs the forward model's layout (or 1-D
/// grid) and, on a layout of more than one axis, the operator's
/// observation coordinates.
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
        execution: Execution<'_>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        let info = model.info();
        let layout = info.layout().ok_or_else(|| anyhow::anyhow!("LETKF needs a spatial grid or layout, but forward model `{}` declares none", info.name))?;
        // Until the operator says otherwise (per cycle, in `locate`), its
        // fixed 1-D locations; a layout of more axes waits for coordinates.
        let initial = if layout.ndim() == 1 { obs.info().locations.clone() } else { Vec::new() };
        let mut letkf = Letkf::new(layout, &initial, self.loc_rad, 2).with_team(execution.team);
        if let Some(&t) = twin.times.first() {
            letkf.locate(obs, t)?; // refuse an operator without coordinates before any forecast
        }
        ensemble::cycle(twin, model, obs, self.ensemble.n, &mut letkf, self.ensemble.post_process(), execution, rng, progress)
    }
}

/// The LETKF's analysis step on a fixed layout, its local domains split
/// over the ranks of a [`Team`] and, within a rank, over threads.
pub struct Letkf<'t> {
    layout: Layout,
    loc_rad: f64,
    batches: Vec<Batch>,
    /// Per batch, the observations near it (for `observed`'s coordinates).
    local: Vec<LocalObs>,
    /// The coordinates the local observation lists were built for.
    observed: Vec<f64>,
    /// Threads the local analyses are split over.
    threads: usize,
    /// The processes sharing the local analyses (contiguous shares).
    team: &'t dyn Team,
    /// Per thread, its buffers; per chunk of batches, the rows the last
    /// analysis produced ([`Letkf::local_analyses`]).
    work: Vec<Mutex<LocalWork>>,
    rows: Vec<Vec<f64>>,
    /// This rank's state rows (its batches' points, batch after batch),
    /// where each of its batches starts among them, and 0, 1, … as long:
    /// how [`Analysis::analyse_rows`] finds a batch's rows.
    rank_rows: Vec<usize>,
    rank_offsets: Vec<usize>,
    positions: Vec<usize>,
    /// The observations this rank's batches use, under a decomposed cycle.
    halo: Halo,
}

/// Fewest local domains per thread: below this a thread costs more than
/// it saves (Lorenz-96's 20 pairs run on one).
const DOMAINS_PER_THREAD: usize = 64;

/// Chunks of batches per thread in a threaded analysis: enough that the
/// threads finish together, few enough that taking one costs nothing.
const CHUNKS_PER_THREAD: usize = 16;

/// Threads for the local analyses: `GEOHOST_THREADS` when set (≥ 1), else
/// the machine's available parallelism.
pub fn default_threads() -> usize {
    std::env::var("GEOHOST_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&t| t >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The state split into blocks of `batch` points along every axis (the
/// last block of an axis may be shorter), blocks and the points in each
/// in row-major order; a block's centre is the mean of its points'
/// coordinates.
fn batches(layout: &Layout, batch: usize) -> Vec<Batch> {
    let shape = layout.shape();
    let blocks: Vec<usize> = shape.iter().map(|&n| n.div_ceil(batch)).collect();
    let ndim = shape.len();
    let mut out = Vec::with_capacity(blocks.iter().product());
    let mut point = vec![0.0; ndim];
    for b in 0..blocks.iter().product::<usize>() {
        // This block's position along each axis, then its points.
        let mut corner = vec![0; ndim];
        let mut rest = b;
        for k in (0..ndim).rev() {
            corner[k] = (rest % blocks[k]) * batch;
            rest /= blocks[k];
        }
        let extent: Vec<usize> = (0..ndim).map(|k| (shape[k] - corner[k]).min(batch)).collect();
        let count: usize = extent.iter().product();
        let mut state = Vec::with_capacity(count);
        for offset in 0..count {
            let (mut index, mut rest) = (0, offset);
            let mut along = vec![0; ndim];
            for k in (0..ndim).rev() {
                along[k] = corner[k] + rest % extent[k];
                rest /= extent[k];
            }
            for k in 0..ndim {
                index = index * shape[k] + along[k];
            }
            state.push(index);
        }
        let mut centre = vec![0.0; ndim];
        for &i in &state {
            layout.point(i, &mut point);
            centre.iter_mut().zip(&point).for_each(|(c, p)| *c += p);
        }
        centre.iter_mut().for_each(|c| *c /= state.len() as f64);
        out.push(Batch { state, centre });
    }
    out
}

impl Letkf<'static> {
    /// Set up the local domains: blocks of `batch` points along every axis
    /// of `layout` (pairs on a 1-D ring, 2 × 2 squares on a map, as in
    /// DAPPER), each using the observations at `observed` (one row of
    /// `layout.ndim()` coordinates per observation) within the taper's
    /// support of its centre. `loc_rad` is in the layout's units; the
    /// Gaspari–Cohn half-width is 1.82·loc_rad (DAPPER's convention);
    /// `f64::INFINITY` means no localisation.
    pub fn new(layout: Layout, observed: &[f64], loc_rad: f64, batch: usize) -> Letkf<'static> {
        let batches = batches(&layout, batch.max(1));
        let mut letkf = Letkf {
            layout,
            loc_rad,
            local: Vec::new(),
            batches,
            observed: Vec::new(),
            threads: default_threads(),
            team: &Solo,
            work: Vec::new(),
            rows: Vec::new(),
            rank_rows: Vec::new(),
            rank_offsets: Vec::new(),
            positions: Vec::new(),
            halo: Halo::default(),
        };
        letkf.place_rank_rows();
        letkf.observe_at(observed);
        letkf
    }
}

impl<'t> Letkf<'t> {
    /// Split the local analyses over `threads` threads (at least one);
    /// the analysis is the same to the bit whatever the number.
    pub fn with_threads(mut self, threads: usize) -> Letkf<'t> {
        self.threads = threads.max(1);
        self
    }

    /// Split the local analyses over the ranks of `team` (each rank then
    /// over its threads); the analysis is the same to the bit.
    pub fn with_team<'u>(self, team: &'u dyn Team) -> Letkf<'u> {
        let Letkf { layout, loc_rad, batches, local, observed, threads, team: _, work, rows, .. } = self;
        let mut letkf = Letkf {
            layout,
            loc_rad,
            batches,
            local,
            observed,
            threads,
            team,
            work,
            rows,
            rank_rows: Vec::new(),
            rank_offsets: Vec::new(),
            positions: Vec::new(),
            halo: Halo::default(),
        };
        letkf.place_rank_rows();
        letkf
    }

    /// The rows of this rank's share of the batches, batch after batch.
    fn place_rank_rows(&mut self) {
        let mine = share(self.batches.len(), self.team.size(), self.team.rank());
        self.rank_rows.clear();
        self.rank_offsets.clear();
        for batch in &self.batches[mine] {
            self.rank_offsets.push(self.rank_rows.len());
            self.rank_rows.extend(&batch.state);
        }
        self.positions = (0..self.rank_rows.len()).collect();
    }

    /// Refuse observations whose coordinates are not those set.
    fn check_observed(&self, eo: &DMatrix<f64>) -> Result<()> {
        if self.observed.len() != eo.nrows() * self.layout.ndim() {
            anyhow::bail!(
                "LETKF: {} observations but coordinates for {} on the {}-axis layout",
                eo.nrows(),
                self.observed.len() / self.layout.ndim(),
                self.layout.ndim()
            );
        }
        Ok(())
    }

    /// Rebuild every batch's observation list for observations at
    /// `observed` (rows of `ndim` coordinates), unless they are where
    /// they were.
    pub fn observe_at(&mut self, observed: &[f64]) {
        if observed == self.observed && self.local.len() == self.batches.len() {
            return;
        }
        let ndim = self.layout.ndim();
        let count = observed.len() / ndim;
        let c = 1.82 * self.loc_rad;
        // The observations sorted by their first coordinate: a batch's
        // candidates lie within the taper's support 2c of its centre along
        // that axis (or of the centre shifted by the axis' period), found
        // by binary search instead of a scan of every observation.
        let mut by_first: Vec<(f64, usize)> = (0..count).map(|j| (observed[j * ndim], j)).collect();
        by_first.sort_by(|a, b| a.0.total_cmp(&b.0));
        let reach = self.layout.first_axis_reach(2.0 * c);
        let period = self.layout.axes[0].period;
        // Batch by batch on the threads (each batch's list on its own: the
        // same lists whatever the threads), refilling the lists in place.
        let threads = self.threads.min(self.batches.len() / DOMAINS_PER_THREAD).max(1);
        let mut local = std::mem::take(&mut self.local);
        local.resize_with(self.batches.len(), LocalObs::default);
        let mut pool = Pool::default();
        let (batches, layout, loc_rad) = (&self.batches, &self.layout, self.loc_rad);
        pool.split_mut(threads, &mut local, 1, &|first, part| {
            let mut candidates = Vec::new();
            for (near, batch) in part.iter_mut().zip(&batches[first..]) {
                candidates.clear();
                if loc_rad.is_infinite() {
                    candidates.extend(0..count);
                } else {
                    let mut within = |x: f64| {
                        let lo = by_first.partition_point(|(l, _)| *l < x - reach);
                        let hi = by_first.partition_point(|(l, _)| *l <= x + reach);
                        candidates.extend(by_first[lo..hi].iter().map(|(_, j)| *j));
                    };
                    within(batch.centre[0]);
                    if let Some(p) = period {
                        within(batch.centre[0] - p);
                        within(batch.centre[0] + p);
                    }
                    // In observation order, as a scan would give them (the
                    // local analysis sums in this order).
                    candidates.sort_unstable();
                    candidates.dedup();
                }
                near.obs.clear();
                near.sqrt_taper.clear();
                for &j in &candidates {
                    let taper = if loc_rad.is_infinite() { 1.0 } else { gaspari_cohn(layout.distance(&batch.centre, &observed[j * ndim..(j + 1) * ndim]), c) };
                    if taper > TAPER_CUTOFF {
                        near.obs.push(j);
                        near.sqrt_taper.push(taper.sqrt());
                    }
                }
            }
        });
        self.local = local;
        self.observed = observed.to_vec();
        self.halo.current = false;
    }
}

/// The batches among `batches` with observations near them (`local`,
/// batch by batch): those a local analysis changes.
fn updated<'a>(batches: &'a [Batch], local: &'a [LocalObs]) -> impl Iterator<Item = &'a Batch> {
    batches.iter().zip(local).filter(|(_, near)| !near.obs.is_empty()).map(|(batch, _)| batch)
}

/// One thread's buffers for [`local_analysis`], reused from domain to
/// domain and from cycle to cycle: once they have held the largest local
/// domain, the hot loop allocates nothing but what nalgebra's
/// eigendecomposition allocates on the domains without a polynomial
/// series (fewer than 12 members, a wide spectrum; see
/// [`super::etkf::apply_transform_into`]).
#[derive(Default)]
struct LocalWork {
    /// The local Sᵀ, padded.
    st_loc: Vec<f64>,
    dy_loc: Vec<f64>,
    a_loc: Vec<f64>,
    update: Vec<f64>,
    dmu: Vec<f64>,
    transform: TransformWork,
}

/// What every local analysis reads: the forecast ensemble and its mean,
/// the whitened observation anomalies R^{-1/2}(Eo − ȳ1ᵀ) and the
/// whitened innovation. Each batch forms its own rows of the anomalies
/// E − x̄1ᵀ from these on its thread (no M × N copy is made in the serial
/// part of the analysis). The whitened anomalies are made once, with the
/// operations of [`super::linalg::center`] and [`super::etkf::whiten`]
/// (so the same numbers), as a padded transpose
/// ([`super::linalg::padded_transpose`]): a batch's local Sᵀ is its
/// observations' rows times their tapers, contiguous copies.
struct Inputs<'a> {
    e: &'a DMatrix<f64>,
    mu: DVector<f64>,
    /// R^{-1/2}(Eo − ȳ1ᵀ), transposed: observation j's N values at
    /// `j·padded ..`, zeros to `padded`.
    st: Vec<f64>,
    padded: usize,
    dy: DVector<f64>,
}

impl<'a> Inputs<'a> {
    /// Its passes over the ensembles split over up to `threads` threads
    /// of `pool` (the same bits).
    fn new(e: &'a DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, pool: &mut Pool, threads: usize) -> Inputs<'a> {
        let (mu, ybar) = (mean_on(e, pool, threads), mean_on(eo, pool, threads));
        let inv_sd = r.map(|r| 1.0 / r.sqrt());
        let mut dy = y - &ybar;
        dy.component_mul_assign(&inv_sd);
        let st = padded_transpose_on(eo, |j, x| (x - ybar[j]) * inv_sd[j], pool, threads);
        Inputs { e, mu, st, padded: padded_len(eo.ncols()), dy }
    }
}

/// One batch's analysis: append its rows of the updated ensemble
/// (`index.len() × N`, column-major) to `out`; nothing when no
/// observation is near (the forecast stands). `index`: the batch's rows
/// in `inputs.e`; `obs`: its observations' rows in `inputs.eo`, with
/// the square roots of their tapers.
fn local_analysis(index: &[usize], (obs, sqrt_taper): (&[usize], &[f64]), inputs: &Inputs, work: &mut LocalWork, out: &mut Vec<f64>) {
    if obs.is_empty() {
        return;
    }
    let Inputs { e, mu, st, padded, dy } = inputs;
    let (p, n, rows, padded) = (obs.len(), e.ncols(), index.len(), *padded);
    let LocalWork { st_loc, dy_loc, a_loc, update, dmu, transform } = work;
    for (local, (&j, &taper)) in buffer_slice(st_loc, p * padded).chunks_exact_mut(padded).zip(obs.iter().zip(sqrt_taper)) {
        for (x, &s) in local.iter_mut().zip(&st[j * padded..(j + 1) * padded]) {
            *x = s * taper;
        }
    }
    let dy_loc = buffer_slice(dy_loc, p);
    for (x, (&j, &taper)) in dy_loc.iter_mut().zip(obs.iter().zip(sqrt_taper)) {
        *x = dy[j] * taper;
    }
    for (local, column) in buffer_slice(a_loc, rows * n).chunks_exact_mut(rows).zip(e.as_slice().chunks_exact(e.nrows())) {
        for (x, &i) in local.iter_mut().zip(index) {
            *x = column[i] - mu[i];
        }
    }
    let a_loc = buffer_matrix(a_loc, rows, n);
    let mut update = buffer_matrix(update, rows, n); // anomalies
    let mut dmu = buffer_matrix(dmu, rows, 1);
    apply_transform_into(&st_loc[..p * padded], dy_loc, &a_loc.as_view(), transform, &mut update, &mut dmu);
    for k in 0..n {
        out.extend(index.iter().enumerate().map(|(il, &i)| mu[i] + dmu[il] + update[(il, k)]));
    }
}

impl Analysis for Letkf<'_> {
    /// The observations' coordinates at `t` when the operator gives them
    /// (moving observations, maps); on a 1-D layout an operator without
    /// them keeps its fixed locations.
    fn locate(&mut self, obs: &mut dyn ObsOperator, t: f64) -> Result<()> {
        let name = obs.info().name.clone();
        let size = obs.info().obs_size;
        match obs.coordinates(t)? {
            Some(coordinates) => {
                self.layout.check_points(&coordinates, size).map_err(|e| anyhow::anyhow!("observation operator `{name}` at t = {t}: {e}"))?;
                self.observe_at(&coordinates);
            }
            None if self.layout.ndim() > 1 => anyhow::bail!(
                "LETKF: the forward model's layout has {} axes ({}) but observation operator `{name}` gives no coordinates on it; \
                 implement `coordinates` (WIT interface `located`) in the operator, or use a global method (etkf)",
                self.layout.ndim(),
                self.layout.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            None => {}
        }
        Ok(())
    }

    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, _rng: &mut dyn rand::RngCore) -> Result<()> {
        self.check_observed(eo)?;
        let inputs = self.inputs(e, eo, y, r);
        let (ranks, members) = (self.team.size(), e.ncols());
        let mine = share(self.batches.len(), ranks, self.team.rank());
        let chunk = self.local_analyses(mine.clone(), Rows::Whole, &inputs);
        if ranks == 1 {
            self.write_back(e, mine, chunk, Rows::Whole);
            return Ok(());
        }
        // Every rank knows which batches have observations near them, so
        // each rank's part (the updated rows of its batches with any, in
        // batch order) has a length every rank can count.
        let updated_len =
            |range: std::ops::Range<usize>| -> usize { updated(&self.batches[range.clone()], &self.local[range]).map(|b| b.state.len() * members).sum() };
        let counts: Vec<usize> = (0..ranks).map(|r| updated_len(share(self.batches.len(), ranks, r))).collect();
        let part: Vec<f64> = self.rows.concat();
        let all = self.team.gather(Ok(part), &counts)?;
        let (mut at, size) = (0, e.nrows());
        for batch in updated(&self.batches, &self.local) {
            let len = batch.state.len() * members;
            write(e.as_mut_slice(), 0, size, &batch.state, &all[at..at + len]);
            at += len;
        }
        Ok(())
    }

    fn rows(&self) -> Option<&[usize]> {
        Some(&self.rank_rows)
    }

    /// Per rank, the observations its batches use (their halo), at the
    /// locations of the last [`Analysis::locate`].
    fn observations_by_rank(&mut self) -> Result<Vec<Vec<usize>>> {
        let (ranks, rank) = (self.team.size(), self.team.rank());
        let count = self.observed.len() / self.layout.ndim();
        let mut seen = vec![usize::MAX; count];
        let mut sets = Vec::with_capacity(ranks);
        for r in 0..ranks {
            let mut set = Vec::new();
            for near in &self.local[share(self.batches.len(), ranks, r)] {
                for &j in &near.obs {
                    if std::mem::replace(&mut seen[j], r) != r {
                        set.push(j);
                    }
                }
            }
            set.sort_unstable();
            sets.push(set);
        }
        // This rank's batches' observations as positions in its halo.
        let mut position = seen; // reused: every entry is overwritten where read
        for (at, &j) in sets[rank].iter().enumerate() {
            position[j] = at;
        }
        let Halo { observations, local, offsets, current } = &mut self.halo;
        observations.clone_from(&sets[rank]);
        local.clear();
        offsets.clear();
        for near in &self.local[share(self.batches.len(), ranks, rank)] {
            offsets.push(local.len());
            local.extend(near.obs.iter().map(|&j| position[j]));
        }
        *current = true;
        Ok(sets)
    }

    /// This rank's rows only: `e` is `rows().len() × N`, its rows in the
    /// order of [`Analysis::rows`] (this rank's batches, one after the
    /// other); `eo` holds the rows of this rank's halo
    /// ([`Analysis::observations_by_rank`]). Nothing is exchanged.
    fn analyse_rows(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, _rng: &mut dyn rand::RngCore) -> Result<()> {
        anyhow::ensure!(self.halo.current, "LETKF: the observations moved since this rank's halo was listed (call observations_by_rank after locate)");
        let halo = &self.halo.observations;
        anyhow::ensure!(e.nrows() == self.rank_rows.len(), "LETKF: {} rows given for this rank's {}", e.nrows(), self.rank_rows.len());
        anyhow::ensure!(eo.nrows() == halo.len(), "LETKF: {} observations given for this rank's halo of {}", eo.nrows(), halo.len());
        let count = self.observed.len() / self.layout.ndim();
        anyhow::ensure!(y.len() == count && r.len() == count, "LETKF: {} observations but coordinates for {count}", y.len());
        let (y, r) = (DVector::from_iterator(halo.len(), halo.iter().map(|&j| y[j])), DVector::from_iterator(halo.len(), halo.iter().map(|&j| r[j])));
        let inputs = self.inputs(e, eo, &y, &r);
        let mine = share(self.batches.len(), self.team.size(), self.team.rank());
        let chunk = self.local_analyses(mine.clone(), Rows::Rank, &inputs);
        self.write_back(e, mine, chunk, Rows::Rank);
        Ok(())
    }
}

/// Where a batch's rows are in the ensemble an analysis reads and writes:
/// the whole state (the batch's state indices), or this rank's rows only.
#[derive(Clone, Copy)]
enum Rows {
    Whole,
    Rank,
}

/// Where each batch's rows and observations are, for one [`Rows`] choice.
#[derive(Clone, Copy)]
struct RowMap<'a> {
    batches: &'a [Batch],
    local: &'a [LocalObs],
    /// For [`Rows::Rank`]: this rank's first batch, where its batches
    /// start among its rows, 0, 1, … as long as them, and its batches'
    /// observations as rows of its halo ([`Letkf::halo`]); `None` for
    /// [`Rows::Whole`].
    rank: Option<RankMap<'a>>,
}

#[derive(Clone, Copy)]
struct RankMap<'a> {
    first: usize,
    offsets: &'a [usize],
    positions: &'a [usize],
    halo: &'a Halo,
}

impl<'a> RowMap<'a> {
    /// Batch `b`'s rows (`b` counted among all batches).
    fn of(&self, b: usize) -> &'a [usize] {
        let batch = &self.batches[b];
        match self.rank {
            None => &batch.state,
            Some(RankMap { first, offsets, positions, .. }) => &positions[offsets[b - first]..offsets[b - first] + batch.state.len()],
        }
    }

    /// Batch `b`'s observations (rows of the observed ensemble given) and
    /// the square roots of their tapers.
    fn near(&self, b: usize) -> (&'a [usize], &'a [f64]) {
        let near = &self.local[b];
        match self.rank {
            None => (&near.obs, &near.sqrt_taper),
            Some(RankMap { first, halo, .. }) => (&halo.local[halo.offsets[b - first]..halo.offsets[b - first] + near.obs.len()], &near.sqrt_taper),
        }
    }
}

/// The observations a rank's batches use (its halo): their indices
/// (ascending), and each batch's observations as positions among them
/// (flat, batch after batch, from `offsets`).
#[derive(Default)]
struct Halo {
    observations: Vec<usize>,
    local: Vec<usize>,
    offsets: Vec<usize>,
    /// Whether it was made for the current observation lists.
    current: bool,
}

impl Letkf<'_> {
    fn row_map(&self, rows: Rows) -> RowMap<'_> {
        let rank = match rows {
            Rows::Whole => None,
            Rows::Rank => Some(RankMap {
                first: share(self.batches.len(), self.team.size(), self.team.rank()).start,
                offsets: &self.rank_offsets,
                positions: &self.positions,
                halo: &self.halo,
            }),
        };
        RowMap { batches: &self.batches, local: &self.local, rank }
    }

    /// The local analyses of batches `range` on this rank's threads, in
    /// chunks of consecutive batches (the number returned) that the
    /// threads take in turn as they come free: a thread that starts late
    /// or meets dearer domains does fewer chunks instead of holding the
    /// others up. Chunk c's updated rows go to `self.rows[c]`, so the
    /// layout (and every bit) is the same whichever thread ran it.
    fn local_analyses(&mut self, range: std::ops::Range<usize>, rows: Rows, inputs: &Inputs) -> usize {
        let threads = self.threads.min(range.len() / DOMAINS_PER_THREAD).max(1);
        // One chunk on one thread; else about CHUNKS_PER_THREAD per thread.
        let chunk = if threads == 1 { range.len().max(1) } else { range.len().div_ceil(threads * CHUNKS_PER_THREAD).max(1) };
        let chunks = range.len().div_ceil(chunk).max(1);
        let mut work = std::mem::take(&mut self.work);
        let mut out = std::mem::take(&mut self.rows);
        work.resize_with(threads.max(work.len()), Default::default);
        out.resize_with(chunks, Vec::new);
        out.truncate(chunks);
        out.iter_mut().for_each(Vec::clear);
        let mut pool = Pool::default();
        let map = self.row_map(rows);
        let chunk_range = |c: usize| {
            let start = range.start + c * chunk;
            start..(start + chunk).min(range.end)
        };
        if threads == 1 {
            let work = unpoisoned(work[0].get_mut());
            for b in chunk_range(0) {
                local_analysis(map.of(b), map.near(b), inputs, work, &mut out[0]);
            }
        } else {
            let slots: Vec<Mutex<&mut Vec<f64>>> = out.iter_mut().map(Mutex::new).collect();
            let next = AtomicUsize::new(0);
            // Thread i (the caller is 0) takes chunks in turn with its own
            // buffers; each chunk and each buffer is taken by one thread,
            // so no lock is ever contended.
            pool.run(threads, &|i| {
                let mut work = unpoisoned(work[i].lock());
                loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    let Some(slot) = slots.get(c) else { break };
                    let mut out = unpoisoned(slot.lock());
                    for b in chunk_range(c) {
                        local_analysis(map.of(b), map.near(b), inputs, &mut work, &mut out);
                    }
                }
            });
        }
        self.work = work;
        self.rows = out;
        chunk
    }

    /// The [`Inputs`] of an analysis, made on this rank's threads.
    fn inputs<'a>(&mut self, e: &'a DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>) -> Inputs<'a> {
        Inputs::new(e, eo, y, r, &mut Pool::default(), self.threads)
    }

    /// Write the rows [`Letkf::local_analyses`] left in `self.rows` (for
    /// batches `range`, `chunk` per chunk) into `e`, the members split
    /// over this rank's threads (each writes its members' columns).
    fn write_back(&mut self, e: &mut DMatrix<f64>, range: std::ops::Range<usize>, chunk: usize, rows: Rows) {
        let (size, members) = e.shape();
        let mut pool = Pool::default();
        let map = self.row_map(rows);
        let values = &self.rows;
        pool.split_mut(threads_for(e.len(), self.threads), e.as_mut_slice(), size.max(1), &|first, columns| {
            for (start, values) in range.clone().step_by(chunk).zip(values) {
                let mut at = 0;
                for b in start..(start + chunk).min(range.end) {
                    if map.near(b).0.is_empty() {
                        continue;
                    }
                    let index = map.of(b);
                    let len = index.len() * members;
                    write(columns, first, size, index, &values[at..at + len]);
                    at += len;
                }
            }
        });
    }
}

/// Set rows `index` of the members in `columns` (whole columns of `size`
/// rows, column-major, the first of them member `first`) to those members'
/// values in `values` (the rows of every member, column-major).
fn write(columns: &mut [f64], first: usize, size: usize, index: &[usize], values: &[f64]) {
    for (k, column) in columns.chunks_exact_mut(size).enumerate() {
        let member = &values[(first + k) * index.len()..(first + k + 1) * index.len()];
        for (&i, &v) in index.iter().zip(member) {
            column[i] = v;
        }
    }
}
