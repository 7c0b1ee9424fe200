//! The `geohost` command line: a thin layer over the library.

use clap::{Parser, Subcommand};
use commands::{bench, export, inspect, matrix, new, perf as perf_cmd, posterior, registry, report, run, train};

mod commands;
mod perf;
mod ranks;

#[derive(Parser)]
#[command(name = "geohost", version, about = "A plugin host for the data-driven modeling cycle of geoscience")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a twin experiment: truth, observations and every DA method of a plugin-set (then its [step3] and [step4]).
    Run(run::RunArgs),
    /// Load a plugin, check it, configure it and print its self-description.
    Inspect(inspect::InspectArgs),
    /// Print performance figures (not a test: read the numbers).
    Perf(perf_cmd::PerfArgs),
    /// The lineage registry: artifacts, lineage, oracles, staleness, integrity.
    Registry(registry::RegistryArgs),
    /// Benchmark contracts: pre-register, submit components, score candidates into reports, diff reports, score a cycle.
    Bench(bench::BenchArgs),
    /// Train a step-3 emulator ([step3]) or a step-5 posterior ([step5] of a static set).
    Train(train::TrainArgs),
    /// Step 5: draw from a trained amortized posterior.
    Posterior(posterior::PosteriorArgs),
    /// Scaffold a plugin crate for one world, outside this repository if you like; build it with plugins/build.sh DIR.
    New(new::NewArgs),
    /// Turn a trained artifact into a component: `export posterior` makes a step-5 predictor a `posterior` component.
    Export(export::ExportArgs),
    /// The L0–L4 transition × step matrix of the registry: each cell's artifacts, its contracts' latest verdicts, what is stale and why.
    Matrix(matrix::MatrixArgs),
    /// A run's results from its output folder; --html writes them as a page (RMSE and spread over time, rank histograms).
    Report(report::ReportArgs),
}

fn main() {
    // The compiling child of `bench submit` (compile isolation): not a
    // user command, so it is not in the help.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(geohost_sandbox::isolate::SUBCOMMAND) {
        std::process::exit(geohost_sandbox::isolate::child_main(&args[2..]));
    }
    // Like other command-line tools: output piped into `head` that closes
    // early ends the process quietly instead of a panic on the next print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(message) = geohost_da::linalg::requested_vectors() {
        print_error(&message);
        std::process::exit(2);
    }
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
        Command::Run(args) => run::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Perf(args) => perf_cmd::run(args),
        Command::Registry(args) => registry::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args),
        Command::Posterior(args) => posterior::run(args),
        Command::Export(args) => export::run(args),
        Command::New(args) => new::run(args),
        Command::Matrix(args) => matrix::run(args),
        Command::Report(args) => report::run(args),
    };
    if let Err(error) = result {
        print_error(&format!("{error:#}"));
        std::process::exit(1);
    }
}

/// `error: MESSAGE` on stderr in one write. `eprintln!` writes each piece
/// of a formatted message as it goes (stderr is unbuffered), and under
/// `mpirun` another rank's lines then land inside this one's.
pub(crate) fn print_error(message: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(format!("error: {message}\n").as_bytes());
}

/// Keep freed memory in the process instead of handing it back to the
/// kernel. A cycle allocates and frees buffers of about a megabyte (the
/// ensemble through each plugin call, the observed ensemble, the analysis's
/// transposes); with glibc's defaults they are mapped and returned again
/// every cycle, and faulting their pages back in cost a quarter of a
/// Lorenz-96-4000 forecast (docs/performance.md). Allocations above
/// 256 MiB are still mapped on their own and returned when freed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `run --model-instances`'s help quotes the split threshold; clap help
    /// is a literal, so this keeps it and the constant together.
    #[test]
    fn model_instances_help_quotes_the_split_threshold() {
        let mut cli = Cli::command();
        let run = cli.find_subcommand_mut("run").expect("a run subcommand");
        let help = run.get_arguments().find(|a| a.get_id() == "model_instances").and_then(|a| a.get_help()).expect("--model-instances has help").to_string();
        let ms = geohost_da::ensemble::SPLIT_FROM.as_secs_f64() * 1e3;
        assert!(
            help.contains(&format!("under {ms} ms on one instance (the fastest of its first three)")),
            "--model-instances help must quote SPLIT_FROM ({ms} ms): {help}"
        );
        let at_once = ms * geohost_da::ensemble::AT_ONCE as f64;
        assert!(help.contains(&format!("one of {at_once} ms or more splits from the next call")), "--model-instances help must quote AT_ONCE: {help}");
    }
}
