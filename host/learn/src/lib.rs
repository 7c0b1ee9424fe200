//! Learning in the cycle: neural emulators (step 3), amortized posteriors
//! (step 5), and the classifier and calibration checks that score them.
//!
//! - [`net`], [`fused`], [`train`]: the networks on candle, the fused MLP
//!   training step every head shares (regression, mixture NLL, logistic),
//!   and the emulator's training loop;
//! - [`dataset`], [`neural`]: simulation datasets drawn from a forward
//!   model, and [`neural::NeuralForward`], the emulator as a
//!   `geohost_sandbox::model::ForwardModel` (step 3 → 4 swaps it in);
//! - [`static_emulator`]: the emulator of a static simulator;
//! - [`mdn`], [`refine`], [`amortize`]: the mixture density network, its
//!   learned Gauss–Newton refinement, and the step-5 training that ties them
//!   to a simulator and the registry;
//! - [`export`]: a single-stage posterior as a `posterior` component;
//! - [`c2st`], [`calibration`]: classifier two-sample test and coverage;
//! - [`stopping`]: the early-stopped training settings all of them share.

pub mod amortize;
pub mod c2st;
pub mod calibration;
pub mod dataset;
pub mod density;
pub mod export;
pub mod flow;
pub mod fused;
pub mod mdn;
pub mod net;
pub mod neural;
pub mod refine;
pub mod static_emulator;
pub mod stopping;
pub mod threads;
pub mod train;

use anyhow::Result;
use nalgebra::DMatrix;

/// Columns `cols` of `m` (`rows × n`), each row standardised by its
/// `mean` and `std`, as a row-major `cols.len() × rows` f32 table (the
/// layout the fused MLP step takes).
pub(crate) fn standardised_rows(m: &DMatrix<f64>, cols: &[usize], mean: &[f64], std: &[f64]) -> Vec<f32> {
    cols.iter().flat_map(|&j| (0..m.nrows()).map(move |i| ((m[(i, j)] - mean[i]) / std[i]) as f32)).collect()
}

/// Mean and sd of each row, the sd of row i widened by independent noise
/// of sd `noise_sd[i]`; a constant row gets sd 1.
pub(crate) fn row_moments(m: &DMatrix<f64>, noise_sd: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    m.row_iter()
        .enumerate()
        .map(|(i, r)| {
            let mean = r.mean();
            let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r.len() as f64 - 1.0).max(1.0) + noise_sd.map_or(0.0, |s| s[i] * s[i]);
            (mean, if var > 1e-24 { var.sqrt() } else { 1.0 })
        })
        .unzip()
}

/// A training record as stored inside weights: without the wall-clock
/// time, so identical inputs give identical bytes (and one registry id).
pub fn stored_training(training: &impl serde::Serialize) -> Result<serde_json::Value> {
    let mut stored = serde_json::to_value(training)?;
    if let Some(o) = stored.as_object_mut() {
        o.remove("seconds");
    }
    Ok(stored)
}
