//! The emulator networks (candle, f32, CPU).
//!
//! Two architectures, both maps x(t) → x(t + lead·dt) on standardised
//! variables:
//! - `mlp`: x + σ_Δ · MLP((x − μ)/σ), ReLU hidden layers (any state);
//! - `cnn`: a periodic 1-D convolutional network of the right-hand side,
//!   integrated with RK4 over the lead (Brajard et al. 2020, for gridded
//!   periodic states such as Lorenz-96). Its layer is *bilinear*: one
//!   periodic convolution (`kernel` wide) gives 3·C channels a, b, c;
//!   [a ⊙ b, c] then goes through a linear map plus a one-hidden-layer ReLU
//!   branch, per grid point. Quadratic advection terms like Lorenz-96's
//!   x_{i−1}(x_{i+1} − x_{i−2}) are exactly representable.
//!
//! Weights are created here from a seeded ChaCha8 stream (PyTorch's default
//! uniform ±1/√fan_in), never from candle's thread-local RNG, so a seed
//! gives the same weights bit for bit.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The architecture description stored with the weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "architecture", rename_all = "lowercase", deny_unknown_fields)]
pub enum Arch {
    Mlp {
        hidden: Vec<usize>,
    },
    Cnn {
        /// Bilinear channels C.
        channels: usize,
        /// Width of the periodic convolution (odd).
        kernel: usize,
        /// Width of the per-point ReLU branch.
        hidden: usize,
    },
}

/// Standardisation constants (scalars: the state is treated as
/// homogeneous; a per-variable version would break the CNN's translation
/// invariance).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
pub struct Scaling {
    pub mean: f64,
    pub std: f64,
    /// Scale of the network output: the std of the increment (mlp) or of
    /// the finite-difference tendency (cnn).
    pub out_std: f64,
}

/// Everything but the weights: what the network is and how it was fed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Description {
    #[serde(flatten)]
    pub arch: Arch,
    pub state_size: usize,
    /// Model time step the emulator was trained for, and the number of
    /// steps one application covers.
    pub dt: f64,
    pub lead: usize,
    pub scaling: Scaling,
}

impl Arch {
    pub fn validate(&self, field: &str) -> Result<()> {
        match self {
            Arch::Mlp { hidden } if hidden.is_empty() || hidden.contains(&0) => {
                bail!("{field}.hidden: expected a list of positive layer widths, e.g. [256, 256]")
            }
            Arch::Cnn { kernel, .. } if kernel % 2 == 0 => bail!("{field}.kernel must be odd (a centred stencil), got {kernel}"),
            Arch::Cnn { channels, hidden, .. } if *channels == 0 || *hidden == 0 => bail!("{field}.channels and hidden must be positive"),
            _ => Ok(()),
        }
    }
}

/// A network ready to run or train.
pub struct Net {
    pub desc: Description,
    /// Named parameters, in a fixed order.
    pub params: Vec<(String, Var)>,
    /// For the cnn: gather indices of the periodic stencil.
    stencil: Option<Tensor>,
    dev: Device,
}

fn uniform(rng: &mut impl Rng, fan_in: usize, len: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    (0..len).map(|_| rng.random_range(-bound..bound) as f32).collect()
}

impl Net {
    /// A freshly initialised network.
    pub fn new(desc: Description, rng: &mut impl Rng) -> Result<Net> {
        let dev = Device::Cpu;
        let mut params = Vec::new();
        let mut add = |name: &str, fan_in: usize, shape: (usize, usize), rng: &mut dyn rand::RngCore| -> Result<()> {
            let data = uniform(&mut RngWrap(rng), fan_in, shape.0 * shape.1);
            params.push((name.to_string(), Var::from_tensor(&Tensor::from_vec(data, shape, &dev)?)?));
            Ok(())
        };
        let m = desc.state_size;
        match &desc.arch {
            Arch::Mlp { hidden } => {
                let mut fan_in = m;
                for (i, h) in hidden.iter().enumerate() {
                    add(&format!("layer{i}.weight"), fan_in, (fan_in, *h), rng)?;
                    add(&format!("layer{i}.bias"), fan_in, (1, *h), rng)?;
                    fan_in = *h;
                }
                add("out.weight", fan_in, (fan_in, m), rng)?;
                add("out.bias", fan_in, (1, m), rng)?;
            }
            Arch::Cnn { channels: c, kernel: k, hidden: h } => {
                add("conv.weight", *k, (*k, 3 * c), rng)?;
                add("conv.bias", *k, (1, 3 * c), rng)?;
                add("linear.weight", 2 * c, (2 * c, 1), rng)?;
                add("hidden.weight", 2 * c, (2 * c, *h), rng)?;
                add("hidden.bias", 2 * c, (1, *h), rng)?;
                add("out.weight", *h, (*h, 1), rng)?;
                add("out.bias", *h, (1, 1), rng)?;
            }
        }
        Net::assemble(desc, params)
    }

    /// A network from stored tensors (checked against the description).
    pub fn from_tensors(desc: Description, tensors: BTreeMap<String, Tensor>) -> Result<Net> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let template = Net::new(desc.clone(), &mut rng)?;
        let mut params = Vec::new();
        for (name, var) in &template.params {
            let Some(t) = tensors.get(name) else { bail!("the weights lack tensor `{name}` that a {:?} network needs", desc.arch) };
            if t.dims() != var.dims() {
                bail!("tensor `{name}` has shape {:?}, but the architecture needs {:?}", t.dims(), var.dims());
            }
            params.push((name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?)?));
        }
        if let Some(extra) = tensors.keys().find(|k| !template.params.iter().any(|(n, _)| n == *k)) {
            bail!("the weights have a tensor `{extra}` that the architecture does not use");
        }
        Net::assemble(desc, params)
    }

    fn assemble(desc: Description, params: Vec<(String, Var)>) -> Result<Net> {
        let dev = Device::Cpu;
        let stencil = match desc.arch {
            Arch::Cnn { kernel, .. } => {
                let (m, r) = (desc.state_size as i64, (kernel / 2) as i64);
                let idx: Vec<u32> = (0..m).flat_map(|i| (-r..=r).map(move |s| (i + s).rem_euclid(m) as u32)).collect();
                Some(Tensor::from_vec(idx, desc.state_size * kernel, &dev)?)
            }
            Arch::Mlp { .. } => None,
        };
        Ok(Net { desc, params, stencil, dev })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_tensor()).expect("parameter names are fixed by the architecture")
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The cnn's right-hand side f(x) for a batch `[B, m]`.
    fn tendency(&self, x: &Tensor, kernel: usize, channels: usize) -> Result<Tensor> {
        let s = self.desc.scaling;
        let (b, m) = x.dims2()?;
        let z = ((x - s.mean)? / s.std)?;
        let stencil = self.stencil.as_ref().expect("cnn has a stencil");
        let zk = z.index_select(stencil, 1)?.reshape((b * m, kernel))?;
        let h = zk.matmul(self.p("conv.weight"))?.broadcast_add(self.p("conv.bias"))?;
        let (a, bb, c) = (h.narrow(1, 0, channels)?, h.narrow(1, channels, channels)?, h.narrow(1, 2 * channels, channels)?);
        let g = Tensor::cat(&[(a * bb)?, c], 1)?;
        let linear = g.matmul(self.p("linear.weight"))?;
        let hidden = g.matmul(self.p("hidden.weight"))?.broadcast_add(self.p("hidden.bias"))?.relu()?;
        let out = (linear + hidden.matmul(self.p("out.weight"))?.broadcast_add(self.p("out.bias"))?)?;
        Ok((out.reshape((b, m))? * s.out_std)?)
    }

    /// x(t + lead·dt) for a batch `[B, m]` of states (f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.desc.scaling;
        match &self.desc.arch {
            Arch::Mlp { hidden } => {
                let mut h = ((x - s.mean)? / s.std)?;
                for i in 0..hidden.len() {
                    h = h.matmul(self.p(&format!("layer{i}.weight")))?.broadcast_add(self.p(&format!("layer{i}.bias")))?.relu()?;
                }
                let out = h.matmul(self.p("out.weight"))?.broadcast_add(self.p("out.bias"))?;
                Ok((x + (out * s.out_std)?)?)
            }
            Arch::Cnn { kernel, channels, .. } => {
                // Classic RK4 over `lead` steps of dt.
                let dt = self.desc.dt;
                let mut x = x.clone();
                for _ in 0..self.desc.lead {
                    let k1 = self.tendency(&x, *kernel, *channels)?;
                    let k2 = self.tendency(&(&x + (&k1 * (dt / 2.0))?)?, *kernel, *channels)?;
                    let k3 = self.tendency(&(&x + (&k2 * (dt / 2.0))?)?, *kernel, *channels)?;
                    let k4 = self.tendency(&(&x + (&k3 * dt)?)?, *kernel, *channels)?;
                    let sum = (((k1 + (k2 * 2.0)?)? + (k3 * 2.0)?)? + k4)?;
                    x = (x + (sum * (dt / 6.0))?)?;
                }
                Ok(x)
            }
        }
    }

    /// Apply to f64 states (`B × m`, row-major), returning f64.
    pub fn apply(&self, states: &[f64], batch: usize) -> Result<Vec<f64>> {
        let m = self.desc.state_size;
        let x = Tensor::from_vec(states.iter().map(|v| *v as f32).collect::<Vec<f32>>(), (batch, m), &self.dev)?;
        let y = self.forward(&x)?;
        Ok(y.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
    }

    /// The weights and the description as one safetensors file (the
    /// description in its `__metadata__` under `geohost`).
    pub fn to_safetensors(&self, extra: &serde_json::Value) -> Result<Vec<u8>> {
        let named: Vec<(String, &Var)> = self.params.iter().map(|(n, v)| (n.clone(), v)).collect();
        write_safetensors(&named, serde_json::json!({ "description": self.desc, "training": extra }))
    }

    /// Read a network back from safetensors bytes; `label` names them in
    /// errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Net, serde_json::Value)> {
        let meta = read_geohost_metadata(label, bytes, " (architecture description); not a geohost emulator")?;
        let desc: Description =
            serde_json::from_value(meta["description"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable architecture description: {e}"))?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let net = Net::from_tensors(desc, tensors.into_iter().collect()).map_err(|e| anyhow::anyhow!("{label}: {e:#}"))?;
        Ok((net, meta["training"].clone()))
    }
}

/// Named f32 variables as one safetensors file, with `meta` in its
/// `__metadata__` under `geohost` (how every geohost network is stored).
pub fn write_safetensors(named: &[(String, &Var)], meta: serde_json::Value) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = named
        .iter()
        .map(|(name, var)| {
            let data: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            Ok((name.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect(), var.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, bytes, shape)| Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<_>>()?;
    let mut map = std::collections::HashMap::new();
    map.insert("geohost".to_string(), meta.to_string());
    Ok(safetensors::serialize(views, Some(map))?)
}

/// The `geohost` metadata of safetensors bytes; `label` names them in
/// errors and `missing` ends the message when the entry is absent.
pub fn read_geohost_metadata(label: &str, bytes: &[u8], missing: &str) -> Result<serde_json::Value> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| anyhow::anyhow!("{label} is not a safetensors file: {e}"))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("geohost"))
        .ok_or_else(|| anyhow::anyhow!("{label}: the safetensors metadata has no `geohost` entry{missing}"))?;
    serde_json::from_str(meta).map_err(|e| anyhow::anyhow!("{label}: unreadable `geohost` metadata: {e}"))
}

/// `&mut dyn RngCore` as an `Rng` for `random_range`.
struct RngWrap<'a>(&'a mut dyn rand::RngCore);

impl rand::RngCore for RngWrap<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

use rand::SeedableRng;

#[cfg(test)]
mod tests {
    use super::*;

    /// A forecast split by members (MPI ranks advance their share of an
    /// ensemble through a registered emulator) gives the whole batch's
    /// bits: every output row of the batched products is computed the same
    /// way whatever the batch size, for both architectures.
    #[test]
    fn a_batch_split_in_parts_gives_the_whole_batch_bits() {
        let scaling = Scaling { mean: 2.0, std: 3.5, out_std: 0.3 };
        for arch in [Arch::Mlp { hidden: vec![64, 64] }, Arch::Cnn { channels: 4, kernel: 5, hidden: 8 }] {
            let desc = Description { arch: arch.clone(), state_size: 40, dt: 0.05, lead: 1, scaling };
            let net = Net::new(desc, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
            for members in [7, 20, 45] {
                let states: Vec<f64> = (0..members * 40).map(|_| rng.random_range(-5.0..10.0)).collect();
                let whole = net.apply(&states, members).unwrap();
                for parts in [2, 3] {
                    let mut split = Vec::new();
                    for p in 0..parts {
                        let (base, extra) = (members / parts, members % parts);
                        let start = p * base + p.min(extra);
                        let len = base + usize::from(p < extra);
                        split.extend(net.apply(&states[start * 40..(start + len) * 40], len).unwrap());
                    }
                    assert!(split == whole, "{arch:?}: {members} members in {parts} parts");
                }
            }
        }
    }
}
