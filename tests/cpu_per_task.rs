//! scripts/cpu-per-task.py, the CPU decomposition of scripts/bench-engines.sh (TAPS_BENCH_CPU=1):
//! against a load whose CPU time and completions are known, and on a real taps run, where the
//! driver and its workers are told apart.

use std::process::Command;

mod common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cpu-per-task.py");

/// The fields of the script's `cpu:` line (name -> value; `tasks`, `window`, `busy` too).
fn fields(stdout: &str) -> std::collections::HashMap<String, f64> {
    let line =
        stdout.lines().find(|l| l.starts_with("cpu: tasks")).unwrap_or_else(|| panic!("no cpu line: {}", stdout));
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = std::collections::HashMap::new();
    for w in words.windows(2) {
        if let Ok(v) = w[1].parse::<f64>() {
            out.insert(w[0].to_string(), v);
        }
    }
    // "us/task total T": the total follows its own name.
    assert!(out.contains_key("total") && out.contains_key("tasks") && out.contains_key("busy"), "{}", line);
    out
}

/// A child process that keeps one core busy for 3.5 s, "completing a task" every 10 ms after the
/// first second and renaming itself every 50 ms (as Ray's workers do with each task: a rename
/// is not a new process), under a parent that sleeps: all of the CPU is the engine's, about
/// 10 ms per task when the child has its core, none the driver's or a bridge's; the busy cores
/// are at most one (the CPU time of the child's first second counted in the window, as a rename
/// taken for a new process would count it, makes them 1.4 or more).
#[test]
fn a_known_load_is_attributed_to_its_process_and_divided_by_its_completions() {
    let d = tempfile::tempdir().unwrap();
    let times = d.path().join("times");
    let child = format!(
        "import time\n\
         out, start, n, last = open({times:?}, 'w'), time.time(), 0, 0\n\
         while time.time() - start < 1.0: pass\n\
         while time.time() - start < 3.5:\n\
         \x20   t = time.time()\n\
         \x20   if t - last >= 0.01:\n\
         \x20       last = t; n += 1; out.write('%.6f\\n' % t); out.flush()\n\
         \x20       if n % 5 == 0: open('/proc/self/comm', 'w').write('spin-%d' % n)\n",
        times = times.to_str().unwrap()
    );
    let parent = format!("import subprocess, sys\nsys.exit(subprocess.call([sys.executable, '-c', {:?}]))", child);
    let out = Command::new("python3")
        .args([SCRIPT, "--interval", "0.2", "--times", times.to_str().unwrap(), "--", "python3", "-c", &parent])
        .output()
        .expect("python3 runs the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let f = fields(&stdout);
    assert!(f["window"] >= 1.5 && f["tasks"] >= 100.0, "{}", stdout);
    // About one completion per 10 ms of the window (a loaded machine stretches the gaps).
    assert!(f["tasks"] <= f["window"] * 100.0 * 1.1, "{}", stdout);
    // The busy cores are the spinner's share of one core: a rename counted as a new process
    // (its whole CPU time again) would exceed one.
    assert!(f["busy"] > 0.05 && f["busy"] <= 1.1, "{}", stdout);
    assert!(f["engine"] >= 0.95 * f["total"], "{}", stdout);
    assert_eq!((f["driver"], f["bridge"]), (0.0, 0.0), "{}", stdout);
    // The total is the busy cores' CPU time over the window, per task.
    let expected = f["busy"] * f["window"] / f["tasks"] * 1e6;
    assert!((f["total"] - expected).abs() <= 0.02 * expected + 1.0, "{} vs {}: {}", f["total"], expected, stdout);
    // Up to 10 ms of CPU time per task (the child's core, shared with whatever else runs).
    assert!(f["total"] > 200.0 && f["total"] < 11_000.0, "{}", stdout);
}

/// A taps run on the process-pool: its records say when tasks completed, the `taps` process is
/// the driver and its worker processes are the "engine".
#[test]
fn a_taps_run_splits_into_its_driver_and_its_workers() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args([SCRIPT, "--interval", "0.2", "--records", d.path().to_str().unwrap(), "--", common::taps_bin()])
        .args(
            "run --app synthetic --app.structure bag --app.task-count 1500 --app.bag-max-running 2 \
             --app.task-sleep 0.002 --app.task-data-bytes 0 --engine.executor process-pool \
             --engine.executor.max-processes 2"
                .split_whitespace(),
        )
        .current_dir(d.path())
        .output()
        .expect("python3 runs the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    let f = fields(&stdout);
    let run = common::the_run_dir(d.path());
    assert_eq!(common::records(&run).len(), 1500);
    assert!(f["tasks"] > 0.0 && f["tasks"] < 1500.0, "{}", stdout);
    assert!(f["driver"] > 0.0 && f["engine"] > 0.0 && f["bridge"] == 0.0, "{}", stdout);
}

/// Bad use is one line and a non-zero exit.
#[test]
fn bad_arguments_are_one_line() {
    for args in [vec!["--times"], vec!["--frobnicate", "1", "--", "true"], vec!["--times", "x", "--"]] {
        let out = Command::new("python3").arg(SCRIPT).args(&args).output().expect("python3 runs the script");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{:?}: {}", args, err);
        assert_eq!(err.trim().lines().count(), 1, "{:?}: {}", args, err);
    }
}
