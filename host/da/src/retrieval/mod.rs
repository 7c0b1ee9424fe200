//! The oracle of the L1→L2 retrieval row (methane from imaging
//! spectrometers): synthetic scenes, the classical matched filter and the
//! integrated-mass-enhancement (IME) emission estimate.
//!
//! - [`scene`]: a pixel grid with surface types and texture, a plume's
//!   enhancement map, radiance through a radiative-transfer simulator
//!   (plugins/ch4-rt) and instrument noise per band;
//! - [`matched_filter`]: α = (x − μ)ᵀC⁻¹t / (tᵀC⁻¹t) with t = k ⊙ μ, per
//!   scene or per detector column;
//! - [`ime`]: plume masks, IME and Q = U_eff · IME / L.
//!
//! Units: enhancements in ppm·m (a 1 m layer of pure methane at 0 °C and
//! 1 atm would be 10⁶ ppm·m), radiance in the simulator's units.

pub mod gauss_newton;
pub mod ime;
pub mod matched_filter;
pub mod scene;

/// kg of methane per m² in one ppm·m: 10⁻⁶ m × 44.615 mol/m³ (an ideal gas
/// at 0 °C and 101 325 Pa) × 0.016 04 kg/mol.
pub const KG_PER_M2_PER_PPM_M: f64 = 1e-6 * 44.615 * 0.016_04;

/// ppm·m in one ppb of column-average dry-air mole fraction: the dry-air
/// column of 101 325 Pa (p / (g · M_air) = 356 700 mol/m²) over 44.615 mol/m³
/// per metre, times 10⁻³ ppm per ppb.
pub const PPM_M_PER_PPB: f64 = 101_325.0 / (9.806_65 * 0.028_964_4) / 44.615 * 1e-3;
