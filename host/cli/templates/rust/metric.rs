//! `{{name}}`: a verification metric. Replace the mean absolute error
//! below by yours: `compute` gets the prediction and the reference as
//! tables (one row per scored time) and returns named values.

use geohost_sdk::{Config, Metric, MetricInfo, MetricInput, Value};

struct Mae;

impl Metric for Mae {
    fn init(config: &Config) -> Result<Self, String> {
        config.allow_only(&[])?;
        Ok(Mae)
    }

    fn info(&self) -> MetricInfo {
        MetricInfo { name: "{{name}}".into(), version: env!("CARGO_PKG_VERSION").into(), metrics: vec!["mean_abs_error".into()] }
    }

    fn compute(&mut self, input: &MetricInput<'_>) -> Result<Vec<(String, Value)>, String> {
        let (p, r) = (input.prediction, input.reference);
        if p.data.len() != r.data.len() || r.data.is_empty() {
            return Err(format!("prediction and reference differ in size ({} and {} values)", p.data.len(), r.data.len()));
        }
        let mae = p.data.iter().zip(r.data).map(|(a, b)| (a - b).abs()).sum::<f64>() / r.data.len() as f64;
        Ok(vec![("mean_abs_error".into(), Value::Scalar(mae))])
    }
}

geohost_sdk::export_metric!(Mae);
