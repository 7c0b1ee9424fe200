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
    /// A plugin folder for one world, with a small working plugin to replace; build it with `plugins/build.sh DIR` (Rust) or `plugins/build-python.sh DIR` (Python).
    Plugin {
        /// The plugin's name (a crate name: letters, digits, `-`, `_`).
        name: String,
        #[arg(long, value_parser = ["forward-model", "obs-operator", "metric", "static-model", "filter"])]
        world: String,
        /// The folder to create it in (it becomes DIR/NAME).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The geohost-sdk to depend on: a path [default: this geohost's sdk/ folder].
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// The plugin's language: Rust (geohost-sdk, built by plugins/build.sh) or Python (sdk/python, built by plugins/build-python.sh).
        #[arg(long, default_value = "rust", value_parser = ["rust", "python"])]
        lang: String,
    },
}

pub fn run(args: NewArgs) -> Result<()> {
    let NewWhat::Plugin { name, world, dir, sdk, lang } = args.what;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("`{name}` is not a plugin name: use letters, digits, `-` and `_`, not starting with a digit");
    }
    let root = dir.join(&name);
    if root.exists() {
        bail!("{} already exists; choose another name or --dir", root.display());
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let build = match lang.as_str() {
        "python" => {
            if sdk.is_some() {
                bail!("--sdk is for Rust plugins; a Python plugin is built against this repository's sdk/python by plugins/build-python.sh");
            }
            write_python(&root, &name, &world)?;
            repo.join("plugins/build-python.sh")
        }
        _ => {
            write_rust(&root, &name, &world, sdk.unwrap_or_else(|| repo.join("sdk")))?;
            repo.join("plugins/build.sh")
        }
    };
    let build = build.canonicalize().unwrap_or(build);
    println!("created {} ({world} plugin `{name}`, {lang})", root.display());
    println!("build it:    bash {} {}", build.display(), root.display());
    println!("inspect it:  geohost inspect {} --world {world}", root.join("dist").join(format!("{name}.wasm")).display());
    Ok(())
}

/// A Rust crate depending on the SDK at `sdk` by path.
fn write_rust(root: &Path, name: &str, world: &str, sdk: PathBuf) -> Result<()> {
    let sdk =
        sdk.canonicalize().with_context(|| format!("the SDK folder {} does not exist: give --sdk PATH (the geohost repository's sdk/)", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} is not the geohost SDK (no Cargo.toml): give --sdk PATH", sdk.display());
    }
    let source = rust_template(world)?;
    std::fs::create_dir_all(root.join("src")).with_context(|| format!("cannot create {}", root.display()))?;
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\ngeohost-sdk = {{ path = \"{}\" }}\n\n[profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\nstrip = true\n\n# Its own workspace, wherever it is created.\n[workspace]\n",
        sdk.display()
    );
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("src/lib.rs"), source.replace("{{name}}", name))?;
    std::fs::write(root.join(".gitignore"), "/target\n/dist\n")?;
    Ok(())
}

/// A Python plugin folder: `app.py` and the `plugin.toml` that
/// plugins/build-python.sh reads (name and world).
fn write_python(root: &Path, name: &str, world: &str) -> Result<()> {
    let source = match world {
        "forward-model" => include_str!("../../templates/python/forward-model.py"),
        "obs-operator" => include_str!("../../templates/python/obs-operator.py"),
        "metric" => include_str!("../../templates/python/metric.py"),
        "static-model" => include_str!("../../templates/python/static-model.py"),
        "filter" => include_str!("../../templates/python/filter.py"),
        other => bail!("no Python template for the world `{other}`"),
    };
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    std::fs::write(root.join("app.py"), source.replace("{{name}}", name))?;
    std::fs::write(root.join("plugin.toml"), format!("name = \"{name}\"\nworld = \"{world}\"\n"))?;
    std::fs::write(root.join(".gitignore"), "/dist\n__pycache__/\n")?;
    Ok(())
}

/// The Rust source of a generated plugin of `world`: a small working
/// plugin, `{{name}}` standing for its name (templates/rust/WORLD.rs).
fn rust_template(world: &str) -> Result<&'static str> {
    Ok(match world {
        "forward-model" => include_str!("../../templates/rust/forward-model.rs"),
        "obs-operator" => include_str!("../../templates/rust/obs-operator.rs"),
        "metric" => include_str!("../../templates/rust/metric.rs"),
        "static-model" => include_str!("../../templates/rust/static-model.rs"),
        "filter" => include_str!("../../templates/rust/filter.rs"),
        other => bail!("no template for the world `{other}`"),
    })
}
