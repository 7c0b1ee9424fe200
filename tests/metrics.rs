//! The standard metric component against independent computations: brute
//! force sums written here, and the closed-form CRPS of a Gaussian.

use crate::common::plugin;
use geohost_sandbox::{Limits, MemberTable, MetricValue, Runtime, SandboxError, Table, WasmMetric, World};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn metric(config: &str) -> WasmMetric {
    let rt = Runtime::new(Limits::default(), None).unwrap();
    let loaded = rt.load("metrics", &plugin("metrics-standard"), World::Metric).unwrap();
    WasmMetric::new(&rt, &loaded, config).unwrap()
}

fn scalar(values: &[(String, MetricValue)], name: &str) -> f64 {
    match values.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
        Some(MetricValue::Scalar(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn vector(values: &[(String, MetricValue)], name: &str) -> Vec<f64> {
    match values.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
        Some(MetricValue::Vector(x)) => x.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// Random reference, members and their mean as the prediction.
fn data(rows: usize, cols: usize, members: usize, seed: u64) -> (Table, Table, MemberTable) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let reference: Vec<f64> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    let ens: Vec<f64> = (0..members * rows * cols).map(|i| 0.3 + 1.2 * normal.sample(&mut rng) + 0.1 * (i % cols) as f64).collect();
    let mean: Vec<f64> = (0..rows * cols).map(|k| (0..members).map(|m| ens[m * rows * cols + k]).sum::<f64>() / members as f64).collect();
    (Table { rows, cols, data: mean }, Table { rows, cols, data: reference }, MemberTable { members, rows, cols, data: ens })
}

#[test]
fn every_metric_equals_a_brute_force_computation() {
    let (rows, cols, n) = (7, 5, 9);
    let (pred, refr, ens) = data(rows, cols, n, 1);
    let got = metric(r#"{"levels": [0.5, 0.9]}"#).compute(&pred, &refr, Some(&ens)).unwrap();
    let at = |m: usize, r: usize, c: usize| ens.data[(m * rows + r) * cols + c];
    let y = |r: usize, c: usize| refr.data[r * cols + c];
    let p = |r: usize, c: usize| pred.data[r * cols + c];
    let cells = (rows * cols) as f64;
    let close = |name: &str, expected: f64| {
        let value = scalar(&got, name);
        assert!((value - expected).abs() < 1e-12 * expected.abs().max(1.0), "{name}: {value} vs {expected}");
    };

    let rmse_case = |f: &dyn Fn(usize, usize) -> f64| {
        (0..rows).map(|r| ((0..cols).map(|c| (f(r, c) - y(r, c)).powi(2)).sum::<f64>() / cols as f64).sqrt()).sum::<f64>() / rows as f64
    };
    close("rmse", rmse_case(&p));
    close("bias", (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| p(r, c) - y(r, c)).sum::<f64>() / cells);
    close("mae", (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| (p(r, c) - y(r, c)).abs()).sum::<f64>() / cells);

    let spread = (0..rows)
        .map(|r| {
            let v: f64 = (0..cols)
                .map(|c| {
                    let mu = p(r, c);
                    (0..n).map(|m| (at(m, r, c) - mu).powi(2)).sum::<f64>() / (n - 1) as f64
                })
                .sum();
            (v / cols as f64).sqrt()
        })
        .sum::<f64>()
        / rows as f64;
    close("spread", spread);
    close("spread_skill", spread / rmse_case(&p));

    let (mut crps, mut fair) = (0.0, 0.0);
    for r in 0..rows {
        for c in 0..cols {
            let to_obs: f64 = (0..n).map(|m| (at(m, r, c) - y(r, c)).abs()).sum::<f64>() / n as f64;
            let pairs: f64 = (0..n).flat_map(|j| (0..n).map(move |k| (j, k))).map(|(j, k)| (at(j, r, c) - at(k, r, c)).abs()).sum();
            crps += to_obs - pairs / (2.0 * (n * n) as f64);
            fair += to_obs - pairs / (2.0 * (n * (n - 1)) as f64);
        }
    }
    close("crps", crps / cells);
    close("crps_fair", fair / cells);

    let mut counts = vec![0usize; n + 1];
    for r in 0..rows {
        for c in 0..cols {
            counts[(0..n).filter(|&m| at(m, r, c) < y(r, c)).count()] += 1;
        }
    }
    let hist: Vec<f64> = counts.iter().map(|&k| k as f64 / cells).collect();
    assert_eq!(vector(&got, "rank_histogram"), hist);

    // Coverage: numpy-style linear quantiles from the sorted members.
    let coverage: Vec<f64> = [0.5, 0.9]
        .iter()
        .map(|level| {
            let mut inside = 0.0;
            for r in 0..rows {
                for c in 0..cols {
                    let mut x: Vec<f64> = (0..n).map(|m| at(m, r, c)).collect();
                    x.sort_by(f64::total_cmp);
                    let q = |prob: f64| {
                        let h = (n - 1) as f64 * prob;
                        let i = h as usize;
                        if i + 1 < n {
                            x[i] + (h - i as f64) * (x[i + 1] - x[i])
                        } else {
                            x[i]
                        }
                    };
                    if q((1.0 - level) / 2.0) <= y(r, c) && y(r, c) <= q((1.0 + level) / 2.0) {
                        inside += 1.0;
                    }
                }
            }
            inside / cells
        })
        .collect();
    assert_eq!(vector(&got, "coverage"), coverage);

    let norm = |f: &dyn Fn(usize) -> f64| (0..cols).map(|c| f(c).powi(2)).sum::<f64>().sqrt();
    let es: f64 = (0..rows)
        .map(|r| {
            let to_obs: f64 = (0..n).map(|j| norm(&|c| at(j, r, c) - y(r, c))).sum::<f64>() / n as f64;
            let pairs: f64 = (0..n).flat_map(|j| (0..n).map(move |k| (j, k))).map(|(j, k)| norm(&|c| at(j, r, c) - at(k, r, c))).sum();
            to_obs - pairs / (2.0 * (n * n) as f64)
        })
        .sum::<f64>()
        / rows as f64;
    close("energy_score", es);
}

/// CRPS of N(μ, σ²) at y: σ [z (2Φ(z) − 1) + 2 φ(z) − 1/√π], z = (y − μ)/σ.
fn gaussian_crps(mu: f64, sigma: f64, y: f64) -> f64 {
    let z = (y - mu) / sigma;
    let cdf = 0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / std::f64::consts::PI.sqrt())
}

#[test]
fn crps_of_a_gaussian_ensemble_matches_the_closed_form() {
    // 400 cases, 500 members each from N(0.3, 1.7²); the fair estimator is
    // unbiased, so the mean over cases is within sampling error (~0.3%).
    let (rows, n, mu, sigma) = (400, 500, 0.3, 1.7);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let dist = Normal::new(mu, sigma).unwrap();
    let ys: Vec<f64> = (0..rows).map(|r| -3.0 + 6.0 * r as f64 / rows as f64).collect();
    let ens: Vec<f64> = (0..n * rows).map(|_| dist.sample(&mut rng)).collect();
    let mean = vec![mu; rows];
    let got = metric(r#"{"metrics": ["crps", "crps_fair"]}"#)
        .compute(&Table { rows, cols: 1, data: mean }, &Table { rows, cols: 1, data: ys.clone() }, Some(&MemberTable { members: n, rows, cols: 1, data: ens }))
        .unwrap();
    let exact = ys.iter().map(|&y| gaussian_crps(mu, sigma, y)).sum::<f64>() / rows as f64;
    let fair = scalar(&got, "crps_fair");
    assert!((fair - exact).abs() / exact < 0.01, "fair CRPS {fair} vs closed form {exact}");
    // The standard estimator exceeds the fair one by E|X − X'|/(2N) = σ/(N√π).
    let standard = scalar(&got, "crps");
    let gap = sigma / (n as f64 * std::f64::consts::PI.sqrt());
    assert!(((standard - fair) - gap).abs() / gap < 0.05, "standard − fair = {} vs {gap}", standard - fair);
}

#[test]
fn a_calibrated_ensemble_has_a_flat_rank_histogram_and_nominal_coverage() {
    let (rows, cols, n) = (2000, 4, 99);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let refr: Vec<f64> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    let ens: Vec<f64> = (0..n * rows * cols).map(|_| normal.sample(&mut rng)).collect();
    let got = metric(r#"{"metrics": ["rank_histogram", "coverage"], "levels": [0.8]}"#)
        .compute(
            &Table { rows, cols, data: vec![0.0; rows * cols] },
            &Table { rows, cols, data: refr },
            Some(&MemberTable { members: n, rows, cols, data: ens }),
        )
        .unwrap();
    // 8000 values over 100 bins: each ~0.01 with sampling sd ~0.0011.
    let hist = vector(&got, "rank_histogram");
    assert_eq!(hist.len(), n + 1);
    for f in hist {
        assert!((f - 0.01).abs() < 0.005, "bin frequency {f}, expected 0.01");
    }
    // Interpolated order statistics at (N−1)(1 ∓ α)/2 cover (N−1)α/(N+1)
    // of a calibrated ensemble: 0.784 for N = 99, α = 0.8 (sd ~0.005).
    let coverage = vector(&got, "coverage")[0];
    assert!((coverage - 0.784).abs() < 0.02, "coverage {coverage}");
}

#[test]
fn metric_errors_name_the_metric_or_the_shape() {
    let (pred, refr, ens) = data(3, 2, 4, 4);
    let err = metric(r#"{"metrics": ["rmse", "crps"]}"#).compute(&pred, &refr, None).unwrap_err();
    assert!(matches!(err, SandboxError::Returned { .. }) && err.to_string().contains("metric `crps` needs ensemble members"), "{err}");
    let short = Table { rows: 3, cols: 1, data: vec![0.0; 3] };
    let err = metric("{}").compute(&short, &refr, Some(&ens)).unwrap_err();
    assert!(err.to_string().contains("prediction is 3 × 1 but reference is 3 × 2"), "{err}");

    let rt = Runtime::new(Limits::default(), None).unwrap();
    let loaded = rt.load("metrics", &plugin("metrics-standard"), World::Metric).unwrap();
    let err = WasmMetric::new(&rt, &loaded, r#"{"metrics": ["rsme"]}"#).err().unwrap();
    assert!(err.to_string().contains("unknown metric `rsme`"), "{err}");
    // A metric is not a forward model.
    let err = rt.load("metrics", &plugin("metrics-standard"), World::ForwardModel).err().unwrap();
    assert!(err.to_string().contains("is a metric plugin, not a forward-model plugin"), "{err}");
}

#[test]
fn forecast_metrics_equal_brute_force_computations() {
    // 3 cases × 4 leads × 8 variables; the error grows with lead time.
    let (cases, leads, cols) = (3, 4, 8);
    let rows = cases * leads;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let reference: Vec<f64> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    let prediction: Vec<f64> = (0..rows * cols).map(|i| reference[i] + 0.2 * ((i / cols) % leads + 1) as f64 * normal.sample(&mut rng)).collect();
    let (p, y) = (Table { rows, cols, data: prediction.clone() }, Table { rows, cols, data: reference.clone() });
    let config =
        r#"{"metrics": ["rmse_by_lead", "one_step_rmse", "valid_time", "psd_error"], "leads": 4, "dt": 0.5, "lyapunov": 2.0, "threshold": 0.3, "scale": 1.0}"#;
    let got = metric(config).compute(&p, &y, None).unwrap();

    let row_rmse = |r: usize| ((0..cols).map(|c| (prediction[r * cols + c] - reference[r * cols + c]).powi(2)).sum::<f64>() / cols as f64).sqrt();
    let expected: Vec<f64> = (0..leads).map(|l| (0..cases).map(|c| row_rmse(c * leads + l)).sum::<f64>() / cases as f64).collect();
    let by_lead = vector(&got, "rmse_by_lead");
    for (a, b) in by_lead.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-12, "{by_lead:?} vs {expected:?}");
    }
    assert_eq!(scalar(&got, "one_step_rmse"), by_lead[0]);
    // Valid time: first lead over 0.3 × scale, in units of dt · lyapunov.
    let vt: f64 = (0..cases).map(|c| (0..leads).find(|&l| row_rmse(c * leads + l) > 0.3).unwrap_or(leads) as f64 * 0.5 * 2.0).sum::<f64>() / cases as f64;
    assert!((scalar(&got, "valid_time") - vt).abs() < 1e-12);
    // PSD: mean |log10| ratio over k = 1..cols/2 of the row-averaged spectra,
    // here computed with complex exponentials one coefficient at a time.
    let spectrum = |data: &[f64]| -> Vec<f64> {
        (0..=cols / 2)
            .map(|k| {
                (0..rows)
                    .map(|r| {
                        let (re, im) = (0..cols).fold((0.0, 0.0), |(re, im), j| {
                            let w = 2.0 * std::f64::consts::PI * (k * j) as f64 / cols as f64;
                            (re + data[r * cols + j] * w.cos(), im - data[r * cols + j] * w.sin())
                        });
                        re * re + im * im
                    })
                    .sum::<f64>()
                    / rows as f64
            })
            .collect()
    };
    let (sp, sy) = (spectrum(&prediction), spectrum(&reference));
    let psd = (1..=cols / 2).map(|k| (sp[k].log10() - sy[k].log10()).abs()).sum::<f64>() / (cols / 2) as f64;
    assert!((scalar(&got, "psd_error") - psd).abs() < 1e-10, "{} vs {psd}", scalar(&got, "psd_error"));
    // A prediction equal to the reference has no error at all.
    let same = metric(config).compute(&y, &y, None).unwrap();
    assert_eq!(scalar(&same, "psd_error"), 0.0);
    assert_eq!(scalar(&same, "valid_time"), leads as f64 * 0.5 * 2.0);
    // Rows that are not whole cases are refused.
    let bad = Table { rows: rows - 1, cols, data: reference[..(rows - 1) * cols].to_vec() };
    let err = metric(config).compute(&bad, &bad, None).unwrap_err();
    assert!(err.to_string().contains("not a multiple of leads = 4"), "{err}");
}

/// The detection and regression metrics on cases with known answers: a
/// prediction 2·reference + 1 (slope 2, intercept 1, r² 1); detection of
/// 20 null cases 0..19 against signals at 5, 18.5, 30 and 40 with
/// far = 0.1 (the 0.9 quantile of 0..19 by linear interpolation is 17.1:
/// three of four detected).
#[test]
fn detection_and_regression_metrics_equal_their_definitions() {
    let mut m = metric(r#"{"metrics": ["slope", "intercept", "r2"]}"#);
    let reference = Table { rows: 2, cols: 3, data: vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0] };
    let prediction = Table { rows: 2, cols: 3, data: reference.data.iter().map(|v| 2.0 * v + 1.0).collect() };
    let values = m.compute(&prediction, &reference, None).unwrap();
    assert!((scalar(&values, "slope") - 2.0).abs() < 1e-12 && (scalar(&values, "intercept") - 1.0).abs() < 1e-12);
    assert!((scalar(&values, "r2") - 1.0).abs() < 1e-12);
    let flat = Table { rows: 1, cols: 3, data: vec![4.0; 3] };
    let err = m.compute(&flat, &flat, None).unwrap_err().to_string();
    assert!(err.contains("references that vary"), "{err}");

    let mut d = metric(r#"{"metrics": ["pod", "detection_threshold"], "far": 0.1}"#);
    let mut p: Vec<f64> = (0..20).map(|i| i as f64).collect();
    let mut r = vec![0.0; 20];
    p.extend([5.0, 18.5, 30.0, 40.0]);
    r.extend([1.0, 2.0, 3.0, 4.0]);
    let values = d.compute(&Table { rows: 1, cols: 24, data: p }, &Table { rows: 1, cols: 24, data: r }, None).unwrap();
    assert!((scalar(&values, "detection_threshold") - 17.1).abs() < 1e-12, "{values:?}");
    assert!((scalar(&values, "pod") - 0.75).abs() < 1e-12, "{values:?}");
    let only_signal = Table { rows: 1, cols: 2, data: vec![1.0, 2.0] };
    let err = d.compute(&only_signal, &only_signal, None).unwrap_err().to_string();
    assert!(err.contains("needs null cases"), "{err}");
    let rt = geohost_sandbox::Runtime::new(geohost_sandbox::Limits::default(), None).unwrap();
    let loaded = rt.load("metrics", &plugin("metrics-standard"), World::Metric).unwrap();
    let err = WasmMetric::new(&rt, &loaded, r#"{"metrics": ["pod"], "far": 1.5}"#).err().unwrap().to_string();
    assert!(err.contains("`far`"), "{err}");
}
