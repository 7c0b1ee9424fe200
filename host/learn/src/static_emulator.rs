//! Step 3 for static problems: a neural emulator of the observed forward
//! map θ ↦ H(G(θ)), trained by least squares on step 5's simulations (the
//! same cached dataset), and used in step 4 in place of the simulator and
//! observation plugins ([`Observed`] is then the identity).
//!
//! An MLP on standardised θ predicts the standardised noise-free
//! observation; it trains through the fused step of
//! [`crate::fused`] (its regression head), with early stopping on
//! a held-out split. Its quality is reported against the observation
//! noise: a held-out RMSE well below the noise sd means inference through
//! the emulator should match inference through the plugins.

use crate::fused::{mse, AdamW, FitData, MlpTrainer};
use crate::net::{read_geohost_metadata, write_safetensors, Scaling};
use crate::stopping::EarlyStopping;
use crate::{row_moments, standardised_rows as table};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use geohost_da::params::prior::Prior;
use geohost_sandbox::model::{ObsInfo, ObsOperator, Simulator, SimulatorInfo};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// `[step3]` of a static plugin-set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmulatorSpec {
    /// Name of the emulator artifact.
    pub name: String,
    #[serde(default = "hidden")]
    pub hidden: Vec<usize>,
    #[serde(default = "max_epochs")]
    pub max_epochs: usize,
    #[serde(default = "batch")]
    pub batch: usize,
    #[serde(default = "lr")]
    pub lr: f64,
    /// Held-out fraction of the simulations, for early stopping and the
    /// reported error.
    #[serde(default = "crate::stopping::default_validation", skip_serializing_if = "crate::stopping::is_default_validation")]
    pub validation: f64,
    /// Epochs without a better validation error before stopping.
    #[serde(default = "patience")]
    pub patience: usize,
    /// Epochs without a better validation loss before the learning rate
    /// is halved (and again after as many more); 0 keeps it fixed.
    #[serde(default = "halve_after")]
    pub halve_after: usize,
    /// Anneal the learning rate by a half cosine over `max_epochs`
    /// (skipped when false, so request keys of older specs still match).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cosine: bool,
    /// Predict ln of the outputs (all must be positive), for outputs that
    /// vary by factors: radiance spectra, where a multiplicative albedo
    /// becomes an additive term.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_outputs: bool,
    #[serde(default)]
    pub seed: u64,
}

fn hidden() -> Vec<usize> {
    vec![128, 128]
}
fn max_epochs() -> usize {
    300
}
fn batch() -> usize {
    256
}
fn lr() -> f64 {
    1e-3
}
fn patience() -> usize {
    20
}
/// Off by default: on the plume emulator halving after 8 epochs gave a
/// held-out error of 0.42 noise sd against 0.38 with a fixed rate.
fn halve_after() -> usize {
    0
}

impl EmulatorSpec {
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            bail!("[step3]: every hidden width must be positive");
        }
        self.early_stopping().validate("[step3]")
    }

    /// The training settings as the shared type.
    pub fn early_stopping(&self) -> EarlyStopping {
        EarlyStopping {
            max_epochs: self.max_epochs,
            batch: self.batch,
            lr: self.lr,
            validation: self.validation,
            patience: self.patience,
            halve_after: self.halve_after,
            cosine: self.cosine,
            seed: self.seed,
        }
    }
}

/// Everything but the weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct EmulatorDescription {
    /// What it emulates: the simulator's self-description, with
    /// `output_size` the number of observations.
    pub simulator: SimulatorInfo,
    pub hidden: Vec<usize>,
    pub theta_mean: Vec<f64>,
    pub theta_std: Vec<f64>,
    pub out_mean: Vec<f64>,
    pub out_std: Vec<f64>,
    /// The network predicts ln of the outputs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_outputs: bool,
}

/// How training went, in observation units (stored with the weights,
/// less `seconds`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmulatorTraining {
    pub epochs: usize,
    pub best_epoch: usize,
    /// Held-out RMSE over all outputs, and divided by the RMS noise sd.
    pub val_rmse: f64,
    pub val_rmse_over_noise: f64,
    /// Wall time (0 for an emulator loaded from the registry).
    #[serde(default)]
    pub seconds: f64,
    pub train_pairs: usize,
}

/// A trained static emulator; a [`Simulator`] of the observations.
pub struct StaticEmulator {
    pub desc: EmulatorDescription,
    net: MlpTrainer,
    batch: usize,
}

fn sizes(desc: &EmulatorDescription) -> Vec<usize> {
    std::iter::once(desc.simulator.parameters.len()).chain(desc.hidden.iter().copied()).chain([desc.simulator.output_size]).collect()
}

impl StaticEmulator {
    /// Train on `thetas` (`d × n`) and noise-free observations `hx`
    /// (`p × n`); `noise_sd` (one per observation) only scales the
    /// reported error. `simulator` describes what is emulated.
    pub fn train(
        spec: &EmulatorSpec,
        prior: &Prior,
        simulator: &SimulatorInfo,
        thetas: &DMatrix<f64>,
        hx: &DMatrix<f64>,
        noise_sd: &[f64],
    ) -> Result<(StaticEmulator, EmulatorTraining)> {
        spec.validate()?;
        let n = thetas.ncols();
        if hx.ncols() != n || thetas.nrows() != prior.dim() || noise_sd.len() != hx.nrows() {
            bail!(
                "emulator training data: {} parameter vectors of size {}, {} outputs of size {} and {} noise sds",
                n,
                thetas.nrows(),
                hx.ncols(),
                hx.nrows(),
                noise_sd.len()
            );
        }
        let n_val = spec.early_stopping().validation_rows(n);
        if n < 20 || n - n_val < spec.batch.min(n - n_val).max(1) {
            bail!("{n} simulations are too few to train an emulator");
        }
        let n_train = n - n_val;
        if spec.log_outputs && hx.iter().any(|&v| v <= 0.0) {
            bail!("[step3] log_outputs needs positive outputs; `{}` gives zero or negative values", simulator.name);
        }
        let targets = if spec.log_outputs { hx.map(f64::ln) } else { hx.clone() };
        let (theta_mean, theta_std) = row_moments(&thetas.columns(0, n_train).into_owned(), None);
        let (out_mean, out_std) = row_moments(&targets.columns(0, n_train).into_owned(), None);
        let mut info = simulator.clone();
        info.output_size = hx.nrows();
        let desc =
            EmulatorDescription { simulator: info, hidden: spec.hidden.clone(), theta_mean, theta_std, out_mean, out_std, log_outputs: spec.log_outputs };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
        // Glorot-uniform weights, zero biases.
        let params = sizes(&desc)
            .windows(2)
            .flat_map(|w| {
                let bound = (6.0 / (w[0] + w[1]) as f64).sqrt();
                [(0..w[0] * w[1]).map(|_| rng.random_range(-bound..bound) as f32).collect(), vec![0.0; w[1]]]
            })
            .collect();
        let batch = spec.batch.min(n_train);
        let net = MlpTrainer::new(&sizes(&desc), params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, batch, AdamW::new(spec.lr, 0.0));
        let train_cols: Vec<usize> = (0..n_train).collect();
        let val_cols: Vec<usize> = (n_train..n).collect();
        let (mut tx, ty) = (table(thetas, &train_cols, &desc.theta_mean, &desc.theta_std), table(&targets, &train_cols, &desc.out_mean, &desc.out_std));
        let (vx, vy) = (table(thetas, &val_cols, &desc.theta_mean, &desc.theta_std), table(&targets, &val_cols, &desc.out_mean, &desc.out_std));
        let mut emulator = StaticEmulator { desc, net, batch };
        let start = Instant::now();
        let data = FitData { inputs: &mut tx, targets: &ty, val_inputs: &vx, val_targets: &vy, input_width: thetas.nrows(), target_width: hx.nrows() };
        let fitted = emulator
            .net
            .fit(data, spec.early_stopping().schedule(), &mut rng, |_, _| {}, mse, &mut |_, _, _| {})
            .map_err(|e| anyhow::anyhow!("emulator training diverged at epoch {}; lower [step3] lr", e.epoch))?;
        // The held-out error in observation units.
        let p = hx.nrows();
        let predicted = emulator.simulate(&thetas.columns(n_train, n_val).into_owned(), 0)?;
        let sq: f64 = (predicted - hx.columns(n_train, n_val)).iter().map(|e| e * e).sum();
        let val_rmse = (sq / (n_val * p) as f64).sqrt();
        let noise_rms = (noise_sd.iter().map(|s| s * s).sum::<f64>() / p as f64).sqrt();
        let training = EmulatorTraining {
            epochs: fitted.epochs,
            best_epoch: fitted.best_epoch,
            val_rmse,
            val_rmse_over_noise: if noise_rms > 0.0 { val_rmse / noise_rms } else { f64::INFINITY },
            seconds: start.elapsed().as_secs_f64(),
            train_pairs: n_train,
        };
        Ok((emulator, training))
    }

    /// Each layer's weights (`fan_in × fan_out`, row-major) then its bias,
    /// layer by layer.
    pub fn weights(&self) -> Vec<Vec<f32>> {
        self.net.params()
    }

    /// Weights and description as one safetensors file.
    pub fn to_safetensors(&self, training: &serde_json::Value) -> Result<Vec<u8>> {
        let sizes = sizes(&self.desc);
        let vars = self
            .net
            .params()
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let (fan_in, fan_out) = (sizes[i / 2], sizes[i / 2 + 1]);
                let shape = if i % 2 == 0 { (fan_in, fan_out) } else { (1, fan_out) };
                let name = format!("layer{}.{}", i / 2, if i % 2 == 0 { "weight" } else { "bias" });
                Ok((name, Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu)?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let named: Vec<(String, &Var)> = vars.iter().map(|(n, v)| (n.clone(), v)).collect();
        write_safetensors(&named, serde_json::json!({ "static_emulator": self.desc, "training": training }))
    }

    /// Read an emulator back with the training record stored beside it.
    pub fn from_safetensors_with_training(label: &str, bytes: &[u8]) -> Result<(StaticEmulator, EmulatorTraining)> {
        let meta = read_geohost_metadata(label, bytes, "; not a geohost emulator")?;
        let training = serde_json::from_value(meta["training"]["training"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable training record: {e}"))?;
        Ok((Self::from_safetensors(label, bytes)?, training))
    }

    /// Read an emulator back; `label` names the bytes in errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<StaticEmulator> {
        let meta = read_geohost_metadata(label, bytes, "; not a geohost emulator")?;
        let desc: EmulatorDescription =
            serde_json::from_value(meta.get("static_emulator").cloned().ok_or_else(|| anyhow::anyhow!("{label} is not a static emulator's weights"))?)
                .map_err(|e| anyhow::anyhow!("{label}: unreadable description: {e}"))?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let sizes = sizes(&desc);
        let mut params = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            for (name, len) in [(format!("layer{i}.weight"), w[0] * w[1]), (format!("layer{i}.bias"), w[1])] {
                let t = tensors.get(&name).ok_or_else(|| anyhow::anyhow!("{label}: tensor `{name}` is missing"))?;
                let v: Vec<f32> = t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
                if v.len() != len {
                    bail!("{label}: tensor `{name}` has {} values, the description needs {len}", v.len());
                }
                params.push(v);
            }
        }
        let batch = 256;
        let net = MlpTrainer::new(&sizes, params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, batch, AdamW::new(1e-3, 0.0));
        Ok(StaticEmulator { desc, net, batch })
    }
}

impl Simulator for StaticEmulator {
    fn info(&self) -> &SimulatorInfo {
        &self.desc.simulator
    }

    /// The emulated noise-free observations of every column (the seed is
    /// unused: the emulator is deterministic).
    fn simulate(&mut self, thetas: &DMatrix<f64>, _seed: u64) -> Result<DMatrix<f64>> {
        let (d, p) = (self.desc.theta_mean.len(), self.desc.out_mean.len());
        if thetas.nrows() != d {
            bail!("the emulator takes {d} parameters, got {}", thetas.nrows());
        }
        let cols: Vec<usize> = (0..thetas.ncols()).collect();
        let x = table(thetas, &cols, &self.desc.theta_mean, &self.desc.theta_std);
        let mut out = DMatrix::zeros(p, thetas.ncols());
        for (k, chunk) in x.chunks(self.batch * d).enumerate() {
            let rows = chunk.len() / d;
            let y = self.net.outputs(chunk, rows);
            for r in 0..rows {
                for i in 0..p {
                    let v = y[r * p + i] as f64 * self.desc.out_std[i] + self.desc.out_mean[i];
                    out[(i, k * self.batch + r)] = if self.desc.log_outputs { v.exp() } else { v };
                }
            }
        }
        Ok(out)
    }
}

/// The identity observation operator over already-observed outputs (an
/// emulator of H∘G), with the real operator's noise.
pub struct Observed(pub ObsInfo);

impl Observed {
    pub fn like(obs: &ObsInfo) -> Observed {
        Observed(ObsInfo { name: format!("{} (emulated)", obs.name), state_size: obs.obs_size, ..obs.clone() })
    }
}

impl ObsOperator for Observed {
    fn info(&self) -> &ObsInfo {
        &self.0
    }
    fn observe(&mut self, states: &DMatrix<f64>, _t: f64) -> Result<DMatrix<f64>> {
        if states.nrows() != self.0.obs_size {
            bail!("expected {} emulated observations per column, got {}", self.0.obs_size, states.nrows());
        }
        Ok(states.clone())
    }
}
