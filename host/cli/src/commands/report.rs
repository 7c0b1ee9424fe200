//! `geohost report OUTDIR`: a run's results (its summary.json), and with
//! `--html` the run as a self-contained page (geohost_cycle::outputs::page).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// The run's output folder (`geohost run --out`).
    dir: PathBuf,
    /// Write the page: RMSE and spread over time per method, rank histograms.
    #[arg(long)]
    html: bool,
    /// Where to write the page [default: OUTDIR/report.html].
    #[arg(long, short, requires = "html")]
    output: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let page = geohost_cycle::outputs::page::run_page(&args.dir)?;
    if args.html {
        let path = args.output.unwrap_or_else(|| args.dir.join("report.html"));
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(args.dir.join("summary.json"))?)?;
    println!("{:<40} {:>9} {:>9} {:>9}", "method", "rmse.a", "spread.a", "rmse.f");
    for r in summary["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let f = |k: &str| r[k].as_f64().map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
        println!("{:<40} {:>9} {:>9} {:>9}", r["label"].as_str().unwrap_or("?"), f("rmse_a"), f("spread_a"), f("rmse_f"));
    }
    println!("(geohost report {} --html writes the page)", args.dir.display());
    Ok(())
}
