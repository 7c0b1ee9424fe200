//! Step 5's neural spline flow (host/learn/src/flow.rs) on targets with
//! known answers: its density is a density (it integrates to one on a
//! grid), its samples follow its density, and it (the NSF and the
//! jointly trained MAF) recovers a bimodal
//! conditional whose mode weights depend on the observation, where the
//! mixture density network is checked too.

use geohost_da::params::prior::{Prior, PriorSpec};
use geohost_learn::c2st::{c2st, Spec};
use geohost_learn::density::Density;
use geohost_learn::mdn::{Estimator, MdnSpec};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The target: x ~ U(−1, 1); given x, θ is in mode A with probability
/// σ(4x), else in mode B. Mode A is a banana about (1.5, 1.5) (θ₂ bends
/// with θ₁²), mode B a tilted ellipse about (−1.5, −1.5).
fn draw_theta(x: f64, rng: &mut impl Rng) -> [f64; 2] {
    let (e1, e2): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
    if rng.random::<f64>() < 1.0 / (1.0 + (-4.0 * x).exp()) {
        let t1 = 1.5 + 0.5 * e1;
        [t1, 1.5 + 0.2 * e2 + 1.2 * (t1 - 1.5).powi(2) - 0.3]
    } else {
        [-1.5 + 0.4 * e1, -1.5 + 0.3 * e1 + 0.2 * e2]
    }
}

fn training_pairs(n: usize, seed: u64) -> (DMatrix<f64>, DMatrix<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut thetas = DMatrix::zeros(2, n);
    let mut xs = DMatrix::zeros(1, n);
    for j in 0..n {
        let x = rng.random_range(-1.0..1.0);
        let t = draw_theta(x, &mut rng);
        xs[(0, j)] = x;
        thetas[(0, j)] = t[0];
        thetas[(1, j)] = t[1];
    }
    (thetas, xs)
}

/// A prior that only sets the support: uniform on [−6, 6]² (so the flow
/// works through the logit mapping, as for bounded priors in practice).
fn prior() -> Prior {
    let names = vec!["a".to_string(), "b".to_string()];
    let specs: Vec<PriorSpec> = names.iter().map(|n| PriorSpec { name: n.clone(), uniform: Some([-6.0, 6.0]), normal: None, bounds: None }).collect();
    Prior::new(&specs, &names).unwrap()
}

fn exact(x: f64, n: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = DMatrix::zeros(2, n);
    for j in 0..n {
        let t = draw_theta(x, &mut rng);
        out[(0, j)] = t[0];
        out[(1, j)] = t[1];
    }
    out
}

fn train(estimator: Estimator, layers: Option<usize>) -> (Density, f64) {
    let (thetas, xs) = training_pairs(10_000, 1);
    let spec = MdnSpec { estimator, layers, seed: 2, max_epochs: 200, ..MdnSpec::default() };
    let (q, training) = Density::train(&prior(), &thetas, &xs, None, &spec, &mut |_, _, _| {}).unwrap();
    (q, training.seconds)
}

/// The flow's log-density, exponentiated and summed over a 240 × 240 grid
/// of the prior's box, is one; draws from a grid weighted by that density
/// cannot be told apart from the flow's own samples (C2ST); a saved and
/// loaded flow draws the same samples.
#[test]
fn a_flow_density_integrates_to_one_and_its_samples_follow_it() {
    for (estimator, layers) in [(Estimator::Nsf, None), (Estimator::Nsf, Some(2)), (Estimator::Maf, None)] {
        flow_is_a_density(estimator, layers);
    }
}

fn flow_is_a_density(estimator: Estimator, layers: Option<usize>) {
    let (q, _) = train(estimator, layers);
    let (cells, lo, hi) = (240, -6.0, 6.0);
    let h = (hi - lo) / cells as f64;
    let grid = DMatrix::from_fn(2, cells * cells, |i, j| lo + h * (0.5 + if i == 0 { (j % cells) as f64 } else { (j / cells) as f64 }));
    for x in [-0.4, 0.3] {
        let lp = q.log_prob(&[x], &grid).unwrap();
        let mass: f64 = lp.iter().map(|l| l.exp() * h * h).sum();
        assert!((mass - 1.0).abs() < 0.01, "{estimator:?} {layers:?}, x = {x}: the density integrates to {mass}");
        // Grid draws ∝ density, jittered within their cells.
        let weights: Vec<f64> = lp.iter().map(|l| l.exp()).collect();
        let pick = rand::distr::weighted::WeightedIndex::new(&weights).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let from_grid = DMatrix::from_fn(2, 3000, |_, _| 0.0);
        let mut from_grid = from_grid;
        for j in 0..3000 {
            let c = rng.sample(&pick);
            for i in 0..2 {
                from_grid[(i, j)] = grid[(i, c)] + h * (rng.random::<f64>() - 0.5);
            }
        }
        let draws = q.sample(&[x], 3000, &mut rng).unwrap();
        let score = c2st(&from_grid, &draws, Spec::default()).unwrap();
        assert!(score < 0.55, "{estimator:?} {layers:?}, x = {x}: samples against the density-weighted grid: C2ST {score}");
    }
    let bytes = q.to_safetensors(&serde_json::json!({})).unwrap();
    let (back, _) = geohost_learn::refine::Predictor::from_safetensors("round trip", &bytes).unwrap();
    let (a, b) = (q.sample(&[0.2], 40, &mut ChaCha8Rng::seed_from_u64(1)).unwrap(), back.first.sample(&[0.2], 40, &mut ChaCha8Rng::seed_from_u64(1)).unwrap());
    assert_eq!(a, b, "a loaded flow draws the same samples");
    assert!(back.first.as_mdn("export").err().unwrap().to_string().contains("this one is a flow"));
}

/// Every estimator on the bimodal, bent conditional at three observations
/// (mode weights 0.12, 0.5 and 0.88): the NSF and the five-layer MAF
/// (layers trained jointly) within C2ST 0.6 of exact draws at each, and
/// the MDN measured on the same pairs. Measured (10,000 pairs): NSF 0.522,
/// 0.499, 0.508; MAF 0.507, 0.543, 0.506 (0.70, 0.70, 0.68 when its layers
/// were fitted one at a time); MDN (5 components) 0.524, 0.492, 0.528 —
/// two modes of this shape are within an MDN's reach too.
#[test]
fn the_flow_recovers_a_bimodal_conditional_whose_weights_follow_the_observation() {
    let (flow, flow_s) = train(Estimator::Nsf, None);
    let (maf, maf_s) = train(Estimator::Maf, None);
    let (mdn, mdn_s) = train(Estimator::Mdn, None);
    let mut report = Vec::new();
    for (k, x) in [-0.5, 0.0, 0.5].into_iter().enumerate() {
        let truth = exact(x, 3000, 100 + k as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let f = c2st(&truth, &flow.sample(&[x], 3000, &mut rng).unwrap(), Spec::default()).unwrap();
        let a = c2st(&truth, &maf.sample(&[x], 3000, &mut rng).unwrap(), Spec::default()).unwrap();
        let m = c2st(&truth, &mdn.sample(&[x], 3000, &mut rng).unwrap(), Spec::default()).unwrap();
        report.push(format!("x = {x}: nsf {f:.3}, maf {a:.3}, mdn {m:.3}"));
        assert!(f < 0.6 && a < 0.6, "flows: {report:?}");
    }
    eprintln!("bimodal conditional C2ST: {report:?}; training {flow_s:.1} s (nsf), {maf_s:.1} s (maf), {mdn_s:.1} s (mdn)");
}
