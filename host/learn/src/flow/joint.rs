//! Stacked flow layers trained jointly: one loss, the whole flow's
//! negative log-likelihood
//!
//!   −log q(z | x) = ½|z_L|² + (d/2) log 2π − Σ_l Σ_k log |∂z_{l+1,k}/∂z_{l,k}|,
//!
//! backpropagated through every layer, as the MAF and NSF papers train
//! (Papamakarios et al. 2017; Durkan et al. 2019). Each conditioner is
//! still its own fused MLP ([`MlpTrainer`]); what joins them is the
//! gradient with respect to each layer's input z_l, which flows
//!
//! - through the factor itself (∂u/∂z, ∂log g'/∂z: [`factor_vjp`]), and
//! - through every later conditioner of the same layer that reads z_{l,k}
//!   ([`MlpTrainer::backward_from`]'s input gradient).
//!
//! Positions are processed in reverse within a layer, so a position's
//! gradient is complete before its own factor passes it on. All
//! conditioners take one AdamW step per batch at one learning rate.

use super::{factor_vjp, NsfDescription, HALF_LOG_2PI};
use crate::fused::{AdamW, Epochs, MlpTrainer};
use crate::mdn::add_noise;
use crate::net::Scaling;
use rand::seq::SliceRandom;

/// Standardised training and validation rows: x (`n × p`), z (`n × d`).
pub(super) struct Rows<'a> {
    pub clean_x: &'a [f32],
    pub z: &'a [f32],
    pub val_x: &'a [f32],
    pub val_z: &'a [f32],
    /// Observation noise sd per x column, standardised; redrawn every epoch.
    pub noise: Option<&'a [f32]>,
}

/// The whole flow being trained.
pub(super) struct Joint<'a> {
    desc: &'a NsfDescription,
    /// `nets[layer][k]`: position k's conditioner of that layer.
    nets: Vec<Vec<MlpTrainer>>,
    rows: Rows<'a>,
    /// This epoch's x: `clean_x` plus fresh noise.
    x: Vec<f32>,
    rng: rand_chacha::ChaCha8Rng,
    order: Vec<usize>,
    batch: usize,
    best: Vec<Vec<Vec<Vec<f32>>>>,
    pass: Pass,
    /// Threads a layer's conditioners are spread over.
    workers: usize,
}

/// A batch's buffers, kept between batches: each layer's input z_l and
/// each conditioner's [`Slot`].
#[derive(Default)]
struct Pass {
    bx: Vec<f32>,
    zs: Vec<Vec<f32>>,
    /// `slots[layer][k]`.
    slots: Vec<Vec<Slot>>,
    /// d loss / d z₀ of the last step (`rows × d`): what a test checks
    /// against finite differences.
    grad_z0: Vec<f64>,
}

/// One conditioner's part of a batch.
#[derive(Default)]
struct Slot {
    /// Rows of (x, z_<k): `rows × (p + k)`.
    input: Vec<f32>,
    /// The conditioner's raw outputs, kept for the backward pass.
    raw: Vec<f32>,
    raw64: Vec<f64>,
    /// The factor's output u per row, and Σ over rows of log g'.
    u: Vec<f32>,
    log_det: f64,
    /// d loss / d raw, d loss / d z_k (through the factor) and d loss /
    /// d input (through the conditioner).
    delta: Vec<f32>,
    dz: Vec<f64>,
    input_grad: Vec<f32>,
}

/// Run `f` on every (position, conditioner, slot) of a layer, spread over
/// `workers` threads ([`crate::threads::round_robin`]). Each item is its
/// own: what the items produce is merged afterwards in position order, so
/// the result does not depend on `workers`.
fn across(items: Vec<(usize, &mut MlpTrainer, &mut Slot)>, workers: usize, f: &(dyn Fn(usize, &mut MlpTrainer, &mut Slot) + Sync)) {
    let each = |(k, net, slot): (usize, &mut MlpTrainer, &mut Slot)| f(k, net, slot);
    crate::threads::round_robin(items, workers, each, &each);
}

impl<'a> Joint<'a> {
    /// Trainers from the flow's initial conditioners (`nets[layer][k]`:
    /// per MLP layer, row-major weights and bias).
    pub fn new(desc: &'a NsfDescription, nets: &[Vec<super::Layers>], rows: Rows<'a>, batch: usize, lr: f64, seed: u64) -> Joint<'a> {
        use rand::SeedableRng;
        let trainers: Vec<Vec<MlpTrainer>> = nets
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        let params = c.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
                        MlpTrainer::new(&desc.sizes(k), params, Scaling { mean: 0.0, std: 1.0, out_std: 1.0 }, batch, AdamW::new(lr, 0.0))
                    })
                    .collect()
            })
            .collect();
        let best = trainers.iter().map(|l| l.iter().map(MlpTrainer::params).collect()).collect();
        let n = rows.z.len() / desc.parameters.len();
        Joint {
            desc,
            nets: trainers,
            x: rows.clean_x.to_vec(),
            rows,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            order: (0..n).collect(),
            batch,
            best,
            pass: Pass::default(),
            workers: crate::threads::workers_for(desc.parameters.len()),
        }
    }

    /// The trained conditioners, in the layout of `Nsf::nets`.
    pub fn into_nets(self) -> Vec<Vec<super::Layers>> {
        self.nets.iter().map(|l| l.iter().map(|c| c.params().chunks_exact(2).map(|wb| (wb[0].clone(), wb[1].clone())).collect()).collect()).collect()
    }

    /// The mean NLL of `rows` rows (x: `rows × p`, z: `rows × d`) through
    /// every layer; with `lr`, backpropagate it and take a step. Within a
    /// layer the conditioners run in parallel ([`across`]).
    fn batch(&mut self, x: &[f32], z: &[f32], rows: usize, lr: Option<f64>) -> f64 {
        let d = self.desc;
        let (dim, p, per) = (d.parameters.len(), d.data_size, d.outputs());
        let (layers, workers) = (d.layers, self.workers);
        let pass = &mut self.pass;
        pass.zs.resize_with(layers + 1, Vec::new);
        pass.slots.resize_with(layers, || (0..dim).map(|_| Slot::default()).collect());
        pass.zs[0].clear();
        pass.zs[0].extend_from_slice(z);
        let mut log_det = 0.0f64;
        for l in 0..layers {
            let (before, after) = pass.zs.split_at_mut(l + 1);
            let (z_l, z_next) = (&before[l], &mut after[0]);
            let items = self.nets[l].iter_mut().zip(pass.slots[l].iter_mut()).enumerate().map(|(k, (n, s))| (k, n, s)).collect();
            across(items, workers, &|k, net, slot| {
                let at = d.at(l, k);
                slot.input.clear();
                for r in 0..rows {
                    slot.input.extend_from_slice(&x[r * p..(r + 1) * p]);
                    slot.input.extend((0..k).map(|j| z_l[r * dim + d.at(l, j)]));
                }
                slot.raw.clear();
                slot.raw.extend_from_slice(net.outputs(&slot.input, rows));
                slot.u.clear();
                slot.log_det = 0.0;
                for r in 0..rows {
                    slot.raw64.clear();
                    slot.raw64.extend(slot.raw[r * per..(r + 1) * per].iter().map(|v| *v as f64));
                    let (u, ld) = d.map64(z_l[r * dim + at] as f64, &slot.raw64);
                    slot.u.push(u as f32);
                    slot.log_det += ld;
                }
            });
            z_next.clear();
            z_next.resize(rows * dim, 0.0);
            for (k, slot) in pass.slots[l].iter().enumerate() {
                let at = d.at(l, k);
                slot.u.iter().enumerate().for_each(|(r, u)| z_next[r * dim + at] = *u);
                log_det += slot.log_det;
            }
        }
        let z_last = &pass.zs[layers];
        let loss = (z_last.iter().map(|v| 0.5 * (*v as f64).powi(2)).sum::<f64>() - log_det) / rows as f64 + dim as f64 * HALF_LOG_2PI;
        let Some(lr) = lr else { return loss };
        // d loss / d z_L = z_L / rows; then back through the layers.
        let scale = 1.0 / rows as f64;
        let mut g_next: Vec<f64> = z_last.iter().map(|v| *v as f64 * scale).collect();
        for l in (0..layers).rev() {
            let z_l = &pass.zs[l];
            let g_in = &g_next;
            let items = self.nets[l].iter_mut().zip(pass.slots[l].iter_mut()).enumerate().map(|(k, (n, s))| (k, n, s)).collect();
            across(items, workers, &|k, net, slot| {
                let at = d.at(l, k);
                slot.delta.resize(rows * per, 0.0);
                slot.dz.clear();
                for r in 0..rows {
                    slot.raw64.clear();
                    slot.raw64.extend(slot.raw[r * per..(r + 1) * per].iter().map(|v| *v as f64));
                    let a = g_in[r * dim + at];
                    let (_, _, dz) =
                        factor_vjp(d.transform, z_l[r * dim + at] as f64, &slot.raw64, d.bound, a, -scale, &mut slot.delta[r * per..(r + 1) * per]);
                    slot.dz.push(dz);
                }
                if k > 0 {
                    slot.input_grad.resize(rows * (p + k), 0.0);
                    net.backward_from(rows, &slot.delta, Some(&mut slot.input_grad));
                } else {
                    net.backward_from(rows, &slot.delta, None);
                }
            });
            // Merge in reverse position order: a position's gradient is its
            // factor's term plus what every later conditioner passes back.
            let mut g = vec![0.0f64; rows * dim];
            for k in (0..dim).rev() {
                let (at, slot, width) = (d.at(l, k), &pass.slots[l][k], p + k);
                for r in 0..rows {
                    g[r * dim + at] += slot.dz[r];
                    for j in 0..k {
                        g[r * dim + d.at(l, j)] += slot.input_grad[r * width + p + j] as f64;
                    }
                }
            }
            g_next = g;
        }
        pass.grad_z0 = g_next;
        self.nets.iter_mut().flatten().for_each(|n| n.apply(lr));
        loss
    }
}

impl Epochs for Joint<'_> {
    fn epoch(&mut self, lr: f64) -> (f64, f64) {
        let (dim, p) = (self.desc.parameters.len(), self.desc.data_size);
        self.order.shuffle(&mut self.rng);
        self.x.copy_from_slice(self.rows.clean_x);
        if let Some(noise) = self.rows.noise {
            add_noise(&mut self.x, p, p, noise, &mut self.rng);
        }
        let (mut bx, mut bz) = (std::mem::take(&mut self.pass.bx), Vec::new());
        let order = std::mem::take(&mut self.order);
        let mut total = 0.0;
        for rows in order.chunks(self.batch) {
            bx.clear();
            bz.clear();
            for &r in rows {
                bx.extend_from_slice(&self.x[r * p..(r + 1) * p]);
                bz.extend_from_slice(&self.rows.z[r * dim..(r + 1) * dim]);
            }
            total += self.batch(&bx, &bz, rows.len(), Some(lr)) * rows.len() as f64;
        }
        let n = order.len();
        (self.order, self.pass.bx) = (order, bx);
        let (val_x, val_z) = (self.rows.val_x, self.rows.val_z);
        let n_val = val_z.len() / dim;
        let mut val = 0.0;
        for (x, z) in val_x.chunks(self.batch * p).zip(val_z.chunks(self.batch * dim)) {
            let rows = z.len() / dim;
            val += self.batch(x, z, rows, None) * rows as f64;
        }
        (total / n as f64, val / n_val as f64)
    }

    fn keep(&mut self) {
        self.best = self.nets.iter().map(|l| l.iter().map(MlpTrainer::params).collect()).collect();
    }

    fn restore(&mut self) {
        for (layer, best) in self.nets.iter_mut().zip(&self.best) {
            for (net, params) in layer.iter_mut().zip(best) {
                net.set_params(params);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::standard_description;
    use super::super::{Nsf, Transform};
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    /// The whole flow's NLL differentiated with respect to its input z₀,
    /// by the backward pass, against central differences of the NLL: this
    /// runs every piece of the chain (each factor's ∂/∂z and ∂/∂raw, each
    /// conditioner's input gradient, across three layers), for splines and
    /// affine maps, on random conditioners far from the identity.
    #[test]
    fn the_backward_pass_is_the_gradient_of_the_flows_likelihood() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        for transform in [Transform::Spline, Transform::Affine] {
            let desc = standard_description(3, 2, vec![6], transform, 3, 5, 3.0);
            let mut flow = Nsf::init(desc, &mut rng).unwrap();
            for layer in flow.nets.iter_mut().flatten().flatten() {
                layer.0.iter_mut().for_each(|w| *w = 0.4 * rng.sample::<f32, _>(StandardNormal));
            }
            let rows = 5;
            let x: Vec<f32> = (0..rows * 2).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
            let z: Vec<f32> = (0..rows * 3).map(|_| 1.5 * rng.sample::<f32, _>(StandardNormal)).collect();
            let none = Rows { clean_x: &x, z: &z, val_x: &x, val_z: &z, noise: None };
            let mut joint = Joint::new(&flow.desc, &flow.nets, none, rows, 0.0, 1);
            // lr = 0: the step leaves the weights as they are.
            let loss = joint.batch(&x, &z, rows, Some(0.0));
            let grad = joint.pass.grad_z0.clone();
            assert_eq!(loss, joint.batch(&x, &z, rows, None), "{transform:?}: a zero step changed the flow");
            for i in 0..z.len() {
                let h = 1e-2f32;
                let (mut up, mut down) = (z.clone(), z.clone());
                up[i] += h;
                down[i] -= h;
                let fd = (joint.batch(&x, &up, rows, None) - joint.batch(&x, &down, rows, None)) / (2.0 * h as f64);
                assert!((fd - grad[i]).abs() < 2e-3 + 2e-2 * fd.abs(), "{transform:?}, z[{i}]: backward {} against finite difference {fd}", grad[i]);
            }
        }
    }

    /// Training steps give the same weights to the bit on one thread and
    /// on three (a layer's conditioners split across them).
    #[test]
    fn the_same_steps_on_one_thread_and_on_three() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let desc = standard_description(4, 3, vec![8, 8], Transform::Spline, 2, 4, 3.0);
        let flow = Nsf::init(desc, &mut rng).unwrap();
        let rows = 64;
        let x: Vec<f32> = (0..rows * 3).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        let z: Vec<f32> = (0..rows * 4).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
        let noise = [0.1f32, 0.2, 0.3];
        let weights = |workers: usize| {
            let rows_ = Rows { clean_x: &x, z: &z, val_x: &x, val_z: &z, noise: Some(&noise) };
            let mut joint = Joint::new(&flow.desc, &flow.nets, rows_, 16, 1e-2, 3);
            joint.workers = workers;
            let fit = (0..3).map(|_| joint.epoch(1e-2)).collect::<Vec<_>>();
            (fit, joint.into_nets())
        };
        let (one, three) = (weights(1), weights(3));
        assert!(one.0.iter().all(|(t, v)| t.is_finite() && v.is_finite()));
        assert_eq!(one, three, "one thread and three differ");
    }
}
