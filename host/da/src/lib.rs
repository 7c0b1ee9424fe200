//! Step 2 of the cycle, the oracle: classical data assimilation in twin
//! experiments. Each method is a short transcription of its equations
//! (module docs give them, with the literature's names); all of them are
//! written against [`ForwardModel`](geohost_sandbox::model::ForwardModel) and
//! [`ObsOperator`](geohost_sandbox::model::ObsOperator), never against a
//! particular model.
//!
//! - the EnKF family and the baselines, each a [`method::DaMethod`] in its
//!   own module, registered by name in [`METHODS`];
//! - [`models`]: native reference models (Lorenz-96, linear-Gaussian) for
//!   tests and benchmarks;
//! - [`params`]: the oracle of static problems, inference over a
//!   simulator's parameters (priors, ES-MDA, MCMC and its diagnostics).

pub mod baselines;
pub mod decomposed;
pub mod enkf;
pub mod ensemble;
pub mod etkf;
pub mod letkf;
pub mod linalg;
pub mod method;
pub mod models;
pub mod params;
pub mod pool;
pub mod retrieval;
pub mod stats;
pub mod submission;
pub mod team;
pub mod twin;

#[cfg(test)]
mod tests;

pub use method::{Method, Role};

use anyhow::{bail, Result};
use method::{parse, Params};

/// Every DA method, by the names a `[[method]]` table may give it. Adding
/// a method: its file (a [`method::DaMethod`]) and one line here.
pub const METHODS: &[(&[&str], method::Parse)] = &[
    (&["climatology"], parse::<baselines::Climatology>),
    (&["oi", "optinterp"], parse::<baselines::OptInterp>),
    (&["3dvar", "var3d"], parse::<baselines::Var3D>),
    (&["enkf"], parse::<enkf::EnKF>),
    (&["etkf"], parse::<etkf::ETKF>),
    (&["letkf"], parse::<letkf::LETKF>),
];

/// The method named `kind` (any of its [`METHODS`] names, any case) with
/// `params`; `at` names the table in errors (e.g.
/// `[[method]] #2 (method = "etkf")`).
pub fn parse_method(kind: &str, params: &toml::Table, at: &str) -> Result<Method> {
    let lower = kind.to_ascii_lowercase();
    let Some((_, parse)) = METHODS.iter().find(|(names, _)| names.contains(&lower.as_str())) else {
        let known: Vec<&str> = METHODS.iter().map(|(names, _)| names[0]).collect();
        bail!("{at}: unknown method \"{kind}\"; choose {}", known.join(", "));
    };
    parse(&mut Params::new(params.clone(), at))
}
