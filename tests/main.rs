//! geohost's integration tests: one test binary (it links the heavy crates
//! once), one module per area. They drive the real `geohost` binary, the
//! real plugin components (built by plugins/build.sh) and real SQLite files.

mod common;

mod authors;
mod bench;
mod cli;
mod emulate;
mod flows;
mod infer;
mod languages;
mod methane;
mod metrics;
mod pages;
mod parallel;
mod posterior_component;
mod registry;
mod sandbox;
mod sbibm;
mod spatial;
mod submit;
mod trust;
