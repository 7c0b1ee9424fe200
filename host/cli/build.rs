//! Embed the template of `geohost export posterior`
//! (plugins/dist/posterior-mdn.wasm) when plugins/build.sh has built it; a
//! geohost built before it embeds nothing and its `export posterior` says
//! so.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let template = manifest.join("../../plugins/dist/posterior-mdn.wasm");
    println!("cargo::rerun-if-changed={}", template.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("posterior-mdn.wasm");
    let bytes = std::fs::read(&template).unwrap_or_default();
    // Rewritten only when it changed, so an unbuilt template does not
    // rebuild geohost every time.
    if std::fs::read(&out).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(&out, bytes).expect("writing to OUT_DIR");
    }
}
