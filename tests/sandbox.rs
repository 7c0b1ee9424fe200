//! The sandbox against real compiled components: the reference plugins,
//! and small hostile plugins that trap, spin, hog memory, recurse, lie
//! about shapes, or were built for the wrong world, version or imports.

use crate::common::plugin;
use geohost_da::models::lorenz96::Lorenz96;
use geohost_sandbox::model::{check_pair, ForwardModel, ObsOperator};
use geohost_sandbox::{Limits, Runtime, SandboxError, WasmForward, WasmObs, World};
use nalgebra::DMatrix;
use std::path::Path;

fn runtime(limits: Limits) -> Runtime {
    Runtime::new(limits, None).unwrap()
}

fn hostile(runtime: &Runtime, mode: &str) -> WasmForward {
    let loaded = runtime.load("hostile", &plugin("testkit-hostile"), World::ForwardModel).unwrap();
    WasmForward::new(runtime, &loaded, &format!(r#"{{"mode": "{mode}", "size": 4}}"#)).unwrap()
}

/// Advance a hostile plugin once and return the sandbox error.
fn advance_error(runtime: &Runtime, mode: &str) -> SandboxError {
    let mut model = hostile(runtime, mode);
    let mut e = DMatrix::from_element(4, 3, 1.0);
    let err = model.advance(&mut e, 0.0, 0.1).expect_err("the hostile plugin should fail");
    err.downcast::<SandboxError>().expect("a sandbox error")
}

fn load_error(path: &Path, world: World) -> SandboxError {
    match runtime(Limits::default()).load("p", path, world) {
        Ok(_) => panic!("{} loaded as {world:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn wasm_lorenz96_equals_native_bit_for_bit() {
    let rt = runtime(Limits::default());
    let loaded = rt.load("lorenz96", &plugin("lorenz96"), World::ForwardModel).unwrap();
    let mut wasm = WasmForward::new(&rt, &loaded, r#"{"F": 8.0, "size": 40}"#).unwrap();
    let mut native = Lorenz96::new(40, 8.0);
    let mut a = DMatrix::from_fn(40, 10, |i, j| ((i * 7 + j * 13) % 17) as f64 * 0.37 - 2.0);
    let mut b = a.clone();
    for step in 0..500 {
        wasm.advance(&mut a, step as f64 * 0.05, 0.05).unwrap();
        native.advance(&mut b, step as f64 * 0.05, 0.05).unwrap();
    }
    let differing = a.iter().zip(b.iter()).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differing, 0, "{differing} values differ after 500 steps");
    assert!(a.amax() > 1.0, "the trajectory should have left the origin");
}

#[test]
fn plugins_describe_themselves_and_check_their_config() {
    let rt = runtime(Limits::default());
    let loaded = rt.load("lorenz63", &plugin("lorenz63"), World::ForwardModel).unwrap();
    let model = WasmForward::new(&rt, &loaded, r#"{"rho": 28.0}"#).unwrap();
    assert_eq!(model.info().state_size, 3);
    assert_eq!(model.info().default_dt, 0.01);
    assert_eq!(model.info().parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["sigma", "rho", "beta"]);

    let err = WasmForward::new(&rt, &loaded, r#"{"rhoo": 28.0}"#).err().unwrap();
    assert!(matches!(err, SandboxError::Config { .. }));
    let msg = err.to_string();
    assert!(msg.contains("unknown config key `rhoo`") && msg.contains("sigma, rho, beta"), "{msg}");

    let obs = rt.load("obs", &plugin("obs-subset"), World::ObsOperator).unwrap();
    let op = WasmObs::new(&rt, &obs, r#"{"state_size": 40, "select": "every", "every": 4, "offset": 1, "variance": 0.5}"#).unwrap();
    assert_eq!(op.info().obs_size, 10);
    assert_eq!(op.info().locations[..3], [1.0, 5.0, 9.0]);
    assert_eq!(op.info().noise_variance, vec![0.5; 10]);
    let err = WasmObs::new(&rt, &obs, r#"{"state_size": 40, "select": "indices", "indices": [3, 40]}"#).err().unwrap();
    assert!(err.to_string().contains("index 40 is outside the state (size 40)"), "{err}");
}

#[test]
fn observation_operator_observes_the_selected_variables() {
    let rt = runtime(Limits::default());
    let obs = rt.load("obs", &plugin("obs-subset"), World::ObsOperator).unwrap();
    let mut op = WasmObs::new(&rt, &obs, r#"{"state_size": 6, "select": "indices", "indices": [5, 0, 2]}"#).unwrap();
    let x = DMatrix::from_fn(6, 2, |i, j| (10 * j + i) as f64);
    let y = op.observe(&x, 0.0).unwrap();
    assert_eq!(y, DMatrix::from_column_slice(3, 2, &[5.0, 0.0, 2.0, 15.0, 10.0, 12.0]));
}

#[test]
fn a_shape_mismatch_between_model_and_operator_is_refused() {
    let rt = runtime(Limits::default());
    let model = rt.load("model", &plugin("lorenz96"), World::ForwardModel).unwrap();
    let model = WasmForward::new(&rt, &model, r#"{"size": 40}"#).unwrap();
    let obs = rt.load("obs", &plugin("obs-subset"), World::ObsOperator).unwrap();
    let op = WasmObs::new(&rt, &obs, r#"{"state_size": 36}"#).unwrap();
    let msg = check_pair(model.info(), op.info()).unwrap_err().to_string();
    assert!(msg.contains("state size 40") && msg.contains("expects 36"), "{msg}");

    // An ensemble of the wrong size is refused before it reaches the plugin.
    let mut model = model;
    let err = model.advance(&mut DMatrix::zeros(39, 3), 0.0, 0.05).unwrap_err().to_string();
    assert!(err.contains("shape mismatch") && err.contains("state size 39"), "{err}");
}

#[test]
fn malformed_wasm_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").unwrap();
    let err = load_error(&garbage, World::ForwardModel);
    assert!(matches!(err, SandboxError::Malformed { .. }));
    assert!(err.to_string().contains("magic bytes"), "{err}");

    // A core module (the `(module)` binary) is not a component.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).unwrap();
    let msg = load_error(&core, World::ForwardModel).to_string();
    assert!(msg.contains("core wasm module, not a component"), "{msg}");

    // A real component cut in half.
    let bytes = std::fs::read(plugin("lorenz96")).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&truncated, World::ForwardModel);
    assert!(matches!(err, SandboxError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("truncated.wasm"), "{err}");

    let missing = load_error(&dir.path().join("nope.wasm"), World::ForwardModel);
    assert!(matches!(missing, SandboxError::Read { .. }), "{missing}");
}

#[test]
fn a_component_of_the_wrong_world_is_refused() {
    let err = load_error(&plugin("obs-subset"), World::ForwardModel);
    let msg = err.to_string();
    assert!(matches!(err, SandboxError::WrongWorld { .. }));
    assert!(msg.contains("is a obs-operator plugin, not a forward-model plugin"), "{msg}");
    let msg = load_error(&plugin("lorenz96"), World::ObsOperator).to_string();
    assert!(msg.contains("is a forward-model plugin, not a obs-operator plugin"), "{msg}");
}

#[test]
fn a_component_of_another_contract_version_is_refused() {
    let err = load_error(&plugin("testkit-future"), World::ForwardModel);
    let msg = err.to_string();
    assert!(matches!(err, SandboxError::WrongVersion { .. }), "{msg}");
    assert!(msg.contains("built for geohost:plugin@0.2.0") && msg.contains("accepts geohost:plugin@0.1.x (up to 0.1.1)"), "{msg}");
}

#[test]
fn a_component_importing_outside_the_allowlist_is_refused() {
    let err = load_error(&plugin("testkit-rogue"), World::ForwardModel);
    let msg = err.to_string();
    assert!(matches!(err, SandboxError::ForbiddenImport { .. }), "{msg}");
    assert!(msg.contains("imports `wasi:cli/environment@"), "{msg}");
}

#[test]
fn a_trapping_plugin_gives_a_trap_error_and_is_poisoned() {
    let rt = runtime(Limits::default());
    let mut model = hostile(&rt, "trap");
    let mut e = DMatrix::from_element(4, 2, 1.0);
    let err = model.advance(&mut e, 0.0, 0.1).unwrap_err().downcast::<SandboxError>().unwrap();
    assert!(matches!(err, SandboxError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("plugin `hostile` trapped in `advance`"), "{err}");
    assert_eq!(e, DMatrix::from_element(4, 2, 1.0), "a failed call leaves the ensemble as it was");
    // The instance is discarded: a second call is refused, not re-entered.
    let again = model.advance(&mut e, 0.0, 0.1).unwrap_err().downcast::<SandboxError>().unwrap();
    assert!(matches!(again, SandboxError::Poisoned { .. }), "{again}");
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let err = advance_error(&runtime(Limits { fuel: 50_000_000, ..Limits::default() }), "spin");
    assert!(matches!(err, SandboxError::OutOfFuel { fuel: 50_000_000, .. }), "{err}");
    assert!(err.to_string().contains("ran out of fuel"), "{err}");
}

#[test]
fn an_endless_loop_without_fuel_metering_hits_the_deadline() {
    let limits = Limits { fuel: 0, deadline_ms: 200, ..Limits::default() };
    let start = std::time::Instant::now();
    let err = advance_error(&runtime(limits), "spin");
    assert!(matches!(err, SandboxError::Deadline { deadline_ms: 200, .. }), "{err}");
    assert!(err.to_string().contains("wall-clock deadline of 200 ms"), "{err}");
    assert!(start.elapsed().as_secs() < 30, "the deadline did not interrupt the plugin");
    assert!(start.elapsed() >= std::time::Duration::from_millis(200), "the plugin was stopped before its deadline");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let err = advance_error(&runtime(Limits { memory_mib: 64, ..Limits::default() }), "hog");
    assert!(matches!(err, SandboxError::Memory { limit_mib: 64, .. }), "{err}");
    assert!(err.to_string().contains("memory limit of 64 MiB"), "{err}");
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let err = advance_error(&runtime(Limits { stack_kib: 256, ..Limits::default() }), "recurse");
    assert!(matches!(err, SandboxError::StackOverflow { stack_kib: 256, .. }), "{err}");
}

#[test]
fn wrong_output_shape_nan_and_error_results_are_caught() {
    let rt = runtime(Limits::default());
    let short = advance_error(&rt, "short");
    assert!(matches!(short, SandboxError::Shape { .. }), "{short}");
    assert!(short.to_string().contains("expected 3 members × 4 values"), "{short}");
    let nan = advance_error(&rt, "nan");
    assert!(matches!(nan, SandboxError::NonFinite { member: 0, index: 0, .. }), "{nan}");
    let returned = advance_error(&rt, "error");
    assert!(returned.to_string().contains("returned an error from `advance`: deliberate error result"), "{returned}");

    let loaded = rt.load("hostile", &plugin("testkit-hostile"), World::ForwardModel).unwrap();
    let init = WasmForward::new(&rt, &loaded, r#"{"mode": "init-error"}"#).err().unwrap();
    assert!(matches!(init, SandboxError::Config { .. }) && init.to_string().contains("mode is init-error"), "{init}");
}

#[test]
fn nan_canonicalization_hides_the_hardware_nan_sign() {
    // A plugin that reads the sign of a NaN it made: the canonical NaN is
    // positive; x86's 0/0 is the negative "default NaN".
    let sign = |limits: Limits| {
        let mut model = hostile(&runtime(limits), "nan-sign");
        let mut e = DMatrix::from_element(4, 2, 0.0);
        model.advance(&mut e, 0.0, 0.1).unwrap();
        e[(0, 0)]
    };
    assert!(Limits::default().nan_canonicalization);
    assert_eq!(sign(Limits::default()), 1.0);
    let raw = sign(Limits { nan_canonicalization: false, ..Limits::default() });
    #[cfg(target_arch = "x86_64")]
    assert_eq!(raw, -1.0, "with canonicalisation off the hardware's NaN should show");
    assert!(raw.abs() == 1.0);
}

#[test]
fn a_well_behaved_call_after_a_failed_plugin_still_works() {
    // One plugin's failure does not affect another instance or the runtime.
    let rt = runtime(Limits { fuel: 10_000_000, ..Limits::default() });
    let _ = advance_error(&rt, "spin");
    let mut ok = hostile(&rt, "ok");
    let mut e = DMatrix::from_element(4, 2, 2.5);
    ok.advance(&mut e, 0.0, 0.1).unwrap();
    assert_eq!(e, DMatrix::from_element(4, 2, 2.5));
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(Limits::default(), Some(dir.path().to_path_buf())).unwrap();
    let first = rt.load("m", &plugin("lorenz63"), World::ForwardModel).unwrap();
    let second = rt.load("m", &plugin("lorenz63"), World::ForwardModel).unwrap();
    assert!(!first.from_cache && second.from_cache);
    assert_eq!(first.hash, second.hash);
    assert_eq!(first.hash, blake3::hash(&std::fs::read(plugin("lorenz63")).unwrap()));
    // A corrupted cache entry (one flipped byte) is recompiled, not trusted.
    for entry in std::fs::read_dir(dir.path().join("compiled")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = rt.load("m", &plugin("lorenz63"), World::ForwardModel).unwrap();
    assert!(!third.from_cache);
    let mut model = WasmForward::new(&rt, &third, "{}").unwrap();
    model.advance(&mut DMatrix::from_element(3, 1, 1.0), 0.0, 0.01).unwrap();
}
