//! `geohost train`: a step-3 emulator or a step-5 posterior, on its own.

use super::{progress_factory, SandboxArgs};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use geohost_cycle::{outputs, pluginset::PluginSet, run};
use geohost_registry::{default_dir, Registry};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    what: TrainWhat,
}

#[derive(Subcommand)]
pub enum TrainWhat {
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

pub fn run(args: TrainArgs) -> Result<()> {
    let (plugin_set, json, quiet, registry, no_registry, sandbox) = match args.what {
        TrainWhat::Emulator { plugin_set, json, quiet, registry, no_registry, sandbox } => (plugin_set, json, quiet, registry, no_registry, sandbox),
        TrainWhat::Posterior { plugin_set, out, json, quiet, registry, no_registry, sandbox } => {
            return posterior(plugin_set, out, json, quiet, registry, no_registry, sandbox)
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

fn posterior(
    plugin_set: PathBuf,
    out: Option<PathBuf>,
    json: bool,
    quiet: bool,
    registry: Option<PathBuf>,
    no_registry: bool,
    sandbox: SandboxArgs,
) -> Result<()> {
    use geohost_cycle::static_run as infer;
    let set = infer::StaticSet::load(&plugin_set)?;
    let spec = set.set.step5.as_ref().with_context(|| format!("{} has no [step5] section", plugin_set.display()))?;
    let runtime = sandbox.runtime(set.set.limits)?;
    let mut registry = if no_registry { None } else { Some(Registry::open(&registry.unwrap_or_else(default_dir))?) };
    let mut progress = progress_factory(quiet || json);
    let mut bar = progress("step 5: training the posterior", spec.network.max_epochs);
    let (record, weights) = infer::train_posterior(&set, &runtime, registry.as_mut(), &mut |epoch, _, _| bar.tick(epoch))?;
    bar.finish();
    let path = out.unwrap_or_else(|| PathBuf::from("out").join(&set.name).join(format!("{}.safetensors", outputs::file_stem(&record.name))));
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
