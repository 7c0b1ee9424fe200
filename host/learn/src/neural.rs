//! `NeuralForward`: a trained emulator behind the same [`ForwardModel`]
//! trait as the wasm adapter, so the DA cycle runs through it unchanged
//! (step 3 → step 4). One `advance` call pushes the whole ensemble through
//! the network as one batch.

use crate::net::Net;
use anyhow::{bail, Result};
use geohost_sandbox::model::{first_non_finite, ForwardModel, ModelInfo};
use nalgebra::DMatrix;

pub struct NeuralForward {
    net: Net,
    info: ModelInfo,
    /// Registry id of the weights, for messages.
    pub id: String,
    /// The training record stored with the weights (model, dataset,
    /// history, validation error).
    pub training: serde_json::Value,
}

impl NeuralForward {
    /// Load an emulator from its safetensors bytes; `id` names it.
    pub fn from_bytes(id: &str, bytes: &[u8]) -> Result<NeuralForward> {
        let (net, training) = Net::from_safetensors(id, bytes)?;
        let mut info: ModelInfo = serde_json::from_value(training["model"].clone())
            .map_err(|e| anyhow::anyhow!("{id}: the weights do not describe the model they emulate (`training.model`): {e}"))?;
        if info.state_size != net.desc.state_size {
            bail!("{id}: the emulated model has state size {}, the network {}", info.state_size, net.desc.state_size);
        }
        info.name = format!("{} emulator", info.name);
        info.default_dt = net.desc.dt * net.desc.lead as f64;
        Ok(NeuralForward { net, info, id: id.to_string(), training })
    }

    pub fn net(&self) -> &Net {
        &self.net
    }
}

impl ForwardModel for NeuralForward {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn advance(&mut self, states: &mut DMatrix<f64>, _t: f64, dt: f64) -> Result<()> {
        let step = self.info.default_dt;
        if (dt - step).abs() > 1e-9 * step {
            bail!("emulator {} ({}) advances by {step} per call, but the experiment steps by dt = {dt}; train it for this dt", self.info.name, self.id);
        }
        let (m, n) = states.shape();
        if m != self.info.state_size {
            bail!("emulator {} expects states of size {}, got {m}", self.info.name, self.info.state_size);
        }
        // Column-major m × N is row-major N × m: one batch, one copy each way.
        let out = self.net.apply(states.as_slice(), n)?;
        states.as_mut_slice().copy_from_slice(&out);
        if let Some((member, index)) = first_non_finite(states) {
            bail!("emulator {} ({}) produced a non-finite value (member {member}, variable {index}); it is unstable here", self.info.name, self.id);
        }
        Ok(())
    }
}
