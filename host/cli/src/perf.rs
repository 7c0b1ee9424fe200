//! Figures printed by `geohost perf`: medians of repeated samples;
//! nothing here asserts a speed.

use anyhow::{bail, Context, Result};
use geohost_da::models::{linear::LinearObs, lorenz96::Lorenz96};
use geohost_da::twin::{self, Chronology, Prior};
use geohost_sandbox::model::ForwardModel;
use geohost_sandbox::{Limits, Runtime, WasmForward, World};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    quartiles(&mut v).1
}

/// (first quartile, median, third quartile) of `v`, sorting it: its
/// elements at a quarter, a half and three quarters of its length.
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 4], v[v.len() / 2], v[3 * v.len() / 4])
}

/// The median of `samples` figures that `f` measures itself (a sample
/// that times only part of its work).
fn median_of(samples: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    Ok(median((0..samples).map(|_| f()).collect::<Result<Vec<_>>>()?))
}

/// Time `f` `samples` times; median milliseconds divided by `per`.
fn time_ms(samples: usize, per: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        f()?;
        v.push(start.elapsed().as_secs_f64() * 1e3 / per as f64);
    }
    Ok(median(v))
}

/// One sample of the machine's ceiling for `threads` threads: that many
/// copies of one CPU-bound job (native Lorenz-96 steps of one 40-variable
/// state in cache, about 3 ms, long beside waking a worker) at once on the
/// process's workers ([`geohost_da::pool::Pool`], the analysis' threads),
/// against one copy alone: `threads`·T₁ / T_threads, the median of a few
/// pairs. With every core free it is about `threads`; a virtual CPU that
/// its host runs at part speed, or a neighbour's load, lowers it. Taken
/// beside the samples it bounds: a speed-up well below it is the
/// program's to lose, one near it is all the machine gave (the copies
/// share nothing, so only cache effects can put a program above it).
pub fn ceiling_sample(threads: usize) -> Result<f64> {
    let job = || -> Result<()> {
        let mut model = Lorenz96::new(40, 8.0);
        let mut x = DMatrix::from_fn(40, 1, |i, _| 8.0 + 0.01 * i as f64);
        for _ in 0..CEILING_STEPS {
            model.advance(&mut x, 0.0, 0.01)?;
        }
        std::hint::black_box(&x);
        Ok(())
    };
    let failed = std::sync::atomic::AtomicBool::new(false);
    let together = || {
        let start = Instant::now();
        geohost_da::pool::Pool::default().run(threads.max(1), &|_| {
            if job().is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
        start.elapsed().as_secs_f64()
    };
    // Wake the workers and the cores they run on first, as the cycles it
    // bounds keep them awake: here a virtual CPU left idle for a while ran
    // at two thirds of its speed or less for tens of milliseconds after.
    let warm = Instant::now();
    while warm.elapsed() < CEILING_WARM_UP {
        together();
    }
    let mut ratios = Vec::with_capacity(CEILING_PAIRS);
    for _ in 0..CEILING_PAIRS {
        let at_once = together();
        let start = Instant::now();
        job()?;
        ratios.push(threads.max(1) as f64 * start.elapsed().as_secs_f64() / at_once);
    }
    anyhow::ensure!(!failed.into_inner(), "the ceiling's job failed");
    Ok(median(ratios))
}

/// One sample of how long a cache line takes to go from this thread's
/// core to another's and back, in ns: a second thread answers each write
/// of one shared counter with one of its own, for [`ROUND_TRIP_TIME`].
/// Two threads of a cycle hand each other their parts this way (the
/// analysis writes rows the forecast's other share reads), so where
/// [`ceiling_sample`] bounds what independent work gains, this says what
/// a hand-off costs now: on the 2-core VMs here 60–140 ns, and 310–400 ns
/// beside the runs of their slow mode (docs/performance.md, "The slow
/// mode"). On a busy machine the two threads may share a core and a
/// trip costs a switch between them (microseconds). `None` if one trip
/// went unanswered for [`ROUND_TRIP_STALL`].
pub fn round_trip_ns() -> Option<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    #[repr(align(128))]
    struct Line(AtomicU64);
    let (line, stop) = (Line(AtomicU64::new(0)), AtomicBool::new(false));
    std::thread::scope(|scope| {
        // The answerer: each odd value becomes the next even one. Both
        // sides yield the core every 64 polls, so that two threads left on
        // one core (a busy machine) trade it at once, not per time slice.
        scope.spawn(|| {
            let mut polls = 0u32;
            loop {
                let v = line.0.load(Ordering::Acquire);
                if v % 2 == 1 {
                    line.0.store(v + 1, Ordering::Release);
                } else if stop.load(Ordering::Relaxed) {
                    return;
                } else {
                    poll(&mut polls);
                }
            }
        });
        let start = Instant::now();
        let (mut value, mut trips) = (0u64, 0u64);
        // From when, and after how many trips, the timing runs: the first
        // trips wait for the other thread to start.
        let mut timed: Option<(Instant, u64)> = None;
        let answered = 'trips: loop {
            match timed {
                None if start.elapsed() >= ROUND_TRIP_WARM_UP => timed = Some((Instant::now(), trips)),
                Some((from, _)) if from.elapsed() >= ROUND_TRIP_TIME => break true,
                _ => {}
            }
            for _ in 0..256 {
                line.0.store(value + 1, Ordering::Release);
                // A clock read only once a trip has polled long (reading it
                // every trip would add to what is timed).
                let (mut polls, mut waiting_since) = (0u32, None);
                while line.0.load(Ordering::Acquire) != value + 2 {
                    poll(&mut polls);
                    if polls.is_multiple_of(4096) && waiting_since.get_or_insert_with(Instant::now).elapsed() > ROUND_TRIP_STALL {
                        break 'trips false;
                    }
                }
                value += 2;
                trips += 1;
            }
        };
        stop.store(true, Ordering::Relaxed);
        // The answerer returns once it has answered the last value and
        // sees `stop`; the scope waits for it.
        let (from, first) = timed?;
        (answered && trips > first).then(|| from.elapsed().as_secs_f64() * 1e9 / (trips - first) as f64)
    })
}

/// `lowest–highest` of `values` with `decimals` digits (sorting them),
/// or `-` if there are none: the speed-ups' and round trips' ranges.
fn value_range(values: &mut [f64], decimals: usize) -> String {
    values.sort_by(f64::total_cmp);
    match (values.first(), values.last()) {
        (Some(low), Some(high)) => format!("{low:.decimals$}–{high:.decimals$}"),
        _ => "-".to_string(),
    }
}

/// One poll of [`round_trip_ns`]'s: a spin, and every 64th a yield.
fn poll(polls: &mut u32) {
    *polls = polls.wrapping_add(1);
    if polls.is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// How long [`round_trip_ns`] lets the other thread start and settle.
const ROUND_TRIP_WARM_UP: std::time::Duration = std::time::Duration::from_millis(5);
/// How long [`round_trip_ns`] times round trips.
const ROUND_TRIP_TIME: std::time::Duration = std::time::Duration::from_millis(20);
/// How long [`round_trip_ns`] waits for one answer before it gives up.
const ROUND_TRIP_STALL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long [`ceiling_sample`] keeps every thread busy before it times.
const CEILING_WARM_UP: std::time::Duration = std::time::Duration::from_millis(60);
/// Timed pairs (all at once, then one alone) per [`ceiling_sample`].
const CEILING_PAIRS: usize = 3;

/// Steps of [`ceiling_sample`]'s job.
const CEILING_STEPS: usize = 30_000;

/// The Lorenz-96 twin that `perf da` and `perf languages` time an ETKF
/// on: 40 variables, all observed with R = I, `cycles` cycles of dt = 0.05
/// from e₀ (native truth, seed 1), and an ETKF with N = `members`,
/// inflation 1.02.
struct EtkfTiming {
    twin: twin::Twin,
    obs: LinearObs,
    etkf: geohost_da::Method,
    /// The generator after the twin's draws (for ensembles beside it).
    rng: rand_chacha::ChaCha8Rng,
    cycles: usize,
}

impl EtkfTiming {
    fn new(members: usize, cycles: usize, at: &str) -> Result<EtkfTiming> {
        let mut obs = LinearObs::new(DMatrix::identity(40, 40), vec![1.0; 40]);
        let mut x0 = vec![0.0; 40];
        x0[0] = 1.0;
        let chronology = Chronology { dt: 0.05, steps_per_obs: 1, cycles, burn_in: 0.0 };
        let prior = Prior::gaussian(DVector::from_vec(x0), 0.001);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let twin = twin::simulate(&mut Lorenz96::new(40, 8.0), &mut obs, chronology, prior, false, &mut rng)?;
        let params = toml::Table::from_iter([("N".to_string(), toml::Value::Integer(members as i64)), ("infl".to_string(), toml::Value::Float(1.02))]);
        let etkf = geohost_da::parse_method("etkf", &params, at)?;
        Ok(EtkfTiming { twin, obs, etkf, rng, cycles })
    }

    /// Milliseconds per analysis cycle of the ETKF through `model`.
    fn cycle_ms(&mut self, model: &mut dyn ForwardModel) -> Result<f64> {
        let start = Instant::now();
        self.etkf.run(&self.twin, model, &mut self.obs, 7, Default::default(), &mut |_| {})?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / self.cycles as f64)
    }
}

/// The QG row of [`letkf_cost`], from a plugin-set (cycles/qg.toml): its
/// `[model]` component and config, its cycle length and the sandbox under
/// its `[limits]`, so that the forecast is timed as `geohost run` runs it.
pub struct QgRow {
    set: std::path::PathBuf,
    runtime: Runtime,
    component: geohost_sandbox::LoadedComponent,
    config: String,
    dt: f64,
    /// A square 2-D grid (checked).
    layout: geohost_sandbox::model::Layout,
}

impl QgRow {
    /// Load the plugin-set at `set`; its `[model]` must name a component
    /// file (not a registry artifact or an emulator).
    pub fn from_set(set: &Path) -> Result<QgRow> {
        use geohost_cycle::pluginset::{PluginSet, Source};
        let loaded = PluginSet::load(set)?;
        let Source::Path(plugin) = &loaded.model else {
            bail!("--qg {}: [model] must name a component file (`plugin = …`) for `perf letkf`", set.display());
        };
        let runtime = Runtime::new(loaded.set.limits, None)?;
        let component = runtime.load("model", plugin, World::ForwardModel).with_context(|| format!("--qg {}", set.display()))?;
        let config = geohost_sandbox::config_json(&loaded.set.model.config);
        let info = WasmForward::new(&runtime, &component, &config).with_context(|| format!("--qg {}", set.display()))?.info().clone();
        // One cycle, as `geohost run` counts it (the model's own step when
        // the set gives none).
        let dt = loaded.set.experiment.dt.unwrap_or(info.default_dt) * loaded.set.experiment.steps_per_obs as f64;
        // The row observes 300 points spread through the grid (after an
        // offset of 17): a side of at least 72.
        let layout = info.layout().filter(|l| matches!(l.shape()[..], [a, b] if a == b && a >= 72)).with_context(|| {
            format!(
                "--qg {}: model `{}` has no square 2-D layout of at least 72 × 72 points (the QG row needs one, as cycles/qg.toml's)",
                set.display(),
                info.name
            )
        })?;
        Ok(QgRow { set: set.to_path_buf(), runtime, component, config, dt, layout })
    }
}

/// The LETKF at size: on Lorenz-96 (native, F = 8) of each of `sizes`, a
/// state spun up from a perturbed rest state, an ensemble of `members`
/// about it (sd 1), every variable observed with R = I, loc_rad 4 in pairs
/// (DAPPER's setting); and, with `qg` (the QG component), DAPPER's
/// sakov2008 QG analysis: 129 × 129 in 2 × 2 squares, 300 track
/// observations with R = 4, loc_rad 10, an ensemble of spun-up-like
/// smooth fields. Per row: the local domains' setup, one forecast of the
/// ensemble (Lorenz-96: one native RK4 step; QG: one 5-time-unit cycle in
/// the wasm component), and the analysis on each of `threads` threads
/// (median of `samples`), its speed-up over the first and the parallel
/// efficiency. On a `team` of several MPI ranks, instead: the cycle
/// (forecast + analysis) on one process, then decomposed over the ranks
/// (one thread each) as `geohost run` does it (each rank's forecast of its
/// members; the analysis with its halo of observations and the two
/// transpositions), the speed-up and the efficiency.
pub fn letkf_cost(sizes: &[usize], threads: &[usize], members: usize, samples: usize, qg: Option<&QgRow>, team: &dyn geohost_da::team::Team) -> Result<String> {
    use geohost_da::letkf::Letkf;
    use geohost_sandbox::model::{Grid, Layout};
    use rand_distr::{Distribution, StandardNormal};
    if threads.is_empty() || threads.contains(&0) || sizes.iter().any(|&m| m < 8) {
        bail!("--threads needs counts of at least 1 and --sizes states of at least 8 variables");
    }
    let mut out = String::new();
    let ranks = team.size();
    // The round-trip column: one process with some count of several threads.
    let with_trips = ranks == 1 && threads.iter().any(|&t| t > 1);
    if ranks == 1 {
        let _ = writeln!(
            out,
            "LETKF, N = {members}; ms (median of {samples}) of the forecast on t model instances (threads), the analysis on t threads, the cycle; \
             the counts take turns sample by sample, the speed-up is the median of the paired samples' ratios"
        );
        let _ = writeln!(out, "  ceiling: t copies of one CPU-bound job at once against one, after each sample (median): what the machine gives t threads now");
        if with_trips {
            let _ = writeln!(
                out,
                "  round-trip: a cache line's from one core to another and back after each sample, ns [lowest–highest]: what a hand-off between threads costs now"
            );
        }
    } else {
        let _ = writeln!(
            out,
            "LETKF, N = {members}; ms (median of {samples}) of the forecast, the analysis and the cycle on one process (1p), then split over {ranks} MPI ranks"
        );
    }
    let _ = writeln!(out, "  Lorenz-96 (native): every variable observed (R = I), loc_rad 4, pairs");
    if let Some(qg) = qg {
        let _ = writeln!(
            out,
            "  QG 129 × 129 ({}'s model and [limits], forecast dt {}): 300 track observations (R = 4), loc_rad 10, 2 × 2 squares",
            qg.set.display(),
            qg.dt
        );
    }
    // Per thread count (or: one process, then the ranks), the forecast, the
    // analysis and the cycle; then each cycle's speed-up and efficiency.
    let counts: Vec<(usize, &str)> = if ranks == 1 { threads.iter().map(|&t| (t, "t")).collect() } else { vec![(1, "p"), (ranks, "r")] };
    let mut header = format!("{:>10} {:>9}", "model", "setup");
    for (count, unit) in &counts {
        let _ = write!(header, " {:>12} {:>12} {:>10}", format!("forecast {count}{unit}"), format!("analysis {count}{unit}"), format!("cycle {count}{unit}"));
    }
    for (count, unit) in &counts[1..] {
        let _ = write!(header, " {:>10} {:>10}", format!("speed-up {count}{unit}"), format!("effic. {count}{unit}"));
        if ranks == 1 {
            let _ = write!(header, " {:>10}", format!("ceiling {count}{unit}"));
        }
    }
    if with_trips {
        let _ = write!(header, " {:>10}", "round-trip");
    }
    let _ = writeln!(out, "{header}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut normal = move || <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng);
    for &m in sizes {
        let mut model = Lorenz96::new(m, 8.0);
        let mut truth = DMatrix::from_element(m, 1, 8.0);
        truth[(0, 0)] += 0.01;
        for _ in 0..200 {
            model.advance(&mut truth, 0.0, 0.05)?;
        }
        let e0 = DMatrix::from_fn(m, members, |i, _| truth[(i, 0)] + normal());
        let y = DVector::from_fn(m, |i, _| truth[(i, 0)] + normal());
        let r = DVector::from_element(m, 1.0);
        let locations: Vec<f64> = (0..m).map(|i| i as f64).collect();
        let start = Instant::now();
        let letkf = Letkf::new(Layout::of_grid(Grid { points: m, periodic: true }), &locations, 4.0, 2);
        let setup = start.elapsed().as_secs_f64() * 1e3;
        let mut instance = || -> Result<Box<dyn ForwardModel + Send>> { Ok(Box::new(Lorenz96::new(m, 8.0))) };
        let case =
            Case { label: format!("L96 {m}"), instance: &mut instance, dt: 0.05, forecast_samples: samples, letkf, setup, e0: &e0, eo: &e0, y: &y, r: &r };
        case.row(&mut out, threads, samples, team)?;
    }
    if let Some(QgRow { runtime, component, config, dt, layout, .. }) = qg {
        let (layout, n) = (layout.clone(), layout.shape()[1]);
        // Smooth fields with walls at 0: random amplitudes of the lowest
        // sine modes (the size of a spun-up ψ, tens).
        let pi = std::f64::consts::PI;
        let mut amplitudes = || (0..16).map(|_| 10.0 * normal()).collect::<Vec<f64>>();
        let field = |a: &[f64]| -> Vec<f64> {
            (0..n * n)
                .map(|p| {
                    let (yy, xx) = ((p / n) as f64 / (n - 1) as f64, (p % n) as f64 / (n - 1) as f64);
                    (0..16).map(|k| a[k] * ((1 + k % 4) as f64 * pi * xx).sin() * ((1 + k / 4) as f64 * pi * yy).sin()).sum()
                })
                .collect()
        };
        let mean = field(&amplitudes());
        let mut e0 = DMatrix::zeros(n * n, members);
        for k in 0..members {
            let member = field(&amplitudes());
            e0.column_mut(k).iter_mut().zip(mean.iter().zip(&member)).for_each(|(v, (m, d))| *v = m + 0.1 * d);
        }
        // 300 points evenly spaced through the flat grid, shifted by 17.
        let observed: Vec<usize> = (0..300).map(|k| k * n * n / 300 + 17).collect();
        let eo = DMatrix::from_fn(observed.len(), members, |j, k| e0[(observed[j], k)]);
        let y = DVector::from_fn(observed.len(), |j, _| mean[observed[j]] + 2.0 * normal());
        let r = DVector::from_element(observed.len(), 4.0);
        let coordinates: Vec<f64> = observed.iter().flat_map(|&i| [(i / n) as f64, (i % n) as f64]).collect();
        let start = Instant::now();
        let letkf = Letkf::new(layout, &coordinates, 10.0, 2);
        let setup = start.elapsed().as_secs_f64() * 1e3;
        let mut instance = || -> Result<Box<dyn ForwardModel + Send>> { Ok(Box::new(WasmForward::new(runtime, component, config)?)) };
        let case =
            Case { label: "QG 129²".into(), instance: &mut instance, dt: *dt, forecast_samples: samples.min(5), letkf, setup, e0: &e0, eo: &eo, y: &y, r: &r };
        case.row(&mut out, threads, samples, team)?;
    }
    Ok(out)
}

/// One row of [`letkf_cost`]: a forecast of `e0` by `dt` through model
/// instances `instance` makes, and the analysis of `e0` given (`eo`, `y`,
/// `r`).
struct Case<'a> {
    label: String,
    instance: &'a mut dyn FnMut() -> Result<Box<dyn ForwardModel + Send>>,
    dt: f64,
    /// Forecast timings (fewer for the slow QG forecast); the paired
    /// speed-up is over this many samples.
    forecast_samples: usize,
    letkf: geohost_da::letkf::Letkf<'static>,
    setup: f64,
    e0: &'a DMatrix<f64>,
    eo: &'a DMatrix<f64>,
    y: &'a DVector<f64>,
    r: &'a DVector<f64>,
}

impl Case<'_> {
    /// On one process: per thread count t, the forecast split over t model
    /// instances, the analysis over t threads, and the cycle (their sum);
    /// then each cycle's speed-up over the first and the efficiency. On
    /// several ranks: the same on one process and one thread (rank 0,
    /// the others waiting), then split over the ranks.
    fn row(self, out: &mut String, threads: &[usize], samples: usize, team: &dyn geohost_da::team::Team) -> Result<()> {
        use geohost_da::ensemble::{split_members, Analysis, Instances};
        let Case { label, instance, dt, forecast_samples, letkf, setup, e0, eo, y, r } = self;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ensemble = e0.clone();
        // One timed forecast of `e0` (the members split over `team`).
        let mut forecast_once = |model: &mut dyn ForwardModel, team: &dyn geohost_da::team::Team| -> Result<f64> {
            let start = Instant::now();
            ensemble.copy_from(e0);
            split_members(&mut ensemble, team, |part| model.advance(part, 0.0, dt))?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        // The calls that decide whether instances split, as the first
        // cycles of `geohost run` make them (the first is also the warm-up).
        let deciding = geohost_da::ensemble::TIMED_CALLS;
        let mut analysis_once = |letkf: &mut geohost_da::letkf::Letkf<'_>| -> Result<f64> {
            let mut e = e0.clone();
            let start = Instant::now();
            letkf.analyse(&mut e, eo, y, r, &mut rng)?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        };
        let mut instances = |count: usize| -> Result<Instances> { Instances::new((0..count).map(|_| instance()).collect::<Result<Vec<_>>>()?) };
        let mut row = format!("{label:>10} {setup:>9.1}");
        // Per count: the forecast's and the analysis' ms (medians), the
        // cycle (their sum), and the cycles of the paired samples.
        let mut cycles: Vec<(usize, f64, Vec<f64>)> = Vec::new();
        // Per count, the machine's ceiling samples ([`ceiling_sample`];
        // none on ranks, whose waiting ranks may spin on the other cores).
        let mut ceilings: Vec<Vec<f64>> = vec![Vec::new(); threads.len()];
        // A cache line's round trips ([`round_trip_ns`]), one per sample,
        // where some count has several threads (one process only).
        let with_trips = team.size() == 1 && threads.iter().any(|&t| t > 1);
        let mut trips: Vec<f64> = Vec::new();
        if team.size() == 1 {
            // The thread counts take turns sample by sample, so a burst of
            // load on a shared machine hits every count, and the speed-up
            // is the median of the paired samples' ratios.
            let mut models = threads.iter().map(|&t| instances(t)).collect::<Result<Vec<_>>>()?;
            let mut letkf = Some(letkf);
            let mut analyse_on = |t: usize| -> Result<f64> {
                let mut l = letkf.take().expect("put back below").with_threads(t);
                let a = analysis_once(&mut l);
                letkf = Some(l);
                a
            };
            for (model, &t) in models.iter_mut().zip(threads) {
                for _ in 0..deciding {
                    forecast_once(model, team)?;
                }
                analyse_on(t)?; // warm-up
            }
            let (mut f, mut a) = (vec![Vec::new(); threads.len()], vec![Vec::new(); threads.len()]);
            for sample in 0..samples {
                for (i, (model, &t)) in models.iter_mut().zip(threads).enumerate() {
                    if sample < forecast_samples {
                        f[i].push(forecast_once(model, team)?);
                    }
                    a[i].push(analyse_on(t)?);
                    if i > 0 {
                        ceilings[i].push(ceiling_sample(t)?);
                    }
                }
                if with_trips {
                    trips.extend(round_trip_ns());
                }
            }
            for (i, &t) in threads.iter().enumerate() {
                let (fm, am) = (median(f[i].clone()), median(a[i].clone()));
                let _ = write!(row, " {fm:>12.3} {am:>12.2} {:>10.2}", fm + am);
                cycles.push((t, fm + am, f[i].iter().zip(&a[i]).map(|(f, a)| f + a).collect()));
            }
        } else {
            let mut forecast = |model: &mut dyn ForwardModel, team: &dyn geohost_da::team::Team| -> Result<f64> {
                for _ in 0..deciding {
                    forecast_once(model, team)?;
                }
                median_of(forecast_samples, || forecast_once(model, team))
            };
            // One process first (rank 0, one thread; the other ranks wait),
            // then every rank on its share.
            let mut letkf = letkf.with_threads(1);
            let mut model = instances(1)?;
            let (f, a) = if team.rank() == 0 {
                let f = forecast(&mut model, &geohost_da::team::Solo)?;
                analysis_once(&mut letkf)?; // warm-up
                (f, median_of(samples, || analysis_once(&mut letkf))?)
            } else {
                (0.0, 0.0)
            };
            team.gather(Ok(Vec::new()), &vec![0; team.size()])?;
            let _ = write!(row, " {f:>12.3} {a:>12.2} {:>10.2}", f + a);
            cycles.push((1, f + a, Vec::new()));
            // As `geohost run` splits the LETKF's cycle: each rank advances
            // its members, then the analysis receives its halo of the
            // observed ensemble, transposes the members into its rows,
            // analyses those and transposes back (`geohost_da::decomposed`).
            let mut letkf = letkf.with_team(team);
            let rows = letkf.rows().context("the LETKF has rows of its own")?.to_vec();
            let decomposition = geohost_da::decomposed::Decomposition::new(team, e0.ncols(), e0.nrows(), &rows)?;
            let mine = geohost_da::team::share(e0.ncols(), team.size(), team.rank());
            let members = e0.columns(mine.start, mine.len()).into_owned();
            let observed = eo.columns(mine.start, mine.len()).into_owned();
            let halos = letkf.observations_by_rank()?;
            let mut advanced = members.clone();
            let f = time_ms(forecast_samples, 1, || {
                advanced.copy_from(&members);
                model.advance(&mut advanced, 0.0, dt)
            })?;
            let a = time_ms(samples, 1, || {
                let halo = decomposition.rows_of_members(Ok(&observed), &halos)?;
                let mut e = decomposition.to_rows(&members)?;
                letkf.analyse_rows(&mut e, &halo, y, r, &mut rng)?;
                decomposition.to_members(&e).map(|_| ())
            })?;
            let _ = write!(row, " {f:>12.3} {a:>12.2} {:>10.2}", f + a);
            cycles.push((team.size(), f + a, Vec::new()));
        }
        let (base_count, base, base_samples) = &cycles[0];
        for ((count, cycle, samples), ceiling) in cycles[1..].iter().zip(&ceilings[1..]) {
            // Paired samples where there are (threads), else the medians (ranks).
            let speedup = if samples.is_empty() { base / cycle } else { median(base_samples.iter().zip(samples).map(|(b, c)| b / c).collect()) };
            let _ = write!(row, " {speedup:>10.2} {:>10.2}", speedup * *base_count as f64 / *count as f64);
            if !ceiling.is_empty() {
                let _ = write!(row, " {:>10.2}", median(ceiling.clone()));
            }
        }
        if with_trips {
            let _ = write!(row, " {:>10}", value_range(&mut trips, 0));
        }
        let _ = writeln!(out, "{row}");
        Ok(())
    }
}

/// ETKF on Lorenz-96 (sakov2008 setup) with the wasm forward model and with
/// the native one: milliseconds per analysis cycle and their ratio, plus
/// the cost of one ensemble step alone. The wasm model runs under
/// `runtime`'s settings and, for comparison, once more with NaN
/// canonicalisation off (what `[limits] nan_canonicalization = false`
/// buys).
pub fn forward_cost(runtime: &Runtime, plugin: &Path, members: usize, cycles: usize, samples: usize) -> Result<String> {
    let config = r#"{"F": 8.0, "size": 40}"#;
    let loaded = runtime.load("lorenz96", plugin, World::ForwardModel)?;
    let mut wasm = WasmForward::new(runtime, &loaded, config)?;
    let raw_runtime = Runtime::new(Limits { nan_canonicalization: false, ..*runtime.limits() }, None)?;
    let mut raw = WasmForward::new(&raw_runtime, &raw_runtime.load("lorenz96", plugin, World::ForwardModel)?, config)?;
    let mut native = Lorenz96::new(40, 8.0);
    let mut bench = EtkfTiming::new(members, cycles, "perf da")?;

    // Native and wasm samples alternate, so a burst of load on this noisy
    // machine hits both; the ratio is the median of the per-pair ratios.
    let mut cycle_ms = |model: &mut dyn ForwardModel| bench.cycle_ms(model);
    cycle_ms(&mut native)?; // warm-up
    cycle_ms(&mut wasm)?;
    cycle_ms(&mut raw)?;
    let (mut native_v, mut wasm_v, mut raw_v, mut ratio_v, mut raw_ratio_v) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..samples {
        let (n, w, r) = (cycle_ms(&mut native)?, cycle_ms(&mut wasm)?, cycle_ms(&mut raw)?);
        native_v.push(n);
        wasm_v.push(w);
        raw_v.push(r);
        ratio_v.push(w / n);
        raw_ratio_v.push(r / n);
    }
    let (native_cycle, wasm_cycle, cycle_ratio) = (median(native_v), median(wasm_v), median(ratio_v));
    let (raw_cycle, raw_ratio) = (median(raw_v), median(raw_ratio_v));

    let mut e = bench.twin.prior.sample(members, &mut bench.rng)?;
    let steps = 2000;
    let mut step_us = |model: &mut dyn ForwardModel| {
        let e0 = e.clone();
        let r = time_ms(samples, steps, || {
            e.copy_from(&e0);
            (0..steps).try_for_each(|_| model.advance(&mut e, 0.0, 0.05))
        });
        r.map(|ms| ms * 1e3)
    };
    let native_step = step_us(&mut native)?;
    let wasm_step = step_us(&mut wasm)?;
    let raw_step = step_us(&mut raw)?;

    let mut s = String::new();
    let _ = writeln!(s, "Lorenz-96 (40 variables), ETKF N={members}, {cycles} cycles per sample, median of {samples} samples");
    let _ = writeln!(
        s,
        "limits: fuel {} per call, deadline {} ms, memory {} MiB, NaN canonicalisation {}",
        runtime.limits().fuel,
        runtime.limits().deadline_ms,
        runtime.limits().memory_mib,
        if runtime.limits().nan_canonicalization { "on" } else { "off" }
    );
    let _ = writeln!(s, "  ms per analysis cycle, native forward: {native_cycle:.4}");
    let _ = writeln!(s, "  ms per analysis cycle, wasm forward:   {wasm_cycle:.4}");
    let _ = writeln!(s, "  cycle ratio wasm/native:               {cycle_ratio:.3} (median of paired samples)");
    let _ = writeln!(s, "  µs per ensemble step (RK4), native:    {native_step:.2}");
    let _ = writeln!(s, "  µs per ensemble step (RK4), wasm:      {wasm_step:.2}");
    let _ = writeln!(s, "  step ratio wasm/native:                {:.3}", wasm_step / native_step);
    let _ = writeln!(s, "the same wasm forward with NaN canonicalisation off (nan_canonicalization = false):");
    let _ = writeln!(s, "  ms per analysis cycle:                 {raw_cycle:.4}");
    let _ = writeln!(s, "  cycle ratio wasm/native:               {raw_ratio:.3} (median of paired samples)");
    let _ = write!(s, "  µs per ensemble step (RK4):            {raw_step:.2}");
    Ok(s)
}

/// A plugin-set's forward model timed call by call: each call advances
/// `members` states by one cycle of the set (its `dt` × `steps_per_obs`)
/// under the set's `[limits]`, from its `x0` plus a fixed small wave (so
/// that a model at rest in `x0` moves), after `warm_up` untimed calls.
/// With `against`, a second build of the component (same config, same
/// limits) takes turns with the set's, call by call and first in every
/// other round, so that the minutes when this machine's vCPU runs slow
/// hit both: its median, the median and quartiles of the paired ratios,
/// and how far the two ensembles ended apart (0: the same bits). This is
/// how to tell whether a change to a plugin makes it faster; whole
/// `geohost run`s of either vary by ±20% here from one minute to the next.
pub fn model_cost(set: &Path, against: Option<&Path>, calls: usize, members: usize, warm_up: usize) -> Result<String> {
    use geohost_cycle::pluginset::{PluginSet, Source};
    let loaded = PluginSet::load(set)?;
    let Source::Path(plugin) = &loaded.model else {
        bail!("{}: [model] must name a component file (`plugin = …`) for `perf model`", set.display());
    };
    let runtime = Runtime::new(loaded.set.limits, None)?;
    let config = geohost_sandbox::config_json(&loaded.set.model.config);
    let mut builds = vec![plugin.clone()];
    builds.extend(against.map(Path::to_path_buf));
    let mut models = Vec::new();
    for (i, path) in builds.iter().enumerate() {
        let what = if i == 0 { format!("perf model {}", set.display()) } else { format!("perf model --against {}", path.display()) };
        // Named by its file, so that a trap or a refusal says which build.
        let component = runtime.load(&path.display().to_string(), path, World::ForwardModel).with_context(|| what.clone())?;
        models.push(WasmForward::new(&runtime, &component, &config).with_context(|| format!("{what}, with {}'s [model] config", set.display()))?);
    }
    let info = models[0].info().clone();
    if let Some(other) = models.get(1) {
        if other.info().state_size != info.state_size {
            bail!(
                "--against {}: its state has {} variables, {}'s model {} (two builds of one model must agree)",
                builds[1].display(),
                other.info().state_size,
                set.display(),
                info.state_size
            );
        }
    }
    let dt = loaded.set.experiment.dt.unwrap_or(info.default_dt) * loaded.set.experiment.steps_per_obs as f64;
    let x0 = loaded.set.experiment.x0.resolve(info.state_size)?;
    let wave = loaded.set.experiment.x0_variance.sqrt().max(1e-3);
    let start = DMatrix::from_fn(info.state_size, members, |i, k| x0[i] + wave * ((i + 7 * k) as f64 * 0.37).sin());
    let mut states = vec![start; models.len()];
    let mut t = 0.0;
    for _ in 0..warm_up {
        for (model, x) in models.iter_mut().zip(&mut states) {
            model.advance(x, t, dt)?;
        }
        t += dt;
    }
    let mut ms = vec![Vec::with_capacity(calls); models.len()];
    let mut ratios = Vec::with_capacity(calls);
    for call in 0..calls {
        let mut order: Vec<usize> = (0..models.len()).collect();
        if call % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let started = Instant::now();
            models[i].advance(&mut states[i], t, dt)?;
            ms[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
        if ms.len() == 2 {
            ratios.push(ms[0][call] / ms[1][call]);
        }
        t += dt;
    }
    // Four significant figures from 1 ns (10⁻⁶ ms) up.
    let figure = |v: f64| format!("{v:.*}", (3 - v.log10().floor().clamp(-6.0, 3.0) as i32) as usize);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model `{}` of {} ({} variables), {members} member{} a call, one cycle of {dt} time units per call; {calls} calls after {warm_up} untimed",
        info.name,
        set.display(),
        info.state_size,
        if members == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "limits: fuel {} per call, NaN canonicalisation {}",
        loaded.set.limits.fuel,
        if loaded.set.limits.nan_canonicalization { "on" } else { "off" }
    );
    let _ = writeln!(s, "  {:<44} {:>10} {:>21}", "build", "ms/call", "quartiles");
    for (label, (path, v)) in ["A", "B"].iter().zip(builds.iter().zip(&mut ms)) {
        let (q1, q2, q3) = quartiles(v);
        let _ = writeln!(s, "  {label} {:<42} {:>10} {:>21}", path.display().to_string(), figure(q2), format!("{}–{}", figure(q1), figure(q3)));
    }
    if !ratios.is_empty() {
        let (q1, q2, q3) = quartiles(&mut ratios);
        let apart = states[0].iter().zip(states[1].iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let _ = writeln!(s, "  A/B, median of the paired calls {:>23.3} {:>21}", q2, format!("{q1:.3}–{q3:.3}"));
        let _ = write!(
            s,
            "  the ensembles after every call: {}",
            if apart == 0.0 { "the same bits".to_string() } else { format!("at most {apart:.3e} apart (max |A − B|)") }
        );
    }
    Ok(s.trim_end().to_string())
}

/// The same Lorenz-96 written in Rust, Python (componentize-py) and
/// JavaScript (componentize-js): component size, compile time on first
/// load and from the compile cache, and ms per ETKF analysis cycle through
/// each (paired samples, so a burst of load hits all three), with the
/// ratio to Rust.
pub fn language_cost(plugins: &Path, members: usize, cycles: usize, samples: usize) -> Result<String> {
    let names = ["lorenz96", "lorenz96-py", "lorenz96-js"];
    let scratch = geohost_cycle::scratch::private("perf")?;
    let cache = scratch.path().to_path_buf();
    let mut s = String::new();
    let _ =
        writeln!(s, "Lorenz-96 (40 variables) as a component in three languages; ETKF N={members}, {cycles} cycles per sample, median of {samples} samples");
    let _ = writeln!(s, "  {:<14} {:>9} {:>16} {:>16} {:>12} {:>10}", "component", "MB", "first compile s", "cached load ms", "ms/cycle", "vs Rust");
    let mut models = Vec::new();
    let mut rows = Vec::new();
    for name in names {
        let path = plugins.join(format!("{name}.wasm"));
        let size =
            std::fs::metadata(&path).map_err(|e| anyhow::anyhow!("{}: {e} (build it: plugins/build.sh, build-python.sh, build-js.sh)", path.display()))?.len();
        let start = Instant::now();
        Runtime::new(Limits::default(), Some(cache.clone()))?.load(name, &path, World::ForwardModel)?;
        let first = start.elapsed().as_secs_f64();
        let runtime = Runtime::new(Limits::default(), Some(cache.clone()))?;
        let start = Instant::now();
        let loaded = runtime.load(name, &path, World::ForwardModel)?;
        let cached = start.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(loaded.from_cache, "{name}: the second load did not come from the compile cache");
        let model = WasmForward::new(&runtime, &loaded, r#"{"F": 8.0, "size": 40}"#)?;
        models.push((runtime, model));
        rows.push((name, size as f64 / 1e6, first, cached));
    }
    let mut bench = EtkfTiming::new(members, cycles, "perf languages")?;
    let mut cycle_ms = |model: &mut dyn ForwardModel| bench.cycle_ms(model);
    let mut times = vec![Vec::new(); names.len()];
    let mut ratios = vec![Vec::new(); names.len()];
    for sample in 0..=samples {
        let ms = models.iter_mut().map(|(_, m)| cycle_ms(m)).collect::<Result<Vec<f64>>>()?;
        if sample == 0 {
            continue; // warm-up
        }
        for (i, t) in ms.iter().enumerate() {
            times[i].push(*t);
            ratios[i].push(t / ms[0]);
        }
    }
    for (i, (name, mb, first, cached)) in rows.into_iter().enumerate() {
        let (t, r) = (median(times[i].clone()), median(ratios[i].clone()));
        let _ = writeln!(s, "  {name:<14} {mb:>9.1} {first:>16.2} {cached:>16.1} {t:>12.3} {r:>9.1}×");
    }
    Ok(s.trim_end().to_string())
}

/// Registry throughput: BLAKE3 over a 1 GiB file (one thread and all
/// threads, memory-mapped), and registering small artifacts (each one a
/// durable blob write plus a transaction).
pub fn registry_throughput(dir: &Path, gib: u64, small: usize) -> Result<String> {
    use geohost_registry::{NewArtifact, Registry};
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let big = dir.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
        let mut block = vec![0u8; 1 << 20];
        for i in 0..(gib << 10) {
            block[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let bytes = (gib << 30) as f64;
    let hash_gbs = |parallel: bool| -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let mut h = blake3::Hasher::new();
            if parallel {
                h.update_mmap_rayon(&big)?;
            } else {
                h.update_mmap(&big)?;
            }
            std::hint::black_box(h.finalize());
            v.push(bytes / start.elapsed().as_secs_f64() / 1e9);
        }
        Ok(median(v))
    };
    let single = hash_gbs(false)?;
    let parallel = hash_gbs(true)?;
    std::fs::remove_file(&big)?;

    let reg_dir = dir.join("registry");
    let _ = std::fs::remove_dir_all(&reg_dir);
    let mut reg = Registry::open(&reg_dir)?;
    let start = Instant::now();
    for i in 0..small {
        let a = NewArtifact { kind: "file".into(), name: format!("small-{i}"), media_type: "application/octet-stream".into(), ..Default::default() };
        reg.add(format!("small artifact number {i} {}", "x".repeat(1000)).as_bytes(), &a)?;
    }
    let per_s = small as f64 / start.elapsed().as_secs_f64();
    drop(reg);
    std::fs::remove_dir_all(&reg_dir)?;
    let mut s = String::new();
    let _ = writeln!(s, "BLAKE3 over a {gib} GiB file (median of 3, page cache warm)");
    let _ = writeln!(s, "  one thread:   {single:.2} GB/s");
    let _ = writeln!(s, "  all threads:  {parallel:.2} GB/s");
    let _ = write!(s, "registering {small} artifacts of ~1 KiB (blob fsync + transaction each): {per_s:.0} artifacts/s");
    Ok(s)
}

/// Samples per second of a training `step` on `batch` samples: 20
/// warm-up steps, then the median of `samples` runs of `steps` steps.
fn samples_per_s(batch: usize, samples: usize, steps: usize, step: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..20 {
        step()?;
    }
    let ms = time_ms(samples, steps, || (0..steps).try_for_each(|_| step()))?;
    Ok(batch as f64 * 1e3 / ms)
}

/// Samples/s of the fused AdamW step (what `geohost train` uses for an
/// mlp) on `net`'s architecture and initial weights, batch `x` → `y`.
/// Its GEMMs use MATMUL_NUM_THREADS threads (read once per process).
fn fused_mlp_throughput(net: &geohost_learn::net::Net, x: &candle_core::Tensor, y: &candle_core::Tensor, steps: usize, samples: usize) -> Result<f64> {
    use geohost_learn::fused;
    let batch = x.dims2()?.0;
    let mut trainer = fused::MlpTrainer::from_net(net, batch, fused::AdamW::new(1e-4, 0.01))?;
    let (xv, yv) = (x.flatten_all()?.to_vec1::<f32>()?, y.flatten_all()?.to_vec1::<f32>()?);
    samples_per_s(batch, samples, steps, &mut || {
        trainer.step(&xv, &yv, batch, 1.0);
        Ok(())
    })
}

/// The fused MLP 40-256-256-40 step alone (for a run under another
/// MATMUL_NUM_THREADS): samples/s.
pub fn fused_mlp_only(steps: usize, samples: usize) -> Result<f64> {
    use candle_core::{Device, Tensor};
    use geohost_learn::net::{Arch, Description, Net, Scaling};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let desc =
        Description { arch: Arch::Mlp { hidden: vec![256, 256] }, state_size: 40, dt: 0.05, lead: 1, scaling: Scaling { mean: 2.3, std: 3.6, out_std: 4.0 } };
    let net = Net::new(desc, &mut rng)?;
    let x = Tensor::randn(2.3f32, 3.6, (256, 40), &Device::Cpu)?;
    let y = (&x + Tensor::randn(0f32, 0.5, (256, 40), &Device::Cpu)?)?;
    fused_mlp_throughput(&net, &x, &y, steps, samples)
}

/// Training throughput of the emulator networks and the cost of one
/// ensemble step through an emulator against the wasm model.
///
/// Training: `steps` AdamW steps on random batches (forward, backward,
/// update), after 20 warm-up steps; samples/s of the median sample.
/// The MLP 40-256-256-40 at batch 256 is the network whose PyTorch figure
/// is quoted for comparison in docs/performance.md.
pub fn emulator_cost(runtime: &Runtime, plugin: &Path, members: usize, steps: usize, samples: usize) -> Result<String> {
    use candle_core::{Device, Tensor};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    use geohost_learn::net::{Arch, Description, Net, Scaling};
    use geohost_learn::neural::NeuralForward;

    let m = 40;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let desc = |arch: Arch| Description { arch, state_size: m, dt: 0.05, lead: 1, scaling: Scaling { mean: 2.3, std: 3.6, out_std: 4.0 } };
    let mut out = String::new();
    let _ = writeln!(out, "emulator training throughput (AdamW, forward + backward + update, {} thread(s)):", candle_core::utils::get_num_threads());
    let networks = [
        ("MLP 40-256-256-40, batch 256", Arch::Mlp { hidden: vec![256, 256] }, 256),
        ("CNN (bilinear, C=8, k=5, h=8) + RK4, batch 128", Arch::Cnn { channels: 8, kernel: 5, hidden: 8 }, 128),
    ];
    for (label, arch, batch) in networks {
        let net = Net::new(desc(arch), &mut rng)?;
        let mut opt = AdamW::new(net.vars(), ParamsAdamW { lr: 1e-4, ..Default::default() })?;
        let x = Tensor::randn(2.3f32, 3.6, (batch, m), &Device::Cpu)?;
        let y = (&x + Tensor::randn(0f32, 0.5, (batch, m), &Device::Cpu)?)?;
        let mut step = || -> Result<()> {
            let loss = (net.forward(&x)? - &y)?.sqr()?.mean_all()?;
            opt.backward_step(&loss)?;
            Ok(())
        };
        let rate = samples_per_s(batch, samples, steps, &mut step)?;
        let _ = writeln!(out, "  {label:<50} {rate:>9.0} samples/s  (candle autograd)");
        if let Arch::Mlp { .. } = &net.desc.arch {
            let rate = fused_mlp_throughput(&net, &x, &y, steps, samples)?;
            let _ = writeln!(out, "  {label:<50} {rate:>9.0} samples/s  (fused step, used by `geohost train`)");
        }
    }
    let _ = writeln!(out, "  (PyTorch 2.15 on this machine kind, same MLP: about 123 000 samples/s on one thread, 180 000 on two)");

    // One ensemble step: emulator against the wasm model.
    let loaded = runtime.load("lorenz96", plugin, World::ForwardModel)?;
    let mut wasm = WasmForward::new(runtime, &loaded, r#"{"F": 8.0, "size": 40}"#)?;
    let info = serde_json::to_value(wasm.info())?;
    let mut e = DMatrix::from_fn(m, members, |i, j| 2.0 + ((i * 7 + j * 3) % 11) as f64 * 0.5);
    let _ = writeln!(out, "one ensemble step, N = {members} (median µs):");
    let e0 = e.clone();
    let wasm_us = time_ms(samples, 200, || {
        for _ in 0..200 {
            e.copy_from(&e0);
            wasm.advance(&mut e, 0.0, 0.05)?;
        }
        Ok(())
    })? * 1e3;
    let _ = writeln!(out, "  {:<50} {wasm_us:>9.1}", "wasm lorenz96 (RK4)");
    for (label, arch) in [
        ("emulator, MLP 40-256-256-40", Arch::Mlp { hidden: vec![256, 256] }),
        ("emulator, CNN (C=8, k=5, h=8) + RK4", Arch::Cnn { channels: 8, kernel: 5, hidden: 8 }),
    ] {
        let net = Net::new(desc(arch), &mut rng)?;
        let bytes = net.to_safetensors(&serde_json::json!({ "model": info }))?;
        let mut neural = NeuralForward::from_bytes("perf", &bytes)?;
        let us = time_ms(samples, 200, || {
            for _ in 0..200 {
                e.copy_from(&e0);
                neural.advance(&mut e, 0.0, 0.05)?;
            }
            Ok(())
        })? * 1e3;
        let _ = writeln!(out, "  {label:<50} {us:>9.1}  ({:.1}× the wasm step)", us / wasm_us);
    }
    Ok(out)
}

/// The 10-dimensional linear-Gaussian task of sbibm (`gaussian_linear`):
/// prior N(0, 0.1·I), x ~ N(θ, 0.1·I), so the posterior is N(x/2, 0.05·I).
/// Trains the step-5 mixture density network on `simulations` pairs and
/// scores it by C2ST against exact posterior samples for `observations`
/// observations drawn from the prior predictive; prints the training time
/// and the per-observation sampling time.
pub fn posterior_benchmark(simulations: usize, observations: usize, samples: usize, spec: &geohost_learn::mdn::MdnSpec) -> Result<String> {
    use geohost_da::params::prior::{Prior, PriorSpec};
    use geohost_learn::c2st::{c2st, Spec};
    use geohost_learn::density::Density;
    use rand::Rng;
    use rand_distr::StandardNormal;

    let d = 10;
    let sd = 0.1f64.sqrt();
    let names: Vec<String> = (0..d).map(|i| format!("theta{i}")).collect();
    let specs: Vec<PriorSpec> = names.iter().map(|n| PriorSpec { name: n.clone(), uniform: None, normal: Some([0.0, sd]), bounds: None }).collect();
    let prior = Prior::new(&specs, &names)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5b1b);
    let simulate = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| {
        let thetas = DMatrix::from_fn(d, n, |_, _| sd * rng.sample::<f64, _>(StandardNormal));
        let xs = thetas.map(|t| t + sd * rng.sample::<f64, _>(StandardNormal));
        (thetas, xs)
    };
    let (thetas, xs) = simulate(simulations, &mut rng);
    let (mdn, training) = Density::train(&prior, &thetas, &xs, None, spec, &mut |_, _, _| {})?;
    let mut out = String::new();
    let network = match spec.estimator {
        geohost_learn::mdn::Estimator::Mdn => format!("mixture density network ({} components, hidden {:?}), one thread", spec.components, spec.hidden),
        geohost_learn::mdn::Estimator::Nsf => format!("neural spline flow (hidden {:?}, one conditioner per parameter, in parallel)", spec.hidden),
        geohost_learn::mdn::Estimator::Maf => format!("affine autoregressive flow (hidden {:?}, {} layers)", spec.hidden, spec.layers.unwrap_or(5)),
    };
    let _ = writeln!(out, "sbibm gaussian_linear (10-D), {simulations} simulations, {network}:");
    let _ = writeln!(
        out,
        "  training: {:.1} s ({} epochs, best {}, validation NLL {:.3})",
        training.seconds, training.epochs, training.best_epoch, training.best_val_nll
    );
    let mut scores = Vec::new();
    let mut sample_ms = Vec::new();
    for k in 0..observations {
        let (_, x) = simulate(1, &mut rng);
        let start = Instant::now();
        let q = mdn.sample(x.as_slice(), samples, &mut rng)?;
        sample_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let exact = DMatrix::from_fn(d, samples, |i, _| x[(i, 0)] / 2.0 + 0.05f64.sqrt() * rng.sample::<f64, _>(StandardNormal));
        let score = c2st(&exact, &q, Spec { seed: k as u64, ..Spec::default() })?;
        scores.push(score);
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let _ = writeln!(out, "  C2ST against the exact posterior, {samples} samples each: mean {mean:.4} over {observations} observations");
    let _ = writeln!(out, "    per observation: {}", scores.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(" "));
    let _ = writeln!(out, "  sampling {samples} draws: median {:.1} ms per observation", median(sample_ms));
    let _ = write!(out, "  (sbibm paper: sbi's NPE reaches C2ST 0.55-0.56 here at 10 000 simulations; sbi 0.27 NPE-MAF trains in about 20 s on one thread of this machine kind)");
    Ok(out)
}

/// What `perf posterior --task` runs.
pub struct SbibmTask<'a> {
    pub name: &'a str,
    pub sets: &'a std::path::Path,
    pub data: &'a std::path::Path,
    pub simulations: usize,
    pub samples: usize,
    pub seeds: usize,
}

/// sbibm's Bernoulli-GLM prior precision B = RRᵀ and its Cholesky factor
/// R: the same construction as plugins/sbibm (which simulates with
/// β = R⁻ᵀz), to map whitened draws z back to sbibm's β.
fn bernoulli_whitening() -> Result<nalgebra::DMatrix<f64>> {
    let m = 9;
    let d = DMatrix::from_fn(m, m, |i, j| {
        if i == j {
            1.0
        } else if i == j + 1 {
            -1.0
        } else {
            0.0
        }
    });
    let f = &d * &d + DMatrix::from_fn(m, m, |i, j| if i == j { (i as f64 / m as f64).sqrt() } else { 0.0 });
    let mut b = DMatrix::zeros(10, 10);
    b[(0, 0)] = 0.5;
    b.view_mut((1, 1), (m, m)).copy_from(&(f.transpose() * &f));
    Ok(nalgebra::Cholesky::new(b).context("the Bernoulli GLM prior precision is not positive definite")?.l())
}

/// `perf posterior --task`: train the task's plugin-set (cycles/sbibm) at
/// `simulations` pairs through the real pipeline (the sbibm plugin in the
/// sandbox), once per seed, and print the C2ST against sbibm's reference
/// posterior for each of its ten observations (`samples` draws each, as
/// sbibm's protocol: 10,000), the mean and, over seeds, its spread, and the
/// time the training took.
pub fn sbibm_benchmark(runtime: &geohost_sandbox::Runtime, task: &SbibmTask, estimator: Option<geohost_learn::mdn::Estimator>) -> Result<String> {
    use geohost_learn::c2st::{c2st, Spec};
    let set_path = task.sets.join(format!("{}.toml", task.name));
    if !set_path.is_file() {
        bail!("no plugin-set {} for task `{}` (tasks: gaussian_linear_uniform, gaussian_mixture, bernoulli_glm)", set_path.display(), task.name);
    }
    let folder = task.data.join(task.name);
    if !folder.join("num_observation_1").is_dir() {
        bail!("{} has no sbibm reference posteriors: run scripts/fetch-sbibm.sh {}", folder.display(), task.data.display());
    }
    let beta_names: Vec<String> = (1..=10).map(|i| format!("parameter_{i}")).collect();
    let whitening = if task.name == "bernoulli_glm" { Some(bernoulli_whitening()?) } else { None };
    let mut out = String::new();
    let mut means = Vec::new();
    let mut header = String::new();
    for seed in 0..task.seeds as u64 {
        let mut set = geohost_cycle::static_run::StaticSet::load(&set_path)?;
        let spec = set.set.step5.as_mut().with_context(|| format!("{} has no [step5]", set_path.display()))?;
        spec.simulations = task.simulations;
        spec.seed = seed;
        spec.network.seed = seed;
        if let Some(e) = estimator {
            spec.network.estimator = e;
            if e != geohost_learn::mdn::Estimator::Nsf {
                (spec.network.bins, spec.network.bound) = (None, None);
            }
            if e == geohost_learn::mdn::Estimator::Mdn {
                spec.network.layers = None;
            }
        }
        header = format!("sbibm {} at {} simulations, {:?} (hidden {:?}):", task.name, task.simulations, spec.network.estimator, spec.network.hidden);
        let start = Instant::now();
        let (record, weights) = geohost_cycle::static_run::train_posterior(&set, runtime, None, &mut |_, _, _| {})?;
        let total = start.elapsed().as_secs_f64();
        let (predictor, _) = geohost_learn::refine::Predictor::from_safetensors(&record.name, &weights)?;
        let names = predictor.parameters().to_vec();
        let mut scores = Vec::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xc25);
        for k in 1..=10 {
            let dir = folder.join(format!("num_observation_{k}"));
            let y = geohost_cycle::tables::read_observation(&dir.join("observation.csv"))?;
            let reference =
                geohost_cycle::tables::read_samples(&dir.join("reference_posterior_samples.csv"), if whitening.is_some() { &beta_names } else { &names })?;
            let mut q = predictor.first.sample(&y, task.samples.min(reference.ncols()), &mut rng)?;
            if let Some(r) = &whitening {
                // β = R⁻ᵀz for every draw.
                q = r.transpose().solve_upper_triangular(&q).context("the whitening factor is singular")?;
            }
            scores.push(c2st(&reference, &q, Spec { seed: k, ..Spec::default() })?);
        }
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        means.push(mean);
        let _ = writeln!(
            out,
            "  seed {seed}: C2ST mean {mean:.3} [{}]; training {:.1} s ({} epochs), simulations and training {total:.1} s",
            scores.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(" "),
            record.training.seconds,
            record.training.epochs
        );
    }
    let m = means.iter().sum::<f64>() / means.len() as f64;
    let _ = write!(out, "  over {} seed(s): mean C2ST {m:.3}", means.len());
    if means.len() > 1 {
        let sd = (means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (means.len() - 1) as f64).sqrt();
        let _ = write!(out, ", sd {sd:.3}");
    } else {
        let _ = write!(out, " (--seeds 3 or more for the spread)");
    }
    Ok(format!("{header}\n{out}"))
}

/// Submissions: the ETKF as a `filter` component against the native ETKF
/// (ms per analysis cycle on the same twin, native Lorenz-96 and H = I, so
/// the difference is the analysis crossing the sandbox), then the
/// throughput of small submissions through `bench submit`'s whole path
/// (child-process compile from a warm cache, instantiate, a public and a
/// one-experiment hidden run of `small_cycles`, scoring) in a scratch
/// registry under `dir`.
pub fn submission_cost(runtime: &Runtime, plugins: &Path, members: usize, cycles: usize, samples: usize, small: usize, small_cycles: usize) -> Result<String> {
    use geohost_cycle::bench::{prereg, submit, Contract};
    use geohost_cycle::pluginset::PluginSet;
    use geohost_da::submission::Submission;
    use geohost_sandbox::{Problem, WasmFilter};
    let plugins = &std::fs::canonicalize(plugins).map_err(|e| anyhow::anyhow!("plugin directory {}: {e}", plugins.display()))?;

    let mut native = Lorenz96::new(40, 8.0);
    let mut obs = LinearObs::new(DMatrix::identity(40, 40), vec![1.0; 40]);
    let mut x0 = vec![0.0; 40];
    x0[0] = 1.0;
    let chronology = Chronology { dt: 0.05, steps_per_obs: 1, cycles, burn_in: 0.0 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let twin = twin::simulate(&mut native, &mut obs, chronology, Prior::gaussian(DVector::from_vec(x0), 0.001), false, &mut rng)?;
    let params = toml::Table::from_iter([("N".to_string(), toml::Value::Integer(members as i64)), ("infl".to_string(), toml::Value::Float(1.02))]);
    let etkf = geohost_da::parse_method("etkf", &params, "perf submission")?;
    let loaded = runtime.load("filter-etkf", &plugins.join("filter-etkf.wasm"), World::Filter)?;
    let problem = Problem {
        state_size: 40,
        obs_size: 40,
        noise_variance: vec![1.0; 40],
        locations: (0..40).map(f64::from).collect(),
        grid: Some(geohost_sandbox::model::Grid { points: 40, periodic: true }),
        dt: 0.05,
    };
    let config = serde_json::json!({ "N": members, "infl": 1.02 });
    let component = WasmFilter::new(runtime, &loaded, &config.to_string(), &problem, None)?;
    let submitted = geohost_da::Method::from_method(Submission::new("blake3:perf".into(), config, component))?;
    let mut cycle_ms = |method: &geohost_da::Method| -> Result<f64> {
        let start = Instant::now();
        method.run(&twin, &mut native, &mut obs, 7, Default::default(), &mut |_| {})?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / cycles as f64)
    };
    cycle_ms(&etkf)?;
    cycle_ms(&submitted)?;
    let (mut native_v, mut wasm_v, mut ratio_v) = (vec![], vec![], vec![]);
    for _ in 0..samples {
        let (n, w) = (cycle_ms(&etkf)?, cycle_ms(&submitted)?);
        native_v.push(n);
        wasm_v.push(w);
        ratio_v.push(w / n);
    }

    // Small submissions through the whole path, in a scratch registry.
    let scratch = geohost_cycle::scratch::private("perf")?;
    let dir = scratch.path();
    let result = (|| -> Result<(f64, f64)> {
        let set_path = dir.join("set.toml");
        std::fs::write(
            &set_path,
            format!(
                "name = \"set\"\n[model]\nplugin = \"{m}\"\nconfig = {{ F = 8.0, size = 40 }}\n[observations]\nplugin = \"{o}\"\nconfig = {{ select = \"all\", variance = 1.0 }}\n[experiment]\ncycles = {small_cycles}\nseed = 1\nx0 = \"e0\"\nx0_variance = 0.001\n[output]\nmembers_every = 5\n[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n[[method]]\nmethod = \"3dvar\"\nxB = 0.02\n",
                m = plugins.join("lorenz96.wasm").display(),
                o = plugins.join("obs-subset.wasm").display()
            ),
        )?;
        let contract_path = dir.join("contract.toml");
        std::fs::write(
            &contract_path,
            format!(
                "name = \"perf\"\nversion = \"1\"\ntask = \"throughput\"\ntarget_step = 2\noracle_step = 2\nl_transition = \"L3_L4\"\noracle = \"set/ETKF N=20 infl=1.04\"\noracle_strength = \"classical_method\"\n[carriers.input]\nname = \"obs\"\nshape = [40]\nunits = \"1\"\n[carriers.output]\nname = \"analysis_mean\"\nshape = [40]\nunits = \"1\"\n[reference]\nplugin_set = \"set.toml\"\n[splits]\nevaluate_after = 0.0\n[hidden]\nexperiments = 1\n[[metrics]]\ncomponent = \"{c}\"\nconfig = {{ metrics = [\"rmse\"] }}\n[[metrics]]\ncomponent = \"{c}\"\nconfig = {{ metrics = [\"spread_skill\"] }}\nensemble = true\n[[baselines]]\nmethod = \"3dvar\"\nxB = 0.02\n",
                c = plugins.join("metrics-standard.wasm").display()
            ),
        )?;
        let mut registry = geohost_registry::Registry::open(&dir.join("registry"))?;
        let mut quiet = |_: &str, _: usize| -> Box<dyn geohost_cycle::progress::Progress> { Box::new(geohost_cycle::progress::Silent) };
        let set = PluginSet::load(&set_path)?;
        let run = geohost_cycle::run::run(&set, runtime, Some(&mut registry), None, &mut quiet, Default::default())?;
        let written = geohost_cycle::outputs::write(&dir.join("out"), &run, &set)?;
        geohost_cycle::outputs::register(&mut registry, &set, &run, &written)?;
        let contract = Contract::load(&contract_path)?;
        prereg::preregister(&mut registry, runtime, &contract, &mut quiet)?;
        let options = submit::SubmitOptions {
            component: plugins.join("filter-nudging.wasm"),
            config: serde_json::json!({}),
            name: None,
            exe: std::env::current_exe()?,
            cache_dir: dir.join("cache"),
            submitter: None,
        };
        let mut times = Vec::new();
        for i in 0..=small {
            let start = Instant::now();
            let s = submit::submit(&mut registry, runtime, &contract, &options, &mut quiet)?;
            anyhow::ensure!(s.disqualified().is_none(), "the throughput submission was disqualified: {:?}", s.disqualified());
            // The first one compiles; the rest find the cache warm.
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let per = median(times);
        Ok((per * 1e3, 1.0 / per))
    })();
    let (small_ms, per_s) = result?;

    let mut s = String::new();
    let _ = writeln!(s, "ETKF N={members} as a filter component against the native ETKF: Lorenz-96 (40 variables, native), H = I, {cycles} cycles per sample, median of {samples}");
    let _ = writeln!(s, "  ms per analysis cycle, native ETKF:     {:.4}", median(native_v));
    let _ = writeln!(s, "  ms per analysis cycle, ETKF component:  {:.4}", median(wasm_v));
    let _ = writeln!(s, "  ratio component/native:                 {:.3} (median of paired samples)", median(ratio_v));
    let _ = writeln!(s, "small submissions (nudging, {small_cycles} cycles public + 1 hidden experiment, scored), median of {small}:");
    let _ = write!(s, "  ms per submission:                      {small_ms:.1}  ({per_s:.2} submissions/s)");
    Ok(s)
}

/// The plugin-sets `geohost perf threads` runs when given none: the
/// Lorenz-96 LETKF at three sizes and the QG timing cycle.
pub const THREAD_SETS: [&str; 4] =
    ["cycles/bench/l96-letkf-400.toml", "cycles/bench/l96-letkf-4000.toml", "cycles/bench/l96-letkf-40000.toml", "cycles/bench/qg-timing.toml"];

/// What one `geohost run` of a plugin-set reported: its methods' figures
/// and its model instances.
struct RunFigures {
    methods: Vec<MethodFigures>,
    instances: usize,
}

/// One method's row of a run's `summary.json`.
struct MethodFigures {
    label: String,
    ms_per_cycle: f64,
    /// ms per cycle by phase (none for a method without an ensemble cycle).
    phases: Vec<(String, f64)>,
}

/// Run `geohost run --no-registry -q SET --out OUT RUN_ARGS` as a child
/// process on `threads` threads (GEOHOST_THREADS) and read its
/// `summary.json`.
fn run_child(set: &Path, threads: usize, out: &Path, run_args: &[String]) -> Result<RunFigures> {
    let exe = std::env::current_exe().context("finding this geohost binary to run the plugin-sets with")?;
    let child = std::process::Command::new(&exe)
        .args(["run", "--no-registry", "-q"])
        .arg(set)
        .arg("--out")
        .arg(out)
        .args(run_args)
        .env("GEOHOST_THREADS", threads.to_string())
        .output()
        .with_context(|| format!("starting {}", exe.display()))?;
    if !child.status.success() {
        let stderr = String::from_utf8_lossy(&child.stderr);
        let plural = if threads == 1 { "" } else { "s" };
        bail!("`geohost run {}` on {threads} thread{plural} failed ({}):\n{}", set.display(), child.status, stderr.trim_end());
    }
    let path = out.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let instances = summary["parallelism"]["model_instances"].as_u64().unwrap_or(1) as usize;
    let mut methods = Vec::new();
    for row in summary["results"].as_array().into_iter().flatten() {
        let label = row["label"].as_str().unwrap_or("?").to_string();
        let ms_per_cycle = row["ms_per_cycle"].as_f64().with_context(|| format!("{}: a result without ms_per_cycle", path.display()))?;
        let phases = row["phases_ms"].as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
        methods.push(MethodFigures { label, ms_per_cycle, phases });
    }
    anyhow::ensure!(!methods.is_empty(), "`geohost run {}` reported no method's results in {}", set.display(), path.display());
    Ok(RunFigures { methods, instances })
}

/// `geohost perf threads`: each plugin-set's whole `geohost run` cycle on
/// each of `threads` thread counts (child processes with GEOHOST_THREADS,
/// so one model and operator instance per thread unless `run_args` say
/// otherwise), `rounds` times with the counts taking turns, and after
/// each round the machine's [`ceiling_sample`] per count and a
/// [`round_trip_ns`] sample. Per method: ms per cycle and per phase
/// (medians), the speed-up over the first count (the median of the
/// rounds' paired ratios, and their range), the ceiling (median) and the
/// round trips' range.
pub fn thread_runs(sets: &[std::path::PathBuf], threads: &[usize], rounds: usize, run_args: &[String]) -> Result<String> {
    if threads.is_empty() || threads.contains(&0) || rounds == 0 {
        bail!("--threads needs counts of at least 1 and --rounds at least 1");
    }
    for set in sets {
        anyhow::ensure!(set.is_file(), "plugin-set {} not found (run from the repository's root, or give the sets' paths)", set.display());
    }
    let scratch = geohost_cycle::scratch::private("perf")?;
    let dir = scratch.path();
    let result = (|| -> Result<String> {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Whole cycles of `geohost run` in child processes on t threads (GEOHOST_THREADS=t), {rounds} rounds, the counts taking turns; \
             ms per cycle and per phase (medians); the speed-up is the median of the rounds' paired ratios [their range]; \
             ceiling: t copies of one CPU-bound job at once against one, after each round (median), what the machine gives t threads now; \
             round-trip: a cache line's from one core to another and back after each round, ns [lowest–highest], what a hand-off between threads costs now"
        );
        if !run_args.is_empty() {
            let _ = writeln!(out, "  each run with: {}", run_args.join(" "));
        }
        for set in sets {
            // runs[i][round]: count i's run in that round.
            let mut runs: Vec<Vec<RunFigures>> = threads.iter().map(|_| Vec::new()).collect();
            let mut ceilings: Vec<Vec<f64>> = vec![Vec::new(); threads.len()];
            let mut trips: Vec<f64> = Vec::new();
            for _ in 0..rounds {
                for (i, &t) in threads.iter().enumerate() {
                    runs[i].push(run_child(set, t, &dir.join(format!("t{t}")), run_args)?);
                }
                for (i, &t) in threads.iter().enumerate().skip(1) {
                    ceilings[i].push(ceiling_sample(t)?);
                }
                if threads.iter().any(|&t| t > 1) {
                    trips.extend(round_trip_ns());
                }
            }
            let trip_range = value_range(&mut trips, 0);
            for (m, MethodFigures { label, phases, .. }) in runs[0][0].methods.iter().enumerate() {
                let _ = writeln!(out, "{}: {label}", set.display());
                let names: Vec<&String> = phases.iter().map(|(name, _)| name).collect();
                let mut header =
                    format!("  {:>7} {:>9} {:>10} {:>9} {:>11} {:>8} {:>10}", "threads", "instances", "ms/cycle", "speed-up", "range", "ceiling", "round-trip");
                names.iter().for_each(|name| {
                    let _ = write!(header, " {name:>10}");
                });
                let _ = writeln!(out, "{header}");
                let ms = |i: usize| -> Result<Vec<f64>> {
                    runs[i].iter().map(|r| r.methods.get(m).map(|x| x.ms_per_cycle).context("a run reported fewer methods than the first")).collect()
                };
                let base = ms(0)?;
                for (i, &t) in threads.iter().enumerate() {
                    let cycle = ms(i)?;
                    let mut line = format!("  {t:>7} {:>9} {:>10.4}", runs[i][0].instances, median(cycle.clone()));
                    if i == 0 {
                        let _ = write!(line, " {:>9} {:>11} {:>8} {:>10}", "-", "-", "-", "-");
                    } else {
                        let mut ratios: Vec<f64> = base.iter().zip(&cycle).map(|(b, c)| b / c).collect();
                        let range = value_range(&mut ratios, 2);
                        let _ = write!(line, " {:>9.2} {range:>11} {:>8.2} {trip_range:>10}", median(ratios.clone()), median(ceilings[i].clone()));
                    }
                    for name in &names {
                        let values: Vec<f64> =
                            runs[i].iter().filter_map(|r| r.methods.get(m)?.phases.iter().find(|(n, _)| n == *name).map(|(_, v)| *v)).collect();
                        if values.is_empty() {
                            let _ = write!(line, " {:>10}", "-");
                        } else {
                            let _ = write!(line, " {:>10.3}", median(values));
                        }
                    }
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        Ok(out)
    })();
    result.map(|s| s.trim_end().to_string())
}
