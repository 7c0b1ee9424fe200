//! Plugins written in Python (sdk/python, plugins/python, built by
//! plugins/build-python.sh with componentize-py) and JavaScript
//! (plugins/js, built by plugins/build-js.sh with componentize-js): the
//! same numbers as the Rust plugins, and failures that say what happened in
//! the plugin's own terms.

use crate::common::{geohost, geohost_shared_cache, plugin, shared_cache, stderr, stdout};
use geohost_sandbox::model::ForwardModel;
use geohost_sandbox::{Limits, MemberTable, MetricValue, Runtime, SandboxError, Table, WasmForward, WasmMetric, World};
use nalgebra::DMatrix;
use serde_json::Value;
use std::path::Path;

/// A Lorenz-96 twin experiment with an ETKF, through the given model and
/// operator components.
fn twin(dir: &Path, name: &str, model: &str, obs: &str, obs_config: &str) -> (Value, Vec<f64>) {
    let set = dir.join(format!("{name}.toml"));
    std::fs::write(
        &set,
        format!(
            "[model]\nplugin = \"{}\"\nconfig = {{ F = 8.0, size = 40 }}\n[observations]\nplugin = \"{}\"\nconfig = {obs_config}\n\
             [experiment]\ncycles = 1000\nburn_in = 5.0\nseed = 3\nx0 = \"e0\"\nx0_variance = 0.001\n[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n",
            plugin(model).display(),
            plugin(obs).display()
        ),
    )
    .unwrap();
    let out_dir = dir.join(name);
    let out = geohost_shared_cache(dir).args(["run", "-q", "--json", "--no-registry"]).arg(&set).arg("--out").arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let truth = netcdf3::FileReader::open(out_dir.join("truth.nc")).unwrap().read_var_f64("truth").unwrap();
    (rows[0].clone(), truth)
}

#[test]
fn the_python_lorenz96_and_operator_give_the_rust_truth_and_etkf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (rust, rust_truth) = twin(dir.path(), "rust", "lorenz96", "obs-subset", r#"{ select = "all", variance = 1.0 }"#);
    let (python, python_truth) = twin(dir.path(), "python", "lorenz96-py", "every-kth-py", "{ k = 1, variance = 1.0 }");
    // The Python model does RK4's arithmetic in the Rust plugin's order, and
    // wasm floats are IEEE doubles without fused multiply-adds: 1000 steps
    // of the truth and every ETKF cycle agree to the last bit.
    assert_eq!(rust_truth.len(), 1000 * 40);
    assert_eq!(python_truth, rust_truth, "truth trajectories differ");
    assert_eq!(python["rmse_a"], rust["rmse_a"], "{python} vs {rust}");
    assert_eq!(python["spread_a"], rust["spread_a"]);
    let rmse = rust["rmse_a"].as_f64().unwrap();
    assert!((0.15..0.25).contains(&rmse), "ETKF N=20 on Lorenz-96: {rmse}");
}

#[test]
fn the_javascript_lorenz96_gives_the_rust_truth_and_etkf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (rust, rust_truth) = twin(dir.path(), "rust", "lorenz96", "obs-subset", r#"{ select = "all", variance = 1.0 }"#);
    let (js, js_truth) = twin(dir.path(), "js", "lorenz96-js", "obs-subset", r#"{ select = "all", variance = 1.0 }"#);
    assert_eq!(js_truth, rust_truth, "truth trajectories differ");
    assert_eq!(js["rmse_a"], rust["rmse_a"], "{js} vs {rust}");

    // A config error is the plugin's own message; the component says it is JavaScript.
    let rt = Runtime::new(Limits::default(), Some(shared_cache())).unwrap();
    let loaded = rt.load("lorenz96-js", &plugin("lorenz96-js"), World::ForwardModel).unwrap();
    assert_eq!(loaded.language, geohost_sandbox::Language::JavaScript);
    let err = WasmForward::new(&rt, &loaded, r#"{"F": "x"}"#).err().unwrap().to_string();
    assert!(err.contains("rejected its config: config key `F` must be a finite number"), "{err}");
    let err = WasmForward::new(&rt, &loaded, r#"{"size": 3}"#).err().unwrap().to_string();
    assert!(err.contains("`size` must be an integer of at least 4"), "{err}");
}

#[test]
fn the_python_metric_agrees_with_metrics_standard() {
    let rt = Runtime::new(Limits::default(), Some(shared_cache())).unwrap();
    let metric = |name: &str, config: &str| {
        let loaded = rt.load(name, &plugin(name), World::Metric).unwrap();
        WasmMetric::new(&rt, &loaded, config).unwrap()
    };
    let (rows, cols, members) = (50, 7, 4);
    let reference: Vec<f64> = (0..rows * cols).map(|i| ((i * 37) % 101) as f64 / 10.0 - 5.0).collect();
    let prediction: Vec<f64> = reference.iter().enumerate().map(|(i, r)| r + ((i * 13) % 17) as f64 / 17.0 - 0.4).collect();
    let (p, r) = (Table { rows, cols, data: prediction.clone() }, Table { rows, cols, data: reference });
    let ens = MemberTable { members, rows, cols, data: (0..members).flat_map(|_| prediction.clone()).collect() };
    let scalar = |values: &[(String, MetricValue)], name: &str| match values.iter().find(|(n, _)| n == name) {
        Some((_, MetricValue::Scalar(x))) => *x,
        other => panic!("{name}: {other:?}"),
    };
    let python = metric("metric-rmse-py", "{}").compute(&p, &r, Some(&ens)).unwrap();
    let rust = metric("metrics-standard", r#"{"metrics": ["rmse", "bias"]}"#).compute(&p, &r, None).unwrap();
    for name in ["rmse", "bias"] {
        let (a, b) = (scalar(&python, name), scalar(&rust, name));
        assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "{name}: Python {a}, Rust {b}");
    }
    // A config error names the key, as a Rust plugin's does.
    let loaded = rt.load("metric-rmse-py", &plugin("metric-rmse-py"), World::Metric).unwrap();
    let err = WasmMetric::new(&rt, &loaded, r#"{"metrics": ["crps"]}"#).err().unwrap().to_string();
    assert!(err.contains("config key `metrics`") && err.contains("crps"), "{err}");
}

#[test]
fn a_raising_python_plugin_reports_its_exception_and_a_wasi_call_is_explained() {
    let rt = Runtime::new(Limits::default(), Some(shared_cache())).unwrap();
    let loaded = rt.load("hostile-py", &plugin("testkit-hostile-py"), World::ForwardModel).unwrap();
    assert_eq!(loaded.language, geohost_sandbox::Language::Python);
    let advance = |mode: &str| {
        let mut model = WasmForward::new(&rt, &loaded, &format!(r#"{{"mode": "{mode}", "size": 3}}"#)).unwrap();
        let mut states = DMatrix::from_element(3, 2, 1.0);
        model.advance(&mut states, 0.0, 0.05).map(|()| states)
    };
    assert_eq!(advance("ok").unwrap(), DMatrix::from_element(3, 2, 1.0));

    // An exception comes back as the call's error: type, message, where.
    let err = advance("raise").unwrap_err();
    let text = format!("{err:#}");
    assert!(
        matches!(err.downcast_ref::<SandboxError>(), Some(SandboxError::Returned { .. }))
            && text.contains("Python ValueError: state of 3 variables is not what this model expected")
            && text.contains("app.py:")
            && text.contains("in explode"),
        "{text}"
    );
    // print, time.time() and an exception that escapes the adapter trap in
    // the stubbed WASI; the message says what that means for Python.
    for mode in ["print", "time", "escape"] {
        let text = format!("{:#}", advance(mode).unwrap_err());
        assert!(text.contains("unreachable") && text.contains("componentize-py") && text.contains("print, time, random"), "{mode}: {text}");
        assert!(!text.contains("Rust plugin"), "{mode}: {text}");
    }
    // A config error names the key.
    let err = WasmForward::new(&rt, &loaded, r#"{"mode": "fly"}"#).err().unwrap().to_string();
    assert!(err.contains("config key `mode` must be one of ok, raise, print, time, escape"), "{err}");
    let err = WasmForward::new(&rt, &loaded, r#"{"size": 2.5}"#).err().unwrap().to_string();
    assert!(err.contains("config key `size` must be an integer"), "{err}");
}

#[test]
fn inspect_says_a_python_component_is_python_and_compiles_it_once() {
    let cache = tempfile::tempdir().unwrap();
    let inspect = || {
        let out = geohost(cache.path()).args(["inspect", "--world", "forward-model"]).arg(plugin("lorenz96-py")).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()
    };
    let first = inspect();
    assert_eq!(first["language"], "python");
    assert_eq!(first["info"]["name"], "lorenz96-py");
    assert!(first["note"].as_str().unwrap().contains("print, time, random"), "{first}");
    assert_eq!(first["compiled_from_cache"], false);
    assert_eq!(inspect()["compiled_from_cache"], true, "the second inspect reads the compiled component from the cache");
    // A Rust plugin has no such note.
    let out = geohost(cache.path()).args(["inspect", "--world", "forward-model"]).arg(plugin("lorenz96")).output().unwrap();
    let rust: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rust["language"], "rust");
    assert!(rust.get("note").is_none());
}

/// sdk/python/README.md's walk-through, from nothing to a Python model and
/// operator that `geohost run` uses, run as written.
#[test]
fn the_python_sdk_walk_through_runs_as_written() {
    let (text, tmp) = crate::authors::run_walk_through("sdk/python/README.md");
    let home = tmp.path().join("home");
    assert!(home.join("plugins/tide/dist/tide.wasm").is_file() && home.join("plugins/out/truth.nc").is_file());
    let rmse = |method: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(method)).unwrap_or_else(|| panic!("no {method} row:\n{text}"));
        line.split_whitespace().nth(if method == "ETKF" { 3 } else { 1 }).unwrap().parse().unwrap()
    };
    assert!(rmse("ETKF") < 0.1 * rmse("Climatology"), "{text}");
    assert!(home.join(".local/share/geohost/registry").is_dir(), "the run is recorded in the default registry");
}
