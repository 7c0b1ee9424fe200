//! `geohost run`: a plugin-set's twin experiment and methods (dynamic), or
//! its static inverse problem and cycle (static).

use super::{progress_factory, SandboxArgs};
use crate::ranks::Ranks;
use anyhow::{Context, Result};
use clap::Args;
use geohost_cycle::{outputs, pluginset::PluginSet, run, static_report, static_run};
use geohost_registry::{default_dir, Registry};
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// The plugin-set file (TOML).
    plugin_set: PathBuf,
    /// Output directory [default: out/<plugin-set name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results table as JSON.
    #[arg(long)]
    json: bool,
    /// Override the number of observation cycles.
    #[arg(long)]
    cycles: Option<usize>,
    /// Stop after this step of the cycle: 2 skips the plugin-set's [step3] and [step4], 3 skips [step4].
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=4))]
    until_step: Option<u8>,
    /// Advance and observe the ensemble's members in K instances of the model component and of the observation operator on K threads (the same bits as any K; the forecast is most of a QG cycle) [default: one per thread (GEOHOST_THREADS, else the cores); 1 for a registered emulator]. A call that takes under 0.05 ms on one instance (the fastest of its first three) stays there (splitting it would cost more); one of 5 ms or more splits from the next call. K = 1 keeps one instance (a plugin whose instances take much memory).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    model_instances: Option<u64>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    /// Registry directory [default: $GEOHOST_REGISTRY or ~/.local/share/geohost/registry].
    #[arg(long)]
    registry: Option<PathBuf>,
    /// Do not record the run in the registry.
    #[arg(long, conflicts_with = "registry")]
    no_registry: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let ranks = Ranks::start()?;
    if std::fs::read_to_string(&args.plugin_set).is_ok_and(|text| geohost_cycle::scenes::is_retrieval(&text)) {
        ranks.single("a retrieval plugin-set ([scenes])")?;
        return run_retrieval(args);
    }
    if std::fs::read_to_string(&args.plugin_set).is_ok_and(|text| static_run::is_static(&text)) {
        ranks.single("a static plugin-set ([simulator])")?;
        return run_static(args);
    }
    let team = ranks.team();
    // Under MPI every rank runs step 2 (the methods split over the ranks,
    // the same results on each); rank 0 alone then runs steps 3 and 4,
    // writes the outputs, registers them and prints.
    let root = team.rank() == 0;
    let mut set = PluginSet::load(&args.plugin_set)?;
    match args.until_step {
        Some(2) => (set.set.step3, set.set.step4) = (None, None),
        Some(3) => set.set.step4 = None,
        _ => {}
    }
    if !root {
        (set.set.step3, set.set.step4) = (None, None);
    }
    let runtime = args.sandbox.runtime(set.set.limits)?;
    let mut registry = if args.no_registry { None } else { Some(Registry::open(&args.registry.clone().unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(args.quiet || args.json || !root);
    let parallel = run::Parallelism { team, model_instances: args.model_instances.map(|count| count as usize) };
    let result = match run::run(&set, &runtime, registry.as_mut(), args.cycles, &mut progress, parallel) {
        Ok(result) => result,
        Err(error) if team.size() > 1 => ranks.fail(&error),
        Err(error) => return Err(error),
    };
    if !root {
        return Ok(());
    }
    if team.size() > 1 {
        eprintln!("MPI: step 2's methods ran on {} ranks", team.size());
    }
    let out_dir = args.out.unwrap_or_else(|| PathBuf::from("out").join(&set.name));
    let files = outputs::write(&out_dir, &result, &set)?;
    // The table says it in its last line; JSON has no such line.
    if args.json && result.methods.first().is_some_and(|m| m.summary.cycles_averaged == 0) {
        eprintln!(
            "warning: no cycle is after the burn-in (t > {}); the time means are null. Run more cycles (--cycles) or lower [experiment] burn_in",
            set.set.experiment.burn_in
        );
    }
    if let Some(registry) = registry.as_mut() {
        let reg = outputs::register(registry, &set, &result, &files)?;
        let dir = registry.dir().display();
        match reg.identical_to_earlier {
            Some(true) => eprintln!("registry {dir}: identical inputs to an earlier run; its {} outputs are identical (same hashes)", reg.outputs.len() + 1),
            Some(false) => eprintln!("registry {dir}: identical inputs to an earlier run, but the outputs differ from it (not reproducible?)"),
            None => eprintln!("registry {dir}: registered {} new artifact(s) of {}", reg.new_artifacts, reg.total_artifacts),
        }
    }
    if args.json {
        let rows: Vec<_> = result.methods.iter().map(|r| r.row()).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{}", outputs::table(&result));
        println!("wrote {} files to {}", files.methods.len() + 2, out_dir.display());
    }
    Ok(())
}

/// `geohost run` on a retrieval plugin-set (with `[scenes]`): synthetic
/// L1 scenes and the matched filter with IME, scored against the truth.
fn run_retrieval(args: RunArgs) -> Result<()> {
    use geohost_cycle::scenes;
    let set = scenes::RetrievalSet::load(&args.plugin_set)?;
    if args.until_step.is_some() || args.cycles.is_some() {
        anyhow::bail!("--until-step and --cycles apply to dynamic plugin-sets; {} is a retrieval one ([scenes])", args.plugin_set.display());
    }
    let runtime = args.sandbox.runtime(set.set.limits)?;
    let mut registry = if args.no_registry { None } else { Some(Registry::open(&args.registry.clone().unwrap_or_else(default_dir))?) };
    let result = scenes::run(&set, &runtime, registry.as_mut())?;
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("out").join(&set.name));
    let files = scenes::write(&out_dir, &result, &set)?;
    let report = geohost_cycle::retrieval_report::report(&result, &set, &files);
    let report_bytes = serde_json::to_vec_pretty(&report)?;
    let report_path = out_dir.join("cycle-report.json");
    std::fs::write(&report_path, &report_bytes).with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(registry) = registry.as_mut() {
        let id = geohost_cycle::retrieval_report::register(registry, &result, &set, &files, &report, &report_bytes)?;
        eprintln!("registry {}: every step's output registered; cycle report {id}", registry.dir().display());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "summary": scenes::summary(&result, &set), "scenes": result.rows, "report": report }))?
        );
    } else {
        println!("{}", scenes::table(&result));
        for c in &report.checks {
            println!("step {} {}: {:.4} (needs {}) {}", c.step, c.check, c.value, c.limit, if c.pass { "pass" } else { "FAIL" });
        }
        println!("cycle report: {}", report.verdict);
        println!("wrote scenes.csv, scene-1.nc, summary.json and cycle-report.json to {}", out_dir.display());
    }
    Ok(())
}

/// `geohost run` on a static plugin-set (with `[simulator]`): ES-MDA and
/// MCMC over the simulator's parameters.
fn run_static(args: RunArgs) -> Result<()> {
    use geohost_cycle::static_run as infer;
    let set = infer::StaticSet::load(&args.plugin_set)?;
    if args.until_step.is_some() || args.cycles.is_some() {
        anyhow::bail!("--until-step and --cycles apply to dynamic plugin-sets; {} is a static one ([simulator])", args.plugin_set.display());
    }
    let runtime = args.sandbox.runtime(set.set.limits)?;
    let mut registry = if args.no_registry { None } else { Some(Registry::open(&args.registry.clone().unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(args.quiet || args.json);
    let result = {
        let mut bar = set.set.step5.as_ref().map(|s| progress("step 5: training the posterior", s.network.max_epochs));
        let mut on_epoch = |epoch: usize, _train: f64, _val: f64| {
            if let Some(b) = bar.as_mut() {
                b.tick(epoch);
            }
        };
        let result = infer::run(&set, &runtime, registry.as_mut(), &mut on_epoch)?;
        if let Some(b) = bar.as_mut() {
            b.finish();
        }
        result
    };
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("out").join(&set.name));
    let files = infer::write(&out_dir, &result, &set)?;
    let report = static_report::report(&result, &set, &files);
    let report_bytes = serde_json::to_vec_pretty(&report)?;
    let report_path = out_dir.join("cycle-report.json");
    std::fs::write(&report_path, &report_bytes).with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(registry) = registry.as_mut() {
        let id = static_report::register(registry, &result, &set, &files, &report, &report_bytes)?;
        eprintln!("registry {}: every step's output registered; cycle report {id}", registry.dir().display());
    }
    if args.json {
        let rows: Vec<_> = result
            .posteriors
            .iter()
            .map(|p| {
                let stats: Vec<_> = infer::moments(&p.samples)
                    .into_iter()
                    .zip(&result.prior.names)
                    .map(|((mean, sd), name)| serde_json::json!({ "name": name, "mean": mean, "sd": sd }))
                    .collect();
                serde_json::json!({
                    "method": p.method.label(),
                    "parameters": stats,
                    "samples": p.samples.ncols(),
                    "seconds": p.seconds,
                    "simulations": p.simulations,
                    "diagnostics": p.diagnostics,
                })
            })
            .collect();
        let step5 = result.step5.as_ref().map(|s5| {
            serde_json::json!({
                "predictor": s5.record,
                "sample_ms": s5.sample_ms,
                "samples": s5.samples.ncols(),
                "c2st_vs_mcmc": s5.c2st_vs_mcmc,
                "mcmc_seconds": s5.mcmc_seconds,
                "held_out_c2st": s5.held_out_c2st,
                "held_out_reference_r_hat": s5.held_out_r_hat,
                "reference_c2st": s5.reference_c2st,
                "calibration": s5.calibration,
            })
        });
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "truth": result.truth, "y": result.y, "parameters": result.prior.names, "methods": rows, "step5": step5, "cycle_report": report })
            )?
        );
    } else {
        print!("{}", infer::table(&result));
        print!("{}", static_report::summary(&report));
        println!(
            "wrote {} files to {}",
            files.posteriors.len() + 2 + 2 * usize::from(files.step4.is_some()) + usize::from(result.step5.is_some()),
            out_dir.display()
        );
    }
    Ok(())
}
