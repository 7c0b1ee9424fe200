//! Benchmark contracts: the executable statement of what a step of the
//! cycle must achieve, and the machinery that scores candidates against it.
//!
//! - [`contract`]: the contract file, validated field by field;
//! - [`prereg`]: pre-registration, which freezes a contract and every
//!   input it names by registry id;
//! - [`score`]: scoring candidates with sandboxed metric components into a
//!   report, registered with its lineage;
//! - [`hidden`]: hidden evaluation experiments (secret seeds, commitments);
//! - [`submit`]: a submitted component run and scored on them;
//! - [`posterior`]: posterior benchmarks (step 5 of a static problem, hidden observations);
//! - [`retrieval`]: retrieval benchmarks (steps 3–5 of an L1→L2 row, hidden pixels);
//! - [`verify`]: a submission's report recomputed byte for byte;
//! - [`probing`]: anti-probing (scorings per submitter per day, published precision);
//! - [`leaderboard`]: everything scored under a contract, ranked;
//! - [`diff`]: two reports compared metric by metric;
//! - [`forecast`]: forecast references (an emulator against its model);
//! - [`cycle`]: stage contracts composed into a cycle benchmark.

mod component;
pub mod contract;
pub mod cycle_benchmark;
pub mod diff;
pub mod forecast;
pub mod hidden;
pub mod leaderboard;
pub mod page;
pub mod posterior;
pub mod prereg;
pub mod probing;
pub mod retrieval;
pub mod score;
pub mod submit;
pub mod verify;

pub use contract::Contract;
pub use score::Report;
