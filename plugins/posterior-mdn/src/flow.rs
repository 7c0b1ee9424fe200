//! An autoregressive flow (neural spline flow or affine, MAF-style) in the
//! posterior template: a transcription of the host's
//! `geohost_learn::flow::Nsf` (its module docs state the model).
//!
//! Header (`"kind": "flow"`): the parameters, data size, `transform`
//! (`spline` or `affine`), stacked `layers` (odd layers take the
//! parameters in reverse order), spline `bins` and half-width `bound`, the
//! conditioners' `hidden` widths, the standardisation of mapped θ and of
//! x, and each parameter's support. Values: for each flow layer, for each
//! position k of its order, the conditioner's MLP layers (weights
//! `fan_in × fan_out` row-major, then bias), inputs (x, z at positions
//! before k), outputs 3·bins − 1 spline parameters or (μ, α).

use super::{mlp, read_layers, Support};
use geohost_sdk::SplitMix64;
use serde::Deserialize;

/// Smallest bin width and height (fractions of 2B) and smallest knot
/// derivative: as the host's.
const MIN_BIN: f64 = 1e-3;
const MIN_DERIVATIVE: f64 = 1e-3;
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowHeader {
    #[allow(dead_code)]
    kind: String,
    pub name: String,
    pub version: String,
    pub parameters: Vec<String>,
    pub data_size: usize,
    transform: String,
    layers: usize,
    bins: usize,
    bound: f64,
    hidden: Vec<usize>,
    theta_mean: Vec<f64>,
    theta_std: Vec<f64>,
    x_mean: Vec<f64>,
    x_std: Vec<f64>,
    bounds: Vec<(Option<f64>, Option<f64>)>,
}

type Layers = Vec<(Vec<f32>, Vec<f32>)>;

pub(crate) struct Flow {
    pub h: FlowHeader,
    spline: bool,
    support: Support,
    /// `nets[layer][k]`: the conditioner at position k of that layer's order.
    nets: Vec<Vec<Layers>>,
}

impl Flow {
    pub fn load(header: &[u8], values: Vec<f32>) -> Result<Flow, String> {
        let h: FlowHeader = serde_json::from_slice(header).map_err(|e| format!("the flow's weights header is not valid: {e}"))?;
        let d = h.parameters.len();
        let spline = match h.transform.as_str() {
            "spline" => true,
            "affine" => false,
            other => return Err(format!("the flow's transform \"{other}\" is neither spline nor affine")),
        };
        let fits = [h.theta_mean.len(), h.theta_std.len(), h.bounds.len()].iter().all(|l| *l == d)
            && h.x_mean.len() == h.data_size
            && h.x_std.len() == h.data_size
            && d > 0
            && (1..=20).contains(&h.layers)
            && h.bins >= 2
            && h.bound.is_finite()
            && h.bound > 0.0;
        if !fits {
            return Err("the flow's weights header does not fit together".into());
        }
        let outputs = if spline { 3 * h.bins - 1 } else { 2 };
        let mut values = values.into_iter();
        let mut nets = Vec::new();
        for _ in 0..h.layers {
            let mut layer = Vec::new();
            for k in 0..d {
                let sizes: Vec<usize> = std::iter::once(h.data_size + k).chain(h.hidden.iter().copied()).chain([outputs]).collect();
                layer.push(read_layers(&mut values, &sizes)?);
            }
            nets.push(layer);
        }
        if values.next().is_some() {
            return Err("the weights payload is longer than its header says".into());
        }
        Ok(Flow { support: Support(h.bounds.clone()), h, spline, nets })
    }

    /// The parameter at position k of `layer`'s order.
    fn at(&self, layer: usize, k: usize) -> usize {
        let d = self.h.parameters.len();
        if layer % 2 == 1 {
            d - 1 - k
        } else {
            k
        }
    }

    fn standardise(&self, y: &[f64]) -> Result<Vec<f32>, String> {
        if y.len() != self.h.data_size {
            return Err(format!("the observation has {} values, but the posterior was trained on data of size {}", y.len(), self.h.data_size));
        }
        Ok(y.iter().zip(&self.h.x_mean).zip(&self.h.x_std).map(|((v, m), s)| ((v - m) / s) as f32).collect())
    }

    /// Position k's conditioner of `layer` on (x, z before k).
    fn raw(&self, layer: usize, k: usize, x: &[f32], z: &[f64]) -> Vec<f64> {
        let input: Vec<f32> = x.iter().copied().chain((0..k).map(|j| z[self.at(layer, j)] as f32)).collect();
        mlp(&self.nets[layer][k], input).into_iter().map(|v| v as f64).collect()
    }

    /// u and log du/dz of one factor.
    fn map(&self, z: f64, raw: &[f64]) -> (f64, f64) {
        if self.spline {
            forward(z, raw, self.h.bound)
        } else {
            ((z - raw[0]) * (-raw[1]).exp(), -raw[1])
        }
    }

    /// z from u.
    fn unmap(&self, u: f64, raw: &[f64]) -> f64 {
        if self.spline {
            inverse(u, raw, self.h.bound)
        } else {
            u * raw[1].exp() + raw[0]
        }
    }

    pub fn sample(&self, y: &[f64], n: usize, out: &mut [f64], rng: &mut SplitMix64) -> Result<(), String> {
        let x = self.standardise(y)?;
        let d = self.h.parameters.len();
        for row in out.chunks_exact_mut(d).take(n) {
            let mut u: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
            for layer in (0..self.h.layers).rev() {
                let mut z = vec![0.0; d];
                for k in 0..d {
                    let at = self.at(layer, k);
                    let raw = self.raw(layer, k, &x, &z);
                    z[at] = self.unmap(u[at], &raw);
                }
                u = z;
            }
            for (i, v) in row.iter_mut().enumerate() {
                *v = self.support.from_unbounded(i, u[i] * self.h.theta_std[i] + self.h.theta_mean[i]);
            }
        }
        Ok(())
    }

    pub fn log_prob(&self, y: &[f64], thetas: &[f64], out: &mut [f64]) -> Result<(), String> {
        let x = self.standardise(y)?;
        let d = self.h.parameters.len();
        for (theta, lp) in thetas.chunks_exact(d).zip(out.iter_mut()) {
            if !self.support.inside(theta) {
                *lp = f64::NEG_INFINITY;
                continue;
            }
            let mut total = 0.0;
            let mut z: Vec<f64> = (0..d)
                .map(|i| {
                    total += self.support.log_jacobian(i, theta[i]) - self.h.theta_std[i].ln();
                    (self.support.to_unbounded(i, theta[i]) - self.h.theta_mean[i]) / self.h.theta_std[i]
                })
                .collect();
            for layer in 0..self.h.layers {
                let mut u = vec![0.0; d];
                for k in 0..d {
                    let at = self.at(layer, k);
                    let raw = self.raw(layer, k, &x, &z);
                    let (v, log_det) = self.map(z[at], &raw);
                    u[at] = v;
                    total += log_det;
                }
                z = u;
            }
            *lp = total - z.iter().map(|v| 0.5 * v * v + HALF_LOG_2PI).sum::<f64>();
        }
        Ok(())
    }
}

/// log(1 + eˣ), without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (1.0 + (-x).exp()).ln()
    } else {
        (1.0 + x.exp()).ln()
    }
}

/// K + 1 knots on [−B, B] from K raw sizes: softmax, at least `MIN_BIN`
/// of the interval each, cumulated; the ends exactly ±B.
fn knots(raw: &[f64], bound: f64) -> Vec<f64> {
    let k = raw.len();
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = raw.iter().map(|r| (r - max).exp()).collect();
    let total: f64 = e.iter().fold(0.0, |a, b| a + b);
    let mut knots = Vec::with_capacity(k + 1);
    knots.push(-bound);
    let mut cum = 0.0;
    for (i, ei) in e.iter().enumerate() {
        cum += MIN_BIN + (1.0 - MIN_BIN * k as f64) * (ei / total);
        knots.push(if i + 1 == k { bound } else { -bound + 2.0 * bound * cum });
    }
    knots
}

/// Knots (x, y) and derivatives (1 at both ends) from 3K − 1 raw values.
fn spline(raw: &[f64], bound: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let k = (raw.len() + 1) / 3;
    let xs = knots(&raw[..k], bound);
    let ys = knots(&raw[k..2 * k], bound);
    let mut ds = Vec::with_capacity(k + 1);
    ds.push(1.0);
    ds.extend(raw[2 * k..].iter().map(|r| MIN_DERIVATIVE + softplus(*r)));
    ds.push(1.0);
    (xs, ys, ds)
}

/// The bin of `v` among `edges` (ascending, `v` inside).
fn bin_of(edges: &[f64], v: f64) -> usize {
    let bins = edges.len() - 1;
    edges.iter().skip(1).take(bins - 1).take_while(|e| v >= **e).count()
}

/// g(θ) and log g'(θ) (the identity outside [−B, B]; Durkan et al. 2019,
/// eqs. 4 and 5).
fn forward(theta: f64, raw: &[f64], bound: f64) -> (f64, f64) {
    if !(-bound..bound).contains(&theta) {
        return (theta, 0.0);
    }
    let (xs, ys, ds) = spline(raw, bound);
    let b = bin_of(&xs, theta);
    let (x0, x1, y0, y1, d0, d1) = (xs[b], xs[b + 1], ys[b], ys[b + 1], ds[b], ds[b + 1]);
    let w = x1 - x0;
    let s = (y1 - y0) / w;
    let xi = (theta - x0) / w;
    let xi1 = 1.0 - xi;
    let t = xi * xi1;
    let denominator = s + (d1 + d0 - 2.0 * s) * t;
    let u = y0 + (y1 - y0) * (s * xi * xi + d0 * t) / denominator;
    let slope = s * s * (d1 * xi * xi + 2.0 * s * t + d0 * xi1 * xi1) / (denominator * denominator);
    (u, slope.ln())
}

/// g⁻¹(u).
fn inverse(u: f64, raw: &[f64], bound: f64) -> f64 {
    if !(-bound..bound).contains(&u) {
        return u;
    }
    let (xs, ys, ds) = spline(raw, bound);
    let b = bin_of(&ys, u);
    let (x0, x1, y0, y1, d0, d1) = (xs[b], xs[b + 1], ys[b], ys[b + 1], ds[b], ds[b + 1]);
    let s = (y1 - y0) / (x1 - x0);
    let dy = u - y0;
    let a = (y1 - y0) * (s - d0) + dy * (d1 + d0 - 2.0 * s);
    let bq = (y1 - y0) * d0 - dy * (d1 + d0 - 2.0 * s);
    let c = -s * dy;
    let xi = (2.0 * c) / (-bq - (bq * bq - 4.0 * a * c).max(0.0).sqrt());
    x0 + xi.clamp(0.0, 1.0) * (x1 - x0)
}
