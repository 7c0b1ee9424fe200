//! The early-stopped training settings every network of geohost shares:
//! the step-3 emulators (Lorenz and static) and the step-5 posterior with
//! its refinement. Each spec keeps its own defaults and its file fields
//! flat (`max_epochs`, `batch`, `lr`, `validation`, `patience`,
//! `halve_after`, `cosine`, `seed`, with the same meaning everywhere) and
//! hands them to the training loops as one [`EarlyStopping`], which checks
//! them in one place.

use crate::fused::Schedule;
use anyhow::{bail, Result};

/// How a network is trained and when training stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStopping {
    /// Upper bound on epochs (early stopping usually ends sooner).
    pub max_epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Fraction of the samples held out for validation (the last ones).
    pub validation: f64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Halve the learning rate after this many epochs without a better
    /// validation loss (and again after as many more); 0 keeps it fixed.
    pub halve_after: usize,
    /// Anneal the learning rate by a half cosine over `max_epochs`.
    pub cosine: bool,
    /// Seeds initialisation, shuffling and noise: training is deterministic.
    pub seed: u64,
}

impl EarlyStopping {
    /// Check the settings; `field` names them in errors (e.g. `[step5].network`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.max_epochs == 0 || self.batch == 0 {
            bail!("{field}: max_epochs and batch must be at least 1");
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            bail!("{field}: lr must be a positive number, got {}", self.lr);
        }
        if self.validation.is_nan() || self.validation <= 0.0 || self.validation >= 1.0 {
            bail!("{field}: validation must be a fraction in (0, 1), got {}", self.validation);
        }
        Ok(())
    }

    /// Validation rows out of `n`: the last ⌈n · validation⌉.
    pub fn validation_rows(&self, n: usize) -> usize {
        ((n as f64) * self.validation).ceil() as usize
    }

    /// The learning-rate schedule and stopping rule of the fused trainer.
    pub fn schedule(&self) -> Schedule {
        Schedule { max_epochs: self.max_epochs, patience: self.patience, halve_after: self.halve_after, cosine: self.cosine }
    }
}

/// The default held-out fraction of every network.
pub fn default_validation() -> f64 {
    0.1
}

/// For `skip_serializing_if`: a spec written before `validation` existed
/// serialises (and so keys its cache) as it did.
pub fn is_default_validation(v: &f64) -> bool {
    *v == default_validation()
}
