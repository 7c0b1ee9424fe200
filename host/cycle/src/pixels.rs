//! Steps 3–5 of the L1→L2 retrieval row, per pixel: the parameters
//! θ = (dx, albedo, …) of one pixel from its spectrum y = H(F(θ)) + ε.
//!
//! - step 3: a neural emulator of the radiative transfer (log radiance,
//!   trained on `[step5]`'s simulations as for a static problem), scored
//!   per band against the detector noise and timed against the plugin;
//! - step 4: the Levenberg–Marquardt retrieval through the emulator
//!   against the same retrieval through the physics (the plugins), on
//!   test pixels drawn from the prior (the operating distribution);
//! - step 5: a direct retrieval, the amortized posterior's mixture mean
//!   and sd of each parameter in one batched pass, against step 4.
//!
//! The test pixels come from the prior, not from the scenes: the
//! operating distribution is what the networks were trained on, and the
//! scenes' plume pixels are few.

use crate::static_run::{forward, forward_plugins, plugin_ids, train_emulator};
use anyhow::{bail, Context, Result};
use geohost_da::params::prior::Prior;
use geohost_da::retrieval::gauss_newton::{self, Settings};
use geohost_learn::amortize::{self, Step5Spec};
use geohost_learn::static_emulator::EmulatorSpec;
use geohost_registry::Registry;
use geohost_sandbox::model::Simulator;
use geohost_sandbox::{WasmObs, WasmSimulator};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// `[step4]` of a retrieval set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step4Spec {
    /// Test pixels drawn from the prior.
    #[serde(default = "pixels")]
    pub pixels: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "iterations")]
    pub max_iterations: usize,
}

fn pixels() -> usize {
    200
}
fn iterations() -> usize {
    30
}

#[derive(Clone, Debug, Serialize)]
pub struct Step3Figures {
    pub name: String,
    pub id: String,
    pub loaded: bool,
    pub training: geohost_learn::static_emulator::EmulatorTraining,
    /// Per band on the test pixels: RMSE over the detector noise sd.
    pub worst_band_rmse_over_noise: f64,
    pub mean_band_rmse_over_noise: f64,
    /// Wall time per spectrum, µs, over the same batch (the emulator's:
    /// the median of 15 runs; the plugin's: one run, 0.05–0.1 s).
    pub plugin_us: f64,
    pub emulator_us: f64,
    pub speedup: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step4Figures {
    pub pixels: usize,
    /// dx retrieved through the physics and through the emulator against
    /// the truth, ppm·m.
    pub rmse_physics: f64,
    pub rmse_emulator: f64,
    /// The physics retrieval's mean noise-induced sd of dx, ppm·m.
    pub sd_physics: f64,
    /// RMS of (dx through the emulator − dx through the physics) over the
    /// physics retrieval's sd, per pixel.
    pub emulator_vs_physics: f64,
    /// RMS of (dx − truth) / sd for the physics retrieval (1 when its
    /// reported sd is right).
    pub z_rms_physics: f64,
    /// Wall time per pixel, µs.
    pub physics_us: f64,
    pub emulator_us: f64,
    pub iterations_physics: usize,
    pub iterations_emulator: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step5Figures {
    pub record: amortize::PredictorRecord,
    pub rmse: f64,
    /// RMSE over step 4's (through the physics).
    pub rmse_over_step4: f64,
    /// RMS of (mean − truth) / sd.
    pub z_rms: f64,
    pub us_per_pixel: f64,
    /// Per-pixel time of step 4 through the emulator, and through the
    /// physics, over this.
    pub speedup_vs_emulator: f64,
    pub speedup_vs_physics: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PixelSteps {
    pub step3: Option<Step3Figures>,
    pub step4: Option<Step4Figures>,
    pub step5: Option<Step5Figures>,
    /// Every test pixel's truth and retrievals (`d × pixels` each), for
    /// the run's `pixels.nc`.
    #[serde(skip)]
    pub table: Option<PixelTable>,
    /// Step 5 on every pixel of each scene given to [`run`]: the direct
    /// retrieval's dx map and its sd.
    #[serde(skip)]
    pub scene_maps: Vec<(Vec<f64>, Vec<f64>)>,
    /// Step 4 through the emulator on every pixel of each scene: dx and
    /// its sd (through the physics it would take minutes a scene).
    #[serde(skip)]
    pub emulator_maps: Vec<(Vec<f64>, Vec<f64>)>,
}

#[derive(Clone, Debug, Default)]
pub struct PixelTable {
    pub names: Vec<String>,
    pub truth: DMatrix<f64>,
    /// Step 4 through the physics and through the emulator: estimate and sd.
    pub physics: Option<(DMatrix<f64>, DMatrix<f64>)>,
    pub emulator: Option<(DMatrix<f64>, DMatrix<f64>)>,
    /// Step 5: the posterior mean and sd (mapped coordinates).
    pub direct: Option<(DMatrix<f64>, DMatrix<f64>)>,
}

/// What the per-pixel steps need from the set.
pub struct PixelSpecs<'a> {
    pub name: &'a str,
    pub priors: &'a [geohost_da::params::prior::PriorSpec],
    pub step3: Option<&'a EmulatorSpec>,
    pub step4: Option<&'a Step4Spec>,
    pub step5: Option<&'a Step5Spec>,
}

/// The seed of the test pixels a run draws (`[step4] seed`): a retrieval
/// benchmark's public experiment uses the same pixels.
pub(crate) fn public_seed(step4: Option<&Step4Spec>) -> u64 {
    step4.map_or(0, |s| s.seed) ^ 0x7e57
}

/// Test pixels: parameters from the prior, their noise-free spectra
/// (`forward`) and the spectra with detector noise of sd `sd` per band.
pub(crate) struct TestPixels {
    pub truth: DMatrix<f64>,
    pub clean: DMatrix<f64>,
    pub y: DMatrix<f64>,
}

/// Draw `n` test pixels with `rng` (parameters first, then the noise).
pub(crate) fn test_pixels(
    prior: &Prior,
    forward: &mut dyn FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>>,
    sd: &[f64],
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<TestPixels> {
    let truth = DMatrix::from_columns(&(0..n).map(|_| nalgebra::DVector::from_vec(prior.sample(rng))).collect::<Vec<_>>());
    let clean = forward(&truth)?;
    let y = &clean + DMatrix::from_fn(clean.nrows(), n, |b, _| sd[b] * rng.sample::<f64, _>(StandardNormal));
    Ok(TestPixels { truth, clean, y })
}

/// Step 4's Levenberg–Marquardt settings: the prior's bounds (dx within
/// −10,000 to 30,000 ppm·m, other parameters within 1e-3 to 1e3) and
/// central-difference steps of 20 ppm·m in dx, 1e-3 in the others.
pub(crate) fn lm_settings(prior: &Prior, max_iterations: usize) -> Settings {
    let (lower, upper): (Vec<f64>, Vec<f64>) = prior
        .marginals
        .iter()
        .zip(&prior.names)
        .map(|(m, n)| {
            let (lo, hi) = m.bounds();
            if n == "dx" {
                (lo.max(-10_000.0), hi.min(30_000.0))
            } else {
                (lo.max(1e-3), hi.min(1e3))
            }
        })
        .unzip();
    let steps = prior.names.iter().map(|n| if n == "dx" { 20.0 } else { 1e-3 }).collect();
    Settings { max_iterations, tolerance: 1e-9, steps, lower, upper }
}

/// Step 4's starting points: dx = 0, the albedo of the brightest band's
/// ratio to the plume-free spectrum of albedo 1 (from `forward`), other
/// parameters 1.
pub(crate) fn lm_start(prior: &Prior, forward: &mut dyn FnMut(&DMatrix<f64>) -> Result<DMatrix<f64>>, y: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    let names = &prior.names;
    let reference = forward(&DMatrix::from_fn(names.len(), 1, |i, _| if names[i] == "dx" { 0.0 } else { 1.0 }))?;
    let bright = (0..reference.nrows()).max_by(|&a, &b| reference[(a, 0)].total_cmp(&reference[(b, 0)])).unwrap_or(0);
    Ok(DMatrix::from_fn(names.len(), y.ncols(), |i, p| match names[i].as_str() {
        "dx" => 0.0,
        "albedo" => y[(bright, p)] / reference[(bright, 0)],
        _ => 1.0,
    }))
}

/// Median wall time per pixel, µs, of 15 runs of `f` over `n` pixels
/// (one run of a batch this small is at the mercy of the machine).
fn median_us(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(15);
    for _ in 0..15 {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[7])
}

/// Run steps 3–5 (those the set has) on the loaded plugins; step 5's
/// direct retrieval also maps every pixel of `scenes` (noisy radiance,
/// `bands × pixels` each).
pub fn run(
    specs: &PixelSpecs<'_>,
    scenes: &[DMatrix<f64>],
    rt: &mut WasmSimulator,
    obs: &mut WasmObs,
    components: &[(geohost_sandbox::LoadedComponent, &'static str, serde_json::Value, String)],
    mut registry: Option<&mut Registry>,
) -> Result<PixelSteps> {
    let Some(step5) = specs.step5 else {
        if specs.step3.is_some() || specs.step4.is_some() {
            bail!("[step3] and [step4] train and test on [step5]'s simulations: add [step5]");
        }
        return Ok(PixelSteps::default());
    };
    let names: Vec<String> = rt.info().parameters.iter().map(|p| p.name.clone()).collect();
    let prior = Prior::new(specs.priors, &names).with_context(|| format!("{}: [[prior]] (one per parameter of `{}`)", specs.name, rt.info().name))?;
    let dx_at = names.iter().position(|n| n == "dx").context("the radiance simulator has no `dx` parameter")?;
    if prior.marginals[dx_at].bounds() != (f64::NEG_INFINITY, f64::INFINITY) {
        bail!("[[prior]] dx must be unbounded (a normal without bounds): the direct retrieval takes its posterior moments on the real line");
    }
    // Components 0 and 1 are the radiance simulator and the detector.
    let ids = plugin_ids(&components[..2], registry.as_deref_mut())?;
    let sims = amortize::simulations(step5, &prior, rt, obs, &ids, registry.as_deref_mut())?;
    let sd = sims.sd.clone();
    // Test pixels from the prior, with detector noise.
    let n_test = specs.step4.map_or(200, |s| s.pixels);
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(public_seed(specs.step4));
    let TestPixels { truth, clean, y } = test_pixels(&prior, &mut forward(rt, obs, 0), &sd, n_test, &mut rng)?;
    let plugin_us = started.elapsed().as_secs_f64() * 1e6 / n_test as f64;
    let mut out = PixelSteps::default();
    let mut table = PixelTable { names: names.clone(), truth: truth.clone(), ..Default::default() };

    let mut emulator = None;
    if let Some(spec3) = specs.step3 {
        let (mut emu, training, _, id, loaded) = train_emulator(spec3, &prior, rt.info(), &sims, &ids, registry.as_deref_mut())?;
        let emulated = emu.simulate(&truth, 0)?;
        let emulator_us = median_us(n_test, || emu.simulate(&truth, 0).map(|_| ()))?;
        let per_band: Vec<f64> =
            (0..clean.nrows()).map(|b| ((0..n_test).map(|p| (emulated[(b, p)] - clean[(b, p)]).powi(2)).sum::<f64>() / n_test as f64).sqrt() / sd[b]).collect();
        out.step3 = Some(Step3Figures {
            name: spec3.name.clone(),
            id,
            loaded,
            training,
            worst_band_rmse_over_noise: per_band.iter().cloned().fold(0.0, f64::max),
            mean_band_rmse_over_noise: per_band.iter().sum::<f64>() / per_band.len() as f64,
            plugin_us,
            emulator_us,
            speedup: plugin_us / emulator_us,
        });
        emulator = Some(emu);
    }

    let settings = lm_settings(&prior, specs.step4.map_or(30, |s| s.max_iterations));
    let start = lm_start(&prior, &mut forward(rt, obs, 0), &y)?;
    if let (Some(_), Some(emu)) = (specs.step4, emulator.as_mut()) {
        let started = Instant::now();
        let physics = gauss_newton::retrieve(&mut forward(rt, obs, 0), &y, &sd, &start, &settings).context("step 4 through the physics")?;
        let physics_us = started.elapsed().as_secs_f64() * 1e6 / n_test as f64;
        let started = Instant::now();
        let through = gauss_newton::retrieve(&mut |t: &DMatrix<f64>| emu.simulate(t, 0), &y, &sd, &start, &settings).context("step 4 through the emulator")?;
        let emulator_us = started.elapsed().as_secs_f64() * 1e6 / n_test as f64;
        let rmse = |r: &gauss_newton::Retrieval| ((0..n_test).map(|p| (r.theta[(dx_at, p)] - truth[(dx_at, p)]).powi(2)).sum::<f64>() / n_test as f64).sqrt();
        let rms = |f: &dyn Fn(usize) -> f64| ((0..n_test).map(|p| f(p).powi(2)).sum::<f64>() / n_test as f64).sqrt();
        out.step4 = Some(Step4Figures {
            pixels: n_test,
            rmse_physics: rmse(&physics),
            rmse_emulator: rmse(&through),
            sd_physics: (0..n_test).map(|p| physics.sd[(dx_at, p)]).sum::<f64>() / n_test as f64,
            emulator_vs_physics: rms(&|p| (through.theta[(dx_at, p)] - physics.theta[(dx_at, p)]) / physics.sd[(dx_at, p)]),
            z_rms_physics: rms(&|p| (physics.theta[(dx_at, p)] - truth[(dx_at, p)]) / physics.sd[(dx_at, p)]),
            physics_us,
            emulator_us,
            iterations_physics: physics.iterations,
            iterations_emulator: through.iterations,
        });
        table.physics = Some((physics.theta, physics.sd));
        table.emulator = Some((through.theta, through.sd));
        for radiance in scenes {
            let start = lm_start(&prior, &mut forward(rt, obs, 0), radiance)?;
            let r = gauss_newton::retrieve(&mut |t: &DMatrix<f64>| emu.simulate(t, 0), radiance, &sd, &start, &settings)
                .context("step 4 through the emulator on a scene")?;
            out.emulator_maps.push((r.theta.row(dx_at).iter().copied().collect(), r.sd.row(dx_at).iter().copied().collect()));
        }
    }

    // Step 5: the amortized posterior's moments as the direct retrieval.
    let plugins = forward_plugins(components, &ids, 0);
    let (predictor, record, _) = amortize::train(step5, &prior, &sims, &ids, registry, &mut forward(rt, obs, 0), &plugins, &mut |_, _, _| {})?;
    let mdn = predictor.first.as_mdn("the direct retrieval of step 5")?;
    let (means, sds) = mdn.moments_unbounded(&y)?;
    let us_per_pixel = median_us(n_test, || mdn.moments_unbounded(&y).map(|_| ()))?;
    let rmse = ((0..n_test).map(|p| (means[(dx_at, p)] - truth[(dx_at, p)]).powi(2)).sum::<f64>() / n_test as f64).sqrt();
    let z_rms = ((0..n_test).map(|p| ((means[(dx_at, p)] - truth[(dx_at, p)]) / sds[(dx_at, p)]).powi(2)).sum::<f64>() / n_test as f64).sqrt();
    let step4 = out.step4.as_ref();
    out.step5 = Some(Step5Figures {
        record,
        rmse,
        rmse_over_step4: step4.map_or(f64::NAN, |s| rmse / s.rmse_physics),
        z_rms,
        us_per_pixel,
        speedup_vs_emulator: step4.map_or(f64::NAN, |s| s.emulator_us / us_per_pixel),
        speedup_vs_physics: step4.map_or(f64::NAN, |s| s.physics_us / us_per_pixel),
    });
    table.direct = Some((means, sds));
    out.table = Some(table);
    for radiance in scenes {
        let (means, sds) = mdn.moments_unbounded(radiance)?;
        out.scene_maps.push((means.row(dx_at).iter().copied().collect(), sds.row(dx_at).iter().copied().collect()));
    }
    Ok(out)
}
