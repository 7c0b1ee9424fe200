//! The DA numerics checked against independent computations: the ensemble
//! filters against the exact Kalman update on a linear-Gaussian case, the
//! LETKF against the ETKF, the native Lorenz-96 against the textbook
//! tendency, and the helpers against their defining properties.

use crate::ensemble::{split_members, Analysis, Instances, PostProcess};
use crate::team::{Solo, Team};
use crate::{enkf::PertObs, etkf, etkf::Etkf, letkf, linalg};
use geohost_sandbox::model::{Grid, Layout};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// A linear-Gaussian test case: prior mean/covariance, H, diagonal R, y.
struct Case {
    mu: DVector<f64>,
    sqrt_p: DMatrix<f64>,
    h: DMatrix<f64>,
    r: DVector<f64>,
    y: DVector<f64>,
}

fn case() -> Case {
    let m = 6;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let sqrt_p = linalg::randn(m, m, &mut rng) * 0.6 + DMatrix::identity(m, m);
    // Observe variables 0, 2, 4 and the sum of 1 and 5.
    let mut h = DMatrix::zeros(4, m);
    h[(0, 0)] = 1.0;
    h[(1, 2)] = 1.0;
    h[(2, 4)] = 1.0;
    h[(3, 1)] = 1.0;
    h[(3, 5)] = 1.0;
    Case {
        mu: DVector::from_fn(m, |i, _| i as f64 * 0.5 - 1.0),
        sqrt_p,
        h,
        r: DVector::from_vec(vec![0.5, 1.0, 2.0, 0.8]),
        y: DVector::from_vec(vec![0.3, -1.2, 2.0, 0.7]),
    }
}

fn sample_cov(e: &DMatrix<f64>) -> DMatrix<f64> {
    let (_, a) = linalg::center(e);
    &a * a.transpose() / (e.ncols() - 1) as f64
}

/// The exact Kalman analysis mean and covariance for prior (mu, p).
fn kalman(mu: &DVector<f64>, p: &DMatrix<f64>, c: &Case) -> (DVector<f64>, DMatrix<f64>) {
    let s = &c.h * p * c.h.transpose() + DMatrix::from_diagonal(&c.r);
    let k = p * c.h.transpose() * s.try_inverse().unwrap();
    let mu_a = mu + &k * (&c.y - &c.h * mu);
    let p_a = (DMatrix::identity(mu.len(), mu.len()) - &k * &c.h) * p;
    (mu_a, p_a)
}

fn max_abs(m: &DMatrix<f64>) -> f64 {
    m.iter().fold(0.0, |acc, v| acc.max(v.abs()))
}

#[test]
fn etkf_equals_the_kalman_update_of_its_own_sample_statistics() {
    // With a linear H the ETKF is exact for the ensemble's sample mean and
    // covariance, to rounding, whatever the ensemble size.
    let c = case();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut e = linalg::add_mean(&c.mu, &c.sqrt_p * linalg::randn(6, 50, &mut rng));
    let (mu_f, p_f) = (linalg::mean(&e), sample_cov(&e));
    let eo = &c.h * &e;
    Etkf.analyse(&mut e, &eo, &c.y, &c.r, &mut rng).unwrap();
    let (mu_exact, p_exact) = kalman(&mu_f, &p_f, &c);
    let mean_err = (linalg::mean(&e) - mu_exact).amax();
    let cov_err = max_abs(&(sample_cov(&e) - p_exact));
    assert!(mean_err < 1e-10, "ETKF mean differs from Kalman by {mean_err}");
    assert!(cov_err < 1e-10, "ETKF covariance differs from Kalman by {cov_err}");
}

#[test]
fn etkf_with_a_tight_ensemble_equals_the_kalman_update() {
    // A small prior spread makes the transform matrix close to I, the
    // case the polynomial inverse square root takes (checked below);
    // it must be as exact as the eigendecomposition.
    let c = case();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut e = linalg::add_mean(&c.mu, &c.sqrt_p * linalg::randn(6, 40, &mut rng) * 0.15);
    let (mu_f, p_f) = (linalg::mean(&e), sample_cov(&e));
    let eo = &c.h * &e;
    let (s, _) = crate::etkf::whiten(&eo, &c.y, &c.r);
    let a = DMatrix::identity(40, 40) + s.transpose() * &s / 39.0;
    assert!(linalg::chebyshev_inverse_sqrt(&a, 1.0).is_some(), "this case should take the polynomial branch");
    Etkf.analyse(&mut e, &eo, &c.y, &c.r, &mut rng).unwrap();
    let (mu_exact, p_exact) = kalman(&mu_f, &p_f, &c);
    let mean_err = (linalg::mean(&e) - mu_exact).amax();
    let cov_err = max_abs(&(sample_cov(&e) - &p_exact)) / max_abs(&p_exact);
    assert!(mean_err < 1e-12, "ETKF mean differs from Kalman by {mean_err}");
    assert!(cov_err < 1e-12, "ETKF covariance differs from Kalman by {cov_err} (relative)");
}

#[test]
fn inverse_square_root_agrees_with_the_eigendecomposition() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (scale, expect_polynomial) in [(0.05, true), (0.15, true), (1.0, false), (3.0, false)] {
        let s = linalg::randn(40, 40, &mut rng) * scale;
        let a = DMatrix::identity(40, 40) + s.transpose() * &s / 39.0;
        let ns = linalg::chebyshev_inverse_sqrt(&a, 1.0);
        assert_eq!(ns.is_some(), expect_polynomial, "branch at scale {scale}");
        let x = linalg::spd_inverse_sqrt(&a, 1.0);
        let reference = linalg::eigen_inverse_sqrt(&a);
        let diff = max_abs(&(&x - &reference));
        assert!(diff < 1e-13, "scale {scale}: differs from the eigendecomposition by {diff}");
        let identity_err = max_abs(&(&x * &a * &x - DMatrix::identity(40, 40)));
        assert!(identity_err < 1e-13, "scale {scale}: X A X differs from I by {identity_err}");
        let symmetry_err = max_abs(&(&x - x.transpose()));
        assert!(symmetry_err < 1e-14, "scale {scale}: not symmetric by {symmetry_err}");
    }
    // Bounds that do not hold (a negative eigenvalue, NaN) are not trusted.
    let mut bad = DMatrix::identity(3, 3);
    bad[(0, 0)] = f64::NAN;
    assert!(linalg::chebyshev_inverse_sqrt(&bad, 1.0).is_none());
}

/// The series applied to vectors (Clenshaw, what the LETKF's local
/// domains use) is the formed inverse square root's product with them,
/// and the transform applied to a few anomaly rows is `transform`'s
/// a T and a w, at ensemble sizes the polynomial and the
/// eigendecomposition each take.
#[test]
fn the_transform_applied_to_rows_is_the_formed_transform() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (n, scale) in [(20, 0.1), (20, 0.4), (25, 0.3), (45, 0.2), (8, 0.3), (40, 3.0)] {
        let s = linalg::randn(15, n, &mut rng) * scale;
        let a = DMatrix::identity(n, n) + s.transpose() * &s / (n - 1) as f64;
        let b = linalg::randn(n, 3, &mut rng);
        if let Some(series) = linalg::inverse_sqrt_series(&a, 1.0) {
            let mut applied = b.clone();
            linalg::apply_inverse_sqrt(&a, &series, applied.as_mut_slice(), &mut Default::default());
            let diff = max_abs(&(&applied - linalg::eigen_inverse_sqrt(&a) * &b));
            assert!(diff < 1e-13, "N = {n}, scale {scale}: A^(-1/2) b differs by {diff}");
        } else {
            assert!(n < 12 || scale > 1.0, "N = {n}, scale {scale}: expected a series");
        }
        let dy = linalg::randn(15, 1, &mut rng).column(0).into_owned();
        let rows = linalg::randn(2, n, &mut rng);
        let (w, t) = etkf::transform(&s, &dy);
        let (mut update, mut dmu) = (DMatrix::zeros(2, n), DMatrix::zeros(2, 1));
        etkf::apply_transform_into(
            &linalg::padded_transpose(&s),
            dy.as_slice(),
            &rows.as_view(),
            &mut Default::default(),
            &mut update.as_view_mut(),
            &mut dmu.as_view_mut(),
        );
        let update_err = max_abs(&(&update - &rows * &t));
        let mean_err = (dmu.column(0) - &rows * &w).amax();
        assert!(update_err < 1e-13 && mean_err < 1e-13, "N = {n}, scale {scale}: a T by {update_err}, a w by {mean_err}");
    }
}

#[test]
fn stochastic_enkf_matches_the_kalman_update_for_a_large_ensemble() {
    // PertObs is exact only in expectation: with N = 40 000 members the
    // sampling error of the mean is ~ sd/√N ≈ 0.005 and of the covariance
    // a few percent; tolerances are set at several standard errors.
    let c = case();
    let n = 40_000;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut e = linalg::add_mean(&c.mu, &c.sqrt_p * linalg::randn(6, n, &mut rng));
    let (mu_f, p_f) = (linalg::mean(&e), sample_cov(&e));
    let eo = &c.h * &e;
    PertObs.analyse(&mut e, &eo, &c.y, &c.r, &mut rng).unwrap();
    let (mu_exact, p_exact) = kalman(&mu_f, &p_f, &c);
    let mean_err = (linalg::mean(&e) - &mu_exact).amax();
    let cov_err = max_abs(&(sample_cov(&e) - &p_exact)) / max_abs(&p_exact);
    assert!(mean_err < 0.03, "EnKF mean differs from Kalman by {mean_err}");
    assert!(cov_err < 0.05, "EnKF covariance differs from Kalman by {:.1}%", cov_err * 100.0);
}

#[test]
fn letkf_with_infinite_radius_equals_etkf() {
    let m = 40;
    let n = 20;
    let grid = Grid { points: m, periodic: true };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let e0 = linalg::randn(m, n, &mut rng);
    let h = DMatrix::<f64>::identity(m, m);
    let y = linalg::randn(m, 1, &mut rng).column(0).into_owned();
    let r = DVector::from_element(m, 1.0);
    let locations: Vec<f64> = (0..m).map(|i| i as f64).collect();

    let mut e_etkf = e0.clone();
    Etkf.analyse(&mut e_etkf, &(&h * &e0), &y, &r, &mut rng).unwrap();
    let mut e_letkf = e0.clone();
    letkf::Letkf::new(Layout::of_grid(grid), &locations, f64::INFINITY, 2).analyse(&mut e_letkf, &(&h * &e0), &y, &r, &mut rng).unwrap();
    let diff = max_abs(&(e_etkf - e_letkf));
    assert!(diff < 1e-10, "LETKF(∞) differs from ETKF by {diff}");

    // A finite radius does localise: the result differs.
    let mut e_local = e0.clone();
    letkf::Letkf::new(Layout::of_grid(grid), &locations, 4.0, 2).analyse(&mut e_local, &(&h * &e0), &y, &r, &mut rng).unwrap();
    let mut e_global = e0.clone();
    Etkf.analyse(&mut e_global, &(&h * &e0), &y, &r, &mut rng).unwrap();
    assert!(max_abs(&(e_global - e_local)) > 1e-3);
}

/// The local analyses split over threads give the same bits as on one
/// (400 points in 200 domains: enough for three threads to share).
#[test]
fn letkf_on_threads_is_the_same_to_the_bit() {
    let (m, n) = (400, 20);
    let grid = Grid { points: m, periodic: true };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let e0 = linalg::randn(m, n, &mut rng);
    // Every other point observed.
    let observed: Vec<usize> = (0..m).step_by(2).collect();
    let eo = DMatrix::from_fn(observed.len(), n, |j, k| e0[(observed[j], k)]);
    let y = linalg::randn(observed.len(), 1, &mut rng).column(0).into_owned();
    let r = DVector::from_element(observed.len(), 1.0);
    let locations: Vec<f64> = observed.iter().map(|&i| i as f64).collect();
    let analysed = |threads: usize| {
        let mut e = e0.clone();
        letkf::Letkf::new(Layout::of_grid(grid), &locations, 4.0, 2)
            .with_threads(threads)
            .analyse(&mut e, &eo, &y, &r, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        e
    };
    let one = analysed(1);
    assert!(max_abs(&(&one - &e0)) > 1e-3, "the analysis changes the ensemble");
    // Against a direct transcription: every domain scanning every
    // observation (what the spatial index replaces), across the wrap too.
    let mut direct = e0.clone();
    let (mu, a) = linalg::center(&e0);
    let (s, dy) = etkf::whiten(&eo, &y, &r);
    for start in (0..m).step_by(2) {
        let centre = start as f64 + 0.5;
        let near: Vec<(usize, f64)> = (0..locations.len())
            .filter_map(|j| {
                let taper = letkf::gaspari_cohn(grid.distance(centre, locations[j]), 1.82 * 4.0);
                (taper > 1e-3).then_some((j, taper.sqrt()))
            })
            .collect();
        let s_loc = DMatrix::from_fn(near.len(), n, |jl, k| s[(near[jl].0, k)] * near[jl].1);
        let dy_loc = DVector::from_fn(near.len(), |jl, _| dy[near[jl].0] * near[jl].1);
        let a_loc = a.select_rows(&[start, start + 1]);
        // The transform applied to the domain's rows, as the LETKF does
        // (checked against the formed transform in
        // `the_transform_applied_to_rows_is_the_formed_transform`).
        let (mut update, mut dmu) = (DMatrix::zeros(2, n), DMatrix::zeros(2, 1));
        etkf::apply_transform_into(
            &linalg::padded_transpose(&s_loc),
            dy_loc.as_slice(),
            &a_loc.as_view(),
            &mut Default::default(),
            &mut update.as_view_mut(),
            &mut dmu.as_view_mut(),
        );
        for il in 0..2 {
            for k in 0..n {
                direct[(start + il, k)] = mu[start + il] + dmu[il] + update[(il, k)];
            }
        }
    }
    assert_eq!(one, direct, "the same as scanning every observation");
    for threads in [2, 3] {
        assert_eq!(analysed(threads), one, "{threads} threads");
    }
}

/// A 2-D case: a `rows × cols` Cartesian grid, an ensemble on it and
/// observations of every third point with their (y, x) coordinates.
struct MapCase {
    layout: Layout,
    e0: DMatrix<f64>,
    eo: DMatrix<f64>,
    y: DVector<f64>,
    r: DVector<f64>,
    coordinates: Vec<f64>,
    observed: Vec<usize>,
}

fn map_case(rows: usize, cols: usize, n: usize) -> MapCase {
    let layout = Layout::cartesian(&["y", "x"], &[rows, cols]);
    let m = rows * cols;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let e0 = linalg::randn(m, n, &mut rng);
    let observed: Vec<usize> = (0..m).step_by(3).collect();
    let eo = DMatrix::from_fn(observed.len(), n, |j, k| e0[(observed[j], k)]);
    let y = linalg::randn(observed.len(), 1, &mut rng).column(0).into_owned();
    let r = DVector::from_element(observed.len(), 1.0);
    let coordinates = observed.iter().flat_map(|&i| [(i / cols) as f64, (i % cols) as f64]).collect();
    MapCase { layout, e0, eo, y, r, coordinates, observed }
}

#[test]
fn letkf_on_a_map_with_infinite_radius_equals_etkf() {
    // 9 × 7: odd sides, so the last 2 × 2 batches of each axis are short.
    let c = map_case(9, 7, 12);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut e_etkf = c.e0.clone();
    Etkf.analyse(&mut e_etkf, &c.eo, &c.y, &c.r, &mut rng).unwrap();
    let mut e_letkf = c.e0.clone();
    letkf::Letkf::new(c.layout.clone(), &c.coordinates, f64::INFINITY, 2).analyse(&mut e_letkf, &c.eo, &c.y, &c.r, &mut rng).unwrap();
    let diff = max_abs(&(e_etkf - e_letkf));
    assert!(diff < 1e-10, "LETKF(∞) on a map differs from ETKF by {diff}");
}

/// On a map, the LETKF's batches (2 × 2 squares) and its search by the
/// first coordinate give exactly what a direct transcription gives: every
/// square scanning every observation with the Euclidean distance from its
/// centre; and the result is the same on several threads.
#[test]
fn letkf_on_a_map_equals_a_direct_scan_of_every_observation() {
    let (rows, cols, n, loc_rad) = (21, 26, 10, 2.0);
    let c = map_case(rows, cols, n);
    let analysed = |threads: usize| {
        let mut e = c.e0.clone();
        letkf::Letkf::new(c.layout.clone(), &c.coordinates, loc_rad, 2)
            .with_threads(threads)
            .analyse(&mut e, &c.eo, &c.y, &c.r, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        e
    };
    let one = analysed(1);
    let mut direct = c.e0.clone();
    let (mu, a) = linalg::center(&c.e0);
    let (s, dy) = etkf::whiten(&c.eo, &c.y, &c.r);
    let mut batches = 0;
    for by in (0..rows).step_by(2) {
        for bx in (0..cols).step_by(2) {
            let points: Vec<usize> = (by..(by + 2).min(rows)).flat_map(|y| (bx..(bx + 2).min(cols)).map(move |x| y * cols + x)).collect();
            let cy = points.iter().map(|&i| (i / cols) as f64).sum::<f64>() / points.len() as f64;
            let cx = points.iter().map(|&i| (i % cols) as f64).sum::<f64>() / points.len() as f64;
            let near: Vec<(usize, f64)> = (0..c.observed.len())
                .filter_map(|j| {
                    let (oy, ox) = (c.coordinates[2 * j], c.coordinates[2 * j + 1]);
                    let d = ((cy - oy).powi(2) + (cx - ox).powi(2)).sqrt();
                    let taper = letkf::gaspari_cohn(d, 1.82 * loc_rad);
                    (taper > 1e-3).then_some((j, taper.sqrt()))
                })
                .collect();
            batches += 1;
            if near.is_empty() {
                continue;
            }
            let s_loc = DMatrix::from_fn(near.len(), n, |jl, k| s[(near[jl].0, k)] * near[jl].1);
            let dy_loc = DVector::from_fn(near.len(), |jl, _| dy[near[jl].0] * near[jl].1);
            let (w, t) = etkf::transform(&s_loc, &dy_loc);
            let a_loc = a.select_rows(&points);
            let (update, dmu) = (&a_loc * t, &a_loc * w);
            for (il, &i) in points.iter().enumerate() {
                for k in 0..n {
                    direct[(i, k)] = mu[i] + dmu[il] + update[(il, k)];
                }
            }
        }
    }
    assert_eq!(batches, 11 * 13);
    assert!(max_abs(&(&one - &c.e0)) > 1e-3, "the analysis changes the ensemble");
    assert_eq!(one, direct, "the same as scanning every observation");
    // 143 batches: two threads get work only from 128 on.
    assert_eq!(analysed(2), one, "2 threads");
}

/// Observations that move between analyses are relocated: the analysis
/// with coordinates given afterwards equals a fresh setup with them.
#[test]
fn letkf_follows_observations_that_move() {
    let c = map_case(10, 10, 8);
    let moved: Vec<f64> = c.coordinates.chunks(2).flat_map(|p| [p[0], (p[1] + 3.0) % 10.0]).collect();
    let mut relocated = letkf::Letkf::new(c.layout.clone(), &c.coordinates, 2.0, 2);
    relocated.observe_at(&moved);
    let (mut a, mut b) = (c.e0.clone(), c.e0.clone());
    relocated.analyse(&mut a, &c.eo, &c.y, &c.r, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    letkf::Letkf::new(c.layout.clone(), &moved, 2.0, 2).analyse(&mut b, &c.eo, &c.y, &c.r, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert_eq!(a, b);
    let mut unmoved = c.e0.clone();
    letkf::Letkf::new(c.layout, &c.coordinates, 2.0, 2).analyse(&mut unmoved, &c.eo, &c.y, &c.r, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert!(max_abs(&(a - unmoved)) > 1e-6, "moving the observations changes the analysis");
}

/// Distances on the layouts: periodic wrap, and the great circle (a
/// quarter meridian and a quarter of the equator are both πR/2).
#[test]
fn layout_distances_wrap_and_follow_the_sphere() {
    let ring = Layout::of_grid(Grid { points: 40, periodic: true });
    assert_eq!(ring.distance(&[1.0], &[39.0]), 2.0);
    assert_eq!(ring.distance(&[3.5], &[1.0]), 2.5);
    let mut torus = Layout::cartesian(&["y", "x"], &[10, 10]);
    torus.axes[1].period = Some(10.0);
    assert!((torus.distance(&[0.0, 0.0], &[3.0, 9.0]) - 10f64.sqrt()).abs() < 1e-12);
    let r = 6371.0;
    let globe = Layout {
        axes: vec![
            geohost_sandbox::model::Axis { name: "lat".into(), coordinates: vec![-45.0, 0.0, 45.0], period: None },
            geohost_sandbox::model::Axis { name: "lon".into(), coordinates: vec![0.0, 90.0, 180.0, 270.0], period: Some(360.0) },
        ],
        metric: geohost_sandbox::model::Metric::GreatCircle { radius: r },
        units: "km".into(),
    };
    globe.check(12).unwrap();
    let quarter = std::f64::consts::FRAC_PI_2 * r;
    assert!((globe.distance(&[0.0, 0.0], &[90.0, 0.0]) - quarter).abs() < 1e-9);
    assert!((globe.distance(&[0.0, 0.0], &[0.0, 90.0]) - quarter).abs() < 1e-9);
    assert!((globe.distance(&[0.0, 350.0], &[0.0, 10.0]) - quarter * 20.0 / 90.0).abs() < 1e-9);
    // A latitude difference never exceeds the distance: the search's reach.
    assert!((globe.first_axis_reach(quarter) - 90.0).abs() < 1e-9);
    // And the checks refuse what would mislead the localisation.
    assert!(globe.check(13).unwrap_err().contains("12"));
    let mut bad = globe.clone();
    bad.axes[0].coordinates[0] = -95.0;
    assert!(bad.check(12).unwrap_err().contains("±90"));
    let mut unsorted = Layout::cartesian(&["y"], &[3]);
    unsorted.axes[0].coordinates = vec![0.0, 2.0, 1.0];
    assert!(unsorted.check(3).unwrap_err().contains("strictly increasing"));
}

#[test]
fn gaspari_cohn_has_its_defining_values() {
    let c = 3.0;
    assert_eq!(letkf::gaspari_cohn(0.0, c), 1.0);
    assert!(letkf::gaspari_cohn(2.0 * c, c).abs() < 1e-12);
    assert_eq!(letkf::gaspari_cohn(2.5 * c, c), 0.0);
    // Continuous at the joint r = 1, and equal to 5/24 there (GC 1999).
    let below = letkf::gaspari_cohn(c * (1.0 - 1e-9), c);
    let above = letkf::gaspari_cohn(c * (1.0 + 1e-9), c);
    assert!((below - 5.0 / 24.0).abs() < 1e-8 && (above - 5.0 / 24.0).abs() < 1e-8, "{below} {above}");
    // Monotone decreasing on [0, 2c].
    let values: Vec<f64> = (0..=200).map(|i| letkf::gaspari_cohn(i as f64 * 0.01 * 2.0 * c, c)).collect();
    assert!(values.windows(2).all(|w| w[1] <= w[0] + 1e-15));
}

#[test]
fn rotations_are_orthogonal_and_preserve_the_mean() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for n in [2, 7, 28] {
        let q = linalg::random_mean_preserving_orthogonal(n, &mut rng);
        let ortho = max_abs(&(q.transpose() * &q - DMatrix::identity(n, n)));
        let ones = DVector::from_element(n, 1.0);
        let mean_kept = (&q * &ones - &ones).amax();
        assert!(ortho < 1e-12 && mean_kept < 1e-12, "n={n}: {ortho} {mean_kept}");
    }
    // Post-processing with rotation and inflation keeps the mean and scales
    // the spread exactly by the inflation factor.
    let e = linalg::randn(5, 12, &mut rng);
    let mut e2 = e.clone();
    PostProcess { infl: 1.5, rot: true }.apply(&mut e2, &mut rng);
    assert!((linalg::mean(&e) - linalg::mean(&e2)).amax() < 1e-12);
    let trace = |m: &DMatrix<f64>| sample_cov(m).trace();
    assert!((trace(&e2) / trace(&e) - 2.25).abs() < 1e-10);
}

#[test]
fn native_lorenz96_matches_an_independent_tendency() {
    // The textbook form with explicit modular indexing, against the
    // optimised loop used by the reference model and the plugin.
    use crate::models::lorenz96::Lorenz96;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // Three members back to back: the whole-ensemble loop must not mix
    // them up at their borders.
    let x: Vec<f64> = linalg::randn(120, 1, &mut rng).iter().map(|v| v * 3.0).collect();
    let mut fast = vec![0.0; 120];
    Lorenz96::tendency(8.0, 40, &x, &mut fast);
    for (m, (x, fast)) in x.chunks(40).zip(fast.chunks(40)).enumerate() {
        for i in 0..40 {
            let textbook = (x[(i + 1) % 40] - x[(i + 38) % 40]) * x[(i + 39) % 40] - x[i] + 8.0;
            assert_eq!(fast[i].to_bits(), textbook.to_bits(), "member {m}, variable {i}");
        }
    }
}

/// K ranks as threads of one process (a [`Team`] without MPI), to test
/// what is split over a team: every rank's part is posted, then read by
/// all, with the same agreement on failure as MPI's.
struct ThreadTeam {
    rank: usize,
    size: usize,
    shared: std::sync::Arc<(std::sync::Mutex<Vec<Posted>>, std::sync::Barrier)>,
}

/// A rank's part of one exchange, once posted (its error as text).
type Posted = Option<Result<Vec<f64>, String>>;

impl ThreadTeam {
    fn all(size: usize) -> Vec<ThreadTeam> {
        let shared = std::sync::Arc::new((std::sync::Mutex::new(vec![None; size]), std::sync::Barrier::new(size)));
        (0..size).map(|rank| ThreadTeam { rank, size, shared: shared.clone() }).collect()
    }
}

impl Team for ThreadTeam {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn gather(&self, local: anyhow::Result<Vec<f64>>, counts: &[usize]) -> anyhow::Result<Vec<f64>> {
        if let Ok(local) = &local {
            assert_eq!(local.len(), counts[self.rank]);
        }
        Ok(self.post_and_read(local)?.concat())
    }
    fn exchange(&self, outgoing: anyhow::Result<Vec<f64>>, send: &[usize], receive: &[usize]) -> anyhow::Result<Vec<f64>> {
        // Every rank posts its send counts and all it sends; each takes its
        // part of every post.
        let posted = outgoing.map(|data| {
            assert_eq!(data.len(), send.iter().sum::<usize>());
            send.iter().map(|&c| c as f64).chain(data).collect()
        });
        let posts = self.post_and_read(posted)?;
        Ok(posts
            .iter()
            .enumerate()
            .flat_map(|(from, post)| {
                let (counts, data) = post.split_at(self.size);
                let start: usize = counts[..self.rank].iter().map(|&c| c as usize).sum();
                assert_eq!(counts[self.rank] as usize, receive[from]);
                data[start..start + receive[from]].to_vec()
            })
            .collect())
    }
}

impl ThreadTeam {
    /// Post this rank's part, then read every rank's, with the agreement
    /// on failure of MPI's team.
    fn post_and_read(&self, local: anyhow::Result<Vec<f64>>) -> anyhow::Result<Vec<Vec<f64>>> {
        let (slots, barrier) = &*self.shared;
        let mine = local.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
        slots.lock().unwrap()[self.rank] = Some(mine);
        barrier.wait();
        let parts: Vec<_> = slots.lock().unwrap().iter().map(|p| p.clone().expect("every rank posted")).collect();
        barrier.wait(); // every rank has read before the next round posts
        local?;
        if let Some(failed) = parts.iter().position(|p| p.is_err()) {
            anyhow::bail!("rank {failed} failed");
        }
        Ok(parts.into_iter().map(|p| p.unwrap()).collect())
    }
}

/// Run `work` as every rank of a `size`-rank [`ThreadTeam`]; rank order.
fn on_ranks<T: Send>(size: usize, work: impl Fn(&dyn Team) -> T + Sync) -> Vec<T> {
    let teams = ThreadTeam::all(size);
    std::thread::scope(|scope| {
        let handles: Vec<_> = teams.iter().map(|team| scope.spawn(|| work(team))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The LETKF's local domains split over ranks (2 and 3, so shares are
/// uneven and a rank may have domains without observations) give every
/// rank the one-process analysis, bit for bit.
#[test]
fn letkf_split_over_ranks_is_the_same_to_the_bit() {
    let c = map_case(13, 11, 9);
    let analysed = |team: &dyn Team| {
        let mut e = c.e0.clone();
        letkf::Letkf::new(c.layout.clone(), &c.coordinates, 1.5, 2)
            .with_threads(1)
            .with_team(team)
            .analyse(&mut e, &c.eo, &c.y, &c.r, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        e
    };
    let one = analysed(&Solo);
    assert!(max_abs(&(&one - &c.e0)) > 1e-3, "the analysis changes the ensemble");
    for size in [2, 3] {
        for (rank, e) in on_ranks(size, analysed).into_iter().enumerate() {
            assert!(e == one, "rank {rank} of {size}");
        }
    }
}

/// Observation-operator instances, each observing a share of the
/// members, give the one operator's bits; a failing instance names its
/// members, and a single member uses the first instance alone.
#[test]
fn observations_split_over_instances_are_the_same_to_the_bit() {
    use crate::ensemble::ObsInstances;
    use crate::models::linear::LinearObs;
    use geohost_sandbox::model::{ObsInfo, ObsOperator};
    // H x, one member at a time in a fixed order (nalgebra's product of
    // a whole ensemble is blocked by its shape: not member-wise bits).
    struct MemberWise(LinearObs);
    impl ObsOperator for MemberWise {
        fn info(&self) -> &ObsInfo {
            self.0.info()
        }
        fn observe(&mut self, e: &DMatrix<f64>, _: f64) -> anyhow::Result<DMatrix<f64>> {
            let h = &self.0.h;
            Ok(DMatrix::from_fn(h.nrows(), e.ncols(), |j, k| (0..h.ncols()).map(|i| h[(j, i)] * e[(i, k)].sin()).sum()))
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let e = linalg::randn(30, 7, &mut rng);
    let h = linalg::randn(11, 30, &mut rng);
    let operator = || MemberWise(LinearObs::new(h.clone(), vec![1.0; 11]));
    let one = operator().observe(&e, 0.0).unwrap();
    for count in [1, 2, 3, 8] {
        let operators = (0..count).map(|_| Box::new(operator()) as Box<dyn ObsOperator + Send>).collect();
        let mut instances = ObsInstances::new(operators).unwrap().split_from(Duration::ZERO);
        assert!(instances.observe(&e, 0.0).unwrap() == one, "{count} instances");
        assert!(instances.observe_columns(&e, 2..5, 0.0).unwrap() == one.columns(2, 3), "{count} instances, members 2..5");
    }
    struct Fails(MemberWise);
    impl ObsOperator for Fails {
        fn info(&self) -> &ObsInfo {
            self.0.info()
        }
        fn observe(&mut self, _: &DMatrix<f64>, _: f64) -> anyhow::Result<DMatrix<f64>> {
            anyhow::bail!("no light")
        }
    }
    let mut instances = ObsInstances::new(vec![Box::new(operator()), Box::new(Fails(operator()))]).unwrap().split_from(Duration::ZERO);
    let error = format!("{:#}", instances.observe(&e, 0.0).unwrap_err());
    assert_eq!(error, "members 4..7 (counted from 0) in observation operator instance 2: no light");
    assert!(instances.observe(&e.columns(0, 1).into_owned(), 0.0).unwrap() == one.columns(0, 1), "one member: the first instance alone");
}

/// The forecast split over ranks ([`split_members`]) and over model
/// instances on threads ([`Instances`]) gives the one-call forecast's bits;
/// a failing share names its members.
#[test]
fn forecasts_split_over_ranks_and_instances_are_the_same_to_the_bit() {
    use crate::models::lorenz96::Lorenz96;
    use geohost_sandbox::model::ForwardModel;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let e0 = linalg::randn(40, 7, &mut rng).add_scalar(8.0);
    let mut one = e0.clone();
    let mut model = Lorenz96::new(40, 8.0);
    for _ in 0..10 {
        model.advance(&mut one, 0.0, 0.05).unwrap();
    }
    for size in [2, 3] {
        let results = on_ranks(size, |team| {
            let mut e = e0.clone();
            let mut model = Lorenz96::new(40, 8.0);
            for _ in 0..10 {
                split_members(&mut e, team, |part| model.advance(part, 0.0, 0.05)).unwrap();
            }
            e
        });
        assert!(results.iter().all(|e| *e == one), "{size} ranks");
    }
    for count in [1, 2, 3, 8] {
        let models = (0..count).map(|_| Box::new(Lorenz96::new(40, 8.0)) as Box<dyn ForwardModel + Send>).collect();
        let mut instances = Instances::new(models).unwrap().split_from(Duration::ZERO);
        let mut e = e0.clone();
        for _ in 0..10 {
            instances.advance(&mut e, 0.0, 0.05).unwrap();
        }
        assert!(e == one, "{count} instances");
    }
    // An instance that fails: the error names its members.
    struct Fails(Lorenz96);
    impl ForwardModel for Fails {
        fn info(&self) -> &geohost_sandbox::model::ModelInfo {
            self.0.info()
        }
        fn advance(&mut self, _: &mut DMatrix<f64>, _: f64, _: f64) -> anyhow::Result<()> {
            anyhow::bail!("diverged")
        }
    }
    let with_failing = || -> Vec<Box<dyn ForwardModel + Send>> { vec![Box::new(Lorenz96::new(40, 8.0)), Box::new(Fails(Lorenz96::new(40, 8.0)))] };
    let mut instances = Instances::new(with_failing()).unwrap().split_from(Duration::ZERO);
    let mut e = e0.clone();
    let error = format!("{:#}", instances.advance(&mut e, 0.0, 0.05).unwrap_err());
    assert_eq!(error, "members 4..7 (counted from 0) in model instance 2: diverged");
    assert!(instances.advance(&mut e0.columns(0, 1).into_owned(), 0.0, 0.05).is_ok(), "one member runs on the first instance alone");
    // By default the first TIMED_CALLS whole-ensemble steps are timed on
    // instance 0: a step this short (40 variables) stays there, so
    // instance 2 never runs; when the fastest of them is longer than the
    // threshold, the calls split from then on.
    let mut short = Instances::new(with_failing()).unwrap();
    for _ in 0..6 {
        short.advance(&mut e0.clone(), 0.0, 0.05).expect("a short step stays on instance 0");
    }
    /// Lorenz-96 whose every step first sleeps this long.
    struct Slow(Lorenz96, Duration);
    impl ForwardModel for Slow {
        fn info(&self) -> &geohost_sandbox::model::ModelInfo {
            self.0.info()
        }
        fn advance(&mut self, e: &mut DMatrix<f64>, t: f64, dt: f64) -> anyhow::Result<()> {
            std::thread::sleep(self.1);
            self.0.advance(e, t, dt)
        }
    }
    let slow_then_failing =
        |sleep: Duration| -> Vec<Box<dyn ForwardModel + Send>> { vec![Box::new(Slow(Lorenz96::new(40, 8.0), sleep)), Box::new(Fails(Lorenz96::new(40, 8.0)))] };
    let mut slow = Instances::new(slow_then_failing(crate::ensemble::SPLIT_FROM)).unwrap();
    for _ in 0..3 {
        slow.advance(&mut e0.clone(), 0.0, 0.05).expect("the first three steps run on instance 0 alone");
    }
    let error = format!("{:#}", slow.advance(&mut e0.clone(), 0.0, 0.05).unwrap_err());
    assert_eq!(error, "members 4..7 (counted from 0) in model instance 2: diverged", "a long step splits");
    // A step AT_ONCE times the threshold decides at its first call.
    let models = slow_then_failing(crate::ensemble::SPLIT_FROM * crate::ensemble::AT_ONCE);
    let mut slower = Instances::new(models).unwrap();
    slower.advance(&mut e0.clone(), 0.0, 0.05).expect("the first step runs on instance 0 alone");
    let error = format!("{:#}", slower.advance(&mut e0.clone(), 0.0, 0.05).unwrap_err());
    assert_eq!(error, "members 4..7 (counted from 0) in model instance 2: diverged", "a very long step splits from the second on");
    // A share that fails: every rank errs, the failing one says which members.
    let errors = on_ranks(2, |team| {
        let mut e = e0.clone();
        split_members(&mut e, team, |part| if team.rank() == 1 { anyhow::bail!("diverged") } else { Lorenz96::new(40, 8.0).advance(part, 0.0, 0.05) })
            .unwrap_err()
            .to_string()
    });
    assert_eq!(errors, ["rank 1 failed", "members 4..7 (counted from 0) on MPI rank 1"]);
}

/// Counts each thread's heap allocations (this test binary's allocator),
/// for the LETKF's rule of no allocation per local domain.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    /// Allocations (and reallocations) made on this thread so far.
    pub fn on_this_thread() -> usize {
        ALLOCATIONS.with(Cell::get)
    }

    fn count() {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// The LETKF's hot loop allocates nothing per local domain: once its
/// buffers have grown (the first analysis), an analysis of 225 domains
/// makes exactly as many allocations as one of 25 (the ensemble's mean,
/// anomalies and whitened observations, once per analysis), none of them
/// in the GEMM library (the Gram matrix has its own kernel and the
/// transform is applied by Clenshaw's recurrence); and reusing the
/// buffers changes no bit.
#[test]
fn the_letkf_allocates_nothing_per_local_domain() {
    let analysis = |rows: usize, cols: usize| {
        // N = 20 and observations four times as uncertain as the spread:
        // the polynomial series (the eigendecomposition, for fewer than
        // 12 members or a wide spectrum, allocates inside nalgebra).
        let mut c = map_case(rows, cols, 20);
        c.r.fill(4.0);
        let mut letkf = letkf::Letkf::new(c.layout.clone(), &c.coordinates, 2.0, 2).with_threads(1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut first = c.e0.clone();
        letkf.analyse(&mut first, &c.eo, &c.y, &c.r, &mut rng).unwrap();
        let mut again = c.e0.clone();
        let (before, products_before) = (counting::on_this_thread(), linalg::LIBRARY_PRODUCTS.with(|c| c.get()));
        letkf.analyse(&mut again, &c.eo, &c.y, &c.r, &mut rng).unwrap();
        let products = linalg::LIBRARY_PRODUCTS.with(|c| c.get()) - products_before;
        let allocations = counting::on_this_thread() - before;
        assert_eq!(products, 0, "library products in an analysis of {} domains", rows * cols / 4);
        assert_eq!(first, again, "reused buffers give the same analysis");
        assert!(max_abs(&(&again - &c.e0)) > 1e-3, "the analysis changes the ensemble");
        allocations
    };
    let (few, many) = (analysis(10, 10), analysis(30, 30));
    assert_eq!(few, many, "allocations in an analysis of 25 local domains and of 225");
    assert!(few <= 12, "{few} allocations per analysis");
}

/// The Gram matrix's kernel is the product I + SᵀS/(N−1) computed
/// directly, at sizes that pad to whole registers and ones that do not.
#[test]
fn the_gram_kernel_is_the_product() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (p, n) in [(29, 20), (7, 25), (300, 45), (1, 3), (16, 8), (0, 20)] {
        let s = linalg::randn(p, n, &mut rng);
        let mut out = DMatrix::zeros(0, 0);
        linalg::gram_into(&linalg::padded_transpose(&s), p, n, &mut Default::default(), &mut out);
        let expected = DMatrix::identity(n, n) + s.transpose() * &s / (n - 1) as f64;
        let diff = max_abs(&(&out - &expected)) / max_abs(&expected);
        assert!(diff < 1e-14, "p = {p}, N = {n}: differs by {diff}");
    }
    // No observations: T = I and w = 0 exactly.
    let mut work = etkf::TransformWork::default();
    etkf::transform_into(&[], &[], 20, &mut work);
    assert_eq!(work.t, DMatrix::identity(20, 20));
    assert_eq!(work.w, DVector::zeros(20));
}

/// The LETKF's cycle on 2 and 3 ranks, the ensemble decomposed over them
/// (each rank holds its members for the forecast and its rows for the
/// analysis, never the whole ensemble: [`crate::decomposed`]), gives the
/// one-process cycle's statistics, analysis means and kept ensembles bit
/// for bit, with inflation and rotations; and an odd ensemble, so the
/// members split unevenly. On 120 variables each rank's halo (the
/// observations its domains use) is a part of the observations.
#[test]
fn the_decomposed_cycle_is_the_one_process_cycle_to_the_bit() {
    use crate::ensemble::{EnsembleParams, Execution, Record};
    use crate::method::DaMethod;
    use crate::models::{linear::LinearObs, lorenz96::Lorenz96};
    use crate::twin::{simulate, Chronology, Prior};
    let m = 120;
    let ring = || Layout::of_grid(Grid { points: m, periodic: true });
    let locations: Vec<f64> = (0..m).map(|i| i as f64).collect();
    for size in [2, 3] {
        let halos = on_ranks(size, |team| letkf::Letkf::new(ring(), &locations, 4.0, 2).with_team(team).observations_by_rank().unwrap());
        // Rank r's halo, by a scan: the observations within the taper of
        // the centre of any of its domains (pairs, centred at 2b + 0.5).
        let expected: Vec<Vec<usize>> = (0..size)
            .map(|r| {
                (0..m)
                    .filter(|&j| {
                        crate::team::share(m / 2, size, r).any(|b| {
                            let d = (2.0 * b as f64 + 0.5 - j as f64).abs();
                            letkf::gaspari_cohn(d.min(m as f64 - d), 1.82 * 4.0) > 1e-3
                        })
                    })
                    .collect()
            })
            .collect();
        assert!(expected.iter().all(|h| h.len() < m), "a halo is a part of the observations");
        assert!(halos.iter().all(|h| *h == expected), "{size} ranks");
    }
    let observe = || LinearObs::new(DMatrix::identity(m, m), vec![1.0; m]);
    let chronology = Chronology { dt: 0.05, steps_per_obs: 1, cycles: 60, burn_in: 0.5 };
    let prior = Prior::gaussian(DVector::from_fn(m, |i, _| 8.0 + (i % 3) as f64), 1.0);
    let twin = simulate(&mut Lorenz96::new(m, 8.0), &mut observe(), chronology, prior, false, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
    let letkf = letkf::LETKF { ensemble: EnsembleParams { n: 7, infl: 1.04, rot: true }, loc_rad: 4.0 };
    let run = |team: &dyn Team| {
        let execution = Execution { record: Record { members_every: 10 }, team };
        letkf.run(&twin, &mut Lorenz96::new(m, 8.0), &mut observe(), &mut ChaCha8Rng::seed_from_u64(2), execution, &mut |_| {}).unwrap()
    };
    let one = run(&Solo);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&one.stats.rmse_a) < 0.9 * mean(&one.stats.rmse_f),
        "the analysis corrects the forecast: {} {}",
        mean(&one.stats.rmse_a),
        mean(&one.stats.rmse_f)
    );
    assert_eq!(one.members.len(), 6);
    for size in [2, 3] {
        for (rank, split) in on_ranks(size, run).into_iter().enumerate() {
            let at = format!("rank {rank} of {size}");
            assert_eq!(split.stats.rmse_f, one.stats.rmse_f, "{at}: rmse.f");
            assert_eq!(split.stats.spread_f, one.stats.spread_f, "{at}: spread.f");
            assert_eq!(split.stats.rmse_a, one.stats.rmse_a, "{at}: rmse.a");
            assert_eq!(split.stats.spread_a, one.stats.spread_a, "{at}: spread.a");
            assert!(split.analysis_mean == one.analysis_mean, "{at}: analysis means");
            assert!(split.members.iter().zip(&one.members).all(|(a, b)| a == b) && split.members.len() == one.members.len(), "{at}: kept ensembles");
        }
    }
}

/// The transposition between members and rows, on its own: members to
/// rows and back is the identity, and rows are the right numbers.
#[test]
fn members_to_rows_and_back_is_the_identity() {
    let (state, members) = (11, 5);
    let e = DMatrix::from_fn(state, members, |i, k| (100 * i + k) as f64);
    for size in [2, 3] {
        let results = on_ranks(size, |team| {
            // Rows dealt round-robin, backwards: any order must do.
            let mine: Vec<usize> = (0..state).rev().filter(|i| i % team.size() == team.rank()).collect();
            let d = crate::decomposed::Decomposition::new(team, members, state, &mine).unwrap();
            let share = crate::team::share(members, team.size(), team.rank());
            let columns = e.columns(share.start, share.len()).into_owned();
            let rows = d.to_rows(&columns).unwrap();
            let expected = DMatrix::from_fn(mine.len(), members, |il, k| e[(mine[il], k)]);
            (rows == expected, d.to_members(&rows).unwrap() == columns, d.assemble(Ok(rows), members).unwrap() == e)
        });
        assert!(results.iter().all(|&r| r == (true, true, true)), "{size} ranks: {results:?}");
    }
    // Rows that miss one, or list one twice, are refused.
    let refusals = on_ranks(2, |team| crate::decomposed::Decomposition::new(team, members, state, &[team.rank()]).err().map(|e| e.to_string()));
    assert!(refusals.iter().all(|r| r.as_deref().is_some_and(|m| m.contains("leave some"))), "{refusals:?}");
}

/// A rank's members drawn alone are the same bits as those columns of the
/// whole draw, and the stream ends in the same place (what follows the
/// draw, e.g. the EnKF's perturbations, does not depend on the rank).
#[test]
fn a_ranks_members_are_those_columns_of_the_whole_draw() {
    use crate::twin::Prior;
    let mean = DVector::from_fn(7, |i, _| i as f64 - 2.0);
    let prior = Prior::gaussian(mean.clone(), 0.3);
    // The whole draw written out: N(mean, 0.3 I), member after member.
    let mut whole_rng = ChaCha8Rng::seed_from_u64(5);
    let whole = linalg::add_mean(&mean, linalg::randn(7, 6, &mut whole_rng) * 0.3f64.sqrt());
    assert_eq!(prior.sample(6, &mut ChaCha8Rng::seed_from_u64(5)).unwrap(), whole);
    let after: u64 = rand::Rng::random(&mut whole_rng);
    for range in [0..2, 2..4, 4..6, 3..3, 0..6, 1..5] {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let part = prior.sample_members(6, range.clone(), &mut rng).unwrap();
        assert_eq!(part, whole.columns(range.start, range.len()), "members {range:?}");
        assert_eq!(rand::Rng::random::<u64>(&mut rng), after, "the stream after members {range:?}");
    }
    assert!(prior.sample_members(6, 4..7, &mut ChaCha8Rng::seed_from_u64(5)).is_err());

    // A climate prior: members picked without replacement from its states.
    let states = DMatrix::from_fn(7, 10, |i, k| (10 * k + i) as f64);
    let climate = Prior::Climate { states: states.clone(), truth: DVector::zeros(7), spin_up: crate::twin::SpinUp { time: 1.0, samples: 10, every: 1.0 } };
    let mut whole_rng = ChaCha8Rng::seed_from_u64(6);
    let picked = rand::seq::index::sample(&mut whole_rng, 10, 6);
    let after: u64 = rand::Rng::random(&mut whole_rng);
    for range in [0..3, 3..6, 2..5] {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let part = climate.sample_members(6, range.clone(), &mut rng).unwrap();
        for (c, k) in range.clone().enumerate() {
            assert_eq!(part.column(c), states.column(picked.index(k)), "member {k}");
        }
        assert_eq!(rand::Rng::random::<u64>(&mut rng), after);
    }
}

/// The passes over the whole ensemble that the cycle and the LETKF split
/// over threads (mean, variances, the whitened transpose, inflation and
/// rotation) give the one-thread bits, which are those of nalgebra's
/// `column_mean` and of direct loops.
#[test]
fn ensemble_passes_on_threads_are_the_same_to_the_bit() {
    use crate::pool::{threads_for, Pool};
    use crate::stats;
    let (m, n) = (20_000, 20); // three threads' worth of values
    assert_eq!(threads_for(m * n, 8), 3);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let e = linalg::randn(m, n, &mut rng).add_scalar(3.0);
    let mu = e.column_mean();
    let var = DVector::from_fn(m, |i, _| (0..n).fold(0.0, |v, k| v + (e[(i, k)] - mu[i]) * (e[(i, k)] - mu[i])) / (n - 1) as f64);
    let scale = |j: usize, x: f64| (x - mu[j]) * 0.5;
    let padded = linalg::padded_len(n);
    let mut st = vec![0.0; m * padded];
    for l in 0..m {
        for k in 0..n {
            st[l * padded + k] = scale(l, e[(l, k)]);
        }
    }
    let mut pool = Pool::default();
    for threads in [1, 2, 3, 8] {
        assert_eq!(linalg::mean_on(&e, &mut pool, threads), mu, "mean on {threads} threads");
        assert_eq!(stats::variances_about_on(&e, &mu, &mut pool, threads), var, "variances on {threads} threads");
        assert_eq!(stats::moments_on(&e, &mut pool, threads), (mu.clone(), var.clone()), "mean and variances in one pass on {threads} threads");
        assert_eq!(linalg::padded_transpose_on(&e, scale, &mut pool, threads), st, "transpose on {threads} threads");
        for rot in [false, true] {
            let post = PostProcess { infl: 1.07, rot };
            let (mut one, mut split) = (e.clone(), e.clone());
            post.apply(&mut one, &mut ChaCha8Rng::seed_from_u64(3));
            post.apply_on(&mut split, &mut ChaCha8Rng::seed_from_u64(3), &mut pool, threads);
            assert!(split == one, "rot {rot} on {threads} threads");
            if !rot {
                assert_eq!(one, DMatrix::from_fn(m, n, |i, k| (e[(i, k)] - mu[i]) * 1.07 + mu[i]), "inflation");
            }
        }
    }
}
