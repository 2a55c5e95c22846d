//! Interrupts: SIGINT, SIGTERM or SIGHUP, sent to the driver alone or to its whole process group,
//! stop a run on every local executor with exit code 130 and one record per submitted task.

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

/// Where a signal is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// The taps process alone.
    Driver,
    /// Its whole process group (`kill -SIG -- -PGID`), as a terminal or a job controller does.
    Group,
}

/// Runs a synthetic reduce (20 tasks of 0.3 s, then one more) on `executor` with taps leading its
/// own session and process group, sends `sig` to `target` once a few tasks are recorded, and checks
/// that the run ends with 130 and one record per task, none of them a lost worker.
fn interrupt_run(executor: &str, sig: i32, target: Target) {
    use std::os::unix::process::CommandExt;
    let what = format!("{} {:?} signal {}", executor, target, sig);
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(taps_bin());
    cmd.args(["run", "--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "20"])
        .args(["--app.task-sleep", "0.3", "--engine.executor", executor])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if executor == "process-pool" {
        cmd.args(["--engine.executor.max-processes", "2"]);
    } else {
        cmd.args(["--engine.executor.max-threads", "2"]);
    }
    // SAFETY: setsid is async-signal-safe; taps becomes the leader of a new session and group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let recorded = || {
        run_dirs(tmp.path())
            .first()
            .and_then(|d| std::fs::read_to_string(d.join("tasks.jsonl")).ok())
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_for(|| (recorded() >= 3).then_some(()));
    let workers = children_of(pid);
    let at = Instant::now();
    let dest = if target == Target::Group { -(pid as i32) } else { pid as i32 };
    // SAFETY: signalling the process (group) this test started.
    assert_eq!(unsafe { libc::kill(dest, sig) }, 0, "{}", what);
    let status = wait_or_kill(&mut child, 30, &what);
    eprintln!("{}: exited {:.2} s after the signal", what, at.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(130), "{}: {:?}", what, status);
    let dir = run_dirs(tmp.path()).pop().unwrap();
    let recs = records(&dir);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 21, "{}: one record per submitted task", what);
    let interrupted = |r: &&TaskRecord| r.exception.as_ref().is_some_and(|e| e.kind == "Interrupted");
    let bad: Vec<_> = recs.iter().filter(|r| r.success != Some(true) && !interrupted(r)).collect();
    assert!(bad.is_empty(), "{}: every record is a success or Interrupted: {:?}", what, bad);
    assert!(recs.iter().filter(interrupted).count() > 0, "{}", what);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains(&format!("Interrupted by signal {}", sig)), "{}: {}", what, log);
    let alive: Vec<u32> = workers.into_iter().filter(|&w| processes().iter().any(|p| p.0 == w && p.2 != 'Z')).collect();
    assert!(alive.is_empty(), "{}: workers {:?} outlived the run", what, alive);
}

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

#[test]
fn signals_to_the_driver_interrupt_a_thread_pool_run() {
    for sig in SIGNALS {
        interrupt_run("thread-pool", sig, Target::Driver);
    }
}

#[test]
fn signals_to_the_process_group_interrupt_a_thread_pool_run() {
    for sig in SIGNALS {
        interrupt_run("thread-pool", sig, Target::Group);
    }
}

#[test]
fn signals_to_the_driver_interrupt_a_process_pool_run() {
    for sig in SIGNALS {
        interrupt_run("process-pool", sig, Target::Driver);
    }
}

#[test]
fn signals_to_the_process_group_interrupt_a_process_pool_run() {
    for sig in SIGNALS {
        interrupt_run("process-pool", sig, Target::Group);
    }
}

/// A 1 MB tmpfs mounted for the test (unmounted when dropped); None, with the reason printed,
/// where mounting is not permitted.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string());
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                eprintln!("skipped: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {}", e);
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_and_keeps_whole_records() {
    let Some(fs) = Tmpfs::mount() else { return };
    let cwd = tempfile::tempdir().unwrap();
    let format = format!("{}/{{name}}_{{executor}}_{{timestamp}}", fs.0.path().display());
    let mut child = Command::new(taps_bin())
        .args(["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "20000"])
        .args(["--app.bag-max-running", "4", "--engine.executor", "thread-pool", "--run.dir-format", &format])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bag logs a line per completion: stdout is read while the run goes (it outgrows a pipe).
    let out = output_or_kill(&mut child, 120, "a run on a full disk");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{}", stderr);
    assert!(!stdout.contains("Finished benchmark"), "a run that lost records did not finish:\n{}", stdout);
    // One line on stderr: what failed, and how many submitted tasks have no record.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", stderr);
    let prefix = "taps: error: cannot write task records to ";
    assert!(lines[0].starts_with(prefix) && lines[0].contains("tasks.jsonl: No space left on device"), "{}", stderr);
    let counts = lines[0].rsplit("; ").next().unwrap();
    let words: Vec<&str> = counts.split(' ').collect();
    assert_eq!(words[1..], ["of", words[2], "submitted", "tasks", "have", "no", "record"], "{}", stderr);
    let (missing, submitted): (usize, usize) = (words[0].parse().unwrap(), words[2].parse().unwrap());
    assert!(submitted < 20_000, "the run stopped at the first failed write ({} submitted)", submitted);
    // The file holds whole lines only, one per recorded task.
    let dir = std::fs::read_dir(fs.0.path()).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(dir.join("tasks.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "no torn last line");
    let recs = records(&dir);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), submitted - missing);
    assert!(missing > 0 && recs.len() > 1000, "{} recorded, {} missing", recs.len(), missing);
}
