//! Training an emulator: MSE on standardised increments, AdamW, shuffled
//! mini-batches, a held-out validation split with early stopping (the best
//! epoch's weights are kept). A seed fixes the initial weights and the
//! batch order; kernels run on one thread, so a seed gives the same weights
//! bit for bit.
//!
//! The cnn trains through candle's autograd. The mlp trains through the
//! allocation-free step of [`super::fused`] (same arithmetic, several times
//! the throughput); validation runs the candle network either way.

use crate::dataset::Dataset;
use crate::fused::{self, MlpTrainer};
use crate::net::{Arch, Description, Net, Scaling};
use crate::stopping::EarlyStopping;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Upper bound on epochs (early stopping usually ends sooner); files
    /// written before the name was shared may say `epochs`.
    #[serde(alias = "epochs")]
    pub max_epochs: usize,
    #[serde(default = "batch")]
    pub batch: usize,
    #[serde(default = "lr")]
    pub lr: f64,
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    /// Fraction of the samples held out for validation (the last ones).
    #[serde(default = "crate::stopping::default_validation")]
    pub validation: f64,
    /// Stop after this many epochs without a better validation loss.
    #[serde(default = "patience")]
    pub patience: usize,
    pub seed: u64,
}

fn batch() -> usize {
    256
}
fn lr() -> f64 {
    1e-3
}
fn weight_decay() -> f64 {
    1e-4
}
fn patience() -> usize {
    5
}

impl TrainSpec {
    pub fn validate(&self, field: &str) -> Result<()> {
        self.early_stopping().validate(field)?;
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            bail!("{field}: weight_decay must be non-negative, got {}", self.weight_decay);
        }
        Ok(())
    }

    /// The training settings as the shared type (this loop keeps a fixed
    /// learning rate: no halving, no cosine).
    pub fn early_stopping(&self) -> EarlyStopping {
        EarlyStopping {
            max_epochs: self.max_epochs,
            batch: self.batch,
            lr: self.lr,
            validation: self.validation,
            patience: self.patience,
            halve_after: 0,
            cosine: false,
            seed: self.seed,
        }
    }
}

/// Per-epoch figures.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Epoch {
    pub train_loss: f64,
    pub val_loss: f64,
}

pub struct Trained {
    pub net: Net,
    pub history: Vec<Epoch>,
    pub best_epoch: usize,
    /// Validation RMSE of the best weights, in state units, and the state's
    /// standard deviation for scale.
    pub val_rmse: f64,
    pub state_std: f64,
    /// Training throughput (forward + backward + update), samples/s.
    pub samples_per_s: f64,
    pub train_samples: usize,
}

fn mean_std(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Copy the `rows` of a row-major `m`-column array into `out`.
fn gather(data: &[f32], rows: &[usize], m: usize, out: &mut Vec<f32>) {
    out.clear();
    for &r in rows {
        out.extend_from_slice(&data[r * m..(r + 1) * m]);
    }
}

fn rows_tensor(data: &[f32], rows: &[usize], m: usize) -> Result<Tensor> {
    let mut out = Vec::with_capacity(rows.len() * m);
    gather(data, rows, m, &mut out);
    Ok(Tensor::from_vec(out, (rows.len(), m), &Device::Cpu)?)
}

/// What takes the optimisation steps.
enum Stepper {
    Candle(AdamW),
    Fused(MlpTrainer),
}

impl Stepper {
    fn new(net: &Net, spec: &TrainSpec) -> Result<Stepper> {
        let Arch::Mlp { .. } = &net.desc.arch else {
            return Ok(Stepper::Candle(AdamW::new(net.vars(), ParamsAdamW { lr: spec.lr, weight_decay: spec.weight_decay, ..Default::default() })?));
        };
        Ok(Stepper::Fused(MlpTrainer::from_net(net, spec.batch, fused::AdamW::new(spec.lr, spec.weight_decay))?))
    }

    /// One step on a gathered batch; the loss before it.
    fn step(&mut self, net: &Net, bx: &[f32], by: &[f32], rows: usize, scale: f32) -> Result<f64> {
        match self {
            Stepper::Fused(t) => Ok(t.step(bx, by, rows, scale) as f64),
            Stepper::Candle(opt) => {
                let m = net.desc.state_size;
                let (x, y) = (Tensor::from_slice(bx, (rows, m), &Device::Cpu)?, Tensor::from_slice(by, (rows, m), &Device::Cpu)?);
                let loss = ((net.forward(&x)? - &y)? / scale as f64)?.sqr()?.mean_all()?;
                opt.backward_step(&loss)?;
                Ok(loss.to_scalar::<f32>()? as f64)
            }
        }
    }

    /// Bring the candle network up to date with the steps taken.
    fn sync(&self, net: &Net) -> Result<()> {
        if let Stepper::Fused(t) = self {
            for ((_, var), values) in net.params.iter().zip(t.params()) {
                var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu)?)?;
            }
        }
        Ok(())
    }
}

/// Train `arch` on `data`; `progress(epoch, train_loss, val_loss)` after
/// each epoch.
pub fn train(arch: Arch, data: &Dataset, spec: &TrainSpec, progress: &mut dyn FnMut(usize, f64, f64)) -> Result<Trained> {
    let (n, m) = (data.x.rows, data.x.cols);
    let n_val = spec.early_stopping().validation_rows(n);
    if n_val == 0 || n_val >= n {
        bail!("the dataset has {n} samples: too few for a validation fraction of {}", spec.validation);
    }
    let n_train = n - n_val;
    if data.x.data.iter().chain(&data.y.data).any(|v| !v.is_finite()) {
        bail!("the dataset contains non-finite values; the forward model diverged while simulating it");
    }
    let (mean, std) = mean_std(data.x.data[..n_train * m].iter().copied());
    let (_, inc_std) = mean_std(data.x.data[..n_train * m].iter().zip(&data.y.data[..n_train * m]).map(|(x, y)| y - x));
    if !(std > 0.0 && inc_std > 0.0) {
        bail!("the dataset has no variability (state std {std}, increment std {inc_std}); simulate longer or from other initial states");
    }
    let out_std = match arch {
        Arch::Mlp { .. } => inc_std,
        Arch::Cnn { .. } => inc_std / (data.lead as f64 * data.dt),
    };
    let desc = Description { arch, state_size: m, dt: data.dt, lead: data.lead, scaling: Scaling { mean, std, out_std } };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let net = Net::new(desc, &mut rng)?;
    let mut stepper = Stepper::new(&net, spec)?;

    let x: Vec<f32> = data.x.data.iter().map(|v| *v as f32).collect();
    let y: Vec<f32> = data.y.data.iter().map(|v| *v as f32).collect();
    let val_rows: Vec<usize> = (n_train..n).collect();
    let (val_x, val_y) = (rows_tensor(&x, &val_rows, m)?, rows_tensor(&y, &val_rows, m)?);
    let scale = inc_std as f32;
    let loss_of = |pred: &Tensor, target: &Tensor| -> Result<Tensor> { Ok(((pred - target)? / scale as f64)?.sqr()?.mean_all()?) };

    let mut order: Vec<usize> = (0..n_train).collect();
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let mut history = Vec::new();
    let (mut best, mut best_epoch, mut best_params) = (f64::INFINITY, 0, Vec::new());
    let mut train_time = 0.0;
    let mut trained = 0usize;
    for epoch in 0..spec.max_epochs {
        order.shuffle(&mut rng);
        let start = Instant::now();
        let mut total = 0.0;
        for rows in order.chunks(spec.batch) {
            gather(&x, rows, m, &mut bx);
            gather(&y, rows, m, &mut by);
            total += stepper.step(&net, &bx, &by, rows.len(), scale)? * rows.len() as f64;
        }
        train_time += start.elapsed().as_secs_f64();
        stepper.sync(&net)?;
        trained += n_train;
        let train_loss = total / n_train as f64;
        let val_loss = loss_of(&net.forward(&val_x)?, &val_y)?.to_scalar::<f32>()? as f64;
        if !val_loss.is_finite() {
            bail!("training diverged at epoch {} (validation loss {val_loss}); lower the learning rate", epoch + 1);
        }
        history.push(Epoch { train_loss, val_loss });
        progress(epoch, train_loss, val_loss);
        if val_loss < best {
            best = val_loss;
            best_epoch = epoch;
            best_params = net.params.iter().map(|(_, v)| v.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>()?;
        } else if epoch - best_epoch >= spec.patience {
            break;
        }
    }
    for ((_, var), best) in net.params.iter().zip(&best_params) {
        var.set(best)?;
    }
    let val_rmse = best.sqrt() * inc_std;
    Ok(Trained { net, history, best_epoch, val_rmse, state_std: std, samples_per_s: trained as f64 / train_time, train_samples: n_train })
}
