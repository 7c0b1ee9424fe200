//! The registry's SQLite schema and its migrations.
//!
//! The schema version is SQLite's `user_version`. Migrations run in order,
//! each in its own transaction, while the caller holds the registry's OS
//! file lock (two processes opening a fresh registry at once would
//! otherwise both try to create it).

use anyhow::{Context, Result};
use rusqlite::Connection;

/// Roles an artifact can play in the cycle.
pub const ROLES: &[&str] = &["oracle", "emulator", "production", "predictor", "baseline"];
/// Data-tier transitions.
pub const L_TRANSITIONS: &[&str] = &["L0_L1", "L1_L2", "L2_L3", "L3_L3", "L3_L4"];
/// Artifact kinds.
pub const KINDS: &[&str] = &["plugin", "plugin-set", "dataset", "run-output", "weights", "contract", "report", "file", "submission", "reveal"];
/// Typed lineage edges, read "FROM <type> TO": an output `derived_from`
/// its plugin, an emulator `trained_on` a dataset, a result
/// `validated_against` its oracle, an output `produced_by` a plugin-set,
/// an artifact `scored_by` a report, a new version `supersedes` an old one.
pub const EDGE_TYPES: &[&str] = &["derived_from", "trained_on", "validated_against", "produced_by", "scored_by", "supersedes"];

const MIGRATIONS: &[&str] = &[
    // 1: artifacts, tags, edges, stale marks, named roots, runs.
    r#"
    CREATE TABLE artifacts (
        id           TEXT PRIMARY KEY CHECK (id GLOB 'blake3:*' AND length(id) = 71),
        kind         TEXT NOT NULL,
        name         TEXT NOT NULL,
        version      TEXT,
        size         INTEGER NOT NULL CHECK (size >= 0),
        media_type   TEXT NOT NULL,
        created      TEXT NOT NULL,
        role         TEXT CHECK (role IN ('oracle', 'emulator', 'production', 'predictor', 'baseline')),
        step         INTEGER CHECK (step BETWEEN 1 AND 6),
        l_transition TEXT CHECK (l_transition IN ('L0_L1', 'L1_L2', 'L2_L3', 'L3_L3', 'L3_L4')),
        metadata     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
    );
    CREATE INDEX artifacts_name ON artifacts (name, version);
    CREATE INDEX artifacts_kind ON artifacts (kind);

    CREATE TABLE tags (
        id  TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (id, tag)
    );

    CREATE TABLE edges (
        src     TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
        dst     TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
        type    TEXT NOT NULL CHECK (type IN ('derived_from', 'trained_on', 'validated_against', 'produced_by', 'scored_by', 'supersedes')),
        created TEXT NOT NULL,
        PRIMARY KEY (src, dst, type),
        CHECK (src <> dst)
    );
    CREATE INDEX edges_dst ON edges (dst, type);

    -- child depends on parent: every edge type but scored_by points from
    -- the dependent artifact to what it depends on; a report depends on
    -- what it scored. `supersedes` is history, not a dependency.
    CREATE VIEW deps (child, parent, type) AS
        SELECT src, dst, type FROM edges WHERE type IN ('derived_from', 'trained_on', 'validated_against', 'produced_by')
        UNION ALL
        SELECT dst, src, type FROM edges WHERE type = 'scored_by';

    CREATE TABLE stale (
        id        TEXT PRIMARY KEY REFERENCES artifacts (id) ON DELETE CASCADE,
        caused_by TEXT NOT NULL,
        since     TEXT NOT NULL
    );

    CREATE TABLE roots (
        name TEXT PRIMARY KEY,
        id   TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE
    );

    -- A run is identified by the hash of its inputs (plugins, plugin-set,
    -- overrides); `outputs` lists what it produced.
    CREATE TABLE runs (
        input_key TEXT PRIMARY KEY,
        plugin_set TEXT NOT NULL REFERENCES artifacts (id),
        outputs   TEXT NOT NULL CHECK (json_valid(outputs)),
        created   TEXT NOT NULL
    );
    "#,
    // 2: the trust boundary. Names that identify one thing (a plugin or a
    // contract at a version) are unique per kind; imported artifacts
    // record the bundle and publisher they came from. Existing duplicates
    // are renamed first (see `rename_duplicates`).
    r#"
    CREATE UNIQUE INDEX artifacts_frozen_names ON artifacts (kind, name, version)
        WHERE version IS NOT NULL AND kind IN ('plugin', 'contract');

    CREATE TABLE imports (
        id        TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
        bundle    TEXT NOT NULL,
        publisher TEXT NOT NULL,
        verified  INTEGER NOT NULL CHECK (verified IN (0, 1)),
        source    TEXT NOT NULL,
        imported  TEXT NOT NULL,
        PRIMARY KEY (id, bundle)
    );
    "#,
    // 3: the secret seeds of hidden benchmark experiments. Private to this
    // registry: bundles carry artifacts, never this table; a contract's
    // record holds only the commitments BLAKE3(seed ‖ contract id).
    r#"
    CREATE TABLE secrets (
        contract TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
        idx      INTEGER NOT NULL CHECK (idx >= 0),
        seed     BLOB NOT NULL CHECK (length(seed) = 32),
        created  TEXT NOT NULL,
        PRIMARY KEY (contract, idx)
    );
    "#,
];

/// Kinds whose `name@version` names exactly one artifact (unique in a
/// registry): a plugin release and a contract. Reports, outputs and
/// datasets may share a name; a reference to one of several is an error.
pub const FROZEN_KINDS: &[&str] = &["plugin", "contract"];

/// The version under which a second artifact with a taken `name@version`
/// is kept: `VERSION+<first 12 hex digits of its id>`.
pub fn renamed_version(version: &str, id: &str) -> String {
    format!("{version}+{}", &id[7..19.min(id.len())])
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database to [`SCHEMA_VERSION`]. Refuses a database from a
/// newer geohost. Returns notes for the user (what a migration changed).
pub fn migrate(conn: &mut Connection) -> Result<Vec<String>> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        anyhow::bail!("the registry's schema version is {current}, newer than this geohost understands ({SCHEMA_VERSION}); use a newer geohost");
    }
    let mut notes = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if version == 2 {
            notes.extend(rename_duplicates(&tx)?);
        }
        tx.execute_batch(sql).with_context(|| format!("applying registry migration {version}"))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(notes)
}

/// Before `name@version` became unique for [`FROZEN_KINDS`], a registry
/// could hold several artifacts under one: keep the first registered under
/// its name and move each later one to [`renamed_version`], reporting it.
fn rename_duplicates(tx: &rusqlite::Transaction<'_>) -> Result<Vec<String>> {
    let mut stmt = tx.prepare(
        "SELECT a.id, a.kind, a.name, a.version FROM artifacts a
         WHERE a.version IS NOT NULL AND a.kind IN ('plugin', 'contract') AND EXISTS (
             SELECT 1 FROM artifacts b WHERE b.kind = a.kind AND b.name = a.name AND b.version = a.version
               AND (b.created < a.created OR (b.created = a.created AND b.id < a.id)))
         ORDER BY a.created, a.id",
    )?;
    let later: Vec<(String, String, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?;
    let mut notes = Vec::new();
    for (id, kind, name, version) in later {
        let renamed = renamed_version(&version, &id);
        tx.execute("UPDATE artifacts SET version = ?1 WHERE id = ?2", rusqlite::params![renamed, id])?;
        notes.push(format!(
            "registry migration 2: {kind} {name}@{version} named more than one artifact; the first registered keeps the name, {id} is now {name}@{renamed}"
        ));
    }
    Ok(notes)
}
