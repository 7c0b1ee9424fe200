//! Embed the part of mag1c's methane look-up table that the plugin needs
//! (wavelengths from 2000 nm on) as `OUT_DIR/ch4-lut.bin`: a little-endian
//! u32 count n, then n records of the wavelength (nm) and the natural log
//! of the 7 radiance spectra (f64 each).
//!
//! The table comes from `$GEOHOST_MAG1C_DIR` or `target/mag1c` at the
//! repository root, where scripts/fetch-mag1c.sh puts it.
use std::path::PathBuf;

const WAVELENGTHS: usize = 31_800;
const SPECTRA: usize = 7;
const FROM_NM: f64 = 2000.0;

fn main() {
    println!("cargo:rerun-if-env-changed=GEOHOST_MAG1C_DIR");
    let dir = match std::env::var_os("GEOHOST_MAG1C_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../target/mag1c"),
    };
    let (lut_path, hdr_path) = (dir.join("ch4.lut"), dir.join("ch4.hdr"));
    println!("cargo:rerun-if-changed={}", lut_path.display());
    println!("cargo:rerun-if-changed={}", hdr_path.display());
    let fail = |why: String| -> ! {
        eprintln!("ch4-rt: {why}\nch4-rt: fetch mag1c's table first: bash scripts/fetch-mag1c.sh (plugins/build.sh runs it), or set GEOHOST_MAG1C_DIR");
        std::process::exit(1)
    };
    let lut = std::fs::read(&lut_path).unwrap_or_else(|e| fail(format!("cannot read {}: {e}", lut_path.display())));
    let hdr = std::fs::read_to_string(&hdr_path).unwrap_or_else(|e| fail(format!("cannot read {}: {e}", hdr_path.display())));
    if lut.len() != WAVELENGTHS * SPECTRA * 8 {
        fail(format!("{} has {} bytes, not {WAVELENGTHS} × {SPECTRA} float64 values", lut_path.display(), lut.len()));
    }
    let list = hdr.split("wavelength = {").nth(1).and_then(|s| s.split('}').next()).unwrap_or_else(|| fail(format!("{} has no wavelength list", hdr_path.display())));
    let wavelengths: Vec<f64> = list.split(',').map(|v| v.trim().parse::<f64>().unwrap_or_else(|_| fail(format!("{}: wavelength {v:?} is not a number", hdr_path.display())))).collect();
    if wavelengths.len() != WAVELENGTHS || wavelengths.windows(2).any(|w| w[1] <= w[0]) {
        fail(format!("{} does not list {WAVELENGTHS} increasing wavelengths", hdr_path.display()));
    }
    let mut out = Vec::new();
    let keep: Vec<usize> = (0..WAVELENGTHS).filter(|&i| wavelengths[i] >= FROM_NM).collect();
    out.extend_from_slice(&(keep.len() as u32).to_le_bytes());
    for i in keep {
        out.extend_from_slice(&wavelengths[i].to_le_bytes());
        for s in 0..SPECTRA {
            // Band-sequential with one line of 7 samples: value (i, s) at i·7 + s.
            let at = (i * SPECTRA + s) * 8;
            let radiance = f64::from_le_bytes(lut[at..at + 8].try_into().unwrap());
            if !(radiance.is_finite() && radiance > 0.0) {
                fail(format!("{}: radiance {radiance} at {} nm is not positive", lut_path.display(), wavelengths[i]));
            }
            out.extend_from_slice(&radiance.ln().to_le_bytes());
        }
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ch4-lut.bin");
    std::fs::write(&dest, out).unwrap_or_else(|e| fail(format!("cannot write {}: {e}", dest.display())));
}
