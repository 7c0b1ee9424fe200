//! `geohost registry …`: the lineage registry from the command line.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use geohost_registry::{bundle, default_dir, signing, Artifact, Filter, NewArtifact, Registry};
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
    Export {
        bundle: PathBuf,
        references: Vec<String>,
        /// Sign the bundle's manifest with this minisign secret key (see `registry keygen`; a password-protected key reads its password from GEOHOST_KEY_PASSWORD).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// The publisher's name, recorded in the bundle (proven only by the signature).
        #[arg(long)]
        publisher: Option<String>,
    },
    /// Import a bundle: every blob streamed and checked, frozen names kept, all or nothing.
    Import {
        bundle: PathBuf,
        /// Trust this public key (a minisign .pub file or its base64 line); repeatable. With any trusted key (also from REGISTRY/trusted-keys/*.pub), unsigned and wrongly signed bundles are refused.
        #[arg(long, value_name = "PUBKEY")]
        trust: Vec<String>,
        /// Keep a plugin whose name@version is already taken by other bytes as name@version+<short id> instead of refusing the bundle (contracts have no override).
        #[arg(long)]
        rename_conflicts: bool,
        /// Largest blob accepted, in MiB.
        #[arg(long, default_value_t = 4096)]
        max_entry_mib: u64,
        /// Largest total of blobs accepted, in MiB.
        #[arg(long, default_value_t = 16384)]
        max_total_mib: u64,
    },
    /// Make a signing key pair PREFIX.key (secret; encrypted when GEOHOST_KEY_PASSWORD is set) and PREFIX.pub (minisign formats).
    Keygen { prefix: PathBuf },
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
    /// Only artifacts recorded in this data-tier transition (L0_L1, L1_L2,
    /// L2_L3, L3_L3 or L3_L4): one row of `geohost matrix`.
    #[arg(long)]
    transition: Option<String>,
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
            if let Some(t) = &l.transition {
                if !geohost_registry::schema::L_TRANSITIONS.contains(&t.as_str()) {
                    anyhow::bail!("--transition {t}: choose one of {}", geohost_registry::schema::L_TRANSITIONS.join(", "));
                }
            }
            let filter =
                Filter { kind: l.kind, role: l.role, step: l.step, tag: l.tag, name: l.name, stale: l.stale.then_some(true), transition: l.transition };
            let items = reg.list(&filter)?;
            print(json, serde_json::to_value(&items)?, || items.iter().map(line).collect::<Vec<_>>().join("\n"))
        }
        RegistryCommand::Show { reference } => {
            let reg = Registry::open_existing(&dir)?;
            let a = reg.get(&reg.resolve(&reference)?)?;
            let mut text = line(&a) + "\n";
            for import in &a.imported_from {
                text += &format!("{}\n", import.describe());
            }
            text += &serde_json::to_string_pretty(&a)?;
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
            // A node's name, marked when it came from a bundle.
            let name = |x: &str| match reg.get(x) {
                Ok(a) if !a.imported_from.is_empty() => format!("{} [imported]", a.name),
                Ok(a) => a.name,
                Err(_) => String::new(),
            };
            let origin: Vec<String> = reg.get(&id)?.imported_from.iter().map(|i| i.describe()).collect();
            print(json, json!({ "id": id, "ancestors": up, "descendants": down }), || {
                let mut s = format!("{}  {}\n", id, name(&id));
                for o in &origin {
                    s += &format!("{o}\n");
                }
                s += "ancestors:\n";
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
        RegistryCommand::Export { bundle: path, references, sign, publisher } => {
            let reg = Registry::open_existing(&dir)?;
            let ids = references.iter().map(|r| reg.resolve(r)).collect::<Result<Vec<_>>>()?;
            let report = bundle::export(&reg, &ids, &path, &bundle::ExportOptions { sign: sign.as_deref(), publisher })?;
            print(
                json,
                json!({ "bundle": path.display().to_string(), "id": report.bundle, "signed_by": report.signed_by, "artifacts": report.artifacts }),
                || {
                    let signed = report.signed_by.as_ref().map(|k| format!(", signed by key {k}")).unwrap_or_default();
                    format!("exported {} artifact(s) to {} (bundle {}{signed})", report.artifacts.len(), path.display(), report.bundle)
                },
            )
        }
        RegistryCommand::Import { bundle: path, trust, rename_conflicts, max_entry_mib, max_total_mib } => {
            let mut reg = Registry::open(&dir)?;
            let trust = trust.iter().map(|t| signing::load_public(t)).collect::<Result<Vec<_>>>()?;
            let options = bundle::ImportOptions { rename_conflicts, max_entry: max_entry_mib << 20, max_total: max_total_mib << 20, trust };
            let report = bundle::import(&mut reg, &path, &options)?;
            print(json, serde_json::to_value(&report)?, || {
                let mut s = format!(
                    "imported {} artifact(s) ({} new) and {} edge(s) from bundle {} ({}{})",
                    report.artifacts,
                    report.new_artifacts,
                    report.edges,
                    report.bundle,
                    report.publisher,
                    if report.verified { ", signature verified" } else { "" }
                );
                for (id, name, version) in &report.renamed {
                    s += &format!("\n  kept {id} as {name}@{version}: its name was taken");
                }
                s
            })
        }
        RegistryCommand::Keygen { prefix } => {
            let (secret, public, id) = signing::keygen(&prefix)?;
            print(json, json!({ "key_id": id, "secret_key": secret, "public_key": public }), || {
                format!(
                    "key {id}: secret key {} (keep it private), public key {} (give it to those who import your bundles)",
                    secret.display(),
                    public.display()
                )
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
