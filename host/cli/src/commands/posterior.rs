//! `geohost posterior`: use a trained step-5 predictor.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use geohost_cycle::static_run;
use geohost_registry::{default_dir, Registry};
use std::path::{Path, PathBuf};

/// `geohost posterior`: use a trained step-5 predictor.
#[derive(Args)]
pub struct PosteriorArgs {
    #[command(subcommand)]
    what: PosteriorWhat,
}

#[derive(Subcommand)]
pub enum PosteriorWhat {
    /// Draw posterior samples for an observation, printed as CSV (one column per parameter) or written as NetCDF.
    Sample {
        /// The predictor: a .safetensors file, a registry reference (id, prefix or name) with role predictor, or a `posterior` component (.wasm, e.g. from `geohost export posterior`), run in the sandbox.
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

/// A predictor's bytes, from a file or the registry.
pub struct LoadedPredictor {
    /// The file or the registry id, for messages.
    pub label: String,
    /// The artifact's name (a file's stem).
    pub name: String,
    /// The registry id, when it came from the registry.
    pub id: Option<String>,
    pub bytes: Vec<u8>,
}

/// Read `predictor`: a file, else a registry reference with role `predictor`.
pub fn load_predictor(predictor: &str, registry_dir: &Path) -> Result<LoadedPredictor> {
    load_trained(predictor, registry_dir, "predictor", "a step-5 posterior")
}

/// Read `reference`: a file, else a registry reference with role `role`
/// (`what` says what that is, in errors).
pub fn load_trained(reference: &str, registry_dir: &Path, role: &str, what: &str) -> Result<LoadedPredictor> {
    let path = Path::new(reference);
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {reference}"))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| role.into());
        return Ok(LoadedPredictor { label: reference.into(), name, id: None, bytes });
    }
    let reg =
        Registry::open_existing(registry_dir).with_context(|| format!("`{reference}` is not a file, and the registry to look it up in could not be opened"))?;
    let artifact = reg.get_with_role(reference, role).with_context(|| format!("{what} is needed"))?;
    Ok(LoadedPredictor { label: artifact.id.clone(), name: artifact.name, bytes: reg.read(&artifact.id)?, id: Some(artifact.id) })
}

/// Print draws (`d × n`) as CSV, or write them as NetCDF to `out`.
fn write_draws(parameters: &[String], draws: &nalgebra::DMatrix<f64>, label: &str, out: Option<PathBuf>) -> Result<()> {
    match out {
        Some(path) => {
            let bytes = geohost_learn::amortize::samples_bytes(parameters, draws, label)?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            println!("{}", parameters.join(","));
            for col in draws.column_iter() {
                println!("{}", col.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
            }
        }
    }
    Ok(())
}

/// Sample a `posterior` component in the sandbox (default limits).
fn sample_component(path: &Path, obs: &Path, samples: usize, seed: u64, out: Option<PathBuf>) -> Result<()> {
    let runtime = geohost_sandbox::Runtime::new(geohost_sandbox::Limits::default(), geohost_sandbox::CompileCache::default_dir())?;
    let plugin = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "posterior".into());
    let loaded = runtime.load(&plugin, path, geohost_sandbox::World::Posterior)?;
    let mut posterior = geohost_sandbox::WasmPosterior::new(&runtime, &loaded, "{}", None)?;
    let y = geohost_cycle::tables::read_observation(obs)?;
    let start = std::time::Instant::now();
    let draws = posterior.sample(&y, samples, seed).with_context(|| format!("sampling {} for {}", path.display(), obs.display()))?;
    eprintln!("drew {samples} samples in {:.2} ms (in the sandbox)", start.elapsed().as_secs_f64() * 1e3);
    write_draws(&posterior.info.parameters, &draws, &path.display().to_string(), out)
}

pub fn run(args: PosteriorArgs) -> Result<()> {
    use geohost_learn::refine::Predictor;
    use rand::SeedableRng;
    let PosteriorWhat::Sample { predictor, obs, samples, seed, out, registry } = args.what;
    if predictor.ends_with(".wasm") && Path::new(&predictor).is_file() {
        return sample_component(Path::new(&predictor), &obs, samples, seed, out);
    }
    let registry_dir = registry.unwrap_or_else(default_dir);
    let open_registry = |why: String| Registry::open_existing(&registry_dir).with_context(|| why);
    let LoadedPredictor { label, bytes, .. } = load_predictor(&predictor, &registry_dir)?;
    let (mdn, meta) = Predictor::from_safetensors(&label, &bytes)?;
    // A refinement stage runs the simulator once: its plugins come from the registry.
    let mut plugins = match mdn.second {
        None => None,
        Some(_) => {
            let reg = open_registry(format!("{label} refines its posterior by running the simulator, whose plugins are read from the registry, and the registry could not be opened (give --registry)"))?;
            Some(static_run::ForwardPlugins::load(&reg, &meta["refine"]["forward"], &label)?)
        }
    };
    let y = geohost_cycle::tables::read_observation(&obs)?;
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
    write_draws(mdn.parameters(), &draws, &label, out)
}
