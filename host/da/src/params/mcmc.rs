//! The affine-invariant ensemble sampler (Goodman & Weare 2010, the
//! "stretch move" of emcee), giving reference posterior samples, with its
//! convergence diagnostics: split-R̂ over the walkers' chains and the
//! integrated autocorrelation time τ with the effective sample size.
//!
//! Each half of the walkers moves at once against the other half, so the
//! log posterior of a half is one batched simulator call:
//!
//!   z ~ g(z) ∝ 1/√z on [1/a, a],   Y = X_j + z (X_k − X_j),
//!   accept with probability min(1, z^{d−1} p(Y)/p(X_k)).
//!
//! Walkers start at the most probable of 20 × walkers prior draws; in the
//! first half of the burn-in, walkers stuck far below the others restart
//! from good ones.
//!
//! Stretch moves cannot carry walkers between well separated modes, so
//! with `temperatures` > 1 the sampler runs a parallel-tempering ladder
//! (as ptemcee does for emcee): rung t samples p(θ) p(y | θ)^β_t with
//! β_t = 3^(−t), each rung its own ensemble, and after every step walkers
//! of neighbouring rungs swap with probability
//! min(1, exp((β_{t−1} − β_t)(log L_hot − log L_cold))). Only the β = 1
//! rung is kept; the diagnostics are computed on it.

use super::Problem;
use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rand::Rng;
use serde::Serialize;

pub struct Spec {
    pub walkers: usize,
    pub steps: usize,
    /// Steps discarded at the start.
    pub burn_in: usize,
    /// Stretch scale a (2 in emcee).
    pub a: f64,
    /// Rungs of the parallel-tempering ladder (1: no tempering). Rung t
    /// samples prior × likelihood^β_t with β_t = 3^(−t); neighbouring rungs
    /// swap walkers after every step, so the β = 1 rung (the one kept)
    /// reaches modes the stretch move alone cannot cross to. Costs
    /// `temperatures` times the simulations.
    pub temperatures: usize,
}

/// Samples and diagnostics.
pub struct Chains {
    /// Kept samples, `parameters × (walkers · kept steps)`, step-major.
    pub samples: DMatrix<f64>,
    pub diagnostics: Diagnostics,
}

#[derive(Clone, Debug, Serialize)]
pub struct Diagnostics {
    /// Split-R̂ per parameter (1 at convergence; above 1.05 is a warning).
    pub r_hat: Vec<f64>,
    /// Integrated autocorrelation time per parameter, in steps.
    pub tau: Vec<f64>,
    /// Effective sample size per parameter: walkers · kept steps / τ.
    pub ess: Vec<f64>,
    pub acceptance: f64,
    /// Fraction of accepted swaps between rungs (with tempering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_acceptance: Option<f64>,
}

/// Initial walkers: the `walkers` most probable of `walkers × pool`
/// prior draws, so that walkers start where the posterior has mass, with
/// their log prior densities and log likelihoods.
fn initial(problem: &mut Problem<'_>, walkers: usize, pool: usize, rng: &mut impl Rng) -> Result<(DMatrix<f64>, Vec<f64>, Vec<f64>)> {
    let d = problem.prior.dim();
    let n = walkers * pool;
    let mut draws = DMatrix::zeros(d, n);
    for mut col in draws.column_iter_mut() {
        col.copy_from_slice(&problem.prior.sample(rng));
    }
    let (prior, ll) = problem.log_prior_and_likelihood(&draws)?;
    let lp: Vec<f64> = prior.iter().zip(&ll).map(|(p, l)| p + l).collect();
    let mut order: Vec<usize> = (0..n).filter(|&j| lp[j].is_finite()).collect();
    if order.len() < walkers {
        bail!("MCMC: only {} of {n} prior draws have a finite posterior density", order.len());
    }
    order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
    order.truncate(walkers);
    Ok((draws.select_columns(&order), order.iter().map(|&j| prior[j]).collect(), order.iter().map(|&j| ll[j]).collect()))
}

/// Inverse temperature of rung `t` of the ladder: β_t = 3^(−t).
pub fn beta(t: usize) -> f64 {
    3f64.powi(-(t as i32))
}

pub fn run(problem: &mut Problem<'_>, spec: &Spec, rng: &mut impl Rng) -> Result<Chains> {
    let (w, d) = (spec.walkers, problem.prior.dim());
    if w < 2 * d + 2 || w % 2 == 1 {
        bail!("MCMC: `walkers` must be even and at least 2 × parameters + 2 = {}, got {w}", 2 * d + 2);
    }
    if spec.burn_in >= spec.steps {
        bail!("MCMC: `burn_in` ({}) must be less than `steps` ({})", spec.burn_in, spec.steps);
    }
    if !(1..=20).contains(&spec.temperatures) {
        bail!("MCMC: `temperatures` must be 1 to 20, got {}", spec.temperatures);
    }
    let temps = spec.temperatures;
    let betas: Vec<f64> = (0..temps).map(beta).collect();
    // Every rung starts from the same walkers; hotter rungs spread out
    // during the burn-in. Walker k of rung t is column t·w + k.
    let (x0, prior0, ll0) = initial(problem, w, 20, rng)?;
    let mut x = DMatrix::zeros(d, w * temps);
    for t in 0..temps {
        x.columns_mut(t * w, w).copy_from(&x0);
    }
    let (mut prior_lp, mut ll) = (prior0.repeat(temps), ll0.repeat(temps));
    let tempered = |t: usize, prior: f64, ll: f64| if ll.is_finite() { prior + betas[t] * ll } else { f64::NEG_INFINITY };
    let kept = spec.steps - spec.burn_in;
    let mut trace = DMatrix::zeros(d, w * kept);
    let (mut accepted, mut proposed) = (0usize, 0usize);
    let (mut swaps_accepted, mut swaps_proposed) = (0usize, 0usize);
    let half = w / 2;
    for step in 0..spec.steps {
        for first in [0, half] {
            let (movers, others) = if first == 0 { (0..half, half..w) } else { (half..w, 0..half) };
            // One batched evaluation for the moving half of every rung.
            let mut proposal = DMatrix::zeros(d, half * temps);
            let mut zs = Vec::with_capacity(half * temps);
            for t in 0..temps {
                for (col, k) in movers.clone().enumerate() {
                    let j = rng.random_range(others.clone());
                    let u: f64 = rng.random();
                    let z = ((spec.a - 1.0) * u + 1.0).powi(2) / spec.a;
                    for i in 0..d {
                        proposal[(i, t * half + col)] = x[(i, t * w + j)] + z * (x[(i, t * w + k)] - x[(i, t * w + j)]);
                    }
                    zs.push(z);
                }
            }
            let (prior_new, ll_new) = problem.log_prior_and_likelihood(&proposal)?;
            for t in 0..temps {
                for (col, k) in movers.clone().enumerate() {
                    let (c, kk) = (t * half + col, t * w + k);
                    proposed += usize::from(t == 0);
                    let new = tempered(t, prior_new[c], ll_new[c]);
                    let log_ratio = (d as f64 - 1.0) * zs[c].ln() + new - tempered(t, prior_lp[kk], ll[kk]);
                    if new.is_finite() && rng.random::<f64>().ln() < log_ratio {
                        x.set_column(kk, &proposal.column(c));
                        (prior_lp[kk], ll[kk]) = (prior_new[c], ll_new[c]);
                        accepted += usize::from(t == 0);
                    }
                }
            }
        }
        // Swaps between neighbouring rungs (hottest pair first): walker k of
        // rung t with a random walker of rung t − 1, accepted with
        // probability min(1, exp((β_{t−1} − β_t)(L_k − L_j))).
        for t in (1..temps).rev() {
            let partners = rand::seq::index::sample(rng, w, w).into_vec();
            for (k, &j) in partners.iter().enumerate() {
                let (hot, cold) = (t * w + k, (t - 1) * w + j);
                swaps_proposed += 1;
                let log_ratio = (betas[t - 1] - betas[t]) * (ll[hot] - ll[cold]);
                if rng.random::<f64>().ln() < log_ratio {
                    x.swap_columns(hot, cold);
                    prior_lp.swap(hot, cold);
                    ll.swap(hot, cold);
                    swaps_accepted += 1;
                }
            }
        }
        // Stuck walkers: in the first half of the burn-in, every 50 steps a
        // walker whose log density is far (> 10 nats) below the median of
        // its rung restarts from another walker above the median. The
        // stretch move cannot pull a walker out of a far worse local mode,
        // and the burn-in is discarded, so this changes no kept sample's law.
        if step < spec.burn_in / 2 && step % 50 == 49 {
            for t in 0..temps {
                let lp: Vec<f64> = (0..w).map(|k| tempered(t, prior_lp[t * w + k], ll[t * w + k])).collect();
                let mut sorted = lp.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let median = sorted[w / 2];
                let good: Vec<usize> = (0..w).filter(|&k| lp[k] >= median).collect();
                for k in 0..w {
                    if lp[k] < median - 10.0 {
                        let j = good[rng.random_range(0..good.len())];
                        let col = x.column(t * w + j).into_owned();
                        x.set_column(t * w + k, &col);
                        (prior_lp[t * w + k], ll[t * w + k]) = (prior_lp[t * w + j], ll[t * w + j]);
                    }
                }
            }
        }
        if step >= spec.burn_in {
            let s = step - spec.burn_in;
            trace.view_mut((0, s * w), (d, w)).copy_from(&x.columns(0, w));
        }
    }
    let mut diagnostics = diagnose(&trace, w, kept, accepted as f64 / proposed as f64);
    if temps > 1 {
        diagnostics.swap_acceptance = Some(swaps_accepted as f64 / swaps_proposed as f64);
    }
    Ok(Chains { samples: trace, diagnostics })
}

/// The chain of walker `k` for parameter `i` out of a step-major trace.
fn chain(trace: &DMatrix<f64>, walkers: usize, i: usize, k: usize) -> Vec<f64> {
    (0..trace.ncols() / walkers).map(|s| trace[(i, s * walkers + k)]).collect()
}

fn diagnose(trace: &DMatrix<f64>, walkers: usize, steps: usize, acceptance: f64) -> Diagnostics {
    let d = trace.nrows();
    let mut r_hat = Vec::with_capacity(d);
    let mut tau = Vec::with_capacity(d);
    for i in 0..d {
        let chains: Vec<Vec<f64>> = (0..walkers).map(|k| chain(trace, walkers, i, k)).collect();
        r_hat.push(split_r_hat(&chains));
        tau.push(autocorrelation_time(&chains));
    }
    let ess = tau.iter().map(|t| (walkers * steps) as f64 / t).collect();
    Diagnostics { r_hat, tau, ess, acceptance, swap_acceptance: None }
}

/// Split-R̂ (Gelman et al., BDA3 §11.4): every chain cut in two halves;
/// √(((n−1)/n · W + B/n) / W) with W the mean within-chain variance and B
/// the between-chain variance of the means times n.
pub fn split_r_hat(chains: &[Vec<f64>]) -> f64 {
    let n = chains[0].len() / 2;
    let halves: Vec<&[f64]> = chains.iter().flat_map(|c| [&c[..n], &c[n..2 * n]]).collect();
    let m = halves.len() as f64;
    let nf = n as f64;
    let means: Vec<f64> = halves.iter().map(|h| h.iter().sum::<f64>() / nf).collect();
    let grand = means.iter().sum::<f64>() / m;
    let b = nf / (m - 1.0) * means.iter().map(|x| (x - grand).powi(2)).sum::<f64>();
    let w = halves.iter().zip(&means).map(|(h, mu)| h.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (nf - 1.0)).sum::<f64>() / m;
    if w == 0.0 {
        return if b == 0.0 { 1.0 } else { f64::INFINITY };
    }
    (((nf - 1.0) / nf * w + b / nf) / w).sqrt()
}

/// Integrated autocorrelation time of the chains (emcee's estimator):
/// the autocorrelation function averaged over chains, τ(M) = 1 + 2 Σ_{t≤M}
/// ρ(t), with Sokal's window: the smallest M ≥ 5 τ(M).
pub fn autocorrelation_time(chains: &[Vec<f64>]) -> f64 {
    let n = chains[0].len();
    // Deviations from each chain's mean, and each chain's lag-0 sum.
    let devs: Vec<Vec<f64>> = chains
        .iter()
        .map(|c| {
            let mean = c.iter().sum::<f64>() / n as f64;
            c.iter().map(|x| x - mean).collect()
        })
        .collect();
    let c0: Vec<f64> = devs.iter().map(|d| d.iter().map(|x| x * x).sum()).collect();
    let live: Vec<usize> = (0..devs.len()).filter(|&k| c0[k] > 0.0).collect();
    if live.is_empty() {
        return 1.0;
    }
    let mut tau = 1.0;
    for t in 1..n / 2 {
        let rho = live.iter().map(|&k| devs[k][..n - t].iter().zip(&devs[k][t..]).map(|(a, b)| a * b).sum::<f64>() / c0[k]).sum::<f64>() / live.len() as f64;
        tau += 2.0 * rho;
        if t as f64 >= 5.0 * tau {
            break;
        }
    }
    tau.max(1.0)
}
