//! Synthetic L1 scenes: the surface, the plume and the instrument of an
//! imaging spectrometer's pixel grid. The truth (enhancement and albedo
//! maps) stays with the host; only the noisy radiance goes to a retrieval.

use anyhow::{bail, Context, Result};
use geohost_sandbox::model::Simulator;
use nalgebra::DMatrix;
use rand::Rng;
use rand_distr::StandardNormal;

/// Enhancements (ppm·m) over which the unit absorption spectrum is
/// fitted: the nodes of mag1c's table, as its template generator uses.
pub const UNIT_ABSORPTION_NODES: [f64; 7] = [0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0];

/// A surface of `types` patches (nearest of as many random centres), each
/// with an albedo factor drawn uniformly from `albedo`, times pixel-wise
/// texture (1 + `texture` · N(0, 1)).
#[derive(Clone, Debug, PartialEq)]
pub struct Surface {
    pub types: usize,
    pub albedo: (f64, f64),
    pub texture: f64,
}

impl Surface {
    /// An `nx × ny` albedo map (row-major), every value at least 0.02.
    pub fn albedo_map(&self, nx: usize, ny: usize, rng: &mut impl Rng) -> Vec<f64> {
        let centres: Vec<(f64, f64, f64)> = (0..self.types.max(1))
            .map(|_| (rng.random::<f64>() * nx as f64, rng.random::<f64>() * ny as f64, rng.random_range(self.albedo.0..=self.albedo.1)))
            .collect();
        let mut map = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                let (x, y) = (i as f64 + 0.5, j as f64 + 0.5);
                let near = centres.iter().min_by(|a, b| ((a.0 - x).powi(2) + (a.1 - y).powi(2)).total_cmp(&((b.0 - x).powi(2) + (b.1 - y).powi(2)))).unwrap();
                let texture: f64 = rng.sample(StandardNormal);
                map.push((near.2 * (1.0 + self.texture * texture)).max(0.02));
            }
        }
        map
    }
}

/// Check that `sim` takes (`dx`, `albedo`, then anything else set to 1).
fn check_parameters(sim: &dyn Simulator) -> Result<usize> {
    let names: Vec<&str> = sim.info().parameters.iter().map(|p| p.name.as_str()).collect();
    if names.len() < 2 || names[0] != "dx" || names[1] != "albedo" {
        bail!("the radiance simulator `{}` must take `dx` and `albedo` as its first parameters (as plugins/ch4-rt does); it takes {names:?}", sim.info().name);
    }
    Ok(names.len())
}

/// Noise-free radiance, `bands × pixels`, of pixels with enhancement `dx`
/// (ppm·m) and albedo factor `albedo`; further parameters are 1.
pub fn radiance(sim: &mut dyn Simulator, dx: &[f64], albedo: &[f64]) -> Result<DMatrix<f64>> {
    let d = check_parameters(sim)?;
    if dx.len() != albedo.len() {
        bail!("{} enhancements for {} albedo values", dx.len(), albedo.len());
    }
    // Calls of at most CHUNK pixels keep each within the sandbox's fuel.
    const CHUNK: usize = 256;
    let mut out = DMatrix::zeros(sim.info().output_size, dx.len());
    for start in (0..dx.len()).step_by(CHUNK) {
        let n = CHUNK.min(dx.len() - start);
        let thetas = DMatrix::from_fn(d, n, |i, p| match i {
            0 => dx[start + p],
            1 => albedo[start + p],
            _ => 1.0,
        });
        let chunk = sim.simulate(&thetas, 0).with_context(|| format!("simulating radiance with `{}`", sim.info().name))?;
        out.columns_mut(start, n).copy_from(&chunk);
    }
    Ok(out)
}

/// Add independent Gaussian noise of standard deviation `sd[b]` to band b.
pub fn add_noise(radiance: &mut DMatrix<f64>, sd: &[f64], rng: &mut impl Rng) -> Result<()> {
    if sd.len() != radiance.nrows() {
        bail!("the observation operator's noise has {} bands, the radiance {}", sd.len(), radiance.nrows());
    }
    for mut col in radiance.column_iter_mut() {
        for (v, s) in col.iter_mut().zip(sd) {
            *v += s * rng.sample::<f64, _>(StandardNormal);
        }
    }
    Ok(())
}

/// The unit absorption spectrum k (d ln L/dΔX per ppm·m on each band):
/// the least-squares slope of ln L against the enhancement over
/// [`UNIT_ABSORPTION_NODES`] at albedo 1, mag1c's template.
pub fn unit_absorption(sim: &mut dyn Simulator) -> Result<Vec<f64>> {
    let nodes = UNIT_ABSORPTION_NODES;
    let l = radiance(sim, &nodes, &[1.0; 7])?;
    let mx = nodes.iter().sum::<f64>() / 7.0;
    let sxx: f64 = nodes.iter().map(|x| (x - mx).powi(2)).sum();
    let mut k = Vec::with_capacity(l.nrows());
    for b in 0..l.nrows() {
        if l.row(b).iter().any(|&v| v <= 0.0) {
            bail!("`{}` gives non-positive radiance on band {b}; the unit absorption needs ln L", sim.info().name);
        }
        let my = l.row(b).iter().map(|v| v.ln()).sum::<f64>() / 7.0;
        k.push(nodes.iter().zip(l.row(b).iter()).map(|(x, v)| (x - mx) * (v.ln() - my)).sum::<f64>() / sxx);
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn albedo_maps_have_patches_and_texture() {
        let surface = Surface { types: 3, albedo: (0.5, 1.5), texture: 0.0 };
        let map = surface.albedo_map(20, 10, &mut ChaCha8Rng::seed_from_u64(1));
        let mut distinct: Vec<f64> = map.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert!(distinct.len() <= 3 && distinct.len() >= 2 && distinct.iter().all(|a| (0.5..=1.5).contains(a)), "{distinct:?}");
        let textured = Surface { texture: 0.05, ..surface }.albedo_map(20, 10, &mut ChaCha8Rng::seed_from_u64(1));
        let rel: Vec<f64> = textured.iter().zip(&map).map(|(t, m)| t / m - 1.0).collect();
        let sd = (rel.iter().map(|r| r * r).sum::<f64>() / rel.len() as f64).sqrt();
        assert!((sd - 0.05).abs() < 0.01, "texture sd {sd}");
    }
}
