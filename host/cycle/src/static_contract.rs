//! The cycle contract of a static problem: the limits its cycle report
//! ([`crate::static_report`]) is checked against.
//!
//! The contract is a small TOML file (`contracts/plume-cycle.toml`) named
//! by the plugin-set's `[cycle] contract`; its limits are stated before
//! the run, and the report records the contract's id. Every section is
//! optional; a missing limit is not checked:
//!
//! ```toml
//! name = "plume-cycle"
//! version = "1.0.0"
//! domain = "…"
//! [step3]
//! max_rmse_over_noise = 0.2   # held-out emulator RMSE / observation noise
//! [step4]
//! max_c2st = 0.75             # MCMC through the emulator vs the MCMC oracle
//! [step5]
//! max_c2st = 0.65             # mean over the held-out observations
//! max_coverage_error = 0.05   # expected HPD coverage vs the diagonal
//! min_speedup = 1000          # MCMC seconds / amortized sampling seconds
//! ```

use anyhow::{bail, Context, Result};
use geohost_registry::artifact_id;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CycleContractFile {
    pub name: String,
    pub version: String,
    pub domain: String,
    #[serde(default)]
    pub step3: Step3Limits,
    #[serde(default)]
    pub step4: Step4Limits,
    #[serde(default)]
    pub step5: Step5Limits,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step3Limits {
    pub max_rmse_over_noise: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step4Limits {
    pub max_c2st: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step5Limits {
    pub max_c2st: Option<f64>,
    pub max_coverage_error: Option<f64>,
    pub min_speedup: Option<f64>,
}

/// Every limit a cycle contract sets must be a positive finite number;
/// the error names the contract file and the `field`.
pub(crate) fn check_positive_limits(path: &Path, limits: &[(&str, Option<f64>)]) -> Result<()> {
    for &(field, v) in limits {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                bail!("invalid cycle contract {}: `{field}` must be a positive number, got {v}", path.display());
            }
        }
    }
    Ok(())
}

/// A parsed contract with its bytes (registered as kind `contract`).
#[derive(Clone, Debug)]
pub struct CycleContract {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub file: CycleContractFile,
}

impl CycleContract {
    pub fn load(path: &Path) -> Result<CycleContract> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read cycle contract {}", path.display()))?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        let file: CycleContractFile = toml::from_str(text).with_context(|| format!("invalid cycle contract {}", path.display()))?;
        let limits = [
            ("step3.max_rmse_over_noise", file.step3.max_rmse_over_noise),
            ("step4.max_c2st", file.step4.max_c2st),
            ("step5.max_c2st", file.step5.max_c2st),
            ("step5.max_coverage_error", file.step5.max_coverage_error),
            ("step5.min_speedup", file.step5.min_speedup),
        ];
        check_positive_limits(path, &limits)?;
        Ok(CycleContract { path: path.to_path_buf(), bytes, file })
    }

    pub fn id(&self) -> String {
        artifact_id(&self.bytes)
    }
}
