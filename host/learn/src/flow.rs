//! Step 5: a conditional neural spline flow (Durkan, Bekasov, Murray &
//! Papamakarios 2019, "Neural Spline Flows") as the amortized posterior
//! q(θ | x), beside the mixture density network of [`crate::mdn`].
//!
//! The flow is autoregressive over the d (mapped, standardised)
//! parameters: q(θ | x) = Π_k q(θ_k | θ_<k, x), and each factor is a
//! monotone rational-quadratic spline g_k that maps θ_k onto a standard
//! normal u_k:
//!
//!   log q(θ_k | θ_<k, x) = log N(g_k(θ_k); 0, 1) + log g_k'(θ_k)
//!
//! The spline's K bin widths, K bin heights and K − 1 interior knot
//! derivatives come from a conditioner MLP of (x, θ_<k). Where MADE masks
//! one network so that output k sees only inputs < k, here each dimension
//! has a conditioner of its own with exactly those inputs: the same
//! factorisation, and the d conditioners train as d independent problems
//! (in parallel, through the fused MLP step of [`crate::fused`]; the
//! spline's gradient with respect to its parameters is exact and O(K) per
//! row: dual numbers through the bin, the knots' Jacobian by hand). One autoregressive layer of splines is enough for
//! multimodal and bent conditionals; the splines act on [−B, B] (B = 5
//! standardised units by default) and are the identity outside, with
//! unit slope at both ends (the "linear tails" of the paper).
//!
//! As for the MDN: bounded priors are mapped onto the real line first
//! ([`Marginal::to_unbounded`]), θ and x are standardised on the training
//! split, the observation noise is redrawn every epoch, training stops
//! early on a validation split and is deterministic for a seed, and the
//! weights are stored as safetensors with the description in the metadata.
//! Sampling inverts the splines one dimension after another (a quadratic
//! per draw and dimension, batched over the draws).

use crate::fused::{AdamW, FitData, MlpTrainer};
use crate::mdn::{add_noise, standardise_pairs, standardised_observation, MdnSpec, Standardised, Training};
use crate::net::{read_geohost_metadata, write_safetensors, Scaling};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use geohost_da::params::prior::Prior;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::time::Instant;

mod joint;

/// Smallest bin width and height (fractions of 2B) and smallest knot
/// derivative: keep the spline strictly monotone and its inverse stable.
const MIN_BIN: f64 = 1e-3;
const MIN_DERIVATIVE: f64 = 1e-3;

/// Default number of spline bins and half-width B of the spline's interval.
pub fn default_bins() -> usize {
    8
}
pub fn default_bound() -> f64 {
    5.0
}

/// Everything but the weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct NsfDescription {
    pub parameters: Vec<String>,
    pub data_size: usize,
    pub hidden: Vec<usize>,
    /// Each factor's transform: spline (NSF) or affine (MAF).
    #[serde(default)]
    pub transform: Transform,
    /// Autoregressive layers, stacked; odd layers take the parameters in
    /// reverse order (files written before layers existed have one).
    #[serde(default = "one")]
    pub layers: usize,
    pub bins: usize,
    pub bound: f64,
    /// Per-dimension standardisation of mapped θ and of x.
    pub theta_mean: Vec<f64>,
    pub theta_std: Vec<f64>,
    pub x_mean: Vec<f64>,
    pub x_std: Vec<f64>,
    pub prior: Vec<geohost_da::params::prior::PriorSpec>,
}

fn one() -> usize {
    1
}

/// The monotone map of one autoregressive factor.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// A rational-quadratic spline (Durkan et al. 2019): the NSF.
    #[default]
    Spline,
    /// u = (θ − μ)·exp(−α), as in MAF (Papamakarios et al. 2017).
    Affine,
}

impl NsfDescription {
    /// Outputs of a conditioner: 3K − 1 spline parameters, or (μ, α).
    fn outputs(&self) -> usize {
        match self.transform {
            Transform::Spline => 3 * self.bins - 1,
            Transform::Affine => 2,
        }
    }

    /// Layer sizes of a conditioner at position k: (x, z_<k) in.
    fn sizes(&self, k: usize) -> Vec<usize> {
        let mut sizes = vec![self.data_size + k];
        sizes.extend(&self.hidden);
        sizes.push(self.outputs());
        sizes
    }

    /// The parameter at position k of `layer`'s order.
    fn at(&self, layer: usize, k: usize) -> usize {
        let d = self.parameters.len();
        if layer % 2 == 1 {
            d - 1 - k
        } else {
            k
        }
    }

    /// u and log du/dz of position k's factor at z from its conditioner's
    /// raw outputs.
    fn map(&self, z: f64, raw: &[f32]) -> (f64, f64) {
        let raw: Vec<f64> = raw.iter().map(|v| *v as f64).collect();
        self.map64(z, &raw)
    }

    /// [`NsfDescription::map`] from raw outputs already in f64.
    fn map64(&self, z: f64, raw: &[f64]) -> (f64, f64) {
        match self.transform {
            Transform::Spline => forward(z, raw, self.bound),
            Transform::Affine => ((z - raw[0]) * (-raw[1]).exp(), -raw[1]),
        }
    }

    /// z from u, the inverse of [`NsfDescription::map`].
    fn unmap(&self, u: f64, raw: &[f32]) -> f64 {
        let raw: Vec<f64> = raw.iter().map(|v| *v as f64).collect();
        match self.transform {
            Transform::Spline => inverse(u, &raw, self.bound),
            Transform::Affine => u * raw[1].exp() + raw[0],
        }
    }
}

/// One conditioner: (row-major `fan_in × fan_out` weights, bias) per layer.
type Layers = Vec<(Vec<f32>, Vec<f32>)>;

/// A trained (or loaded) autoregressive flow: a neural spline flow, or a
/// masked-autoregressive-style affine flow.
pub struct Nsf {
    pub desc: NsfDescription,
    pub prior: Prior,
    /// `nets[layer][k]`: the conditioner at position k of that layer's order.
    nets: Vec<Vec<Layers>>,
}

/// The mean affine NLL ½u² + α (+ ½ log 2π) of a batch from raw (μ, α)
/// outputs at `z`; with `delta`, its gradient: ∂/∂μ = −u e^{−α},
/// ∂/∂α = 1 − u².
fn affine_nll(out: &[f32], z: &[f32], mut delta: Option<&mut [f32]>) -> f64 {
    let rows = z.len();
    let mut loss = 0.0;
    for (r, &t) in z.iter().enumerate() {
        let (mu, alpha) = (out[2 * r] as f64, out[2 * r + 1] as f64);
        let e = (-alpha).exp();
        let u = (t as f64 - mu) * e;
        loss += 0.5 * u * u + alpha + HALF_LOG_2PI;
        if let Some(delta) = delta.as_deref_mut() {
            delta[2 * r] = (-u * e / rows as f64) as f32;
            delta[2 * r + 1] = ((1.0 - u * u) / rows as f64) as f32;
        }
    }
    loss / rows as f64
}

// ---------------------------------------------------------------------
// The rational-quadratic spline, generic over f64 and a dual number so
// that one piece of code gives values and exact gradients.

/// What the spline arithmetic needs of a number.
trait Real: Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Neg<Output = Self> {
    fn c(v: f64) -> Self;
    fn v(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
}

impl Real for f64 {
    fn c(v: f64) -> f64 {
        v
    }
    fn v(self) -> f64 {
        self
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
}

/// A forward-mode dual number: value and derivative along one direction.
#[derive(Clone, Copy, Debug)]
struct Dual(f64, f64);

impl Add for Dual {
    type Output = Dual;
    fn add(self, o: Dual) -> Dual {
        Dual(self.0 + o.0, self.1 + o.1)
    }
}
impl Sub for Dual {
    type Output = Dual;
    fn sub(self, o: Dual) -> Dual {
        Dual(self.0 - o.0, self.1 - o.1)
    }
}
impl Mul for Dual {
    type Output = Dual;
    fn mul(self, o: Dual) -> Dual {
        Dual(self.0 * o.0, self.1 * o.0 + self.0 * o.1)
    }
}
impl Div for Dual {
    type Output = Dual;
    fn div(self, o: Dual) -> Dual {
        Dual(self.0 / o.0, (self.1 * o.0 - self.0 * o.1) / (o.0 * o.0))
    }
}
impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual(-self.0, -self.1)
    }
}
impl Real for Dual {
    fn c(v: f64) -> Dual {
        Dual(v, 0.0)
    }
    fn v(self) -> f64 {
        self.0
    }
    fn exp(self) -> Dual {
        let e = self.0.exp();
        Dual(e, self.1 * e)
    }
    fn ln(self) -> Dual {
        Dual(self.0.ln(), self.1 / self.0)
    }
}

/// log(1 + eˣ), without overflow.
fn softplus<T: Real>(x: T) -> T {
    if x.v() > 0.0 {
        x + (T::c(1.0) + (-x).exp()).ln()
    } else {
        (T::c(1.0) + x.exp()).ln()
    }
}

/// The raw output that makes a knot derivative exactly 1 (an identity
/// spline when the widths and heights are equal).
fn unit_derivative_raw() -> f64 {
    ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln()
}

/// K + 1 knots on [−B, B] from K raw sizes: softmax, at least `MIN_BIN`
/// of the interval each, cumulated; the ends exactly ±B.
fn knots<T: Real>(raw: &[T], bound: f64) -> Vec<T> {
    let k = raw.len();
    let max = raw.iter().map(|r| r.v()).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<T> = raw.iter().map(|r| (*r - T::c(max)).exp()).collect();
    let total = e.iter().fold(T::c(0.0), |a, b| a + *b);
    let mut knots = Vec::with_capacity(k + 1);
    knots.push(T::c(-bound));
    let mut cum = T::c(0.0);
    for (i, ei) in e.iter().enumerate() {
        cum = cum + (T::c(MIN_BIN) + T::c(1.0 - MIN_BIN * k as f64) * (*ei / total));
        knots.push(if i + 1 == k { T::c(bound) } else { T::c(-bound) + T::c(2.0 * bound) * cum });
    }
    knots
}

/// The spline's knots (x, y) and derivatives (d, with 1 at both ends) from
/// its 3K − 1 raw parameters (K widths, K heights, K − 1 derivatives).
fn spline<T: Real>(raw: &[T], bound: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let k = (raw.len() + 1) / 3;
    let xs = knots(&raw[..k], bound);
    let ys = knots(&raw[k..2 * k], bound);
    let mut ds = Vec::with_capacity(k + 1);
    ds.push(T::c(1.0));
    ds.extend(raw[2 * k..].iter().map(|r| T::c(MIN_DERIVATIVE) + softplus(*r)));
    ds.push(T::c(1.0));
    (xs, ys, ds)
}

/// The bin of `v` among `edges` (ascending, `v` inside).
fn bin_of(edges: impl Iterator<Item = f64>, v: f64, bins: usize) -> usize {
    edges.skip(1).take(bins - 1).take_while(|e| v >= *e).count()
}

/// g(θ) and log g'(θ) of the spline with raw parameters `raw` (the
/// identity outside [−B, B]).
fn forward<T: Real>(theta: f64, raw: &[T], bound: f64) -> (T, T) {
    if !(-bound..bound).contains(&theta) {
        return (T::c(theta), T::c(0.0));
    }
    let (xs, ys, ds) = spline(raw, bound);
    let b = bin_of(xs.iter().map(|x| x.v()), theta, xs.len() - 1);
    in_bin(T::c(theta), [xs[b], xs[b + 1], ys[b], ys[b + 1], ds[b], ds[b + 1]])
}

/// g(θ) and log g'(θ) inside one bin, from its knots and derivatives
/// [x₀, x₁, y₀, y₁, d₀, d₁] (Durkan et al. 2019, eqs. 4 and 5).
fn in_bin<T: Real>(theta: T, [x0, x1, y0, y1, d0, d1]: [T; 6]) -> (T, T) {
    let w = x1 - x0;
    let s = (y1 - y0) / w;
    let xi = (theta - x0) / w;
    let xi1 = T::c(1.0) - xi;
    let t = xi * xi1;
    let denominator = s + (d1 + d0 - T::c(2.0) * s) * t;
    let u = y0 + (y1 - y0) * (s * xi * xi + d0 * t) / denominator;
    let slope = s * s * (d1 * xi * xi + T::c(2.0) * s * t + d0 * xi1 * xi1) / (denominator * denominator);
    (u, slope.ln())
}

/// One point of the spline with its partial derivatives: which bin, the
/// softmaxes of the widths and heights, u = g(θ), log g'(θ), and each of
/// them differentiated (dual numbers through the bin) with respect to the
/// bin's six quantities [x₀, x₁, y₀, y₁, d₀, d₁] and, last, θ.
struct SplinePoint {
    bin: usize,
    widths: Vec<f64>,
    heights: Vec<f64>,
    u: f64,
    log_det: f64,
    du: [f64; 7],
    dlog_det: [f64; 7],
}

impl SplinePoint {
    /// None outside [−B, B] (the identity: u = θ, log g' = 0).
    fn at(theta: f64, raw: &[f64], bound: f64) -> Option<SplinePoint> {
        if !(-bound..bound).contains(&theta) {
            return None;
        }
        let k = (raw.len() + 1) / 3;
        let softmax = |r: &[f64]| {
            let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|v| (v - max).exp()).collect();
            let total: f64 = e.iter().sum();
            e.into_iter().map(|v| v / total).collect::<Vec<f64>>()
        };
        let (widths, heights) = (softmax(&raw[..k]), softmax(&raw[k..2 * k]));
        let (xs, ys, ds) = spline(raw, bound);
        let bin = bin_of(xs.iter().copied(), theta, k);
        let local = [xs[bin], xs[bin + 1], ys[bin], ys[bin + 1], ds[bin], ds[bin + 1]];
        let (mut du, mut dlog_det, mut value) = ([0.0; 7], [0.0; 7], (0.0, 0.0));
        for q in 0..7 {
            let seeded: [Dual; 6] = std::array::from_fn(|i| Dual(local[i], if i == q { 1.0 } else { 0.0 }));
            let (u, log_det) = in_bin(Dual(theta, if q == 6 { 1.0 } else { 0.0 }), seeded);
            (du[q], dlog_det[q], value) = (u.1, log_det.1, (u.0, log_det.0));
        }
        Some(SplinePoint { bin, widths, heights, u: value.0, log_det: value.1, du, dlog_det })
    }

    /// `grad` (3K − 1, overwritten) = `scale` · Σ_q dl[q] ∂q/∂raw for the
    /// bin's six quantities q, by the softmax-and-cumsum Jacobian of the
    /// knots, ∂x_b/∂r_j = 2B(1 − K·MIN_BIN)(s_j[j < b] − S_b s_j) with
    /// S_b = Σ_{i<b} s_i (the same for the heights), and ∂d_i/∂r =
    /// sigmoid(r) for the interior derivatives.
    fn chain_to_raw(&self, dl: &[f64; 6], raw: &[f64], bound: f64, grad: &mut [f32], scale: f64) {
        let k = (raw.len() + 1) / 3;
        let b = self.bin;
        let span = 2.0 * bound * (1.0 - MIN_BIN * k as f64);
        // Knot i's position against raw r_j; the end knots (i = 0, K) do not move.
        let knot = |s: &[f64], i: usize, j: usize| -> f64 {
            if i == 0 || i == k {
                return 0.0;
            }
            let cum: f64 = s[..i].iter().sum();
            span * (if j < i { s[j] } else { 0.0 } - cum * s[j])
        };
        for j in 0..k {
            grad[j] = ((dl[0] * knot(&self.widths, b, j) + dl[1] * knot(&self.widths, b + 1, j)) * scale) as f32;
            grad[k + j] = ((dl[2] * knot(&self.heights, b, j) + dl[3] * knot(&self.heights, b + 1, j)) * scale) as f32;
        }
        grad[2 * k..].iter_mut().for_each(|g| *g = 0.0);
        let sigmoid = |r: f64| 1.0 / (1.0 + (-r).exp());
        // Interior derivative i (1..K−1) is raw[2K + i − 1].
        if b >= 1 {
            grad[2 * k + b - 1] += (dl[4] * sigmoid(raw[2 * k + b - 1]) * scale) as f32;
        }
        if b + 1 < k {
            grad[2 * k + b] += (dl[5] * sigmoid(raw[2 * k + b]) * scale) as f32;
        }
    }
}

/// ½u² − log g'(θ) (the NLL less its constant) and, in `grad`, its exact
/// gradient with respect to the 3K − 1 raw parameters, in O(K)
/// ([`SplinePoint`]). Tested against full forward-mode and finite
/// differences.
fn nll_and_gradient(theta: f64, raw: &[f64], bound: f64, grad: &mut [f32], scale: f64) -> f64 {
    let Some(point) = SplinePoint::at(theta, raw, bound) else {
        grad.iter_mut().for_each(|g| *g = 0.0);
        return 0.5 * theta * theta;
    };
    let dl: [f64; 6] = std::array::from_fn(|q| point.u * point.du[q] - point.dlog_det[q]);
    point.chain_to_raw(&dl, raw, bound, grad, scale);
    0.5 * point.u * point.u - point.log_det
}

/// The vector–Jacobian product of one factor for backpropagation
/// through stacked layers: with weights `a` on u = g(θ) and `c` on
/// log g'(θ), writes a·∂u/∂raw + c·∂log g'/∂raw into `grad` and returns
/// (u, log g', a·∂u/∂θ + c·∂log g'/∂θ).
fn factor_vjp(transform: Transform, theta: f64, raw: &[f64], bound: f64, a: f64, c: f64, grad: &mut [f32]) -> (f64, f64, f64) {
    match transform {
        Transform::Affine => {
            // u = (θ − μ)e^{−α}, log-det −α.
            let e = (-raw[1]).exp();
            let u = (theta - raw[0]) * e;
            grad[0] = (-a * e) as f32;
            grad[1] = (-a * u - c) as f32;
            (u, -raw[1], a * e)
        }
        Transform::Spline => match SplinePoint::at(theta, raw, bound) {
            None => {
                grad.iter_mut().for_each(|g| *g = 0.0);
                (theta, 0.0, a)
            }
            Some(point) => {
                let dl: [f64; 6] = std::array::from_fn(|q| a * point.du[q] + c * point.dlog_det[q]);
                point.chain_to_raw(&dl, raw, bound, grad, 1.0);
                (point.u, point.log_det, a * point.du[6] + c * point.dlog_det[6])
            }
        },
    }
}

/// g⁻¹(u) of the spline with raw parameters `raw`.
fn inverse(u: f64, raw: &[f64], bound: f64) -> f64 {
    if !(-bound..bound).contains(&u) {
        return u;
    }
    let (xs, ys, ds) = spline(raw, bound);
    let b = bin_of(ys.iter().copied(), u, ys.len() - 1);
    let (x0, x1, y0, y1, d0, d1) = (xs[b], xs[b + 1], ys[b], ys[b + 1], ds[b], ds[b + 1]);
    let s = (y1 - y0) / (x1 - x0);
    let dy = u - y0;
    let a = (y1 - y0) * (s - d0) + dy * (d1 + d0 - 2.0 * s);
    let bq = (y1 - y0) * d0 - dy * (d1 + d0 - 2.0 * s);
    let c = -s * dy;
    // The root in [0, 1], in the form that is stable when a ≈ 0.
    let xi = (2.0 * c) / (-bq - (bq * bq - 4.0 * a * c).max(0.0).sqrt());
    x0 + xi.clamp(0.0, 1.0) * (x1 - x0)
}

const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// The mean negative log density −log q(θ_k | ·) of a batch from the
/// conditioner's raw outputs `out` (`rows × (3K − 1)`) at standardised
/// `theta` (`rows`); with `delta`, its gradient with respect to `out`
/// ([`nll_and_gradient`]).
fn spline_nll(out: &[f32], theta: &[f32], bound: f64, mut delta: Option<&mut [f32]>) -> f64 {
    let rows = theta.len();
    let per = out.len() / rows.max(1);
    let mut loss = 0.0;
    let mut raw = vec![0.0f64; per];
    let mut scratch = vec![0.0f32; per];
    for (r, &t) in theta.iter().enumerate() {
        raw.iter_mut().zip(&out[r * per..(r + 1) * per]).for_each(|(a, b)| *a = *b as f64);
        let grad = match delta.as_deref_mut() {
            Some(delta) => &mut delta[r * per..(r + 1) * per],
            None => &mut scratch[..],
        };
        loss += nll_and_gradient(t as f64, &raw, bound, grad, 1.0 / rows as f64) + HALF_LOG_2PI;
    }
    loss / rows as f64
}

/// Rows of a conditioner's outputs for `rows` input rows, through the
/// layers (ReLU between them).
fn conditioner(layers: &Layers, input: &[f32], rows: usize) -> Vec<f32> {
    let mut h = input.to_vec();
    let mut fan_in = input.len() / rows.max(1);
    for (i, (w, b)) in layers.iter().enumerate() {
        let fan_out = b.len();
        let mut out: Vec<f32> = b.iter().copied().cycle().take(rows * fan_out).collect();
        crate::fused::gemm(rows, fan_in, fan_out, &h, false, w, false, 1.0, &mut out);
        if i + 1 < layers.len() {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        (h, fan_in) = (out, fan_out);
    }
    h
}

impl Nsf {
    fn init(desc: NsfDescription, rng: &mut impl Rng) -> Result<Nsf> {
        let prior = Prior::new(&desc.prior, &desc.parameters)?;
        let nets = (0..desc.layers).map(|_| (0..desc.parameters.len()).map(|k| Nsf::init_conditioner(&desc, k, rng)).collect()).collect();
        Ok(Nsf { desc, prior, nets })
    }

    /// A conditioner whose last layer starts near zero, with the spline
    /// derivatives' biases at 1: each factor starts as the identity.
    fn init_conditioner(desc: &NsfDescription, k: usize, rng: &mut impl Rng) -> Layers {
        let sizes = desc.sizes(k);
        let last = sizes.len() - 2;
        sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let bound = 1.0 / (w[0] as f64).sqrt();
                let scale = if i == last { 0.01 } else { 1.0 };
                let weights = (0..w[0] * w[1]).map(|_| (scale * rng.random_range(-bound..bound)) as f32).collect();
                let bias = (0..w[1])
                    .map(|j| match (i < last, desc.transform) {
                        (true, _) => rng.random_range(-bound..bound) as f32,
                        (false, Transform::Spline) if j >= 2 * desc.bins => unit_derivative_raw() as f32,
                        (false, _) => 0.0,
                    })
                    .collect();
                (weights, bias)
            })
            .collect()
    }

    /// Train on pairs (`thetas`: `d × n`, `xs`: `data_size × n`), as
    /// [`crate::mdn::Mdn::train`] does (same checks, split, noise and
    /// early stopping). `transform` and `spec.layers` (`spec.bins`,
    /// `spec.bound` for splines) shape the flow. One layer's d
    /// conditioners are independent problems and train in parallel, each
    /// with its own early stopping; `progress(epoch, train, val)` gets the
    /// first one's epochs. Stacked layers train jointly on the whole
    /// flow's likelihood ([`joint`]); `progress` gets its epochs.
    pub fn train(
        prior: &Prior,
        thetas: &DMatrix<f64>,
        xs: &DMatrix<f64>,
        noise_sd: Option<&[f64]>,
        spec: &MdnSpec,
        transform: Transform,
        progress: &mut dyn FnMut(usize, f64, f64),
    ) -> Result<(Nsf, Training)> {
        spec.validate("[step5]")?;
        let layers = spec.layers.unwrap_or(match transform {
            Transform::Spline => 1,
            Transform::Affine => 5,
        });
        let Standardised { n_train, theta_mean, theta_std, x_mean, x_std, train_theta, val_theta, clean_x, val_x, noise } =
            standardise_pairs(prior, thetas, xs, noise_sd, spec)?;
        let n_val = val_theta.len() / prior.dim();
        let desc = NsfDescription {
            parameters: prior.names.clone(),
            data_size: xs.nrows(),
            hidden: spec.hidden.clone(),
            transform,
            layers,
            bins: spec.bins.unwrap_or_else(default_bins),
            bound: spec.bound.unwrap_or_else(default_bound),
            theta_mean,
            theta_std,
            x_mean,
            x_std,
            prior: prior.specs.clone(),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
        let mut nsf = Nsf::init(desc, &mut rng)?;
        let dim = nsf.desc.parameters.len();
        let batch = spec.batch.min(n_train);
        let schedule = spec.early_stopping().schedule();
        let start = Instant::now();
        let (epochs, best_epoch) = if layers == 1 {
            nsf.train_one_layer(&train_theta, &val_theta, &clean_x, &val_x, noise.as_deref(), spec, progress)?
        } else {
            let rows = joint::Rows { clean_x: &clean_x, z: &train_theta, val_x: &val_x, val_z: &val_theta, noise: noise.as_deref() };
            let mut flow = joint::Joint::new(&nsf.desc, &nsf.nets, rows, batch, spec.lr, spec.seed.wrapping_add(1));
            let fitted = crate::fused::early_stopped(&mut flow, spec.lr, schedule, progress).map_err(|e| {
                anyhow::anyhow!("the flow ({layers} layers, trained jointly) diverged at epoch {} (validation NLL {}); lower [step5] lr", e.epoch, e.val)
            })?;
            nsf.nets = flow.into_nets();
            (fitted.epochs, fitted.best_epoch)
        };
        let z_val0 = val_theta;
        // The whole flow's validation NLL (standardised units), through every layer.
        let (mut z, mut log_det) = (z_val0, vec![0.0f64; n_val]);
        for layer in 0..layers {
            let (mut out, mut ld) = (vec![0.0f32; z.len()], Vec::new());
            nsf.push_through(layer, &val_x, &z, &mut out, &mut ld);
            log_det.iter_mut().zip(ld).for_each(|(a, b)| *a += b);
            z = out;
        }
        let best_val =
            z.chunks_exact(dim).zip(&log_det).map(|(u, ld)| u.iter().map(|v| 0.5 * (*v as f64).powi(2) + HALF_LOG_2PI).sum::<f64>() - ld).sum::<f64>()
                / n_val as f64;
        let training = Training { epochs, best_epoch, best_val_nll: best_val, seconds: start.elapsed().as_secs_f64(), train_pairs: n_train };
        Ok((nsf, training))
    }

    /// One layer's d conditioners, each trained on its own factor's NLL
    /// with its own early stopping, spread over the cores (this thread
    /// takes every `workers`-th from 0 and reports progress). Returns the
    /// most epochs any ran and the latest best epoch.
    #[allow(clippy::too_many_arguments)]
    fn train_one_layer(
        &mut self,
        z_train: &[f32],
        z_val: &[f32],
        clean_x: &[f32],
        val_x: &[f32],
        noise: Option<&[f32]>,
        spec: &MdnSpec,
        progress: &mut dyn FnMut(usize, f64, f64),
    ) -> Result<(usize, usize)> {
        let d = &self.desc;
        let (dim, p) = (d.parameters.len(), d.data_size);
        let n_train = z_train.len() / dim;
        let batch = spec.batch.min(n_train);
        let schedule = spec.early_stopping().schedule();
        // Inputs at position k: x, then the z before k.
        let inputs = |x: &[f32], z: &[f32], k: usize| -> Vec<f32> {
            x.chunks_exact(p).zip(z.chunks_exact(dim)).flat_map(|(x, z)| x.iter().copied().chain((0..k).map(|j| z[d.at(0, j)]))).collect::<Vec<f32>>()
        };
        let column = |z: &[f32], k: usize| -> Vec<f32> { z.chunks_exact(dim).map(|z| z[d.at(0, k)]).collect() };
        let train_k = |k: usize, report: &mut dyn FnMut(usize, f64, f64)| -> Result<(Layers, crate::fused::Fitted)> {
            let sizes = d.sizes(k);
            let params = self.nets[0][k].iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
            let mut net = MlpTrainer::new(&sizes, params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, batch, AdamW::new(spec.lr, 0.0));
            let clean = inputs(clean_x, z_train, k);
            let mut epoch_inputs = clean.clone();
            let (targets, val_inputs, val_targets) = (column(z_train, k), inputs(val_x, z_val, k), column(z_val, k));
            let width = p + k;
            let data = FitData {
                inputs: &mut epoch_inputs,
                targets: &targets,
                val_inputs: &val_inputs,
                val_targets: &val_targets,
                input_width: width,
                target_width: 1,
            };
            let refresh = |x: &mut [f32], rng: &mut rand_chacha::ChaCha8Rng| {
                x.copy_from_slice(&clean);
                if let Some(noise) = noise {
                    add_noise(x, width, p, noise, rng);
                }
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed.wrapping_add(1 + k as u64));
            let bound = d.bound;
            let loss = |out: &[f32], t: &[f32], delta: Option<&mut [f32]>| match d.transform {
                Transform::Spline => spline_nll(out, t, bound, delta),
                Transform::Affine => affine_nll(out, t, delta),
            };
            let fitted = net.fit(data, schedule, &mut rng, refresh, loss, report).map_err(|e| {
                anyhow::anyhow!(
                    "the flow's conditioner of `{}` diverged at epoch {} (validation NLL {}); lower [step5] lr",
                    d.parameters[d.at(0, k)],
                    e.epoch,
                    e.val
                )
            })?;
            Ok((net.params().chunks_exact(2).map(|wb| (wb[0].clone(), wb[1].clone())).collect(), fitted))
        };
        // Conditioners are independent: on all cores, progress reported by
        // the first (trained on this thread).
        let quiet = |k: usize| train_k(k, &mut |_, _, _| {});
        let first = |k: usize| if k == 0 { train_k(k, &mut *progress) } else { quiet(k) };
        let results = crate::threads::round_robin((0..dim).collect(), crate::threads::workers_for(dim), first, &quiet);
        let (mut nets, mut epochs, mut best_epoch) = (Vec::with_capacity(dim), 0, 0);
        for r in results {
            let (conditioner, fitted) = r?;
            nets.push(conditioner);
            epochs = epochs.max(fitted.epochs);
            best_epoch = best_epoch.max(fitted.best_epoch);
        }
        self.nets[0] = nets;
        Ok((epochs, best_epoch))
    }

    /// Rows of z (`rows × d`, parameter order) through `layer` under the
    /// standardised x rows: u into `out`; each row's log-determinant
    /// pushed onto `log_det` (when it is given empty, it is filled).
    fn push_through(&self, layer: usize, x: &[f32], z: &[f32], out: &mut [f32], log_det: &mut Vec<f64>) {
        let (dim, p, per) = (self.desc.parameters.len(), self.desc.data_size, self.desc.outputs());
        let rows = z.len() / dim;
        let want_det = log_det.is_empty();
        let mut det = vec![0.0f64; rows];
        for k in 0..dim {
            let at = self.desc.at(layer, k);
            let input: Vec<f32> =
                (0..rows).flat_map(|r| x[r * p..(r + 1) * p].iter().copied().chain((0..k).map(move |j| z[r * dim + self.desc.at(layer, j)]))).collect();
            let raw = conditioner(&self.nets[layer][k], &input, rows);
            for r in 0..rows {
                let (u, ld) = self.desc.map(z[r * dim + at] as f64, &raw[r * per..(r + 1) * per]);
                out[r * dim + at] = u as f32;
                det[r] += ld;
            }
        }
        if want_det {
            *log_det = det;
        }
    }

    /// Standardised x, checked against the description.
    fn standardise_x(&self, x: &[f64]) -> Result<Vec<f32>> {
        standardised_observation(x, &self.desc.x_mean, &self.desc.x_std)
    }

    /// Position k's conditioner of `layer` for `rows` rows of z (`rows ×
    /// d`, parameter order; only positions before k are read) under one x.
    fn raw_for(&self, layer: usize, k: usize, x: &[f32], z: &[f64], rows: usize) -> Vec<f32> {
        let dim = self.desc.parameters.len();
        let input: Vec<f32> = (0..rows).flat_map(|r| x.iter().copied().chain((0..k).map(move |j| z[r * dim + self.desc.at(layer, j)] as f32))).collect();
        conditioner(&self.nets[layer][k], &input, rows)
    }

    /// Draw `n` posterior samples (`d × n`, in parameter units) given one
    /// observation `x`: base draws through every layer's inverse, last
    /// layer first, position by position.
    pub fn sample(&self, x: &[f64], n: usize, rng: &mut impl Rng) -> Result<DMatrix<f64>> {
        let x = self.standardise_x(x)?;
        let d = &self.desc;
        let dim = d.parameters.len();
        let u: Vec<f64> = (0..n * dim).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        let u = self.invert(&x, u, n);
        let mut out = DMatrix::zeros(dim, n);
        for r in 0..n {
            for (i, m) in self.prior.marginals.iter().enumerate() {
                out[(i, r)] = m.from_unbounded(u[r * dim + i] * d.theta_std[i] + d.theta_mean[i]);
            }
        }
        Ok(out)
    }

    /// Base points u (`rows × d`) back through every layer's inverse,
    /// last layer first, position by position, to standardised z.
    fn invert(&self, x: &[f32], mut u: Vec<f64>, rows: usize) -> Vec<f64> {
        let d = &self.desc;
        let (dim, per) = (d.parameters.len(), d.outputs());
        for layer in (0..d.layers).rev() {
            let mut z = vec![0.0f64; rows * dim];
            for k in 0..dim {
                let at = d.at(layer, k);
                let raw = self.raw_for(layer, k, x, &z, rows);
                for r in 0..rows {
                    z[r * dim + at] = d.unmap(u[r * dim + at], &raw[r * per..(r + 1) * per]);
                }
            }
            u = z;
        }
        u
    }

    /// log q(θ | x) (a normalised density in parameter units) for every
    /// column of `thetas` (−∞ outside the prior's support).
    pub fn log_prob(&self, x: &[f64], thetas: &DMatrix<f64>) -> Result<Vec<f64>> {
        let d = &self.desc;
        let dim = d.parameters.len();
        if thetas.nrows() != dim {
            bail!("log_prob: parameters of size {}; expected {dim}", thetas.nrows());
        }
        let x = self.standardise_x(x)?;
        let n = thetas.ncols();
        let inside: Vec<bool> = thetas.column_iter().map(|t| self.prior.log_density(t.as_slice()).is_finite()).collect();
        let mut z = vec![0.0f64; n * dim];
        let mut lp = vec![0.0f64; n];
        for (r, theta) in thetas.column_iter().enumerate().filter(|(r, _)| inside[*r]) {
            for (i, (m, v)) in self.prior.marginals.iter().zip(theta.iter()).enumerate() {
                z[r * dim + i] = (m.to_unbounded(*v) - d.theta_mean[i]) / d.theta_std[i];
                lp[r] += m.log_jacobian(*v) - d.theta_std[i].ln();
            }
        }
        let per = d.outputs();
        for layer in 0..d.layers {
            let mut u = vec![0.0f64; n * dim];
            for k in 0..dim {
                let at = d.at(layer, k);
                let raw = self.raw_for(layer, k, &x, &z, n);
                for r in (0..n).filter(|r| inside[*r]) {
                    let (v, log_det) = d.map(z[r * dim + at], &raw[r * per..(r + 1) * per]);
                    u[r * dim + at] = v;
                    lp[r] += log_det;
                }
            }
            z = u;
        }
        for (r, l) in lp.iter_mut().enumerate() {
            *l -= z[r * dim..(r + 1) * dim].iter().map(|v| 0.5 * v * v + HALF_LOG_2PI).sum::<f64>();
        }
        Ok(lp.into_iter().zip(inside).map(|(l, i)| if i { l } else { f64::NEG_INFINITY }).collect())
    }

    /// Every conditioner's MLP layers (weights `fan_in × fan_out`
    /// row-major, bias), flow layer by flow layer, position by position
    /// of that layer's order: the layout `geohost export posterior` writes.
    pub fn conditioner_layers(&self) -> impl Iterator<Item = &(Vec<f32>, Vec<f32>)> {
        self.nets.iter().flatten().flatten()
    }

    /// `nsf` or `maf`: the predictor kind its file records.
    pub fn kind(&self) -> &'static str {
        match self.desc.transform {
            Transform::Spline => "nsf",
            Transform::Affine => "maf",
        }
    }

    /// Safetensors name of a conditioner's tensor: `dim{k}.layer{i}` for
    /// the first flow layer (as files of one layer always were), with
    /// `flow{l}.` before it for the others.
    fn tensor_name(flow_layer: usize, k: usize, i: usize, suffix: &str) -> String {
        let prefix = if flow_layer == 0 { String::new() } else { format!("flow{flow_layer}.") };
        format!("{prefix}dim{k}.layer{i}.{suffix}")
    }

    /// The weights by safetensors name.
    fn named(&self) -> Result<Vec<(String, Var)>> {
        let mut named = Vec::new();
        for (l, layer) in self.nets.iter().enumerate() {
            for (k, layers) in layer.iter().enumerate() {
                for (i, (w, b)) in layers.iter().enumerate() {
                    named.push((
                        Nsf::tensor_name(l, k, i, "weight"),
                        Var::from_tensor(&Tensor::from_vec(w.clone(), (w.len() / b.len(), b.len()), &Device::Cpu)?)?,
                    ));
                    named.push((Nsf::tensor_name(l, k, i, "bias"), Var::from_tensor(&Tensor::from_vec(b.clone(), (1, b.len()), &Device::Cpu)?)?));
                }
            }
        }
        Ok(named)
    }

    /// Weights and description as one safetensors file.
    pub fn to_safetensors(&self, training: &serde_json::Value) -> Result<Vec<u8>> {
        let named = self.named()?;
        let refs: Vec<(String, &Var)> = named.iter().map(|(n, v)| (n.clone(), v)).collect();
        write_safetensors(&refs, serde_json::json!({ "predictor": self.kind(), "description": self.desc, "training": training }))
    }

    /// Read a flow back; `label` names the bytes in errors.
    pub fn from_safetensors(label: &str, bytes: &[u8]) -> Result<(Nsf, serde_json::Value)> {
        let meta = read_geohost_metadata(label, bytes, "; not a geohost predictor")?;
        if meta["predictor"] != "nsf" && meta["predictor"] != "maf" {
            bail!("{label} is not a flow predictor");
        }
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let desc: NsfDescription = serde_json::from_value(meta["description"].clone()).map_err(|e| anyhow::anyhow!("{label}: unreadable description: {e}"))?;
        if desc.bins < 2 || !(desc.bound.is_finite() && desc.bound > 0.0) || !(1..=20).contains(&desc.layers) {
            bail!(
                "{label}: the description's bins ({}), bound ({}) or layers ({}) are out of range; the file is damaged or was not written by geohost",
                desc.bins,
                desc.bound,
                desc.layers
            );
        }
        let mut nsf = Nsf::init(desc, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
        for l in 0..nsf.nets.len() {
            for k in 0..nsf.nets[l].len() {
                for i in 0..nsf.nets[l][k].len() {
                    for (suffix, want) in [("weight", nsf.nets[l][k][i].0.len()), ("bias", nsf.nets[l][k][i].1.len())] {
                        let name = Nsf::tensor_name(l, k, i, suffix);
                        let t = tensors.get(&name).ok_or_else(|| anyhow::anyhow!("{label}: tensor `{name}` is missing"))?;
                        let values: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
                        if values.len() != want {
                            bail!("{label}: tensor `{name}` has {} values, the description needs {want}", values.len());
                        }
                        if values.iter().any(|v| !v.is_finite()) {
                            bail!("{label}: tensor `{name}` holds non-finite weights");
                        }
                        if suffix == "weight" {
                            nsf.nets[l][k][i].0 = values;
                        } else {
                            nsf.nets[l][k][i].1 = values;
                        }
                    }
                }
            }
        }
        Ok((nsf, meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow's description for tests: `dim` parameters with N(0, 1)
    /// priors, data of size `data`, no standardisation.
    pub(super) fn standard_description(
        dim: usize,
        data: usize,
        hidden: Vec<usize>,
        transform: Transform,
        layers: usize,
        bins: usize,
        bound: f64,
    ) -> NsfDescription {
        let parameters: Vec<String> = (0..dim).map(|i| format!("t{i}")).collect();
        let prior = parameters
            .iter()
            .map(|n| geohost_da::params::prior::PriorSpec { name: n.clone(), uniform: None, normal: Some([0.0, 1.0]), bounds: None })
            .collect();
        NsfDescription {
            parameters,
            data_size: data,
            hidden,
            transform,
            layers,
            bins,
            bound,
            theta_mean: vec![0.0; dim],
            theta_std: vec![1.0; dim],
            x_mean: vec![0.0; data],
            x_std: vec![1.0; data],
            prior,
        }
    }

    fn random_raw(rng: &mut impl Rng, bins: usize, scale: f64) -> Vec<f64> {
        (0..3 * bins - 1).map(|_| scale * rng.sample::<f64, _>(StandardNormal)).collect()
    }

    /// g⁻¹(g(θ)) = θ to rounding across [−B − 1, B + 1], for random splines;
    /// the identity outside; strictly increasing; the log-slope matches a
    /// finite difference of g.
    #[test]
    fn the_spline_inverts_to_rounding_and_its_slope_is_its_derivative() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let raw = random_raw(&mut rng, 8, 2.0);
            let mut last = f64::NEG_INFINITY;
            for i in 0..=1200 {
                let theta = -6.0 + 12.0 * i as f64 / 1200.0;
                let (u, log_det) = forward(theta, &raw, 5.0);
                assert!(u > last, "monotone at {theta}");
                last = u;
                let back = inverse(u, &raw, 5.0);
                assert!((back - theta).abs() < 1e-9, "g⁻¹(g({theta})) = {back}");
                if theta.abs() > 5.0 {
                    assert_eq!((u, log_det), (theta, 0.0));
                } else if theta.abs() < 4.99 {
                    let h = 1e-6;
                    let fd = (forward(theta + h, &raw, 5.0).0 - forward(theta - h, &raw, 5.0).0) / (2.0 * h);
                    // Rounding in the difference is about 1e-16 · 5 / h.
                    assert!((fd - log_det.exp()).abs() < 1e-8 + 1e-5 * fd, "slope at {theta}: {fd} vs {}", log_det.exp());
                }
            }
        }
    }

    /// The O(K) gradient against forward-mode through the whole spline
    /// (softmax, cumsum and all), per raw parameter.
    #[test]
    fn the_chained_gradient_equals_full_forward_mode() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        for _ in 0..200 {
            let raw = random_raw(&mut rng, 7, 1.5);
            let theta = 4.0 * rng.sample::<f64, _>(StandardNormal);
            let mut grad = vec![0.0f32; raw.len()];
            let value = nll_and_gradient(theta, &raw, 5.0, &mut grad, 1.0);
            let (u, log_det) = forward(theta, &raw, 5.0);
            assert!((value - (0.5 * u * u - log_det)).abs() < 1e-12);
            for (j, got) in grad.iter().enumerate() {
                let seeded: Vec<Dual> = raw.iter().enumerate().map(|(i, v)| Dual(*v, if i == j { 1.0 } else { 0.0 })).collect();
                let (u, log_det) = forward(theta, &seeded, 5.0);
                let want = u.0 * u.1 - log_det.1;
                assert!((*got as f64 - want).abs() < 1e-5 * want.abs().max(1.0), "θ = {theta}, raw {j}: {got} vs {want}");
            }
        }
    }

    /// A whole flow (three layers, random conditioners far from the
    /// identity, splines and affine maps) pushed forward and inverted
    /// gives its input back to rounding: the forward pass keeps f32
    /// between layers (as training does), which steep random splines
    /// amplify to at most about 5e-4 here.
    #[test]
    fn a_stacked_flow_inverts_to_rounding() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for transform in [Transform::Spline, Transform::Affine] {
            let desc = standard_description(3, 2, vec![8], transform, 3, 6, 5.0);
            let mut flow = Nsf::init(desc, &mut rng).unwrap();
            for layer in flow.nets.iter_mut().flatten().flatten() {
                layer.0.iter_mut().for_each(|w| *w = 0.3 * rng.sample::<f32, _>(StandardNormal));
            }
            let rows = 200;
            let x: Vec<f32> = (0..rows * 2).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
            let z: Vec<f32> = (0..rows * 3).map(|_| 2.0 * rng.sample::<f32, _>(StandardNormal)).collect();
            let mut u = z.clone();
            for layer in 0..3 {
                let mut out = vec![0.0f32; u.len()];
                flow.push_through(layer, &x, &u, &mut out, &mut Vec::new());
                u = out;
            }
            assert!(u.iter().zip(&z).any(|(a, b)| (a - b).abs() > 0.1), "{transform:?}: the flow is not the identity");
            // One x per row: invert row by row.
            for r in 0..rows {
                let back = flow.invert(&x[r * 2..r * 2 + 2], u[r * 3..r * 3 + 3].iter().map(|v| *v as f64).collect(), 1);
                for i in 0..3 {
                    assert!(
                        (back[i] - z[r * 3 + i] as f64).abs() < 1e-3 * (1.0 + z[r * 3 + i].abs() as f64),
                        "{transform:?} row {r}: {back:?} vs {:?}",
                        &z[r * 3..r * 3 + 3]
                    );
                }
            }
        }
    }

    /// The NLL's gradient against central differences of the
    /// NLL itself, per raw parameter, on a batch.
    #[test]
    fn the_spline_nll_gradient_matches_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (bins, rows) = (6, 7);
        let per = 3 * bins - 1;
        let out: Vec<f32> = (0..rows * per).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        let theta: Vec<f32> = (0..rows).map(|_| 2.0 * rng.sample::<f32, _>(StandardNormal)).collect();
        let mut delta = vec![0.0f32; out.len()];
        spline_nll(&out, &theta, 5.0, Some(&mut delta));
        for j in 0..out.len() {
            let h = 1e-3f32;
            let (mut up, mut down) = (out.clone(), out.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (spline_nll(&up, &theta, 5.0, None) - spline_nll(&down, &theta, 5.0, None)) / (2.0 * h as f64);
            assert!((fd - delta[j] as f64).abs() < 2e-3 * fd.abs().max(1e-2), "output {j}: {} vs finite difference {fd}", delta[j]);
        }
    }
}
