//! Native reference models: trusted Rust implementations used by tests (to
//! check the wasm plugins against) and benchmarks (to measure the cost of
//! the sandbox).

pub mod linear;
pub mod lorenz96;
