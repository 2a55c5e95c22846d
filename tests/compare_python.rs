//! scripts/compare-python.sh without the Python suite: its argument checks, the command pairs it
//! runs (the same `run` arguments on both sides), and its parsing and medians, against a stand-in
//! "venv" whose python prints the Python suite's log lines. The real comparison is a benchmark.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;

fn script(args: &[&str]) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/compare-python.sh"))
        .args(args)
        .arg("--taps")
        .arg(common::taps_bin())
        .output()
        .expect("bash runs the script")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for (args, needle) in [
        (&[][..], "missing VENV"),
        (&["v", "--runs", "0"][..], "--runs must be a whole number"),
        (&["v", "--tasks", "x"][..], "--tasks must be a whole number"),
        (&["v", "--only", "bench,sort"][..], "unknown configuration 'sort'"),
        (&["v", "--bogus"][..], "unknown option --bogus"),
        (&["v", "w"][..], "one VENV only"),
        (&["/nonexistent-venv"][..], "scripts/python-taps-venv.sh"),
    ] {
        let out = script(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, err);
        assert!(
            err.lines().any(|l| l.starts_with("compare-python: error: ") && l.contains(needle)),
            "{:?}: {}",
            args,
            err
        );
        assert!(out.stdout.is_empty(), "{:?}", args);
    }
}

#[test]
fn both_sides_get_the_same_run_arguments() {
    let out = script(&["/no/venv", "--dry-run", "--runs", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // 2 runs × 4 configurations × 2 pools × 2 sides.
    assert_eq!(lines.len(), 32, "{}", stdout);
    // The run arguments with the per-run paths (data and run directories) blanked.
    let args = |l: &str, launcher: &str| -> String {
        let (_, rest) = l.split_once(launcher).unwrap_or_else(|| panic!("no {:?} in {}", launcher, l));
        rest.split(' ').map(|a| if a.contains("compare-python.") { "PATH" } else { a }).collect::<Vec<_>>().join(" ")
    };
    for pair in lines.chunks(2) {
        let (t, p) = if pair[0].starts_with("taps") { (pair[0], pair[1]) } else { (pair[1], pair[0]) };
        assert!(p.starts_with("python ("), "{}", p);
        assert_eq!(args(t, "/taps run "), args(p, "/no/venv/bin/python -m taps.run "), "\n{}\n{}", t, p);
    }
    for needle in [
        "--app.bag-max-running 1",
        "--app.bag-max-running 2",
        "--app mapreduce --app.generate true --app.generated-files 16 --app.generated-words 50000 --app.map-tasks 16",
        "--app cholesky --app.matrix-size 4000 --app.block-size 500",
        "--engine.executor thread-pool",
        "--engine.executor process-pool",
    ] {
        assert!(stdout.contains(needle), "{} missing:\n{}", needle, stdout);
    }
    // The order of the sides alternates from run to run.
    assert!(lines[0].starts_with("taps (") && lines[16].starts_with("python ("), "{}", stdout);
}

/// A stand-in venv: its python answers the script's checks and prints, for each run of the
/// bag, a rate taken in turn from `rates`, and a fixed `Finished app` for mapreduce.
fn fake_venv(dir: &Path, rates: &[&str]) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let python = dir.join("bin/python");
    let body = format!(
        r#"#!/bin/bash
[ "$1" = -c ] && {{ case $2 in *importlib*) echo 9.9-fake ;; esac; exit 0; }}
rates=({})
n=$(cat "{d}/n" 2>/dev/null || echo 0); echo $((n + 1)) > "{d}/n"
echo "[2026-01-01 00:00:00.000] APP   (taps.apps.synthetic) > Completed 9/10 tasks (rate: 1.00 tasks/s, running tasks: 1)"
echo "[2026-01-01 00:00:00.000] APP   (taps.apps.synthetic) > Completed 10/10 (rate: ${{rates[$((n % ${{#rates[@]}}))]}} tasks/s)"
echo "[2026-01-01 00:00:00.000] RUN   (taps.run) > Finished app (elapsed=1.250s)"
"#,
        rates.join(" "),
        d = dir.display()
    );
    std::fs::write(&python, body).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn figures_are_parsed_and_their_medians_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    // Per run, 4 python invocations (2 bags × 2 pools): run 1 gets 1000, 1000, 1000, 1000…
    fake_venv(
        &venv,
        &["1000.00", "1000.00", "1000.00", "1000.00", "2000.00", "2000.00", "2000.00", "2000.00", "250.00"],
    );
    let out = script(&[venv.to_str().unwrap(), "--only", "bench", "--runs", "3", "--tasks", "20"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert!(stdout.contains("Python suite: 9.9-fake"), "{}", stdout);
    assert!(stdout.contains("3 run(s) of each side"), "{}", stdout);
    // Runs 1..3 of the 1-in-flight bag on thread-pool got rates 1000, 2000, 250: median 1000/s = 1000 µs.
    let row = |config: &str, pool: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {} | {} |", config, pool)))
            .unwrap_or_else(|| panic!("no row {} {}:\n{}", config, pool, stdout));
        line.split('|').map(|c| c.trim().to_string()).collect()
    };
    let r = row("bag, 1 in flight", "thread-pool");
    assert_eq!(r[3], "per-task overhead (µs)");
    assert_eq!(r[5], "1000.0", "{:?}", r);
    let taps_us: f64 = r[4].parse().unwrap_or_else(|_| panic!("taps figure {:?}", r));
    assert!(taps_us > 0.0);
    assert!(r[6].ends_with('×'), "{:?}", r);
    let r = row("bag, 2 in flight", "process-pool");
    assert_eq!(r[3], "throughput (tasks/s)");
    assert_eq!(r[5], "1000.00", "rates 1000, 2000, 1000: {:?}", r);
    assert!(!stdout.contains("mapreduce") && !stdout.contains("cholesky"), "--only bench: {}", stdout);
}

#[test]
fn the_venv_script_refuses_what_is_not_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    let run = |args: &[&str]| {
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python-taps-venv.sh")).args(args).output().unwrap()
    };
    for (args, needle) in [
        (vec![], "missing VENV"),
        (vec![venv.to_str().unwrap(), tmp.path().to_str().unwrap()], "is not a checkout of proxystore/taps"),
        (vec!["a", "b", "c"], "too many arguments"),
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", args, err);
        assert!(
            err.lines().any(|l| l.starts_with("python-taps-venv: error: ") && l.contains(needle)),
            "{:?}: {}",
            args,
            err
        );
    }
    assert!(!venv.exists(), "nothing is created for bad arguments");
}
