//! Emission rate from an enhancement map by the integrated mass
//! enhancement (Frankenberg et al. 2016; Varon et al. 2018):
//!
//!   IME = Σ_{i ∈ mask} ΔΩ_i A_i    [kg],   L = √(Σ_{i ∈ mask} A_i)   [m],
//!   Q   = U_eff · IME / L           [kg/s],
//!
//! with ΔΩ the enhancement as a mass per area and the mask the plume's
//! connected pixels above a threshold. U_eff is not the wind speed: it
//! folds in how much of the plume the mask keeps, and is calibrated on
//! scenes with known emission (here noise-free truth maps, as LES plumes
//! calibrate it in the literature).

use super::KG_PER_M2_PER_PPM_M;

/// A plume's integrated mass enhancement over its mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ime {
    /// kg of methane above background in the mask.
    pub mass: f64,
    /// √(mask area), m.
    pub length: f64,
    /// Pixels in the mask.
    pub pixels: usize,
}

impl Ime {
    /// Q = U_eff · IME / L in kg/s; zero for an empty mask (no plume found).
    pub fn emission_rate(&self, u_eff: f64) -> f64 {
        if self.pixels == 0 {
            0.0
        } else {
            u_eff * self.mass / self.length
        }
    }
}

/// The plume's mask on an `nx × ny` map of enhancements (ppm·m, row-major,
/// row j = north–south index): starting from the largest enhancement
/// within `search` pixels of the source pixel, every 8-connected pixel at
/// or above `threshold`. Empty when that largest value is below it.
pub fn plume_mask(dx: &[f64], nx: usize, ny: usize, source: (usize, usize), search: usize, threshold: f64) -> Vec<bool> {
    assert_eq!(dx.len(), nx * ny, "plume_mask: map of {} values is not {nx} × {ny}", dx.len());
    let mut mask = vec![false; dx.len()];
    let (si, sj) = (source.0.min(nx - 1), source.1.min(ny - 1));
    let mut seed = None;
    for j in sj.saturating_sub(search)..(sj + search + 1).min(ny) {
        for i in si.saturating_sub(search)..(si + search + 1).min(nx) {
            let p = j * nx + i;
            if seed.is_none_or(|s: usize| dx[p] > dx[s]) {
                seed = Some(p);
            }
        }
    }
    let Some(seed) = seed.filter(|&s| dx[s] >= threshold) else {
        return mask;
    };
    let mut stack = vec![seed];
    mask[seed] = true;
    while let Some(p) = stack.pop() {
        let (i, j) = ((p % nx) as isize, (p / nx) as isize);
        for dj in -1..=1 {
            for di in -1..=1 {
                let (a, b) = (i + di, j + dj);
                if a < 0 || b < 0 || a >= nx as isize || b >= ny as isize {
                    continue;
                }
                let q = b as usize * nx + a as usize;
                if !mask[q] && dx[q] >= threshold {
                    mask[q] = true;
                    stack.push(q);
                }
            }
        }
    }
    mask
}

/// The IME of `dx` (ppm·m) over `mask` on square pixels of `pixel` m.
pub fn ime(dx: &[f64], mask: &[bool], pixel: f64) -> Ime {
    let area = pixel * pixel;
    let (mut mass, mut pixels) = (0.0, 0);
    for (v, _) in dx.iter().zip(mask).filter(|(_, &m)| m) {
        mass += v * KG_PER_M2_PER_PPM_M * area;
        pixels += 1;
    }
    Ime { mass, length: (pixels as f64 * area).sqrt(), pixels }
}

/// U_eff by least squares of Q = U_eff · IME / L over scenes of known
/// emission `(q in kg/s, IME)`; scenes with an empty mask are skipped.
/// None when no scene has a plume.
pub fn calibrate_u_eff(scenes: &[(f64, Ime)]) -> Option<f64> {
    let (mut num, mut den) = (0.0, 0.0);
    for (q, ime) in scenes.iter().filter(|(_, ime)| ime.pixels > 0) {
        let r = ime.mass / ime.length;
        num += q * r;
        den += r * r;
    }
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_follows_connected_pixels_from_the_source_and_ime_integrates_them() {
        // A 6 × 4 map: a plume of 3 connected pixels from (1,1), a separate
        // bright pixel at (5,3) that is not connected.
        let mut dx = vec![0.0; 24];
        for (i, j, v) in [(1, 1, 900.0), (2, 1, 500.0), (3, 2, 300.0), (5, 3, 2000.0)] {
            dx[j * 6 + i] = v;
        }
        let mask = plume_mask(&dx, 6, 4, (0, 1), 1, 250.0);
        let kept: Vec<usize> = (0..24).filter(|&p| mask[p]).collect();
        assert_eq!(kept, [7, 8, 15]);
        let ime = ime(&dx, &mask, 10.0);
        assert_eq!(ime.pixels, 3);
        assert!((ime.mass - 1700.0 * KG_PER_M2_PER_PPM_M * 100.0).abs() < 1e-12);
        assert!((ime.length - 300f64.sqrt()).abs() < 1e-12);
        assert!(plume_mask(&dx, 6, 4, (0, 1), 1, 1000.0).iter().all(|m| !m), "nothing above threshold near the source");
        // U_eff recovered from scenes that follow the law exactly.
        let scenes: Vec<(f64, Ime)> = [1.0, 2.0, 4.0].iter().map(|&s| (s * 3.0 * ime.mass / ime.length, Ime { mass: s * ime.mass, ..ime })).collect();
        assert!((calibrate_u_eff(&scenes).unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(Ime { pixels: 0, mass: 0.0, length: 0.0 }.emission_rate(3.0), 0.0);
    }

    #[test]
    fn one_ppm_m_and_one_ppb_in_standard_units() {
        // 1 ppm·m ≈ 7.16e-7 kg/m² (the literature's 0 °C conversion).
        assert!((KG_PER_M2_PER_PPM_M - 7.156e-7).abs() < 1e-9);
        // A 1 ppb column-average enhancement is about 8 ppm·m (8 km of
        // atmosphere at 1 ppb).
        assert!((super::super::PPM_M_PER_PPB - 7.995).abs() < 0.01);
    }
}
