//! `geohost bench`: pre-register contracts, score candidates into reports,
//! compare reports, score a whole cycle.

use super::{progress_factory, SandboxArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use geohost_cycle::bench::cycle_benchmark::{self as cycle, Cycle};
use geohost_cycle::bench::{diff, hidden, leaderboard, posterior, prereg, probing, retrieval, score, submit, verify, Contract, Report};
use geohost_registry::{artifact_id, default_dir, Registry};
use geohost_sandbox::Limits;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
    /// Registry directory [default: $GEOHOST_REGISTRY or ~/.local/share/geohost/registry].
    #[arg(long, global = true)]
    registry: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Pre-register (freeze) a contract or a cycle benchmark: resolve its reference, baselines, metric components and oracle to registry ids.
    Register {
        /// The contract or cycle benchmark file (TOML).
        file: PathBuf,
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Score candidates (run-output files or registry references) against a pre-registered contract.
    Score {
        /// The contract file, or a registered contract (blake3:… or name@version).
        contract: String,
        /// Method output files (e.g. out/lorenz96/ETKF_N28_infl1.02_rot.nc) or registry references.
        #[arg(required = true)]
        candidates: Vec<String>,
        /// Report path [default: out/reports/<contract>-<id>.json].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the report as a self-contained HTML page: FILE, or a folder (the page is then named by the report's id).
        #[arg(long)]
        html: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Submit a DA method as a `filter` component: the host runs it in the sandbox on the contract's public experiment and on its hidden ones (under the contract's [budget]), scores it and registers the report (kind `submission` for the component). To a step-3 contract (a forecast reference), submit an emulator as a `forward-model` component: the host forecasts with it from the reference's initial states. To a posterior benchmark ([posterior]), submit a `posterior` component: the host scores its draws against MCMC on hidden observations. To a retrieval benchmark ([retrieval]), submit a `static-model` emulator (steps 3 and 4) or a `posterior` direct retrieval (step 5): the host scores it on hidden pixels.
    Submit {
        /// The contract file, or a registered contract (blake3:… or name@version).
        contract: String,
        /// The component (.wasm): the `filter` world, `forward-model` for a contract with a forecast reference, `posterior` for a posterior benchmark, `static-model` or `posterior` for a retrieval benchmark.
        component: PathBuf,
        /// Register the submission under this name [default: the name the component gives itself].
        #[arg(long)]
        name: Option<String>,
        /// Config passed to the component's init (a JSON object), e.g. '{"N": 28, "infl": 1.02}'.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Report path [default: out/reports/<contract>-<id>.json].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the report as a self-contained HTML page: FILE, or a folder (the page is then named by the report's id).
        #[arg(long)]
        html: Option<PathBuf>,
        /// Who submits it: recorded in the report, and counted against a contract's `max_scorings_per_day` (required there).
        #[arg(long)]
        submitter: Option<String>,
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// After a hidden benchmark closes: publish its secret seeds (checked against their commitments) so anyone can rescore; the contract is tagged `revealed` and later reports say their hidden scores are not blind. With --import, load revealed seeds into this registry (which imported the contract) instead.
    Reveal {
        /// The contract (file or registry reference); with --import, the revealed seeds (a file, or the `reveal` artifact an imported bundle brought).
        contract: String,
        /// Write the seeds here instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Load a revealed-seeds file into this registry, checking each seed against the contract's commitment.
        #[arg(long)]
        import: bool,
    },
    /// Recompute a submission's report (its registered submission, the contract's frozen inputs and, for a hidden contract, its revealed seeds) and say whether every byte matches, or what differs.
    Verify {
        /// The report: a file or a registry reference.
        report: String,
        /// The contract file [default: the registered contract, its relative paths resolved from the working directory].
        #[arg(long)]
        contract: Option<PathBuf>,
        /// The submission's file [default: the registered submission].
        #[arg(long)]
        component: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Every submission and candidate scored under a contract (all its versions), ranked by the official score (hidden mean for a hidden contract), with provenance, fuel and verdict; the oracle and baselines as reference rows.
    Leaderboard {
        /// The contract: its file, its name, or a registry reference.
        contract: String,
        #[arg(long)]
        json: bool,
        /// Also write the leaderboard as a self-contained HTML page (the table and the score-versus-fuel plot) to this file.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Show what changed between two reports, metric by metric (A before, B after).
    Diff {
        /// Report file or registry reference.
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Score a set of candidates, one per step (STEP=CANDIDATE), against every stage of a cycle benchmark.
    Cycle {
        /// The cycle benchmark file (TOML).
        cycle: PathBuf,
        /// STEP=CANDIDATE pairs, e.g. 2=out/lorenz96/ETKF_N28_infl1.02_rot.nc.
        #[arg(required = true)]
        candidates: Vec<String>,
        /// Report path [default: out/reports/<cycle>-<id>.json].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report instead of the tables.
        #[arg(long)]
        json: bool,
        /// Also write the report as a self-contained HTML page: FILE, or a folder (the page is then named by the report's id).
        #[arg(long)]
        html: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

/// A contract from a file, or from the registry by reference.
fn load_contract(registry: &Registry, arg: &str) -> Result<Contract> {
    let path = Path::new(arg);
    if path.is_file() {
        return Contract::load(path);
    }
    let id = registry.resolve(arg).with_context(|| format!("contract `{arg}` is neither a file nor a registered contract"))?;
    let a = registry.get(&id)?;
    if a.kind != "contract" {
        bail!("{id} ({}) is a {}, not a contract", a.name, a.kind);
    }
    Contract::parse(Path::new(&a.name), registry.read(&id)?)
}

/// The bytes of `arg`: a file, else a registry reference; `what` names it
/// in errors (e.g. "report").
fn read_file_or_artifact(registry: Option<&Registry>, arg: &str, what: &str) -> Result<Vec<u8>> {
    if Path::new(arg).is_file() {
        return std::fs::read(arg).with_context(|| format!("cannot read {what} {arg}"));
    }
    let registry = registry.with_context(|| format!("{what} `{arg}` is not a file, and there is no registry to look it up in"))?;
    registry.read(&registry.resolve(arg).with_context(|| format!("{what} `{arg}` is neither a file nor a registered artifact"))?)
}

/// A report file or registry reference: a stage report, or each scored
/// stage of a cycle report, with its target step.
fn load_reports(registry: Option<&Registry>, arg: &str) -> Result<Vec<(Option<u8>, Report)>> {
    let bytes = read_file_or_artifact(registry, arg, "report")?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{arg} is not JSON; expected a report from `geohost bench`"))?;
    if value.get("geohost_cycle_report").is_some() {
        let cycle: cycle::CycleReport = serde_json::from_value(value).with_context(|| format!("{arg} is not a readable cycle report"))?;
        return Ok(cycle.stages.into_iter().filter_map(|s| s.report.map(|r| (Some(s.step), r))).collect());
    }
    let report: Report =
        serde_json::from_value(value).with_context(|| format!("{arg} is not a geohost report (no field `geohost_report` or `geohost_cycle_report`)"))?;
    Ok(vec![(report.contract.target_step, report)])
}

/// Pair the stage reports of A and B: by target step, or the only report
/// of each with each other.
fn pair_reports(a: Vec<(Option<u8>, Report)>, b: Vec<(Option<u8>, Report)>) -> Vec<(Option<u8>, Report, Report)> {
    if a.len() == 1 && b.len() == 1 {
        let ((step, ra), (_, rb)) = (a.into_iter().next().expect("one"), b.into_iter().next().expect("one"));
        return vec![(step, ra, rb)];
    }
    let mut b = b;
    a.into_iter()
        .filter_map(|(step, ra)| {
            let i = b.iter().position(|(s, _)| *s == step)?;
            Some((step, ra, b.remove(i).1))
        })
        .collect()
}

/// The executable and compile cache of the compiling child process (as
/// `bench submit` uses them): the user's cache, or with --no-cache a
/// private one for this call (returned third: keep it until the child is
/// done; dropping it removes it).
fn compile_child(sandbox: &SandboxArgs) -> Result<(PathBuf, PathBuf, Option<geohost_cycle::scratch::TempDir>)> {
    let scratch = sandbox.no_cache().then(|| geohost_cycle::scratch::private("submit")).transpose()?;
    let cache_dir = match (&scratch, geohost_sandbox::CompileCache::default_dir()) {
        (Some(s), _) => s.path().to_path_buf(),
        (None, Some(d)) => d,
        (None, None) => bail!("no compile cache directory (set GEOHOST_CACHE_DIR or HOME, or pass --no-cache)"),
    };
    let exe = std::env::current_exe().context("locating the geohost executable for the compiling child")?;
    Ok((exe, cache_dir, scratch))
}

fn report_path(out: Option<PathBuf>, name: &str, bytes: &[u8]) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from("out").join("reports").join(format!("{name}-{}.json", &artifact_id(bytes)[7..19])))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let dir = args.registry.clone().unwrap_or_else(default_dir);
    match args.command {
        BenchCommand::Register { file, quiet, sandbox } => {
            let mut registry = Registry::open(&dir)?;
            let runtime = sandbox.runtime(Limits::default())?;
            let mut progress = progress_factory(quiet);
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if posterior::is_posterior(&text) {
                let c = posterior::PosteriorContract::load(&file)?;
                let (f, new) = posterior::preregister(&mut registry, &runtime, &c)?;
                if !new {
                    println!("contract {} is already pre-registered as {} (unchanged)", c.label(), f.contract);
                    return Ok(());
                }
                println!("pre-registered posterior benchmark {} as {}", c.label(), f.contract);
                println!("  plugin-set {} (simulator {}, observations {})", f.plugin_set, f.simulator, f.observations);
                println!("  oracle     {} (run at scoring time on every observation)", f.oracle);
                println!("  hidden     {} observations, seeds committed as {}", f.commitments.len(), f.commitments.join(", "));
                for (label, id) in &f.baselines {
                    println!("  baseline   {id} {label}");
                }
                return Ok(());
            }
            if retrieval::is_retrieval(&text) {
                let c = retrieval::RetrievalContract::load(&file)?;
                let (f, new) = retrieval::preregister(&mut registry, &runtime, &c)?;
                if !new {
                    println!("contract {} is already pre-registered as {} (unchanged)", c.label(), f.contract);
                    return Ok(());
                }
                println!("pre-registered retrieval benchmark {} (step {}) as {}", c.label(), f.target_step, f.contract);
                println!("  plugin-set {} (simulator {}, observations {})", f.plugin_set, f.simulator, f.observations);
                println!("  pixels     {} per experiment, ranked by {}", f.pixels, retrieval::primary_metric(f.target_step));
                for (limit, value) in &f.limits {
                    println!("  limit      {limit} = {value}");
                }
                println!("  hidden     {} experiments, seeds committed as {}", f.commitments.len(), f.commitments.join(", "));
                for (label, id) in &f.baselines {
                    println!("  baseline   {id} {label}");
                }
                return Ok(());
            }
            if cycle::is_cycle(&text) {
                let c = Cycle::load(&file)?;
                let id = cycle::preregister(&mut registry, &runtime, &c, &mut progress)?;
                println!("pre-registered cycle benchmark {}@{} as {id} ({} stages)", c.file.name, c.file.version, c.stages.len());
                return Ok(());
            }
            let contract = Contract::load(&file)?;
            for w in &contract.warnings {
                eprintln!("warning: {}: {w}", file.display());
            }
            let outcome = prereg::preregister(&mut registry, &runtime, &contract, &mut progress)?;
            let f = &outcome.frozen;
            if !outcome.new {
                println!("contract {} is already pre-registered as {} (unchanged)", contract.label(), f.contract);
                return Ok(());
            }
            println!("pre-registered contract {} as {}", contract.label(), f.contract);
            println!("  reference {}", f.reference);
            if let Some(o) = &f.oracle {
                println!("  oracle    {o} ({})", f.oracle_strength.as_deref().unwrap_or("-"));
            }
            for m in &f.metrics {
                println!("  metrics   {} {} [{}]{}", m.id, m.name, m.metrics.join(", "), if m.ensemble { " (on ensembles)" } else { "" });
            }
            for b in &f.baselines {
                println!("  baseline  {} {}", b.id, b.label);
            }
            if let Some((old, stale)) = outcome.superseded {
                println!("supersedes {old}; marked {} downstream artifact(s) stale", stale.len());
            }
            Ok(())
        }
        BenchCommand::Score { contract, candidates, out, json, html, sandbox } => {
            let mut registry = Registry::open_existing(&dir)?;
            if std::fs::read_to_string(&contract).is_ok_and(|t| posterior::is_posterior(&t)) {
                bail!(
                    "{contract} is a posterior benchmark: it scores `posterior` components on hidden observations, never files of samples (anyone can rerun the public observation's MCMC). Submit one: geohost bench submit {contract} POSTERIOR.wasm"
                );
            }
            if std::fs::read_to_string(&contract).is_ok_and(|t| retrieval::is_retrieval(&t)) {
                bail!(
                    "{contract} is a retrieval benchmark: it scores components (an emulator or a posterior) on hidden pixels, never files of results (anyone can compute results on pixels they were shown). Submit one: geohost bench submit {contract} COMPONENT.wasm"
                );
            }
            let contract = load_contract(&registry, &contract)?;
            for w in &contract.warnings {
                eprintln!("warning: {}: {w}", contract.path.display());
            }
            let runtime = sandbox.runtime(Limits::default())?;
            let ids = candidates.iter().map(|c| score::resolve_candidate(&registry, c)).collect::<Result<Vec<_>>>()?;
            let report = score::score(&registry, &runtime, &contract, &ids)?;
            score::register_candidates(&mut registry, &ids)?;
            let bytes = serde_json::to_vec_pretty(&report)?;
            let path = report_path(out, &contract.file.name, &bytes);
            let id = score::register(&mut registry, &report, &path)?;
            write_page(html.as_deref(), &report.contract.name, &id, || geohost_cycle::bench::page::html(&report, &id))?;
            if json {
                println!("{}", String::from_utf8(bytes)?);
            } else {
                println!("{}", score::table(&report));
            }
            eprintln!("report {} ({id}) registered in {}", path.display(), registry.dir().display());
            Ok(())
        }
        BenchCommand::Submit { contract, component, name, config, out, json, html, submitter, quiet, sandbox } => {
            let mut registry = Registry::open_existing(&dir)?;
            let text = std::fs::read_to_string(&contract).ok();
            let posterior_contract = match &text {
                Some(text) if posterior::is_posterior(text) => Some(posterior::PosteriorContract::load(Path::new(&contract))?),
                _ => None,
            };
            let retrieval_contract = match &text {
                Some(text) if retrieval::is_retrieval(text) => Some(retrieval::RetrievalContract::load(Path::new(&contract))?),
                _ => None,
            };
            let filter_contract = match (&posterior_contract, &retrieval_contract) {
                (None, None) => Some(load_contract(&registry, &contract)?),
                _ => None,
            };
            // Anti-probing: refused before anything is compiled or run.
            if let Some(s) = &submitter {
                probing::check_submitter(s)?;
            }
            let (name_of, cap) = match (&posterior_contract, &retrieval_contract, &filter_contract) {
                (Some(c), ..) => (&c.file.name, c.file.hidden.as_ref().and_then(|h| h.max_scorings_per_day)),
                (_, Some(c), _) => (&c.file.name, c.file.hidden.as_ref().and_then(|h| h.max_scorings_per_day)),
                (.., Some(c)) => (&c.file.name, c.file.hidden.as_ref().and_then(|h| h.max_scorings_per_day)),
                (None, None, None) => bail!("{contract}: neither a benchmark nor a contract"),
            };
            probing::check_cap(&registry, name_of, cap, submitter.as_deref())?;
            let runtime = sandbox.runtime(Limits::default())?;
            let config: serde_json::Value = serde_json::from_str(&config).context("--config must be a JSON object, e.g. '{\"N\": 28}'")?;
            let (exe, cache_dir, scratch) = compile_child(&sandbox)?;
            let options = submit::SubmitOptions { component, config, name, exe, cache_dir, submitter };
            if let Some(c) = posterior_contract {
                let report = posterior::submit(&mut registry, &runtime, &c, &options);
                drop(scratch);
                let (report, scored) = report?;
                let bytes = serde_json::to_vec_pretty(&report)?;
                let path = report_path(out, &c.file.name, &bytes);
                let id = posterior::register(&mut registry, &report, scored.as_deref(), options.name.as_deref(), &path)?;
                if json {
                    println!("{}", String::from_utf8(bytes)?);
                } else {
                    print!("{}", posterior::table(&report));
                }
                eprintln!("report {} ({id}) registered in {}", path.display(), registry.dir().display());
                return Ok(());
            }
            if let Some(c) = retrieval_contract {
                let report = retrieval::submit(&mut registry, &runtime, &c, &options);
                drop(scratch);
                let (report, scored) = report?;
                let bytes = serde_json::to_vec_pretty(&report)?;
                let path = report_path(out, &c.file.name, &bytes);
                let id = retrieval::register(&mut registry, &report, scored.as_deref(), options.name.as_deref(), &path)?;
                if json {
                    println!("{}", String::from_utf8(bytes)?);
                } else {
                    print!("{}", retrieval::table(&report));
                }
                eprintln!("report {} ({id}) registered in {}", path.display(), registry.dir().display());
                return Ok(());
            }
            let Some(contract) = filter_contract else { bail!("{contract}: not a contract") };
            let mut progress = progress_factory(quiet);
            let submitted = submit::submit(&mut registry, &runtime, &contract, &options, &mut progress);
            drop(scratch);
            let submitted = submitted?;
            let bytes = serde_json::to_vec_pretty(&submitted.report)?;
            let path = report_path(out, &contract.file.name, &bytes);
            let id = submit::register(&mut registry, &submitted, &contract, &path)?;
            write_page(html.as_deref(), &submitted.report.contract.name, &id, || geohost_cycle::bench::page::html(&submitted.report, &id))?;
            if json {
                println!("{}", String::from_utf8(bytes)?);
            } else {
                println!("{}", score::table(&submitted.report));
            }
            eprintln!("wall time {:.1} s; report {} ({id}) registered in {}", submitted.wall.as_secs_f64(), path.display(), registry.dir().display());
            Ok(())
        }
        BenchCommand::Reveal { contract, out, import } => {
            let mut registry = Registry::open_existing(&dir)?;
            if import {
                let bytes = read_file_or_artifact(Some(&registry), &contract, "revealed seeds")?;
                let revealed: hidden::Revealed =
                    serde_json::from_slice(&bytes).with_context(|| format!("{contract} is not what `geohost bench reveal` writes"))?;
                hidden::import_revealed(&mut registry, &revealed)?;
                println!(
                    "{} seeds of contract {} ({}) match their commitments and are in this registry; its reports can be rescored here",
                    revealed.seeds.len(),
                    revealed.name,
                    revealed.contract
                );
                return Ok(());
            }
            let id = match std::fs::read(&contract) {
                Ok(bytes) => artifact_id(&bytes),
                Err(_) => registry.resolve(&contract)?,
            };
            let (revealed, artifact) = hidden::reveal(&mut registry, &id)?;
            let json = serde_json::to_string_pretty(&revealed)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("revealed {} seeds of contract {} ({id}) to {}", revealed.seeds.len(), revealed.name, path.display());
                }
                None => println!("{json}"),
            }
            eprintln!("registered as {artifact} (kind reveal, derived_from the contract): `registry export` carries it");
            Ok(())
        }
        BenchCommand::Verify { report, contract, component, json, sandbox } => {
            let mut registry = Registry::open_existing(&dir)?;
            let runtime = sandbox.runtime(Limits::default())?;
            let bytes = read_file_or_artifact(Some(&registry), &report, "report")?;
            let (exe, cache_dir, scratch) = compile_child(&sandbox)?;
            let options = verify::VerifyOptions { contract: contract.as_deref(), component: component.as_deref(), exe, cache_dir };
            let mut progress = progress_factory(true);
            let outcome = verify::verify(&mut registry, &runtime, &bytes, &options, &mut progress);
            drop(scratch);
            let v = outcome?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v.matches {
                println!("report {} matches: recomputed from submission {} under contract {}, every byte the same", v.report, v.submission, v.contract);
            } else {
                println!("report {} does NOT match its recomputation:", v.report);
                for d in &v.differences {
                    println!("  {d}");
                }
            }
            if !v.matches {
                std::process::exit(1);
            }
            Ok(())
        }
        BenchCommand::Leaderboard { contract, json, html } => {
            let registry = Registry::open_existing(&dir)?;
            let name = match std::fs::read_to_string(&contract) {
                Ok(text) => toml::from_str::<toml::Table>(&text)
                    .ok()
                    .and_then(|t| t.get("name").and_then(|n| n.as_str()).map(String::from))
                    .with_context(|| format!("{contract} is not a contract file (no `name`)"))?,
                Err(_) => match registry.resolve(&contract) {
                    Ok(id) => registry.get(&id)?.name,
                    Err(_) => contract.clone(),
                },
            };
            let board = leaderboard::leaderboard(&registry, &name)?;
            if let Some(path) = &html {
                std::fs::write(path, leaderboard::html(&board)).with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&board)?);
            } else {
                print!("{}", leaderboard::table(&board));
            }
            Ok(())
        }
        BenchCommand::Diff { a, b, json } => {
            let registry = Registry::open_existing(&dir).ok();
            let pairs = pair_reports(load_reports(registry.as_ref(), &a)?, load_reports(registry.as_ref(), &b)?);
            if pairs.is_empty() {
                bail!("{a} and {b} have no stage in common to compare");
            }
            let diffs: Vec<diff::Diff> = pairs.iter().map(|(_, ra, rb)| diff::diff(ra, rb, &a, &b)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&if diffs.len() == 1 { serde_json::to_value(&diffs[0])? } else { serde_json::to_value(&diffs)? })?);
            } else {
                for ((step, ..), d) in pairs.iter().zip(&diffs) {
                    if diffs.len() > 1 {
                        println!("== step {} ==", step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()));
                    }
                    print!("{}", diff::table(d));
                }
            }
            Ok(())
        }
        BenchCommand::Cycle { cycle: file, candidates, out, json, html, sandbox } => {
            let mut registry = Registry::open_existing(&dir)?;
            let runtime = sandbox.runtime(Limits::default())?;
            let c = Cycle::load(&file)?;
            let mut pairs = Vec::new();
            for arg in &candidates {
                let (step, candidate) =
                    arg.split_once('=').with_context(|| format!("`{arg}`: expected STEP=CANDIDATE, e.g. 2=out/lorenz96/ETKF_N28_infl1.02_rot.nc"))?;
                let step: u8 = step.parse().with_context(|| format!("`{arg}`: the step must be a number from 1 to 5"))?;
                pairs.push((step, score::resolve_candidate(&registry, candidate)?));
            }
            let report = cycle::score(&registry, &runtime, &c, &pairs)?;
            score::register_candidates(&mut registry, &pairs.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>())?;
            let bytes = serde_json::to_vec_pretty(&report)?;
            let path = report_path(out, &c.file.name, &bytes);
            let id = cycle::register(&mut registry, &report, &path)?;
            write_page(html.as_deref(), &report.name, &id, || geohost_cycle::bench::page::cycle_html(&report, &id))?;
            if json {
                println!("{}", String::from_utf8(bytes)?);
            } else {
                println!("cycle benchmark {}@{} ({}): {}", report.name, report.version, report.domain, report.verdict);
                for stage in &report.stages {
                    match (&stage.report, &stage.not_scored) {
                        (Some(r), _) => println!("\n== step {} ==\n{}", stage.step, score::table(r)),
                        (None, Some(why)) => println!("\n== step {} == not scored: {why}", stage.step),
                        _ => {}
                    }
                }
            }
            eprintln!("cycle report {} ({id}) registered in {}", path.display(), registry.dir().display());
            Ok(())
        }
    }
}

/// `--html`: a report's page, to `path` or, when `path` is a folder, to
/// FOLDER/<name>-<short id>.html (`name`: the contract or cycle benchmark).
fn write_page(path: Option<&Path>, name: &str, id: &str, html: impl FnOnce() -> String) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let short = id.strip_prefix("blake3:").unwrap_or(id);
    let path = if path.is_dir() { path.join(format!("{name}-{}.html", short.get(..12).unwrap_or(short))) } else { path.to_path_buf() };
    std::fs::write(&path, html()).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
