//! The modeling cycle: what `geohost run`, `train`, `posterior` and `bench`
//! do, over the lower crates (DA, learning, sandbox, registry).
//!
//! - [`pluginset`]: the plugin-set file that describes a run;
//! - [`run`]: a dynamic run (twin experiment, every DA method, then
//!   [`emulation`]'s steps 3 and 4), written and registered by [`outputs`];
//! - [`static_run`]: a static run (steps 2–5 over a simulator's
//!   parameters) and [`static_report`], its cycle report checked against a
//!   cycle contract;
//! - [`scenes`]: a retrieval run (the L1→L2 methane row: scenes, the
//!   matched filter and IME as the oracle), [`pixels`] its steps 3–5 per
//!   pixel and [`retrieval_report`] its cycle report and contract;
//! - [`bench`]: benchmark contracts, pre-registration, scoring, reports,
//!   diffs and cycle benchmarks;
//! - [`progress`]: how long tasks report progress (the CLI draws it);
//! - [`scratch`]: private scratch directories for files written and read back.

pub mod bench;
pub mod emulation;
pub mod html;
pub mod matrix;
pub mod outputs;
pub mod pixels;
pub mod pluginset;
pub mod progress;
pub mod retrieval_report;
pub mod run;
pub mod scenes;
pub mod scratch;
pub mod static_contract;
pub mod static_report;
pub mod static_run;
pub mod tables;
