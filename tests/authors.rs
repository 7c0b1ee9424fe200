//! A third party's plugin, from a folder outside the repository: made by
//! `geohost new plugin`, built by `plugins/build.sh DIR`, checked by
//! `geohost inspect` and run in a twin experiment.

use crate::common::{geohost, plugin, repo_root, stderr, stdout};
use serde_json::Value;

/// Build one generated plugin folder, sharing the plugin workspace's
/// target directory (its from-source standard library is built already).
fn build(dir: &std::path::Path) {
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("plugins/build.sh"))
        .arg(dir)
        .env("CARGO_TARGET_DIR", repo_root().join("plugins/target"))
        .output()
        .unwrap();
    assert!(out.status.success(), "plugins/build.sh {}: {}", dir.display(), stderr(&out));
}

#[test]
fn a_generated_plugin_of_every_world_builds_outside_the_repository_and_runs() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for world in ["forward-model", "obs-operator", "metric", "static-model"] {
        let name = format!("my-{world}");
        let out = geohost(h).args(["new", "plugin", &name, "--world", world, "--dir"]).arg(h).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("plugins/build.sh"), "it says how to build: {}", stdout(&out));
        build(&h.join(&name));
        let wasm = h.join(&name).join("dist").join(format!("{name}.wasm"));
        let out = geohost(h).args(["inspect", "--world", world]).arg(&wasm).output().unwrap();
        assert!(out.status.success(), "{world}: {}", stderr(&out));
        let info: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(info["info"]["name"], name.as_str());
    }
    // Asked twice, it refuses rather than overwrite.
    let out = geohost(h).args(["new", "plugin", "my-metric", "--world", "metric", "--dir"]).arg(h).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = geohost(h).args(["new", "plugin", "9lives", "--world", "metric", "--dir"]).arg(h).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("is not a crate name"), "{}", stderr(&out));

    // The generated forward model in a twin experiment with 3D-Var.
    let set = h.join("oscillators.toml");
    std::fs::write(
        &set,
        format!(
            "[model]\nplugin = \"{}\"\nconfig = {{ pairs = 4 }}\n[observations]\nplugin = \"{}\"\nconfig = {{ select = \"all\", variance = 0.01 }}\n[experiment]\ncycles = 200\nburn_in = 1.0\nseed = 1\nx0 = 1.0\nx0_variance = 0.1\n[[method]]\nmethod = \"climatology\"\n[[method]]\nmethod = \"3dvar\"\nxB = 0.1\n",
            h.join("my-forward-model/dist/my-forward-model.wasm").display(),
            plugin("obs-subset").display()
        ),
    )
    .unwrap();
    let out = geohost(h).args(["run", "--json", "--no-registry"]).arg(&set).arg("--out").arg(h.join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let rmse = |i: usize| rows[i]["rmse_a"].as_f64().unwrap_or_else(|| panic!("{}", rows[i]));
    assert!(rmse(1) < rmse(0), "3D-Var ({}) beats climatology ({}) on the generated model", rmse(1), rmse(0));
}
