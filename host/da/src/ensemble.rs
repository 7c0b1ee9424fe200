//! The forecast–analysis cycle shared by every ensemble method, and the
//! post-analysis treatment DAPPER applies (`post_process`): multiplicative
//! inflation of the anomalies and an optional random mean-preserving
//! rotation.

use super::letkf::default_threads;
use super::linalg;
use super::pool::{threads_for, unpoisoned, Pool};
use super::stats::{moments_on, rmse, spread_of, CycleStats};
use super::team::{share, Solo, Team};
use super::twin::Twin;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};
use rand::Rng;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One analysis update: the only part that differs between EnKF variants.
pub trait Analysis {
    /// Update the forecast ensemble `e` (`size × N`) given the observed
    /// ensemble `eo = H(e)` (`obs_size × N`), the observation `y` and the
    /// diagonal of R.
    fn analyse(&mut self, e: &mut DMatrix<f64>, eo: &DMatrix<f64>, y: &DVector<f64>, r: &DVector<f64>, rng: &mut dyn rand::RngCore) -> Result<()>;

    /// Called before the analysis at time `t` with the operator that made
    /// the observations, for methods that need to know where they are
    /// (the LETKF's localisation); the others ignore it.
    fn locate(&mut self, _obs: &mut dyn ObsOperator, _t: f64) -> Result<()> {
        Ok(())
    }

    /// For an analysis that updates each state row from that row's
    /// forecast and the observations alone (the LETKF): the rows this rank
    /// of the run's team updates, in the order [`Analysis::analyse_rows`]
    /// takes them. Then a run on several ranks keeps only those rows of
    /// the ensemble on each ([`crate::decomposed`]). `None`, the default:
    /// the analysis needs the whole ensemble, which every rank then holds.
    fn rows(&self) -> Option<&[usize]> {
        None
    }

    /// For an analysis with rows: per rank of the team, the observations
    /// (indices, ascending) its rows' update uses at the locations of the
    /// last [`Analysis::locate`] (its halo). The decomposed cycle gives each
    /// rank only those rows of the observed ensemble.
    fn observations_by_rank(&mut self) -> Result<Vec<Vec<usize>>> {
        anyhow::bail!("this analysis needs the whole ensemble (it has no rows of its own)")
    }

    /// [`Analysis::analyse`] of this rank's [`Analysis::rows`] only: `e`
    /// holds those rows (`rows().len() × N`), `eo` the rows of this rank's
    /// halo ([`Analysis::observations_by_rank`]), every member's; `y` and
    /// `r` are every observation's.
    fn analyse_rows(&mut self, _e: &mut DMatrix<f64>, _eo: &DMatrix<f64>, _y: &DVector<f64>, _r: &DVector<f64>, _rng: &mut dyn rand::RngCore) -> Result<()> {
        anyhow::bail!("this analysis needs the whole ensemble (it has no rows of its own)")
    }
}

/// The parameters every ensemble method takes (names as in DAPPER): the
/// ensemble size `N`, multiplicative inflation `infl` of the analysis
/// anomalies and random mean-preserving rotations `rot`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EnsembleParams {
    #[serde(rename = "N")]
    pub n: usize,
    pub infl: f64,
    pub rot: bool,
}

impl EnsembleParams {
    /// `N` is required (at least 2); `infl` defaults to 1, `rot` to false.
    pub fn from_params(p: &mut crate::method::Params) -> Result<EnsembleParams> {
        let n = p.usize("N")?.with_context(|| format!("{}: `N` (ensemble size) is required", p.at()))?;
        if n < 2 {
            anyhow::bail!("{}: `N` must be at least 2, got {n}", p.at());
        }
        let infl = p.positive("infl", Some(1.0), "inflation")?;
        Ok(EnsembleParams { n, infl, rot: p.bool("rot")?.unwrap_or(false) })
    }

    /// `NAME N=… infl=…` and ` rot` when rotating.
    pub fn label(&self, name: &str) -> String {
        format!("{name} N={} infl={}{}", self.n, self.infl, if self.rot { " rot" } else { "" })
    }

    pub fn post_process(&self) -> PostProcess {
        PostProcess { infl: self.infl, rot: self.rot }
    }
}

/// Inflation and rotation applied to the anomalies after each analysis.
#[derive(Clone, Copy, Debug)]
pub struct PostProcess {
    pub infl: f64,
    pub rot: bool,
}

impl PostProcess {
    pub fn apply(&self, e: &mut DMatrix<f64>, rng: &mut impl Rng) {
        self.apply_on(e, rng, &mut Pool::default(), 1)
    }

    /// [`PostProcess::apply`] with its passes over the ensemble split over
    /// up to `threads` threads of `pool`: the same bits.
    pub fn apply_on(&self, e: &mut DMatrix<f64>, rng: &mut impl Rng, pool: &mut Pool, threads: usize) {
        if self.infl == 1.0 && !self.rot {
            return;
        }
        // μ + (infl·(e − μ)) Ωᵀ, in place but for the rotation's product:
        // the anomalies, scaled (×1 is exact), rotated, the mean added back.
        let mu = linalg::mean_on(e, pool, threads);
        let (size, infl) = (e.nrows().max(1), self.infl);
        let threads = threads_for(e.len(), threads);
        if !self.rot {
            // Each value on its own: subtract, scale, add, in one pass.
            pool.split_mut(threads, e.as_mut_slice(), size, &|_, members| {
                for member in members.chunks_exact_mut(size) {
                    member.iter_mut().zip(mu.as_slice()).for_each(|(x, mu)| *x = (*x - mu) * infl + mu);
                }
            });
            return;
        }
        pool.split_mut(threads, e.as_mut_slice(), size, &|_, members| {
            for member in members.chunks_exact_mut(size) {
                member.iter_mut().zip(mu.as_slice()).for_each(|(x, mu)| *x = (*x - mu) * infl);
            }
        });
        // DAPPER rotates the members × state anomalies from the left;
        // with members as columns that is a right-multiplication by Ωᵀ.
        let omega = linalg::random_mean_preserving_orthogonal(e.ncols(), rng);
        *e *= omega.transpose();
        pool.split_mut(threads, e.as_mut_slice(), size, &|_, members| {
            for member in members.chunks_exact_mut(size) {
                member.iter_mut().zip(mu.as_slice()).for_each(|(x, mu)| *x += mu);
            }
        });
    }
}

/// What a run of a method leaves behind.
pub struct Trajectory {
    pub stats: CycleStats,
    /// Analysis mean at every observation time (`size × cycles`).
    pub analysis_mean: DMatrix<f64>,
    /// Analysis ensembles (`size × N`) kept at the cycles [`Record`] asked
    /// for, with their cycle index; empty for methods without an ensemble.
    pub members: Vec<(usize, DMatrix<f64>)>,
    /// Where an ensemble cycle's time went, per cycle (`None` for the
    /// baselines).
    pub phases: Option<Phases>,
}

/// Wall-clock milliseconds per cycle of each phase of the ensemble cycle
/// (means over the run): what to make faster, measured in every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    /// The model advancing the members (the forecast).
    pub forecast: f64,
    /// The observation operator on the forecast members.
    pub observe: f64,
    /// Locating the observations, the analysis and the post-processing
    /// (inflation, rotation).
    pub analysis: f64,
    /// Means, spreads and RMSEs (twice a cycle), and keeping members.
    pub statistics: f64,
    /// Moving the ensemble between MPI ranks (members to rows and back,
    /// the observed ensemble to its halos), waiting for the slowest rank
    /// included: the decomposed cycle only, as rank 0 (which writes the
    /// outputs) saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<f64>,
}

impl Phases {
    /// Add the time since `*since` to `phase` and restart the clock.
    pub(crate) fn lap(phase: &mut f64, since: &mut Instant) {
        let now = Instant::now();
        *phase += (now - *since).as_secs_f64() * 1e3;
        *since = now;
    }

    /// Totals over `cycles` cycles as per-cycle means.
    pub(crate) fn per_cycle(self, cycles: usize) -> Phases {
        let d = cycles.max(1) as f64;
        Phases {
            forecast: self.forecast / d,
            observe: self.observe / d,
            analysis: self.analysis / d,
            statistics: self.statistics / d,
            exchange: self.exchange.map(|ms| ms / d),
        }
    }
}

/// Which analysis ensembles a run keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Record {
    /// Keep the ensemble at cycles k with k % members_every == 0 (0: none).
    pub members_every: usize,
}

impl Record {
    pub(crate) fn keeps(&self, k: usize) -> bool {
        self.members_every > 0 && k.is_multiple_of(self.members_every)
    }
}

/// How a method's run is carried out beyond its parameters: which analysis
/// ensembles it keeps, and the processes it is split over.
#[derive(Clone, Copy)]
pub struct Execution<'a> {
    pub record: Record,
    pub team: &'a dyn Team,
}

impl Default for Execution<'static> {
    /// Nothing kept, one process.
    fn default() -> Self {
        Execution { record: Record::default(), team: &Solo }
    }
}

impl std::fmt::Debug for Execution<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").field("record", &self.record).field("ranks", &self.team.size()).finish()
    }
}

/// Forecast: advance `states` from the previous observation time to that
/// of cycle `k` (`steps_per_obs` model steps).
pub fn forecast(model: &mut dyn ForwardModel, states: &mut DMatrix<f64>, twin: &Twin, k: usize) -> Result<()> {
    let ch = twin.chronology;
    let t0 = if k == 0 { 0.0 } else { twin.times[k - 1] };
    for step in 0..ch.steps_per_obs {
        let t = t0 + step as f64 * ch.dt;
        model.advance(states, t, ch.dt).with_context(|| format!("forecast of cycle {k} (t = {t})"))?;
    }
    Ok(())
}

/// [`forecast`] of an ensemble split over `team` ([`split_members`]).
pub fn forecast_shared(model: &mut dyn ForwardModel, states: &mut DMatrix<f64>, twin: &Twin, k: usize, team: &dyn Team) -> Result<()> {
    if team.size() == 1 {
        return forecast(model, states, twin, k);
    }
    split_members(states, team, |part| forecast(model, part, twin, k))
}

/// Apply `advance` to this rank's [`share`] of the members (columns) of
/// `states`, then give every rank all of them. The model must advance each
/// member on its own (every geohost model does; the WIT says so), so the
/// result is the one-process result's bits.
pub fn split_members(states: &mut DMatrix<f64>, team: &dyn Team, advance: impl FnOnce(&mut DMatrix<f64>) -> Result<()>) -> Result<()> {
    let ranks = team.size();
    let (size, members) = states.shape();
    let mine = share(members, ranks, team.rank());
    let local = if mine.is_empty() {
        Ok(Vec::new())
    } else {
        let mut part = states.columns(mine.start, mine.len()).into_owned();
        advance(&mut part)
            .with_context(|| format!("members {}..{} (counted from 0) on MPI rank {}", mine.start, mine.end, team.rank()))
            .map(|()| part.as_slice().to_vec())
    };
    let counts: Vec<usize> = (0..ranks).map(|r| share(members, ranks, r).len() * size).collect();
    // Columns are contiguous (column-major), so the gathered parts in rank
    // order are the whole ensemble.
    *states = DMatrix::from_vec(size, members, team.gather(local, &counts)?);
    Ok(())
}

/// A forward model run as several instances, each advancing a contiguous
/// [`share`] of the members on its own thread (the QG forecast is most of
/// a cycle). The instances must be configured alike; since a model
/// advances each member on its own (the WIT's rule), the result is the
/// one-instance result's bits. Fewer members than instances use the first
/// ones (a truth run uses one). Instance 0 runs on the calling thread, the
/// others on the process's worker threads, kept between steps ([`Pool`]): a wasm model
/// called from a new thread each step pays the runtime's per-thread set-up
/// every time (with it, two instances of the Lorenz-96-4000 forecast were
/// slower than one). A model whose whole-ensemble step is short stays on
/// instance 0 ([`Splitting`]).
pub struct Instances {
    models: Shares<dyn ForwardModel + Send>,
    info: geohost_sandbox::model::ModelInfo,
}

impl Instances {
    /// At least one model; every one alike.
    pub fn new(models: Vec<Box<dyn ForwardModel + Send>>) -> Result<Instances> {
        let info = models.first().context("at least one model instance is needed")?.info().clone();
        Ok(Instances { models: Shares::new(models), info })
    }

    /// Split calls whose whole-ensemble call on one instance takes at
    /// least `from` ([`SPLIT_FROM`] by default; zero: always split).
    pub fn split_from(mut self, from: Duration) -> Instances {
        self.models.splitting.from = from;
        self
    }
}

/// The instances of one plugin (a model or an operator) that
/// [`Instances`] and [`ObsInstances`] split the members over (on the
/// process's workers, [`Pool`]), and whether calls split.
struct Shares<T: ?Sized> {
    instances: Vec<Mutex<Box<T>>>,
    splitting: Splitting,
}

impl<T: ?Sized> Shares<T> {
    fn new(instances: Vec<Box<T>>) -> Shares<T> {
        Shares { instances: instances.into_iter().map(Mutex::new).collect(), splitting: Splitting::default() }
    }

    /// Instances a call on `members` members uses.
    fn used(&self, members: usize) -> usize {
        self.instances.len().min(members).max(1)
    }
}

/// A call on one instance at least this long (the fastest of the first
/// [`TIMED_CALLS`]) makes the later calls of [`Instances`] and
/// [`ObsInstances`] split over their instances; below it, handing the
/// shares to the workers costs about what it saves. With workers that
/// poll between jobs ([`crate::pool`]) the Lorenz-96-400 × 20 forecast
/// (0.09 ms) splits to 0.06 ms; the 0.03 ms operator call stays whole.
pub const SPLIT_FROM: Duration = Duration::from_micros(50);

/// Whether calls split over the instances, decided from the fastest of
/// the first [`TIMED_CALLS`] whole-ensemble calls on instance 0 (the first
/// alone would count a cold start, and one slow sample on a noisy machine
/// would decide for good), or at once by a call [`AT_ONCE`] times the
/// threshold, which is no short call slowed by a cold start or noise (the
/// QG forecast, 130 ms whole and 68 split, would otherwise run its first
/// three cycles on one instance). The bits are the same either way.
#[derive(Clone, Copy, Debug)]
struct Splitting {
    from: Duration,
    /// The fastest whole call so far, and how many were timed.
    fastest: Duration,
    timed: usize,
    decided: Option<bool>,
}

/// Whole-ensemble calls timed before [`Splitting`] decides.
pub const TIMED_CALLS: usize = 3;

/// A whole-ensemble call this many times the split threshold (5 ms for
/// [`SPLIT_FROM`]) decides [`Splitting`] for splitting at once. A model
/// whose first call alone is that slow (tables built on first use) and
/// whose later calls are short splits when it need not: a few
/// microseconds lost per call, the same bits.
pub const AT_ONCE: u32 = 100;

impl Default for Splitting {
    fn default() -> Self {
        Splitting { from: SPLIT_FROM, fastest: Duration::MAX, timed: 0, decided: None }
    }
}

impl Splitting {
    /// `split(arg)` when this call uses several instances and splitting
    /// pays; otherwise `whole(arg)` (instance 0 alone), timed while
    /// undecided.
    fn run<A, T>(&mut self, used: usize, arg: A, whole: impl FnOnce(A) -> Result<T>, split: impl FnOnce(A) -> Result<T>) -> Result<T> {
        if used > 1 && (self.decided == Some(true) || self.from.is_zero()) {
            return split(arg);
        }
        let start = Instant::now();
        let result = whole(arg);
        if used > 1 && self.decided.is_none() && result.is_ok() {
            self.fastest = self.fastest.min(start.elapsed());
            self.timed += 1;
            if self.timed == TIMED_CALLS || self.fastest >= self.from.saturating_mul(AT_ONCE) {
                self.decided = Some(self.fastest >= self.from);
            }
        }
        result
    }
}

impl ForwardModel for Instances {
    fn info(&self) -> &geohost_sandbox::model::ModelInfo {
        &self.info
    }

    /// On an error the members of the instances that succeeded are
    /// advanced and the others left as they were; the error names the
    /// failing instance and its members.
    fn advance(&mut self, states: &mut DMatrix<f64>, t: f64, dt: f64) -> Result<()> {
        let (size, members) = states.shape();
        let used = self.models.used(members);
        let Shares { instances: models, splitting } = &mut self.models;
        let models = &*models;
        splitting.run(
            used,
            states,
            |states| unpoisoned(models[0].lock()).advance(states, t, dt),
            |states| {
                // Columns are contiguous (column-major): instance i's share
                // is one slice of the buffer, split as `share` counts. Each
                // thread copies its share out and back itself, so the copies
                // of a large ensemble split too.
                each_share(used, states.as_mut_slice(), members, "model instance", &|i, _, values| {
                    let mut model = unpoisoned(models[i].lock());
                    let mut part = DMatrix::from_column_slice(size, share(members, used, i).len(), values);
                    model.advance(&mut part, t, dt).map(|()| values.copy_from_slice(part.as_slice()))
                })
            },
        )
    }
}

/// What [`each_share`] runs on share i: `job(i, first member, values)`.
type ShareJob<'a> = dyn Fn(usize, usize, &mut [f64]) -> Result<()> + Sync + 'a;

/// Run `job(i, first, part)` on thread i for the members' [`share`] i of
/// `data` (`members` contiguous columns; `first` the share's first
/// member), the pairing of [`Instances`] and [`ObsInstances`]: thread i
/// takes instance i and share i, so no lock is ever contended. Every
/// share runs; the first error is returned, naming its members and
/// `what` ("model instance") with the instance's number.
fn each_share(used: usize, data: &mut [f64], members: usize, what: &str, job: &ShareJob) -> Result<()> {
    let results: Vec<Mutex<Result<()>>> = (0..used).map(|_| Mutex::new(Ok(()))).collect();
    let unit = data.len().checked_div(members).unwrap_or(0);
    Pool::default().split_mut_indexed(used, data, unit, &|i, first, part| *unpoisoned(results[i].lock()) = job(i, first, part));
    for (i, result) in results.into_iter().enumerate() {
        let range = share(members, used, i);
        unpoisoned(result.into_inner()).with_context(|| format!("members {}..{} (counted from 0) in {what} {}", range.start, range.end, i + 1))?;
    }
    Ok(())
}

/// An observation operator run as several instances, each observing a
/// contiguous [`share`] of the members on its own thread, as
/// [`Instances`] advances them: the WIT's `observe` sees members
/// independently, so the result is the one-instance result's bits. With
/// the analysis on threads, one operator copying a large ensemble through
/// the sandbox is the cycle's longest serial part (Lorenz-96-40,000 × 20:
/// some 7 ms of 70). The observations' coordinates come from instance 0.
pub struct ObsInstances {
    operators: Shares<dyn ObsOperator + Send>,
    info: geohost_sandbox::model::ObsInfo,
}

impl ObsInstances {
    /// At least one operator; every one configured alike.
    pub fn new(operators: Vec<Box<dyn ObsOperator + Send>>) -> Result<ObsInstances> {
        let info = operators.first().context("at least one observation operator instance is needed")?.info().clone();
        Ok(ObsInstances { operators: Shares::new(operators), info })
    }

    /// As [`Instances::split_from`].
    pub fn split_from(mut self, from: Duration) -> ObsInstances {
        self.operators.splitting.from = from;
        self
    }
}

impl ObsOperator for ObsInstances {
    fn info(&self) -> &geohost_sandbox::model::ObsInfo {
        &self.info
    }

    /// The error names the failing instance and its members.
    fn observe(&mut self, states: &DMatrix<f64>, t: f64) -> Result<DMatrix<f64>> {
        let members = states.ncols();
        let p = self.info.obs_size;
        let used = if p == 0 { 1 } else { self.operators.used(members) };
        let name = &self.info.name;
        let Shares { instances: operators, splitting } = &mut self.operators;
        let operators = &*operators;
        splitting.run(
            used,
            states,
            |states| unpoisoned(operators[0].lock()).observe(states, t),
            |states| {
                let mut observed = DMatrix::zeros(p, members);
                // Share i's observations from operator i.
                each_share(used, observed.as_mut_slice(), members, "observation operator instance", &|i, first, out| {
                    let count = out.len() / p;
                    let y = unpoisoned(operators[i].lock()).observe_columns(states, first..first + count, t)?;
                    anyhow::ensure!(y.shape() == (p, count), "observation operator `{name}` returned {:?} values for {p} × {count}", y.shape());
                    out.copy_from_slice(y.as_slice());
                    Ok(())
                })?;
                Ok(observed)
            },
        )
    }

    fn coordinates(&mut self, t: f64) -> Result<Option<Vec<f64>>> {
        unpoisoned(self.operators.instances[0].get_mut()).coordinates(t)
    }
}

/// Run the cycle: forecast `steps_per_obs` model steps, record forecast
/// statistics, analyse, post-process, record analysis statistics.
#[allow(clippy::too_many_arguments)] // the experiment, the model pair, the method's parts, what to keep
pub fn cycle(
    twin: &Twin,
    model: &mut dyn ForwardModel,
    obs: &mut dyn ObsOperator,
    members: usize,
    analysis: &mut dyn Analysis,
    post: PostProcess,
    execution: Execution<'_>,
    rng: &mut rand_chacha::ChaCha8Rng,
    progress: &mut dyn FnMut(usize),
) -> Result<Trajectory> {
    if execution.team.size() > 1 && analysis.rows().is_some() {
        return crate::decomposed::cycle(twin, model, obs, members, analysis, post, execution, rng, progress);
    }
    let ch = twin.chronology;
    let mut e = twin.prior.sample(members, rng)?;
    let mut stats = CycleStats::with_capacity(ch.cycles);
    let mut analysis_mean = DMatrix::zeros(e.nrows(), ch.cycles);
    let mut members = Vec::new();
    // The statistics and the post-processing pass over the whole ensemble
    // several times a cycle: on threads too (the same bits), or they cap
    // what threads give the analysis.
    let (mut pool, threads) = (Pool::default(), default_threads());
    let moments = |e: &DMatrix<f64>, pool: &mut Pool| {
        let (mu, variances) = moments_on(e, pool, threads);
        (mu, spread_of(&variances))
    };
    let (mut phases, mut clock) = (Phases::default(), Instant::now());
    for k in 0..ch.cycles {
        forecast_shared(model, &mut e, twin, k, execution.team)?;
        Phases::lap(&mut phases.forecast, &mut clock);
        let t = twin.times[k];
        let truth = twin.truth_at(k);
        let (mu, spread) = moments(&e, &mut pool);
        stats.push_forecast(rmse(&mu, &truth), spread);
        Phases::lap(&mut phases.statistics, &mut clock);

        let eo = obs.observe(&e, t).with_context(|| format!("observing the ensemble at cycle {k}"))?;
        Phases::lap(&mut phases.observe, &mut clock);
        analysis.locate(obs, t).with_context(|| format!("locating the observations at cycle {k}"))?;
        analysis.analyse(&mut e, &eo, &twin.obs_at(k), &twin.obs_variance, rng).with_context(|| format!("analysis at cycle {k}"))?;
        post.apply_on(&mut e, rng, &mut pool, threads);
        Phases::lap(&mut phases.analysis, &mut clock);

        let (mu, spread) = moments(&e, &mut pool);
        stats.push_analysis(rmse(&mu, &truth), spread);
        analysis_mean.set_column(k, &mu);
        if execution.record.keeps(k) {
            members.push((k, e.clone()));
        }
        Phases::lap(&mut phases.statistics, &mut clock);
        progress(k);
    }

    Ok(Trajectory { stats, analysis_mean, members, phases: Some(phases.per_cycle(ch.cycles)) })
}
