//! Embed the templates of `geohost export posterior` and `export emulator`
//! (plugins/dist/posterior-mdn.wasm, emulator-mlp.wasm) when
//! plugins/build.sh has built them; a geohost built before them embeds
//! nothing and its `export` says so.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    for name in ["posterior-mdn.wasm", "emulator-mlp.wasm"] {
        let template = manifest.join("../../plugins/dist").join(name);
        println!("cargo::rerun-if-changed={}", template.display());
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(name);
        let bytes = std::fs::read(&template).unwrap_or_default();
        // Rewritten only when it changed, so an unbuilt template does not
        // rebuild geohost every time.
        if std::fs::read(&out).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&out, bytes).expect("writing to OUT_DIR");
        }
    }
}
