//! plugins/sbibm, the sbibm tasks as a stochastic `static-model`, checked
//! against each task's definition through the sandbox; and `config_file`,
//! which hands the Bernoulli GLM its (not redistributed) design matrix.

use crate::common::{geohost, plugin, stderr, stdout};
use geohost_sandbox::model::Simulator;
use geohost_sandbox::{Limits, Runtime, WasmSimulator, World};
use nalgebra::DMatrix;

fn simulator(config: &str) -> Result<WasmSimulator, String> {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let loaded = runtime.load("sbibm", &plugin("sbibm"), World::StaticModel).unwrap();
    WasmSimulator::new(&runtime, &loaded, config).map_err(|e| e.to_string())
}

/// x − θ over many simulations at one θ: its mean, variance and the
/// fraction within 0.3 of θ.
fn residuals(sim: &mut WasmSimulator, theta: &[f64], n: usize) -> (f64, f64, f64) {
    let d = theta.len();
    let thetas = DMatrix::from_fn(d, n, |i, _| theta[i]);
    let x = sim.simulate(&thetas, 11).unwrap();
    let r: Vec<f64> = x.iter().zip(thetas.iter()).map(|(x, t)| x - t).collect();
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r.len() - 1) as f64;
    (mean, var, r.iter().filter(|v| v.abs() < 0.3).count() as f64 / r.len() as f64)
}

/// gaussian_linear_uniform: x − θ ~ N(0, 0.1). gaussian_mixture: x − θ is
/// ½ N(0, 1) + ½ N(0, 0.01): variance 0.505 and 61.7% within 0.3 (closed
/// form: ½ erf(0.3/√2) + ½ erf(3/√2)). Tolerances are 5 standard errors.
#[test]
fn the_gaussian_tasks_draw_their_noise_as_sbibm_defines_it() {
    let mut linear = simulator(r#"{"task": "gaussian_linear_uniform"}"#).unwrap();
    assert_eq!(linear.info().parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()[..2], ["parameter_1", "parameter_2"]);
    assert!(linear.info().stochastic);
    let (mean, var, _) = residuals(&mut linear, &[0.3; 10], 4000);
    assert!(mean.abs() < 5.0 * (0.1f64 / 40_000.0).sqrt() && (var - 0.1).abs() < 5.0 * 0.1 * (2.0f64 / 40_000.0).sqrt(), "mean {mean}, variance {var}");
    let mut mixture = simulator(r#"{"task": "gaussian_mixture"}"#).unwrap();
    assert_eq!(mixture.info().output_size, 2);
    let (mean, var, within) = residuals(&mut mixture, &[-4.0, 7.5], 20_000);
    let expected = 0.5 * libm::erf(0.3 / std::f64::consts::SQRT_2) + 0.5 * libm::erf(3.0 / std::f64::consts::SQRT_2);
    assert!(
        mean.abs() < 0.03 && (var - 0.505).abs() < 0.03 && (within - expected).abs() < 0.02,
        "mean {mean}, variance {var}, within 0.3: {within} (expected {expected})"
    );
    // The two noise scales are drawn per simulation: a draw's two
    // coordinates share one, so they are large together.
    let x = mixture.simulate(&DMatrix::from_fn(2, 20_000, |_, _| 0.0), 3).unwrap();
    let both_small = x.column_iter().filter(|c| c[0].abs() < 0.3 && c[1].abs() < 0.3).count() as f64 / 20_000.0;
    let p_small = (0.5 * libm::erf(0.3 / std::f64::consts::SQRT_2)).powi(2) * 2.0 + 0.5 * libm::erf(3.0 / std::f64::consts::SQRT_2).powi(2);
    assert!((both_small - p_small).abs() < 0.02, "both within 0.3: {both_small}, expected {p_small}");
    for (config, expected) in [
        (r#"{}"#, "`task` is required"),
        (r#"{"task": "two_moons"}"#, "task `two_moons` is not one of"),
        (r#"{"task": "bernoulli_glm"}"#, "needs `design`"),
        (r#"{"task": "bernoulli_glm", "design": [1.0], "stimulus": []}"#, "`design` must hold 1000 finite numbers"),
    ] {
        let err = simulator(config).err().unwrap();
        assert!(err.contains(expected), "{config}: {err}");
    }
}

/// The Bernoulli GLM with a design of the offset column only and a
/// stimulus of ones: β₀ = √2·z₁ whatever the other z (the prior's offset
/// precision is ½ and uncoupled), so z₁ = 20 makes every bin spike: the
/// count is 100 and the spike-triggered sums Σ_{t≥m} y_t = 100 − m; and
/// z₁ = ln 4/√2 gives P(spike) = 0.8, a count near 80. Given through
/// `config_file`, as the task's plugin-set gives sbibm's design.
#[test]
fn the_bernoulli_glm_spikes_and_summarises_as_defined_and_takes_its_design_from_a_file() {
    let design: Vec<f64> = (0..1000).map(|i| if i % 10 == 0 { 1.0 } else { 0.0 }).collect();
    let config = serde_json::json!({ "task": "bernoulli_glm", "design": design, "stimulus": vec![1.0; 100] });
    let mut sim = simulator(&config.to_string()).unwrap();
    assert_eq!(sim.info().parameters[0].name, "z_1");
    let mut z = vec![0.4; 10];
    z[0] = 20.0;
    let x = sim.simulate(&DMatrix::from_column_slice(10, 1, &z), 1).unwrap();
    let want: Vec<f64> = std::iter::once(100.0).chain((0..9).map(|m| 100.0 - m as f64)).collect();
    assert_eq!(x.column(0).as_slice(), want.as_slice());
    z[0] = 4f64.ln() / 2f64.sqrt();
    let x = sim.simulate(&DMatrix::from_fn(10, 2000, |i, _| z[i]), 2).unwrap();
    let count = x.row(0).iter().sum::<f64>() / 2000.0;
    // Binomial(100, 0.8): sd 4 per draw, 0.09 for the mean of 2000.
    assert!((count - 80.0).abs() < 0.5, "mean spike count {count}");

    // config_file: the design from JSON, merged with the inline task.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("design.json");
    std::fs::write(&file, serde_json::json!({ "design": config["design"], "stimulus": config["stimulus"] }).to_string()).unwrap();
    let set = |extra: &str| {
        format!(
            "name = \"glm\"\n[simulator]\nplugin = \"{}\"\nconfig = {{ task = \"bernoulli_glm\" }}\n{extra}\n[observations]\nplugin = \"{}\"\nconfig = {{ select = \"all\", variance = 0.0 }}\n{}[step5]\nname = \"glm-posterior\"\nsimulations = 500\nnetwork = {{ estimator = \"nsf\", hidden = [16], max_epochs = 3 }}\n",
            plugin("sbibm").display(),
            plugin("obs-subset").display(),
            (1..=10).map(|i| format!("[[prior]]\nname = \"z_{i}\"\nnormal = [0.0, 1.0]\n")).collect::<String>()
        )
    };
    std::fs::write(dir.path().join("glm.toml"), set("config_file = \"design.json\"")).unwrap();
    let out = geohost(dir.path())
        .args(["train", "posterior", "--no-registry", "-q"])
        .arg(dir.path().join("glm.toml"))
        .arg("--out")
        .arg(dir.path().join("glm.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = {
        std::fs::write(dir.path().join("obs.csv"), want.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")).unwrap();
        let out = geohost(dir.path())
            .args(["posterior", "sample"])
            .arg(dir.path().join("glm.safetensors"))
            .arg("--obs")
            .arg(dir.path().join("obs.csv"))
            .args(["-n", "5"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(csv.lines().count(), 6, "a header and five draws from the flow: {csv}");
    for (extra, file_text, expected) in [
        ("config_file = \"missing.json\"", None, "missing.json: cannot read it"),
        ("config_file = \"design.json\"", Some(r#"{"task": "gaussian_mixture"}"#), "key `task` is also in `config`"),
        ("config_file = \"design.json\"", Some(r#"{"design": null}"#), "no nulls"),
        ("config_file = \"design.json\"", Some("[1, 2]"), "not a JSON object"),
    ] {
        if let Some(text) = file_text {
            std::fs::write(&file, text).unwrap();
        }
        std::fs::write(dir.path().join("bad.toml"), set(extra)).unwrap();
        let out = geohost(dir.path()).args(["train", "posterior", "--no-registry", "-q"]).arg(dir.path().join("bad.toml")).output().unwrap();
        assert!(!out.status.success() && stderr(&out).contains(expected) && stderr(&out).contains("[simulator]"), "{extra}: {}", stderr(&out));
    }
}

/// `perf posterior --task` refuses what it cannot run and says what to do:
/// an unknown task, sbibm's files not fetched, an unknown estimator.
#[test]
fn perf_posterior_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let sets = crate::common::repo_root().join("cycles/sbibm");
    let perf = |args: &[&str]| {
        let out =
            geohost(dir.path()).args(["perf", "posterior"]).args(args).arg("--sets").arg(&sets).arg("--data").arg(dir.path().join("nothing")).output().unwrap();
        assert!(!out.status.success());
        stderr(&out)
    };
    let err = perf(&["--task", "two_moons"]);
    assert!(err.contains("no plugin-set") && err.contains("two_moons.toml") && err.contains("tasks: gaussian_linear_uniform"), "{err}");
    let err = perf(&["--task", "gaussian_mixture"]);
    assert!(err.contains("has no sbibm reference posteriors: run scripts/fetch-sbibm.sh"), "{err}");
    let err = perf(&["--task", "gaussian_mixture", "--estimator", "glow"]);
    assert!(err.contains("--estimator glow: expected mdn, nsf or maf"), "{err}");
}
