//! `geohost registry …`: the lineage registry from the command line.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use geohost_registry::{bundle, default_dir, Artifact, Filter, NewArtifact, Registry};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct RegistryArgs {
    /// Registry directory [default: $GEOHOST_REGISTRY or ~/.local/share/geohost/registry].
    #[arg(long, global = true)]
    pub registry: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Register a file.
    Add(AddArgs),
    /// List artifacts (newest last).
    List(ListArgs),
    /// Show one artifact.
    Show { reference: String },
    /// Ancestors and descendants of an artifact (text, JSON or Graphviz DOT).
    Lineage {
        reference: String,
        /// Print Graphviz DOT.
        #[arg(long)]
        dot: bool,
    },
    /// Which oracle was this artifact validated against?
    Oracle { reference: String },
    /// Record a lineage edge SRC TYPE DST (e.g. `emu trained_on data`).
    Link { src: String, kind: String, dst: String },
    /// NEW supersedes OLD: everything downstream of OLD becomes stale.
    Supersede { old: String, new: String },
    /// What is stale (needs re-running), and why.
    Stale,
    /// Re-hash every blob; report missing and corrupt ones (exit 1 if any).
    Verify,
    /// Name an artifact as a root that gc keeps (with its ancestry).
    Root { name: String, reference: String },
    /// Remove blobs and records unreachable from the named roots.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a bundle with the given artifacts, their ancestry, blobs and edges (all when none given).
    Export { bundle: PathBuf, references: Vec<String> },
    /// Import a bundle (blobs are checked before anything is added).
    Import { bundle: PathBuf },
    /// Write an artifact's bytes (re-hashed) to a file or stdout.
    Cat {
        reference: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct AddArgs {
    file: PathBuf,
    #[arg(long)]
    kind: String,
    /// Default: the file name.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    version: Option<String>,
    #[arg(long)]
    role: Option<String>,
    #[arg(long)]
    step: Option<u8>,
    /// L-transition: L0_L1, L1_L2, L2_L3, L3_L3 or L3_L4.
    #[arg(long)]
    transition: Option<String>,
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long, default_value = "application/octet-stream")]
    media_type: String,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    role: Option<String>,
    #[arg(long)]
    step: Option<u8>,
    #[arg(long)]
    tag: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Only stale artifacts.
    #[arg(long)]
    stale: bool,
}

fn short(id: &str) -> &str {
    &id[..("blake3:".len() + 12).min(id.len())]
}

fn line(a: &Artifact) -> String {
    let mut s = format!("{}  {:<10} {}", short(&a.id), a.kind, a.name);
    if let Some(v) = &a.version {
        s += &format!("@{v}");
    }
    if let Some(r) = &a.role {
        s += &format!("  role={r}");
    }
    if let Some(step) = a.step {
        s += &format!("  step={step}");
    }
    if a.stale {
        s += "  STALE";
    }
    s
}

fn print(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

pub fn run(args: RegistryArgs) -> Result<()> {
    let dir = args.registry.clone().unwrap_or_else(default_dir);
    let json = args.json;
    match args.command {
        RegistryCommand::Add(a) => {
            let mut reg = Registry::open(&dir)?;
            let name = a.name.unwrap_or_else(|| a.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let new = NewArtifact {
                kind: a.kind,
                name,
                version: a.version,
                media_type: a.media_type,
                role: a.role,
                step: a.step,
                l_transition: a.transition,
                tags: a.tags,
                metadata: json!({ "source_path": a.file.display().to_string() }),
            };
            let (id, existed) = reg.add_file(&a.file, &new)?;
            print(json, json!({ "id": id, "already_registered": existed }), || if existed { format!("{id} (already registered)") } else { id.clone() })
        }
        RegistryCommand::List(l) => {
            let reg = Registry::open_existing(&dir)?;
            let filter = Filter { kind: l.kind, role: l.role, step: l.step, tag: l.tag, name: l.name, stale: l.stale.then_some(true) };
            let items = reg.list(&filter)?;
            print(json, serde_json::to_value(&items)?, || items.iter().map(line).collect::<Vec<_>>().join("\n"))
        }
        RegistryCommand::Show { reference } => {
            let reg = Registry::open_existing(&dir)?;
            let a = reg.get(&reg.resolve(&reference)?)?;
            let text = serde_json::to_string_pretty(&a)?;
            print(json, serde_json::to_value(&a)?, || text)
        }
        RegistryCommand::Lineage { reference, dot } => {
            let reg = Registry::open_existing(&dir)?;
            let id = reg.resolve(&reference)?;
            let up = reg.lineage(&id, true)?;
            let down = reg.lineage(&id, false)?;
            if dot {
                let mut nodes = std::collections::BTreeSet::new();
                nodes.insert(id.clone());
                let mut out = String::from("digraph lineage {\n  rankdir=BT;\n");
                for e in up.iter().chain(&down) {
                    nodes.insert(e.src.clone());
                    nodes.insert(e.dst.clone());
                }
                for n in &nodes {
                    let a = reg.get(n)?;
                    let style = if *n == id {
                        ", style=bold"
                    } else if a.stale {
                        ", color=red"
                    } else {
                        ""
                    };
                    out += &format!("  \"{n}\" [label=\"{}\\n{}\\n{}\"{style}];\n", a.name, a.kind, short(n));
                }
                for e in up.iter().chain(&down) {
                    out += &format!("  \"{}\" -> \"{}\" [label=\"{}\"];\n", e.src, e.dst, e.kind);
                }
                out += "}";
                println!("{out}");
                return Ok(());
            }
            let name = |x: &str| reg.get(x).map(|a| a.name).unwrap_or_default();
            print(json, json!({ "id": id, "ancestors": up, "descendants": down }), || {
                let mut s = format!("{}  {}\nancestors:\n", id, name(&id));
                for e in &up {
                    s += &format!("  {} {} --{}--> {} {}\n", short(&e.src), name(&e.src), e.kind, short(&e.dst), name(&e.dst));
                }
                s += "descendants:\n";
                for e in &down {
                    s += &format!("  {} {} --{}--> {} {}\n", short(&e.src), name(&e.src), e.kind, short(&e.dst), name(&e.dst));
                }
                s.trim_end().to_string()
            })
        }
        RegistryCommand::Oracle { reference } => {
            let reg = Registry::open_existing(&dir)?;
            let id = reg.resolve(&reference)?;
            match reg.oracle(&id)? {
                Some(o) => print(json, json!({ "id": id, "oracle": o }), || line(&o)),
                None => bail!("{id} has no `validated_against` edge, directly or through its ancestors: it was not validated against an oracle"),
            }
        }
        RegistryCommand::Link { src, kind, dst } => {
            let mut reg = Registry::open_existing(&dir)?;
            let (s, d) = (reg.resolve(&src)?, reg.resolve(&dst)?);
            reg.link(&s, &d, &kind)?;
            print(json, json!({ "src": s, "type": kind, "dst": d }), || format!("{s} --{kind}--> {d}"))
        }
        RegistryCommand::Supersede { old, new } => {
            let mut reg = Registry::open_existing(&dir)?;
            let (o, n) = (reg.resolve(&old)?, reg.resolve(&new)?);
            let marked = reg.supersede(&o, &n)?;
            print(json, json!({ "superseded": o, "by": n, "marked_stale": marked }), || {
                let mut s = format!("{n} supersedes {o}; {} artifact(s) marked stale", marked.len());
                for id in &marked {
                    s += &format!("\n  {}", reg.get(id).map(|a| line(&a)).unwrap_or_else(|_| id.clone()));
                }
                s
            })
        }
        RegistryCommand::Stale => {
            let reg = Registry::open_existing(&dir)?;
            let stale = reg.stale()?;
            let value: Vec<_> = stale.iter().map(|(a, cause)| json!({ "artifact": a, "caused_by": cause })).collect();
            print(json, json!(value), || {
                if stale.is_empty() {
                    return "nothing is stale".into();
                }
                stale.iter().map(|(a, cause)| format!("{}  (upstream {} was superseded)", line(a), short(cause))).collect::<Vec<_>>().join("\n")
            })
        }
        RegistryCommand::Verify => {
            let reg = Registry::open_existing(&dir)?;
            let report = reg.verify()?;
            print(json, serde_json::to_value(&report)?, || {
                let mut s = format!("{} blobs checked: {} missing, {} corrupt", report.checked, report.missing.len(), report.corrupt.len());
                for id in &report.missing {
                    s += &format!("\n  missing {id}");
                }
                for id in &report.corrupt {
                    s += &format!("\n  corrupt {id}");
                }
                s
            })?;
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        RegistryCommand::Root { name, reference } => {
            let mut reg = Registry::open_existing(&dir)?;
            let id = reg.resolve(&reference)?;
            reg.set_root(&name, &id)?;
            print(json, json!({ "root": name, "id": id }), || format!("root {name} = {id}"))
        }
        RegistryCommand::Gc { dry_run } => {
            let mut reg = Registry::open_existing(&dir)?;
            let removed = reg.gc(dry_run)?;
            print(json, json!({ "dry_run": dry_run, "removed": removed }), || {
                let verb = if dry_run { "would remove" } else { "removed" };
                let mut s = format!("{verb} {} blob(s)", removed.len());
                for id in &removed {
                    s += &format!("\n  {id}");
                }
                s
            })
        }
        RegistryCommand::Export { bundle: path, references } => {
            let reg = Registry::open_existing(&dir)?;
            let ids = references.iter().map(|r| reg.resolve(r)).collect::<Result<Vec<_>>>()?;
            let exported = bundle::export(&reg, &ids, &path)?;
            print(json, json!({ "bundle": path.display().to_string(), "artifacts": exported }), || {
                format!("exported {} artifact(s) to {}", exported.len(), path.display())
            })
        }
        RegistryCommand::Import { bundle: path } => {
            let mut reg = Registry::open(&dir)?;
            let report = bundle::import(&mut reg, &path)?;
            print(json, serde_json::to_value(&report)?, || {
                format!("imported {} artifact(s) ({} new) and {} edge(s)", report.artifacts, report.new_artifacts, report.edges)
            })
        }
        RegistryCommand::Cat { reference, output } => {
            let reg = Registry::open_existing(&dir)?;
            let bytes = reg.read(&reg.resolve(&reference)?)?;
            match output {
                Some(path) => std::fs::write(&path, bytes)?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
            }
            Ok(())
        }
    }
}
