//! Ctrl-C: a run interrupted by SIGINT records every submitted task and exits non-zero.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigint_leaves_a_complete_tasks_jsonl_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(taps_bin())
        .args(["run", "--app", "synthetic", "--app.structure", "sequential", "--app.task-count", "40"])
        .args(["--app.task-sleep", "0.1", "--engine.executor", "thread-pool"])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a few tasks have finished, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = run_dirs(tmp.path())
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("tasks.jsonl")).ok())
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never produced records");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let dir = run_dirs(tmp.path()).pop().unwrap();
    let recs = records(&dir);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 40, "one record per submitted task");
    let ok = recs.iter().filter(|r| r.success == Some(true)).count();
    let interrupted = recs.iter().filter(|r| r.exception.as_ref().is_some_and(|e| e.kind == "Interrupted")).count();
    assert!(ok >= 3, "{} finished before the interrupt", ok);
    assert_eq!(ok + interrupted, 40);
    assert!(interrupted > 0);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("Interrupted by signal 2"), "{}", log);
    assert!(!log.contains("Finished benchmark"));
}
