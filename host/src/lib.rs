//! geohost: a plugin host for the data-driven modeling cycle of geoscience.
//!
//! - [`model`]: the forward-model / observation-operator traits the DA core
//!   is written against.
//! - [`sandbox`]: wasm components implementing those traits, under limits.
//! - [`models`]: native reference models (tests, benchmarks).
//! - [`da`]: step 2, the oracle: twin experiments and the EnKF family.
//! - [`pluginset`]: the plugin-set file that describes a run.
//! - [`registry`]: content-addressed artifacts and their lineage (SQLite).

pub mod bench;
pub mod da;
pub mod emulate;
pub mod infer;
pub mod model;
pub mod models;
pub mod output;
pub mod perf;
pub mod pluginset;
pub mod registry;
pub mod run;
pub mod sandbox;
