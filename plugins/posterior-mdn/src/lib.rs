//! A trained mixture density network or normalizing flow as a `posterior`
//! component: the template that `geohost export posterior` fills (flows:
//! `flow.rs`).
//!
//! The component carries its weights in a fixed-size slot of its own
//! data segment: [`MAGIC`], a little-endian `u32` length, then that many
//! bytes of payload and filler up to [`CAPACITY`]. As built, the slot is
//! empty (length 0, filler `0xA5`), and `init` says how to fill it. The
//! exporter finds the magic in the component's bytes and writes the
//! payload in place, so the component stays valid and needs no
//! re-linking.
//!
//! Payload: a `u32` header length, a JSON header ([`Header`]), then the
//! layers' `f32` values, little-endian: each layer's weights
//! (`fan_in × fan_out`, row-major) then its bias (`fan_out`). The network
//! and the sampler are a transcription of the host's `geohost_learn::mdn`:
//! standardised input, ReLU between layers, per component a logit, a mean
//! and an upper-triangular precision factor U (the diagonal through exp),
//! θ = μ + U⁻¹ε in standardised, unbounded coordinates, then back through
//! each marginal's bijection.

mod flow;

use geohost_sdk::{Config, Posterior, PosteriorInfo, SplitMix64};
use serde::Deserialize;

/// Marks the slot; the exporter looks for exactly one occurrence.
pub const MAGIC: [u8; 32] = *b"geohost:posterior-mdn weights v1";
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
    parameters: Vec<String>,
    data_size: usize,
    components: usize,
    /// Layer widths, input first: `[data_size, hidden…, components·(1 + d + d²)]`.
    sizes: Vec<usize>,
    unbounded: bool,
    theta_mean: Vec<f64>,
    theta_std: Vec<f64>,
    x_mean: Vec<f64>,
    x_std: Vec<f64>,
    /// Each parameter's support (`null`: unbounded on that side).
    bounds: Vec<(Option<f64>, Option<f64>)>,
}

struct Mdn {
    h: Header,
    support: Support,
    /// (weights `fan_in × fan_out`, bias `fan_out`) per layer.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, String> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(|| "the weights slot is truncated".to_string())
}

/// The slot's payload: the JSON header's bytes and the `f32` values after it.
fn payload() -> Result<(&'static [u8], Vec<f32>), String> {
    let slot = slot();
    let len = read_u32(slot, MAGIC.len())?;
    if len == 0 {
        return Err(
            "this is the posterior template and carries no weights: make a posterior component with `geohost export posterior PREDICTOR -o FILE.wasm`".into()
        );
    }
    let payload = slot.get(36..36 + len).ok_or("the weights slot's length is larger than the slot")?;
    let header_len = read_u32(payload, 0)?;
    let header = payload.get(4..4 + header_len).ok_or("the weights header runs past the payload")?;
    let values = payload[4 + header_len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((header, values))
}

/// Read `sizes.windows(2)` layers of (weights, bias) from `values`.
pub(crate) fn read_layers(values: &mut impl Iterator<Item = f32>, sizes: &[usize]) -> Result<Vec<(Vec<f32>, Vec<f32>)>, String> {
    let mut layers = Vec::new();
    for w in sizes.windows(2) {
        let weights: Vec<f32> = values.by_ref().take(w[0] * w[1]).collect();
        let bias: Vec<f32> = values.by_ref().take(w[1]).collect();
        if weights.len() != w[0] * w[1] || bias.len() != w[1] {
            return Err("the weights payload is shorter than its header says".into());
        }
        layers.push((weights, bias));
    }
    Ok(layers)
}

/// An MLP with ReLU between layers on one input row.
pub(crate) fn mlp(layers: &[(Vec<f32>, Vec<f32>)], mut x: Vec<f32>) -> Vec<f32> {
    for (i, (w, b)) in layers.iter().enumerate() {
        let fan_out = b.len();
        let mut out = b.clone();
        for (xi, row) in x.iter().zip(w.chunks_exact(fan_out)) {
            for (o, wij) in out.iter_mut().zip(row) {
                *o += xi * wij;
            }
        }
        if i + 1 < layers.len() {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        x = out;
    }
    x
}

impl Mdn {
    fn load(header: &[u8], values: Vec<f32>) -> Result<Mdn, String> {
        let h: Header = serde_json::from_slice(header).map_err(|e| format!("the weights header is not valid: {e}"))?;
        let d = h.parameters.len();
        let fits = h.sizes.len() >= 2
            && h.sizes[0] == h.data_size
            && *h.sizes.last().unwrap() == h.components * (1 + d + d * d)
            && [h.theta_mean.len(), h.theta_std.len(), h.bounds.len()].iter().all(|l| *l == d)
            && h.x_mean.len() == h.data_size
            && h.x_std.len() == h.data_size;
        if !fits || d == 0 || h.components == 0 {
            return Err("the weights header's shapes do not fit together".into());
        }
        let mut values = values.into_iter();
        let layers = read_layers(&mut values, &h.sizes)?;
        if values.next().is_some() {
            return Err("the weights payload is longer than its header says".into());
        }
        Ok(Mdn { support: Support(h.bounds.clone()), h, layers })
    }

    /// The network's raw outputs for one observation.
    fn outputs(&self, y: &[f64]) -> Vec<f32> {
        let x: Vec<f32> = y.iter().zip(&self.h.x_mean).zip(&self.h.x_std).map(|((v, m), s)| ((v - m) / s) as f32).collect();
        mlp(&self.layers, x)
    }
}

/// Each parameter's support (`None`: unbounded on that side) and the
/// host's bijections to and from the real line (`geohost_da` priors).
pub(crate) struct Support(pub Vec<(Option<f64>, Option<f64>)>);

impl Support {
    fn bounds(&self, i: usize) -> (f64, f64) {
        let (low, high) = self.0[i];
        (low.unwrap_or(f64::NEG_INFINITY), high.unwrap_or(f64::INFINITY))
    }

    pub(crate) fn from_unbounded(&self, i: usize, z: f64) -> f64 {
        match self.bounds(i) {
            (low, high) if low.is_finite() && high.is_finite() => (low + (high - low) / (1.0 + (-z).exp())).clamp(low, high),
            (low, _) if low.is_finite() => low + z.exp(),
            (_, high) if high.is_finite() => high - (-z).exp(),
            _ => z,
        }
    }

    pub(crate) fn to_unbounded(&self, i: usize, x: f64) -> f64 {
        const EDGE: f64 = 1e-12;
        match self.bounds(i) {
            (low, high) if low.is_finite() && high.is_finite() => {
                let u = ((x - low) / (high - low)).clamp(EDGE, 1.0 - EDGE);
                (u / (1.0 - u)).ln()
            }
            (low, _) if low.is_finite() => (x - low).max(EDGE).ln(),
            (_, high) if high.is_finite() => -(high - x).max(EDGE).ln(),
            _ => x,
        }
    }

    pub(crate) fn log_jacobian(&self, i: usize, x: f64) -> f64 {
        match self.bounds(i) {
            (low, high) if low.is_finite() && high.is_finite() => ((high - low) / ((x - low) * (high - x))).ln(),
            (low, _) if low.is_finite() => -(x - low).ln(),
            (_, high) if high.is_finite() => -(high - x).ln(),
            _ => 0.0,
        }
    }

    pub(crate) fn inside(&self, theta: &[f64]) -> bool {
        theta.iter().enumerate().all(|(i, x)| {
            let (low, high) = self.bounds(i);
            *x >= low && *x <= high
        })
    }
}

/// One mixture component for one observation.
struct Component {
    log_weight: f64,
    mu: Vec<f64>,
    /// U (row-major, upper triangular) and log det U.
    u: Vec<f64>,
    log_det: f64,
    /// U⁻¹ (row-major, upper triangular).
    u_inv: Vec<f64>,
}

fn mixture(mdn: &Mdn, y: &[f64]) -> Vec<Component> {
    let (d, k) = (mdn.h.parameters.len(), mdn.h.components);
    let per = 1 + d + d * d;
    let out = mdn.outputs(y);
    let logits: Vec<f64> = (0..k).map(|c| out[c * per] as f64).collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    (0..k)
        .map(|c| {
            let o = &out[c * per..(c + 1) * per];
            let raw = &o[1 + d..];
            let mut u = vec![0.0; d * d];
            let mut log_det = 0.0;
            for i in 0..d {
                u[i * d + i] = (raw[i * d + i] as f64).exp();
                log_det += raw[i * d + i] as f64;
                for j in i + 1..d {
                    u[i * d + j] = raw[i * d + j] as f64;
                }
            }
            // U⁻¹ by back substitution, column by column.
            let mut u_inv = vec![0.0; d * d];
            for col in 0..d {
                for i in (0..=col).rev() {
                    let rhs = if i == col { 1.0 } else { 0.0 };
                    let s: f64 = (i + 1..=col).map(|j| u[i * d + j] * u_inv[j * d + col]).sum();
                    u_inv[i * d + col] = (rhs - s) / u[i * d + i];
                }
            }
            Component { log_weight: logits[c] - lse, mu: o[1..1 + d].iter().map(|v| *v as f64).collect(), u, log_det, u_inv }
        })
        .collect()
}

/// The network the slot carries: a mixture density network, or a flow
/// (a header with `"kind": "flow"`).
enum Net {
    Mdn(Mdn),
    Flow(flow::Flow),
}

struct TemplatePosterior {
    net: Net,
}

impl Posterior for TemplatePosterior {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&[])?;
        let (header, values) = payload()?;
        let kind = serde_json::from_slice::<serde_json::Value>(header).map_err(|e| format!("the weights header is not JSON: {e}"))?["kind"].clone();
        let net = if kind == "flow" { Net::Flow(flow::Flow::load(header, values)?) } else { Net::Mdn(Mdn::load(header, values)?) };
        Ok(TemplatePosterior { net })
    }

    fn info(&self) -> PosteriorInfo {
        let (name, version, parameters, data_size) = match &self.net {
            Net::Mdn(m) => (&m.h.name, &m.h.version, &m.h.parameters, m.h.data_size),
            Net::Flow(f) => (&f.h.name, &f.h.version, &f.h.parameters, f.h.data_size),
        };
        PosteriorInfo { name: name.clone(), version: version.clone(), parameters: parameters.clone(), data_size }
    }

    fn sample(&mut self, y: &[f64], n: usize, out: &mut [f64], rng: &mut SplitMix64) -> Result<(), String> {
        let mdn = match &self.net {
            Net::Mdn(m) => m,
            Net::Flow(f) => return f.sample(y, n, out, rng),
        };
        let d = mdn.h.parameters.len();
        let components = mixture(mdn, y);
        let weights: Vec<f64> = components.iter().map(|c| c.log_weight.exp()).collect();
        let total: f64 = weights.iter().sum();
        let (mut eps, mut theta) = (vec![0.0; d], vec![0.0; d]);
        let (mut filled, mut tries) = (0, 0usize);
        while filled < n {
            tries += 1;
            if tries > 1000 * n + 10_000 {
                return Err(format!(
                    "fewer than 1 in 1000 draws fall inside the prior's support ({filled} of {n}); the observation may be far from anything simulated"
                ));
            }
            let mut pick = rng.uniform() * total;
            let c = weights.iter().position(|w| {
                pick -= w;
                pick < 0.0
            });
            let comp = &components[c.unwrap_or(components.len() - 1)];
            eps.iter_mut().for_each(|e| *e = rng.normal());
            for i in 0..d {
                let z: f64 = (i..d).map(|j| comp.u_inv[i * d + j] * eps[j]).sum();
                let t = (comp.mu[i] + z) * mdn.h.theta_std[i] + mdn.h.theta_mean[i];
                theta[i] = if mdn.h.unbounded { mdn.support.from_unbounded(i, t) } else { t };
            }
            if mdn.support.inside(&theta) && theta.iter().all(|v| v.is_finite()) {
                out[filled * d..(filled + 1) * d].copy_from_slice(&theta);
                filled += 1;
            }
        }
        Ok(())
    }

    fn has_log_prob(&self) -> bool {
        true
    }

    fn log_prob(&mut self, y: &[f64], thetas: &[f64], out: &mut [f64]) -> Result<(), String> {
        let mdn = match &self.net {
            Net::Mdn(m) => m,
            Net::Flow(f) => return f.log_prob(y, thetas, out),
        };
        let d = mdn.h.parameters.len();
        let components = mixture(mdn, y);
        let half_log_2pi = 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
        let mut t = vec![0.0; d];
        for (theta, lp) in thetas.chunks_exact(d).zip(out.iter_mut()) {
            if !mdn.support.inside(theta) {
                *lp = f64::NEG_INFINITY;
                continue;
            }
            let mut jacobian = 0.0;
            for i in 0..d {
                let z = if mdn.h.unbounded { mdn.support.to_unbounded(i, theta[i]) } else { theta[i] };
                // As the host's density: θ standardised in f32.
                t[i] = ((z - mdn.h.theta_mean[i]) / mdn.h.theta_std[i]) as f32 as f64;
                if mdn.h.unbounded {
                    jacobian += mdn.support.log_jacobian(i, theta[i]);
                }
            }
            let terms: Vec<f64> = components
                .iter()
                .map(|c| {
                    let quad: f64 = (0..d).map(|i| (i..d).map(|j| c.u[i * d + j] * (t[j] - c.mu[j])).sum::<f64>().powi(2)).sum();
                    c.log_weight + c.log_det - 0.5 * quad - half_log_2pi
                })
                .collect();
            let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            *lp = max + terms.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + jacobian;
        }
        Ok(())
    }
}

geohost_sdk::export_posterior!(TemplatePosterior);
