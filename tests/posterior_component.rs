//! A trained step-5 posterior exported as a `posterior` component
//! (`geohost export posterior`): its draws against the native predictor's
//! (C2ST), its density against the native density, determinism, and the
//! errors of the template and of the export; then the component submitted
//! to a posterior benchmark with hidden observations.

use crate::common::{geohost, plugin, stderr, stdout};
use geohost_da::params::prior::{Prior, PriorSpec};
use geohost_learn::c2st::{c2st, Spec};
use geohost_learn::mdn::{Mdn, MdnSpec};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// θ from a prior with a truncated normal, an unbounded normal and a
/// uniform marginal (so the component's bijections are all exercised),
/// x = θ + N(0, 0.1·I); an MDN trained on 4000 pairs.
fn trained() -> Mdn {
    let sd = 0.1f64.sqrt();
    let names: Vec<String> = (0..3).map(|i| format!("theta{i}")).collect();
    let specs = vec![
        PriorSpec { name: names[0].clone(), uniform: None, normal: Some([0.0, sd]), bounds: Some([-1.0, 1.0]) },
        PriorSpec { name: names[1].clone(), uniform: None, normal: Some([0.5, sd]), bounds: None },
        PriorSpec { name: names[2].clone(), uniform: Some([-1.0, 1.0]), normal: None, bounds: None },
    ];
    let prior = Prior::new(&specs, &names).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut thetas = DMatrix::zeros(3, 4000);
    for mut col in thetas.column_iter_mut() {
        col.copy_from_slice(&prior.sample(&mut rng));
    }
    let xs = thetas.map(|t| t + sd * rng.sample::<f64, _>(rand_distr::StandardNormal));
    let spec = MdnSpec { components: 3, max_epochs: 120, seed: 4, ..MdnSpec::default() };
    Mdn::train(&prior, &thetas, &xs, None, &spec, &mut |_, _, _| {}).unwrap().0
}

fn csv_draws(text: &str) -> DMatrix<f64> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("theta0,theta1,theta2"), "{text}");
    let rows: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    DMatrix::from_fn(3, rows.len(), |i, j| rows[j][i])
}

#[test]
fn an_exported_posterior_draws_like_the_native_predictor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mdn = trained();
    let weights = d.join("lin-posterior.safetensors");
    std::fs::write(&weights, mdn.to_safetensors(&serde_json::json!({})).unwrap()).unwrap();
    let component = d.join("lin-posterior.wasm");
    let out = geohost(d).args(["export", "posterior", weights.to_str().unwrap(), "-o", component.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("posterior `lin-posterior` 0.1.0, 3 parameters (theta0, theta1, theta2), data size 3"), "{}", stderr(&out));

    // --register keeps it in the registry as a plugin of step 5.
    let out = geohost(d).args(["export", "posterior", weights.to_str().unwrap(), "-o", component.to_str().unwrap(), "--register"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id, format!("blake3:{}", blake3::hash(&std::fs::read(&component).unwrap()).to_hex()), "the same bytes on every export");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&geohost(d).args(["registry", "--json", "show", &id]).output().unwrap())).unwrap();
    assert_eq!(
        (shown["kind"].as_str(), shown["step"].as_u64(), shown["metadata"]["world"].as_str()),
        (Some("plugin"), Some(5), Some("posterior")),
        "{shown:#}"
    );

    // inspect describes it.
    let out = geohost(d).args(["inspect", "--world", "posterior", component.to_str().unwrap()]).output().unwrap();
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(info["info"]["parameters"], serde_json::json!(["theta0", "theta1", "theta2"]));
    assert_eq!(info["info"]["has_log_prob"], true);

    for (k, x) in [[0.1, 0.4, -0.2], [0.6, 0.9, 0.8]].iter().enumerate() {
        let obs = d.join(format!("y{k}.txt"));
        std::fs::write(&obs, x.map(|v| v.to_string()).join(" ")).unwrap();
        let sample = |seed: &str| {
            let out = geohost(d)
                .args(["posterior", "sample", component.to_str().unwrap(), "--obs", obs.to_str().unwrap(), "-n", "2000", "--seed", seed])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
        };
        let text = sample("3");
        assert_eq!(text, sample("3"), "the same seed gives the same draws");
        assert_ne!(text, sample("4"));
        let exported = csv_draws(&text);
        assert!(
            exported.row(0).iter().all(|t| (-1.0..=1.0).contains(t)) && exported.row(2).iter().all(|t| (-1.0..=1.0).contains(t)),
            "inside the prior's support"
        );
        let native = mdn.sample(x, 2000, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        // Same distribution, other random streams: C2ST near 0.5 (its
        // sd at 2 × 2000 samples is about 0.011).
        let score = c2st(&native, &exported, Spec::default()).unwrap();
        eprintln!("x = {x:?}: C2ST {score:.3}");
        assert!(score < 0.55, "C2ST of the component's draws against the predictor's: {score} for x = {x:?}");

        // The density, in the sandbox, at the predictor's draws.
        let runtime = geohost_sandbox::Runtime::new(geohost_sandbox::Limits::default(), None).unwrap();
        let loaded = runtime.load("lin-posterior", &component, geohost_sandbox::World::Posterior).unwrap();
        let mut posterior = geohost_sandbox::WasmPosterior::new(&runtime, &loaded, "{}", None).unwrap();
        let theirs = posterior.log_prob(x, &native.columns(0, 200).into_owned()).unwrap();
        let ours = mdn.log_prob(x, &native.columns(0, 200).into_owned()).unwrap();
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("x = {x:?}: log q within {worst:.1e}");
        // Measured: C2ST 0.494 and 0.495, log q within 1e-6 (f32 sums in
        // another order).
        assert!(worst < 1e-4, "log q differs by {worst}");
        // Outside the support: −∞ on both sides.
        let outside = DMatrix::from_column_slice(3, 1, &[1.5, 0.0, 0.0]);
        assert_eq!(posterior.log_prob(x, &outside).unwrap()[0], f64::NEG_INFINITY);
        // A wrong-length observation is an error naming the sizes.
        let err = posterior.sample(&[0.0; 2], 10, 1).unwrap_err().to_string();
        assert!(err.contains("an observation of 2 values") && err.contains("3 values (its data size)"), "{err}");
    }
}

#[test]
fn the_template_and_the_export_refuse_what_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The template carries no weights and says how to make a component.
    let out = geohost(d).args(["inspect", "--world", "posterior", plugin("posterior-mdn").to_str().unwrap()]).output().unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("carries no weights: make a posterior component with `geohost export posterior"),
        "{}",
        stderr(&out)
    );
    // Not a predictor.
    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let out = geohost(d).args(["export", "posterior", junk.to_str().unwrap(), "-o", d.join("x.wasm").to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("is not a safetensors file") && !d.join("x.wasm").exists(), "{}", stderr(&out));
    // An exported component is not a template: its slot is full.
    let template = std::fs::read(plugin("posterior-mdn")).unwrap();
    let filled = geohost_learn::export::fill(&template, b"weights").unwrap();
    assert!(geohost_learn::export::fill(&filled, b"more").unwrap_err().to_string().contains("not empty"));
    assert!(geohost_learn::export::fill(b"no slot here", b"x").unwrap_err().to_string().contains("has 0 weights slots"));
    let too_big = vec![0u8; geohost_learn::export::CAPACITY + 1];
    assert!(geohost_learn::export::fill(&template, &too_big).unwrap_err().to_string().contains("holds at most"));
    // A filled slot whose payload is garbage: init says so, no panic.
    let path = d.join("garbage.wasm");
    std::fs::write(&path, &filled).unwrap();
    let out = geohost(d).args(["inspect", "--world", "posterior", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("rejected its config") && !stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// The plume problem of the inference tests with a quickly trained
/// single-stage posterior.
const STEP5: &str = "[step5]\nname = \"plume-bench-posterior\"\nsimulations = 3000\nseed = 2\nnetwork = { components = 2, max_epochs = 30, seed = 2 }\n";

/// The exported posterior and its native predictor on the same hidden
/// observations: the same C2ST against the MCMC oracle to within 0.03;
/// a results file refused; the template, a filter and a mismatched
/// problem each disqualified; rescoring gives the same bytes.
#[test]
fn an_exported_posterior_scores_like_its_predictor_on_hidden_observations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = geohost(d).current_dir(d).args(args).output().unwrap();
        assert!(out.status.success(), "geohost {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let set = d.join("plume.toml");
    let plume = crate::infer::PLUME.replace("{sim}", plugin("gaussian-plume").to_str().unwrap()).replace("{obs}", plugin("column-obs").to_str().unwrap());
    std::fs::write(&set, plume + STEP5).unwrap();
    run(&["train", "posterior", "-q", set.to_str().unwrap(), "--out", d.join("posterior.safetensors").to_str().unwrap()]);
    let component = d.join("plume-posterior.wasm");
    run(&["export", "posterior", "plume-bench-posterior", "-o", component.to_str().unwrap()]);
    let contract = d.join("step5.toml");
    std::fs::write(
        &contract,
        "name = \"plume-step5-test\"\nversion = \"1\"\ntask = \"the plume source from one image\"\n[posterior]\nplugin_set = \"plume.toml\"\ndraws = 1000\nmax_c2st = 0.999\n[hidden]\nexperiments = 2\n[[baselines]]\npredictor = \"plume-bench-posterior\"\n",
    )
    .unwrap();
    let contract = contract.to_str().unwrap();
    let registered = run(&["bench", "register", "-q", contract]);
    assert!(registered.contains("hidden     2 observations"), "{registered}");
    assert!(run(&["bench", "register", "-q", contract]).contains("already pre-registered"));
    // Listed with every other pre-registered contract.
    let listed = run(&["registry", "list", "--kind", "contract", "--tag", "pre-registered"]);
    assert!(listed.contains("plume-step5-test"), "{listed}");

    let submit = |component: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&run(&["bench", "submit", "--json", contract, component.to_str().unwrap()])).unwrap()
    };
    let report = submit(&component);
    let experiments = report["experiments"].as_array().unwrap();
    assert_eq!(experiments.iter().map(|e| e["experiment"].as_str().unwrap()).collect::<Vec<_>>(), ["public", "hidden 1", "hidden 2"]);
    for e in experiments {
        let (mine, native) = (e["candidate"].as_f64().unwrap(), e["baselines"][0].as_f64().unwrap());
        eprintln!("{}: exported {mine:.3}, native {native:.3}", e["experiment"]);
        assert!((mine - native).abs() <= 0.03, "{}: the exported posterior's C2ST {mine} against the native predictor's {native}", e["experiment"]);
    }
    assert_eq!(report["provenance"], "component");
    assert_eq!(report["submission"]["world"], "posterior");
    assert!(report["submission"]["fuel_total"].as_u64().unwrap() > 0);
    assert_eq!(report["commitments"].as_array().unwrap().len(), 2);
    assert_eq!(report["verdict"], "pass", "{report:#}");
    // Rescoring gives the same report, fuel included.
    assert_eq!(submit(&component), report);
    // The component is registered as a submission scored by the report.
    let listed: serde_json::Value = serde_json::from_str(&run(&["registry", "--json", "list", "--kind", "submission"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");

    // A results file is refused.
    let out = geohost(d).current_dir(d).args(["bench", "score", contract, d.join("posterior.safetensors").to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("is a posterior benchmark") && stderr(&out).contains("geohost bench submit"), "{}", stderr(&out));

    // Disqualified, each with its stage; only a report is registered.
    let lin = d.join("lin.wasm");
    let weights = d.join("lin.safetensors");
    std::fs::write(&weights, trained().to_safetensors(&serde_json::json!({})).unwrap()).unwrap();
    run(&["export", "posterior", weights.to_str().unwrap(), "-o", lin.to_str().unwrap()]);
    for (component, stage, words) in [
        (plugin("posterior-mdn"), "init", "carries no weights"),
        (plugin("filter-etkf"), "load", "is a filter plugin, not a posterior plugin"),
        (lin, "init", "it samples parameters [theta0, theta1, theta2] from data of size 3, but the contract's problem has parameters [x0, y0, q, wind_dir] and data of size 256"),
    ] {
        let before = serde_json::from_str::<serde_json::Value>(&run(&["registry", "--json", "list"])).unwrap().as_array().unwrap().len();
        let report = submit(&component);
        assert_eq!(report["verdict"], "disqualified", "{report:#}");
        let dq = &report["submission"]["disqualified"];
        assert_eq!(dq["stage"], stage, "{dq}");
        assert!(dq["reason"].as_str().unwrap().contains(words), "{dq}");
        assert!(report["ranking"].as_array().unwrap().iter().all(|r| r["role"] != "candidate"));
        let after = serde_json::from_str::<serde_json::Value>(&run(&["registry", "--json", "list"])).unwrap().as_array().unwrap().len();
        assert_eq!(after, before + 1, "only the report is new");
    }
}

/// A flow predictor exported: a two-layer neural spline flow (the second
/// layer takes the parameters in reverse order) and an affine flow, on
/// the problem of [`trained`] (bounded, unbounded and uniform marginals).
/// The component's draws against the native flow's (C2ST) and its
/// log-density at the native draws.
#[test]
fn an_exported_flow_draws_and_scores_like_the_native_flow() {
    use geohost_learn::density::Density;
    use geohost_learn::mdn::Estimator;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mdn = trained();
    let prior = mdn.prior.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut thetas = DMatrix::zeros(3, 4000);
    for mut col in thetas.column_iter_mut() {
        col.copy_from_slice(&prior.sample(&mut rng));
    }
    let xs = thetas.map(|t| t + 0.1f64.sqrt() * rng.sample::<f64, _>(rand_distr::StandardNormal));
    for (estimator, layers, kind) in [(Estimator::Nsf, Some(2), "nsf"), (Estimator::Maf, None, "maf")] {
        let spec = MdnSpec { estimator, layers, max_epochs: 60, seed: 4, ..MdnSpec::default() };
        let (flow, _) = Density::train(&prior, &thetas, &xs, None, &spec, &mut |_, _, _| {}).unwrap();
        let weights = d.join(format!("{kind}.safetensors"));
        std::fs::write(&weights, flow.to_safetensors(&serde_json::json!({})).unwrap()).unwrap();
        let component = d.join(format!("{kind}.wasm"));
        let out = geohost(d).args(["export", "posterior", weights.to_str().unwrap(), "-o", component.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("posterior `{kind}` 0.1.0, 3 parameters")) && stderr(&out).contains(&format!("estimator {kind};")),
            "{}",
            stderr(&out)
        );
        let runtime = geohost_sandbox::Runtime::new(geohost_sandbox::Limits::default(), None).unwrap();
        let loaded = runtime.load(kind, &component, geohost_sandbox::World::Posterior).unwrap();
        let mut posterior = geohost_sandbox::WasmPosterior::new(&runtime, &loaded, "{}", None).unwrap();
        for x in [[0.1, 0.4, -0.2], [0.6, 0.9, 0.8]] {
            let native = flow.sample(&x, 1000, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
            // 1000 draws a call: a draw of the five-layer affine flow runs 15
            // conditioners one row at a time (about 1M fuel).
            let exported = posterior.sample(&x, 1000, 5).unwrap();
            assert!(exported.row(0).iter().all(|t| (-1.0..=1.0).contains(t)), "inside the prior's support");
            let score = c2st(&native, &exported, Spec::default()).unwrap();
            let theirs = posterior.log_prob(&x, &native.columns(0, 200).into_owned()).unwrap();
            let ours = flow.log_prob(&x, &native.columns(0, 200).into_owned()).unwrap();
            let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            eprintln!("{kind}, x = {x:?}: C2ST {score:.3}, log q within {worst:.1e}");
            assert!(score < 0.55, "{kind}: C2ST of the component's draws against the flow's: {score} for x = {x:?}");
            assert!(worst < 1e-4, "{kind}: log q differs by {worst}");
        }
    }
}
