//! Standard verification metrics, as a `metric` component.
//!
//! Cases are rows (times or samples), variables are columns. With N
//! ensemble members x_1..x_N and reference y:
//! - `rmse`: mean over cases of sqrt(mean_i (p_i − y_i)²) (DAPPER's
//!   time-mean RMSE of the prediction p)
//! - `bias`: mean of p − y; `mae`: mean of |p − y|
//! - `spread`: mean over cases of sqrt(mean_i var_i), var with N − 1
//! - `spread_skill`: spread / (the `rmse` of the ensemble mean)
//! - `crps`: the standard ensemble estimator
//!   (1/N) Σ_j |x_j − y| − 1/(2N²) Σ_j Σ_k |x_j − x_k|, averaged over cases
//!   and variables; `crps_fair`: the same with 1/(2N(N−1)) (unbiased for
//!   the distribution the members are drawn from; Ferro 2014)
//! - `rank_histogram`: frequency of rank r = #{j: x_j < y}, r = 0..N
//! - `coverage`: for each level α in `levels`, the fraction of values
//!   inside the central α interval of the members (empirical quantiles with
//!   linear interpolation, numpy's default)
//! - `energy_score`: (1/N) Σ_j ‖x_j − y‖ − 1/(2N²) Σ_j Σ_k ‖x_j − x_k‖ per
//!   case (Euclidean over variables), averaged over cases
//!
//!
//! Forecast metrics, for rows grouped by case: `leads` consecutive rows per
//! case (lead 1 … L), so rows = cases × leads:
//! - `rmse_by_lead`: for each lead, the mean over cases of the row RMSE;
//! - `one_step_rmse`: its first entry;
//! - `valid_time`: per case, the time of the first lead whose row RMSE
//!   exceeds `threshold` × `scale` (Pathak et al. 2018's valid prediction
//!   time), in units of 1/`lyapunov` (Lyapunov times when `lyapunov` is the
//!   leading exponent), averaged over cases; a case that never exceeds it
//!   counts the full horizon;
//! - `psd_error`: the mean over wavenumbers k ≥ 1 of |log10 P̂(k) − log10 P(k)|,
//!   P the periodic spatial power spectrum |DFT|² of each row averaged over
//!   rows, for prediction (P̂) and reference (P).
//!
//! Detection and regression metrics, over every value (rows × cols),
//! e.g. one row per scene with its emission or detection statistic:
//! - `slope`, `intercept`, `r2`: ordinary least squares of the prediction
//!   on the reference (an IME emission estimate against the true rate);
//! - `pod` and `detection_threshold`: values whose reference is 0 are the
//!   null cases; the threshold is the `1 − far` empirical quantile of
//!   their predictions (numpy's linear), and `pod` the fraction of the
//!   others (reference > 0) whose prediction exceeds it (the probability
//!   of detection at false-alarm rate `far`).
//!
//! Config: `metrics` (a list; default all but the forecast and detection metrics),
//! `levels` (default [0.5, 0.8, 0.9]); for forecast metrics `leads`
//! (required), `dt` (time per lead, default 1), `lyapunov` (default 1),
//! `threshold` (default 0.5), `scale` (default: the reference's standard
//! deviation); for `pod` `far` (default 0.05).

use geohost_sdk::{Config, EnsembleTable, Metric, MetricInfo, MetricInput, Table, Value};

const ALL: &[&str] = &["rmse", "bias", "mae", "spread", "spread_skill", "crps", "crps_fair", "rank_histogram", "coverage", "energy_score"];
const FORECAST: &[&str] = &["rmse_by_lead", "one_step_rmse", "valid_time", "psd_error"];
const DETECTION: &[&str] = &["slope", "intercept", "r2", "pod", "detection_threshold"];
const NEEDS_MEMBERS: &[&str] = &["spread", "spread_skill", "crps", "crps_fair", "rank_histogram", "coverage", "energy_score"];

struct Standard {
    metrics: Vec<String>,
    levels: Vec<f64>,
    forecast: Forecast,
    far: f64,
}

/// How forecast rows are grouped and timed.
struct Forecast {
    leads: Option<usize>,
    dt: f64,
    lyapunov: f64,
    threshold: f64,
    scale: Option<f64>,
}

/// Per-row RMSE.
fn row_rmse(p: Table<'_>, y: Table<'_>, r: usize) -> f64 {
    ((0..y.cols).map(|c| (p.row(r)[c] - y.row(r)[c]).powi(2)).sum::<f64>() / y.cols as f64).sqrt()
}

/// Mean periodic power spectrum |DFT|² over rows, wavenumbers 0..=cols/2.
fn mean_spectrum(t: Table<'_>) -> Vec<f64> {
    let n = t.cols;
    let half = n / 2;
    // Twiddle factors once (trigonometry is costly in wasm).
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..=half)
        .flat_map(|k| (0..n).map(move |j| -2.0 * std::f64::consts::PI * ((k * j) % n) as f64 / n as f64))
        .map(|phase| (phase.cos(), phase.sin()))
        .unzip();
    let mut out = vec![0.0; half + 1];
    for r in 0..t.rows {
        let x = t.row(r);
        for (k, o) in out.iter_mut().enumerate() {
            let (c, s) = (&cos[k * n..(k + 1) * n], &sin[k * n..(k + 1) * n]);
            let re: f64 = x.iter().zip(c).map(|(v, w)| v * w).sum();
            let im: f64 = x.iter().zip(s).map(|(v, w)| v * w).sum();
            *o += (re * re + im * im) / t.rows as f64;
        }
    }
    out
}

fn rmse(p: &dyn Fn(usize, usize) -> f64, y: Table<'_>) -> f64 {
    let per_case = (0..y.rows).map(|r| ((0..y.cols).map(|c| (p(r, c) - y.row(r)[c]).powi(2)).sum::<f64>() / y.cols as f64).sqrt());
    per_case.sum::<f64>() / y.rows as f64
}

fn member_values(e: EnsembleTable<'_>, r: usize, c: usize, out: &mut Vec<f64>) {
    out.clear();
    out.extend((0..e.members).map(|m| e.at(m, r, c)));
}

/// Σ_j Σ_k |x_j − x_k| for sorted x, in O(N): 2 Σ_j (2j − N + 1) x_(j).
fn pair_sum_sorted(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    2.0 * x.iter().enumerate().map(|(j, v)| (2.0 * j as f64 - n + 1.0) * v).sum::<f64>()
}

/// Empirical quantile with linear interpolation (numpy "linear").
fn quantile_sorted(x: &[f64], q: f64) -> f64 {
    let h = (x.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    x[lo] + (h - lo as f64) * (x[hi] - x[lo])
}

fn sort(x: &mut [f64]) {
    x.sort_by(|a, b| a.total_cmp(b));
}

impl Metric for Standard {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&["metrics", "levels", "leads", "dt", "lyapunov", "threshold", "scale", "far"])?;
        let metrics = config.get::<Vec<String>>("metrics")?.unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
        if let Some(bad) = metrics.iter().find(|m| ![ALL, FORECAST, DETECTION].iter().any(|family| family.contains(&m.as_str()))) {
            return Err(format!("config key `metrics`: unknown metric `{bad}`; available: {}, {}, {}", ALL.join(", "), FORECAST.join(", "), DETECTION.join(", ")));
        }
        let far = config.f64_or("far", 0.05)?;
        if !(far > 0.0 && far < 1.0) {
            return Err(format!("config key `far`: the false-alarm rate must be in (0, 1), got {far}"));
        }
        let forecast = Forecast {
            leads: config.get::<usize>("leads")?,
            dt: config.f64_or("dt", 1.0)?,
            lyapunov: config.f64_or("lyapunov", 1.0)?,
            threshold: config.f64_or("threshold", 0.5)?,
            scale: config.get::<f64>("scale")?,
        };
        if metrics.iter().any(|m| FORECAST.contains(&m.as_str())) && !forecast.leads.is_some_and(|l| l > 0) {
            return Err("config key `leads`: the forecast metrics need the number of consecutive rows per case (a positive integer)".into());
        }
        if !(forecast.dt > 0.0 && forecast.lyapunov > 0.0 && forecast.threshold > 0.0 && forecast.scale.is_none_or(|s| s > 0.0)) {
            return Err("config keys `dt`, `lyapunov`, `threshold` and `scale` must be positive".into());
        }
        let levels = config.get::<Vec<f64>>("levels")?.unwrap_or_else(|| vec![0.5, 0.8, 0.9]);
        if let Some(bad) = levels.iter().find(|l| !(**l > 0.0 && **l < 1.0)) {
            return Err(format!("config key `levels`: each level must be in (0, 1), got {bad}"));
        }
        Ok(Standard { metrics, levels, forecast, far })
    }

    fn info(&self) -> MetricInfo {
        MetricInfo { name: "metrics-standard".into(), version: env!("CARGO_PKG_VERSION").into(), metrics: self.metrics.clone() }
    }

    fn compute(&mut self, input: &MetricInput<'_>) -> Result<Vec<(String, Value)>, String> {
        let (p, y) = (input.prediction, input.reference);
        let cells = (y.rows * y.cols) as f64;
        let mut out = Vec::new();
        let mut x = Vec::new();
        let by_lead = || -> Result<Vec<f64>, String> {
            let leads = self.forecast.leads.unwrap_or(1);
            if y.rows % leads != 0 {
                return Err(format!("the forecast metrics need rows = cases × leads, but {} rows are not a multiple of leads = {leads}", y.rows));
            }
            let cases = y.rows / leads;
            Ok((0..leads).map(|l| (0..cases).map(|c| row_rmse(p, y, c * leads + l)).sum::<f64>() / cases as f64).collect())
        };
        for name in &self.metrics {
            let members = match input.members {
                Some(e) => Some(e),
                None if NEEDS_MEMBERS.contains(&name.as_str()) => {
                    return Err(format!("metric `{name}` needs ensemble members, and none were given"));
                }
                None => None,
            };
            let value = match name.as_str() {
                "rmse" => Value::Scalar(rmse(&|r, c| p.row(r)[c], y)),
                "rmse_by_lead" => Value::Vector(by_lead()?),
                "one_step_rmse" => Value::Scalar(by_lead()?[0]),
                "valid_time" => {
                    by_lead()?; // checks the grouping
                    let f = &self.forecast;
                    let leads = f.leads.unwrap_or(1);
                    let scale = f.scale.unwrap_or_else(|| {
                        let mean = y.data.iter().sum::<f64>() / cells;
                        (y.data.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cells).sqrt()
                    });
                    let cases = y.rows / leads;
                    let total: f64 = (0..cases)
                        .map(|c| {
                            let first = (0..leads).find(|&l| row_rmse(p, y, c * leads + l) > f.threshold * scale);
                            first.unwrap_or(leads) as f64 * f.dt * f.lyapunov
                        })
                        .sum();
                    Value::Scalar(total / cases as f64)
                }
                "psd_error" => {
                    let (sp, sy) = (mean_spectrum(p), mean_spectrum(y));
                    let k = sp.len() - 1;
                    if k == 0 {
                        return Err("metric `psd_error` needs at least 2 variables per row".into());
                    }
                    let floor = 1e-300;
                    Value::Scalar((1..=k).map(|i| (sp[i].max(floor).log10() - sy[i].max(floor).log10()).abs()).sum::<f64>() / k as f64)
                }
                "slope" | "intercept" | "r2" => {
                    let (mx, my) = (y.data.iter().sum::<f64>() / cells, p.data.iter().sum::<f64>() / cells);
                    let sxx: f64 = y.data.iter().map(|v| (v - mx).powi(2)).sum();
                    let syy: f64 = p.data.iter().map(|v| (v - my).powi(2)).sum();
                    let sxy: f64 = y.data.iter().zip(p.data).map(|(a, b)| (a - mx) * (b - my)).sum();
                    if sxx <= 0.0 {
                        return Err(format!("metric `{name}` needs references that vary (a regression on one value)"));
                    }
                    let slope = sxy / sxx;
                    Value::Scalar(match name.as_str() {
                        "slope" => slope,
                        "intercept" => my - slope * mx,
                        _ => sxy * sxy / (sxx * syy),
                    })
                }
                "pod" | "detection_threshold" => {
                    let mut null: Vec<f64> = p.data.iter().zip(y.data).filter(|(_, r)| **r == 0.0).map(|(v, _)| *v).collect();
                    let signal: Vec<f64> = p.data.iter().zip(y.data).filter(|(_, r)| **r > 0.0).map(|(v, _)| *v).collect();
                    if null.is_empty() || (name == "pod" && signal.is_empty()) {
                        return Err(format!("metric `{name}` needs null cases (reference 0) and signal cases (reference > 0); got {} and {}", null.len(), signal.len()));
                    }
                    sort(&mut null);
                    let threshold = quantile_sorted(&null, 1.0 - self.far);
                    Value::Scalar(if name == "pod" { signal.iter().filter(|v| **v > threshold).count() as f64 / signal.len() as f64 } else { threshold })
                }
                "bias" => Value::Scalar(p.data.iter().zip(y.data).map(|(a, b)| a - b).sum::<f64>() / cells),
                "mae" => Value::Scalar(p.data.iter().zip(y.data).map(|(a, b)| (a - b).abs()).sum::<f64>() / cells),
                "spread" | "spread_skill" => {
                    let e = members.expect("checked above");
                    let n = e.members as f64;
                    let mean = |r: usize, c: usize| (0..e.members).map(|m| e.at(m, r, c)).sum::<f64>() / n;
                    let spread = (0..y.rows)
                        .map(|r| {
                            let var = (0..y.cols).map(|c| {
                                let mu = mean(r, c);
                                (0..e.members).map(|m| (e.at(m, r, c) - mu).powi(2)).sum::<f64>() / (n - 1.0)
                            });
                            (var.sum::<f64>() / y.cols as f64).sqrt()
                        })
                        .sum::<f64>()
                        / y.rows as f64;
                    if name == "spread" {
                        Value::Scalar(spread)
                    } else {
                        Value::Scalar(spread / rmse(&mean, y))
                    }
                }
                "crps" | "crps_fair" => {
                    let e = members.expect("checked above");
                    let n = e.members as f64;
                    let denominator = if name == "crps" { 2.0 * n * n } else { 2.0 * n * (n - 1.0) };
                    let mut total = 0.0;
                    for r in 0..y.rows {
                        for c in 0..y.cols {
                            member_values(e, r, c, &mut x);
                            sort(&mut x);
                            let obs = y.row(r)[c];
                            total += x.iter().map(|v| (v - obs).abs()).sum::<f64>() / n - pair_sum_sorted(&x) / denominator;
                        }
                    }
                    Value::Scalar(total / cells)
                }
                "rank_histogram" => {
                    let e = members.expect("checked above");
                    let mut counts = vec![0.0; e.members + 1];
                    for r in 0..y.rows {
                        for c in 0..y.cols {
                            let obs = y.row(r)[c];
                            counts[(0..e.members).filter(|&m| e.at(m, r, c) < obs).count()] += 1.0;
                        }
                    }
                    Value::Vector(counts.into_iter().map(|k| k / cells).collect())
                }
                "coverage" => {
                    let e = members.expect("checked above");
                    let mut inside = vec![0.0; self.levels.len()];
                    for r in 0..y.rows {
                        for c in 0..y.cols {
                            member_values(e, r, c, &mut x);
                            sort(&mut x);
                            let obs = y.row(r)[c];
                            for (k, level) in self.levels.iter().enumerate() {
                                let (lo, hi) = (quantile_sorted(&x, (1.0 - level) / 2.0), quantile_sorted(&x, (1.0 + level) / 2.0));
                                if lo <= obs && obs <= hi {
                                    inside[k] += 1.0;
                                }
                            }
                        }
                    }
                    Value::Vector(inside.into_iter().map(|k| k / cells).collect())
                }
                "energy_score" => {
                    let e = members.expect("checked above");
                    let n = e.members as f64;
                    let dist = |a: &dyn Fn(usize) -> f64, b: &dyn Fn(usize) -> f64| (0..y.cols).map(|c| (a(c) - b(c)).powi(2)).sum::<f64>().sqrt();
                    let mut total = 0.0;
                    for r in 0..y.rows {
                        let obs = |c: usize| y.row(r)[c];
                        let to_obs: f64 = (0..e.members).map(|j| dist(&|c| e.at(j, r, c), &obs)).sum::<f64>() / n;
                        let mut pairs = 0.0;
                        for j in 0..e.members {
                            for k in (j + 1)..e.members {
                                pairs += 2.0 * dist(&|c| e.at(j, r, c), &|c| e.at(k, r, c));
                            }
                        }
                        total += to_obs - pairs / (2.0 * n * n);
                    }
                    Value::Scalar(total / y.rows as f64)
                }
                other => return Err(format!("metric `{other}` is not implemented")),
            };
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}

geohost_sdk::export_metric!(Standard);
