//! Step 2 of the cycle, the oracle: classical data assimilation in twin
//! experiments. Each method is a short transcription of its equations
//! (module docs give them, with the literature's names); all of them are
//! written against [`ForwardModel`] and [`ObsOperator`], never against a
//! particular model.
//!
//! - the EnKF family and the baselines, each a [`method::DaMethod`] in its
//!   own module, registered by name in [`method::METHODS`];
//! - [`models`]: native reference models (Lorenz-96, linear-Gaussian) for
//!   tests and benchmarks;
//! - [`params`]: the oracle of static problems, inference over a
//!   simulator's parameters (priors, ES-MDA, MCMC and its diagnostics).

pub mod baselines;
pub mod enkf;
pub mod ensemble;
pub mod etkf;
pub mod letkf;
pub mod linalg;
pub mod method;
pub mod models;
pub mod params;
pub mod stats;
pub mod twin;

pub use method::{Method, Role};
