//! Writing run results to disk.
//!
//! Layout of an output directory (documented in docs/outputs.md):
//! - `summary.json`: the results table plus the run's plugins (with BLAKE3
//!   hashes and configs), model and observation descriptions, chronology.
//! - `truth.nc`: `time(time)`, `state(state)`, `truth(time, state)`,
//!   `obs(time, obs)`, `obs_location(obs)`, `obs_variance(obs)`.
//! - `<method>.nc` per method: `time(time)`, `state(state)`, `rmse_a`,
//!   `spread_a`, `rmse_f`, `spread_f` (all `(time)`),
//!   `analysis_mean(time, state)`; with `[output] members_every = k`, an
//!   ensemble method adds `member_time(member_time)` and
//!   `analysis_members(member_time, member, state)` (every k-th cycle).
//!   Global attributes name the plugin-set, the plugins and `truth.nc` by
//!   BLAKE3 id.
//!
//! `time` and `state` are coordinate variables (one per observation cycle
//! and per state variable).
//!
//! The arrays are NetCDF (64-bit offset, classic data model), which xarray
//! opens directly: `xr.open_dataset("out/lorenz96/ETKF_N28_infl1.02_rot.nc")`.

pub mod page;
pub mod read;
mod register;

pub use register::{register, Registration};

use crate::pluginset::Loaded;
use crate::run::RunOutput;
use anyhow::{Context, Result};
use geohost_netcdf::{common_attrs, write_nc, Var};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A file-name-safe version of a method label.
pub fn file_stem(label: &str) -> String {
    label.replace('=', "").chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// The files [`write`] produced.
pub struct Written {
    pub truth: PathBuf,
    /// One per method, in the run's method order.
    pub methods: Vec<PathBuf>,
    pub summary: PathBuf,
}

/// Write everything under `dir` (created if needed).
///
/// The NetCDF files depend only on the run's inputs (they name plugins by
/// content hash, not by path), so identical inputs give byte-identical
/// files and identical registry ids. `truth.nc` depends only on the
/// plugins, their configs and the experiment, not on the methods, so every
/// run of one twin experiment shares it; each method's file names it by id
/// (global attribute `truth`).
pub fn write(dir: &Path, run: &RunOutput, set: &Loaded) -> Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let twin = &run.twin;
    let (m, k) = twin.truth.shape();
    let p = twin.obs.nrows();
    let units = &run.model.state_units;
    // Coordinate variables (same name as their dimension), so xarray
    // indexes by time and state.
    let state_index: Vec<f64> = (0..m).map(|i| i as f64).collect();
    let mut common = common_attrs();
    common.push(("model", format!("{} {} ({})", run.model.name, run.model.version, run.plugins[0].blake3)));
    common.push(("observations", format!("{} {} ({})", run.obs.name, run.obs.version, run.plugins[1].blake3)));
    let mut experiment = serde_json::json!({
        "chronology": twin.chronology,
        "seed": set.set.experiment.seed,
        "model_config": run.plugins[0].config,
        "observations_config": run.plugins[1].config,
    });
    if let (Some(all), serde_json::Value::Object(prior)) = (experiment.as_object_mut(), twin.prior.describe()) {
        all.extend(prior);
    }
    let mut truth_attrs = common.clone();
    truth_attrs.push(("experiment", experiment.to_string()));

    let truth_path = dir.join("truth.nc");
    let locations = &run.obs.locations;
    write_nc(
        &truth_path,
        &[("time", k), ("state", m), ("obs", p)],
        &[
            Var { name: "time", dims: &["time"], data: &twin.times, units: &run.model.time_units, long_name: "observation time" },
            Var { name: "state", dims: &["state"], data: &state_index, units: "1", long_name: "state variable index (grid coordinate)" },
            Var { name: "truth", dims: &["time", "state"], data: twin.truth.as_slice(), units, long_name: "true state" },
            Var { name: "obs", dims: &["time", "obs"], data: twin.obs.as_slice(), units: &run.obs.units, long_name: "synthetic observations" },
            Var { name: "obs_location", dims: &["obs"], data: locations, units: "grid index", long_name: "observation location" },
            Var {
                name: "obs_variance",
                dims: &["obs"],
                data: twin.obs_variance.as_slice(),
                units: "1",
                long_name: "observation-error variance (diagonal of R)",
            },
        ],
        &truth_attrs,
    )?;
    let truth_id = geohost_registry::artifact_id(&std::fs::read(&truth_path).with_context(|| format!("reading back {}", truth_path.display()))?);

    let mut methods = Vec::new();
    for method_run in &run.methods {
        let label = method_run.label();
        let path = dir.join(format!("{}.nc", file_stem(&label)));
        let s = &method_run.trajectory.stats;
        let mut attrs = common.clone();
        attrs.push(("plugin_set", geohost_registry::artifact_id(&set.bytes)));
        attrs.push(("truth", truth_id.clone()));
        attrs.push(("method", label.clone()));
        attrs.push(("method_parameters", serde_json::to_string(&method_run.method)?));
        let mut dims = vec![("time", k), ("state", m)];
        let mut vars = vec![
            Var { name: "time", dims: &["time"], data: &twin.times, units: &run.model.time_units, long_name: "observation time" },
            Var { name: "state", dims: &["state"], data: &state_index, units: "1", long_name: "state variable index (grid coordinate)" },
            Var { name: "rmse_a", dims: &["time"], data: &s.rmse_a, units, long_name: "analysis RMSE" },
            Var { name: "spread_a", dims: &["time"], data: &s.spread_a, units, long_name: "analysis spread" },
            Var { name: "rmse_f", dims: &["time"], data: &s.rmse_f, units, long_name: "forecast RMSE" },
            Var { name: "spread_f", dims: &["time"], data: &s.spread_f, units, long_name: "forecast spread" },
            Var { name: "analysis_mean", dims: &["time", "state"], data: method_run.trajectory.analysis_mean.as_slice(), units, long_name: "analysis mean" },
        ];
        // Kept analysis ensembles: member_time(member_time) and
        // analysis_members(member_time, member, state).
        let kept = &method_run.trajectory.members;
        let member_time: Vec<f64> = kept.iter().map(|(k, _)| twin.times[*k]).collect();
        let members: Vec<f64> = kept.iter().flat_map(|(_, e)| e.as_slice().iter().copied()).collect();
        if let Some((_, first)) = kept.first() {
            dims.push(("member_time", kept.len()));
            dims.push(("member", first.ncols()));
            vars.push(Var {
                name: "member_time",
                dims: &["member_time"],
                data: &member_time,
                units: &run.model.time_units,
                long_name: "time of each kept analysis ensemble",
            });
            vars.push(Var { name: "analysis_members", dims: &["member_time", "member", "state"], data: &members, units, long_name: "analysis ensemble" });
        }
        write_nc(&path, &dims, &vars, &attrs)?;
        methods.push(path);
    }

    let summary = serde_json::json!({
        "plugin_set": { "path": set.path.display().to_string(), "blake3": geohost_registry::artifact_id(&set.bytes) },
        "plugins": run.plugins,
        "model": run.model,
        "observations": run.obs,
        "chronology": twin.chronology,
        "truth": truth_id,
        "emulator": run.emulator,
        "parallelism": run.parallelism,
        "results": run.methods.iter().map(|r| r.row()).collect::<Vec<_>>(),
    });
    let summary_path = dir.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary)? + "\n").with_context(|| format!("writing {}", summary_path.display()))?;
    Ok(Written { truth: truth_path, methods, summary: summary_path })
}

/// The `geohost run` table: method, rmse.a, spread.a, rmse.f, time per cycle.
pub fn table(run: &RunOutput) -> String {
    let width = run.methods.iter().map(|r| r.label().len()).max().unwrap_or(6).max(6);
    let mut s = format!("{:<width$}  {:>8}  {:>8}  {:>8}  {:>10}\n", "method", "rmse.a", "spread.a", "rmse.f", "ms/cycle");
    // With no cycle after the burn-in there is no mean to print (not NaN).
    let averaged = run.methods.first().map_or(0, |r| r.summary.cycles_averaged);
    let mean = |v: f64| if averaged == 0 { "—".to_string() } else { format!("{v:.4}") };
    for r in &run.methods {
        let x = &r.summary;
        let _ = writeln!(s, "{:<width$}  {:>8}  {:>8}  {:>8}  {:>10.4}", r.label(), mean(x.rmse_a), mean(x.spread_a), mean(x.rmse_f), r.ms_per_cycle);
    }
    let burn_in = run.twin.chronology.burn_in;
    if averaged > 0 {
        let _ = write!(s, "(time means over {averaged} cycles after burn-in t > {burn_in})");
    } else if !run.methods.is_empty() {
        let end = run.twin.times.last().copied().unwrap_or(0.0);
        let _ = write!(s, "(no cycle after the burn-in t > {burn_in}: the run ends at t = {end}; run more cycles (--cycles) or lower [experiment] burn_in)");
    }
    if let Some(e) = &run.emulator {
        let dataset = if e.dataset_cache_hit { "cached" } else { "simulated" };
        let training = match e.samples_per_s {
            Some(rate) => format!("trained {} epochs (best {}), {rate:.0} samples/s", e.epochs, e.best_epoch + 1),
            None => "loaded: identical training inputs were trained before".into(),
        };
        let _ = write!(
            s,
            "\nstep 3: emulator {} ({}): one-step validation RMSE {:.2e} = {:.2e} of the state std {:.3}; dataset {} ({} samples, {dataset}); {training}",
            e.name,
            &e.id[..19.min(e.id.len())],
            e.val_rmse,
            e.val_rmse / e.state_std,
            e.state_std,
            &e.dataset[..19.min(e.dataset.len())],
            e.samples
        );
    }
    s
}
