//! The registry's trust boundary, attacked through the real binary on real
//! SQLite files: bundles that try to shadow frozen names, ambiguous
//! references, signed and tampered bundles, oversized entries and a
//! corrupt database.

use crate::common::{geohost, plugin, repo_root, stderr, stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn reg(home: &Path, args: &[&str]) -> Output {
    geohost(home).arg("registry").args(args).output().unwrap()
}

fn reg_json(home: &Path, args: &[&str]) -> Value {
    let out = reg(home, &[args, &["--json"]].concat());
    assert!(out.status.success(), "registry {args:?} failed:\n{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn refused(home: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = reg(home, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Everything a registry holds on disk: rows (as `list` shows them) and
/// the files under objects/, so "unchanged" is checked on both.
fn snapshot(home: &Path) -> (Value, Vec<PathBuf>) {
    let list = reg_json(home, &["list"]);
    let mut files: Vec<PathBuf> = walk(&home.join("registry/objects"));
    files.sort();
    (list, files)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// The attack of the issue: a weakened copy of the step-2 contract under
/// the same name and version, registered elsewhere, exported and
/// imported where the real one is registered.
#[test]
fn a_bundle_cannot_shadow_a_registered_contract() {
    let real = std::fs::read_to_string(repo_root().join("contracts/lorenz96-step2.toml")).unwrap();
    let weak = real.replace("min = 0.7, max = 1.3", "min = 0.0, max = 100.0");
    assert_ne!(real, weak, "the weakening edit applies");
    let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let add = |home: &Path, file: &str| reg_json(home, &["add", file, "--kind", "contract", "--name", "lorenz96-step2", "--version", "1.0.0"]);
    let real_id = add(here.path(), &write(&here.path().join("real.toml"), &real))["id"].as_str().unwrap().to_string();
    add(there.path(), &write(&there.path().join("weak.toml"), &weak));
    let bundle = there.path().join("weak.tar").display().to_string();
    reg_json(there.path(), &["export", &bundle]);

    let before = snapshot(here.path());
    let err = refused(here.path(), &["import", &bundle], &["refused, nothing was imported", "contract lorenz96-step2@1.0.0", &real_id, "cannot be taken over"]);
    assert!(!err.contains("--rename-conflicts keeps"), "no override is offered for a contract: {err}");
    refused(here.path(), &["import", &bundle, "--rename-conflicts"], &["contract lorenz96-step2@1.0.0"]);
    assert_eq!(snapshot(here.path()), before, "a refused import leaves rows and blobs as they were");
    assert_eq!(reg_json(here.path(), &["show", "lorenz96-step2@1.0.0"])["id"], real_id.as_str());
    // Registering the weakened copy locally is refused as well.
    refused(
        here.path(),
        &["add", &write(&here.path().join("weak.toml"), &weak), "--kind", "contract", "--name", "lorenz96-step2", "--version", "1.0.0"],
        &["a registered contract cannot change"],
    );
}

#[test]
fn a_conflicting_plugin_is_refused_unless_kept_under_another_name() {
    let (here, there) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let add = |home: &Path, path: &Path| {
        reg_json(home, &["add", path.to_str().unwrap(), "--kind", "plugin", "--name", "lorenz96", "--version", "0.1.0"])["id"].as_str().unwrap().to_string()
    };
    let original = add(here.path(), &plugin("lorenz96"));
    // Other bytes claiming the same plugin release.
    let other = add(there.path(), &plugin("lorenz63"));
    let bundle = there.path().join("b.tar").display().to_string();
    reg_json(there.path(), &["export", &bundle, "--publisher", "someone else"]);

    let before = snapshot(here.path());
    refused(here.path(), &["import", &bundle], &["plugin lorenz96@0.1.0", &original, "--rename-conflicts keeps"]);
    assert_eq!(snapshot(here.path()), before);

    let report = reg_json(here.path(), &["import", &bundle, "--rename-conflicts"]);
    let kept = format!("0.1.0+{}", &other[7..19]);
    assert_eq!(report["renamed"][0][2], kept.as_str(), "{report}");
    assert_eq!(reg_json(here.path(), &["show", "lorenz96@0.1.0"])["id"], original.as_str(), "the original keeps its name");
    let imported = reg_json(here.path(), &["show", &format!("lorenz96@{kept}")]);
    assert_eq!(imported["id"], other.as_str());
    assert_eq!(imported["imported_from"][0]["bundle"], report["bundle"]);
    assert_eq!(imported["imported_from"][0]["verified"], false);
    assert!(imported["imported_from"][0]["publisher"].as_str().unwrap().starts_with("someone else, unsigned"), "{imported}");
    let text = stdout(&reg(here.path(), &["show", &other]));
    assert!(text.contains("imported from bundle") && text.contains("unverified"), "{text}");
    let lineage = stdout(&reg(here.path(), &["lineage", &other]));
    assert!(lineage.contains("imported from bundle"), "{lineage}");
    // Both are now called lorenz96: the bare name is ambiguous.
    refused(here.path(), &["show", "lorenz96"], &["`lorenz96` is ambiguous", &original, &other, "local", "imported from bundle"]);
}

#[test]
fn an_ambiguous_name_lists_its_candidates_until_one_supersedes_the_other() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let first = reg_json(h, &["add", &write(&h.join("a"), "one"), "--kind", "file", "--name", "notes"])["id"].as_str().unwrap().to_string();
    let second = reg_json(h, &["add", &write(&h.join("b"), "two"), "--kind", "file", "--name", "notes"])["id"].as_str().unwrap().to_string();
    refused(h, &["show", "notes"], &["`notes` is ambiguous; it names 2 artifacts", &first, &second, "registered 20", "supersede"]);
    reg_json(h, &["supersede", &first, &second]);
    assert_eq!(reg_json(h, &["show", "notes"])["id"], second.as_str(), "an explicit supersede picks the head");
}

/// A real bundle (a demo-sized run's output and its ancestry) signed with
/// a key made by `registry keygen`.
#[test]
fn signed_bundles_import_with_the_right_key_only() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = src.path();
    let file = write(&s.join("data.txt"), "a published dataset");
    let data = reg_json(s, &["add", &file, "--kind", "dataset", "--name", "published-data"])["id"].as_str().unwrap().to_string();
    let plugin_id = reg_json(s, &["add", plugin("obs-subset").to_str().unwrap(), "--kind", "plugin", "--name", "obs-subset", "--version", "0.1.0"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    reg_json(s, &["link", &data, "derived_from", &plugin_id]);
    let key = reg_json(s, &["keygen", s.join("alice").to_str().unwrap()]);
    let mallory = reg_json(s, &["keygen", s.join("mallory").to_str().unwrap()]);
    refused(s, &["keygen", s.join("alice").to_str().unwrap()], &["exists; not overwriting a key"]);
    let bundle = s.join("signed.tar");
    let exported = reg_json(s, &["export", bundle.to_str().unwrap(), &data, "--sign", s.join("alice.key").to_str().unwrap(), "--publisher", "alice"]);
    assert_eq!(exported["signed_by"], key["key_id"]);
    let (alice_pub, mallory_pub) = (s.join("alice.pub").display().to_string(), s.join("mallory.pub").display().to_string());

    let d = dst.path();
    refused(d, &["import", bundle.to_str().unwrap(), "--trust", &mallory_pub], &["signed by key", "not a trusted key"]);
    let report = reg_json(d, &["import", bundle.to_str().unwrap(), "--trust", &alice_pub]);
    assert_eq!((report["verified"].as_bool(), report["new_artifacts"].as_u64()), (Some(true), Some(2)));
    assert_eq!(report["publisher"], format!("key {}", key["key_id"].as_str().unwrap()).as_str());
    let shown = reg_json(d, &["show", &data]);
    assert_eq!(shown["imported_from"][0]["verified"], true);
    assert!(!mallory["key_id"].is_null());

    // A registry that trusts a key (trusted-keys/) refuses unsigned bundles.
    let third = tempfile::tempdir().unwrap();
    let t = third.path();
    std::fs::create_dir_all(t.join("registry/trusted-keys")).unwrap();
    std::fs::copy(&alice_pub, t.join("registry/trusted-keys/alice.pub")).unwrap();
    let unsigned = s.join("unsigned.tar");
    reg_json(s, &["export", unsigned.to_str().unwrap(), &data]);
    refused(t, &["import", unsigned.to_str().unwrap()], &["it is not signed", "trusts only signed bundles"]);

    // One changed byte anywhere is caught: in the manifest (the signature),
    // in a blob (its hash), and the import leaves nothing behind.
    let entries = read_tar(&bundle);
    let manifest = &entries.iter().find(|(n, _)| n == "manifest.json").unwrap().1;
    let at = String::from_utf8_lossy(manifest).find("published-data").unwrap();
    let mut tampered = entries.clone();
    for (name, bytes) in tampered.iter_mut() {
        if name == "manifest.json" {
            bytes[at] = b'P'; // still valid JSON, another name
        }
    }
    let bad_manifest = s.join("bad-manifest.tar");
    write_tar(&bad_manifest, &tampered);
    refused(t, &["import", bad_manifest.to_str().unwrap()], &["does not verify", "changed after signing"]);
    let mut tampered = entries.clone();
    let blob = tampered.iter_mut().find(|(n, _)| n.starts_with("objects/")).unwrap();
    blob.1[0] ^= 1;
    let bad_blob = s.join("bad-blob.tar");
    write_tar(&bad_blob, &tampered);
    refused(t, &["import", bad_blob.to_str().unwrap()], &["is corrupt (its bytes hash to"]);
    assert!(walk(&t.join("registry/objects")).is_empty(), "refused imports leave no blob and no staged file");
    assert_eq!(snapshot(d).0.as_array().unwrap().len(), 2, "the refused (wrong-key) import added nothing");
}

fn read_tar(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn write_tar(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    tar.finish().unwrap();
}

/// A bundle with one blob of `size` bytes (its id right) and a manifest
/// listing it.
fn big_bundle(dir: &Path, size: usize) -> PathBuf {
    let bytes = vec![7u8; size];
    let id = format!("blake3:{}", blake3::hash(&bytes).to_hex());
    let manifest = serde_json::json!({
        "format": "geohost-bundle/1",
        "artifacts": [{ "id": id, "kind": "dataset", "name": "big", "version": null, "size": size, "media_type": "application/octet-stream",
                        "created": "2026-12-01T00:00:00.000Z", "role": null, "step": null, "l_transition": null, "tags": [], "metadata": {} }],
        "edges": [],
    });
    let path = dir.join("big.tar");
    write_tar(&path, &[("manifest.json".into(), serde_json::to_vec(&manifest).unwrap()), (format!("objects/{}", &id[7..]), bytes)]);
    path
}

/// The peak resident memory (KiB) of `geohost registry ARGS`, measured by
/// a Python parent whose only child it is (getrusage of its children).
fn peak_rss_kib(home: &Path, args: &[&str]) -> (bool, u64) {
    let script = "import resource, subprocess, sys\n\
                  ok = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0\n\
                  print(int(ok), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_geohost"))
        .arg("registry")
        .args(args)
        .env("GEOHOST_REGISTRY", home.join("registry"))
        .output()
        .expect("python3 runs the measurement");
    let text = stdout(&out);
    let mut fields = text.split_whitespace();
    (fields.next() == Some("1"), fields.next().unwrap().parse().unwrap())
}

/// 256 MiB in one blob: over a 16 MiB cap it is refused from its header,
/// and under the cap it is streamed; either way the importer's memory
/// stays far below the blob's size.
#[test]
fn bundle_entries_are_capped_and_streamed_in_bounded_memory() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let size = 256 << 20;
    let bundle = big_bundle(h, size);
    let b = bundle.to_str().unwrap();
    refused(h, &["import", b, "--max-entry-mib", "16"], &["is 268435456 bytes, over the cap of 16777216 per blob", "--max-entry-mib"]);
    refused(h, &["import", b, "--max-total-mib", "16"], &["add up to more than the cap"]);
    let (ok, refused_peak) = peak_rss_kib(h, &["import", b, "--max-entry-mib", "16"]);
    assert!(!ok);
    let (ok, imported_peak) = peak_rss_kib(h, &["import", b]);
    assert!(ok, "the bundle imports under the default cap");
    // Measured 13.7-14.0 MiB in three runs, refused and imported alike;
    // reading the blob whole would take 256 MiB.
    eprintln!("peak RSS importing a 256 MiB blob: refused {refused_peak} KiB, imported {imported_peak} KiB");
    for peak in [refused_peak, imported_peak] {
        assert!(peak < 96 * 1024, "peak RSS {peak} KiB for a 256 MiB blob");
    }
    assert_eq!(reg_json(h, &["list"]).as_array().unwrap().len(), 1);
    assert!(reg(h, &["verify"]).status.success());
}

#[test]
fn a_corrupt_registry_database_is_named_with_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    reg_json(h, &["add", &write(&h.join("a"), "x"), "--kind", "file"]);
    std::fs::write(h.join("registry/registry.db"), vec![0x42u8; 8192]).unwrap();
    let _ = std::fs::remove_file(h.join("registry/registry.db-wal"));
    let _ = std::fs::remove_file(h.join("registry/registry.db-shm"));
    refused(h, &["list"], &[&format!("{}", h.join("registry/registry.db").display()), "is not a SQLite database", "restore it from a backup"]);
}

/// A registry written before plugin and contract names were unique, with
/// two artifacts under one plugin release: opening it migrates, keeps the
/// first under the name, renames the second and says so.
#[test]
fn the_uniqueness_migration_renames_and_reports_existing_duplicates() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let add = |path: PathBuf, name: &str| {
        reg_json(h, &["add", path.to_str().unwrap(), "--kind", "plugin", "--name", name, "--version", "0.1.0"])["id"].as_str().unwrap().to_string()
    };
    let first = add(plugin("lorenz96"), "lorenz96");
    let second = add(plugin("lorenz63"), "lorenz63");
    // Back to schema 1, where nothing stopped a second lorenz96@0.1.0.
    let db = rusqlite::Connection::open(h.join("registry/registry.db")).unwrap();
    db.execute_batch(&format!(
        "DROP INDEX artifacts_frozen_names; DROP TABLE imports; DROP TABLE secrets;
         UPDATE artifacts SET name = 'lorenz96', created = '2100-01-01T00:00:00.000Z' WHERE id = '{second}';
         PRAGMA user_version = 1;"
    ))
    .unwrap();
    drop(db);
    let out = reg(h, &["show", "lorenz96@0.1.0", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let renamed = format!("lorenz96@0.1.0+{}", &second[7..19]);
    assert!(
        stderr(&out).contains(&format!(
            "registry migration 2: plugin lorenz96@0.1.0 named more than one artifact; the first registered keeps the name, {second} is now {renamed}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(serde_json::from_str::<Value>(&stdout(&out)).unwrap()["id"], first.as_str());
    assert_eq!(reg_json(h, &["show", &renamed])["id"], second.as_str());
    assert!(stderr(&reg(h, &["list"])).is_empty(), "the migration runs once");
}

/// Every malformed bundle the import refuses, each with its own message,
/// and a registry left as it was: an unexpected entry, a symlink, a blob
/// twice, a blob the manifest does not list, a record whose size is not
/// its blob's.
#[test]
fn malformed_bundles_are_refused_each_for_its_own_reason() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bundle = big_bundle(h, 1000);
    let entries = read_tar(&bundle);
    reg_json(h, &["add", &write(&h.join("a"), "x"), "--kind", "file"]);
    let before = snapshot(h);
    let try_entries = |name: &str, entries: &[(String, Vec<u8>)], needles: &[&str]| {
        let path = h.join(name);
        write_tar(&path, entries);
        refused(h, &["import", path.to_str().unwrap()], needles);
        assert_eq!(snapshot(h), before, "{name}: a refused import changes nothing");
    };
    let extra = [entries.clone(), vec![("notes.txt".to_string(), b"hello".to_vec())]].concat();
    try_entries("extra.tar", &extra, &["unexpected entry `notes.txt`"]);
    let twice = [entries.clone(), vec![entries[1].clone()]].concat();
    try_entries("twice.tar", &twice, &["appears twice"]);
    let stray_bytes = b"a blob nobody listed".to_vec();
    let stray = [entries.clone(), vec![(format!("objects/{}", blake3::hash(&stray_bytes).to_hex()), stray_bytes)]].concat();
    try_entries("stray.tar", &stray, &["is not in the manifest"]);
    let mut manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
    manifest["artifacts"][0]["size"] = 999.into();
    let resized = vec![("manifest.json".to_string(), serde_json::to_vec(&manifest).unwrap()), entries[1].clone()];
    try_entries("resized.tar", &resized, &["says it is 999 bytes, its blob is 1000"]);

    // A symbolic link, not a regular file.
    let path = h.join("link.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, bytes) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice()).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    tar.append_link(&mut header, "objects/evil", "/etc/passwd").unwrap();
    tar.finish().unwrap();
    drop(tar);
    refused(h, &["import", path.to_str().unwrap()], &["entry `objects/evil` is not a regular file"]);
    assert_eq!(snapshot(h), before);
}

/// A registry whose database cannot be written, and one held locked by
/// another process: errors that name the file and say what to do.
#[test]
fn a_read_only_or_locked_registry_is_named_with_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    reg_json(h, &["add", &write(&h.join("a"), "x"), "--kind", "file"]);
    let db = h.join("registry/registry.db");

    // Locked: another connection holds a write transaction.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = reg(h, &["add", &write(&h.join("b"), "y"), "--kind", "file"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&db.display().to_string()) && err.contains("stayed locked by another process"), "{err}");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // Read-only: root ignores file permissions, so the database is opened
    // through a read-only bind of its directory where one can be made,
    // else through a chmod for a non-root user.
    let ro = h.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mounted = std::process::Command::new("mount").args(["--bind", "-o", "ro"]).arg(h.join("registry")).arg(&ro).status().is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping the read-only half: cannot bind-mount read-only here");
        return;
    }
    let out = geohost(h).args(["registry", "--registry"]).arg(&ro).args(["add", &write(&h.join("c"), "z"), "--kind", "file"]).output().unwrap();
    let _ = std::process::Command::new("umount").arg(&ro).status();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot be written") && err.contains("pass a writable --registry"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A contract that names its publishers accepts plugins imported from
/// bundles they signed, and refuses any other, naming the plugin, where it
/// came from and the keys it would accept.
#[test]
fn a_contract_accepts_only_plugins_its_publishers_signed() {
    let (publisher, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = publisher.path();
    let mut ids = Vec::new();
    for (name, version) in [("lorenz96", "0.1.0"), ("obs-subset", "0.1.0"), ("metrics-standard", "0.1.0")] {
        ids.push(
            reg_json(p, &["add", plugin(name).to_str().unwrap(), "--kind", "plugin", "--name", name, "--version", version])["id"].as_str().unwrap().to_string(),
        );
    }
    reg_json(p, &["keygen", p.join("alice").to_str().unwrap()]);
    let bob = reg_json(p, &["keygen", p.join("bob").to_str().unwrap()]);
    let bundle = p.join("plugins.tar");
    let alice_key = p.join("alice.key");
    let mut args = vec!["export", bundle.to_str().unwrap(), "--sign", alice_key.to_str().unwrap(), "--publisher", "alice"];
    args.extend(ids.iter().map(String::as_str));
    reg_json(p, &args);

    let h = host.path();
    let set = crate::common::lorenz96_set(h, 50, "[[method]]\nmethod = \"3dvar\"\nxB = 0.02\n");
    let contract = |name: &str, publishers: &str| {
        let text = format!(
            "name = \"{name}\"\nversion = \"1\"\ntask = \"signed plugins only\"\npublishers = [{publishers}]\n[carriers.input]\nname = \"obs\"\nshape = [40]\nunits = \"1\"\n[carriers.output]\nname = \"analysis_mean\"\nshape = [40]\nunits = \"1\"\n[reference]\nplugin_set = \"{}\"\n[splits]\nevaluate_after = 0.0\n[[metrics]]\ncomponent = \"{}\"\nconfig = {{ metrics = [\"rmse\"] }}\n",
            set.display(),
            plugin("metrics-standard").display()
        );
        write(&h.join(format!("{name}.toml")), &text)
    };
    let register = |file: &str| geohost(h).args(["bench", "register", "-q", file]).output().unwrap();
    let alice_pub = format!("\"{}\"", p.join("alice.pub").display());

    // Not imported at all: refused, nothing written.
    let out = register(&contract("signed", &alice_pub));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("metric component") && err.contains("is not in the registry") && err.contains("accepts plugins only from the publishers"), "{err}");

    // Imported from alice's signed bundle: accepted, by file or by key.
    reg_json(h, &["import", bundle.to_str().unwrap(), "--trust", p.join("alice.pub").to_str().unwrap()]);
    let out = register(&contract("signed", &alice_pub));
    assert!(out.status.success(), "{}", stderr(&out));
    let frozen = &reg_json(h, &["show", "signed@1"])["metadata"]["frozen"];
    assert_eq!(frozen["publishers"].as_array().unwrap().len(), 1);
    let base64 = std::fs::read_to_string(p.join("alice.pub")).unwrap().lines().nth(1).unwrap().to_string();
    let out = register(&contract("signed-by-key", &format!("\"{base64}\"")));
    assert!(out.status.success(), "{}", stderr(&out));

    // Bob did not sign them: refused, naming where they came from.
    let before = snapshot(h);
    let out = register(&contract("bob-only", &format!("\"{}\"", p.join("bob.pub").display())));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("came from imported from bundle") && err.contains("signature verified"), "{err}");
    assert!(err.contains(bob["key_id"].as_str().unwrap()), "the accepted keys are listed: {err}");
    assert_eq!(snapshot(h).0, before.0, "a refused contract leaves the registry as it was");
}
