//! `geohost export`: turn a trained artifact into a component.

use super::posterior::{load_predictor, load_trained, LoadedPredictor};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use geohost_learn::density::Density;
use geohost_registry::{default_dir, NewArtifact, Registry};
use geohost_sandbox::model::Simulator;
use geohost_sandbox::{Limits, Runtime, WasmPosterior, WasmSimulator, World};
use std::path::{Path, PathBuf};

/// The template component (plugins/posterior-mdn), embedded at build time
/// (build.rs); empty when geohost was built before the plugins.
const TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/posterior-mdn.wasm"));
/// The template of `export emulator` (plugins/emulator-mlp), likewise.
const EMULATOR_TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/emulator-mlp.wasm"));

/// `geohost export`: turn a trained artifact into a component.
#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    what: ExportWhat,
}

#[derive(Subcommand)]
pub enum ExportWhat {
    /// A single-stage step-5 predictor (a mixture density network or a flow) as a `posterior` component (weights embedded, the network run inside the component), checked against the predictor before it is written.
    Posterior {
        /// The predictor: a .safetensors file, or a registry reference with role predictor.
        predictor: String,
        #[command(flatten)]
        output: Output,
    },
    /// A step-3 static emulator (e.g. the methane row's `ch4-rt-emulator`) as a `static-model` component (weights embedded, the network run inside the component), checked against the emulator before it is written: what a retrieval benchmark's steps 3 and 4 take.
    Emulator {
        /// The emulator: a .safetensors file, or a registry reference with role emulator.
        emulator: String,
        #[command(flatten)]
        output: Output,
    },
}

/// Where an exported component goes, and what it calls itself.
#[derive(Args)]
pub struct Output {
    /// Where to write the component.
    #[arg(short, long)]
    out: PathBuf,
    /// The name the component gives itself [default: the exported artifact's name].
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// Register the component (kind plugin, derived_from the exported artifact when it is registered).
    #[arg(long)]
    register: bool,
    #[arg(long)]
    registry: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    match args.what {
        ExportWhat::Posterior { predictor, output } => export_posterior(predictor, output),
        ExportWhat::Emulator { emulator, output } => export_emulator(emulator, output),
    }
}

fn export_emulator(emulator: String, output: Output) -> Result<()> {
    let Output { out, name, version, register, registry } = output;
    let registry_dir = registry.unwrap_or_else(default_dir);
    let loaded = load_trained(&emulator, &registry_dir, "emulator", "a step-3 emulator")?;
    let mut native = geohost_learn::static_emulator::StaticEmulator::from_safetensors(&loaded.label, &loaded.bytes)?;
    if EMULATOR_TEMPLATE.is_empty() {
        bail!("this geohost was built before plugins/dist/emulator-mlp.wasm existed: run plugins/build.sh, then rebuild geohost");
    }
    let name = name.unwrap_or_else(|| loaded.name.clone());
    let payload = geohost_learn::export::emulator_payload(&native, &name, &version)?;
    let component = geohost_learn::export::fill_emulator(EMULATOR_TEMPLATE, &payload)?;

    // Check the component against the emulator before writing it: the
    // same parameters and outputs, and the same outputs at 64 parameter
    // vectors about the training mean (±2 sd; f32 in another order: 1e-4
    // relative is rounding).
    let runtime = Runtime::new(Limits::default(), None)?;
    let plugin = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "emulator".into());
    let wasm = runtime.load_bytes(&plugin, &out, &component, World::StaticModel)?;
    let mut exported = WasmSimulator::new(&runtime, &wasm, "{}")?;
    let (d, p) = (native.desc.theta_mean.len(), native.desc.out_mean.len());
    let names = |info: &geohost_sandbox::model::SimulatorInfo| info.parameters.iter().map(|q| q.name.clone()).collect::<Vec<_>>();
    if names(exported.info()) != names(native.info()) || exported.info().output_size != p {
        bail!("the exported component describes itself differently from the emulator (a mismatched template?): {:?}", exported.info());
    }
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let thetas = nalgebra::DMatrix::from_fn(d, 64, |i, _| native.desc.theta_mean[i] + native.desc.theta_std[i] * rng.random_range(-2.0..2.0));
    let (a, b) = (native.simulate(&thetas, 0)?, exported.simulate(&thetas, 0)?);
    let worst = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs() / x.abs().max(1e-30)).fold(0.0, f64::max);
    if worst.is_nan() || worst >= 1e-4 {
        bail!("the exported component's outputs differ from the emulator's by {worst:.1e} (relative) at the same parameters; not written");
    }
    std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
    let id = geohost_registry::artifact_id(&component);
    eprintln!(
        "wrote {} ({} bytes, {id}): static-model `{name}` {version}, {d} parameters ({}), {p} outputs; within {worst:.1e} (relative) of the emulator's",
        out.display(),
        component.len(),
        names(native.info()).join(", "),
    );
    if register {
        register_component(&registry_dir, &component, &name, &version, 3, "static-model", &loaded)?;
    }
    Ok(())
}

/// Register an exported component (kind plugin, `derived_from` what it was
/// exported from when that is registered) and print its id.
fn register_component(registry_dir: &Path, component: &[u8], name: &str, version: &str, step: u8, world: &str, loaded: &LoadedPredictor) -> Result<()> {
    let mut reg = Registry::open(registry_dir)?;
    let (id, _) = reg.add(
        component,
        &NewArtifact {
            kind: "plugin".into(),
            name: name.into(),
            version: Some(version.into()),
            media_type: "application/wasm".into(),
            step: Some(step),
            tags: vec![world.into()],
            metadata: serde_json::json!({ "world": world, "exported_from": loaded.id.clone().unwrap_or_else(|| loaded.label.clone()) }),
            ..Default::default()
        },
    )?;
    if let Some(source) = &loaded.id {
        reg.link(&id, source, "derived_from")?;
    }
    println!("{id}");
    Ok(())
}

fn export_posterior(predictor: String, output: Output) -> Result<()> {
    let Output { out, name, version, register, registry } = output;
    let registry_dir = registry.unwrap_or_else(default_dir);
    let loaded = load_predictor(&predictor, &registry_dir)?;
    let (predictor, _) = geohost_learn::refine::Predictor::from_safetensors(&loaded.label, &loaded.bytes)?;
    if predictor.second.is_some() {
        bail!(
            "{} is a refined (two-stage) predictor: its second stage runs the simulator, which a posterior component does not carry. Export its first stage (registered as `{}-stage1` by the run that trained it) or a predictor trained without `refine`",
            loaded.label,
            loaded.name
        );
    }
    if TEMPLATE.is_empty() {
        bail!("this geohost was built before plugins/dist/posterior-mdn.wasm existed: run plugins/build.sh, then rebuild geohost");
    }
    let density = &predictor.first;
    let name = name.unwrap_or_else(|| loaded.name.clone());
    let (payload, x_mean) = match density {
        Density::Mdn(m) => (geohost_learn::export::payload(m, &name, &version)?, m.desc.x_mean.clone()),
        Density::Nsf(f) => (geohost_learn::export::flow_payload(f, &name, &version)?, f.desc.x_mean.clone()),
    };
    let component = geohost_learn::export::fill(TEMPLATE, &payload)?;

    // Check the component against the predictor before writing it: the
    // same parameters and data size, and the same density at draws of the
    // predictor (the component computes in f32 as the host does, but in
    // another order: agreement to 1e-3 is rounding).
    let runtime = Runtime::new(Limits::default(), None)?;
    let plugin = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "posterior".into());
    let wasm = runtime.load_bytes(&plugin, &out, &component, World::Posterior)?;
    let mut posterior = WasmPosterior::new(&runtime, &wasm, "{}", None)?;
    if posterior.info.parameters != density.parameters() || posterior.info.data_size != density.data_size() {
        bail!("the exported component describes itself differently from the predictor (a mismatched template?): {:?}", posterior.info);
    }
    use rand::SeedableRng;
    let y = &x_mean;
    let draws = density.sample(y, 64, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).context("drawing from the predictor to check the component")?;
    let native = density.log_prob(y, &draws)?;
    let exported = posterior.log_prob(y, &draws)?;
    let worst = native.iter().zip(&exported).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    if worst.is_nan() || worst >= 1e-3 {
        bail!("the exported component's log-density differs from the predictor's by {worst} at the predictor's own draws; not written");
    }
    std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
    let id = geohost_registry::artifact_id(&component);
    eprintln!(
        "wrote {} ({} bytes, {id}): posterior `{name}` {version}, {} parameters ({}), data size {}, estimator {}; log-density within {worst:.1e} of the predictor's",
        out.display(),
        component.len(),
        density.parameters().len(),
        density.parameters().join(", "),
        density.data_size(),
        density.kind()
    );
    if register {
        register_component(&registry_dir, &component, &name, &version, 5, "posterior", &loaded)?;
    }
    Ok(())
}
