//! Helpers shared by the integration tests: run the real `taps` binary in a temp directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use taps::record::{TaskRecord, read_records};

/// The `taps` binary under test.
pub fn taps_bin() -> &'static str {
    env!("CARGO_BIN_EXE_taps")
}

/// `taps ARGS` with `cwd` as working directory.
pub fn taps(cwd: &Path, args: &[&str]) -> Output {
    Command::new(taps_bin()).args(args).current_dir(cwd).output().expect("taps runs")
}

/// Runs `taps ARGS`, asserting success; returns the single new run directory under `cwd/runs`.
pub fn run_ok(cwd: &Path, args: &[&str]) -> PathBuf {
    run_ok_with_stdout(cwd, args).0
}

/// Like [`run_ok`], also returning stdout.
pub fn run_ok_with_stdout(cwd: &Path, args: &[&str]) -> (PathBuf, String) {
    let before = run_dirs(cwd);
    let out = taps(cwd, args);
    assert!(
        out.status.success(),
        "taps {:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut new: Vec<PathBuf> = run_dirs(cwd).into_iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "expected one new run directory, got {:?}", new);
    (new.pop().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run directories under `cwd/runs`.
pub fn run_dirs(cwd: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(cwd.join("runs")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Asserts that `taps ARGS` is rejected as bad input: exit 2, one `taps: error:` line on stderr
/// containing every `needle`, no panic, and no run directory created.
pub fn assert_bad_input(cwd: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = taps(cwd, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "taps {:?}: expected exit 2, got {:?}; stderr: {}",
        args,
        out.status,
        stderr
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {}", stderr);
    assert!(lines[0].starts_with("taps: error: "), "{}", stderr);
    for n in needles {
        assert!(stderr.contains(n), "error {:?} should mention {:?}", stderr, n);
    }
    assert!(!stderr.contains("panicked"), "{}", stderr);
    assert!(!cwd.join("runs").exists() || run_dirs(cwd).is_empty(), "a run directory was created for bad input");
    stderr
}

/// Records of a run.
pub fn records(run_dir: &Path) -> Vec<TaskRecord> {
    read_records(&run_dir.join("tasks.jsonl")).expect("tasks.jsonl is readable")
}

/// Checks the invariants every record must satisfy.
pub fn check_record_invariants(recs: &[TaskRecord]) {
    let mut ids = std::collections::HashSet::new();
    for r in recs {
        assert!(ids.insert(r.task_id.clone()), "duplicate record for {}", r.task_id);
        uuid::Uuid::parse_str(&r.task_id).expect("task_id is a UUID");
        let received = r.received_time.expect("received_time set");
        assert!(received >= r.submit_time, "{:?}", r);
        match r.success {
            Some(true) => {
                assert!(r.exception.is_none());
                let e = r.execution.as_ref().expect("successful task has execution info");
                assert!(!e.hostname.is_empty());
                let order = [
                    r.submit_time,
                    e.execution_start_time,
                    e.input_transform_start_time,
                    e.input_transform_end_time,
                    e.task_start_time,
                    e.task_end_time,
                    e.result_transform_start_time,
                    e.result_transform_end_time,
                    e.execution_end_time,
                    received,
                ];
                for w in order.windows(2) {
                    assert!(w[0] <= w[1], "timestamps out of order in {:?}", r);
                }
            }
            Some(false) => assert!(r.exception.is_some(), "failed record without exception: {:?}", r),
            None => panic!("record without success: {:?}", r),
        }
    }
}

/// (pid, ppid, state) of every process.
pub fn processes() -> Vec<(u32, u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // "pid (comm) state ppid ..." — comm may contain spaces and parentheses.
        let Some(close) = stat.rfind(')') else { continue };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, ppid, state));
    }
    out
}

/// Live (non-zombie) children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    processes().into_iter().filter(|&(_, pp, st)| pp == pid && st != 'Z').map(|(p, _, _)| p).collect()
}

/// Live (non-zombie) descendants of `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let procs: Vec<(u32, u32)> =
        processes().into_iter().filter(|&(_, _, st)| st != 'Z').map(|(p, pp, _)| (p, pp)).collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(procs.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Polls `f` until it returns a value; panics after 120 s (a hang guard, not a speed check).
pub fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "waited 120 s for a condition that never came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for `child` to exit. After `secs` (a hang guard, not a speed check) it kills the child and
/// its descendants and panics, naming `what`. A stdout or stderr still piped to the test is drained
/// meanwhile (and dropped): a pipe nobody reads fills up and stalls the child in a write.
pub fn wait_or_kill(child: &mut std::process::Child, secs: u64, what: &str) -> std::process::ExitStatus {
    output_or_kill(child, secs, what).status
}

/// Like [`wait_or_kill`], returning what the child wrote to the stdout and stderr still piped to the
/// test (read while it runs; empty for a stream not piped or already taken).
pub fn output_or_kill(child: &mut std::process::Child, secs: u64, what: &str) -> Output {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() };
        }
        if std::time::Instant::now() >= deadline {
            for p in descendants(child.id()).into_iter().chain([child.id()]) {
                // SAFETY: plain syscall on processes this test started.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
            let status = child.wait().expect("wait for the child");
            let out = Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() };
            panic!("{}: still running after {} s (hung); killed: {}", what, secs, show(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A finished process's status, stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The one run directory under `cwd/runs` (asserting there is exactly one).
pub fn the_run_dir(cwd: &Path) -> PathBuf {
    let runs = run_dirs(cwd);
    assert_eq!(runs.len(), 1, "{:?}", runs);
    runs[0].clone()
}

/// Flags that send every argument and result through the `file` transformer (the `object-size`
/// filter from 1 byte).
pub const ALL_BY_FILE: &[&str] =
    &["--engine.filter", "object-size", "--engine.filter.min-size", "1", "--engine.transformer", "file"];

/// The rows of a comma-separated file an app wrote (no quoting), after checking its header;
/// each row is checked to have the header's number of fields.
pub fn csv_rows(path: &Path, header: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    let fields = header.split(',').count();
    lines
        .map(|l| {
            let f: Vec<String> = l.split(',').map(String::from).collect();
            assert_eq!(f.len(), fields, "{}: {}", path.display(), l);
            f
        })
        .collect()
}
