//! A deliberately simple `filter` submission: nudging with a fixed gain, a
//! 3D-Var-like update that ignores the ensemble's covariance. Each member
//! moves a fraction `gain` of the way from its observed value to the
//! observation, at the grid point each observation sits on; so a leaderboard
//! has an entry between the static baselines and the ensemble filters.
//! Config: `N` (members, default 10), `gain` (in (0, 1], default 0.5).

use geohost_sdk::{Config, Filter, FilterInfo, Members, Problem, SplitMix64};

struct Nudging {
    n: usize,
    gain: f64,
    /// The state index each observation nudges.
    at: Vec<usize>,
}

impl Filter for Nudging {
    fn init(config: &Config, problem: &Problem) -> Result<Self, String> {
        config.allow_only(&["N", "gain"])?;
        let n = config.usize_or("N", 10)?;
        let gain = config.f64_or("gain", 0.5)?;
        if !(gain > 0.0 && gain <= 1.0) {
            return Err(format!("`gain` must be in (0, 1], got {gain}"));
        }
        let mut at = Vec::with_capacity(problem.obs_size);
        for (j, &loc) in problem.locations.iter().enumerate() {
            let i = loc.round();
            if !(i >= 0.0 && (i as usize) < problem.state_size) {
                return Err(format!("observation {j} sits at {loc}, off the state's grid (0..{})", problem.state_size));
            }
            at.push(i as usize);
        }
        Ok(Nudging { n: n.max(2), gain, at })
    }

    fn info(&self) -> FilterInfo {
        FilterInfo { name: "nudging".into(), version: env!("CARGO_PKG_VERSION").into(), members: self.n }
    }

    fn analyse(&mut self, x: &mut Members<'_>, hx: &[f64], y: &[f64], _t: f64, _rng: &mut SplitMix64) -> Result<(), String> {
        let p = y.len();
        for j in 0..x.members {
            let observed = &hx[j * p..(j + 1) * p];
            let member = x.member_mut(j);
            for (k, &i) in self.at.iter().enumerate() {
                member[i] += self.gain * (y[k] - observed[k]);
            }
        }
        Ok(())
    }
}

geohost_sdk::export_filter!(Nudging);
