//! `geohost inspect`: load a plugin, check it against a world, configure it
//! and print its self-description.

use super::SandboxArgs;
use anyhow::{Context, Result};
use clap::Args;
use geohost_sandbox::Limits;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// The component file.
    plugin: PathBuf,
    /// Which world to check it against.
    #[arg(long, value_parser = ["forward-model", "obs-operator", "metric", "static-model", "filter", "posterior"], default_value = "forward-model")]
    world: String,
    /// Config document (JSON object) passed to init.
    #[arg(long, default_value = "{}")]
    config: String,
    /// For `--world filter`: the problem passed to init, as JSON (fields
    /// state_size, obs_size, noise_variance, locations, grid, dt). Default:
    /// Lorenz-96's, 40 variables all observed with R = I, dt 0.05.
    #[arg(long)]
    problem: Option<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: InspectArgs) -> Result<()> {
    use geohost_sandbox::model::{ForwardModel, ObsOperator, Simulator};
    use geohost_sandbox::{WasmForward, WasmMetric, WasmObs, WasmSimulator, World};
    let runtime = args.sandbox.runtime(Limits::default())?;
    let world = World::parse(&args.world).unwrap_or(World::ForwardModel);
    let name = args.plugin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let loaded = runtime.load(&name, &args.plugin, world)?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&args.config).context("--config must be a JSON object")?;
    let info = match world {
        World::ForwardModel => serde_json::to_value(WasmForward::new(&runtime, &loaded, &args.config)?.info())?,
        World::ObsOperator => serde_json::to_value(WasmObs::new(&runtime, &loaded, &args.config)?.info())?,
        World::StaticModel => serde_json::to_value(WasmSimulator::new(&runtime, &loaded, &args.config)?.info())?,
        World::Filter => {
            let problem = match &args.problem {
                Some(json) => {
                    serde_json::from_str(json).context("--problem must be a JSON object with state_size, obs_size, noise_variance, locations, grid, dt")?
                }
                None => geohost_sandbox::Problem {
                    state_size: 40,
                    obs_size: 40,
                    noise_variance: vec![1.0; 40],
                    locations: (0..40).map(f64::from).collect(),
                    grid: Some(geohost_sandbox::model::Grid { points: 40, periodic: true }),
                    dt: 0.05,
                },
            };
            serde_json::to_value(&geohost_sandbox::WasmFilter::new(&runtime, &loaded, &args.config, &problem, None)?.info)?
        }
        World::Posterior => serde_json::to_value(&geohost_sandbox::WasmPosterior::new(&runtime, &loaded, &args.config, None)?.info)?,
        World::Metric => {
            let m = WasmMetric::new(&runtime, &loaded, &args.config)?;
            serde_json::json!({ "name": m.name, "version": m.version, "metrics": m.metrics })
        }
    };
    let mut report = serde_json::json!({
        "path": args.plugin.display().to_string(),
        "blake3": format!("blake3:{}", loaded.hash.to_hex()),
        "size": loaded.size,
        "world": world.name(),
        "language": loaded.language,
        "compiled_from_cache": loaded.from_cache,
        "info": info,
    });
    if loaded.language != geohost_sandbox::Language::Rust {
        // What its traps will mean, said before the first one.
        report["note"] = format!("if it traps with `unreachable`: {}", loaded.language.trap_hint()).into();
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
