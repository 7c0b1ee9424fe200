//! The `geohost` command line: a thin layer over the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use geohost::registry::{default_dir, Registry};
use geohost::sandbox::{CompileCache, Limits, Runtime};
use geohost::{output, perf, pluginset::PluginSet, run};

mod bench_cmd;
mod registry_cmd;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "geohost", version, about = "A plugin host for the data-driven modeling cycle of geoscience")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a twin experiment: truth, observations and every DA method of a plugin-set (then its [step3] and [step4]).
    Run(RunArgs),
    /// Load a plugin, check it, configure it and print its self-description.
    Inspect(InspectArgs),
    /// Print performance figures (not a test: read the numbers).
    Perf(PerfArgs),
    /// The lineage registry: artifacts, lineage, oracles, staleness, integrity.
    Registry(registry_cmd::RegistryArgs),
    /// Benchmark contracts: pre-register, score candidates into reports, diff reports, score a cycle.
    Bench(bench_cmd::BenchArgs),
    /// Train a step-3 emulator ([step3]) or a step-5 posterior ([step5] of a static set).
    Train(TrainArgs),
    /// Step 5: draw from a trained amortized posterior.
    Posterior(PosteriorArgs),
}

#[derive(Args)]
struct RunArgs {
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

/// Sandbox limits and caching (override the plugin-set's `[limits]`).
#[derive(Args)]
pub(crate) struct SandboxArgs {
    /// Instruction budget per plugin call (0 = unmetered).
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline per plugin call, in ms.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Linear-memory cap per plugin, in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Maximum wasm stack, in KiB.
    #[arg(long)]
    stack_kib: Option<u64>,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
}

impl SandboxArgs {
    pub(crate) fn runtime(&self, base: Limits) -> Result<Runtime> {
        let limits = Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            memory_mib: self.memory_mib.unwrap_or(base.memory_mib),
            stack_kib: self.stack_kib.unwrap_or(base.stack_kib),
            // Only a plugin-set's `[limits]` turns it off, so that the
            // recorded plugin-set says so; scoring always keeps it.
            nan_canonicalization: base.nan_canonicalization,
        };
        let cache = if self.no_cache { None } else { CompileCache::default_dir() };
        Runtime::new(limits, cache)
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(subcommand)]
    what: TrainWhat,
}

#[derive(Subcommand)]
enum TrainWhat {
    /// Draw the simulation dataset (or load it by request key) and train the emulator (or load identical earlier weights).
    Emulator {
        /// The plugin-set file (TOML) with a [step3] section.
        plugin_set: PathBuf,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        quiet: bool,
        /// Registry directory [default: $GEOHOST_REGISTRY or ~/.local/share/geohost/registry].
        #[arg(long)]
        registry: Option<PathBuf>,
        /// Do not use the registry (no caching, nothing recorded).
        #[arg(long, conflicts_with = "registry")]
        no_registry: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Step 5: simulate training pairs from a static plugin-set's prior (or load them by request key) and train its [step5] posterior.
    Posterior {
        /// The static plugin-set file (TOML) with a [step5] section.
        plugin_set: PathBuf,
        /// Where to write the predictor [default: out/<name>/<step5 name>.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        quiet: bool,
        #[arg(long)]
        registry: Option<PathBuf>,
        #[arg(long, conflicts_with = "registry")]
        no_registry: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

/// `geohost posterior`: use a trained step-5 predictor.
#[derive(Args)]
struct PosteriorArgs {
    #[command(subcommand)]
    what: PosteriorWhat,
}

#[derive(Subcommand)]
enum PosteriorWhat {
    /// Draw posterior samples for an observation, printed as CSV (one column per parameter) or written as NetCDF.
    Sample {
        /// The predictor: a .safetensors file, or a registry reference (id, prefix or name) with role predictor.
        predictor: String,
        /// The observation: an observation.nc from `geohost run` on a static set, or a text file of numbers.
        #[arg(long)]
        obs: PathBuf,
        /// Number of samples.
        #[arg(short = 'n', long, default_value_t = 1000)]
        samples: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write samples(sample, parameter) as NetCDF instead of CSV to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        registry: Option<PathBuf>,
    },
}

#[derive(Args)]
struct InspectArgs {
    /// The component file.
    plugin: PathBuf,
    /// Which world to check it against.
    #[arg(long, value_parser = ["forward-model", "obs-operator", "metric", "static-model"], default_value = "forward-model")]
    world: String,
    /// Config document (JSON object) passed to init.
    #[arg(long, default_value = "{}")]
    config: String,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args)]
struct PerfArgs {
    #[command(subcommand)]
    target: Option<PerfTarget>,
}

#[derive(Subcommand)]
enum PerfTarget {
    /// ETKF cycle cost with the wasm and the native Lorenz-96 (the default).
    Da(DaPerfArgs),
    /// Hashing and registration throughput of the registry.
    Registry(RegistryPerfArgs),
    /// Emulator training throughput (samples/s) and ensemble-step time against the wasm model.
    Emulator(EmulatorPerfArgs),
    /// Step-5 posterior on sbibm's 10-D linear-Gaussian task: C2ST against the exact posterior, training and sampling time
    Posterior(PosteriorPerfArgs),
}

#[derive(Args)]
struct EmulatorPerfArgs {
    /// The Lorenz-96 component the emulator step is compared with.
    #[arg(long, default_value = "plugins/dist/lorenz96.wasm")]
    plugin: PathBuf,
    /// Ensemble size for the step timing.
    #[arg(long, default_value_t = 40)]
    members: usize,
    /// Training steps per timing sample.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Timing samples (the median is reported).
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Print only the fused MLP step's samples/s (the two-thread figure is
    /// measured by running this in a child process).
    #[arg(long, hide = true)]
    fused_only: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args)]
struct PosteriorPerfArgs {
    #[arg(long, default_value_t = 10_000)]
    simulations: usize,
    #[arg(long, default_value_t = 10)]
    observations: usize,
    /// Posterior samples per observation (and exact samples to compare).
    #[arg(long, default_value_t = 10_000)]
    samples: usize,
    /// Mixture components.
    #[arg(long, default_value_t = 5)]
    components: usize,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    hidden: Vec<usize>,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 200)]
    batch: usize,
}

#[derive(Args)]
struct RegistryPerfArgs {
    /// Scratch directory (a 1 GiB file is written there and removed).
    #[arg(long, default_value = "target/perf-registry")]
    dir: PathBuf,
    /// Size of the hashed file, in GiB.
    #[arg(long, default_value_t = 1)]
    gib: u64,
    /// Number of small artifacts to register.
    #[arg(long, default_value_t = 2000)]
    small: usize,
}

#[derive(Parser)]
struct DaPerfArgs {
    /// The Lorenz-96 component to compare with the native model.
    #[arg(long, default_value = "plugins/dist/lorenz96.wasm")]
    plugin: PathBuf,
    /// Ensemble size.
    #[arg(long, default_value_t = 40)]
    members: usize,
    /// Cycles per timing sample.
    #[arg(long, default_value_t = 1000)]
    cycles: usize,
    /// Timing samples (the median is reported).
    #[arg(long, default_value_t = 7)]
    samples: usize,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// A progress bar for one task.
struct Bar {
    bar: ProgressBar,
    total: usize,
}

impl run::Progress for Bar {
    fn tick(&mut self, k: usize) {
        self.bar.set_position(k as u64 + 1);
        if k + 1 >= self.total {
            self.bar.finish();
        }
    }
    fn message(&mut self, message: String) {
        self.bar.set_message(message);
    }
    fn finish(&mut self) {
        self.bar.finish();
    }
}

pub(crate) fn progress_factory(quiet: bool) -> impl FnMut(&str, usize) -> Box<dyn run::Progress> {
    move |label, total| {
        if quiet {
            return Box::new(run::Silent);
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:<36} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}").expect("valid template").progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(Bar { bar, total })
    }
}

/// `geohost run` on a static plugin-set (with `[simulator]`): ES-MDA and
/// MCMC over the simulator's parameters.
fn cmd_run_static(args: RunArgs) -> Result<()> {
    use geohost::infer::run as infer;
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
    let report = geohost::infer::cycle::report(&result, &set, &files);
    let report_bytes = serde_json::to_vec_pretty(&report)?;
    let report_path = out_dir.join("cycle-report.json");
    std::fs::write(&report_path, &report_bytes).with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(registry) = registry.as_mut() {
        let id = infer::register(registry, &result, &set, &files, &report, &report_bytes)?;
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
                "calibration": s5.calibration,
            })
        });
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "truth": result.truth, "parameters": result.prior.names, "methods": rows, "step5": step5, "cycle_report": report })
            )?
        );
    } else {
        print!("{}", infer::table(&result));
        print!("{}", geohost::infer::cycle::summary(&report));
        println!(
            "wrote {} files to {}",
            files.posteriors.len() + 2 + 2 * usize::from(files.step4.is_some()) + usize::from(result.step5.is_some()),
            out_dir.display()
        );
    }
    Ok(())
}

fn cmd_run(args: RunArgs) -> Result<()> {
    if std::fs::read_to_string(&args.plugin_set).is_ok_and(|text| geohost::infer::run::is_static(&text)) {
        return cmd_run_static(args);
    }
    let mut set = PluginSet::load(&args.plugin_set)?;
    match args.until_step {
        Some(2) => (set.set.step3, set.set.step4) = (None, None),
        Some(3) => set.set.step4 = None,
        _ => {}
    }
    let runtime = args.sandbox.runtime(set.set.limits)?;
    let mut registry = if args.no_registry { None } else { Some(Registry::open(&args.registry.clone().unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(args.quiet || args.json);
    let result = run::run(&set, &runtime, registry.as_mut(), args.cycles, &mut progress)?;
    let out_dir = args.out.unwrap_or_else(|| PathBuf::from("out").join(&set.name));
    let files = output::write(&out_dir, &result, &set)?;
    if result.methods.first().is_some_and(|m| m.summary.cycles_averaged == 0) {
        eprintln!(
            "warning: no cycle is after the burn-in (t > {}); time means are NaN. Run more cycles or shorten experiment.burn_in",
            set.set.experiment.burn_in
        );
    }
    if let Some(registry) = registry.as_mut() {
        let reg = run::register(registry, &set, &result, &files)?;
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
        println!("{}", output::table(&result));
        println!("wrote {} files to {}", files.methods.len() + 2, out_dir.display());
    }
    Ok(())
}

fn cmd_train_posterior(
    plugin_set: PathBuf,
    out: Option<PathBuf>,
    json: bool,
    quiet: bool,
    registry: Option<PathBuf>,
    no_registry: bool,
    sandbox: SandboxArgs,
) -> Result<()> {
    use geohost::infer::run as infer;
    let set = infer::StaticSet::load(&plugin_set)?;
    let spec = set.set.step5.as_ref().with_context(|| format!("{} has no [step5] section", plugin_set.display()))?;
    let runtime = sandbox.runtime(set.set.limits)?;
    let mut registry = if no_registry { None } else { Some(Registry::open(&registry.unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(quiet || json);
    let mut bar = progress("step 5: training the posterior", spec.network.max_epochs);
    let (record, weights) = infer::train_posterior(&set, &runtime, registry.as_mut(), &mut |epoch, _, _| bar.tick(epoch))?;
    bar.finish();
    let path = out.unwrap_or_else(|| PathBuf::from("out").join(&set.name).join(format!("{}.safetensors", output::file_stem(&record.name))));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, &weights).with_context(|| format!("writing {}", path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        let t = &record.training;
        println!("predictor {} ({}) -> {}", record.name, record.id, path.display());
        let when = if record.predictor_cache_hit { "loaded from the registry".to_string() } else { format!("{:.1} s", t.seconds) };
        println!(
            "  {} pairs ({}), {} epochs (best {}), validation NLL {:.3}, {when}",
            record.simulations,
            if record.dataset_cache_hit { "cached" } else { "simulated" },
            t.epochs,
            t.best_epoch,
            t.best_val_nll,
        );
    }
    Ok(())
}

fn cmd_posterior(args: PosteriorArgs) -> Result<()> {
    use geohost::infer::refine::Predictor;
    use rand::SeedableRng;
    let PosteriorWhat::Sample { predictor, obs, samples, seed, out, registry } = args.what;
    let registry_dir = registry.unwrap_or_else(default_dir);
    let open_registry = |why: String| Registry::open_existing(&registry_dir).with_context(|| why);
    let (label, bytes) = if std::path::Path::new(&predictor).is_file() {
        (predictor.clone(), std::fs::read(&predictor).with_context(|| format!("cannot read {predictor}"))?)
    } else {
        let reg = open_registry(format!("`{predictor}` is not a file, and the registry to look it up in could not be opened"))?;
        let id = reg.resolve(&predictor)?;
        let artifact = reg.get(&id)?;
        if artifact.role.as_deref() != Some("predictor") {
            anyhow::bail!("{id} ({}) is a {} without role `predictor`; name a step-5 posterior", artifact.name, artifact.kind);
        }
        (id.clone(), reg.read(&id)?)
    };
    let (mdn, meta) = Predictor::from_safetensors(&label, &bytes)?;
    // A refinement stage runs the simulator once: its plugins come from the registry.
    let mut plugins = match mdn.second {
        None => None,
        Some(_) => {
            let reg = open_registry(format!("{label} refines its posterior by running the simulator, whose plugins are read from the registry, and the registry could not be opened (give --registry)"))?;
            Some(geohost::infer::run::ForwardPlugins::load(&reg, &meta["refine"]["forward"], &label)?)
        }
    };
    let obs_bytes = std::fs::read(&obs).with_context(|| format!("cannot read observation file {}", obs.display()))?;
    let y: Vec<f64> = if obs_bytes.starts_with(b"CDF") {
        output::read::ObservationFile::parse(&obs.display().to_string(), obs_bytes)?.y
    } else {
        let text = String::from_utf8(obs_bytes).with_context(|| format!("{} is neither NetCDF nor text", obs.display()))?;
        text.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<f64>().with_context(|| format!("{}: `{t}` is not a number", obs.display())))
            .collect::<Result<_>>()?
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let start = std::time::Instant::now();
    let mut no_forward = |_: &nalgebra::DMatrix<f64>| -> Result<nalgebra::DMatrix<f64>> { anyhow::bail!("a single-stage predictor runs no simulator") };
    let draws = match plugins.as_mut() {
        Some(p) => mdn.condition(&y, &mut p.forward()),
        None => mdn.condition(&y, &mut no_forward),
    }
    .and_then(|q| q.sample(samples, &mut rng))
    .with_context(|| format!("sampling the posterior for {}", obs.display()))?;
    eprintln!("drew {samples} samples in {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
    match out {
        Some(path) => {
            let bytes = geohost::infer::amortize::samples_bytes(mdn.parameters(), &draws, &label)?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            println!("{}", mdn.parameters().join(","));
            for col in draws.column_iter() {
                println!("{}", col.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
            }
        }
    }
    Ok(())
}

fn cmd_train(args: TrainArgs) -> Result<()> {
    let (plugin_set, json, quiet, registry, no_registry, sandbox) = match args.what {
        TrainWhat::Emulator { plugin_set, json, quiet, registry, no_registry, sandbox } => (plugin_set, json, quiet, registry, no_registry, sandbox),
        TrainWhat::Posterior { plugin_set, out, json, quiet, registry, no_registry, sandbox } => {
            return cmd_train_posterior(plugin_set, out, json, quiet, registry, no_registry, sandbox)
        }
    };
    let set = PluginSet::load(&plugin_set)?;
    let runtime = sandbox.runtime(set.set.limits)?;
    let mut registry = if no_registry { None } else { Some(Registry::open(&registry.unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(quiet || json);
    let record = run::train_emulator(&set, &runtime, registry.as_mut(), &mut progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(());
    }
    println!("emulator {} ({})", record.name, record.id);
    println!("  dataset {} ({} samples{})", record.dataset, record.samples, if record.dataset_cache_hit { ", cache hit" } else { "" });
    println!("  one-step validation RMSE {:.3e} (state std {:.3}, ratio {:.2e})", record.val_rmse, record.state_std, record.val_rmse / record.state_std);
    match record.samples_per_s {
        Some(rate) => println!("  trained {} epochs (best {}), {rate:.0} samples/s", record.epochs, record.best_epoch + 1),
        None => println!("  loaded: identical training inputs were trained before (no training)"),
    }
    Ok(())
}

fn cmd_inspect(args: InspectArgs) -> Result<()> {
    use geohost::model::{ForwardModel, ObsOperator, Simulator};
    use geohost::sandbox::{WasmForward, WasmMetric, WasmObs, WasmSimulator, World};
    let runtime = args.sandbox.runtime(Limits::default())?;
    let world = match args.world.as_str() {
        "obs-operator" => World::ObsOperator,
        "metric" => World::Metric,
        "static-model" => World::StaticModel,
        _ => World::ForwardModel,
    };
    let name = args.plugin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let loaded = runtime.load(&name, &args.plugin, world)?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&args.config).context("--config must be a JSON object")?;
    let info = match world {
        World::ForwardModel => serde_json::to_value(WasmForward::new(&runtime, &loaded, &args.config)?.info())?,
        World::ObsOperator => serde_json::to_value(WasmObs::new(&runtime, &loaded, &args.config)?.info())?,
        World::StaticModel => serde_json::to_value(WasmSimulator::new(&runtime, &loaded, &args.config)?.info())?,
        World::Metric => {
            let m = WasmMetric::new(&runtime, &loaded, &args.config)?;
            serde_json::json!({ "name": m.name, "version": m.version, "metrics": m.metrics })
        }
    };
    let report = serde_json::json!({
        "path": args.plugin.display().to_string(),
        "blake3": format!("blake3:{}", loaded.hash.to_hex()),
        "size": loaded.size,
        "world": world.name(),
        "compiled_from_cache": loaded.from_cache,
        "info": info,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn cmd_perf(args: PerfArgs) -> Result<()> {
    let report = match args.target {
        Some(PerfTarget::Registry(r)) => perf::registry_throughput(&r.dir, r.gib, r.small)?,
        Some(PerfTarget::Da(d)) => perf_da(d)?,
        Some(PerfTarget::Emulator(e)) if e.fused_only => format!("{:.0}", perf::fused_mlp_only(e.steps, e.samples)?),
        Some(PerfTarget::Emulator(e)) => perf_emulator(e)?,
        Some(PerfTarget::Posterior(p)) => {
            let spec = geohost::infer::mdn::MdnSpec { components: p.components, hidden: p.hidden, lr: p.lr, batch: p.batch, ..Default::default() };
            perf::posterior_benchmark(p.simulations, p.observations, p.samples, &spec)?
        }
        None => perf_da(DaPerfArgs::parse_from(["da"]))?,
    };
    println!("{report}");
    Ok(())
}

fn perf_da(args: DaPerfArgs) -> Result<String> {
    let runtime = args.sandbox.runtime(Limits::default())?;
    perf::forward_cost(&runtime, &args.plugin, args.members, args.cycles, args.samples)
}

/// `perf emulator`, plus the fused step on two GEMM threads: a child
/// process, since matrixmultiply reads MATMUL_NUM_THREADS once.
fn perf_emulator(e: EmulatorPerfArgs) -> Result<String> {
    let mut out = perf::emulator_cost(&e.sandbox.runtime(Limits::default())?, &e.plugin, e.members, e.steps, e.samples)?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["perf", "emulator", "--fused-only", "--steps", &e.steps.to_string(), "--samples", &e.samples.to_string()])
        .env("MATMUL_NUM_THREADS", "2")
        .output()
        .context("running the two-thread measurement")?;
    let figure = String::from_utf8_lossy(&child.stdout).trim().to_string();
    if !child.status.success() || figure.parse::<f64>().is_err() {
        anyhow::bail!("the two-thread measurement failed: {}", String::from_utf8_lossy(&child.stderr).trim());
    }
    out.push_str(&format!("two GEMM threads (MATMUL_NUM_THREADS=2):\n  {:<50} {figure:>9} samples/s  (fused step)\n", "MLP 40-256-256-40, batch 256"));
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    // Neural kernels are small: one thread is faster here (parallelise over
    // runs instead), and it keeps training bit-reproducible.
    // RAYON_NUM_THREADS (candle) and MATMUL_NUM_THREADS (the fused mlp
    // step) override; no thread has started yet, so setting them is safe.
    if matches!(cli.command, Command::Run(_) | Command::Train(_) | Command::Perf(_)) {
        for var in ["RAYON_NUM_THREADS", "MATMUL_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                std::env::set_var(var, "1");
            }
        }
    }
    let result = match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Inspect(args) => cmd_inspect(args),
        Command::Perf(args) => cmd_perf(args),
        Command::Registry(args) => registry_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Train(args) => cmd_train(args),
        Command::Posterior(args) => cmd_posterior(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
