//! Step 2 of the cycle, the oracle: classical data assimilation in twin
//! experiments. Each method is a short transcription of its equations
//! (module docs give them, with the literature's names); all of them are
//! written against [`ForwardModel`] and [`ObsOperator`], never against a
//! particular model.

pub mod baselines;
pub mod enkf;
pub mod ensemble;
pub mod etkf;
pub mod letkf;
pub mod linalg;
pub mod stats;
pub mod twin;

use crate::model::{ForwardModel, ObsOperator};
use anyhow::Result;
use ensemble::{PostProcess, Record, Trajectory};
use rand::SeedableRng;
use serde::Serialize;
use twin::Twin;

/// A DA method with its parameters (names as in DAPPER).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "method")]
pub enum Method {
    Climatology,
    OptInterp,
    Var3D {
        xb: f64,
    },
    /// Stochastic EnKF with perturbed observations.
    EnKF {
        #[serde(rename = "N")]
        n: usize,
        infl: f64,
        rot: bool,
    },
    /// Square-root ETKF.
    ETKF {
        #[serde(rename = "N")]
        n: usize,
        infl: f64,
        rot: bool,
    },
    LETKF {
        #[serde(rename = "N")]
        n: usize,
        infl: f64,
        rot: bool,
        loc_rad: f64,
    },
}

impl Method {
    /// A short label like `ETKF N=28 infl=1.02 rot`.
    pub fn label(&self) -> String {
        let ens = |name: &str, n: &usize, infl: &f64, rot: &bool| format!("{name} N={n} infl={infl}{}", if *rot { " rot" } else { "" });
        match self {
            Method::Climatology => "Climatology".into(),
            Method::OptInterp => "OptInterp".into(),
            Method::Var3D { xb } => format!("3D-Var xB={xb}"),
            Method::EnKF { n, infl, rot } => ens("EnKF PertObs", n, infl, rot),
            Method::ETKF { n, infl, rot } => ens("ETKF", n, infl, rot),
            Method::LETKF { n, infl, rot, loc_rad } => format!("{} loc_rad={loc_rad}", ens("LETKF", n, infl, rot)),
        }
    }

    /// Run the method on a twin experiment. `seed` drives the method's own
    /// randomness (initial ensemble, perturbations, rotations), so methods
    /// are independent of the order they run in. `record` says which
    /// analysis ensembles to keep.
    pub fn run(
        &self,
        twin: &Twin,
        model: &mut dyn ForwardModel,
        obs: &mut dyn ObsOperator,
        seed: u64,
        record: Record,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Trajectory> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        match self {
            Method::Climatology => baselines::climatology(twin, progress),
            Method::OptInterp => baselines::optimal_interpolation(twin, obs, progress),
            Method::Var3D { xb } => baselines::var3d(twin, model, obs, *xb, progress),
            Method::EnKF { n, infl, rot } => {
                ensemble::cycle(twin, model, obs, *n, &mut enkf::PertObs, PostProcess { infl: *infl, rot: *rot }, record, &mut rng, progress)
            }
            Method::ETKF { n, infl, rot } => {
                ensemble::cycle(twin, model, obs, *n, &mut etkf::Etkf, PostProcess { infl: *infl, rot: *rot }, record, &mut rng, progress)
            }
            Method::LETKF { n, infl, rot, loc_rad } => {
                let grid =
                    model.info().grid.ok_or_else(|| anyhow::anyhow!("LETKF needs a spatial grid, but forward model `{}` declares none", model.info().name))?;
                let mut letkf = letkf::Letkf::new(grid, &obs.info().locations, *loc_rad, 2);
                ensemble::cycle(twin, model, obs, *n, &mut letkf, PostProcess { infl: *infl, rot: *rot }, record, &mut rng, progress)
            }
        }
    }
}
