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
//! Config: `metrics` (a list; default all), `levels` (default [0.5, 0.8, 0.9]).

use geohost_sdk::{Config, EnsembleTable, Metric, MetricInfo, MetricInput, Table, Value};

const ALL: &[&str] = &["rmse", "bias", "mae", "spread", "spread_skill", "crps", "crps_fair", "rank_histogram", "coverage", "energy_score"];
const NEEDS_MEMBERS: &[&str] = &["spread", "spread_skill", "crps", "crps_fair", "rank_histogram", "coverage", "energy_score"];

struct Standard {
    metrics: Vec<String>,
    levels: Vec<f64>,
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
        config.allow_only(&["metrics", "levels"])?;
        let metrics = config.get::<Vec<String>>("metrics")?.unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
        if let Some(bad) = metrics.iter().find(|m| !ALL.contains(&m.as_str())) {
            return Err(format!("config key `metrics`: unknown metric `{bad}`; available: {}", ALL.join(", ")));
        }
        let levels = config.get::<Vec<f64>>("levels")?.unwrap_or_else(|| vec![0.5, 0.8, 0.9]);
        if let Some(bad) = levels.iter().find(|l| !(**l > 0.0 && **l < 1.0)) {
            return Err(format!("config key `levels`: each level must be in (0, 1), got {bad}"));
        }
        Ok(Standard { metrics, levels })
    }

    fn info(&self) -> MetricInfo {
        MetricInfo { name: "metrics-standard".into(), version: env!("CARGO_PKG_VERSION").into(), metrics: self.metrics.clone() }
    }

    fn compute(&mut self, input: &MetricInput<'_>) -> Result<Vec<(String, Value)>, String> {
        let (p, y) = (input.prediction, input.reference);
        let cells = (y.rows * y.cols) as f64;
        let mut out = Vec::new();
        let mut x = Vec::new();
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
