//! Dispatch: `taps bench` reports the CPU its figures cost, the bounded spinning of waiting
//! threads leaves an idle run idle, and independent tasks bypass the dispatcher thread.

mod common;

use std::process::Command;
use std::time::Instant;

use common::taps_bin;

#[test]
fn bench_reports_the_cpu_cost_beside_each_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(taps_bin())
        .args(["bench", "--executor", "thread-pool", "--executor", "process-pool"])
        .args(["--latency-tasks", "200", "--throughput-tasks", "500", "--data-sizes", "", "--out", "b"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CPU, overhead run (µs/task; cores busy)"), "{}", stdout);
    assert!(stdout.contains("CPU, throughput run (µs/task; cores busy)"), "{}", stdout);
    let report = std::fs::read_dir(dir.path().join("b"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        for run in ["overhead_cpu", "throughput_cpu"] {
            let (us, cores) = (r[run]["us_per_task"].as_f64().unwrap(), r[run]["cores"].as_f64().unwrap());
            // Every task costs some CPU; a run on a 2-core machine keeps at most a few cores busy
            // (the workers, the driver's threads).
            assert!(
                us > 0.0 && cores > 0.0 && cores < 64.0,
                "{} {}: {} µs/task, {} cores",
                r["executor"],
                run,
                us,
                cores
            );
        }
    }
    // The process-pool's figure includes its workers (child processes): no fewer than one
    // µs per task of CPU for a round trip through a socket and another process.
    let pp = results.iter().find(|r| r["executor"] == "process-pool").unwrap();
    assert!(pp["throughput_cpu"]["us_per_task"].as_f64().unwrap() > 1.0, "{}", pp);
    // Beside the process-pool: what its throughput run would make without taps, per transport.
    assert!(stdout.contains("What the machine allows a process pool"), "{}", stdout);
    let floor = &json["process_pool_floor"];
    assert_eq!(floor["tasks"], 500, "{}", floor);
    let rows = floor["tasks_per_s"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{}", floor);
    for r in rows {
        assert!(r["rate"].as_f64().unwrap() > 0.0, "{}", r);
        assert!(stdout.contains(r["transport"].as_str().unwrap()), "{}", stdout);
    }
}

#[test]
fn bench_measures_the_process_pool_floor_only_with_the_process_pool() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(taps_bin())
        .args(["bench", "--executor", "thread-pool", "--latency-tasks", "50", "--throughput-tasks", "100"])
        .args(["--data-sizes", "", "--out", "b"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| thread-pool |"), "{}", stdout);
    assert!(!stdout.contains("What the machine allows a process pool"), "{}", stdout);
}

/// Runs `cmd`; its wait status, user + system CPU seconds (from `wait4`) and wall-clock seconds.
fn run_and_measure(cmd: &mut Command) -> (i32, f64, f64) {
    let start = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its CPU time
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child; valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    (status, t(usage.ru_utime) + t(usage.ru_stime), start.elapsed().as_secs_f64())
}

#[test]
fn waiting_threads_stop_spinning_when_tasks_are_long() {
    // Two tasks of 1.5 s each: the app, the dispatcher, the idle workers and the process-pool's
    // readers wait the whole time. Their spinning is bounded, so the run uses a small fraction
    // of one core (an unbounded spin would use several cores for the whole run).
    for executor in ["thread-pool", "process-pool"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new(taps_bin());
        c.args(["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "2"])
            .args(["--app.bag-max-running", "2", "--app.task-sleep", "1.5", "--engine.executor", executor])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null());
        let (status, cpu, wall) = run_and_measure(&mut c);
        assert_eq!(status, 0, "{}", executor);
        assert!(wall >= 1.5, "{}: {} s", executor, wall);
        assert!(cpu < 0.5 * wall, "{}: {:.3} CPU seconds in {:.3} s of wall-clock time", executor, cpu, wall);
    }
}

/// Tasks that started [`Together`].
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits (up to 20 s, a hang guard) until a second `Together` has started: whether the two ran
/// at the same time.
struct Together;
impl taps::task::Task for Together {
    const NAME: &'static str = "test-together";
    type Args = ((),);
    type Output = bool;
    fn run(_: ((),)) -> Result<bool, taps::task::TaskError> {
        use std::sync::atomic::Ordering::SeqCst;
        STARTED.fetch_add(1, SeqCst);
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while STARTED.load(SeqCst) < 2 {
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(true)
    }
}

/// Run by [`two_jobs_queued_at_once_run_on_two_threads`] with a 300 ms polling budget.
#[test]
#[ignore = "run by two_jobs_queued_at_once_run_on_two_threads, with TAPS_SPIN_US set"]
fn two_children_of_one_parent_on_a_pool_of_two() {
    use taps::engine::{Engine, builtin::Warmup};
    let e = Engine::builder(Box::new(taps::executor::thread_pool::ThreadPool::new(2))).build();
    // Both workers polled for their budget and parked.
    std::thread::sleep(std::time::Duration::from_millis(900));
    // The parent wakes one worker, which polls again once it ran it; the two children are
    // queued back to back while it polls: neither submit wakes the parked worker.
    let parent = e.submit::<Warmup>(());
    let a = e.submit::<Together>(((&parent).into(),));
    let b = e.submit::<Together>(((&parent).into(),));
    assert!(a.result().unwrap() && b.result().unwrap(), "the two ready tasks did not run at the same time");
    assert_eq!(e.shutdown().failed, 0);
}

/// Two jobs queued while one idle worker polls and the other is parked run at once: the worker
/// that takes the first wakes the parked one for the second (it used to wait until the first
/// finished).
#[test]
fn two_jobs_queued_at_once_run_on_two_threads() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["two_children_of_one_parent_on_a_pool_of_two", "--exact", "--ignored", "--test-threads", "1"])
        .env("TAPS_SPIN_US", "300000")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{}", text);
}

/// CPU nanoseconds the thread of this process named `name` has run (its `schedstat`).
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

#[test]
fn independent_tasks_on_the_thread_pool_bypass_the_dispatcher_thread() {
    // A bag of no-op tasks with two in flight, as `taps bench` runs it: each task goes from the
    // submitting thread to a worker and is finished there; the dispatcher thread only writes
    // the records, a batch every few milliseconds. (When every task passed through it, it
    // spent several µs of CPU on each: two messages, a wake-up check, spinning for the next.)
    use taps::engine::{Completions, Engine, builtin::Warmup};
    let dir = tempfile::tempdir().unwrap();
    let records = taps::record::RecordWriter::create(&dir.path().join("tasks.jsonl")).unwrap();
    let e = Engine::builder(Box::new(taps::executor::thread_pool::ThreadPool::new(2))).records(records).build();
    // A thread takes its name once it runs.
    let start = Instant::now();
    let before = loop {
        match thread_cpu_ns("taps-dispatch") {
            Some(ns) => break ns,
            None if start.elapsed().as_secs() < 60 => std::thread::sleep(std::time::Duration::from_millis(1)),
            None => panic!("no thread named taps-dispatch"),
        }
    };
    let tasks = 20_000u64;
    let mut running = Completions::new();
    running.push(e.submit::<Warmup>(()));
    running.push(e.submit::<Warmup>(()));
    let mut submitted = 2;
    while let Some(f) = running.next() {
        f.result().unwrap();
        if submitted < tasks {
            running.push(e.submit::<Warmup>(()));
            submitted += 1;
        }
    }
    let cpu = thread_cpu_ns("taps-dispatch").unwrap() - before;
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records, s.failed), (tasks, tasks, 0));
    // No task passed through the dispatcher thread, neither going to the executor nor coming back.
    assert_eq!(s.through_dispatcher, 0, "tasks handled by the dispatcher thread");
    // What it still does, for the log (not asserted: CPU time grows with the machine's load):
    // serialising a record costs it about 1 µs; when every task passed through it, 4.4 µs.
    let per_task = cpu as f64 / tasks as f64 / 1000.0;
    eprintln!("the dispatcher thread: {:.2} µs of CPU per task", per_task);
    let recs = taps::record::read_records(&dir.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), tasks as usize);
    common::check_record_invariants(&recs);
    // The count sees what does pass through it: a child submitted while its parent runs waits
    // there for it, and goes to the executor from there.
    let e = Engine::builder(Box::new(taps::executor::thread_pool::ThreadPool::new(2))).build();
    let parent = e.submit::<taps::engine::builtin::Sleep>((0.3.into(),));
    let child = e.submit::<taps::engine::builtin::Sleep>(((&parent).into(),));
    assert_eq!(child.result().unwrap(), 0.3);
    let s = e.shutdown();
    assert!(s.through_dispatcher >= 1, "{:?}", s);
}
