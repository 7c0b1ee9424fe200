//! The methane L1→L2 row: plugins/ch4-rt (radiance spectra from mag1c's
//! look-up table) checked against an independent reading of that table.

use crate::common::{plugin, repo_root};
use geohost_sandbox::model::Simulator;
use geohost_sandbox::{Limits, Runtime, WasmSimulator, World};
use nalgebra::DMatrix;

const ENHANCEMENTS: [f64; 7] = [0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0];

fn ch4_rt(config: &str) -> Result<WasmSimulator, String> {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let loaded = runtime.load("ch4-rt", &plugin("ch4-rt"), World::StaticModel).unwrap();
    WasmSimulator::new(&runtime, &loaded, config).map_err(|e| e.to_string())
}

/// mag1c's table as fetched by scripts/fetch-mag1c.sh (plugins/build.sh
/// runs it): wavelengths and, per wavelength, the 7 radiances.
fn mag1c_table() -> (Vec<f64>, Vec<[f64; 7]>) {
    let dir = repo_root().join("target/mag1c");
    let lut = std::fs::read(dir.join("ch4.lut")).expect("target/mag1c/ch4.lut: run bash scripts/fetch-mag1c.sh");
    let hdr = std::fs::read_to_string(dir.join("ch4.hdr")).unwrap();
    let list = hdr.split("wavelength = {").nth(1).unwrap().split('}').next().unwrap();
    let wavelengths: Vec<f64> = list.split(',').map(|v| v.trim().parse().unwrap()).collect();
    let radiance =
        (0..wavelengths.len()).map(|i| std::array::from_fn(|s| f64::from_le_bytes(lut[(i * 7 + s) * 8..(i * 7 + s + 1) * 8].try_into().unwrap()))).collect();
    (wavelengths, radiance)
}

/// A Gaussian response over the whole table, normalised to one: with
/// `by_spacing` each wavelength weighs its share of the (uneven) grid, an
/// integral over wavelength; without, every table entry weighs the same,
/// as mag1c's generate_template_from_bands does (0.2% apart at most).
fn resample(wavelengths: &[f64], radiance: &[[f64; 7]], centre: f64, fwhm: f64, by_spacing: bool) -> [f64; 7] {
    let sigma = fwhm / (2.0 * (2.0 * std::f64::consts::LN_2).sqrt());
    let n = wavelengths.len();
    let w: Vec<f64> = (0..n)
        .map(|i| {
            let share = if by_spacing { wavelengths[(i + 1).min(n - 1)] - wavelengths[i.saturating_sub(1)] } else { 1.0 };
            (-(wavelengths[i] - centre).powi(2) / (2.0 * sigma * sigma)).exp() * share
        })
        .collect();
    let total: f64 = w.iter().sum();
    std::array::from_fn(|s| w.iter().zip(radiance).map(|(w, r)| w * r[s]).sum::<f64>() / total)
}

/// Least-squares slope of ln L against the enhancement over the table's 7
/// spectra: mag1c's unit absorption spectrum, per ppm·m.
fn ls_slope(ln_l: &[f64; 7]) -> f64 {
    let (mx, my) = (ENHANCEMENTS.iter().sum::<f64>() / 7.0, ln_l.iter().sum::<f64>() / 7.0);
    let sxy: f64 = ENHANCEMENTS.iter().zip(ln_l).map(|(x, y)| (x - mx) * (y - my)).sum();
    sxy / ENHANCEMENTS.iter().map(|x| (x - mx).powi(2)).sum::<f64>()
}

fn spectra(sim: &mut WasmSimulator, thetas: &[[f64; 2]]) -> DMatrix<f64> {
    sim.simulate(&DMatrix::from_fn(2, thetas.len(), |i, j| thetas[j][i]), 0).unwrap()
}

/// At the table's nodes the plugin is the table, convolved to the bands;
/// its absorption slope is mag1c's (and the shared 10 nm table's) within
/// 5%; and it is as non-linear in ΔX as the table.
#[test]
fn ch4_rt_is_mag1cs_table_on_the_bands_with_its_absorption_and_saturation() {
    let (wavelengths, radiance) = mag1c_table();
    // AVIRIS-NG-like: 81 bands at 5 nm, every node of the table.
    let mut aviris = ch4_rt("{}").unwrap();
    assert_eq!(aviris.info().output_size, 81);
    let nodes: Vec<[f64; 2]> = ENHANCEMENTS.iter().map(|&e| [e, 1.0]).collect();
    let out = spectra(&mut aviris, &nodes);
    let mut worst: f64 = 0.0;
    for b in 0..81 {
        let expected = resample(&wavelengths, &radiance, 2100.0 + 5.0 * b as f64, 5.0, true);
        for s in 0..7 {
            worst = worst.max((out[(b, s)] / expected[s] - 1.0).abs());
        }
    }
    assert!(worst < 1e-4, "the plugin at the table's nodes differs from the resampled table by {worst:e} (relative)");
    // Albedo scales the spectrum.
    let half = spectra(&mut aviris, &[[700.0, 0.5], [700.0, 1.0]]);
    assert!((0..81).all(|b| (half[(b, 0)] * 2.0 / half[(b, 1)] - 1.0).abs() < 1e-12));

    // 10 nm bands 2100–2490 nm, as the shared table (derived the same way).
    let mut ten = ch4_rt(r#"{"start": 2100, "stop": 2490, "spacing": 10, "fwhm": 10}"#).unwrap();
    let out = spectra(&mut ten, &nodes);
    let near_zero = spectra(&mut ten, &[[0.0, 1.0], [20.0, 1.0]]);
    let shared = std::fs::read_to_string(repo_root().join("../shared/data/ch4-absorption-10nm.tsv")).ok();
    let shared: Vec<f64> = shared
        .iter()
        .flat_map(|t| t.lines().filter(|l| !l.starts_with('#') && !l.starts_with("band")).map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()))
        .collect();
    let (mut peak, mut peak_band, mut small_at_peak) = (0.0f64, 0, 0.0);
    for b in 0..40 {
        let centre = 2100.0 + 10.0 * b as f64;
        let table = resample(&wavelengths, &radiance, centre, 10.0, false);
        let reference = ls_slope(&table.map(f64::ln));
        let slope = ls_slope(&std::array::from_fn(|s| out[(b, s)].ln()));
        assert!((slope / reference - 1.0).abs() < 0.05, "{centre} nm: slope {slope:e} against mag1c's {reference:e}");
        if let Some(&published) = shared.get(b) {
            assert!((slope - published).abs() < 0.05 * published.abs().max(1e-7), "{centre} nm: slope {slope:e} against the shared table's {published:e}");
        }
        let small = (near_zero[(b, 1)] / near_zero[(b, 0)]).ln() / 20.0;
        if slope < peak {
            (peak, peak_band, small_at_peak) = (slope, b, small);
        }
    }
    let peak_nm = 2100 + 10 * peak_band;
    assert!((-1.5e-5..-1.1e-5).contains(&peak) && (2300..=2370).contains(&peak_nm), "peak slope {peak:e} at {peak_nm} nm");
    // The lines saturate: ln L falls more slowly than its slope at zero
    // says. At the peak band the derivative at ΔX → 0 exceeds the 0–16,000
    // least-squares slope by a tenth or more, and at 16,000 ppm·m the
    // drop in ln L is well short of the linear prediction.
    assert!(small_at_peak < 1.1 * peak, "d ln L/dΔX at 0 ({small_at_peak:e}) against the least-squares slope {peak:e}");
    let drop = (out[(peak_band, 6)] / out[(peak_band, 0)]).ln();
    assert!(drop > 0.9 * 16_000.0 * small_at_peak, "ln L falls {drop} at 16,000 ppm·m; linear from zero: {}", 16_000.0 * small_at_peak);
    println!(
        "peak {peak_nm} nm: least-squares slope {peak:e}, at ΔX → 0 {small_at_peak:e}; Δ ln L at 16,000 ppm·m {drop:.4} against {:.4} linear",
        16_000.0 * small_at_peak
    );
}

#[test]
fn ch4_rt_refuses_bad_configs_and_parameters_by_name() {
    for (config, expected) in [
        (r#"{"sensor": "hyperion"}"#, "`sensor` must be"),
        (r#"{"start": 1900}"#, "reaches beyond the embedded table"),
        (r#"{"fwhm": 0}"#, "`fwhm` must be a positive width"),
        (r#"{"start": 2400, "stop": 2300}"#, "start ≤ stop"),
        (r#"{"colour": 1}"#, "colour"),
    ] {
        let err = ch4_rt(config).err().unwrap();
        assert!(err.contains(expected), "{config}: {err}");
    }
    let mut sim = ch4_rt(r#"{"sensor": "emit", "airmass_parameter": true}"#).unwrap();
    assert_eq!(sim.info().parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["dx", "albedo", "airmass"]);
    assert_eq!(sim.info().output_size, 55);
    for (theta, expected) in [
        ([f64::NAN, 1.0, 1.0], "`dx` is NaN"),
        ([100.0, 0.0, 1.0], "`albedo` must be positive"),
        ([100.0, 1.0, -1.0], "`airmass` must be positive"),
        ([20_000.0, 1.0, 2.0], "outside"),
    ] {
        let err = sim.simulate(&DMatrix::from_column_slice(3, 1, &theta), 0).unwrap_err().to_string();
        assert!(err.contains(expected), "{theta:?}: {err}");
    }
    // The airmass lengthens the path through the enhancement.
    let out = sim.simulate(&DMatrix::from_column_slice(3, 2, &[1000.0, 1.0, 2.0, 2000.0, 1.0, 1.0]), 0).unwrap();
    assert!((0..55).all(|b| (out[(b, 0)] / out[(b, 1)] - 1.0).abs() < 1e-12));
}

/// A small methane set (32 × 32 pixels of 5 m) beside `cycles/methane.toml`'s
/// plugins; `extra` replaces lines of its `[scenes]`.
fn methane_set(dir: &std::path::Path, scenes: &str, plume_config: &str) -> std::path::PathBuf {
    let dist = repo_root().join("plugins/dist");
    let text = format!(
        r#"name = "methane-small"
transition = "L1_L2"
[simulator]
plugin = "{rt}"
[observations]
plugin = "{obs}"
config = {{ snr = 300.0 }}
[plume]
plugin = "{plume}"
config = {{ {plume_config} }}
[metrics]
plugin = "{metrics}"
[scenes]
{scenes}
"#,
        rt = dist.join("ch4-rt.wasm").display(),
        obs = dist.join("radiance-obs.wasm").display(),
        plume = dist.join("gaussian-plume.wasm").display(),
        metrics = dist.join("metrics-standard.wasm").display(),
    );
    let path = dir.join("methane-small.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const SMALL: &str = "seed = 4\nnx = 32\nny = 32\npixel = 5.0\ncount = 8\nemission = [20.0, 500.0]\nclear = 12\ncalibration = 8\n";

/// Steps 3–5 per pixel, small enough for a test, checked against the
/// row's contract.
fn pixel_steps() -> String {
    format!(
        r#"
[[prior]]
name = "dx"
normal = [1000.0, 1500.0]
[[prior]]
name = "albedo"
uniform = [0.5, 1.5]
[step3]
name = "emulator-small"
hidden = [64, 64]
log_outputs = true
max_epochs = 600
patience = 600
cosine = true
[step4]
pixels = 40
[step5]
name = "direct-small"
simulations = 3000
network = {{ components = 2, hidden = [64, 64], max_epochs = 300, batch = 128, patience = 300, halve_after = 0, cosine = true }}
[cycle]
contract = "{}"
"#,
        repo_root().join("contracts/methane-cycle.toml").display()
    )
}

/// The methane row end to end on a small set: scenes with known plumes
/// through the real plugins, the matched filter and IME (step 2) scored
/// against the truth; the emulator, retrievals through it and through
/// the physics, and the direct retrieval (steps 3–5); the cycle report
/// against contracts/methane-cycle.toml; everything registered in L1_L2,
/// and a second run loading the trained networks from the registry.
#[test]
fn methane_row_runs_steps_1_to_5_and_reports_against_its_contract() {
    let dir = tempfile::tempdir().unwrap();
    let set = methane_set(dir.path(), &format!("{SMALL}{}", pixel_steps()), "wind_speed = 3.0");
    let registry = dir.path().join("registry");
    let run = || {
        let out = crate::common::geohost(dir.path())
            .args(["run", set.to_str().unwrap(), "--json", "--registry", registry.to_str().unwrap(), "--out", dir.path().join("out").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        serde_json::from_str::<serde_json::Value>(&crate::common::stdout(&out)).unwrap()
    };
    let json = run();
    let summary = &json["summary"];
    let rows = json["scenes"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    // The emissions climb a geometric ladder from 20 to 500 kg/h.
    assert!((rows[0]["emission"].as_f64().unwrap() - 20.0).abs() < 1e-9 && (rows[7]["emission"].as_f64().unwrap() - 500.0).abs() < 1e-9);
    let sd = summary["background_sd"].as_f64().unwrap();
    assert!((50.0..400.0).contains(&sd), "background sd {sd} ppm·m");
    // Off the plume the filter is nearly unbiased for a small plume; a
    // large one is part of the background statistics (its radiance
    // pulls μ down along the target), so the rest of the scene reads low.
    let bias_bg: Vec<f64> = rows.iter().map(|r| r["bias_background"].as_f64().unwrap()).collect();
    assert!(bias_bg[0].abs() < 0.15 * sd, "background bias {bias_bg:?} (sd {sd})");
    assert!(bias_bg[7] < bias_bg[0] - 0.5 * sd, "background bias {bias_bg:?} (sd {sd})");
    assert!(rows[7]["detected"].as_bool().unwrap());
    // IME against the truth: within the blind-release range.
    let slope = summary["ime_slope"].as_f64().unwrap();
    assert!((0.76..1.25).contains(&slope), "IME slope {slope}");

    // Steps 3–5 on 40 test pixels from the prior.
    let pixels = &summary["pixels"];
    let (s3, s4, s5) = (&pixels["step3"], &pixels["step4"], &pixels["step5"]);
    assert_eq!(s3["loaded"], false);
    // Speeds are figures of the run (and limits of the contract), not
    // assertions here: this machine's load is not the test's business.
    assert!(s3["speedup"].as_f64().unwrap() > 0.0 && s3["emulator_us"].as_f64().unwrap() > 0.0, "{s3}");
    assert!(s3["worst_band_rmse_over_noise"].as_f64().unwrap() < 2.0, "{s3}");
    // The physics retrieval's sd is honest (z rms near 1 on 40 pixels) and
    // about the filter's background spread.
    let z = s4["z_rms_physics"].as_f64().unwrap();
    assert!((0.7..1.3).contains(&z), "{s4}");
    eprintln!("step 3 {s3}\nstep 4 {s4}\nstep 5 {s5}");
    assert!(s4["emulator_vs_physics"].as_f64().unwrap() < 1.0, "{s4}");
    let (rmse4, rmse5) = (s4["rmse_physics"].as_f64().unwrap(), s5["rmse"].as_f64().unwrap());
    assert!(rmse4 > 30.0 && rmse4 < 400.0 && rmse5 < 1.5 * rmse4, "step 4 RMSE {rmse4}, step 5 {rmse5}");
    assert!((0.6..1.5).contains(&s5["z_rms"].as_f64().unwrap()), "{s5}");

    // Step 5 on the scenes: per-pixel retrievals through the known
    // physics do not borrow the scene's statistics, so the large plume
    // leaves the background unbiased where the filter reads low.
    let direct_bg: Vec<f64> = rows.iter().map(|r| r["direct"]["bias_background"].as_f64().unwrap()).collect();
    assert!(direct_bg[7].abs() < 0.5 * bias_bg[7].abs(), "direct background bias {direct_bg:?}, filter {bias_bg:?}");
    assert!(summary["direct_ime_slope"].as_f64().unwrap() > 0.5, "{summary}");
    // Step 4 through the emulator on the scenes: per pixel through the
    // physics it knows, so no borrowed background bias either, and its
    // maps close to step 5's.
    let emulator_bg: Vec<f64> = rows.iter().map(|r| r["emulator"]["bias_background"].as_f64().unwrap()).collect();
    assert!(emulator_bg[7].abs() < 0.5 * bias_bg[7].abs(), "step-4 background bias {emulator_bg:?}, filter {bias_bg:?}");
    assert!(summary["emulator_ime_slope"].as_f64().unwrap() > 0.5, "{summary}");
    let csv = std::fs::read_to_string(dir.path().join("out/scenes.csv")).unwrap();
    assert!(csv.lines().all(|l| l.split(',').count() == 23), "{csv}");

    // The report: steps 1–5, every limit of the contract checked, the
    // verdict and the improvements follow from the checks.
    let report = &json["report"];
    let steps: Vec<u64> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5]);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9, "{checks:?}");
    let failed = checks.iter().filter(|c| c["pass"] == false).count();
    assert_eq!(report["verdict"], if failed == 0 { "pass" } else { "fail" });
    assert_eq!(report["contract"]["oracle_strength"], "classical_method");
    assert_eq!(report["improve"].as_array().unwrap().len(), failed);
    assert!(dir.path().join("out/pixels.nc").exists() && dir.path().join("out/cycle-report.json").exists());
    for name in ["scenes.csv", "scene-1.nc", "summary.json"] {
        assert!(dir.path().join("out").join(name).exists(), "{name}");
    }
    let csv = std::fs::read_to_string(dir.path().join("out/scenes.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9);
    // The row in the registry.
    let out =
        crate::common::geohost(dir.path()).args(["registry", "list", "--transition", "L1_L2", "--registry", registry.to_str().unwrap()]).output().unwrap();
    let listed = crate::common::stdout(&out);
    assert!(
        ["methane-small/matched-filter scenes", "methane-small/matched-filter scene-1", "methane-small/pixel retrievals", "cycle-report/methane-small"]
            .iter()
            .all(|name| listed.contains(name)),
        "{listed}"
    );
    assert!(!listed.contains("L3_L4") && listed.lines().count() >= 3, "{listed}");
    let out = crate::common::geohost(dir.path()).args(["registry", "list", "--transition", "L9", "--registry", registry.to_str().unwrap()]).output().unwrap();
    assert!(crate::common::stderr(&out).contains("choose one of L0_L1, L1_L2"), "{}", crate::common::stderr(&out));
    let out = crate::common::geohost(dir.path()).args(["matrix", "--registry", registry.to_str().unwrap()]).output().unwrap();
    let matrix = crate::common::stdout(&out);
    assert!(matrix.contains("L1→L2 retrieval (physics-first)") && matrix.contains("cycle-report/methane-small"), "{matrix}");

    // Again: the networks come from the registry, with the same figures.
    let again = run();
    let p2 = &again["summary"]["pixels"];
    assert_eq!(p2["step3"]["loaded"], true);
    assert_eq!(p2["step5"]["record"]["predictor_cache_hit"], true);
    assert_eq!(p2["step4"]["rmse_emulator"], s4["rmse_emulator"]);
    assert_eq!(p2["step5"]["rmse"], s5["rmse"]);
}

#[test]
fn methane_sets_refuse_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    for (scenes, plume, expected) in [
        (SMALL, "wind_speed = 3.0, nx = 10", "[plume] config sets `nx`"),
        ("nx = 32\nny = 32\nsource = [500.0, 10.0]\n", "", "lies outside the 160 × 160 m scene"),
        ("emission = [5.0, 1.0]\n", "", "0 < low ≤ high"),
        ("filter = { grouping = \"row\" }\n", "", "\"scene\" or \"column\""),
        ("colour = 1\n", "", "unknown field `colour`"),
        ("[step4]\npixels = 10\n", "", "add [step5]"),
        ("[[prior]]\nname = \"dx\"\nnormal = [0.0, 1.0]\n[step5]\nname = \"p\"\nsimulations = 100\n[step4]\n", "", "add [step3]"),
        ("[step5]\nname = \"p\"\nsimulations = 100\n", "", "need a [[prior]]"),
    ] {
        let set = methane_set(dir.path(), scenes, plume);
        let out = crate::common::geohost(dir.path()).args(["run", set.to_str().unwrap(), "--no-registry"]).output().unwrap();
        let err = crate::common::stderr(&out);
        assert!(!out.status.success() && err.contains(expected), "{scenes}: {err}");
    }
    // Contracts that cannot be checked.
    for (contract, expected) in [
        ("oracle_strength = \"gut_feeling\"\n", "`oracle_strength` must be one of physics_derived"),
        ("oracle_strength = \"heuristic\"\n[step3]\nmin_speedup = -1.0\n", "`step3.min_speedup` must be a positive number"),
        ("oracle_strength = \"heuristic\"\n[step2]\nime_slope = [1.2, 0.8]\n", "`step2.ime_slope` must be [low, high]"),
        ("oracle_strength = \"heuristic\"\n[step6]\nx = 1\n", "unknown field `step6`"),
    ] {
        let path = dir.path().join("bad-contract.toml");
        std::fs::write(&path, format!("name = \"c\"\nversion = \"1\"\ndomain = \"d\"\n{contract}")).unwrap();
        let set = methane_set(dir.path(), &format!("{SMALL}[cycle]\ncontract = \"{}\"\n", path.display()), "");
        let out = crate::common::geohost(dir.path()).args(["run", set.to_str().unwrap(), "--no-registry"]).output().unwrap();
        let err = crate::common::stderr(&out);
        assert!(!out.status.success() && err.contains(expected) && err.contains("bad-contract.toml"), "{contract}: {err}");
    }
    // A plume model as the radiance simulator.
    let set = methane_set(dir.path(), SMALL, "");
    let text = std::fs::read_to_string(&set).unwrap().replacen("ch4-rt.wasm", "gaussian-plume.wasm", 1);
    std::fs::write(&set, text).unwrap();
    let out = crate::common::geohost(dir.path()).args(["run", set.to_str().unwrap(), "--no-registry"]).output().unwrap();
    let err = crate::common::stderr(&out);
    assert!(err.contains("must take `dx` and `albedo`"), "{err}");
}

/// A retrieval benchmark for `step` of the small set, `limits` its
/// `[retrieval]` limits, two hidden batches of 40 pixels.
fn retrieval_contract(dir: &std::path::Path, set: &std::path::Path, step: u8, limits: &str, baseline: &str) -> std::path::PathBuf {
    let path = dir.join(format!("step{step}.toml"));
    let text = format!(
        "name = \"small-step{step}\"\nversion = \"1.0.0\"\ntask = \"step {step} of the small methane row\"\n[retrieval]\nplugin_set = \"{}\"\ntarget_step = {step}\npixels = 40\n{limits}\n[hidden]\nexperiments = 2\n[[baselines]]\n{baseline}\n",
        set.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Steps 3–5 of the methane row as retrieval benchmarks: components (the
/// run's own emulator and direct retrieval exported, the physics itself,
/// a wrongly configured physics, a component of the wrong world) scored on
/// the run's test pixels and on pixels drawn from secret seeds; results
/// files refused; a report recomputed byte for byte; the leaderboard.
#[test]
fn methane_retrieval_benchmarks_score_components_on_hidden_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let set = methane_set(dir.path(), &format!("{SMALL}{}", pixel_steps()), "wind_speed = 3.0");
    let geohost = || crate::common::geohost(dir.path());
    let ok = |args: &[&str]| {
        let out = geohost().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", crate::common::stderr(&out));
        crate::common::stdout(&out)
    };
    let json = ok(&["run", set.to_str().unwrap(), "--json", "--out", dir.path().join("out").to_str().unwrap()]);
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    let step4 = &summary["summary"]["pixels"]["step4"];

    let step3 = retrieval_contract(dir.path(), &set, 3, "max_band_rmse_over_noise = 2.0\nmin_fuel_speedup = 2.0", "emulator = \"emulator-small\"");
    let step4c = retrieval_contract(dir.path(), &set, 4, "max_emulator_vs_physics = 1.0", "emulator = \"emulator-small\"");
    let step5 = retrieval_contract(dir.path(), &set, 5, "draws = 200\nmax_rmse_over_step4 = 1.5\nmax_z_rms_error = 0.3", "predictor = \"direct-small\"");
    for c in [&step3, &step4c, &step5] {
        let out = ok(&["bench", "register", c.to_str().unwrap()]);
        assert!(out.contains("pre-registered retrieval benchmark") && out.contains("2 experiments, seeds committed"), "{out}");
    }
    let emulator = dir.path().join("emulator.wasm");
    let direct = dir.path().join("direct.wasm");
    ok(&["export", "emulator", "emulator-small", "-o", emulator.to_str().unwrap()]);
    ok(&["export", "posterior", "direct-small", "-o", direct.to_str().unwrap()]);
    let mut n = 0;
    let mut submit = |contract: &std::path::Path, component: &std::path::Path, config: &str| -> serde_json::Value {
        n += 1;
        let report = dir.path().join(format!("report-{n}.json"));
        let out = geohost()
            .args(["bench", "submit", contract.to_str().unwrap(), component.to_str().unwrap(), "--config", config, "--json", "--out", report.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        let mut value: serde_json::Value = serde_json::from_str(&crate::common::stdout(&out)).unwrap();
        value["path"] = report.to_str().unwrap().into();
        value
    };
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));

    // Step 3, the exported emulator: the same spectra as the emulator it
    // was exported from, on the public pixels and on hidden ones, and
    // cheaper than the physics in fuel.
    let r = submit(&step3, &emulator, "{}");
    let experiments = r["experiments"].as_array().unwrap();
    assert_eq!(experiments.len(), 3, "{r}");
    for e in experiments {
        let (c, b) = (&e["candidate"], &e["baselines"][0]);
        assert!((f(&c["worst_band_rmse_over_noise"]) - f(&b["worst_band_rmse_over_noise"])).abs() < 1e-3, "{e}");
    }
    assert_ne!(experiments[1]["candidate"], experiments[2]["candidate"], "the hidden batches are different pixels");
    let speedup = f(&r["candidate_scores"]["fuel_speedup"]);
    assert!(speedup > 2.0, "{r}");
    assert_eq!(r["verdict"], if r["checks"].as_array().unwrap().iter().all(|c| c["pass"] == true) { "pass" } else { "fail" });
    // The submission is registered under the component's own name, the
    // emulator's; exporting the emulator by that name again (the demo's
    // second run) still finds the weights, and writes the same bytes.
    let again = dir.path().join("emulator-again.wasm");
    ok(&["export", "emulator", "emulator-small", "-o", again.to_str().unwrap()]);
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&emulator).unwrap(), "the re-export differs");
    // The submission itself, named by its id, is no emulator to export.
    let submission = blake3::hash(&std::fs::read(&emulator).unwrap()).to_hex().to_string();
    let out = geohost().args(["export", "emulator", &submission[..12], "-o", again.to_str().unwrap()]).output().unwrap();
    let err = crate::common::stderr(&out);
    assert!(
        out.status.code() == Some(1)
            && err.contains("a step-3 emulator is needed")
            && err.contains(&format!("names blake3:{submission} (emulator-small, a submission with role none), not an artifact with role `emulator`")),
        "{err}"
    );
    // The physics itself is exact, but no cheaper than the physics.
    let r = submit(&step3, &plugin("ch4-rt"), "{}");
    assert_eq!(f(&r["candidate_scores"]["worst_band_rmse_over_noise"]), 0.0);
    assert!((f(&r["candidate_scores"]["fuel_speedup"]) - 1.0).abs() < 0.01, "{r}");
    assert_eq!(r["verdict"], "fail", "{}", r["checks"]);
    // Another sensor's bands do not fit: disqualified before scoring.
    let r = submit(&step3, &plugin("ch4-rt"), r#"{"sensor": "emit"}"#);
    assert_eq!(r["verdict"], "disqualified");
    let reason = r["submission"]["disqualified"]["reason"].as_str().unwrap();
    assert!(reason.contains("55 outputs") && reason.contains("81 bands"), "{reason}");

    // Step 4: the public experiment is the run's own test pixels, so the
    // oracle is the run's retrieval through the physics, to the bit.
    let r = submit(&step4c, &emulator, "{}");
    assert_eq!(r["experiments"][0]["oracle"]["rmse"], step4["rmse_physics"], "{r}");
    assert_ne!(r["experiments"][1]["oracle"]["rmse"], step4["rmse_physics"]);
    let public = &r["experiments"][0];
    assert!((f(&public["candidate"]["emulator_vs_physics"]) - f(&step4["emulator_vs_physics"])).abs() < 0.02, "{public} vs {step4}");
    let verify_report = r["path"].as_str().unwrap().to_string();
    // Through the physics itself: no difference at all.
    let r = submit(&step4c, &plugin("ch4-rt"), "{}");
    assert_eq!(f(&r["candidate_scores"]["emulator_vs_physics"]), 0.0, "{r}");
    assert_eq!(r["verdict"], "pass");
    // Through a physics with the wrong spectral response: far off, failed.
    let r = submit(&step4c, &plugin("ch4-rt"), r#"{"fwhm": 8.0}"#);
    assert!(f(&r["candidate_scores"]["emulator_vs_physics"]) > 1.0, "{r}");
    assert_eq!(r["verdict"], "fail");

    // Step 5: the exported direct retrieval scores as the predictor it
    // came from (draws' moments against the network's own).
    let r = submit(&step5, &direct, "{}");
    for e in r["experiments"].as_array().unwrap() {
        let (c, b) = (f(&e["candidate"]["rmse_over_step4"]), f(&e["baselines"][0]["rmse_over_step4"]));
        assert!((c - b).abs() < 0.1 * b, "{e}");
    }
    assert!((0.6..1.5).contains(&f(&r["candidate_scores"]["z_rms"])), "{r}");
    // An emulator is not a posterior: refused at load.
    let r = submit(&step5, &emulator, "{}");
    assert_eq!(r["verdict"], "disqualified");
    assert_eq!(r["submission"]["disqualified"]["stage"], "load", "{r}");

    // Results files are refused; an edited contract cannot reuse its version.
    let out = geohost().args(["bench", "score", step4c.to_str().unwrap(), "results.nc"]).output().unwrap();
    assert!(!out.status.success() && crate::common::stderr(&out).contains("never files of results"), "{}", crate::common::stderr(&out));
    let text = std::fs::read_to_string(&step4c).unwrap().replace("max_emulator_vs_physics = 1.0", "max_emulator_vs_physics = 5.0");
    std::fs::write(&step4c, text).unwrap();
    let out = geohost().args(["bench", "register", step4c.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && crate::common::stderr(&out).contains("cannot change"), "{}", crate::common::stderr(&out));
    let text = std::fs::read_to_string(&step4c).unwrap().replace("max_emulator_vs_physics = 5.0", "max_emulator_vs_physics = 1.0");
    std::fs::write(&step4c, text).unwrap();

    // Anyone with the registry recomputes a report to the byte.
    let out = ok(&["bench", "verify", &verify_report, "--contract", step4c.to_str().unwrap()]);
    assert!(out.contains("matches"), "{out}");
    let board = ok(&["bench", "leaderboard", step4c.to_str().unwrap()]);
    assert!(board.contains("by emulator_vs_physics") && board.contains("emulator-small") && board.contains("ch4-rt"), "{board}");
    // The three contracts in the row's cells of the matrix.
    let matrix = ok(&["matrix"]);
    let row = matrix.split("L1→L2").nth(1).unwrap_or_default();
    assert!((3..=5).all(|s| row.contains(&format!("contract small-step{s}@1.0.0"))), "{matrix}");
}

/// Retrieval benchmarks and `export emulator` refuse what they cannot use,
/// naming the field or the file: limits of another step, a baseline of
/// the wrong kind, a set without a prior, an unknown baseline, the
/// emulator template without weights, a file that is not an emulator.
#[test]
fn retrieval_benchmarks_and_the_emulator_export_refuse_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let set = methane_set(dir.path(), &format!("{SMALL}{}", pixel_steps()), "wind_speed = 3.0");
    let fails = |args: &[&str], expected: &[&str]| {
        let out = crate::common::geohost(dir.path()).args(args).output().unwrap();
        let err = crate::common::stderr(&out);
        assert!(!out.status.success() && expected.iter().all(|e| err.contains(e)), "{args:?}: {err}");
    };
    for (limits, baseline, expected) in [
        ("max_band_rmse_over_noise = 0.1", "emulator = \"e\"", vec!["step4.toml", "`retrieval.max_band_rmse_over_noise` does not apply to step 4"]),
        ("max_emulator_vs_physics = 0.1", "predictor = \"p\"", vec!["step4.toml", "[[baselines]] #1: a step-4 baseline is `emulator = NAME`"]),
        ("max_emulator_vs_physics = 0.1", "emulator = \"nowhere\"", vec!["[[baselines]] #1: emulator `nowhere`"]),
    ] {
        let contract = retrieval_contract(dir.path(), &set, 4, limits, baseline);
        fails(&["bench", "register", contract.to_str().unwrap()], &expected);
    }
    // A retrieval set without [[prior]] has no operating distribution.
    let bare = methane_set(dir.path(), SMALL, "wind_speed = 3.0");
    let contract = retrieval_contract(dir.path(), &bare, 3, "", "emulator = \"e\"");
    fails(&["bench", "register", contract.to_str().unwrap()], &["has no [[prior]]", "operating distribution"]);

    // The emulator template carries no weights and says how to fill it.
    fails(&["inspect", "--world", "static-model", plugin("emulator-mlp").to_str().unwrap()], &["carries no weights", "geohost export emulator"]);
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let out = dir.path().join("x.wasm");
    fails(&["export", "emulator", junk.to_str().unwrap(), "-o", out.to_str().unwrap()], &["junk.safetensors"]);
    assert!(!out.exists(), "nothing written");
}
