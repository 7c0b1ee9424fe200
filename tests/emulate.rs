//! Steps 3 and 4 through the real binary: simulation datasets cached by
//! request key, seeded training, the emulator as the forward model of the
//! same DA code, its lineage, and the errors a user can hit.

use crate::common::{geohost, lorenz96_set, stderr, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A small but real step 3: 8 runs × 150 pairs, a few epochs.
const STEP3: &str = r#"
[[method]]
method = "etkf"
N = 20
infl = 1.04

[step3]
name = "l96-emulator"
dataset = { trajectories = 8, spin_up = 400, pairs_per_trajectory = 150, stride = 3, seed = 11 }
network = { architecture = "cnn", channels = 4, kernel = 5, hidden = 8 }
# `epochs`: the name files written before max_epochs was shared use (an alias).
training = { epochs = 30, batch = 64, lr = 5e-3, weight_decay = 0.0, patience = 4, seed = 5 }
"#;

fn set_with(dir: &Path, cycles: usize, extra: &str) -> PathBuf {
    lorenz96_set(dir, cycles, extra)
}

fn train_json(dir: &Path, set: &Path, extra: &[&str]) -> Value {
    let out = geohost(dir).args(["train", "emulator", "--json"]).arg(set).args(extra).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn identical_requests_hit_the_dataset_and_weights_caches() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 50, STEP3);
    let first = train_json(dir.path(), &set, &[]);
    assert_eq!(first["dataset_cache_hit"], false);
    assert_eq!(first["trained"], true);
    assert_eq!(first["samples"], 1200);
    // The one-step error is small next to the state's spread.
    let ratio = first["val_rmse"].as_f64().unwrap() / first["state_std"].as_f64().unwrap();
    // Measured 0.0048 (seeded, so the same on every run): a tenfold margin.
    assert!(ratio < 0.05, "one-step validation RMSE / state std = {ratio}");

    let second = train_json(dir.path(), &set, &[]);
    assert_eq!(second["dataset_cache_hit"], true);
    assert_eq!(second["trained"], false);
    assert_eq!(second["dataset"], first["dataset"]);
    assert_eq!(second["id"], first["id"]);

    // Another training seed: the dataset is reused, the network retrained.
    std::fs::write(&set, std::fs::read_to_string(&set).unwrap().replace("seed = 5 }", "seed = 6 }")).unwrap();
    let third = train_json(dir.path(), &set, &[]);
    assert_eq!(third["dataset_cache_hit"], true);
    assert_eq!(third["trained"], true);
    assert_ne!(third["id"], first["id"]);

    // The dataset is in the registry with its lineage, as NetCDF.
    let lineage = stdout(&geohost(dir.path()).args(["registry", "lineage", first["id"].as_str().unwrap()]).output().unwrap());
    assert!(lineage.contains("--trained_on-->") && lineage.contains("--derived_from-->"), "{lineage}");
}

#[test]
fn a_seed_gives_the_same_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 50, STEP3);
    let a = train_json(dir.path(), &set, &["--no-registry"]);
    let b = train_json(dir.path(), &set, &["--no-registry"]);
    assert_eq!(a["trained"], true);
    assert_eq!(b["trained"], true);
    assert_eq!(a["id"], b["id"], "two trainings from one seed gave different weights");

    // The mlp trains through the fused step; its GEMMs split over threads
    // by output block, so two threads give the same bits as one.
    let mlp = STEP3
        .replace(r#"network = { architecture = "cnn", channels = 4, kernel = 5, hidden = 8 }"#, r#"network = { architecture = "mlp", hidden = [64, 64] }"#);
    assert_ne!(mlp, STEP3);
    let set = set_with(dir.path(), 50, &mlp);
    let one = train_json(dir.path(), &set, &["--no-registry"]);
    let out = geohost(dir.path()).env("MATMUL_NUM_THREADS", "2").args(["train", "emulator", "--json", "--no-registry"]).arg(&set).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let two: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(one["id"], two["id"], "one and two GEMM threads gave different mlp weights");
    assert_ne!(one["id"], a["id"]);
}

#[test]
fn step4_runs_the_same_etkf_through_the_emulator_with_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 400, &format!("{STEP3}\n[step4]\nmethods = [\"ETKF N=20 infl=1.04\"]\n"));
    let out = geohost(dir.path()).args(["run", "-q", "--json"]).arg(&set).arg("--out").arg(dir.path().join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["label"], "ETKF N=20 infl=1.04 via emulator");
    let (wasm, neural) = (rows[0]["rmse_a"].as_f64().unwrap(), rows[1]["rmse_a"].as_f64().unwrap());
    // Measured 0.261 through this small emulator against 0.187 through the
    // component (1.39×); 0.5 is half OI's 0.95, far below climatology's 3.6.
    assert!(neural < 1.5 * wasm && neural < 0.5, "ETKF through the emulator: {neural} vs {wasm} through the component");
    assert!(dir.path().join("out/ETKF_N20_infl1.04_via_emulator.nc").is_file());

    // Lineage: step-4 output ← emulator ← dataset ← lorenz96; superseding
    // the forward plugin marks all three stale.
    let reg = |args: &[&str]| {
        let out = geohost(dir.path()).arg("registry").args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let step4: Vec<Value> = serde_json::from_str(&reg(&["--json", "list", "--step", "4"])).unwrap();
    assert_eq!(step4.len(), 1);
    let step4_id = step4[0]["id"].as_str().unwrap();
    assert!(reg(&["lineage", step4_id]).contains("l96-emulator"));
    let model = &serde_json::from_str::<Vec<Value>>(&reg(&["--json", "list", "--name", "lorenz96"])).unwrap()[0]["id"];
    let replacement = dir.path().join("replacement.txt");
    std::fs::write(&replacement, "a corrected Lorenz-96 would go here").unwrap();
    let new: Value = serde_json::from_str(&reg(&["--json", "add", replacement.to_str().unwrap(), "--kind", "plugin", "--name", "lorenz96-v2"])).unwrap();
    reg(&["supersede", model.as_str().unwrap(), new["id"].as_str().unwrap()]);
    let stale = reg(&["stale"]);
    for needle in ["simulation", "l96-emulator", "via emulator"] {
        assert!(stale.contains(needle), "`{needle}` is not stale:\n{stale}");
    }
}

#[test]
fn a_plugin_set_can_name_an_emulator_as_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 50, STEP3);
    let trained = train_json(dir.path(), &set, &[]);
    let text = std::fs::read_to_string(&set).unwrap();
    let model_line = text.lines().find(|l| l.starts_with("plugin = ") && l.contains("lorenz96")).unwrap().to_string();
    let set2 = dir.path().join("emulated.toml");
    let emulated = text.replacen(&model_line, "emulator = \"l96-emulator\"", 1);
    let emulated = &emulated[..emulated.find("[step3]").unwrap()];
    std::fs::write(&set2, emulated).unwrap();
    let out = geohost(dir.path()).args(["run", "-q", "--json"]).arg(&set2).arg("--out").arg(dir.path().join("out2")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("out2/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["plugins"][0]["kind"], "emulator");
    assert_eq!(summary["plugins"][0]["blake3"], trained["id"]);
    assert_eq!(summary["model"]["name"], "lorenz96 emulator");
}

#[test]
fn emulator_errors_name_the_section_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |set: &Path, args: &[&str]| -> String {
        let out = geohost(dir.path()).args(args).arg(set).output().unwrap();
        assert!(!out.status.success(), "should fail: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
        err
    };
    let cases: &[(&str, &str)] = &[
        (
            "[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n\n[step4]\nmethods = [\"ETKF N=20 infl=1.04\"]\n",
            "[step4] runs methods through the step-3 emulator: add a [step3] section",
        ),
        (&format!("{STEP3}\n[step4]\nmethods = [\"ETKF N=99\"]\n"), "step4.methods: \"ETKF N=99\" is not a [[method]] of this set"),
        (&STEP3.replace("kernel = 5", "kernel = 4"), "step3.network.kernel must be odd"),
        (&STEP3.replace("validation", "x").replace("patience = 4", "validation = 1.5"), "step3.training: validation must be a fraction in (0, 1), got 1.5"),
        (&STEP3.replace("stride = 3", "stride = 3, colour = 1"), "unknown field `colour`"),
    ];
    for (extra, expected) in cases {
        let set = set_with(dir.path(), 50, extra);
        let err = fails(&set, &["run", "-q"]);
        assert!(err.contains(expected), "expected `{expected}` in\n{err}");
    }
    // Training needs a [step3].
    let set = set_with(dir.path(), 50, "[[method]]\nmethod = \"climatology\"\n");
    assert!(fails(&set, &["train", "emulator"]).contains("has no [step3] section"));
    // [model] emulator must name an emulator, and weights must be weights.
    let bad = set_with(dir.path(), 50, "[[method]]\nmethod = \"climatology\"\n");
    let text = std::fs::read_to_string(&bad).unwrap();
    let model_line = text.lines().find(|l| l.starts_with("plugin = ") && l.contains("lorenz96")).unwrap().to_string();
    std::fs::write(&bad, text.replacen(&model_line, "emulator = \"nothing-registered\"", 1)).unwrap();
    assert!(fails(&bad, &["run", "-q"]).contains("[model] emulator"));
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let out =
        geohost(dir.path()).args(["registry", "add"]).arg(&junk).args(["--kind", "weights", "--role", "emulator", "--name", "junk-emulator"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&bad, text.replacen(&model_line, "emulator = \"junk-emulator\"", 1)).unwrap();
    let err = fails(&bad, &["run", "-q"]);
    assert!(err.contains("is not a safetensors file"), "{err}");
}

#[test]
fn the_step4_contract_scores_against_the_oracle_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 400, &format!("[output]\nmembers_every = 5\n{STEP3}\n[step4]\n"));
    let out = geohost(dir.path()).args(["run", "-q"]).arg(&set).arg("--out").arg(dir.path().join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let contract = dir.path().join("step4.toml");
    std::fs::write(
        &contract,
        format!(
            r#"
name = "l96-step4"
version = "1"
task = "ETKF through the emulator"
target_step = 4
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
config = {{ metrics = ["rmse", "bias"] }}
[[metrics]]
component = "{metrics}"
config = {{ metrics = ["rmse"] }}
against = "oracle"
[[metrics]]
component = "{metrics}"
config = {{ metrics = ["spread_skill", "coverage"], levels = [0.9] }}
ensemble = true
[[baselines]]
method = "3dvar"
xB = 0.02
[[failure_modes]]
text = "more than 50% worse than the oracle"
check = {{ metric = "rmse", max_ratio_to_oracle = 1.5 }}
"#,
            set = set.display(),
            metrics = crate::common::plugin("metrics-standard").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = geohost(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "geohost {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["bench", "register", "-q", contract.to_str().unwrap()]);
    let candidate = dir.path().join("out/ETKF_N20_infl1.04_via_emulator.nc");
    let out = dir.path().join("r4.json");
    let report: Value =
        serde_json::from_str(&run(&["bench", "score", contract.to_str().unwrap(), candidate.to_str().unwrap(), "--json", "--out", out.to_str().unwrap()]))
            .unwrap();
    let c = &report["candidates"][0];
    let (rmse, vs_oracle) = (c["metrics"]["rmse"].as_f64().unwrap(), c["metrics"]["rmse_vs_oracle"].as_f64().unwrap());
    let oracle_rmse = report["oracle"]["metrics"]["rmse"].as_f64().unwrap();
    assert!(vs_oracle > 0.0 && vs_oracle < rmse, "rmse vs oracle {vs_oracle}, vs truth {rmse}");
    assert_eq!(report["oracle"]["metrics"]["rmse_vs_oracle"], 0.0);
    assert_eq!(c["checks"][0]["passed"], rmse <= 1.5 * oracle_rmse);
    // `registry oracle` on the step-4 output names the step-2 ETKF output.
    let oracle = run(&["registry", "oracle", c["id"].as_str().unwrap()]);
    assert!(oracle.contains(&report["oracle"]["id"].as_str().unwrap()[..19]) && oracle.contains("set/ETKF N=20 infl=1.04"), "{oracle}");
    assert!(oracle.contains("step=2"), "{oracle}");
}

#[test]
fn the_step3_contract_scores_the_emulator_against_the_model_forecasts() {
    let dir = tempfile::tempdir().unwrap();
    let set = set_with(dir.path(), 400, STEP3);
    let trained = train_json(dir.path(), &set, &[]);
    let contract = dir.path().join("step3.toml");
    let text = format!(
        r#"
name = "l96-step3"
version = "1"
task = "emulate one step"
target_step = 3
oracle_step = 1
l_transition = "L3_L4"
oracle = "lorenz96@0.1.0"
oracle_strength = "physics_derived"
[carriers.input]
name = "state"
shape = [40]
units = "1"
[carriers.output]
name = "state"
shape = [40]
units = "1"
[reference]
forecasts = {{ plugin_set = "{set}", cases = 5, spacing = 50, leads = 40 }}
[splits]
evaluate_after = 0.0
[[metrics]]
component = "{metrics}"
config = {{ metrics = ["one_step_rmse", "rmse_by_lead", "valid_time", "psd_error"], leads = 40, dt = 0.05, lyapunov = 1.68 }}
[[failure_modes]]
text = "one-step error above 1% of the state std"
check = {{ metric = "one_step_rmse", max = 0.036 }}
"#,
        set = set.display(),
        metrics = crate::common::plugin("metrics-standard").display()
    );
    // Without the spectral metric a step-3 contract is refused.
    std::fs::write(&contract, text.replace(r#", "psd_error"]"#, "]")).unwrap();
    let out = geohost(dir.path()).args(["bench", "register", "-q"]).arg(&contract).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("missing: psd_error"), "{}", stderr(&out));
    std::fs::write(&contract, &text).unwrap();
    let run = |args: &[&str]| {
        let out = geohost(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "geohost {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["bench", "register", "-q", contract.to_str().unwrap()]);
    let out = dir.path().join("r3.json");
    let report: Value =
        serde_json::from_str(&run(&["bench", "score", contract.to_str().unwrap(), "l96-emulator", "--json", "--out", out.to_str().unwrap()])).unwrap();
    let c = &report["candidates"][0];
    assert_eq!(c["id"], trained["id"]);
    assert_eq!(report["reference"]["cases"], 200);
    let one_step = c["metrics"]["one_step_rmse"].as_f64().unwrap();
    let by_lead = c["metrics"]["rmse_by_lead"].as_array().unwrap();
    assert_eq!(by_lead.len(), 40);
    assert_eq!(by_lead[0].as_f64().unwrap(), one_step);
    // Close to the validation error of training, and growing with lead time.
    // Measured: one-step 0.0169, lead 40 1.98, valid time 2.92, PSD error
    // 0.026; the bounds leave a margin of about 3× (valid time) to 20×.
    assert!(one_step < 0.05 && one_step < by_lead[39].as_f64().unwrap(), "{one_step} vs {}", by_lead[39]);
    assert!(c["metrics"]["valid_time"].as_f64().unwrap() > 1.0, "{}", c["metrics"]);
    assert!(c["metrics"]["psd_error"].as_f64().unwrap() < 0.5);
    assert_eq!(c["verdict"], "pass");
    // The emulator was validated against the model component.
    let oracle = run(&["registry", "oracle", trained["id"].as_str().unwrap()]);
    assert!(oracle.contains("plugin") && oracle.contains("lorenz96"), "{oracle}");
}

/// The fused mlp step (what `geohost train` uses for an mlp) against
/// candle's autograd and candle-nn's AdamW: same initial weights, same
/// batches (one of them short), same loss, same weights after each step.
#[test]
fn the_fused_mlp_step_matches_candle_autograd_and_adamw() {
    use candle_core::{Device, Tensor};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    use geohost_learn::fused::{self, MlpTrainer};
    use geohost_learn::net::{Arch, Description, Net, Scaling};
    use rand::{Rng, SeedableRng};

    let (m, batch) = (6, 10);
    let scaling = Scaling { mean: 0.7, std: 1.9, out_std: 0.4 };
    let desc = Description { arch: Arch::Mlp { hidden: vec![16, 12] }, state_size: m, dt: 0.05, lead: 1, scaling };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let net = Net::new(desc, &mut rng).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let params: Vec<Vec<f32>> = net.params.iter().map(|(_, v)| flat(v.as_tensor())).collect();
    let (lr, decay, loss_scale) = (1e-2, 0.05, 0.8f32);
    let mut trainer = MlpTrainer::new(&[m, 16, 12, m], params, scaling, batch, fused::AdamW::new(lr, decay));
    let mut opt = AdamW::new(net.vars(), ParamsAdamW { lr, weight_decay: decay, ..Default::default() }).unwrap();

    for (step, rows) in [10, 10, 7, 10, 10, 10].into_iter().enumerate() {
        let x: Vec<f32> = (0..rows * m).map(|_| rng.random_range(-3.0..4.0)).collect();
        let y: Vec<f32> = x.iter().map(|v| v + rng.random_range(-0.5..0.5)).collect();
        let fused_loss = trainer.step(&x, &y, rows, loss_scale);

        let (xt, yt) = (Tensor::from_slice(&x, (rows, m), &Device::Cpu).unwrap(), Tensor::from_slice(&y, (rows, m), &Device::Cpu).unwrap());
        let loss = ((net.forward(&xt).unwrap() - &yt).unwrap() / loss_scale as f64).unwrap().sqr().unwrap().mean_all().unwrap();
        let candle_loss = loss.to_scalar::<f32>().unwrap();
        opt.backward_step(&loss).unwrap();

        assert!((fused_loss - candle_loss).abs() <= 1e-5 * candle_loss.abs().max(1.0), "step {step}: loss {fused_loss} vs candle {candle_loss}");
        for ((name, var), fused) in net.params.iter().zip(trainer.params()) {
            let candle = flat(var.as_tensor());
            let worst = candle.iter().zip(&fused).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            // Adam's step is ~lr per weight; f32 sums in another order differ by far less.
            assert!(worst < 1e-5, "step {step}, {name}: fused and candle weights differ by {worst}");
        }
    }
}
