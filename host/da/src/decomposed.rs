//! The forecast–analysis cycle with the ensemble decomposed over the ranks
//! of an MPI job, for analyses that update each state row on its own (the
//! LETKF, [`Analysis::rows`]): no rank ever holds the whole ensemble.
//!
//! Rank r of K keeps two pieces of the N-member ensemble of n variables,
//! about n·N/K numbers each, in turn:
//!
//! - **members**: its [`share`] of the members, whole states (n × N/K), for
//!   the forecast and the observation operator, which treat members
//!   independently (the WIT's rule);
//! - **rows**: the state rows its analysis updates, every member (n/K × N),
//!   for the analysis and the post-processing (inflation is per row; a
//!   rotation multiplies every row by the same matrix, drawn alike on
//!   every rank).
//!
//! Between them the ensemble is transposed by one all-to-all exchange per
//! direction (the ensemble-to-domain transposition of DART and PDAF). The
//! observed ensemble is split the same way, by a third all-to-all: each
//! rank receives, every member's, only the rows of the observations its
//! domains use (its halo, [`Analysis::observations_by_rank`], listed
//! again when the observations move). Each cycle's statistics come from
//! per-row means and variances gathered into every rank (2n numbers each
//! time); the ensembles kept for the outputs are
//! gathered whole, only at the cycles [`Record`](super::ensemble::Record)
//! asks for. Every number is computed by the same code on the same inputs
//! as in one process, and exchanges copy bits, so the outputs are the
//! one-process outputs' bytes (tested with `mpirun -np 2`). The phases
//! each rank reports ([`Phases`]) add the exchanges' time.

use super::ensemble::{forecast, Analysis, Execution, Phases, PostProcess, Trajectory};
use super::linalg::mean;
use super::stats::{rmse, spread_of, variances_about, CycleStats};
use super::team::{share, Team};
use super::twin::Twin;
use anyhow::{Context, Result};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use nalgebra::{DMatrix, DVector};
use std::time::Instant;

/// Which rank holds what: members in contiguous shares, rows as each
/// rank's analysis lists them.
pub struct Decomposition<'t> {
    team: &'t dyn Team,
    members: usize,
    state: usize,
    /// Per rank, the state rows it updates; together every row once.
    rows: Vec<Vec<usize>>,
}

impl<'t> Decomposition<'t> {
    /// `mine`: this rank's rows; the others' are gathered here (once per
    /// run). Refused unless every row of the `state` is some rank's, once.
    pub fn new(team: &'t dyn Team, members: usize, state: usize, mine: &[usize]) -> Result<Decomposition<'t>> {
        let size = team.size();
        let lengths = team.gather(Ok(vec![mine.len() as f64]), &vec![1; size])?;
        let counts: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
        let all = team.gather(Ok(mine.iter().map(|&i| i as f64).collect()), &counts)?;
        let mut rows = Vec::with_capacity(size);
        let mut at = 0;
        for &count in &counts {
            rows.push(all[at..at + count].iter().map(|&i| i as usize).collect::<Vec<usize>>());
            at += count;
        }
        let mut seen = vec![false; state];
        for &i in rows.iter().flatten() {
            anyhow::ensure!(i < state && !std::mem::replace(&mut seen[i], true), "the ranks' rows do not cover the state's {state} rows once each (row {i})");
        }
        anyhow::ensure!(seen.iter().all(|&s| s), "the ranks' rows leave some of the state's {state} rows out");
        Ok(Decomposition { team, members, state, rows })
    }

    fn rank(&self) -> usize {
        self.team.rank()
    }

    fn member_share(&self, rank: usize) -> std::ops::Range<usize> {
        share(self.members, self.team.size(), rank)
    }

    /// This rank's members (`n × share`) → this rank's rows (`rows × N`).
    pub fn to_rows(&self, columns: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        self.rows_of_members(Ok(columns), &self.rows)
    }

    /// Rows `sets[r]` of a matrix whose members (columns) are split over
    /// the ranks, for every rank r: this rank's `columns` (its share of the
    /// members, or an error that makes every rank fail) → rows
    /// `sets[rank]` of every member (`sets[rank].len() × N`).
    pub fn rows_of_members(&self, columns: Result<&DMatrix<f64>>, sets: &[Vec<usize>]) -> Result<DMatrix<f64>> {
        let (size, rank) = (self.team.size(), self.rank());
        let mine = self.member_share(rank).len();
        let send: Vec<usize> = sets.iter().map(|rows| rows.len() * mine).collect();
        let receive: Vec<usize> = (0..size).map(|q| sets[rank].len() * self.member_share(q).len()).collect();
        let outgoing = columns.map(|columns| {
            let mut outgoing = Vec::with_capacity(send.iter().sum());
            for rows in sets {
                for member in columns.column_iter() {
                    outgoing.extend(rows.iter().map(|&i| member[i]));
                }
            }
            outgoing
        });
        // Rank q's part is this rank's rows of q's members, column-major;
        // members come in rank order, so the parts end to end are the
        // rows × N matrix.
        let incoming = self.team.exchange(outgoing, &send, &receive)?;
        Ok(DMatrix::from_vec(sets[rank].len(), self.members, incoming))
    }

    /// This rank's rows (`rows × N`) → this rank's members (`n × share`).
    pub fn to_members(&self, rows: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        let size = self.team.size();
        let mine = self.member_share(self.rank());
        let send: Vec<usize> = (0..size).map(|q| rows.nrows() * self.member_share(q).len()).collect();
        let receive: Vec<usize> = self.rows.iter().map(|r| r.len() * mine.len()).collect();
        // The columns of rank q's members are contiguous, in rank order.
        let incoming = self.team.exchange(Ok(rows.as_slice().to_vec()), &send, &receive)?;
        let mut columns = DMatrix::zeros(self.state, mine.len());
        let mut at = 0;
        for index in &self.rows {
            for k in 0..mine.len() {
                for &i in index {
                    columns[(i, k)] = incoming[at];
                    at += 1;
                }
            }
        }
        Ok(columns)
    }

    /// A matrix of this rank's rows (one column or N) put together with
    /// every other rank's, in state order, on every rank.
    pub fn assemble(&self, part: Result<DMatrix<f64>>, cols: usize) -> Result<DMatrix<f64>> {
        let counts: Vec<usize> = self.rows.iter().map(|rows| rows.len() * cols).collect();
        let all = self.team.gather(part.map(|m| m.as_slice().to_vec()), &counts)?;
        let mut whole = DMatrix::zeros(self.state, cols);
        let mut at = 0;
        for index in &self.rows {
            for k in 0..cols {
                for &i in index {
                    whole[(i, k)] = all[at];
                    at += 1;
                }
            }
        }
        Ok(whole)
    }
}

/// [`super::ensemble::cycle`] with the ensemble decomposed over
/// `execution.team` (at least two ranks) by `analysis`'s rows.
#[allow(clippy::too_many_arguments)] // the same as `ensemble::cycle`
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
    let team = execution.team;
    let ch = twin.chronology;
    let state = twin.prior.size();
    let mine = analysis.rows().context("the decomposed cycle needs an analysis with rows of its own")?.to_vec();
    let d = Decomposition::new(team, members, state, &mine)?;
    let member_share = d.member_share(team.rank());
    // Only this rank's members are ever held (drawn from the same stream).
    let mut columns = twin.prior.sample_members(members, member_share.clone(), rng)?;
    let stats_of = |e: &DMatrix<f64>| -> Result<(DVector<f64>, DVector<f64>)> {
        let mu = mean(e);
        let variances = variances_about(e, &mu);
        let local = DMatrix::from_columns(&[mu, variances]);
        let whole = d.assemble(Ok(local), 2)?;
        Ok((whole.column(0).into_owned(), whole.column(1).into_owned()))
    };
    let mut stats = CycleStats::with_capacity(ch.cycles);
    let mut analysis_mean = DMatrix::zeros(state, ch.cycles);
    let mut kept = Vec::new();
    let (mut phases, mut exchange, mut clock) = (Phases::default(), 0.0, Instant::now());
    for k in 0..ch.cycles {
        let t = twin.times[k];
        // This rank's members: forecast, then observed.
        let observed = if member_share.is_empty() {
            Ok(DMatrix::zeros(obs.info().obs_size, 0))
        } else {
            let forecast = forecast(model, &mut columns, twin, k);
            Phases::lap(&mut phases.forecast, &mut clock);
            forecast
                .and_then(|()| obs.observe(&columns, t).with_context(|| format!("observing the ensemble at cycle {k}")))
                .with_context(|| format!("members {}..{} (counted from 0) on MPI rank {}", member_share.start, member_share.end, team.rank()))
        };
        Phases::lap(&mut phases.observe, &mut clock);
        // Each rank gets the observations its rows' analysis uses (its
        // halo), every member's; a rank that failed makes every rank fail.
        analysis.locate(obs, t).with_context(|| format!("locating the observations at cycle {k}"))?;
        let halos = analysis.observations_by_rank()?;
        Phases::lap(&mut phases.analysis, &mut clock);
        let eo = match observed {
            Ok(ref observed) => d.rows_of_members(Ok(observed), &halos)?,
            Err(e) => d.rows_of_members(Err(e), &halos)?,
        };
        // This rank's rows, every member.
        let mut e = d.to_rows(&columns)?;
        Phases::lap(&mut exchange, &mut clock);
        let truth = twin.truth_at(k);
        let (mu, var) = stats_of(&e)?;
        stats.push_forecast(rmse(&mu, &truth), spread_of(&var));
        Phases::lap(&mut phases.statistics, &mut clock);

        analysis.analyse_rows(&mut e, &eo, &twin.obs_at(k), &twin.obs_variance, rng).with_context(|| format!("analysis at cycle {k}"))?;
        post.apply(&mut e, rng);
        Phases::lap(&mut phases.analysis, &mut clock);

        let (mu, var) = stats_of(&e)?;
        stats.push_analysis(rmse(&mu, &truth), spread_of(&var));
        analysis_mean.set_column(k, &mu);
        if execution.record.keeps(k) {
            kept.push((k, d.assemble(Ok(e.clone()), members)?));
        }
        Phases::lap(&mut phases.statistics, &mut clock);
        columns = d.to_members(&e)?;
        Phases::lap(&mut exchange, &mut clock);
        progress(k);
    }
    phases.exchange = Some(exchange);
    Ok(Trajectory { stats, analysis_mean, members: kept, phases: Some(phases.per_cycle(ch.cycles)) })
}
