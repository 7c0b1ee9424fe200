//! The HTML pages (leaderboards, the matrix) in a real browser: headless
//! Chromium (Debian's `chromium`; .ci/run installs it) renders each page,
//! its DOM is read back and checked, a screenshot is written to
//! target/test-pages/, and Chromium's own network log shows that the page
//! requested nothing.

use crate::common::repo_root;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(path) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(name)).find(|p| p.is_file()) {
            return path;
        }
    }
    panic!("headless Chromium is needed to test the HTML pages: apt-get install chromium (.ci/run installs it)");
}

/// Run Chromium headless on `page` with `args`, its network log in `netlog`.
fn run_chromium(page: &Path, netlog: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium on {}: {}", page.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The URLs of requests the page itself made, from Chromium's network log:
/// requests started with an initiator. (The browser's own background
/// requests, which no flag fully silences, have none: "not an origin".)
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&std::fs::read_to_string(netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().expect("the net log names its event types");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        // The job's begin event carries the URL and the initiator.
        .filter(|e| e["type"].as_u64() == Some(start) && e["params"]["url"].is_string())
        .filter(|e| e["params"]["initiator"].as_str() != Some("not an origin"))
        .map(|e| e["params"]["url"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Render `page` in headless Chromium: its DOM after rendering, and a
/// screenshot at target/test-pages/NAME.png. Asserts that the page made
/// no request.
pub fn render(page: &Path, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let netlog = dir.path().join("net.json");
    let dom = run_chromium(page, &netlog, &["--dump-dom"]);
    let requests = page_requests(&netlog);
    assert!(requests.is_empty(), "{} made requests: {requests:?}", page.display());
    let shots = repo_root().join("target/test-pages");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join(format!("{name}.png"));
    run_chromium(page, &dir.path().join("net2.json"), &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1000"]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of {name}");
    dom
}

/// The check above is not vacuous: a page that loads an image from
/// elsewhere is caught.
#[test]
fn the_browser_check_catches_a_page_that_makes_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("leaky.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><p>leaky</p><img src=\"http://127.0.0.1:9/pixel.png\"></body></html>").unwrap();
    let netlog = dir.path().join("net.json");
    let dom = run_chromium(&page, &netlog, &["--dump-dom"]);
    assert!(dom.contains("leaky"));
    let requests = page_requests(&netlog);
    assert!(requests.iter().any(|u| u.starts_with("http://127.0.0.1:9/pixel.png")), "{requests:?}");
}

/// `geohost report OUTDIR --html` on a twin experiment: the results table,
/// RMSE and spread over time for every method, and a rank histogram of
/// N + 1 bars for each method that kept ensembles.
#[test]
fn a_run_report_page_shows_every_method_over_time_and_rank_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let methods = "[output]\nmembers_every = 5\n[[method]]\nmethod = \"climatology\"\n[[method]]\nmethod = \"3dvar\"\nxB = 0.02\n[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n";
    let set = crate::common::lorenz96_set(dir.path(), 300, methods);
    let out_dir = dir.path().join("out");
    let out = crate::common::geohost(dir.path()).args(["run", "-q", "--no-registry"]).arg(&set).arg("--out").arg(&out_dir).output().unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let out = crate::common::geohost(dir.path()).arg("report").arg(&out_dir).arg("--html").output().unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let page = out_dir.join("report.html");
    let dom = render(&page, "run-report");
    assert_eq!(dom.matches("<tr data-method=").count(), 3, "{dom}");
    for id in ["rmse-over-time", "spread-over-time"] {
        let svg = &dom[dom.find(&format!("<svg id=\"{id}\"")).unwrap_or_else(|| panic!("no {id}"))..];
        let svg = &svg[..svg.find("</svg>").unwrap()];
        assert_eq!(svg.matches("<polyline class=\"series\"").count(), 3, "{id}: one line per method");
        assert!(svg.contains(">time</text>") && svg.contains("(log scale)</text>"), "{id}: axis labels");
        for label in ["Climatology", "3D-Var xB=0.02", "ETKF N=20 infl=1.04"] {
            assert!(svg.contains(&format!("data-label=\"{label}\"")), "{id}: {label}");
        }
    }
    // Only the ETKF kept ensembles: one histogram of N + 1 = 21 bars.
    assert_eq!(dom.matches("<figure class=\"rank-histogram\"").count(), 1);
    let hist = &dom[dom.find("<svg id=\"rank-histogram-0\"").unwrap()..];
    assert_eq!(hist[..hist.find("</svg>").unwrap()].matches("<rect class=\"bar\"").count(), 21);
    // Not a run folder: an error that says what is expected.
    let out = crate::common::geohost(dir.path()).arg("report").arg(dir.path()).arg("--html").output().unwrap();
    assert!(!out.status.success() && crate::common::stderr(&out).contains("not a run's output folder"), "{}", crate::common::stderr(&out));
}
