//! A single-stage posterior ([`Mdn`]) as a `posterior` component
//! (`geohost export posterior`), and a static emulator as a `static-model`
//! component (`geohost export emulator`).
//!
//! The component is a template (`plugins/posterior-mdn`,
//! `plugins/emulator-mlp`) whose data segment holds an empty weights slot:
//! a 32-byte marker ([`MAGIC`], [`EMULATOR_MAGIC`]), a little-endian `u32`
//! length, then [`CAPACITY`] bytes of filler. [`fill`] and
//! [`fill_emulator`] write a payload ([`payload`], [`emulator_payload`])
//! into that slot in place; nothing else in the component's
//! bytes changes, so it stays a valid component of the same world. The
//! layout is the template's (its module docs); both sides must agree.
//!
//! A refined (two-stage) predictor cannot be exported: its second stage
//! conditions on a Laplace approximation that needs the simulator, which
//! the component does not carry.

use crate::flow::Nsf;
use crate::mdn::Mdn;
use crate::static_emulator::StaticEmulator;
use anyhow::{bail, Result};

/// The slot's marker in the template (`plugins/posterior-mdn`).
pub const MAGIC: &[u8; 32] = b"geohost:posterior-mdn weights v1";
/// Payload bytes the slot holds.
pub const CAPACITY: usize = 2 << 20;
const FILLER: u8 = 0xA5;

/// The weights and everything the component needs to sample, in the
/// template's format: a `u32` header length, the JSON header, then each
/// layer's weights and bias as little-endian `f32`.
pub fn payload(mdn: &Mdn, name: &str, version: &str) -> Result<Vec<u8>> {
    let d = &mdn.desc;
    let mut sizes = vec![d.data_size];
    let mut values = Vec::new();
    for (w, b) in mdn.layers() {
        sizes.push(w.dims()[1]);
        values.extend(w.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        values.extend(b.as_tensor().flatten_all()?.to_vec1::<f32>()?);
    }
    let bounds = support(&mdn.prior);
    let header = serde_json::to_vec(&serde_json::json!({
        "name": name,
        "version": version,
        "parameters": d.parameters,
        "data_size": d.data_size,
        "components": d.components,
        "sizes": sizes,
        "unbounded": d.unbounded,
        "theta_mean": d.theta_mean,
        "theta_std": d.theta_std,
        "x_mean": d.x_mean,
        "x_std": d.x_std,
        "bounds": bounds,
    }))?;
    Ok(framed(&header, values))
}

/// A flow's weights and description in the posterior template's flow
/// format (`plugins/posterior-mdn/src/flow.rs`): the JSON header with
/// `"kind": "flow"`, then every conditioner's layers as little-endian `f32`
/// ([`Nsf::conditioner_layers`]' order).
pub fn flow_payload(flow: &Nsf, name: &str, version: &str) -> Result<Vec<u8>> {
    let d = &flow.desc;
    let bounds = support(&flow.prior);
    let header = serde_json::to_vec(&serde_json::json!({
        "kind": "flow",
        "name": name,
        "version": version,
        "parameters": d.parameters,
        "data_size": d.data_size,
        "transform": d.transform,
        "layers": d.layers,
        "bins": d.bins,
        "bound": d.bound,
        "hidden": d.hidden,
        "theta_mean": d.theta_mean,
        "theta_std": d.theta_std,
        "x_mean": d.x_mean,
        "x_std": d.x_std,
        "bounds": bounds,
    }))?;
    Ok(framed(&header, flow.conditioner_layers().flat_map(|(w, b)| w.iter().chain(b).copied())))
}

/// Each parameter's support as the templates read it (`None`: unbounded
/// on that side).
fn support(prior: &geohost_da::params::prior::Prior) -> Vec<(Option<f64>, Option<f64>)> {
    let finite = |v: f64| v.is_finite().then_some(v);
    prior.marginals.iter().map(|m| m.bounds()).map(|(l, h)| (finite(l), finite(h))).collect()
}

/// A payload as the templates read it: a little-endian `u32` header
/// length, the header's bytes, then `values` as little-endian `f32`.
fn framed(header: &[u8], values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + header.len());
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(header);
    for v in values {
        out.extend(v.to_le_bytes());
    }
    out
}

/// `template` (plugins/posterior-mdn) with `payload` written into its
/// empty weights slot. Errors when the template has no slot, more than
/// one, a slot already filled, or when the payload does not fit.
pub fn fill(template: &[u8], payload: &[u8]) -> Result<Vec<u8>> {
    fill_slot(template, MAGIC, payload, "posterior-mdn", "train a smaller network ([step5] network.hidden)")
}

/// The static emulator template's (plugins/emulator-mlp) slot marker; its
/// slot holds [`CAPACITY`] bytes as the posterior template's does.
pub const EMULATOR_MAGIC: &[u8; 32] = b"geohost:emulator-mlp weights v01";

/// A static emulator's weights and description in the emulator template's
/// format: a `u32` header length, the JSON header, then each layer's
/// weights (`fan_in × fan_out`, row-major) and bias as little-endian `f32`.
pub fn emulator_payload(emulator: &StaticEmulator, name: &str, version: &str) -> Result<Vec<u8>> {
    let d = &emulator.desc;
    let sim = &d.simulator;
    let sizes: Vec<usize> = std::iter::once(sim.parameters.len()).chain(d.hidden.iter().copied()).chain([d.out_mean.len()]).collect();
    let header = serde_json::to_vec(&serde_json::json!({
        "name": name,
        "version": version,
        "parameters": sim.parameters.iter().map(|p| (p.name.clone(), p.units.clone())).collect::<Vec<_>>(),
        "output_units": sim.output_units,
        "emulates": format!("{}@{}", sim.name, sim.version),
        "sizes": sizes,
        "theta_mean": d.theta_mean,
        "theta_std": d.theta_std,
        "out_mean": d.out_mean,
        "out_std": d.out_std,
        "log_outputs": d.log_outputs,
    }))?;
    let values: Vec<f32> = emulator.weights().into_iter().flatten().collect();
    Ok(framed(&header, values))
}

/// `template` (plugins/emulator-mlp) with `payload` written into its slot.
pub fn fill_emulator(template: &[u8], payload: &[u8]) -> Result<Vec<u8>> {
    fill_slot(template, EMULATOR_MAGIC, payload, "emulator-mlp", "train a smaller emulator ([step3] hidden)")
}

/// `template` with `payload` written into its one empty slot marked by
/// `magic`; `plugin` names the template and `smaller` says how to make a
/// payload fit, in errors.
fn fill_slot(template: &[u8], magic: &[u8; 32], payload: &[u8], plugin: &str, smaller: &str) -> Result<Vec<u8>> {
    let found: Vec<usize> = template.windows(magic.len()).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| i).collect();
    let [at] = found[..] else {
        bail!("the {plugin} template has {} weights slots, expected one: rebuild plugins/{plugin} (plugins/build.sh), then geohost", found.len());
    };
    let len_at = at + magic.len();
    let slot = template.get(len_at..len_at + 4 + CAPACITY).unwrap_or_default();
    if slot.len() != 4 + CAPACITY || slot[..4] != [0; 4] || slot[4..].iter().any(|b| *b != FILLER) {
        bail!("the {plugin} template's weights slot is not empty or not whole (an exported component, not the template?)");
    }
    if payload.len() > CAPACITY {
        bail!("the network needs {} bytes of weights, but the {plugin} component holds at most {CAPACITY}: {smaller}", payload.len());
    }
    let mut out = template.to_vec();
    out[len_at..len_at + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[len_at + 4..len_at + 4 + payload.len()].copy_from_slice(payload);
    Ok(out)
}
