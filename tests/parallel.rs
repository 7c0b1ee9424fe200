//! Work split over threads and processes gives the bits of one: the
//! forecast over model instances (`--model-instances`); with the `mpi`
//! feature, `mpirun -np 2 geohost run SET`: step 2's ensemble methods split
//! over two MPI ranks give the bits of one process (the outputs' bytes, and the
//! registry sees identical outputs for identical inputs); a rank that fails
//! makes the job end with the plugin's error instead of hanging; commands
//! that do not split refuse to run as several ranks. Built without the
//! `mpi` feature, geohost refuses a start by an MPI launcher.

use crate::common::{geohost, stderr};
use std::path::Path;

/// Every output file of two runs, byte for byte (the summary's timings
/// aside).
fn assert_same_outputs(one: &Path, two: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(one).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "summary.json").collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    for name in names {
        let (a, b) = (std::fs::read(one.join(&name)).unwrap(), std::fs::read(two.join(&name)).unwrap());
        assert!(a == b, "{name:?} differs from the one-process run");
    }
}

/// The QG twin of tests/spatial.rs, shortened: a 2-D LETKF (289 local
/// domains of 2 × 2 points) and an odd ensemble (uneven shares).
fn qg_set(dir: &Path) -> std::path::PathBuf {
    crate::common::qg_set(
        dir,
        "qg-split",
        r#"
[experiment]
dt = 5.0
cycles = 12
burn_in = 20.0
seed = 3
x0 = 0.0
x0_variance = 1e-4
spinup = { time = 600.0, samples = 12, every = 25.0 }
[output]
members_every = 4
[[method]]
method = "letkf"
N = 9
infl = 1.04
loc_rad = 2
"#,
    )
}

/// The QG forecast on three instances of the component (threads), and
/// on the default of one per thread: the same output bytes as on one;
/// `summary.json` says how many ran.
#[test]
fn model_instances_give_the_bits_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = qg_set(dir.path());
    let run = |instances: Option<&str>, out: &Path| {
        let mut cmd = geohost(dir.path());
        cmd.env("GEOHOST_THREADS", "2").args(["run", "-q", "--no-registry"]);
        if let Some(count) = instances {
            cmd.args(["--model-instances", count]);
        }
        let output = cmd.arg(&set).arg("--out").arg(out).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        summary["parallelism"].clone()
    };
    let (one, three, default) = (dir.path().join("one"), dir.path().join("three"), dir.path().join("default"));
    assert_eq!(run(Some("1"), &one), serde_json::json!({ "ranks": 1, "threads": 2, "model_instances": 1 }));
    assert_eq!(run(Some("3"), &three)["model_instances"], 3);
    assert_eq!(run(None, &default)["model_instances"], 2, "one instance per thread by default");
    assert_same_outputs(&one, &three);
    assert_same_outputs(&one, &default);
}

/// The LETKF's and the ETKF's kernels compiled for AVX-512, for AVX2 and
/// for the baseline (`GEOHOST_VECTORS`, at most what this processor has)
/// give the same output bytes: every path does the same element-wise
/// operations in the same order. A value that names no level is refused
/// before anything runs.
#[test]
fn every_vector_width_gives_the_bits_of_the_widest() {
    let dir = tempfile::tempdir().unwrap();
    let set = crate::common::lorenz96_set(
        dir.path(),
        300,
        "[[method]]\nmethod = \"letkf\"\nN = 20\ninfl = 1.04\nloc_rad = 4\n\n[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n",
    );
    let run = |vectors: Option<&str>, out: &Path| {
        let mut cmd = geohost(dir.path());
        if let Some(v) = vectors {
            cmd.env("GEOHOST_VECTORS", v);
        }
        let out = cmd.args(["run", "-q", "--no-registry"]).arg(&set).arg("--out").arg(out).output().unwrap();
        assert!(out.status.success(), "{vectors:?}: {}", stderr(&out));
    };
    let widest = dir.path().join("widest");
    run(None, &widest);
    for level in ["avx2", "baseline"] {
        let out = dir.path().join(level);
        run(Some(level), &out);
        assert_same_outputs(&widest, &out);
    }
    let out = geohost(dir.path()).env("GEOHOST_VECTORS", "sse4").args(["run", "-q", "--no-registry"]).arg(&set).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("GEOHOST_VECTORS is `sse4`: use avx512, avx2 or baseline"), "{}", stderr(&out));
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::{assert_same_outputs, qg_set};
    use crate::common::{geohost, plugin, stderr};
    use std::path::Path;
    use std::process::{Command, Output};

    /// `mpirun -np 2` with what a container needs (root, no CMA), `geohost`'s
    /// environment from [`geohost`].
    fn mpirun(cache: &Path, ranks: usize) -> Command {
        let base = geohost(cache);
        let mut cmd = Command::new("mpirun");
        cmd.args(["-np", &ranks.to_string(), "--oversubscribe"]);
        for (key, value) in base.get_envs() {
            if let Some(value) = value {
                cmd.env(key, value);
            }
        }
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
        cmd.arg(base.get_program());
        cmd
    }

    /// Run `cmd`, killing it after `seconds` (a hang is a failure, not a stuck
    /// suite).
    fn output_within(mut cmd: Command, seconds: u64) -> Output {
        use std::process::Stdio;
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mpirun starts (install openmpi-bin)");
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed().as_secs() > seconds {
                child.kill().unwrap();
                panic!("mpirun did not finish within {seconds} s: {}", stderr(&child.wait_with_output().unwrap()));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }

    #[test]
    fn two_mpi_ranks_give_the_bits_of_one_process() {
        let dir = tempfile::tempdir().unwrap();
        // Lorenz-96: every ensemble method (the forecast split by members, the
        // EnKF's perturbations drawn alike on both ranks, the LETKF's 20
        // domains split 10/10), the baselines run on both.
        let l96 = crate::common::lorenz96_set(
            dir.path(),
            150,
            "[output]\nmembers_every = 25\n[[method]]\nmethod = \"etkf\"\nN = 20\ninfl = 1.04\n[[method]]\nmethod = \"enkf\"\nN = 21\ninfl = 1.06\n\
             [[method]]\nmethod = \"letkf\"\nN = 7\ninfl = 1.04\nloc_rad = 4\n[[method]]\nmethod = \"3dvar\"\nxB = 0.02\n",
        );
        let qg = qg_set(dir.path());
        for (name, set) in [("l96", &l96), ("qg", &qg)] {
            let (one, two) = (dir.path().join(format!("{name}-1")), dir.path().join(format!("{name}-2")));
            let out = geohost(dir.path()).args(["run", "-q"]).arg(set).arg("--out").arg(&one).output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let mut cmd = mpirun(dir.path(), 2);
            cmd.args(["run", "-q"]).arg(set).arg("--out").arg(&two);
            let out = output_within(cmd, 600);
            let err = stderr(&out);
            assert!(out.status.success(), "{err}");
            assert!(err.contains("MPI: step 2's methods ran on 2 ranks"), "{err}");
            // The registry (one, shared): identical inputs, identical outputs.
            assert!(err.contains("identical inputs to an earlier run; its") && err.contains("outputs are identical (same hashes)"), "{err}");
            assert_same_outputs(&one, &two);
            // The decomposed LETKF says where its time went, exchanges
            // between the ranks included; one process has no exchanges.
            let letkf_phases = |dir: &Path| {
                let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
                let row = summary["results"].as_array().unwrap().iter().find(|r| r["label"].as_str().unwrap().starts_with("LETKF")).unwrap().clone();
                (row["phases_ms"].clone(), row["ms_per_cycle"].as_f64().unwrap())
            };
            let (phases, ms) = letkf_phases(&two);
            let parts: Vec<f64> = ["forecast", "observe", "analysis", "statistics", "exchange"].iter().map(|p| phases[p].as_f64().unwrap()).collect();
            assert!(parts.iter().all(|&v| v.is_finite() && v >= 0.0) && parts.iter().sum::<f64>() <= ms, "{name}: {phases} of {ms} ms");
            assert!(parts[0] > 0.0 && parts[2] > 0.0 && parts[4] > 0.0, "{name}: {phases}");
            let (phases, _) = letkf_phases(&one);
            assert!(phases["analysis"].as_f64().unwrap() > 0.0 && phases.get("exchange").is_none(), "{name}: {phases}");
        }
    }

    /// A model that fails only on the rank given several members: both ranks
    /// stop with an error (the failing one names the plugin, the members and
    /// the rank; the other says which rank failed), nobody waits forever.
    #[test]
    fn a_rank_that_fails_ends_the_job_with_its_error() {
        // The ETKF (the ensemble replicated) and the LETKF (decomposed: the
        // failure reaches the others in the all-to-all exchange).
        for method in ["method = \"etkf\"\nN = 3", "method = \"letkf\"\nN = 3\nloc_rad = 2"] {
            let dir = tempfile::tempdir().unwrap();
            let set = dir.path().join("hostile.toml");
            std::fs::write(
                &set,
                format!(
                    "[model]\nplugin = \"{}\"\nconfig = {{ mode = \"nan-many\", size = 8 }}\n[observations]\nplugin = \"{}\"\nconfig = {{ select = \"all\", variance = 1.0 }}\n\
                     [experiment]\ncycles = 5\nburn_in = 0.0\nseed = 1\nx0 = 0.0\nx0_variance = 1.0\n[[method]]\n{method}\n",
                    plugin("testkit-hostile").display(),
                    plugin("obs-subset").display()
                ),
            )
            .unwrap();
            // Three members: rank 0 advances two (NaN), rank 1 one (fine).
            let mut cmd = mpirun(dir.path(), 2);
            cmd.args(["run", "-q", "--no-registry"]).arg(&set).arg("--out").arg(dir.path().join("out"));
            let out = output_within(cmd, 120);
            let err = stderr(&out);
            assert!(!out.status.success(), "{method}: {err}");
            assert!(err.contains("MPI rank 0 failed (its error is printed by that rank)"), "{method}: {err}");
            assert!(
                err.contains("members 0..2 (counted from 0) on MPI rank 0") && err.contains("plugin `model`: `advance` returned a non-finite value"),
                "{method}: {err}"
            );
            assert!(!dir.path().join("out").exists(), "{method}: nothing is written");
        }
    }

    /// Commands that run in one process refuse to be one of several ranks.
    #[test]
    fn a_static_plugin_set_refuses_to_run_on_several_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let set = crate::common::repo_root().join("cycles/plume-quick.toml");
        let mut cmd = mpirun(dir.path(), 2);
        cmd.args(["run", "-q", "--no-registry"]).arg(&set);
        let out = output_within(cmd, 120);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("a static plugin-set ([simulator]) runs in one process, but this is one of 2 MPI ranks"), "{err}");
    }
}

/// Without the `mpi` feature a launcher's start is refused, saying how to
/// build with MPI (each copy would otherwise run the whole job).
#[cfg(not(feature = "mpi"))]
#[test]
fn without_mpi_a_start_by_mpirun_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let set = crate::common::lorenz96_set(dir.path(), 10, "[[method]]\nmethod = \"etkf\"\nN = 10\n");
    let out = geohost(dir.path()).env("OMPI_COMM_WORLD_SIZE", "2").args(["run", "-q", "--no-registry"]).arg(&set).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("built without MPI") && err.contains("--features mpi"), "{err}");
    // One process under a launcher is one process.
    let out = geohost(dir.path())
        .env("OMPI_COMM_WORLD_SIZE", "1")
        .args(["run", "-q", "--no-registry"])
        .arg(&set)
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `geohost perf threads` runs a plugin-set's whole cycle as child
/// `geohost run`s on each thread count and prints ms per cycle and per
/// phase, the paired speed-up with its range and the machine's ceiling;
/// with one round the speed-up is the ratio of the two runs' cycles. A
/// set that fails names the set, the thread count and the run's own
/// error; a missing set is named.
#[test]
fn perf_threads_times_whole_runs_on_each_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let set = crate::common::lorenz96_set(dir.path(), 300, "[[method]]\nmethod = \"letkf\"\nN = 10\ninfl = 1.04\nloc_rad = 4");
    let out = geohost(dir.path()).args(["perf", "threads", "--rounds", "1"]).arg(&set).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = crate::common::stdout(&out);
    assert!(text.contains(&format!("{}: LETKF N=10 infl=1.04 loc_rad=4", set.display())), "{text}");
    let header = text.lines().find(|l| l.trim_start().starts_with("threads")).unwrap_or_else(|| panic!("no header:\n{text}"));
    let phases: Vec<&str> = header.split_whitespace().skip(7).collect();
    assert_eq!(phases, ["analysis", "forecast", "observe", "statistics"], "{header}");
    let row = |threads: &str| -> Vec<String> {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(threads)).unwrap_or_else(|| panic!("no row for {threads}:\n{text}"));
        line.split_whitespace().map(String::from).collect()
    };
    let (one, two) = (row("1"), row("2"));
    assert_eq!((one.len(), two.len()), (11, 11), "{text}");
    assert_eq!(&one[..2], ["1", "1"], "one thread, one model instance: {text}");
    assert_eq!(&one[3..7], ["-", "-", "-", "-"], "{text}");
    assert_eq!(two[1], "2", "one model instance per thread: {text}");
    let figure = |s: &String| -> f64 { s.parse().unwrap_or_else(|_| panic!("`{s}` is not a number:\n{text}")) };
    let (cycle_1, cycle_2, speedup, ceiling) = (figure(&one[2]), figure(&two[2]), figure(&two[3]), figure(&two[5]));
    assert!(cycle_1 > 0.0 && cycle_2 > 0.0 && (cycle_1 / cycle_2 - speedup).abs() <= 0.01 * speedup + 0.005, "{text}");
    assert_eq!(two[4], format!("{speedup:.2}–{speedup:.2}"), "one round: the range is the one ratio: {text}");
    assert!(ceiling > 0.0 && ceiling.is_finite(), "{text}");
    // One round: one round trip, so its range is one value of ns (a core
    // to another and back takes more than 1 ns, and less than 10 ms even
    // on a machine so busy that both threads share one core).
    let (low, high) = two[6].split_once('–').unwrap_or_else(|| panic!("`{}` is not a range:\n{text}", two[6]));
    assert_eq!(low, high, "{text}");
    let trip = figure(&low.to_string());
    assert!(trip > 1.0 && trip < 1e7, "{text}");
    assert!(one[7..].iter().chain(&two[7..]).all(|p| figure(p) >= 0.0), "{text}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, std::fs::read_to_string(&set).unwrap().replace("N = 10", "N = 0")).unwrap();
    let failed = geohost(dir.path()).args(["perf", "threads", "--rounds", "1"]).arg(&set).arg(&broken).output().unwrap();
    assert!(!failed.status.success());
    let message = stderr(&failed);
    assert!(
        message.contains(&format!("`geohost run {}` on 1 thread failed", broken.display())) && message.contains("`N` must be at least 2, got 0"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    let missing = geohost(dir.path()).args(["perf", "threads"]).arg(dir.path().join("nowhere.toml")).output().unwrap();
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("nowhere.toml not found"), "{}", stderr(&missing));
}
