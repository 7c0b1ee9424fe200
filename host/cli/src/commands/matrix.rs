//! `geohost matrix`: the L-transition × step grid of the registry
//! (geohost_cycle::matrix).

use anyhow::{Context, Result};
use clap::Args;
use geohost_registry::{default_dir, Registry};
use std::path::PathBuf;

#[derive(Args)]
pub struct MatrixArgs {
    /// Print the matrix as JSON (every artifact of every cell).
    #[arg(long)]
    json: bool,
    /// Also write the matrix as a self-contained HTML page to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Registry directory [default: $GEOHOST_REGISTRY or ~/.local/share/geohost/registry].
    #[arg(long)]
    registry: Option<PathBuf>,
}

pub fn run(args: MatrixArgs) -> Result<()> {
    let registry = Registry::open_existing(&args.registry.unwrap_or_else(default_dir))?;
    let m = geohost_cycle::matrix::matrix(&registry)?;
    if let Some(path) = &args.html {
        std::fs::write(path, geohost_cycle::matrix::html(&m)).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", geohost_cycle::matrix::table(&m));
    }
    Ok(())
}
