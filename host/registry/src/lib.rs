//! The lineage registry: every plugin, plugin-set, run output, dataset,
//! model, contract and report geohost touches, identified by the BLAKE3
//! hash of its bytes, with its role, cycle step, data-tier transition,
//! tags and typed lineage edges.
//!
//! A registry is a directory: `registry.db` (SQLite, WAL mode) and the blob
//! store `objects/blake3/…` ([`store`]). Invariants:
//! - a blob is durable before the row naming it commits;
//! - blobs are re-hashed on every read;
//! - every write is one `BEGIN IMMEDIATE` transaction, with a busy timeout,
//!   so many processes can share a registry;
//! - schema migrations run under an exclusive OS lock on `registry.lock`.

pub mod bundle;
pub mod schema;
pub mod signing;
pub mod store;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use store::{artifact_id, BlobStore};

/// How long a writer waits for another to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The registry directory: `--registry`, else `$GEOHOST_REGISTRY`, else
/// `$XDG_DATA_HOME/geohost/registry`, else `~/.local/share/geohost/registry`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GEOHOST_REGISTRY") {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("geohost").join("registry")
}

/// What to record about a new artifact (besides its bytes).
#[derive(Clone, Debug, Default)]
pub struct NewArtifact {
    pub kind: String,
    pub name: String,
    pub version: Option<String>,
    pub media_type: String,
    pub role: Option<String>,
    pub step: Option<u8>,
    pub l_transition: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
}

/// An artifact as stored.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Artifact {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub version: Option<String>,
    pub size: u64,
    pub media_type: String,
    pub created: String,
    pub role: Option<String>,
    pub step: Option<u8>,
    pub l_transition: Option<String>,
    pub tags: Vec<String>,
    #[serde(default)]
    pub stale: bool,
    pub metadata: serde_json::Value,
    /// The bundles this artifact was imported from (local state: never
    /// exported, never taken from a bundle).
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub imported_from: Vec<Import>,
}

/// Where an imported artifact came from.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Import {
    /// The bundle's id: the BLAKE3 of its manifest, which lists every
    /// artifact and edge it carries.
    pub bundle: String,
    /// The publisher: the signing key's id when the bundle was signed and
    /// checked against a trusted key (`verified`), else what the bundle
    /// claims (or `unsigned`).
    pub publisher: String,
    pub verified: bool,
    /// The bundle file as it was given to `import`.
    pub source: String,
    pub imported: String,
}

impl Import {
    /// `imported from bundle blake3:… (publisher …, verified|unverified, DATE)`.
    pub fn describe(&self) -> String {
        format!(
            "imported from bundle {} ({}, {}, {})",
            &self.bundle[..("blake3:".len() + 12).min(self.bundle.len())],
            self.publisher,
            if self.verified { "signature verified" } else { "unverified" },
            self.imported
        )
    }
}

/// One lineage edge.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Filters for [`Registry::list`].
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub role: Option<String>,
    pub step: Option<u8>,
    pub tag: Option<String>,
    pub name: Option<String>,
    pub stale: Option<bool>,
    /// The data-tier transition (L0_L1 … L3_L4) the artifact was recorded in.
    pub transition: Option<String>,
}

/// Result of [`Registry::verify`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub missing: Vec<String>,
    pub corrupt: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.corrupt.is_empty()
    }
}

pub struct Registry {
    dir: PathBuf,
    conn: Connection,
    store: BlobStore,
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn check_choice(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<()> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => bail!("{field} `{v}` is not one of: {}", allowed.join(", ")),
        _ => Ok(()),
    }
}

impl Registry {
    /// Open the registry at `dir`, creating it when absent.
    /// A new registry directory is created with mode 0700: it may come to
    /// hold the secret seeds of hidden experiments.
    pub fn open(dir: &Path) -> Result<Registry> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).with_context(|| format!("cannot create registry directory {}", dir.display()))?;
        Self::connect(dir)
    }

    /// Open an existing registry (for read commands): a missing one is an
    /// error saying how to make one.
    pub fn open_existing(dir: &Path) -> Result<Registry> {
        if !dir.join("registry.db").is_file() {
            bail!(
                "no registry at {} (no registry.db there); `geohost run` or `geohost registry add` creates one, or pass --registry PATH / set GEOHOST_REGISTRY",
                dir.display()
            );
        }
        Self::connect(dir)
    }

    fn connect(dir: &Path) -> Result<Registry> {
        let db = dir.join("registry.db");
        Self::connect_db(dir, &db).map_err(|e| explain(&db, e))
    }

    fn connect_db(dir: &Path, db: &Path) -> Result<Registry> {
        let mut conn = Connection::open(db).with_context(|| format!("cannot open registry database {}", db.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // The switch to WAL and the migrations under an exclusive OS lock:
        // concurrent first opens would otherwise race to create the schema,
        // and SQLite can refuse the journal-mode switch of a fresh file with
        // SQLITE_BUSY without waiting on the busy timeout.
        let lock_path = dir.join("registry.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {} for writing", lock_path.display()))?;
        lock.lock().context("locking the registry for migration")?;
        let prepared = (|| {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).context("enabling WAL")?;
            anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "the registry at {} cannot use WAL mode (got {mode})", dir.display());
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            schema::migrate(&mut conn).with_context(|| format!("registry {}", db.display()))
        })();
        lock.unlock()?;
        for note in prepared? {
            eprintln!("warning: {note}");
        }
        Ok(Registry { dir: dir.into(), store: BlobStore::new(dir), conn })
    }

    /// Run a write with its SQLite failures explained: a lock held past
    /// the busy timeout or a read-only database is named with what to do.
    pub(crate) fn explained<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let db = self.dir.join("registry.db");
        write(self).map_err(|e| explain(&db, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Store `bytes` and record them. Returns the id and whether it was
    /// already registered (then metadata is left as it was; new tags are
    /// added).
    pub fn add(&mut self, bytes: &[u8], a: &NewArtifact) -> Result<(String, bool)> {
        self.explained(|reg| reg.add_unexplained(bytes, a))
    }

    fn add_unexplained(&mut self, bytes: &[u8], a: &NewArtifact) -> Result<(String, bool)> {
        check_choice("kind", &Some(a.kind.clone()), schema::KINDS)?;
        check_choice("role", &a.role, schema::ROLES)?;
        check_choice("l_transition", &a.l_transition, schema::L_TRANSITIONS)?;
        if let Some(step) = a.step {
            anyhow::ensure!((1..=6).contains(&step), "step must be between 1 and 6, got {step}");
        }
        anyhow::ensure!(!a.name.is_empty(), "an artifact needs a name");
        let id = artifact_id(bytes);
        // A taken plugin name@version keeps naming what it named: a plugin
        // rebuilt without a new version is kept as VERSION+<short id>; a
        // contract cannot change at all.
        let mut version = a.version.clone();
        if let Some((other, created)) = self.frozen_holder(&a.kind, &a.name, a.version.as_deref())?.filter(|(other, _)| *other != id) {
            let v = a.version.as_deref().unwrap_or_default();
            if a.kind != "plugin" {
                bail!(
                    "{} {}@{v} is already registered as {other} ({created}) with other bytes, and a registered {} cannot change: give the new one another version",
                    a.kind,
                    a.name,
                    a.kind
                );
            }
            let renamed = schema::renamed_version(v, &id);
            eprintln!(
                "warning: plugin {}@{v} is already registered as {other} ({created}) with other bytes; these bytes are registered as {}@{renamed}. Give a changed plugin a new version",
                a.name, a.name
            );
            version = Some(renamed);
        }
        // The blob first, durably; then the row.
        self.store.put_hashed(bytes, &id)?;
        let record = Artifact {
            id: id.clone(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            version,
            size: bytes.len() as u64,
            media_type: a.media_type.clone(),
            created: now(),
            role: a.role.clone(),
            step: a.step,
            l_transition: a.l_transition.clone(),
            tags: a.tags.clone(),
            stale: false,
            metadata: a.metadata.clone(),
            imported_from: Vec::new(),
        };
        let inserted = self.insert_record(&record)?;
        Ok((id, !inserted))
    }

    /// Register a file from disk.
    pub fn add_file(&mut self, path: &Path, a: &NewArtifact) -> Result<(String, bool)> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.add(&bytes, a)
    }

    /// Record `src <kind> dst` (idempotent).
    pub fn link(&mut self, src: &str, dst: &str, kind: &str) -> Result<()> {
        self.explained(|reg| reg.link_unexplained(src, dst, kind))
    }

    fn link_unexplained(&mut self, src: &str, dst: &str, kind: &str) -> Result<()> {
        check_choice("edge type", &Some(kind.into()), schema::EDGE_TYPES)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in [src, dst] {
            let known: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM artifacts WHERE id = ?1)", [id], |r| r.get(0))?;
            anyhow::ensure!(known, "cannot link: {id} is not in the registry");
        }
        tx.execute("INSERT OR IGNORE INTO edges (src, dst, type, created) VALUES (?1, ?2, ?3, ?4)", params![src, dst, kind, now()])?;
        tx.commit()?;
        Ok(())
    }

    /// Resolve a reference: a full id, a hex prefix (with or without
    /// `blake3:`, at least 4 digits), `NAME`, `NAME@VERSION`, or the path of
    /// a file whose bytes are registered. A reference that matches several
    /// artifacts is an error listing them (id, origin, date), never the
    /// newest silently; the one exception is a name whose artifacts were
    /// explicitly superseded (`registry supersede`) down to one.
    pub fn resolve(&self, reference: &str) -> Result<String> {
        self.resolve_among(reference, None)
    }

    /// The artifact with `role` (an emulator, a predictor) that `reference`
    /// names, resolved as [`Registry::resolve`] does, except that when a
    /// name or `name@version` names several artifacts, the one
    /// non-superseded artifact among them with that role decides. A
    /// component submitted under its own name thus does not make an
    /// emulator of the same name ambiguous; two emulators of one name still
    /// are. An id, a prefix or a single name that names an artifact without
    /// the role is an error naming what it names instead.
    pub fn get_with_role(&self, reference: &str, role: &str) -> Result<Artifact> {
        let artifact = self.get(&self.resolve_among(reference, Some(role))?)?;
        if artifact.role.as_deref() != Some(role) {
            bail!(
                "`{reference}` names {} ({}, a {} with role {}), not an artifact with role `{role}`; \
                 `geohost registry list --role {role}` lists those",
                artifact.id,
                artifact.name,
                artifact.kind,
                artifact.role.as_deref().map_or("none".into(), |r| format!("`{r}`"))
            );
        }
        Ok(artifact)
    }

    fn resolve_among(&self, reference: &str, role: Option<&str>) -> Result<String> {
        let hex = reference.strip_prefix("blake3:").unwrap_or(reference);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let pattern = format!("blake3:{}*", hex.to_ascii_lowercase());
            let mut stmt = self.conn.prepare("SELECT id FROM artifacts WHERE id GLOB ?1 ORDER BY id")?;
            let candidates: Vec<String> = stmt.query_map([pattern], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            match candidates.len() {
                0 => {}
                1 => return Ok(candidates[0].clone()),
                n => bail!("`{reference}` is ambiguous; it matches {n} artifacts:\n{}\nuse more digits", self.describe_candidates(&candidates)?),
            }
        }
        let (name, version) = match reference.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (reference, None),
        };
        let mut stmt = self.conn.prepare("SELECT id, role FROM artifacts WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY created, id")?;
        let named: Vec<(String, Option<String>)> = stmt.query_map(params![name, version], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let candidates: Vec<String> = named.iter().map(|(id, _)| id.clone()).collect();
        match candidates.len() {
            0 if Path::new(reference).is_file() => {
                // A file on disk: the artifact with its bytes' id.
                let id = artifact_id(&std::fs::read(reference).with_context(|| format!("cannot read {reference}"))?);
                self.get(&id).map(|a| a.id).map_err(|_| anyhow::anyhow!("file {reference} ({id}) is not in the registry; `geohost registry add` registers it"))
            }
            0 => bail!("no artifact matches `{reference}` (not a known id, id prefix, name or name@version); `geohost registry list` shows what is registered"),
            1 => Ok(candidates[0].clone()),
            _ => {
                if let Some(role) = role {
                    let with_role: Vec<String> = named.iter().filter(|(_, r)| r.as_deref() == Some(role)).map(|(id, _)| id.clone()).collect();
                    if let [head] = self.not_superseded(&with_role)?.as_slice() {
                        return Ok(head.clone());
                    }
                }
                let heads = self.not_superseded(&candidates)?;
                if let [head] = heads.as_slice() {
                    return Ok(head.clone());
                }
                bail!(
                    "`{reference}` is ambiguous; it names {} artifacts:\n{}\nname one by id (a unique prefix is enough){}, or record which replaces which with `geohost registry supersede OLD NEW`",
                    candidates.len(),
                    self.describe_candidates(&candidates)?,
                    if version.is_none() { " or by name@version" } else { "" }
                )
            }
        }
    }

    /// The candidates no other candidate supersedes.
    fn not_superseded(&self, candidates: &[String]) -> Result<Vec<String>> {
        let mut heads = Vec::new();
        for id in candidates {
            let mut stmt = self.conn.prepare_cached("SELECT src FROM edges WHERE dst = ?1 AND type = 'supersedes'")?;
            let by: Vec<String> = stmt.query_map([id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            if !by.iter().any(|b| candidates.contains(b)) {
                heads.push(id.clone());
            }
        }
        Ok(heads)
    }

    /// One line per candidate: id, kind, name@version, date and origin.
    fn describe_candidates(&self, ids: &[String]) -> Result<String> {
        let lines = ids
            .iter()
            .map(|id| {
                let a = self.get(id)?;
                let origin = a.imported_from.first().map(Import::describe).unwrap_or_else(|| "local".into());
                let version = a.version.as_deref().map(|v| format!("@{v}")).unwrap_or_default();
                Ok(format!("  {id}  {} {}{version}  registered {}  {origin}", a.kind, a.name, a.created))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(lines.join("\n"))
    }

    /// The artifact that holds `name@version` for a kind whose names are
    /// frozen ([`schema::FROZEN_KINDS`]), with its registration date.
    pub fn frozen_holder(&self, kind: &str, name: &str, version: Option<&str>) -> Result<Option<(String, String)>> {
        let Some(version) = version.filter(|_| schema::FROZEN_KINDS.contains(&kind)) else { return Ok(None) };
        Ok(self
            .conn
            .query_row("SELECT id, created FROM artifacts WHERE kind = ?1 AND name = ?2 AND version = ?3", params![kind, name, version], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn row_to_artifact(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Artifact> {
        let id: String = r.get(0)?;
        let metadata: String = r.get(10)?;
        Ok(Artifact {
            id,
            kind: r.get(1)?,
            name: r.get(2)?,
            version: r.get(3)?,
            size: r.get::<_, i64>(4)? as u64,
            media_type: r.get(5)?,
            created: r.get(6)?,
            role: r.get(7)?,
            step: r.get(8)?,
            l_transition: r.get(9)?,
            stale: r.get(11)?,
            tags: Vec::new(),
            metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
            imported_from: Vec::new(),
        })
    }

    const SELECT: &'static str = "SELECT a.id, a.kind, a.name, a.version, a.size, a.media_type, a.created, a.role, a.step, a.l_transition, a.metadata,
        EXISTS (SELECT 1 FROM stale s WHERE s.id = a.id) FROM artifacts a";

    fn with_tags(&self, mut a: Artifact) -> Result<Artifact> {
        let mut stmt = self.conn.prepare_cached("SELECT tag FROM tags WHERE id = ?1 ORDER BY tag")?;
        a.tags = stmt.query_map([&a.id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare_cached("SELECT bundle, publisher, verified, source, imported FROM imports WHERE id = ?1 ORDER BY imported, bundle")?;
        a.imported_from = stmt
            .query_map([&a.id], |r| Ok(Import { bundle: r.get(0)?, publisher: r.get(1)?, verified: r.get(2)?, source: r.get(3)?, imported: r.get(4)? }))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(a)
    }

    /// The artifact with this exact id.
    pub fn get(&self, id: &str) -> Result<Artifact> {
        let sql = format!("{} WHERE a.id = ?1", Self::SELECT);
        let a = self.conn.query_row(&sql, [id], |r| self.row_to_artifact(r)).optional()?;
        match a {
            Some(a) => self.with_tags(a),
            None => bail!("{id} is not in the registry"),
        }
    }

    /// Read an artifact's bytes, re-hashed.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        self.get(id)?;
        self.store.get(id)
    }

    pub fn list(&self, f: &Filter) -> Result<Vec<Artifact>> {
        let sql = format!(
            "{} WHERE (?1 IS NULL OR a.kind = ?1) AND (?2 IS NULL OR a.role = ?2) AND (?3 IS NULL OR a.step = ?3)
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM tags t WHERE t.id = a.id AND t.tag = ?4))
               AND (?5 IS NULL OR a.name = ?5)
               AND (?6 IS NULL OR EXISTS (SELECT 1 FROM stale s WHERE s.id = a.id) = ?6)
               AND (?7 IS NULL OR a.l_transition = ?7)
             ORDER BY a.created, a.id",
            Self::SELECT
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows: Vec<Artifact> = stmt
            .query_map(params![f.kind, f.role, f.step, f.tag, f.name, f.stale, f.transition], |r| self.row_to_artifact(r))?
            .collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(|a| self.with_tags(a)).collect()
    }

    /// All edges touching `id`'s ancestry (`up`) or descendants (`!up`),
    /// following dependencies transitively.
    pub fn lineage(&self, id: &str, up: bool) -> Result<Vec<Edge>> {
        // Walk the dependency view, then report the underlying edges.
        let sql = if up {
            "WITH RECURSIVE walk(x) AS (SELECT ?1 UNION SELECT d.parent FROM deps d JOIN walk ON d.child = walk.x)
             SELECT DISTINCT d.child, d.parent, d.type FROM deps d JOIN walk ON d.child = walk.x"
        } else {
            "WITH RECURSIVE walk(x) AS (SELECT ?1 UNION SELECT d.child FROM deps d JOIN walk ON d.parent = walk.x)
             SELECT DISTINCT d.child, d.parent, d.type FROM deps d JOIN walk ON d.parent = walk.x"
        };
        let mut stmt = self.conn.prepare(sql)?;
        let mut edges: Vec<Edge> = stmt
            .query_map([id], |r| {
                let (child, parent, kind): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                // Back to the stored direction (scored_by points parent → report).
                Ok(if kind == "scored_by" { Edge { src: parent, dst: child, kind } } else { Edge { src: child, dst: parent, kind } })
            })?
            .collect::<rusqlite::Result<_>>()?;
        edges.sort();
        Ok(edges)
    }

    /// Ids downstream of `id` (everything that depends on it, transitively).
    pub fn descendants(&self, id: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "WITH RECURSIVE walk(x) AS (SELECT ?1 UNION SELECT d.child FROM deps d JOIN walk ON d.parent = walk.x)
             SELECT x FROM walk WHERE x <> ?1 ORDER BY x",
        )?;
        let ids = stmt.query_map([id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Which oracle was `id` validated against: its own `validated_against`
    /// edge, else the nearest one among its ancestors.
    pub fn oracle(&self, id: &str) -> Result<Option<Artifact>> {
        let oracle: Option<String> = self
            .conn
            .query_row(
                "WITH RECURSIVE walk(x, depth) AS (SELECT ?1, 0 UNION SELECT d.parent, walk.depth + 1 FROM deps d JOIN walk ON d.child = walk.x)
                 SELECT e.dst FROM walk JOIN edges e ON e.src = walk.x AND e.type = 'validated_against' ORDER BY walk.depth, e.created LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        oracle.map(|o| self.get(&o)).transpose()
    }

    /// Record that `new` supersedes `old` and mark everything downstream of
    /// `old` stale. Returns the ids newly marked.
    pub fn supersede(&mut self, old: &str, new: &str) -> Result<Vec<String>> {
        self.explained(|reg| reg.supersede_unexplained(old, new))
    }

    fn supersede_unexplained(&mut self, old: &str, new: &str) -> Result<Vec<String>> {
        anyhow::ensure!(old != new, "an artifact cannot supersede itself");
        self.get(old)?;
        self.get(new)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT OR IGNORE INTO edges (src, dst, type, created) VALUES (?1, ?2, 'supersedes', ?3)", params![new, old, now()])?;
        let downstream: Vec<String> = {
            let mut stmt = tx.prepare(
                "WITH RECURSIVE walk(x) AS (SELECT ?1 UNION SELECT d.child FROM deps d JOIN walk ON d.parent = walk.x)
                 SELECT x FROM walk WHERE x <> ?1 AND NOT EXISTS (SELECT 1 FROM stale s WHERE s.id = x) ORDER BY x",
            )?;
            let ids = stmt.query_map([old], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids
        };
        let since = now();
        for id in &downstream {
            tx.execute("INSERT OR IGNORE INTO stale (id, caused_by, since) VALUES (?1, ?2, ?3)", params![id, old, since])?;
        }
        tx.commit()?;
        Ok(downstream)
    }

    /// The artifact that supersedes `id`, if any.
    pub fn superseded_by(&self, id: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT src FROM edges WHERE dst = ?1 AND type = 'supersedes' ORDER BY created LIMIT 1", [id], |r| r.get(0)).optional()?)
    }

    /// Stale artifacts with the superseded artifact that made them stale.
    pub fn stale(&self) -> Result<Vec<(Artifact, String)>> {
        let mut stmt = self.conn.prepare("SELECT id, caused_by FROM stale ORDER BY since, id")?;
        let rows: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(|(id, cause)| Ok((self.get(&id)?, cause))).collect()
    }

    /// Re-hash every registered blob.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut stmt = self.conn.prepare("SELECT id FROM artifacts ORDER BY id")?;
        let ids: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        for id in ids {
            report.checked += 1;
            match self.store.check(&id)? {
                Some(true) => {}
                Some(false) => report.corrupt.push(id),
                None => report.missing.push(id),
            }
        }
        Ok(report)
    }

    /// Name `id` as a root for [`Registry::gc`].
    pub fn set_root(&mut self, name: &str, id: &str) -> Result<()> {
        self.explained(|reg| reg.set_root_unexplained(name, id))
    }

    fn set_root_unexplained(&mut self, name: &str, id: &str) -> Result<()> {
        self.get(id)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT OR REPLACE INTO roots (name, id) VALUES (?1, ?2)", params![name, id])?;
        tx.commit()?;
        Ok(())
    }

    pub fn roots(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare("SELECT name, id FROM roots ORDER BY name")?;
        let roots = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        Ok(roots)
    }

    /// Remove blobs not reachable from the named roots (through their
    /// ancestry), and blobs no row names at all. With `dry_run`, only say
    /// what would go. Rows of unreachable artifacts go with their blobs;
    /// temporary files older than ten minutes (from killed writers) too.
    pub fn gc(&mut self, dry_run: bool) -> Result<Vec<String>> {
        self.explained(|reg| reg.gc_unexplained(dry_run))
    }

    fn gc_unexplained(&mut self, dry_run: bool) -> Result<Vec<String>> {
        let roots = self.roots()?;
        anyhow::ensure!(!roots.is_empty(), "no named roots: gc would remove everything. Name what to keep with `geohost registry root NAME ID` first");
        let mut keep = std::collections::BTreeSet::new();
        for (_, id) in &roots {
            keep.insert(id.clone());
            for e in self.lineage(id, true)? {
                keep.insert(e.src);
                keep.insert(e.dst);
            }
        }
        let mut doomed: Vec<String> = self.store.list()?.into_iter().filter(|id| !keep.contains(id)).collect();
        let registered: Vec<String> = {
            let mut stmt = self.conn.prepare("SELECT id FROM artifacts")?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids
        };
        for id in registered.iter().filter(|id| !keep.contains(*id)) {
            if !doomed.contains(id) {
                doomed.push(id.clone());
            }
        }
        doomed.sort();
        if dry_run {
            return Ok(doomed);
        }
        // Rows first (so no row ever names a removed blob), then blobs.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in &doomed {
            tx.execute("DELETE FROM runs WHERE plugin_set = ?1", [id])?;
            tx.execute("DELETE FROM artifacts WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        for id in &doomed {
            if self.store.path_of(id)?.exists() {
                self.store.remove(id)?;
            }
        }
        // Partial blobs of writers killed mid-write (never named by a row).
        self.store.remove_abandoned_temporaries(Duration::from_secs(600))?;
        Ok(doomed)
    }

    /// That the registry directory is closed to its group and to others,
    /// as it must be to keep secret seeds: whoever reads them computes
    /// every hidden truth. Pre-registration checks it before it registers
    /// anything; [`Registry::add_secrets`] checks it again.
    pub fn ensure_private(&self) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "the registry {} is open to its group or to others (mode {mode:o}), and the secret seeds of hidden experiments \
                     would be kept in it: whoever reads them computes every hidden truth. `chmod 700 {}`, then register again",
                    self.dir.display(),
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// Keep the secret seeds of a hidden contract's evaluation experiments
    /// (in order). Refuses a contract that already has seeds: they are
    /// drawn once, at pre-registration, and never replaced. Refuses a
    /// registry that is not private ([`Registry::ensure_private`]).
    pub fn add_secrets(&mut self, contract: &str, seeds: &[[u8; 32]]) -> Result<()> {
        if !seeds.is_empty() {
            self.ensure_private()?;
        }
        self.explained(|reg| reg.add_secrets_unexplained(contract, seeds))
    }

    /// Keep seeds that were revealed (public, checked against their
    /// commitments by the caller), so that reports can be rescored here.
    pub fn add_revealed_seeds(&mut self, contract: &str, seeds: &[[u8; 32]]) -> Result<()> {
        self.explained(|reg| reg.add_secrets_unexplained(contract, seeds))
    }

    fn add_secrets_unexplained(&mut self, contract: &str, seeds: &[[u8; 32]]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: i64 = tx.query_row("SELECT count(*) FROM secrets WHERE contract = ?1", [contract], |r| r.get(0))?;
        anyhow::ensure!(existing == 0, "contract {contract} already has its secret seeds; they are never replaced");
        for (i, seed) in seeds.iter().enumerate() {
            tx.execute("INSERT INTO secrets (contract, idx, seed, created) VALUES (?1, ?2, ?3, ?4)", params![contract, i as i64, &seed[..], now()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The secret seeds of a hidden contract, in order (empty when this
    /// registry has none, e.g. the contract was imported).
    pub fn secrets(&self, contract: &str) -> Result<Vec<[u8; 32]>> {
        let mut stmt = self.conn.prepare("SELECT seed FROM secrets WHERE contract = ?1 ORDER BY idx")?;
        let rows: Vec<Vec<u8>> = stmt.query_map([contract], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        rows.into_iter().map(|s| <[u8; 32]>::try_from(s.as_slice()).map_err(|_| anyhow::anyhow!("a secret seed of {contract} is not 32 bytes"))).collect()
    }

    /// Remember a run by the hash of its inputs.
    pub fn record_run(&mut self, input_key: &str, plugin_set: &str, outputs: &[String]) -> Result<()> {
        self.explained(|reg| reg.record_run_unexplained(input_key, plugin_set, outputs))
    }

    fn record_run_unexplained(&mut self, input_key: &str, plugin_set: &str, outputs: &[String]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO runs (input_key, plugin_set, outputs, created) VALUES (?1, ?2, ?3, ?4)",
            params![input_key, plugin_set, serde_json::to_string(outputs)?, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The one output (id and bytes) of an earlier run with the same
    /// inputs, if any: the cache of datasets and trained weights.
    pub fn cached_output(&self, input_key: &str) -> Result<Option<(String, Vec<u8>)>> {
        match self.find_run(input_key)?.filter(|ids| ids.len() == 1) {
            Some(ids) => {
                let bytes = self.read(&ids[0])?;
                Ok(Some((ids[0].clone(), bytes)))
            }
            None => Ok(None),
        }
    }

    /// The outputs of an earlier run with the same inputs, if any.
    pub fn find_run(&self, input_key: &str) -> Result<Option<Vec<String>>> {
        let outputs: Option<String> = self.conn.query_row("SELECT outputs FROM runs WHERE input_key = ?1", [input_key], |r| r.get(0)).optional()?;
        Ok(outputs.map(|o| serde_json::from_str(&o)).transpose()?)
    }

    /// Every edge (for export and DOT output).
    pub fn edges_among(&self, ids: &[String]) -> Result<Vec<Edge>> {
        let set: std::collections::HashSet<&String> = ids.iter().collect();
        let mut stmt = self.conn.prepare("SELECT src, dst, type FROM edges ORDER BY src, dst, type")?;
        let edges: Vec<Edge> = stmt.query_map([], |r| Ok(Edge { src: r.get(0)?, dst: r.get(1)?, kind: r.get(2)? }))?.collect::<rusqlite::Result<_>>()?;
        Ok(edges.into_iter().filter(|e| set.contains(&e.src) && set.contains(&e.dst)).collect())
    }

    /// Add an imported bundle's records, edges and provenance in one
    /// transaction (all or nothing); the blobs must already be in the
    /// store. Returns how many records were new.
    pub(crate) fn import_records(&mut self, artifacts: &[Artifact], edges: &[Edge], import: &Import) -> Result<usize> {
        for a in artifacts {
            check_choice("kind", &Some(a.kind.clone()), schema::KINDS).with_context(|| format!("{} ({})", a.id, a.name))?;
            check_choice("role", &a.role, schema::ROLES).with_context(|| format!("{} ({})", a.id, a.name))?;
        }
        for e in edges {
            check_choice("edge type", &Some(e.kind.clone()), schema::EDGE_TYPES)?;
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = 0;
        for a in artifacts {
            new += usize::from(insert_artifact(&tx, a).with_context(|| format!("recording {} ({})", a.id, a.name))?);
            tx.execute(
                "INSERT OR IGNORE INTO imports (id, bundle, publisher, verified, source, imported) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.id, import.bundle, import.publisher, import.verified, import.source, import.imported],
            )?;
        }
        for e in edges {
            for id in [&e.src, &e.dst] {
                let known: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM artifacts WHERE id = ?1)", [id], |r| r.get(0))?;
                anyhow::ensure!(known, "edge {} --{}--> {} names {id}, which is neither in the bundle nor in the registry", e.src, e.kind, e.dst);
            }
            tx.execute("INSERT OR IGNORE INTO edges (src, dst, type, created) VALUES (?1, ?2, ?3, ?4)", params![e.src, e.dst, e.kind, now()])?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Insert an artifact record unless one with its id exists (then only
    /// new tags are added); returns whether it was new. The blob must
    /// already be in the store.
    fn insert_record(&mut self, a: &Artifact) -> Result<bool> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = insert_artifact(&tx, a)?;
        tx.commit()?;
        Ok(inserted)
    }
}

/// The row of `a` and its tags, inside `tx`; whether the row was new.
fn insert_artifact(tx: &rusqlite::Transaction<'_>, a: &Artifact) -> Result<bool> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO artifacts (id, kind, name, version, size, media_type, created, role, step, l_transition, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![a.id, a.kind, a.name, a.version, a.size as i64, a.media_type, a.created, a.role, a.step, a.l_transition, serde_json::to_string(&a.metadata)?],
    )?;
    for tag in &a.tags {
        tx.execute("INSERT OR IGNORE INTO tags (id, tag) VALUES (?1, ?2)", params![a.id, tag])?;
    }
    Ok(inserted == 1)
}

/// Register trained weights (`trained_on` the dataset, `derived_from` the
/// plugins) as the output of the training run `request_key` (so that
/// [`cached_output`] finds them next time) and return their id; without a
/// registry, the id their bytes would get.
pub fn add_trained(
    registry: Option<&mut Registry>,
    request_key: &str,
    bytes: &[u8],
    artifact: &NewArtifact,
    dataset: &str,
    plugins: &[impl AsRef<str>],
) -> Result<String> {
    let Some(reg) = registry else { return Ok(artifact_id(bytes)) };
    let (id, _) = reg.add(bytes, artifact)?;
    reg.link(&id, dataset, "trained_on")?;
    for p in plugins {
        reg.link(&id, p.as_ref(), "derived_from")?;
    }
    reg.record_run(request_key, dataset, std::slice::from_ref(&id))?;
    Ok(id)
}

/// [`Registry::cached_output`] when there is a registry; `None` without.
pub fn cached_output(registry: Option<&Registry>, input_key: &str) -> Result<Option<(String, Vec<u8>)>> {
    registry.map(|reg| reg.cached_output(input_key)).transpose().map(Option::flatten)
}

/// Say what to do when the registry database cannot be used: not a
/// database, locked past the busy timeout, or read-only.
fn explain(db: &Path, error: anyhow::Error) -> anyhow::Error {
    use rusqlite::ErrorCode::*;
    let code = error.chain().find_map(|e| match e.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    });
    let io_denied = error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem))
    });
    let code = if io_denied { Some(ReadOnly) } else { code };
    let advice = match code {
        Some(NotADatabase) => format!(
            "{} is not a SQLite database (corrupt or overwritten): restore it from a backup, or move the registry directory aside and import your bundles into a new one",
            db.display()
        ),
        Some(DatabaseBusy) | Some(DatabaseLocked) => format!(
            "the registry database {} stayed locked by another process for {} s: wait for it to finish (or find it with `fuser {}`) and try again",
            db.display(),
            BUSY_TIMEOUT.as_secs(),
            db.display()
        ),
        Some(ReadOnly) | Some(PermissionDenied) | Some(CannotOpen) => format!(
            "the registry database {} cannot be written (read-only file, directory or file system): pass a writable --registry or set GEOHOST_REGISTRY",
            db.display()
        ),
        _ => return error,
    };
    error.context(advice)
}
