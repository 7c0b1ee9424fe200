//! `geohost perf`: performance figures to read (not tests). The
//! measurements themselves are in [`crate::perf`].

use super::SandboxArgs;
use crate::perf;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use geohost_sandbox::{Limits, Runtime};
use std::path::PathBuf;

#[derive(Args)]
pub struct PerfArgs {
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
    /// Submissions: the ETKF filter component against the native ETKF (ms per cycle, ratio), and small-submission throughput through `bench submit`'s whole path.
    Submission(SubmissionPerfArgs),
    /// Step-5 posterior on sbibm's 10-D linear-Gaussian task: C2ST against the exact posterior, training and sampling time
    Posterior(PosteriorPerfArgs),
    /// Lorenz-96 in Rust, Python and JavaScript: component size, first and cached compile, ms per ETKF cycle and the ratio to Rust.
    Languages(LanguagesPerfArgs),
    /// The LETKF at size: ms per analysis on Lorenz-96 (native, every variable observed, loc_rad 4) and QG with 1, 2, … threads, the speed-up and parallel efficiency with the machine's ceiling (t copies of one CPU-bound job at once against one) and a cache line's round trip between two cores, and the forecast's ms beside it; under `mpirun -np K`, the cycle on K ranks against one process.
    Letkf(LetkfPerfArgs),
    /// Whole `geohost run` cycles on 1, 2, … threads: each plugin-set run in child processes (GEOHOST_THREADS), the counts taking turns; ms per cycle and per phase, the paired speed-up and its range, the machine's ceiling and the cost of a hand-off between two cores (a cache line's round trip), measured between the runs.
    Threads(ThreadsPerfArgs),
    /// A plugin-set's forward model, call by call (ms per cycle of its members); with --against, a second build of the component taking turns with it: the paired ratio and its quartiles, and whether the two give the same bits.
    Model(ModelPerfArgs),
}

#[derive(Args)]
struct ModelPerfArgs {
    /// The plugin-set whose [model] (component file and config), cycle length and [limits] are timed.
    set: PathBuf,
    /// Another build of the same component, timed against it call by call.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Timed calls (per build).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Untimed calls first (per build).
    #[arg(long, default_value_t = 10)]
    warm_up: usize,
    /// Ensemble members advanced per call.
    #[arg(long, default_value_t = 1)]
    members: usize,
}

#[derive(Args)]
struct ThreadsPerfArgs {
    /// Plugin-sets to run [default: cycles/bench/l96-letkf-{400,4000,40000}.toml and cycles/bench/qg-timing.toml].
    sets: Vec<PathBuf>,
    /// Thread counts, comma-separated (the first is the reference).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Rounds: each runs every set once on every thread count.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Arguments for every `geohost run`, after `--` (e.g. `-- --model-instances 1`).
    #[arg(last = true)]
    run_args: Vec<String>,
}

#[derive(Args)]
struct LetkfPerfArgs {
    /// State sizes (Lorenz-96 variables), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "400,40000")]
    sizes: Vec<usize>,
    /// Thread counts, comma-separated (the first is the reference).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Timing samples (the median is reported).
    #[arg(long, default_value_t = 7)]
    samples: usize,
    /// The plugin-set for the 2-D row (DAPPER's sakov2008 analysis): its
    /// [model] component and config, its cycle length and its [limits], as
    /// `geohost run` uses them; `none` leaves the row out.
    #[arg(long, default_value = "cycles/qg.toml")]
    qg: PathBuf,
}

#[derive(Args)]
struct LanguagesPerfArgs {
    /// Directory holding lorenz96.wasm, lorenz96-py.wasm and lorenz96-js.wasm.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    #[arg(long, default_value_t = 20)]
    members: usize,
    /// Cycles per timing sample.
    #[arg(long, default_value_t = 100)]
    cycles: usize,
    #[arg(long, default_value_t = 5)]
    samples: usize,
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
    /// The conditional density estimator: mdn, nsf or maf.
    #[arg(long, default_value = "mdn")]
    estimator: String,
    /// An sbibm task instead of the 10-D linear-Gaussian one:
    /// gaussian_linear_uniform, gaussian_mixture or bernoulli_glm. It trains
    /// the task's plugin-set (cycles/sbibm/TASK.toml; its [step5] network
    /// unless --estimator is given) and scores against sbibm's reference
    /// posteriors (fetched by scripts/fetch-sbibm.sh into --data).
    #[arg(long)]
    task: Option<String>,
    /// Where scripts/fetch-sbibm.sh put sbibm's files.
    #[arg(long, default_value = "target/sbibm")]
    data: PathBuf,
    /// The folder of the sbibm plugin-sets.
    #[arg(long, default_value = "cycles/sbibm")]
    sets: PathBuf,
    /// Training seeds (each a full training; the spread is reported).
    #[arg(long, default_value_t = 1)]
    seeds: usize,
}

#[derive(Args)]
struct SubmissionPerfArgs {
    /// Directory holding filter-etkf.wasm, filter-nudging.wasm, lorenz96.wasm, obs-subset.wasm and metrics-standard.wasm.
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    #[arg(long, default_value_t = 28)]
    members: usize,
    /// Cycles per timing sample.
    #[arg(long, default_value_t = 1000)]
    cycles: usize,
    #[arg(long, default_value_t = 7)]
    samples: usize,
    /// Small submissions timed.
    #[arg(long, default_value_t = 7)]
    small: usize,
    /// Cycles of each small submission's runs.
    #[arg(long, default_value_t = 50)]
    small_cycles: usize,
    #[command(flatten)]
    sandbox: SandboxArgs,
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

pub fn run(args: PerfArgs) -> Result<()> {
    // `mpirun -np K geohost perf letkf` times the cycle split over K ranks;
    // the other figures are of one process.
    let ranks = crate::ranks::Ranks::start()?;
    if !matches!(args.target, Some(PerfTarget::Letkf(_))) {
        ranks.single("this `geohost perf` (only `perf letkf` splits over ranks)")?;
    }
    let report = match args.target {
        Some(PerfTarget::Registry(r)) => perf::registry_throughput(&r.dir, r.gib, r.small)?,
        Some(PerfTarget::Da(d)) => perf_da(d)?,
        Some(PerfTarget::Emulator(e)) if e.fused_only => format!("{:.0}", perf::fused_mlp_only(e.steps, e.samples)?),
        Some(PerfTarget::Emulator(e)) => perf_emulator(e)?,
        Some(PerfTarget::Submission(a)) => {
            perf::submission_cost(&a.sandbox.runtime(Limits::default())?, &a.plugins, a.members, a.cycles, a.samples, a.small, a.small_cycles)?
        }
        Some(PerfTarget::Posterior(p)) => {
            let estimator: geohost_learn::mdn::Estimator = serde_json::from_value(serde_json::Value::String(p.estimator.clone()))
                .map_err(|_| anyhow::anyhow!("--estimator {}: expected mdn, nsf or maf", p.estimator))?;
            match &p.task {
                Some(task) => {
                    let explicit = std::env::args().any(|a| a == "--estimator" || a.starts_with("--estimator="));
                    let runtime = Runtime::new(Limits::default(), None)?;
                    let task = perf::SbibmTask { name: task, sets: &p.sets, data: &p.data, simulations: p.simulations, samples: p.samples, seeds: p.seeds };
                    perf::sbibm_benchmark(&runtime, &task, explicit.then_some(estimator))?
                }
                None => {
                    let spec =
                        geohost_learn::mdn::MdnSpec { components: p.components, hidden: p.hidden, lr: p.lr, batch: p.batch, estimator, ..Default::default() };
                    perf::posterior_benchmark(p.simulations, p.observations, p.samples, &spec)?
                }
            }
        }
        Some(PerfTarget::Languages(l)) => perf::language_cost(&l.plugins, l.members, l.cycles, l.samples)?,
        Some(PerfTarget::Letkf(l)) => {
            let qg = if l.qg.as_os_str() == "none" { None } else { Some(perf::QgRow::from_set(&l.qg)?) };
            perf::letkf_cost(&l.sizes, &l.threads, l.members, l.samples, qg.as_ref(), ranks.team())?
        }
        Some(PerfTarget::Threads(t)) => {
            let sets = if t.sets.is_empty() { perf::THREAD_SETS.iter().map(PathBuf::from).collect() } else { t.sets };
            perf::thread_runs(&sets, &t.threads, t.rounds, &t.run_args)?
        }
        Some(PerfTarget::Model(m)) => {
            if m.calls < 1 || m.members < 1 {
                anyhow::bail!("perf model: --calls and --members must be at least 1");
            }
            perf::model_cost(&m.set, m.against.as_deref(), m.calls, m.members, m.warm_up)?
        }
        None => perf_da(DaPerfArgs::parse_from(["da"]))?,
    };
    if ranks.team().rank() == 0 {
        println!("{report}");
    }
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
