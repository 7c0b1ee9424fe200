//! The lineage registry on a real SQLite file and blob store on disk,
//! driven through the real binary (and the library where a test needs
//! thousands of artifacts).

use crate::common::{geohost, lorenz96_set, plugin, stderr, stdout};
use geohost_registry::{NewArtifact, Registry};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const METHODS: &str = r#"
[[method]]
method = "oi"

[[method]]
method = "etkf"
N = 10
infl = 1.04
"#;

fn reg_cmd(home: &Path, args: &[&str]) -> Output {
    geohost(home).arg("registry").args(args).output().unwrap()
}

/// Run a registry command with --json and parse its output.
fn reg_json(home: &Path, args: &[&str]) -> Value {
    let out = reg_cmd(home, &[args, &["--json"]].concat());
    assert!(out.status.success(), "registry {args:?} failed:\n{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A small demo run registered into `home/registry`.
fn demo_run(home: &Path) {
    let set = lorenz96_set(home, 120, METHODS);
    let out = geohost(home).args(["run", "-q"]).arg(&set).arg("--out").arg(home.join("out")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn ids_of(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn id_by_name(home: &Path, name: &str) -> String {
    let list = reg_json(home, &["list", "--name", name]);
    list[0]["id"].as_str().unwrap_or_else(|| panic!("no artifact named {name}")).to_string()
}

#[test]
fn a_run_registers_plugins_set_and_outputs_with_lineage() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let all = reg_json(home.path(), &["list"]);
    let kinds: Vec<&str> = all.as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "plugin").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "plugin-set").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "dataset").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "run-output").count(), 2);

    let model_id = format!("blake3:{}", blake3::hash(&std::fs::read(plugin("lorenz96")).unwrap()).to_hex());
    let model = reg_json(home.path(), &["show", &model_id]);
    assert_eq!(model["name"], "lorenz96");
    assert_eq!(model["metadata"]["description"]["state_size"], 40);

    let etkf = reg_json(home.path(), &["list", "--role", "oracle"]);
    assert_eq!(etkf.as_array().unwrap().len(), 1);
    assert_eq!(etkf[0]["step"], 2);
    let baseline = reg_json(home.path(), &["list", "--role", "baseline", "--step", "2"]);
    assert_eq!(baseline[0]["name"].as_str().unwrap(), "set/OptInterp");

    let lineage = reg_json(home.path(), &["lineage", etkf[0]["id"].as_str().unwrap()]);
    let mut edges: Vec<(String, String)> =
        lineage["ancestors"].as_array().unwrap().iter().map(|e| (e["type"].as_str().unwrap().to_string(), e["dst"].as_str().unwrap().to_string())).collect();
    edges.sort();
    let set_id = id_by_name(home.path(), "set");
    let obs_id = id_by_name(home.path(), "obs-subset");
    let mut expected = vec![("derived_from".to_string(), model_id.clone()), ("derived_from".to_string(), obs_id), ("produced_by".to_string(), set_id)];
    expected.sort();
    assert_eq!(edges, expected);

    // The plugin's descendants are every output of the run, and DOT works.
    let down = reg_json(home.path(), &["lineage", &model_id]);
    assert_eq!(down["descendants"].as_array().unwrap().len(), 3);
    let dot = stdout(&reg_cmd(home.path(), &["lineage", &model_id, "--dot"]));
    assert!(dot.starts_with("digraph lineage {") && dot.contains("derived_from"), "{dot}");

    // Re-running identical inputs is recognised, whatever path names the
    // plugin-set and wherever the outputs go.
    let out = geohost(home.path()).current_dir(home.path()).args(["run", "-q", "./set.toml", "--out", "elsewhere"]).output().unwrap();
    assert!(stderr(&out).contains("identical inputs to an earlier run; its 3 outputs are identical"), "{}", stderr(&out));
    assert_eq!(reg_json(home.path(), &["list"]).as_array().unwrap().len(), 6);
}

#[test]
fn supersede_marks_exactly_the_downstream_stale_and_oracle_answers_in_one_call() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let h = home.path();
    // A "step 4" artifact validated against the step-2 ETKF output, and a
    // report derived from it.
    std::fs::write(h.join("step4.txt"), "emulator-based analysis").unwrap();
    std::fs::write(h.join("report.txt"), "report").unwrap();
    let step4 = reg_json(h, &["add", h.join("step4.txt").to_str().unwrap(), "--kind", "run-output", "--step", "4", "--name", "step4"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let report = reg_json(h, &["add", h.join("report.txt").to_str().unwrap(), "--kind", "report", "--name", "report"])["id"].as_str().unwrap().to_string();
    let etkf = id_by_name(h, "set/ETKF N=10 infl=1.04");
    assert!(reg_cmd(h, &["link", &step4, "validated_against", &etkf]).status.success());
    assert!(reg_cmd(h, &["link", &report, "derived_from", &step4]).status.success());

    let oracle = reg_json(h, &["oracle", &report]);
    assert_eq!(oracle["oracle"]["id"], etkf.as_str());
    let no_oracle = reg_cmd(h, &["oracle", &etkf]);
    assert!(!no_oracle.status.success() && stderr(&no_oracle).contains("not validated against an oracle"));

    // A new obs plugin version supersedes the old one: the truth, both
    // outputs, the step-4 artifact and the report go stale; the model
    // plugin and the plugin-set do not.
    let obs_old = id_by_name(h, "obs-subset");
    std::fs::write(h.join("obs-v2.wasm"), b"pretend this is obs-subset 0.2").unwrap();
    let obs_new = reg_json(h, &["add", h.join("obs-v2.wasm").to_str().unwrap(), "--kind", "plugin", "--name", "obs-subset", "--version", "0.2.0"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let result = reg_json(h, &["supersede", &obs_old, &obs_new]);
    let mut marked: Vec<String> = result["marked_stale"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    marked.sort();
    let mut expected = vec![id_by_name(h, "set/truth"), id_by_name(h, "set/OptInterp"), etkf.clone(), step4, report];
    expected.sort();
    assert_eq!(marked, expected);
    let stale = reg_json(h, &["stale"]);
    assert_eq!(stale.as_array().unwrap().len(), 5);
    assert!(stale.as_array().unwrap().iter().all(|s| s["caused_by"] == obs_old.as_str()));
    let listed_stale = reg_json(h, &["list", "--stale"]);
    assert_eq!(ids_of(&listed_stale), expected);
}

#[test]
fn short_ids_resolve_and_ambiguity_lists_the_candidates() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("registry");
    let mut reg = Registry::open(&dir).unwrap();
    let new = |i: usize| NewArtifact { kind: "file".into(), name: format!("f{i}"), media_type: "text/plain".into(), ..Default::default() };
    // Register until two ids share their first 4 hex digits.
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0..100_000)
        .find_map(|i| {
            let (id, _) = reg.add(format!("artifact {i}").as_bytes(), &new(i)).unwrap();
            let prefix = id[7..11].to_string();
            seen.insert(prefix.clone(), id.clone()).map(|other| (other, id))
        })
        .unwrap();
    let prefix = &a[7..11];
    let out = reg_cmd(home.path(), &["show", prefix]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("is ambiguous") && err.contains(&a) && err.contains(&b), "{err}");
    // A longer prefix, with or without `blake3:`, resolves.
    let unique = &a[..20];
    assert_eq!(reg_json(home.path(), &["show", unique])["id"], a.as_str());
    assert_eq!(reg_json(home.path(), &["show", &a[7..25]])["id"], a.as_str());
    let missing = reg_cmd(home.path(), &["show", "nosuchname"]);
    assert!(stderr(&missing).contains("no artifact matches `nosuchname`"));
}

/// A caller that needs a role (an emulator to export or run, a predictor
/// as a baseline) resolves a name among the artifacts with that role: the
/// submission `bench submit` registers under the exported component's own
/// name does not make the emulator of that name ambiguous (the demo's
/// second run stopped on that), while two emulators of one name still are
/// until one supersedes the other.
#[test]
fn a_name_shared_with_other_roles_resolves_to_the_one_artifact_with_the_role() {
    let home = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&home.path().join("registry")).unwrap();
    let artifact = |kind: &str, role: Option<&str>, version: Option<&str>| NewArtifact {
        kind: kind.into(),
        name: "rt-emulator".into(),
        version: version.map(Into::into),
        role: role.map(Into::into),
        media_type: "application/octet-stream".into(),
        ..Default::default()
    };
    let (weights, _) = reg.add(b"weights 1", &artifact("weights", Some("emulator"), None)).unwrap();
    let (submission, _) = reg.add(b"submitted component", &artifact("submission", None, Some("0.1.0"))).unwrap();
    let err = reg.resolve("rt-emulator").unwrap_err().to_string();
    assert!(err.contains("is ambiguous") && err.contains(&weights) && err.contains(&submission), "{err}");
    let with_role = |reference: &str, role: &str| reg.get_with_role(reference, role).map(|a| a.id).map_err(|e| e.to_string());
    assert_eq!(with_role("rt-emulator", "emulator").unwrap(), weights);
    // One match without the role, by name@version or by id prefix: refused,
    // naming what it is instead.
    for reference in ["rt-emulator@0.1.0", &submission[7..19]] {
        let err = with_role(reference, "emulator").unwrap_err();
        assert!(
            err.contains(&format!("`{reference}` names {submission} (rt-emulator, a submission with role none), not an artifact with role `emulator`"))
                && err.contains("geohost registry list --role emulator"),
            "{err}"
        );
    }
    // No artifact of the name has the role: still ambiguous, listing all.
    let err = with_role("rt-emulator", "predictor").unwrap_err();
    assert!(err.contains("is ambiguous") && err.contains(&weights) && err.contains(&submission), "{err}");

    let (retrained, _) = reg.add(b"weights 2", &artifact("weights", Some("emulator"), None)).unwrap();
    let err = reg.get_with_role("rt-emulator", "emulator").unwrap_err().to_string();
    assert!(err.contains("is ambiguous") && err.contains(&weights) && err.contains(&retrained) && err.contains("geohost registry supersede"), "{err}");
    reg.supersede(&weights, &retrained).unwrap();
    assert_eq!(reg.get_with_role("rt-emulator", "emulator").unwrap().id, retrained);
}

/// A registry is created private (it may hold the secret seeds of hidden
/// experiments), and secret seeds are refused by one that its group or
/// others can enter; revealed seeds, public already, are not.
#[test]
fn secret_seeds_are_kept_only_in_a_private_registry() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("nested").join("registry");
    let mut reg = Registry::open(&dir).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let contract = |reg: &mut Registry, text: &[u8]| {
        let new = NewArtifact { kind: "contract".into(), name: "c".into(), media_type: "application/toml".into(), ..Default::default() };
        reg.add(text, &new).unwrap().0
    };
    let first = contract(&mut reg, b"contract 1");
    reg.add_secrets(&first, &[[1u8; 32]]).unwrap();
    assert_eq!(reg.secrets(&first).unwrap(), vec![[1u8; 32]]);

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let second = contract(&mut reg, b"contract 2");
    let err = reg.add_secrets(&second, &[[2u8; 32]]).unwrap_err().to_string();
    assert!(err.contains(&dir.display().to_string()) && err.contains("mode 750") && err.contains("chmod 700"), "{err}");
    assert!(reg.secrets(&second).unwrap().is_empty(), "refused seeds were kept");
    // No seeds (a public contract), or revealed ones: nothing secret.
    reg.add_secrets(&second, &[]).unwrap();
    reg.add_revealed_seeds(&second, &[[2u8; 32]]).unwrap();
    assert_eq!(reg.secrets(&second).unwrap(), vec![[2u8; 32]]);
}

#[test]
fn a_flipped_byte_is_caught_by_verify_and_refused_on_load() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let h = home.path();
    assert!(reg_cmd(h, &["verify"]).status.success());
    let model_id = id_by_name(h, "lorenz96");
    let hex = &model_id[7..];
    let blob = h.join("registry/objects/blake3").join(&hex[..2]).join(&hex[2..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();

    let out = reg_cmd(h, &["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["corrupt"], serde_json::json!([model_id]));

    let cat = reg_cmd(h, &["cat", &model_id, "-o", h.join("x.wasm").to_str().unwrap()]);
    assert!(!cat.status.success() && stderr(&cat).contains("integrity error") && stderr(&cat).contains("corrupt"), "{}", stderr(&cat));

    // A plugin-set naming the model by registry name refuses the corrupt blob.
    let set = std::fs::read_to_string(h.join("set.toml")).unwrap();
    let by_name = set.replace(&format!("plugin = \"{}\"", plugin("lorenz96").display()), "artifact = \"lorenz96@0.1.0\"");
    assert_ne!(set, by_name);
    std::fs::write(h.join("by-name.toml"), by_name).unwrap();
    let out = geohost(h).args(["run", "-q"]).arg(h.join("by-name.toml")).arg("--out").arg(h.join("o2")).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("integrity error"), "{}", stderr(&out));
}

#[test]
fn plugins_can_be_named_by_registry_id_or_name() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let h = home.path();
    let set = std::fs::read_to_string(h.join("set.toml")).unwrap();
    let obs_id = id_by_name(h, "obs-subset");
    let text = set
        .replace(&format!("plugin = \"{}\"", plugin("lorenz96").display()), "artifact = \"lorenz96@0.1.0\"")
        .replace(&format!("plugin = \"{}\"", plugin("obs-subset").display()), &format!("artifact = \"{}\"", &obs_id[..20]));
    std::fs::write(h.join("by-id.toml"), text).unwrap();
    let out = geohost(h).args(["run", "--json"]).arg(h.join("by-id.toml")).arg("--out").arg(h.join("o3")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);

    let both = set.replacen("plugin = ", "artifact = \"x\"\nplugin = ", 1);
    std::fs::write(h.join("both.toml"), both).unwrap();
    let out = geohost(h).args(["run", "-q"]).arg(h.join("both.toml")).output().unwrap();
    assert!(stderr(&out).contains("[model] needs exactly one of `plugin`"), "{}", stderr(&out));
}

#[test]
fn read_commands_on_a_missing_registry_say_how_to_make_one() {
    let home = tempfile::tempdir().unwrap();
    let out = reg_cmd(home.path(), &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no registry at") && stderr(&out).contains("--registry"), "{}", stderr(&out));
    assert!(!home.path().join("registry").exists(), "a read command must not create a registry");
}

#[test]
fn export_then_import_into_an_empty_registry_reproduces_ids_and_lineage() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let h = home.path();
    let bundle = h.join("bundle.tar");
    let etkf = id_by_name(h, "set/ETKF N=10 infl=1.04");
    let exported = reg_json(h, &["export", bundle.to_str().unwrap(), &etkf]);
    assert_eq!(exported["artifacts"].as_array().unwrap().len(), 4, "the output and its three ancestors");

    let other = tempfile::tempdir().unwrap();
    let imported = reg_json(other.path(), &["import", bundle.to_str().unwrap()]);
    assert_eq!((imported["artifacts"].as_u64(), imported["new_artifacts"].as_u64(), imported["edges"].as_u64()), (Some(4), Some(4), Some(3)));
    assert_eq!(
        ids_of(&reg_json(other.path(), &["list"])),
        ids_of(&exported["artifacts"].as_array().unwrap().iter().map(|id| serde_json::json!({ "id": id })).collect())
    );
    assert_eq!(reg_json(other.path(), &["lineage", &etkf])["ancestors"], reg_json(h, &["lineage", &etkf])["ancestors"]);
    assert!(reg_cmd(other.path(), &["verify"]).status.success());

    // A tampered bundle is refused whole.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 2048;
    bytes[at] ^= 0xff;
    std::fs::write(h.join("bad.tar"), bytes).unwrap();
    let third = tempfile::tempdir().unwrap();
    let out = reg_cmd(third.path(), &["import", h.join("bad.tar").to_str().unwrap()]);
    assert!(!out.status.success(), "a tampered bundle imported");
    let list = reg_cmd(third.path(), &["list", "--json"]);
    assert!(stdout(&list).trim() == "[]" || !list.status.success());
}

#[test]
fn gc_removes_what_no_root_reaches() {
    let home = tempfile::tempdir().unwrap();
    demo_run(home.path());
    let h = home.path();
    std::fs::write(h.join("junk.txt"), "unreferenced").unwrap();
    let junk = reg_json(h, &["add", h.join("junk.txt").to_str().unwrap(), "--kind", "file"])["id"].as_str().unwrap().to_string();
    let refused = reg_cmd(h, &["gc"]);
    assert!(stderr(&refused).contains("no named roots"), "{}", stderr(&refused));
    let etkf = id_by_name(h, "set/ETKF N=10 infl=1.04");
    assert!(reg_cmd(h, &["root", "oracle", &etkf]).status.success());
    let dry = reg_json(h, &["gc", "--dry-run"]);
    let doomed: Vec<&str> = dry["removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(doomed.contains(&junk.as_str()) && !doomed.contains(&etkf.as_str()));
    assert_eq!(reg_json(h, &["list"]).as_array().unwrap().len(), 7, "dry run removes nothing");
    // Leftovers of writers killed mid-write: an old one goes, a fresh one
    // (possibly a live writer's) stays.
    let shard = h.join("registry/objects/blake3/00");
    std::fs::create_dir_all(&shard).unwrap();
    let (old_tmp, new_tmp) = (shard.join(".tmp-999-0"), shard.join(".tmp-999-1"));
    std::fs::write(&old_tmp, "partial").unwrap();
    std::fs::write(&new_tmp, "partial").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&old_tmp).unwrap().set_modified(hour_ago).unwrap();
    reg_json(h, &["gc"]);
    assert!(!old_tmp.exists() && new_tmp.exists());
    let left = ids_of(&reg_json(h, &["list"]));
    assert_eq!(left.len(), 4, "the rooted output and its three ancestors stay: {left:?}");
    assert!(reg_cmd(h, &["verify"]).status.success());
}

#[test]
fn eight_processes_registering_at_once_all_succeed() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("shared.txt"), "everyone adds this").unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let file = h.join(format!("own{i}.txt"));
            std::fs::write(&file, format!("process {i}")).unwrap();
            // Each process opens the (fresh) registry, migrates, adds two files.
            let script = format!(
                "{bin} registry add {own} --kind file && {bin} registry add {shared} --kind file",
                bin = env!("CARGO_BIN_EXE_geohost"),
                own = file.display(),
                shared = h.join("shared.txt").display()
            );
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("GEOHOST_REGISTRY", h.join("registry"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(reg_json(h, &["list"]).as_array().unwrap().len(), 9);
    assert!(reg_cmd(h, &["verify"]).status.success());
}

#[test]
fn a_writer_killed_mid_registration_leaves_a_consistent_registry() {
    use std::os::unix::process::CommandExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let files = h.join("files");
    std::fs::create_dir(&files).unwrap();
    for i in 0..400 {
        // Large enough that a kill often lands inside a blob write.
        std::fs::write(files.join(format!("{i:04}.bin")), vec![(i % 251) as u8; 256 * 1024 + i]).unwrap();
    }
    let script = format!("for f in {}/*.bin; do {} registry add \"$f\" --kind file || exit 1; done", files.display(), env!("CARGO_BIN_EXE_geohost"));
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("GEOHOST_REGISTRY", h.join("registry"))
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // Let it register some, then SIGKILL the whole process group.
    let db = h.join("registry/registry.db");
    let start = std::time::Instant::now();
    while start.elapsed().as_secs() < 60 {
        if db.exists() && Registry::open_existing(&h.join("registry")).map(|r| r.list(&Default::default()).map(|l| l.len()).unwrap_or(0)).unwrap_or(0) >= 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(137));
    unsafe { libc_kill(-(child.id() as i32), 9) };
    let _ = child.wait();

    let verify = reg_cmd(h, &["verify", "--json"]);
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    let report: Value = serde_json::from_str(&stdout(&verify)).unwrap();
    assert!(report["checked"].as_u64().unwrap() >= 5);
    // Every row names an intact blob; and the registry still takes writes.
    std::fs::write(h.join("after.txt"), "after the crash").unwrap();
    assert!(reg_cmd(h, &["add", h.join("after.txt").to_str().unwrap(), "--kind", "file"]).status.success());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn bad_registry_input_gets_a_clear_error_and_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("a.txt"), "a").unwrap();
    let a = h.join("a.txt");
    let a = a.to_str().unwrap();
    let fails = |args: &[&str], needle: &str| {
        let out = reg_cmd(h, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    fails(&["add", a, "--kind", "file", "--role", "oracel"], "role `oracel` is not one of: oracle, emulator");
    fails(&["add", a, "--kind", "thing"], "kind `thing` is not one of");
    fails(&["add", a, "--kind", "file", "--transition", "L4_L5"], "l_transition `L4_L5` is not one of");
    fails(&["add", a, "--kind", "file", "--step", "9"], "step must be between 1 and 6");
    fails(&["add", h.join("nope.txt").to_str().unwrap(), "--kind", "file"], "cannot read");
    assert_eq!(reg_json(h, &["list"]).as_array().unwrap().len(), 0, "failed adds registered nothing");

    let id = reg_json(h, &["add", a, "--kind", "file"])["id"].as_str().unwrap().to_string();
    fails(&["link", &id, "inspired_by", &id], "edge type `inspired_by` is not one of");
    fails(&["link", &id, "derived_from", "blake3:0000"], "no artifact matches `blake3:0000`");
    fails(&["supersede", &id, &id], "cannot supersede itself");
    std::fs::write(h.join("not-a-bundle.tar"), "hello").unwrap();
    fails(&["import", h.join("not-a-bundle.tar").to_str().unwrap()], "not-a-bundle.tar");
    assert_eq!(reg_json(h, &["list"]).as_array().unwrap().len(), 1);
}
