//! The classifier two-sample test (C2ST) as sbibm defines it: z-score both
//! samples by the first one's mean and standard deviation, label them 0
//! and 1, and report the mean held-out accuracy of an MLP classifier
//! (ReLU, two hidden layers of 10·d units, Adam at 1e-3, batches of 200,
//! stopped once the training loss improves by less than 1e-4 for 10
//! epochs, or after 200 epochs — sklearn's default cap; sbibm raises it)
//! over 5 shuffled folds, trained in parallel. 0.5 means the samples cannot be told
//! apart; 1.0 means they are disjoint.
//!
//! The classifier trains through the fused MLP step of
//! [`crate::fused`] (its logistic head).

use crate::fused::{AdamW, MlpTrainer};
use crate::net::Scaling;
use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub folds: usize,
    pub max_epochs: usize,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { folds: 5, max_epochs: 200, seed: 1 }
    }
}

const BATCH: usize = 200;

/// C2ST accuracy between samples `x` and `y` (`dimensions × samples`).
pub fn c2st(x: &DMatrix<f64>, y: &DMatrix<f64>, spec: Spec) -> Result<f64> {
    let d = x.nrows();
    if y.nrows() != d {
        bail!("C2ST: the samples have {} and {} dimensions", d, y.nrows());
    }
    if x.ncols() < spec.folds || y.ncols() < spec.folds {
        bail!("C2ST: {} and {} samples are too few for {} folds", x.ncols(), y.ncols(), spec.folds);
    }
    if x.iter().chain(y.iter()).any(|v| !v.is_finite()) {
        bail!("C2ST: the samples contain non-finite values");
    }
    // z-score by x's moments (sbibm), both samples into one row-major table.
    let n = x.ncols() + y.ncols();
    let mut data = vec![0f32; n * d];
    let mut labels = vec![0f32; n];
    for i in 0..d {
        let row = x.row(i);
        let mean = row.mean();
        let sd = (row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (row.len() as f64 - 1.0)).sqrt().max(1e-12);
        for (j, v) in x.row(i).iter().chain(y.row(i).iter()).enumerate() {
            data[j * d + i] = ((v - mean) / sd) as f32;
        }
    }
    labels[x.ncols()..].iter_mut().for_each(|l| *l = 1.0);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    // Folds are independent: train them on all cores (each with its own
    // seeded stream, so the result does not depend on the thread count).
    let threads = crate::threads::workers_for(spec.folds);
    let fold = |k: usize| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed.wrapping_mul(0x9E37_79B9).wrapping_add(k as u64 + 1));
        let (lo, hi) = (k * n / spec.folds, (k + 1) * n / spec.folds);
        let test: Vec<usize> = order[lo..hi].to_vec();
        let train: Vec<usize> = order[..lo].iter().chain(&order[hi..]).copied().collect();
        let mut clf = classifier(d, &mut rng);
        fit(&mut clf, &data, &labels, d, train, spec.max_epochs, &mut rng);
        accuracy(&mut clf, &data, &labels, d, &test)
    };
    let accuracies = crate::threads::round_robin((0..spec.folds).collect(), threads, fold, &fold);
    Ok(accuracies.iter().sum::<f64>() / accuracies.len() as f64)
}

/// A fresh d → 10d → 10d → 1 classifier with Glorot-uniform weights.
fn classifier(d: usize, rng: &mut impl Rng) -> MlpTrainer {
    let sizes = [d, 10 * d, 10 * d, 1];
    let params = sizes
        .windows(2)
        .flat_map(|w| {
            let bound = (6.0 / (w[0] + w[1]) as f64).sqrt();
            let weights: Vec<f32> = (0..w[0] * w[1]).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let bias: Vec<f32> = (0..w[1]).map(|_| rng.random_range(-bound..bound) as f32).collect();
            [weights, bias]
        })
        .collect();
    MlpTrainer::new(&sizes, params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, BATCH, AdamW::new(1e-3, 0.0))
}

fn gather(data: &[f32], labels: &[f32], d: usize, rows: &[usize], x: &mut Vec<f32>, y: &mut Vec<f32>) {
    x.clear();
    y.clear();
    for &r in rows {
        x.extend_from_slice(&data[r * d..(r + 1) * d]);
        y.push(labels[r]);
    }
}

fn fit(clf: &mut MlpTrainer, data: &[f32], labels: &[f32], d: usize, mut train: Vec<usize>, max_epochs: usize, rng: &mut impl Rng) {
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let (mut best, mut stale) = (f64::INFINITY, 0);
    for _ in 0..max_epochs {
        train.shuffle(rng);
        let mut total = 0.0;
        for rows in train.chunks(BATCH) {
            gather(data, labels, d, rows, &mut bx, &mut by);
            total += clf.step_logistic(&bx, &by, rows.len()) as f64 * rows.len() as f64;
        }
        let loss = total / train.len() as f64;
        // sklearn's rule: stop after 10 epochs without an improvement of 1e-4.
        if loss > best - 1e-4 {
            stale += 1;
            if stale >= 10 {
                break;
            }
        } else {
            stale = 0;
        }
        best = best.min(loss);
    }
}

fn accuracy(clf: &mut MlpTrainer, data: &[f32], labels: &[f32], d: usize, test: &[usize]) -> f64 {
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let mut correct = 0usize;
    for rows in test.chunks(BATCH) {
        gather(data, labels, d, rows, &mut bx, &mut by);
        let logits = clf.outputs(&bx, rows.len());
        correct += logits.iter().zip(&by).filter(|(s, l)| (**s > 0.0) == (**l > 0.5)).count();
    }
    correct as f64 / test.len() as f64
}
