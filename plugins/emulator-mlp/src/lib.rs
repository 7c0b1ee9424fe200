//! A trained static emulator (an MLP of a simulator's outputs) as a
//! `static-model` component: the template that `geohost export emulator`
//! fills.
//!
//! As `posterior-mdn`, the component carries its weights in a fixed-size
//! slot of its own data segment: [`MAGIC`], a little-endian `u32` length,
//! then that many bytes of payload and filler up to [`CAPACITY`]. As
//! built, the slot is empty (length 0, filler `0xA5`) and `init` says how
//! to fill it; the exporter writes the payload in place.
//!
//! Payload: a `u32` header length, a JSON header ([`Header`]), then the
//! layers' `f32` values, little-endian: each layer's weights (`fan_in ×
//! fan_out`, row-major) then its bias (`fan_out`). The network is a
//! transcription of the host's `geohost_learn::static_emulator`: θ
//! standardised in f32, ReLU between layers, the last layer linear, each
//! output de-standardised in f64 and, with `log_outputs`, exponentiated.

use geohost_sdk::{Config, Parameter, SimulatorInfo, SplitMix64, StaticModel};
use serde::Deserialize;

/// Marks the slot; the exporter looks for exactly one occurrence.
pub const MAGIC: [u8; 32] = *b"geohost:emulator-mlp weights v01";
/// Bytes of payload the slot holds.
pub const CAPACITY: usize = 2 << 20;
const FILLER: u8 = 0xA5;

#[repr(C)]
struct Slot {
    magic: [u8; 32],
    len: [u8; 4],
    data: [u8; CAPACITY],
}

#[used]
static SLOT: Slot = Slot { magic: MAGIC, len: [0; 4], data: [FILLER; CAPACITY] };

/// The slot's bytes, read through a pointer the optimiser cannot see
/// through (the exporter changes them after compilation).
fn slot() -> &'static [u8] {
    let p: *const Slot = std::hint::black_box(&SLOT as *const Slot);
    // SAFETY: `p` points at SLOT, a static of exactly this size.
    unsafe { std::slice::from_raw_parts(p as *const u8, std::mem::size_of::<Slot>()) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    version: String,
    /// (name, units) of each parameter.
    parameters: Vec<(String, String)>,
    output_units: String,
    /// What was emulated (`name@version`), for the record.
    emulates: String,
    /// Layer widths, input first: `[parameters, hidden…, outputs]`.
    sizes: Vec<usize>,
    theta_mean: Vec<f64>,
    theta_std: Vec<f64>,
    out_mean: Vec<f64>,
    out_std: Vec<f64>,
    log_outputs: bool,
}

struct Emulator {
    h: Header,
    /// (weights `fan_in × fan_out`, bias `fan_out`) per layer.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Activations of the layer in progress (reused).
    x: Vec<f32>,
    out: Vec<f32>,
}

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, String> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(|| "the weights slot is truncated".to_string())
}

impl Emulator {
    fn load() -> Result<Emulator, String> {
        let slot = slot();
        let len = read_u32(slot, MAGIC.len())?;
        if len == 0 {
            return Err(
                "this is the emulator-mlp template and carries no weights: make an emulator component with `geohost export emulator EMULATOR -o FILE.wasm`"
                    .into(),
            );
        }
        let payload = slot.get(36..36 + len).ok_or("the weights slot's length is larger than the slot")?;
        let header_len = read_u32(payload, 0)?;
        let header = payload.get(4..4 + header_len).ok_or("the weights header runs past the payload")?;
        let h: Header = serde_json::from_slice(header).map_err(|e| format!("the weights header is not valid: {e}"))?;
        let (d, p) = (h.parameters.len(), h.out_mean.len());
        let fits =
            h.sizes.len() >= 2 && h.sizes[0] == d && *h.sizes.last().unwrap() == p && h.theta_mean.len() == d && h.theta_std.len() == d && h.out_std.len() == p;
        if !fits || d == 0 || p == 0 {
            return Err("the weights header's shapes do not fit together".into());
        }
        let mut values = payload[4 + header_len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let mut layers = Vec::new();
        for w in h.sizes.windows(2) {
            let weights: Vec<f32> = values.by_ref().take(w[0] * w[1]).collect();
            let bias: Vec<f32> = values.by_ref().take(w[1]).collect();
            if weights.len() != w[0] * w[1] || bias.len() != w[1] {
                return Err("the weights payload is shorter than its header says".into());
            }
            layers.push((weights, bias));
        }
        if values.next().is_some() {
            return Err("the weights payload is longer than its header says".into());
        }
        Ok(Emulator { h, layers, x: Vec::new(), out: Vec::new() })
    }
}

impl StaticModel for Emulator {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&[])?;
        Emulator::load()
    }

    fn info(&self) -> SimulatorInfo {
        SimulatorInfo {
            name: self.h.name.clone(),
            version: self.h.version.clone(),
            parameters: self.h.parameters.clone(),
            output_size: self.h.out_mean.len(),
            output_units: self.h.output_units.clone(),
            settings: vec![
                Parameter::new("layers", self.layers.len() as f64, "1"),
                Parameter::new("weights", self.layers.iter().map(|(w, b)| w.len() + b.len()).sum::<usize>() as f64, "1"),
                Parameter::new("log_outputs", self.h.log_outputs as u8 as f64, "0 = outputs, 1 = ln of the outputs"),
            ],
            stochastic: false,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], _rng: &mut SplitMix64) -> Result<(), String> {
        if let Some((i, v)) = theta.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(format!("parameter `{}` is {v} (emulating {})", self.h.parameters[i].0, self.h.emulates));
        }
        self.x.clear();
        self.x.extend(theta.iter().zip(&self.h.theta_mean).zip(&self.h.theta_std).map(|((v, m), s)| ((v - m) / s) as f32));
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let fan_out = b.len();
            self.out.clear();
            self.out.extend_from_slice(b);
            for (xi, row) in self.x.iter().zip(w.chunks_exact(fan_out)) {
                for (o, wij) in self.out.iter_mut().zip(row) {
                    *o += xi * wij;
                }
            }
            if i < last {
                self.out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            std::mem::swap(&mut self.x, &mut self.out);
        }
        for (((out, v), m), s) in y.iter_mut().zip(&self.x).zip(&self.h.out_mean).zip(&self.h.out_std) {
            let z = *v as f64 * s + m;
            *out = if self.h.log_outputs { z.exp() } else { z };
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Emulator);
