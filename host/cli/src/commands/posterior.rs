//! `geohost posterior`: use a trained step-5 predictor.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use geohost_cycle::{outputs, static_run};
use geohost_registry::{default_dir, Registry};
use std::path::PathBuf;

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

pub fn run(args: PosteriorArgs) -> Result<()> {
    use geohost_learn::refine::Predictor;
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
            Some(static_run::ForwardPlugins::load(&reg, &meta["refine"]["forward"], &label)?)
        }
    };
    let obs_bytes = std::fs::read(&obs).with_context(|| format!("cannot read observation file {}", obs.display()))?;
    let y: Vec<f64> = if obs_bytes.starts_with(b"CDF") {
        outputs::read::ObservationFile::parse(&obs.display().to_string(), obs_bytes)?.y
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
            let bytes = geohost_learn::amortize::samples_bytes(mdn.parameters(), &draws, &label)?;
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
