//! `geohost new plugin`: a plugin crate that builds and passes `geohost
//! inspect` as generated, in a folder of the author's own.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct NewArgs {
    #[command(subcommand)]
    what: NewWhat,
}

#[derive(Subcommand)]
pub enum NewWhat {
    /// A plugin crate (Rust, geohost-sdk) for one world, with a small working model to replace; build it with `plugins/build.sh DIR`.
    Plugin {
        /// The plugin's name (a crate name: letters, digits, `-`, `_`).
        name: String,
        #[arg(long, value_parser = ["forward-model", "obs-operator", "metric", "static-model"])]
        world: String,
        /// The folder to create it in (it becomes DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The geohost-sdk to depend on: a path [default: this geohost's sdk/ folder].
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// The plugin's language; only Rust is generated so far.
        #[arg(long, default_value = "rust", value_parser = ["rust", "python"])]
        lang: String,
    },
}

pub fn run(args: NewArgs) -> Result<()> {
    let NewWhat::Plugin { name, world, dir, sdk, lang } = args.what;
    if lang != "rust" {
        bail!("--lang python is not generated yet; see docs/plugins.md for componentize-py, or use --lang rust");
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("`{name}` is not a crate name: use letters, digits, `-` and `_`, not starting with a digit");
    }
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk"),
    };
    let sdk = sdk.canonicalize().with_context(|| format!("the SDK folder {} does not exist: give --sdk PATH (the geohost repository's sdk/)", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the geohost SDK (no Cargo.toml): give --sdk PATH", sdk.display());
    }
    let root = dir.join(&name);
    if root.exists() {
        bail!("{} already exists; choose another name or --dir", root.display());
    }
    let source = match world.as_str() {
        "forward-model" => FORWARD,
        "obs-operator" => OBSERVE,
        "metric" => METRIC,
        _ => STATIC,
    };
    std::fs::create_dir_all(root.join("src")).with_context(|| format!("cannot create {}", root.display()))?;
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\ngeohost-sdk = {{ path = \"{}\" }}\n\n[profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\nstrip = true\n\n# Its own workspace, wherever it is created.\n[workspace]\n",
        sdk.display()
    );
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("src/lib.rs"), source.replace("{{name}}", &name))?;
    std::fs::write(root.join(".gitignore"), "/target\n/dist\n")?;
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/build.sh");
    let build = build.canonicalize().unwrap_or(build);
    println!("created {} ({world} plugin `{name}`)", root.display());
    println!("build it:    bash {} {}", build.display(), root.display());
    println!("inspect it:  geohost inspect {} --world {world}", root.join("dist").join(format!("{name}.wasm")).display());
    Ok(())
}

const FORWARD: &str = r#"//! `{{name}}`: a forward model. Replace the damped oscillators below by
//! yours: `init` reads the config, `info` describes the state, `step`
//! advances one member by dt (the SDK batches the ensemble).

use geohost_sdk::{Config, ForwardModel, ModelInfo, Parameter};

struct Model {
    /// Pairs (x, v) of oscillators: state size 2 × pairs.
    pairs: usize,
    omega: f64,
    damping: f64,
}

impl ForwardModel for Model {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["pairs", "omega", "damping"])?;
        let m = Model { pairs: config.usize_or("pairs", 4)?, omega: config.f64_or("omega", 1.0)?, damping: config.f64_or("damping", 0.05)? };
        if m.pairs == 0 || !(m.omega > 0.0) || !(m.damping >= 0.0) {
            return Err("config: pairs and omega must be positive, damping non-negative".into());
        }
        Ok(m)
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            parameters: vec![Parameter::new("omega", self.omega, "1/s"), Parameter::new("damping", self.damping, "1/s")],
            ..ModelInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), 2 * self.pairs, 0.05)
        }
    }

    fn step(&mut self, x: &mut [f64], _t: f64, dt: f64) -> Result<(), String> {
        // Semi-implicit Euler: stable for ω·dt < 2.
        for pair in x.chunks_exact_mut(2) {
            pair[1] += dt * (-self.omega * self.omega * pair[0] - 2.0 * self.damping * pair[1]);
            pair[0] += dt * pair[1];
        }
        Ok(())
    }
}

geohost_sdk::export_forward_model!(Model);
"#;

const OBSERVE: &str = r#"//! `{{name}}`: an observation operator. Replace the every-`stride`-th
//! variable selection below by yours: `observe` maps one state to one
//! observation vector; `info` gives R's diagonal and where each observation sits.

use geohost_sdk::{Config, ObsInfo, ObsOperator};

struct Operator {
    state_size: usize,
    stride: usize,
    variance: f64,
}

impl ObsOperator for Operator {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["state_size", "stride", "variance"])?;
        let op = Operator { state_size: config.usize_or("state_size", 40)?, stride: config.usize_or("stride", 2)?, variance: config.f64_or("variance", 1.0)? };
        if op.state_size == 0 || op.stride == 0 || !(op.variance > 0.0) {
            return Err("config: state_size and stride must be positive, variance positive".into());
        }
        Ok(op)
    }

    fn info(&self) -> ObsInfo {
        let locations: Vec<f64> = (0..self.state_size).step_by(self.stride).map(|i| i as f64).collect();
        ObsInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_size: self.state_size,
            obs_size: locations.len(),
            noise_variance: vec![self.variance; locations.len()],
            locations,
            parameters: Vec::new(),
            units: "1".into(),
        }
    }

    fn observe(&mut self, x: &[f64], y: &mut [f64], _t: f64) -> Result<(), String> {
        for (yi, xi) in y.iter_mut().zip(x.iter().step_by(self.stride)) {
            *yi = *xi;
        }
        Ok(())
    }
}

geohost_sdk::export_obs_operator!(Operator);
"#;

const METRIC: &str = r#"//! `{{name}}`: a verification metric. Replace the mean absolute error
//! below by yours: `compute` gets the prediction and the reference as
//! tables (one row per scored time) and returns named values.

use geohost_sdk::{Config, Metric, MetricInfo, MetricInput, Value};

struct Mae;

impl Metric for Mae {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&[])?;
        Ok(Mae)
    }

    fn info(&self) -> MetricInfo {
        MetricInfo { name: "{{name}}".into(), version: env!("CARGO_PKG_VERSION").into(), metrics: vec!["mean_abs_error".into()] }
    }

    fn compute(&mut self, input: &MetricInput<'_>) -> Result<Vec<(String, Value)>, String> {
        let (p, r) = (input.prediction, input.reference);
        if p.data.len() != r.data.len() || r.data.is_empty() {
            return Err(format!("prediction and reference differ in size ({} and {} values)", p.data.len(), r.data.len()));
        }
        let mae = p.data.iter().zip(r.data).map(|(a, b)| (a - b).abs()).sum::<f64>() / r.data.len() as f64;
        Ok(vec![("mean_abs_error".into(), Value::Scalar(mae))])
    }
}

geohost_sdk::export_metric!(Mae);
"#;

const STATIC: &str = r#"//! `{{name}}`: a static simulator for inference over parameters. Replace
//! the line through noisy points below by yours: `simulate` maps one θ
//! (in `info().parameters` order) to one output vector.

use geohost_sdk::{Config, SimulatorInfo, SplitMix64, StaticModel};

struct Line {
    points: usize,
}

impl StaticModel for Line {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["points"])?;
        let points = config.usize_or("points", 10)?;
        if points < 2 {
            return Err("config key `points`: at least 2".into());
        }
        Ok(Line { points })
    }

    fn info(&self) -> SimulatorInfo {
        SimulatorInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            parameters: vec![("slope".into(), "1".into()), ("intercept".into(), "1".into())],
            output_size: self.points,
            output_units: "1".into(),
            settings: Vec::new(),
            stochastic: false,
        }
    }

    fn simulate(&mut self, theta: &[f64], y: &mut [f64], _rng: &mut SplitMix64) -> Result<(), String> {
        let n = (self.points - 1) as f64;
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = theta[0] * (i as f64 / n) + theta[1];
        }
        Ok(())
    }
}

geohost_sdk::export_static_model!(Line);
"#;
