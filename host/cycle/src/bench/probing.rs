//! Anti-probing: a hidden benchmark's scores leak its hidden data a little
//! with every scoring, so a submitter who may score without limit can fit
//! the hidden experiments by probing (Blum & Hardt 2015, "The Ladder").
//! A contract may therefore
//!
//! - cap the hidden scorings of one submitter per 24 hours
//!   (`[hidden] max_scorings_per_day = N`): `bench submit` then needs
//!   `--submitter NAME`, counts that name's reports under every version of
//!   the contract registered in the last 24 hours, and refuses the next one
//!   before anything runs, saying when the oldest of them ages out;
//! - publish hidden scores rounded to a stated precision until the seeds
//!   are revealed (`[hidden] publish_precision = 0.01`): the leaderboard
//!   rounds every hidden score and says so; the reports in the registry keep
//!   full precision (the host's own record), and after `bench reveal` the
//!   leaderboard shows them.

use anyhow::{bail, Result};
use geohost_registry::{Filter, Registry};
use std::time::{Duration, SystemTime};

/// The longest submitter name accepted.
const MAX_SUBMITTER: usize = 64;

/// A submitter's name: printable, without spaces at either end, at most
/// [`MAX_SUBMITTER`] characters.
pub fn check_submitter(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.trim() != name || name.chars().count() > MAX_SUBMITTER || name.chars().any(char::is_control) {
        bail!("--submitter `{}`: a name of 1 to {MAX_SUBMITTER} printable characters, no spaces at either end", name.escape_debug());
    }
    Ok(())
}

/// Refuse a scoring that would exceed contract `name`'s cap of `cap`
/// hidden scorings per submitter per 24 hours.
pub fn check_cap(registry: &Registry, name: &str, cap: Option<u32>, submitter: Option<&str>) -> Result<()> {
    let Some(cap) = cap else { return Ok(()) };
    let Some(submitter) = submitter else {
        bail!("contract {name} allows each submitter {cap} hidden scoring(s) per 24 hours: give --submitter NAME (the name the scorings are counted under)");
    };
    check_submitter(submitter)?;
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let cutoff = humantime::format_rfc3339_millis(now - day).to_string();
    let versions: Vec<String> =
        registry.list(&Filter { kind: Some("contract".into()), name: Some(name.into()), ..Default::default() })?.into_iter().map(|a| a.id).collect();
    let mut recent = Vec::new();
    for report in registry.list(&Filter { kind: Some("report".into()), ..Default::default() })? {
        let of_contract = report.metadata["contract"].as_str().is_some_and(|c| versions.iter().any(|v| v == c));
        if !of_contract || report.created < cutoff {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&registry.read(&report.id)?).unwrap_or_default();
        let by = value["candidates"][0]["submission"]["submitter"].as_str().or_else(|| value["submission"]["submitter"].as_str());
        if by == Some(submitter) {
            recent.push(report.created);
        }
    }
    if recent.len() >= cap as usize {
        recent.sort();
        let oldest = humantime::parse_rfc3339(&recent[0]).map(|t| humantime::format_rfc3339_seconds(t + day).to_string()).unwrap_or_else(|_| recent[0].clone());
        bail!(
            "submitter `{submitter}` has had {} hidden scoring(s) of contract {name} in the last 24 hours, and the contract allows {cap} (max_scorings_per_day, against probing the hidden data); the next is allowed after {oldest}",
            recent.len()
        );
    }
    Ok(())
}

/// The precision contract `bytes` (a registered contract file) publishes
/// hidden scores to, when it sets one.
pub fn publish_precision(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: toml::Value = toml::from_str(text).ok()?;
    value.get("hidden")?.get("publish_precision")?.as_float().filter(|p| *p > 0.0)
}

/// `x` rounded to a multiple of `precision`.
pub fn round_to(x: f64, precision: f64) -> f64 {
    let digits = (-precision.log10()).ceil().max(0.0) as i32;
    let rounded = (x / precision).round() * precision;
    // Strip the binary noise of the multiplication (0.58 not 0.5800000000000001).
    let scale = 10f64.powi(digits);
    (rounded * scale).round() / scale
}

/// Check a contract's `[hidden]` anti-probing fields.
pub fn validate(max_scorings_per_day: Option<u32>, publish_precision: Option<f64>) -> Result<()> {
    if max_scorings_per_day == Some(0) {
        bail!("field `hidden.max_scorings_per_day` must be at least 1 (leave it out for no cap)");
    }
    if let Some(p) = publish_precision {
        if !(p > 0.0 && p.is_finite()) {
            bail!("field `hidden.publish_precision` must be a positive number, e.g. 0.01; got {p}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_to_the_published_precision() {
        assert_eq!(round_to(0.5778, 0.01), 0.58);
        assert_eq!(round_to(0.5749, 0.05), 0.55);
        assert_eq!(round_to(3.6191, 0.1), 3.6);
        assert_eq!(round_to(1234.0, 100.0), 1200.0);
        assert!(check_submitter("alice").is_ok());
        for bad in ["", " alice", "a\nb", &"x".repeat(65)] {
            assert!(check_submitter(bad).is_err(), "{bad:?}");
        }
        assert!(validate(Some(0), None).is_err() && validate(None, Some(-1.0)).is_err() && validate(Some(3), Some(0.01)).is_ok());
        assert_eq!(publish_precision(b"name = \"x\"\n[hidden]\nexperiments = 2\npublish_precision = 0.01\n"), Some(0.01));
        assert_eq!(publish_precision(b"name = \"x\"\n"), None);
    }
}
