//! The MLP emulator's training step without a tensor library in the loop:
//! forward, backward and AdamW written out over matrixmultiply's `sgemm`,
//! into buffers allocated once.
//!
//! Why: at batch 256 on a 40-256-256-40 network the three GEMMs of each
//! pass are all the work there is, but candle allocates a tensor per
//! operation and per gradient and runs AdamW as a dozen tensor ops per
//! parameter; that costs it most of its throughput (see `geohost perf
//! emulator`, which prints both). The arithmetic is the same as the candle
//! network in [`super::net`] (same parameter layout, same loss, candle-nn's
//! AdamW formula), which `tests/emulate.rs` checks step by step.
//!
//! The same step with a logistic head ([`MlpTrainer::step_logistic`]) trains
//! the C2ST classifier of [`crate::c2st`]. [`MlpTrainer::fit`] is
//! the early-stopped training loop over any loss ([`mse`] for the static
//! emulator of [`crate::static_emulator`], the mixture NLL for the
//! posterior of [`crate::mdn`]).
//!
//! Invariants: parameters are row-major `(fan_in, fan_out)` weights and
//! `(1, fan_out)` biases, in the order of [`super::net::Net::params`];
//! every buffer is sized at construction, so a step allocates nothing.

use crate::net::Scaling;
use rand::seq::SliceRandom;
use rand::Rng;

/// Training and validation rows for [`MlpTrainer::fit`], row-major:
/// `inputs` (`n × input_width`, renewed each epoch by the caller's
/// `refresh`), `targets` (`n × target_width`) and the same for validation.
pub struct FitData<'a> {
    pub inputs: &'a mut [f32],
    pub targets: &'a [f32],
    pub val_inputs: &'a [f32],
    pub val_targets: &'a [f32],
    pub input_width: usize,
    pub target_width: usize,
}

/// When [`MlpTrainer::fit`] stops and how it lowers the learning rate.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Halve the learning rate after this many epochs without a better
    /// validation loss (and again after as many more); 0 keeps it fixed.
    pub halve_after: usize,
    /// Anneal the learning rate over `max_epochs` by a half cosine
    /// (Loshchilov & Hutter 2017, without restarts): epoch e trains at
    /// lr · ½(1 + cos(π e / max_epochs)), on top of any halving.
    pub cosine: bool,
}

/// How [`MlpTrainer::fit`] went: epochs run, the best epoch (1-based) and
/// its validation loss.
#[derive(Clone, Copy, Debug)]
pub struct Fitted {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val: f64,
}

/// The validation loss became non-finite at `epoch` (1-based).
#[derive(Clone, Copy, Debug)]
pub struct Diverged {
    pub epoch: usize,
    pub val: f64,
}

/// Mean squared error of raw outputs against targets, with its gradient
/// 2(out − y)/count written into `delta` when given.
pub fn mse(out: &[f32], y: &[f32], delta: Option<&mut [f32]>) -> f64 {
    let count = out.len() as f32;
    let mut loss = 0.0f64;
    match delta {
        Some(delta) => {
            for ((d, o), y) in delta.iter_mut().zip(out).zip(y) {
                let r = o - y;
                loss += (r as f64).powi(2);
                *d = 2.0 * r / count;
            }
        }
        None => loss = out.iter().zip(y).map(|(o, y)| ((o - y) as f64).powi(2)).sum(),
    }
    loss / count as f64
}

/// AdamW constants (candle-nn's `ParamsAdamW` defaults but lr and decay).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl AdamW {
    pub fn new(lr: f64, weight_decay: f64) -> AdamW {
        AdamW { lr, weight_decay, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

struct Layer {
    fan_in: usize,
    fan_out: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
    // AdamW moments, weights then bias.
    mw: Vec<f32>,
    vw: Vec<f32>,
    mb: Vec<f32>,
    vb: Vec<f32>,
    /// Activations out of this layer (after ReLU for hidden layers).
    out: Vec<f32>,
    /// Gradient with respect to `out`'s pre-activation.
    delta: Vec<f32>,
}

/// An MLP x ↦ x + out_std · MLP((x − mean)/std) being trained.
pub struct MlpTrainer {
    layers: Vec<Layer>,
    scaling: Scaling,
    /// Standardised input batch.
    z: Vec<f32>,
    batch: usize,
    opt: AdamW,
    step_t: i32,
}

/// C (m×n) = alpha · op(A) op(B) + beta · C on row-major slices, with
/// `ta`/`tb` selecting the transpose of A (stored k×m) or B (stored n×k).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operands sized by construction");
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the strides describe matrices inside the slices checked above.
    unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize, 1) }
}

impl MlpTrainer {
    /// Take over `params` (name, row-major values) as laid out by the candle
    /// network: `layer{i}.weight`, `layer{i}.bias`, …, `out.weight`,
    /// `out.bias`. `sizes` is `[m, hidden…, m]`.
    pub fn new(sizes: &[usize], params: Vec<Vec<f32>>, scaling: Scaling, batch: usize, opt: AdamW) -> MlpTrainer {
        assert_eq!(params.len(), 2 * (sizes.len() - 1), "one weight and one bias per layer");
        let mut params = params.into_iter();
        let layers = sizes
            .windows(2)
            .map(|w| {
                let (fan_in, fan_out) = (w[0], w[1]);
                let (wt, bias) = (params.next().unwrap(), params.next().unwrap());
                assert_eq!((wt.len(), bias.len()), (fan_in * fan_out, fan_out), "parameter shapes follow the sizes");
                Layer {
                    fan_in,
                    fan_out,
                    gw: vec![0.0; wt.len()],
                    gb: vec![0.0; fan_out],
                    mw: vec![0.0; wt.len()],
                    vw: vec![0.0; wt.len()],
                    mb: vec![0.0; fan_out],
                    vb: vec![0.0; fan_out],
                    out: vec![0.0; batch * fan_out],
                    delta: vec![0.0; batch * fan_out],
                    w: wt,
                    b: bias,
                }
            })
            .collect();
        MlpTrainer { layers, scaling, z: vec![0.0; batch * sizes[0]], batch, opt, step_t: 0 }
    }

    /// A trainer starting from an mlp [`super::net::Net`]'s current weights
    /// (its parameters are in the layout [`MlpTrainer::new`] takes).
    pub fn from_net(net: &crate::net::Net, batch: usize, opt: AdamW) -> anyhow::Result<MlpTrainer> {
        let crate::net::Arch::Mlp { hidden } = &net.desc.arch else { anyhow::bail!("the fused step trains mlps only") };
        let m = net.desc.state_size;
        let sizes: Vec<usize> = std::iter::once(m).chain(hidden.iter().copied()).chain([m]).collect();
        let params = net.params.iter().map(|(_, v)| v.as_tensor().flatten_all()?.to_vec1::<f32>()).collect::<candle_core::Result<_>>()?;
        Ok(MlpTrainer::new(&sizes, params, net.desc.scaling, batch, opt))
    }

    /// The current parameters, in the order [`MlpTrainer::new`] took them.
    pub fn params(&self) -> Vec<Vec<f32>> {
        self.layers.iter().flat_map(|l| [l.w.clone(), l.b.clone()]).collect()
    }

    /// Forward pass over the first `rows` rows of `x`; the prediction is
    /// left in the last layer's `out` as the increment `MLP(z)` (unscaled).
    fn forward(&mut self, x: &[f32], rows: usize) {
        let s = self.scaling;
        let (mean, inv_std) = (s.mean as f32, (1.0 / s.std) as f32);
        for (z, x) in self.z.iter_mut().zip(x).take(rows * self.layers[0].fan_in) {
            *z = (x - mean) * inv_std;
        }
        let last = self.layers.len() - 1;
        for i in 0..self.layers.len() {
            let (before, rest) = self.layers.split_at_mut(i);
            let layer = &mut rest[0];
            let input: &[f32] = if i == 0 { &self.z } else { &before[i - 1].out };
            let out = &mut layer.out[..rows * layer.fan_out];
            for row in out.chunks_exact_mut(layer.fan_out) {
                row.copy_from_slice(&layer.b);
            }
            gemm(rows, layer.fan_in, layer.fan_out, input, false, &layer.w, false, 1.0, out);
            if i < last {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }

    /// One AdamW step on the batch (`x`, `y`: `rows × m`, row-major, at most
    /// the batch size rows). Returns the loss before the step: the mean of
    /// ((x + out_std·MLP(z) − y)/loss_scale)².
    pub fn step(&mut self, x: &[f32], y: &[f32], rows: usize, loss_scale: f32) -> f32 {
        let out_std = self.scaling.out_std as f32;
        self.step_with(x, rows, |out, delta| {
            let count = out.len() as f32;
            // d loss / d out = 2 (pred − y) out_std / (scale² · count)
            let grad_scale = 2.0 * out_std / (loss_scale * loss_scale * count);
            let mut loss = 0.0f64;
            for (((d, o), x), y) in delta.iter_mut().zip(out).zip(x).zip(y) {
                let r = x + out_std * o - y;
                loss += ((r / loss_scale) as f64).powi(2);
                *d = r * grad_scale;
            }
            loss / count as f64
        }) as f32
    }

    /// One AdamW step for any loss of the network's raw outputs:
    /// `loss_grad(outputs, delta)` gets MLP(z) for the batch (`rows ×
    /// outputs`, row-major), writes d loss / d output into `delta` (same
    /// layout) and returns the loss, which this returns.
    pub fn step_with(&mut self, x: &[f32], rows: usize, loss_grad: impl FnOnce(&[f32], &mut [f32]) -> f64) -> f64 {
        assert!(rows > 0 && rows <= self.batch, "a batch of 1..={} rows", self.batch);
        self.forward(x, rows);
        let last = self.layers.len() - 1;
        let l = &mut self.layers[last];
        let n = rows * l.fan_out;
        let loss = loss_grad(&l.out[..n], &mut l.delta[..n]);
        self.backward(rows);
        self.update();
        loss
    }

    /// Mini-batch training with early stopping. Every epoch shuffles the
    /// training rows (from `rng`), lets `refresh` renew the training inputs
    /// (e.g. redraw their noise), takes one step per batch of `loss`, then
    /// scores the validation rows; the learning rate and stopping follow
    /// `schedule` ([`early_stopped`]), leaving the best epoch's weights in
    /// place. `loss(out, target, delta)` returns a batch's mean loss and,
    /// given `delta`, its gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn fit<R: Rng>(
        &mut self,
        data: FitData<'_>,
        schedule: Schedule,
        rng: &mut R,
        refresh: impl FnMut(&mut [f32], &mut R),
        loss: impl Fn(&[f32], &[f32], Option<&mut [f32]>) -> f64,
        progress: &mut dyn FnMut(usize, f64, f64),
    ) -> Result<Fitted, Diverged> {
        let n = data.targets.len() / data.target_width;
        let lr = self.opt.lr;
        let best = self.params();
        let mut epochs = FitEpochs { net: self, data, rng, refresh, loss, order: (0..n).collect(), bx: Vec::new(), by: Vec::new(), best };
        early_stopped(&mut epochs, lr, schedule, progress)
    }

    /// Backpropagate `delta` (d loss / d output of the rows the last
    /// [`MlpTrainer::outputs`] call ran, `rows × outputs`) into the
    /// parameters' gradients and, given `input_grad` (`rows × inputs`),
    /// into d loss / d input (overwritten). [`MlpTrainer::apply`] then
    /// takes the step. For losses that are not a function of this network
    /// alone, e.g. the stacked layers of a flow trained jointly.
    pub fn backward_from(&mut self, rows: usize, delta: &[f32], input_grad: Option<&mut [f32]>) {
        let last = self.layers.len() - 1;
        let n = rows * self.layers[last].fan_out;
        self.layers[last].delta[..n].copy_from_slice(&delta[..n]);
        self.backward(rows);
        if let Some(grad) = input_grad {
            // d/dx = (δ₀ W₀ᵀ) / std: the first layer's delta through its weights.
            let l = &self.layers[0];
            let (fi, fo) = (l.fan_in, l.fan_out);
            gemm(rows, fo, fi, &l.delta[..rows * fo], false, &l.w, true, 0.0, &mut grad[..rows * fi]);
            let inv_std = (1.0 / self.scaling.std) as f32;
            if inv_std != 1.0 {
                grad[..rows * fi].iter_mut().for_each(|g| *g *= inv_std);
            }
        }
    }

    /// One AdamW step at learning rate `lr` from the gradients of the last
    /// [`MlpTrainer::backward_from`].
    pub fn apply(&mut self, lr: f64) {
        self.opt.lr = lr;
        self.update();
    }

    /// Put parameters (as [`MlpTrainer::params`] returns them) back.
    pub fn set_params(&mut self, params: &[Vec<f32>]) {
        for (layer, wb) in self.layers.iter_mut().zip(params.chunks_exact(2)) {
            layer.w.copy_from_slice(&wb[0]);
            layer.b.copy_from_slice(&wb[1]);
        }
    }

    /// One AdamW step of a binary classifier (one output, a logit) on the
    /// batch `x` with `labels` in {0, 1}. Returns the mean binary
    /// cross-entropy before the step.
    pub fn step_logistic(&mut self, x: &[f32], labels: &[f32], rows: usize) -> f32 {
        assert_eq!(self.layers.last().map(|l| l.fan_out), Some(1), "a classifier has one output");
        self.step_with(x, rows, |out, delta| {
            let mut loss = 0.0f64;
            for ((d, &logit), &label) in delta.iter_mut().zip(out).zip(labels) {
                // BCE with logits: softplus(s) − label·s; its gradient σ(s) − label.
                let s = logit as f64;
                loss += s.max(0.0) + (-s.abs()).exp().ln_1p() - label as f64 * s;
                *d = ((1.0 / (1.0 + (-s).exp())) as f32 - label) / rows as f32;
            }
            loss / rows as f64
        }) as f32
    }

    /// The network's raw outputs MLP(z) for the first `rows` rows of `x`
    /// (`rows × outputs`, e.g. a classifier's logits).
    pub fn outputs(&mut self, x: &[f32], rows: usize) -> &[f32] {
        assert!(rows > 0 && rows <= self.batch, "a batch of 1..={} rows", self.batch);
        self.forward(x, rows);
        let l = self.layers.last().expect("at least one layer");
        &l.out[..rows * l.fan_out]
    }

    /// Gradients of every layer from the last layer's `delta`.
    fn backward(&mut self, rows: usize) {
        for i in (0..self.layers.len()).rev() {
            let (before, rest) = self.layers.split_at_mut(i);
            let layer = &mut rest[0];
            let (fi, fo) = (layer.fan_in, layer.fan_out);
            let delta = &layer.delta[..rows * fo];
            let input: &[f32] = if i == 0 { &self.z[..rows * fi] } else { &before[i - 1].out[..rows * fi] };
            // gW = inputᵀ δ, gb = Σ_rows δ
            gemm(fi, rows, fo, input, true, delta, false, 0.0, &mut layer.gw);
            layer.gb.iter_mut().for_each(|g| *g = 0.0);
            for row in delta.chunks_exact(fo) {
                layer.gb.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                // δ_prev = (δ Wᵀ) ⊙ [out_prev > 0]
                let prev = &mut before[i - 1];
                let pd = &mut prev.delta[..rows * fi];
                gemm(rows, fo, fi, delta, false, &layer.w, true, 0.0, pd);
                pd.iter_mut().zip(&prev.out).for_each(|(d, a)| *d = if *a > 0.0 { *d } else { 0.0 });
            }
        }
    }

    /// candle-nn's AdamW: θ ← θ(1 − lr·λ) − lr · m̂ / (√v̂ + ε).
    fn update(&mut self) {
        self.step_t += 1;
        let o = self.opt;
        let (b1, b2) = (o.beta1 as f32, o.beta2 as f32);
        let scale_m = (1.0 / (1.0 - o.beta1.powi(self.step_t))) as f32;
        let scale_v = (1.0 / (1.0 - o.beta2.powi(self.step_t))) as f32;
        let (lr, decay, eps) = (o.lr as f32, (1.0 - o.lr * o.weight_decay) as f32, o.eps as f32);
        let adam = |theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((t, g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *t = *t * decay - lr * ((*m * scale_m) / ((*v * scale_v).sqrt() + eps));
            }
        };
        for l in &mut self.layers {
            adam(&mut l.w, &l.gw, &mut l.mw, &mut l.vw);
            adam(&mut l.b, &l.gb, &mut l.mb, &mut l.vb);
        }
    }
}

/// What [`early_stopped`] trains, one epoch at a time.
pub trait Epochs {
    /// One epoch at learning rate `lr`: the mean training loss and the
    /// validation loss.
    fn epoch(&mut self, lr: f64) -> (f64, f64);
    /// Keep the current weights as the best so far.
    fn keep(&mut self);
    /// Put the kept weights back.
    fn restore(&mut self);
}

/// Epochs under `schedule` from learning rate `lr`: a half-cosine anneal
/// (with `schedule.cosine`), halving on plateaus, stopping after
/// `schedule.patience` epochs without a better validation loss; the best
/// epoch's weights are left in place. `progress(epoch, train, val)`
/// follows every epoch; a non-finite validation loss ends it with
/// [`Diverged`].
pub fn early_stopped(e: &mut impl Epochs, lr: f64, schedule: Schedule, progress: &mut dyn FnMut(usize, f64, f64)) -> Result<Fitted, Diverged> {
    let Schedule { max_epochs, patience, halve_after, cosine } = schedule;
    let (mut best, mut best_epoch) = (f64::INFINITY, 0);
    let (mut epochs, mut last_halving, mut base_lr) = (0, 0, lr);
    for epoch in 0..max_epochs {
        epochs = epoch + 1;
        let lr = if cosine { base_lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / max_epochs as f64).cos()) } else { base_lr };
        let (train, val) = e.epoch(lr);
        if !val.is_finite() {
            return Err(Diverged { epoch: epochs, val });
        }
        progress(epoch, train, val);
        if val < best {
            (best, best_epoch) = (val, epoch);
            e.keep();
        } else if epoch - best_epoch >= patience {
            break;
        } else if halve_after > 0 && epoch - best_epoch.max(last_halving) >= halve_after {
            base_lr *= 0.5;
            last_halving = epoch;
        }
    }
    e.restore();
    Ok(Fitted { epochs, best_epoch: best_epoch + 1, best_val: best })
}

/// [`MlpTrainer::fit`]'s epochs.
struct FitEpochs<'a, 'd, R, F, L> {
    net: &'a mut MlpTrainer,
    data: FitData<'d>,
    rng: &'a mut R,
    refresh: F,
    loss: L,
    order: Vec<usize>,
    bx: Vec<f32>,
    by: Vec<f32>,
    best: Vec<Vec<f32>>,
}

impl<R: Rng, F: FnMut(&mut [f32], &mut R), L: Fn(&[f32], &[f32], Option<&mut [f32]>) -> f64> Epochs for FitEpochs<'_, '_, R, F, L> {
    fn epoch(&mut self, lr: f64) -> (f64, f64) {
        let FitData { inputs, targets, val_inputs, val_targets, input_width: p, target_width: t } = &mut self.data;
        let (p, t) = (*p, *t);
        let (n, n_val) = (targets.len() / t, val_targets.len() / t);
        let net = &mut *self.net;
        net.opt.lr = lr;
        self.order.shuffle(self.rng);
        (self.refresh)(inputs, self.rng);
        let mut total = 0.0;
        for rows in self.order.chunks(net.batch) {
            self.bx.clear();
            self.by.clear();
            for &r in rows {
                self.bx.extend_from_slice(&inputs[r * p..(r + 1) * p]);
                self.by.extend_from_slice(&targets[r * t..(r + 1) * t]);
            }
            let (bx, by, loss) = (&self.bx, &self.by, &self.loss);
            total += net.step_with(bx, rows.len(), |out, delta| loss(out, by, Some(delta))) * rows.len() as f64;
        }
        let mut val = 0.0;
        for (x, y) in val_inputs.chunks(net.batch * p).zip(val_targets.chunks(net.batch * t)) {
            let rows = x.len() / p;
            val += (self.loss)(net.outputs(x, rows), y, None) * rows as f64;
        }
        (total / n as f64, val / n_val as f64)
    }
    fn keep(&mut self) {
        self.best = self.net.params();
    }
    fn restore(&mut self) {
        self.net.set_params(&self.best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// With `cosine`, epoch e trains at lr · ½(1 + cos(π e / max_epochs)):
    /// after four of four epochs the last one ran at lr · ½(1 + cos(3π/4)).
    /// Without it (and no halving) the rate is left alone.
    #[test]
    fn cosine_schedule_anneals_the_learning_rate() {
        for cosine in [true, false] {
            let sizes = [2, 3, 1];
            let params = vec![vec![0.1; 6], vec![0.0; 3], vec![0.2; 3], vec![0.0; 1]];
            let mut net = MlpTrainer::new(&sizes, params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, 4, AdamW::new(1e-2, 0.0));
            let mut inputs: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
            let targets: Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
            let data = FitData { inputs: &mut inputs, targets: &targets, val_inputs: &[0.5, 0.5], val_targets: &[0.5], input_width: 2, target_width: 1 };
            let schedule = Schedule { max_epochs: 4, patience: 100, halve_after: 0, cosine };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let fitted = net.fit(data, schedule, &mut rng, |_, _| {}, mse, &mut |_, _, _| {}).unwrap();
            assert_eq!(fitted.epochs, 4);
            let want = if cosine { 1e-2 * 0.5 * (1.0 + (3.0 * std::f64::consts::PI / 4.0).cos()) } else { 1e-2 };
            assert!((net.opt.lr - want).abs() < 1e-12, "cosine {cosine}: lr {} against {want}", net.opt.lr);
        }
    }

    /// The input gradient of [`MlpTrainer::backward_from`] (what joins the
    /// stacked layers of a flow) against candle's autograd through the
    /// same ReLU network, with standardised inputs, for a loss Σ c ⊙ out.
    #[test]
    fn the_input_gradient_equals_candle_autograd() {
        use candle_core::{Device, Tensor, Var};
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (sizes, rows) = ([5usize, 7, 6, 3], 4);
        let params: Vec<Vec<f32>> =
            sizes.windows(2).flat_map(|w| [w[0] * w[1], w[1]]).map(|len| (0..len).map(|_| rng.random_range(-1.0..1.0f32)).collect()).collect();
        let scaling = Scaling { mean: 0.3, std: 2.0, out_std: 1.0 };
        let mut net = MlpTrainer::new(&sizes, params.clone(), scaling, rows, AdamW::new(1e-3, 0.0));
        let x: Vec<f32> = (0..rows * 5).map(|_| rng.random_range(-2.0..2.0f32)).collect();
        let c: Vec<f32> = (0..rows * 3).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        net.outputs(&x, rows);
        let mut grad = vec![0.0f32; rows * 5];
        net.backward_from(rows, &c, Some(&mut grad));

        let dev = Device::Cpu;
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (rows, 5), &dev).unwrap()).unwrap();
        let mut h = ((xv.as_tensor() - 0.3).unwrap() / 2.0).unwrap();
        for (i, w) in sizes.windows(2).enumerate() {
            let wt = Tensor::from_vec(params[2 * i].clone(), (w[0], w[1]), &dev).unwrap();
            let b = Tensor::from_vec(params[2 * i + 1].clone(), (1, w[1]), &dev).unwrap();
            h = h.matmul(&wt).unwrap().broadcast_add(&b).unwrap();
            if i + 2 < sizes.len() {
                h = h.relu().unwrap();
            }
        }
        let loss = (h * Tensor::from_vec(c, (rows, 3), &dev).unwrap()).unwrap().sum_all().unwrap();
        let want: Vec<f32> = loss.backward().unwrap().get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(want.iter().any(|g| g.abs() > 0.1), "a gradient worth checking");
        for (i, (g, w)) in grad.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "input {i}: {g} against candle's {w}");
        }
    }
}
