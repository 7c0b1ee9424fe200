//! Benchmark contracts through the real binary: pre-registration, scoring
//! with the real metric component into registered reports, report diffs,
//! cycle benchmarks, and every refusal a user can hit.

use crate::common::{geohost, lorenz96_set, plugin, stderr, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const METHODS: &str = r#"
[output]
members_every = 5

[[method]]
method = "climatology"

[[method]]
method = "etkf"
N = 20
infl = 1.04

[[method]]
method = "etkf"
N = 10
infl = 1.06

[[method]]
method = "3dvar"
xB = 0.02
"#;

/// A test workspace: a plugin-set run once, and a private registry.
struct Bench {
    dir: tempfile::TempDir,
    /// `geohost run --json` rows.
    rows: Vec<Value>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let set = lorenz96_set(dir.path(), 600, METHODS);
        let out = geohost(dir.path()).args(["run", "-q", "--json"]).arg(&set).arg("--out").arg(dir.path().join("out")).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let rows = serde_json::from_str(&stdout(&out)).unwrap();
        Bench { dir, rows }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn output(&self, file: &str) -> PathBuf {
        self.path("out").join(file)
    }

    fn cmd(&self, args: &[&str]) -> Output {
        geohost(self.dir.path()).current_dir(self.dir.path()).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "geohost {args:?} failed:\n{}", stderr(&out));
        stdout(&out)
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(!out.status.success(), "geohost {args:?} should have failed:\n{}", stdout(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    /// Write a contract file; `edit` rewrites the default text.
    fn contract(&self, file: &str, edit: impl Fn(String) -> String) -> String {
        let text = edit(contract_text(&self.path("set.toml")));
        std::fs::write(self.path(file), text).unwrap();
        self.path(file).display().to_string()
    }

    fn rmse_a(&self, label: &str) -> f64 {
        self.rows.iter().find(|r| r["label"] == label).unwrap()["rmse_a"].as_f64().unwrap()
    }

    fn artifact_count(&self) -> usize {
        serde_json::from_str::<Vec<Value>>(&self.ok(&["registry", "--json", "list"])).unwrap().len()
    }
}

fn contract_text(set: &Path) -> String {
    format!(
        r#"
name = "l96-test"
version = "1.0.0"
task = "Lorenz-96 state estimation, test setup"
target_step = 2
oracle_step = 2
l_transition = "L3_L4"
oracle = "set/ETKF N=20 infl=1.04"
oracle_strength = "classical_method"

[carriers.input]
name = "obs"
shape = [40]
units = "1"

[carriers.output]
name = "analysis_mean"
shape = [40]
units = "1"

[reference]
plugin_set = "{set}"

[splits]
evaluate_after = 5.0

[[metrics]]
component = "{metrics}"
config = {{ metrics = ["rmse", "bias", "mae"] }}

[[metrics]]
component = "{metrics}"
config = {{ metrics = ["spread_skill", "crps", "crps_fair", "rank_histogram"] }}
ensemble = true

[[baselines]]
method = "climatology"

[[baselines]]
method = "oi"

[[baselines]]
method = "3dvar"
xB = 0.02

[[failure_modes]]
text = "non-finite analysis"
check = "finite"

[[failure_modes]]
text = "filter divergence"
check = {{ metric = "rmse", max = 1.0, better_than = "3D-Var xB=0.02" }}

[[failure_modes]]
text = "a U-shaped rank histogram"
"#,
        set = set.display(),
        metrics = plugin("metrics-standard").display(),
    )
}

fn scalar(scored: &Value, metric: &str) -> f64 {
    scored["metrics"][metric].as_f64().unwrap_or_else(|| panic!("no scalar {metric} in {scored}"))
}

fn score_json(b: &Bench, contract: &str, candidate: &Path, out: &str) -> Value {
    let report = b.ok(&["bench", "score", contract, candidate.to_str().unwrap(), "--json", "--out", out]);
    serde_json::from_str(&report).unwrap()
}

#[test]
fn score_matches_the_run_ranks_the_baselines_and_records_lineage() {
    let b = Bench::new();
    let contract = b.contract("contract.toml", |t| t);
    let registered = b.ok(&["bench", "register", "-q", &contract]);
    assert!(registered.contains("pre-registered contract l96-test@1.0.0"), "{registered}");

    let etkf = b.output("ETKF_N20_infl1.04.nc");
    let report = score_json(&b, &contract, &etkf, "reports/etkf20.json");
    let candidate = &report["candidates"][0];
    // The RMSE equals the run's own time-mean analysis RMSE.
    let (scored, run) = (scalar(candidate, "rmse"), b.rmse_a("ETKF N=20 infl=1.04"));
    assert!((scored - run).abs() < 1e-12 * run, "report rmse {scored} vs run {run}");
    for (label, i) in [("Climatology", 0), ("3D-Var xB=0.02", 2)] {
        let (scored, run) = (scalar(&report["baselines"][i], "rmse"), b.rmse_a(label));
        assert!((scored - run).abs() < 1e-12 * run, "{label}: {scored} vs {run}");
    }
    // Baselines rank as expected, behind the filter.
    let order: Vec<&str> = report["ranking"]["order"].as_array().unwrap().iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert_eq!(order, ["ETKF N=20 infl=1.04", "3D-Var xB=0.02", "OptInterp", "Climatology"]);
    // Ensemble metrics on the kept ensembles after the burn-in: cycles
    // k = 100, 105, …, 595 (t = (k+1)·0.05 > 5).
    assert_eq!(report["reference"]["ensemble_cases"], 100);
    assert_eq!(report["reference"]["cases"], 500);
    assert_eq!(candidate["metrics"]["rank_histogram"].as_array().unwrap().len(), 21);
    assert!(scalar(candidate, "crps_fair") < scalar(candidate, "crps") + 1e-3);
    // Baselines have no members: their ensemble metrics say why.
    assert!(report["baselines"][0]["not_applicable"]["crps"].as_str().unwrap().contains("members_every"));
    // Checks and verdict.
    let checks = candidate["checks"].as_array().unwrap();
    assert_eq!(checks.iter().map(|c| c["passed"].clone()).collect::<Vec<_>>(), [Value::Bool(true), Value::Bool(true), Value::Null]);
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["contract"]["id"], report["inputs"][0]);
    assert_eq!(report["oracle_strength"], "classical_method");

    // Scoring the same candidate again gives the same report bytes.
    let again = score_json(&b, &contract, &etkf, "reports/etkf20-again.json");
    assert_eq!(again, report);
    assert_eq!(std::fs::read(b.path("reports/etkf20.json")).unwrap(), std::fs::read(b.path("reports/etkf20-again.json")).unwrap());

    // A second candidate: validated against the oracle, scored by the report.
    let enkf = b.output("ETKF_N10_infl1.06.nc");
    let report10 = score_json(&b, &contract, &enkf, "reports/etkf10.json");
    let id10 = report10["candidates"][0]["id"].as_str().unwrap();
    let oracle = b.ok(&["registry", "oracle", id10]);
    assert!(oracle.contains(&report["oracle"]["id"].as_str().unwrap()[..19]), "{oracle}");
    let lineage = b.ok(&["registry", "lineage", id10]);
    assert!(lineage.contains("--scored_by-->") && lineage.contains("report/l96-test"), "{lineage}");
    let reports = b.ok(&["registry", "list", "--kind", "report"]);
    assert_eq!(reports.lines().count(), 2, "{reports}");
}

#[test]
fn an_edited_contract_is_refused_and_a_new_version_supersedes_it() {
    let b = Bench::new();
    let contract = b.contract("contract.toml", |t| t);
    b.ok(&["bench", "register", "-q", &contract]);
    // Registering the same bytes again changes nothing.
    assert!(b.ok(&["bench", "register", "-q", &contract]).contains("already pre-registered"));
    let etkf = b.output("ETKF_N20_infl1.04.nc");
    score_json(&b, &contract, &etkf, "reports/v1.json");

    // Edit after pre-registration: scoring and re-registering are refused.
    b.contract("contract.toml", |t| t.replace("max = 1.0", "max = 0.5"));
    for args in [vec!["bench", "score", &contract, etkf.to_str().unwrap()], vec!["bench", "register", "-q", &contract]] {
        let err = b.fails(&args);
        assert!(err.contains("l96-test@1.0.0") && err.contains("cannot change") && err.contains("new `version`"), "{err}");
    }

    // A new version supersedes the old one; the old report becomes stale.
    b.contract("contract.toml", |t| t.replace("max = 1.0", "max = 0.5").replace("version = \"1.0.0\"", "version = \"1.1.0\""));
    let out = b.ok(&["bench", "register", "-q", &contract]);
    assert!(out.contains("supersedes") && out.contains("stale"), "{out}");
    let stale = b.ok(&["registry", "stale"]);
    assert!(stale.contains("report/l96-test"), "{stale}");
    let report = score_json(&b, &contract, &etkf, "reports/v2.json");
    assert_eq!(report["contract"]["version"], "1.1.0");
}

#[test]
fn a_contract_missing_a_required_metric_is_refused_and_leaves_the_registry_as_it_was() {
    let b = Bench::new();
    let before = b.artifact_count();
    let contract = b.contract("contract.toml", |t| t.replace(r#"["spread_skill", "#, "[").replace(r#"["rmse", "#, "["));
    let err = b.fails(&["bench", "register", "-q", &contract]);
    assert!(err.contains("step-2 contract must report rmse and spread_skill") && err.contains("missing: rmse, spread_skill"), "{err}");
    assert_eq!(b.artifact_count(), before);
    // Never pre-registered: scoring says what to do.
    let err = b.fails(&["bench", "score", &contract, b.output("ETKF_N20_infl1.04.nc").to_str().unwrap()]);
    assert!(err.contains("not pre-registered") && err.contains("geohost bench register"), "{err}");
}

#[test]
fn a_heuristic_oracle_gives_a_warning_that_the_report_records() {
    let b = Bench::new();
    let contract = b.contract("contract.toml", |t| t.replace("\"classical_method\"", "\"heuristic\""));
    let out = b.cmd(&["bench", "register", "-q", &contract]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning") && stderr(&out).contains("weak oracle"), "{}", stderr(&out));
    let report = score_json(&b, &contract, &b.output("ETKF_N20_infl1.04.nc"), "r.json");
    assert_eq!(report["oracle_strength"], "heuristic");
    assert!(report["warnings"][0].as_str().unwrap().contains("weak oracle"), "{}", report["warnings"]);
    let table = b.ok(&["bench", "score", &contract, b.output("ETKF_N20_infl1.04.nc").to_str().unwrap(), "--out", "r.json"]);
    assert!(table.contains("warning: weak oracle"), "{table}");
}

#[test]
fn diff_of_two_ensemble_sizes_shows_each_metric_with_its_direction() {
    let b = Bench::new();
    let contract = b.contract("contract.toml", |t| t);
    b.ok(&["bench", "register", "-q", &contract]);
    let small = score_json(&b, &contract, &b.output("ETKF_N10_infl1.06.nc"), "n10.json");
    let large = score_json(&b, &contract, &b.output("ETKF_N20_infl1.04.nc"), "n20.json");
    let diff: Value = serde_json::from_str(&b.ok(&["bench", "diff", "n10.json", "n20.json", "--json"])).unwrap();
    let changes: Vec<&Value> = diff["changes"].as_array().unwrap().iter().filter(|c| c["role"] == "candidate").collect();
    let metrics: Vec<&str> = changes.iter().map(|c| c["metric"].as_str().unwrap()).collect();
    assert_eq!(metrics, ["bias", "crps", "crps_fair", "mae", "rank_histogram", "rmse", "spread_skill"]);
    for c in &changes {
        assert_eq!(c["label_a"], "ETKF N=10 infl=1.06");
        assert_eq!(c["label_b"], "ETKF N=20 infl=1.04");
        assert!(["better", "worse"].contains(&c["direction"].as_str().unwrap()), "{c}");
    }
    let rmse = changes.iter().find(|c| c["metric"] == "rmse").unwrap();
    let (a, z) = (scalar(&small["candidates"][0], "rmse"), scalar(&large["candidates"][0], "rmse"));
    assert!((rmse["change"].as_f64().unwrap() - (z - a)).abs() < 1e-15);
    assert_eq!(rmse["direction"], if z < a { "better" } else { "worse" });
    // Baselines are unchanged between the two reports.
    assert!(diff["changes"].as_array().unwrap().iter().filter(|c| c["role"] == "baseline").all(|c| c["direction"] == "same"));
    // The table form, and reports named by registry id.
    let id = |file: &str| format!("blake3:{}", blake3::hash(&std::fs::read(b.path(file)).unwrap()).to_hex());
    let table = b.ok(&["bench", "diff", &id("n10.json"), &id("n20.json")]);
    assert!(table.contains("candidate: ETKF N=10 infl=1.06 → ETKF N=20 infl=1.04") && table.contains("rmse"), "{table}");
}

#[test]
fn contract_errors_name_the_field_and_what_is_expected() {
    let b = Bench::new();
    let cases: &[(&str, &str, &str)] = &[
        ("oracle_strength = \"classical_method\"", "oracle_strength = \"strong\"", "field `oracle_strength`: \"strong\" is not one of physics_derived"),
        ("oracle_step = 2\n", "", "missing: oracle_step"),
        ("target_step = 2", "target_step = 7", "field `target_step`: expected a cycle step from 1 to 5, got 7"),
        ("l_transition = \"L3_L4\"", "l_transition = \"L9\"", "field `l_transition`"),
        ("shape = [40]\nunits = \"1\"\n\n[reference]", "shape = [41]\nunits = \"1\"\n\n[reference]", "field `carriers.output.shape`"),
        ("check = \"finite\"", "check = \"sane\"", "[[failure_modes]] #1: check \"sane\" is unknown"),
        ("better_than = \"3D-Var xB=0.02\"", "better_than = \"Persistence\"", "better_than = \"Persistence\" is not a baseline"),
        ("task = ", "tusk = ", "unknown field `tusk`"),
        ("oracle = \"set/ETKF N=20 infl=1.04\"", "oracle = \"nothing-like-this\"", "field `oracle` (\"nothing-like-this\")"),
        ("oracle = \"set/ETKF N=20 infl=1.04\"", "oracle = \"set/Climatology\"", "has role `baseline`, not `oracle`"),
        ("method = \"oi\"", "method = \"oi\"\nN = 3", "[[baselines]] #2"),
    ];
    for (from, to, expected) in cases {
        let contract = b.contract("bad.toml", |t| {
            assert!(t.contains(from), "{from}");
            t.replacen(from, to, 1)
        });
        let err = b.fails(&["bench", "register", "-q", &contract]);
        assert!(err.contains(expected), "{from} → {to}: expected `{expected}` in\n{err}");
        assert!(err.contains("bad.toml") || !expected.starts_with("field `oracle_"), "{err}");
    }
    assert_eq!(b.ok(&["registry", "list", "--kind", "contract"]).trim(), "");
}

#[test]
fn candidates_must_be_scoreable_under_the_contract() {
    let b = Bench::new();
    let contract = b.contract("contract.toml", |t| t);
    b.ok(&["bench", "register", "-q", &contract]);
    // A deterministic output cannot be scored on ensemble metrics.
    let err = b.fails(&["bench", "score", &contract, b.output("3D-Var_xB0.02.nc").to_str().unwrap()]);
    assert!(err.contains("need members") && err.contains("members_every"), "{err}");
    // The truth file is not a candidate.
    let err = b.fails(&["bench", "score", &contract, b.output("truth.nc").to_str().unwrap()]);
    assert!(err.contains("truth/observations file"), "{err}");
    // An output of another experiment (another seed) is refused.
    let other = b.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let set = lorenz96_set(&other, 600, METHODS);
    std::fs::write(&set, std::fs::read_to_string(&set).unwrap().replace("seed = 1", "seed = 2")).unwrap();
    let out = geohost(b.dir.path()).args(["run", "-q", "--no-registry"]).arg(&set).arg("--out").arg(other.join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The other run was not registered (--no-registry): a candidate that
    // fails to score must leave the registry as it was.
    let before = b.artifact_count();
    let err = b.fails(&["bench", "score", &contract, other.join("out/ETKF_N20_infl1.04.nc").to_str().unwrap()]);
    assert!(err.contains("was run on truth") && err.contains("contract's reference"), "{err}");
    assert_eq!(b.artifact_count(), before, "a refused candidate changed the registry");
    // Not a NetCDF file at all.
    std::fs::write(b.path("junk.nc"), b"not netcdf").unwrap();
    let err = b.fails(&["bench", "score", &contract, b.path("junk.nc").to_str().unwrap()]);
    assert!(err.contains("junk.nc") && err.contains("NetCDF"), "{err}");
}

#[test]
fn a_cycle_benchmark_scores_each_step_into_one_registered_report() {
    let b = Bench::new();
    b.contract("step2.toml", |t| t);
    b.contract("step4.toml", |t| {
        t.replace("name = \"l96-test\"", "name = \"l96-test-step4\"")
            .replace("target_step = 2", "target_step = 4")
            .replace("\"crps_fair\",", "\"crps_fair\", \"coverage\",")
    });
    std::fs::write(
        b.path("cycle.toml"),
        "name = \"l96-cycle\"\nversion = \"1\"\ndomain = \"test\"\n\n[[stages]]\ncontract = \"step2.toml\"\n\n[[stages]]\ncontract = \"step4.toml\"\n",
    )
    .unwrap();
    let cycle = b.path("cycle.toml").display().to_string();
    let err = b.fails(&["bench", "cycle", &cycle, "2=out/ETKF_N20_infl1.04.nc"]);
    assert!(err.contains("not pre-registered"), "{err}");
    assert!(b.ok(&["bench", "register", "-q", &cycle]).contains("pre-registered cycle benchmark l96-cycle@1"));
    let err = b.fails(&["bench", "cycle", &cycle, "3=out/ETKF_N20_infl1.04.nc"]);
    assert!(err.contains("no stage of l96-cycle@1 targets step 3"), "{err}");
    let err = b.fails(&["bench", "cycle", &cycle, "out/ETKF_N20_infl1.04.nc"]);
    assert!(err.contains("expected STEP=CANDIDATE"), "{err}");

    // A stage without a candidate: the cycle is incomplete, and its page
    // says which stage was not scored.
    let partial: Value = serde_json::from_str(&b.ok(&["bench", "cycle", &cycle, "2=out/ETKF_N20_infl1.04.nc", "--json", "--out", "partial.json"])).unwrap();
    assert_eq!(partial["verdict"], "incomplete");
    assert_eq!(partial["stages"][1]["not_scored"], "no candidate for step 4");

    let report: Value = serde_json::from_str(&b.ok(&[
        "bench",
        "cycle",
        &cycle,
        "2=out/ETKF_N20_infl1.04.nc",
        "4=out/ETKF_N10_infl1.06.nc",
        "--json",
        "--out",
        "cycle.json",
        "--html",
        ".",
    ]))
    .unwrap();
    // N=10 diverges on this setup (the stage's divergence check fails): the
    // cycle fails with it, stage 2 still passes.
    assert_eq!(report["verdict"], "fail", "{report:#}");
    assert_eq!((report["stages"][0]["report"]["verdict"].as_str(), report["stages"][1]["report"]["verdict"].as_str()), (Some("pass"), Some("fail")));
    // The page (named by the report's id), rendered by headless Chromium:
    // the verdict, a summary row per stage with its candidate and primary
    // score, and each stage's own tables under ids of their own.
    let cycle_id = format!("blake3:{}", blake3::hash(&std::fs::read(b.path("cycle.json")).unwrap()).to_hex());
    let page = b.path(&format!("l96-cycle-{}.html", &cycle_id["blake3:".len()..][..12]));
    let dom = crate::pages::render(&page, "bench-cycle");
    assert!(dom.contains(r#"<span id="verdict" class="verdict-fail">fail</span>"#), "{dom}");
    for (step, candidate, verdict) in [(2, "ETKF N=20 infl=1.04", "pass"), (4, "ETKF N=10 infl=1.06", "fail")] {
        let rmse = b.rmse_a(candidate);
        let row = &dom[dom.find(&format!(r#"<tr data-step="{step}">"#)).unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(row.contains(candidate) && row.contains(&format!("{rmse:.4}")) && row.contains(&format!("verdict-{verdict}")), "step {step}: {row}");
        assert!(
            dom.contains(&format!(r#"<section class="stage" data-step="{step}">"#)) && dom.contains(&format!(r#"<table id="stage-{step}-public">"#)),
            "{dom}"
        );
    }
    let stage = &report["stages"][0];
    assert_eq!(stage["step"], 2);
    let (scored, run) = (scalar(&stage["report"]["candidates"][0], "rmse"), b.rmse_a("ETKF N=20 infl=1.04"));
    assert!((scored - run).abs() < 1e-12 * run);
    let reports = b.ok(&["registry", "list", "--kind", "report"]);
    assert!(reports.contains("cycle-report/l96-cycle"), "{reports}");
    let id = stage["report"]["candidates"][0]["id"].as_str().unwrap();
    assert!(b.ok(&["registry", "lineage", id]).contains("cycle-report/l96-cycle"));
    // The matrix: the cycle benchmark and its report in step 6 of its
    // stages' row, and the stage verdict counted for the stage contract.
    let m: Value = serde_json::from_str(&b.ok(&["matrix", "--json"])).unwrap();
    let row = m["rows"].as_array().unwrap().iter().find(|r| r["transition"] == "L3_L4").unwrap();
    let step6 = &row["cells"][5];
    assert_eq!(step6["contracts"][0]["name"], "l96-cycle", "{step6:#}");
    assert_eq!(step6["contracts"][0]["verdict"], "fail");
    assert!(step6["artifacts"].as_array().unwrap().iter().any(|a| a["name"] == "cycle-report/l96-cycle" && a["verdict"] == "fail"), "{step6:#}");
    let step2 = &row["cells"][1]["contracts"][0];
    // Both cycle reports (the partial one and the full one) scored stage 2.
    assert_eq!((step2["verdict"].as_str(), step2["reports"].as_u64()), (Some("pass"), Some(2)), "{step2:#}");
    let step4 = &row["cells"][3]["contracts"][0];
    assert_eq!((step4["name"].as_str(), step4["verdict"].as_str(), step4["reports"].as_u64()), (Some("l96-test-step4"), Some("fail"), Some(1)), "{step4:#}");
}
