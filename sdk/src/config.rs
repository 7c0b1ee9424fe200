//! The plugin's config document: a JSON object the host builds from the
//! plugin-set file. Accessors return errors that name the key, so a typo in
//! a plugin-set surfaces as a clear message rather than a silent default.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default)]
pub struct Config {
    values: Map<String, Value>,
}

impl Config {
    /// Parse a config document; it must be a JSON object.
    pub fn parse(text: &str) -> Result<Config, String> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(values)) => Ok(Config { values }),
            Ok(other) => Err(format!("config must be a JSON object, got {other}")),
            Err(e) => Err(format!("config is not valid JSON: {e}")),
        }
    }

    /// Fail on any key not in `known` (catches typos like `forcing` for `F`).
    pub fn allow_only(&self, known: &[&str]) -> Result<(), String> {
        match self.values.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown config key `{k}`; this plugin accepts: {}", known.join(", "))),
            None => Ok(()),
        }
    }

    /// The value under `key`, deserialised, or `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| format!("config key `{key}`: {e} (got {v})")),
        }
    }

    /// A finite number, or `default` when absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        let v = self.get::<f64>(key)?.unwrap_or(default);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("config key `{key}` must be a finite number, got {v}"))
        }
    }

    /// A non-negative integer, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize, String> {
        Ok(self.get::<usize>(key)?.unwrap_or(default))
    }

    /// `true` or `false`, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        Ok(self.get::<bool>(key)?.unwrap_or(default))
    }

    /// A string, or `default` when absent.
    pub fn str_or(&self, key: &str, default: &str) -> Result<String, String> {
        Ok(self.get::<String>(key)?.unwrap_or_else(|| default.to_string()))
    }
}
