//! `geohost export`: turn a trained artifact into a component.

use super::posterior::load_predictor;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use geohost_registry::{default_dir, NewArtifact, Registry};
use geohost_sandbox::{Limits, Runtime, WasmPosterior, World};
use std::path::PathBuf;

/// The template component (plugins/posterior-mdn), embedded at build time
/// (build.rs); empty when geohost was built before the plugins.
const TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/posterior-mdn.wasm"));

/// `geohost export`: turn a trained artifact into a component.
#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    what: ExportWhat,
}

#[derive(Subcommand)]
pub enum ExportWhat {
    /// A single-stage step-5 predictor as a `posterior` component (weights embedded, the network run inside the component), checked against the predictor before it is written.
    Posterior {
        /// The predictor: a .safetensors file, or a registry reference with role predictor.
        predictor: String,
        /// Where to write the component.
        #[arg(short, long)]
        out: PathBuf,
        /// The name the component gives itself [default: the predictor's name].
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "0.1.0")]
        version: String,
        /// Register the component (kind plugin, derived_from the predictor when it is registered).
        #[arg(long)]
        register: bool,
        #[arg(long)]
        registry: Option<PathBuf>,
    },
}

pub fn run(args: ExportArgs) -> Result<()> {
    let ExportWhat::Posterior { predictor, out, name, version, register, registry } = args.what;
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
    let mdn = predictor.first.as_mdn(&format!("exporting {} as a posterior component", loaded.label))?;
    let name = name.unwrap_or_else(|| loaded.name.clone());
    let payload = geohost_learn::export::payload(mdn, &name, &version)?;
    let component = geohost_learn::export::fill(TEMPLATE, &payload)?;

    // Check the component against the predictor before writing it: the
    // same parameters and data size, and the same density at draws of the
    // predictor (the component computes in f32 as the host does, but in
    // another order: agreement to 1e-3 is rounding).
    let runtime = Runtime::new(Limits::default(), None)?;
    let plugin = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "posterior".into());
    let wasm = runtime.load_bytes(&plugin, &out, &component, World::Posterior)?;
    let mut posterior = WasmPosterior::new(&runtime, &wasm, "{}", None)?;
    if posterior.info.parameters != mdn.desc.parameters || posterior.info.data_size != mdn.desc.data_size {
        bail!("the exported component describes itself differently from the predictor (a mismatched template?): {:?}", posterior.info);
    }
    use rand::SeedableRng;
    let y = &mdn.desc.x_mean;
    let draws = mdn.sample(y, 64, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).context("drawing from the predictor to check the component")?;
    let native = mdn.log_prob(y, &draws)?;
    let exported = posterior.log_prob(y, &draws)?;
    let worst = native.iter().zip(&exported).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    if worst.is_nan() || worst >= 1e-3 {
        bail!("the exported component's log-density differs from the predictor's by {worst} at the predictor's own draws; not written");
    }
    std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
    let id = geohost_registry::artifact_id(&component);
    eprintln!(
        "wrote {} ({} bytes, {id}): posterior `{name}` {version}, {} parameters ({}), data size {}; log-density within {worst:.1e} of the predictor's",
        out.display(),
        component.len(),
        mdn.desc.parameters.len(),
        mdn.desc.parameters.join(", "),
        mdn.desc.data_size
    );
    if register {
        let mut reg = Registry::open(&registry_dir)?;
        let (id, _) = reg.add(
            &component,
            &NewArtifact {
                kind: "plugin".into(),
                name: name.clone(),
                version: Some(version.clone()),
                media_type: "application/wasm".into(),
                step: Some(5),
                tags: vec!["posterior".into()],
                metadata: serde_json::json!({ "world": "posterior", "exported_from": loaded.id.clone().unwrap_or_else(|| loaded.label.clone()) }),
                ..Default::default()
            },
        )?;
        if let Some(source) = &loaded.id {
            reg.link(&id, source, "derived_from")?;
        }
        println!("{id}");
    }
    Ok(())
}
