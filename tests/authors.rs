//! A third party's plugin, from a folder outside the repository: made by
//! `geohost new plugin`, built by `plugins/build.sh DIR`, checked by
//! `geohost inspect` and run in a twin experiment; and the README's
//! walk-through for plugin authors, run as written.

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
    assert!(!out.status.success() && stderr(&out).contains("is not a plugin name"), "{}", stderr(&out));

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

/// Build one generated Python plugin folder with plugins/build-python.sh.
pub fn build_python(dir: &std::path::Path) {
    let out = std::process::Command::new("bash").arg(repo_root().join("plugins/build-python.sh")).arg(dir).output().unwrap();
    assert!(out.status.success(), "plugins/build-python.sh {}: {}", dir.display(), stderr(&out));
}

/// The Python templates of the worlds no other test builds: the forward
/// model and operator are built and run by sdk/python/README.md's
/// walk-through (tests/languages.rs), the filter submitted to a hidden
/// contract (tests/submit.rs).
#[test]
fn a_generated_python_metric_and_simulator_build_and_run() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for world in ["metric", "static-model"] {
        let name = format!("py-{world}");
        let out = geohost(h).args(["new", "plugin", &name, "--world", world, "--lang", "python", "--dir"]).arg(h).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("plugins/build-python.sh"), "it says how to build: {}", stdout(&out));
        assert!(h.join(&name).join("app.py").is_file() && h.join(&name).join("plugin.toml").is_file());
        build_python(&h.join(&name));
        let wasm = h.join(&name).join("dist").join(format!("{name}.wasm"));
        let out = geohost(h).args(["inspect", "--world", world]).arg(&wasm).output().unwrap();
        assert!(out.status.success(), "{world}: {}", stderr(&out));
        let info: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(info["info"]["name"], name.as_str());
        assert_eq!(info["language"], "python");
    }
    let out = geohost(h).args(["new", "plugin", "x", "--world", "metric", "--lang", "python", "--sdk", "/tmp", "--dir"]).arg(h).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("--sdk is for Rust plugins"), "{}", stderr(&out));

    // The generated simulator trains a step-5 posterior from a set with
    // only a simulator, an operator, priors and [step5].
    let set = h.join("line.toml");
    std::fs::write(
        &set,
        format!(
            "[simulator]\nplugin = \"{}\"\nconfig = {{ points = 5 }}\n[observations]\nplugin = \"{}\"\nconfig = {{ select = \"all\", variance = 0.01 }}\n\
             [[prior]]\nname = \"slope\"\nuniform = [-3.0, 3.0]\n[[prior]]\nname = \"intercept\"\nuniform = [-2.0, 2.0]\n\
             [step5]\nname = \"line-posterior\"\nsimulations = 500\nnetwork = {{ components = 1, max_epochs = 3 }}\n",
            h.join("py-static-model/dist/py-static-model.wasm").display(),
            plugin("obs-subset").display()
        ),
    )
    .unwrap();
    let out = geohost(h).args(["train", "posterior", "-q", "--no-registry"]).arg(&set).arg("--out").arg(h.join("line.safetensors")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(h.join("line.safetensors").is_file());
}

/// Run a document's walk-through as written: the `sh` block after its
/// `<!-- walk-through` marker, line for line, in a folder laid out like a
/// fresh clone (cycles/, contracts/ and plugins/ of this repository), with
/// a fresh HOME and this build's `geohost` first on the PATH. Returns its
/// standard output and the HOME it ran in.
pub fn run_walk_through(document: &str) -> (String, tempfile::TempDir) {
    let text = std::fs::read_to_string(repo_root().join(document)).unwrap();
    let marker = text.find("<!-- walk-through").unwrap_or_else(|| panic!("{document} has the walk-through marker"));
    let start = marker + text[marker..].find("```sh\n").expect("a sh block after the marker") + 6;
    let block = &text[start..start + text[start..].find("\n```\n").unwrap() + 1];

    let tmp = tempfile::tempdir().unwrap();
    let (clone, home) = (tmp.path().join("clone"), tmp.path().join("home"));
    std::fs::create_dir_all(&clone).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    for dir in ["cycles", "contracts", "plugins"] {
        std::os::unix::fs::symlink(repo_root().join(dir), clone.join(dir)).unwrap();
    }
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_geohost")).parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))).unwrap();
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(&clone)
        .env("HOME", &home)
        .env("PATH", path)
        .env_remove("GEOHOST_REGISTRY")
        // Not part of the walk-through: compiled components shared between tests.
        .env("GEOHOST_CACHE_DIR", crate::common::shared_cache())
        // Shares the plugin workspace's from-source standard library.
        .env("CARGO_TARGET_DIR", repo_root().join("plugins/target"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "the walk-through of {document} failed:\n{block}\n{text}\n{}", stderr(&out));
    (text, tmp)
}

/// The README's walk-through, from an empty folder to a scored plugin.
#[test]
fn the_readme_walk_through_takes_a_new_filter_from_an_empty_folder_to_a_scored_submission() {
    let (text, tmp) = run_walk_through("README.md");
    assert!(tmp.path().join("home/plugins/my-enkf/dist/my-enkf.wasm").is_file());
    assert!(text.contains("verdict: pass"), "the generated EnKF passes the hidden benchmark:\n{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("1  my-enkf@0.1.0")).unwrap_or_else(|| panic!("ranked first on the leaderboard:\n{text}"));
    assert!(row.contains("component") && row.contains("hidden mean"), "{row}");
    let rmse: f64 = row.split_whitespace().find_map(|w| w.parse::<f64>().ok().filter(|v| *v < 1.0 && w.contains('.'))).unwrap();
    assert!((0.18..0.26).contains(&rmse), "EnKF N=40 infl 1.06: DAPPER publishes 0.22, hidden RMSE {rmse}");
    // The report's page, with a rank histogram of N + 1 = 41 bars per row.
    let page = std::fs::read_dir(tmp.path().join("home/plugins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("lorenz96-step2-hidden-"))
        .expect("the page, named by the report's id");
    let dom = crate::pages::render(&page, "walk-through-report");
    assert!(dom.contains(r#"<span id="verdict" class="verdict-pass">pass</span>"#), "{page:?}");
    let hist = &dom[dom.find("<figure class=\"rank-histogram\"").expect("rank histograms")..];
    let first = &hist[..hist.find("</svg>").unwrap()];
    assert_eq!(first.matches("<rect class=\"bar\"").count(), 41, "{first}");
}
