//! Grids beyond the 1-D ring: components built against the original
//! 0.1.0 WIT still load; layouts and observation coordinates cross the
//! boundary checked; the quasi-geostrophic model conserves what its
//! equations conserve; a 2-D twin experiment runs end to end with the LETKF.

use crate::common::{geohost, plugin, qg_set, stderr, stdout};
use geohost_sandbox::model::{ForwardModel, ObsOperator};
use geohost_sandbox::{Limits, Runtime, SandboxError, WasmForward, WasmObs, World};
use nalgebra::DMatrix;
use serde_json::Value;

fn runtime() -> Runtime {
    Runtime::new(Limits::default(), None).unwrap()
}

/// A plugin published against geohost:plugin@0.1.0, before layouts, loads
/// and runs under the 0.1.1 host (as a 1-D grid, no layout).
#[test]
fn a_component_built_for_the_original_wit_still_runs() {
    let rt = runtime();
    let loaded = rt.load("legacy", &plugin("testkit-legacy"), World::ForwardModel).unwrap();
    let mut model = WasmForward::new(&rt, &loaded, "{}").unwrap();
    assert_eq!(model.info().layout, None);
    let layout = model.info().layout().expect("its 1-D grid gives a layout");
    assert_eq!((layout.ndim(), layout.size(), layout.axes[0].period), (1, 40, Some(40.0)));
    let mut e = DMatrix::from_element(40, 2, 2.0);
    model.advance(&mut e, 0.0, 0.5).unwrap();
    assert!(e.iter().all(|v| (v - 2.0 * (-0.5f64).exp()).abs() < 1e-15));
}

/// A layout that does not cover the state is refused when the model
/// starts, with the plugin named and what is wrong.
#[test]
fn a_layout_that_does_not_fit_the_state_is_refused() {
    let rt = runtime();
    let loaded = rt.load("hostile", &plugin("testkit-hostile"), World::ForwardModel).unwrap();
    let err = WasmForward::new(&rt, &loaded, r#"{"mode": "bad-layout", "size": 6}"#).err().expect("refused");
    let msg = format!("{err:#}");
    assert!(matches!(err, SandboxError::Shape { .. }), "{msg}");
    assert!(msg.contains("hostile") && msg.contains("layout has 5 points") && msg.contains("6 variables"), "{msg}");
}

fn qg(rt: &Runtime, config: &str) -> WasmForward {
    let loaded = rt.load("qg", &plugin("qg"), World::ForwardModel).unwrap();
    WasmForward::new(rt, &loaded, config).unwrap()
}

/// The five-point Laplacian with zero walls (what the model's q uses).
fn laplacian(n: usize, h: f64, a: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let p = j * n + i;
            out[p] = (a[p - 1] + a[p + 1] + a[p - n] + a[p + n] - 4.0 * a[p]) / (h * h);
        }
    }
    out
}

/// The discrete energy −½ Σ ψ q h² and enstrophy ½ Σ q² h² of a QG state.
fn energy_and_enstrophy(n: usize, f: f64, psi: &[f64]) -> (f64, f64) {
    let h = 1.0 / (n - 1) as f64;
    let q: Vec<f64> = laplacian(n, h, psi).iter().zip(psi).map(|(l, p)| l - f * p).collect();
    let energy = -0.5 * psi.iter().zip(&q).map(|(p, q)| p * q).sum::<f64>() * h * h;
    let enstrophy = 0.5 * q.iter().map(|q| q * q).sum::<f64>() * h * h;
    (energy, enstrophy)
}

/// A smooth state with zero walls: a few sine modes of both axes.
fn smooth_state(n: usize) -> Vec<f64> {
    let pi = std::f64::consts::PI;
    (0..n * n)
        .map(|p| {
            let (y, x) = ((p / n) as f64 / (n - 1) as f64, (p % n) as f64 / (n - 1) as f64);
            30.0 * (pi * x).sin() * (2.0 * pi * y).sin() + 12.0 * (3.0 * pi * x).sin() * (pi * y).sin() + 5.0 * (2.0 * pi * x).sin() * (5.0 * pi * y).sin()
        })
        .collect()
}

/// Without forcing and friction the QG equations conserve the energy
/// (Arakawa's Jacobian and the centred β term both conserve it exactly in
/// space) and, with β = 0, the enstrophy. What drifts is RK4's error, so
/// halving the step must shrink the drift by about 2⁴ (here: over 8×): a
/// spatial scheme that did not conserve would leave a drift that does not
/// shrink. The biharmonic friction makes both decay, so the check can fail.
#[test]
fn the_qg_model_conserves_energy_and_enstrophy_when_inviscid_and_unforced() {
    let rt = runtime();
    let n = 33;
    // r = 1e-3: stronger advection than the default, so the flow moves.
    let run = |extra: &str, max_dt: f64| {
        let mut model = qg(&rt, &format!(r#"{{"refinement": 5, "forcing": 0.0, "r": 1e-3, "max_dt": {max_dt}{extra}}}"#));
        assert_eq!(model.info().state_size, n * n);
        let layout = model.info().layout.clone().expect("the QG model describes its layout");
        assert_eq!((layout.shape(), layout.axes[0].name.as_str(), layout.axes[1].name.as_str()), (vec![n, n], "y", "x"));
        let psi0 = smooth_state(n);
        let mut e = DMatrix::from_column_slice(n * n, 1, &psi0);
        for k in 0..20 {
            model.advance(&mut e, k as f64 * 5.0, 5.0).unwrap();
        }
        let psi = e.column(0).iter().copied().collect::<Vec<_>>();
        let moved = psi.iter().zip(&psi0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(moved > 1.0, "the flow evolves (max change {moved})");
        let ((e0, z0), (e1, z1)) = (energy_and_enstrophy(n, 1600.0, &psi0), energy_and_enstrophy(n, 1600.0, &psi));
        (((e1 - e0) / e0).abs(), ((z1 - z0) / z0).abs())
    };
    let inviscid = r#", "rkh2": 0.0"#;
    let (coarse, fine) = (run(inviscid, 0.5).0, run(inviscid, 0.25).0);
    assert!(fine < 1e-5 && fine < coarse / 8.0, "energy drifts by {fine:.2e} at dt 0.25, {coarse:.2e} at dt 0.5");
    let no_beta = r#", "rkh2": 0.0, "beta": 0.0"#;
    let (coarse, fine) = (run(no_beta, 0.5).1, run(no_beta, 0.25).1);
    assert!(fine < 1e-5 && fine < coarse / 8.0, "enstrophy drifts by {fine:.2e} at dt 0.25, {coarse:.2e} at dt 0.5");
    let (energy, enstrophy) = run(r#", "rkh2": 1e-7"#, 0.25);
    assert!(energy > 1e-3 && enstrophy > 1e-3, "biharmonic friction dissipates: E by {energy:.2e}, Z by {enstrophy:.2e}");
}

/// With every term of dq/dt switched off, a step turns ψ into q and
/// back: the plugin's Helmholtz solve (sine transforms and tridiagonal
/// sweeps) must invert the five-point operator it is built on, at two
/// sizes (65 × 65 and the reference 129 × 129).
#[test]
fn the_qg_solve_inverts_the_models_own_operator() {
    let rt = runtime();
    for (refinement, n) in [(6, 65), (7, 129)] {
        let config = format!(r#"{{"refinement": {refinement}, "forcing": 0.0, "r": 0.0, "beta": 0.0, "rkh2": 0.0}}"#);
        let mut model = qg(&rt, &config);
        let psi0 = smooth_state(n);
        let mut e = DMatrix::from_column_slice(n * n, 1, &psi0);
        model.advance(&mut e, 0.0, 5.0).unwrap();
        let worst = e.column(0).iter().zip(&psi0).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        // ψ of size 30 through q (about 5·10⁴ at 129 × 129) and back.
        assert!(worst < 1e-10, "n {n}: ψ came back off by {worst:e}");
    }
}

/// The satellite tracks observe where their coordinates say, move
/// between times, and are the same at the same time.
#[test]
fn track_observations_are_where_their_coordinates_say() {
    let rt = runtime();
    let loaded = rt.load("tracks", &plugin("obs-tracks"), World::ObsOperator).unwrap();
    let mut obs = WasmObs::new(&rt, &loaded, r#"{"state_size": 1089, "shape": [33, 33], "count": 40}"#).unwrap();
    let index = DMatrix::from_fn(1089, 1, |i, _| i as f64);
    let mut offsets = std::collections::BTreeSet::new();
    for t in [5.0, 10.0, 15.0, 20.0, 25.0] {
        let y = obs.observe(&index, t).unwrap();
        let c = obs.coordinates(t).unwrap().expect("tracks give coordinates");
        assert_eq!(c.len(), 80);
        for (j, &i) in y.column(0).iter().enumerate() {
            assert_eq!((c[2 * j], c[2 * j + 1]), ((i as usize / 33) as f64, (i as usize % 33) as f64), "observation {j} at t = {t}");
        }
        assert_eq!(obs.coordinates(t).unwrap().unwrap(), c, "the same at the same time");
        offsets.insert(y[(0, 0)] as usize);
    }
    assert!(offsets.len() > 1, "the tracks move: {offsets:?}");
    // Some members only (what an operator instance of `--model-instances`
    // observes): those members' columns of the whole ensemble's.
    let ensemble = DMatrix::from_fn(1089, 5, |i, k| (i + 1000 * k) as f64);
    let whole = obs.observe(&ensemble, 5.0).unwrap();
    assert_eq!(obs.observe_columns(&ensemble, 1..4, 5.0).unwrap(), whole.columns(1, 3));
    assert_eq!(obs.observe_columns(&ensemble, 4..5, 5.0).unwrap(), whole.columns(4, 1));
}

/// A small QG twin (33 × 33, a spun-up climate sample, moving tracks):
/// the LETKF runs on the 2-D layout and beats climatology by far; the
/// climate prior and the baseline that needs no covariance work at this size.
#[test]
fn a_two_dimensional_twin_runs_with_the_letkf() {
    let dir = tempfile::tempdir().unwrap();
    let set = qg_set(
        dir.path(),
        "qg-small",
        r#"
[experiment]
dt = 5.0
cycles = 100
burn_in = 100.0
seed = 1
x0 = 0.0
x0_variance = 1e-4
spinup = { time = 4000.0, samples = 20, every = 50.0 }
[[method]]
method = "climatology"
[[method]]
method = "letkf"
N = 15
infl = 1.04
loc_rad = 2
"#,
    );
    let out = geohost(dir.path()).args(["run", "-q"]).arg(&set).arg("--json").arg("--out").arg(dir.path().join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let rmse = |prefix: &str| rows.iter().find(|r| r["label"].as_str().unwrap().starts_with(prefix)).unwrap()["rmse_a"].as_f64().unwrap();
    let (clim, letkf) = (rmse("Climatology"), rmse("LETKF"));
    assert!(letkf.is_finite() && letkf < 0.5 * clim, "LETKF {letkf} against climatology {clim}");

    // An ensemble larger than the climate sample is refused, saying what to raise.
    let text = std::fs::read_to_string(&set).unwrap().replace("N = 15", "N = 25");
    std::fs::write(&set, text).unwrap();
    let out = geohost(dir.path()).args(["run", "-q"]).arg(&set).arg("--out").arg(dir.path().join("out")).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("experiment.spinup.samples"), "{}", stderr(&out));
}

/// `geohost perf model` times a set's model call by call, and with
/// `--against` a second build taking turns with it: the Python Lorenz-96
/// gives the Rust one's bits at a cost the paired ratio shows; a build of
/// another model is refused, naming the file and the config key or the
/// state sizes, and so are zero calls or members.
#[test]
fn perf_model_times_two_builds_of_a_model_call_by_call() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::common::repo_root();
    let perf = |args: &[&str]| geohost(dir.path()).current_dir(&root).args(["perf", "model", "cycles/lorenz96.toml"]).args(args).output().unwrap();
    let out = perf(&["--against", "plugins/dist/lorenz96-py.wasm", "--calls", "5", "--warm-up", "1", "--members", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "model `lorenz96` of cycles/lorenz96.toml (40 variables), 2 members a call, one cycle of 0.05 time units per call; 5 calls after 1 untimed"
        ),
        "{text}"
    );
    let figures = |label: &str| -> Vec<f64> {
        let row = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no row {label}:\n{text}"));
        row.split_whitespace().rev().take(2).flat_map(|f| f.split('–')).map(|f| f.parse().unwrap_or_else(|_| panic!("{row}"))).collect()
    };
    // (q1–q3, median) of each build and of the ratio: ordered, positive.
    let (rust, python, ratio) = (figures("A cycles/"), figures("B plugins/dist/lorenz96-py.wasm"), figures("A/B"));
    for f in [&rust, &python, &ratio] {
        let (q1, q3, median) = (f[0], f[1], f[2]);
        assert!(q1 > 0.0 && q1 <= median && median <= q3, "{text}");
    }
    // The interpreter costs far more than a tenth of compiled Rust's time.
    assert!(ratio[2] < 0.5, "{text}");
    assert!(text.contains("the ensembles after every call: the same bits"), "{text}");
    let refused = perf(&["--against", "plugins/dist/qg.wasm", "--calls", "2"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("--against plugins/dist/qg.wasm") && message.contains("unknown config key `size`"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    // Nothing to time: refused before anything loads.
    for args in [["--calls", "0"], ["--members", "0"]] {
        let refused = perf(&args);
        assert_eq!(refused.status.code(), Some(1));
        assert_eq!(stderr(&refused), "error: perf model: --calls and --members must be at least 1\n");
    }
    // A build of another size (both take the set's config, here none).
    let set = dir.path().join("l63.toml");
    let text = format!(
        "[model]\nplugin = \"{}\"\n[observations]\nplugin = \"{}\"\nconfig = {{ select = \"all\", variance = 1.0 }}\n[experiment]\ncycles = 10\nx0 = \"e0\"\nx0_variance = 0.001\n[[method]]\nmethod = \"climatology\"\n",
        crate::common::plugin("lorenz63").display(),
        crate::common::plugin("obs-subset").display()
    );
    std::fs::write(&set, text).unwrap();
    let l96 = crate::common::plugin("lorenz96");
    let refused = geohost(dir.path()).args(["perf", "model", set.to_str().unwrap(), "--against", l96.to_str().unwrap(), "--calls", "2"]).output().unwrap();
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(message.contains(&format!("--against {}: its state has 40 variables, {}'s model 3", l96.display(), set.display())), "{message}");
}

/// `geohost perf letkf` times the QG row under the plugin-set's own model
/// config, cycle length and `[limits]` (cycles/qg.toml by default), with
/// the machine's ceiling beside the speed-up and a cache line's round
/// trip between two cores, and
/// refuses a set whose model has no square 2-D layout, naming the set.
#[test]
fn perf_letkf_times_the_qg_row_from_its_plugin_set() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::common::repo_root();
    let out = geohost(dir.path())
        .current_dir(&root)
        .args(["perf", "letkf", "--sizes", "64", "--threads", "1,2", "--members", "8", "--samples", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("cycles/qg.toml's model and [limits], forecast dt 5"), "{text}");
    for label in ["L96 64", "QG 129²"] {
        let row = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("no row {label}:\n{text}"));
        let mut fields: Vec<&str> = row.trim_start()[label.len()..].split_whitespace().collect();
        // Last, the round trip (ns): one sample, so a range of one value,
        // more than 1 ns and less than 10 ms.
        let trip = fields.pop().and_then(|f| f.split_once('–')).unwrap_or_else(|| panic!("no round-trip range: {row}"));
        assert_eq!(trip.0, trip.1, "{row}");
        let trip: f64 = trip.0.parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(trip > 1.0 && trip < 1e7, "{row}");
        let figures: Vec<f64> = fields.iter().map(|f| f.parse().unwrap_or_else(|_| panic!("`{f}` is not a number: {row}"))).collect();
        // Setup, forecast, analysis and cycle per count, the speed-up, the
        // efficiency and the machine's ceiling for two threads.
        assert_eq!(figures.len(), 10, "{row}");
        assert!(figures.iter().all(|f| f.is_finite() && *f >= 0.0) && figures[2] > 0.0 && figures[9] > 0.0, "{row}");
        if label == "QG 129²" {
            // One sample per count: the paired speed-up is the ratio of the
            // cycles (tens of ms, so the printed rounding hardly shows).
            let (cycle_1, cycle_2, speedup, efficiency) = (figures[3], figures[6], figures[7], figures[8]);
            assert!((cycle_1 / cycle_2 - speedup).abs() <= 0.01 && (speedup / 2.0 - efficiency).abs() <= 0.01, "{row}");
        }
    }
    let refused = geohost(dir.path()).current_dir(&root).args(["perf", "letkf", "--sizes", "64", "--qg", "cycles/lorenz96.toml"]).output().unwrap();
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(message.contains("--qg cycles/lorenz96.toml") && message.contains("no square 2-D layout"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}
