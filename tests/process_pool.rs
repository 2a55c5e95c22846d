//! The process-pool executor with real `taps-worker` processes: results, errors, panics, lost
//! workers, large payloads, shutdown and Ctrl-C without orphans.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use taps::engine::builtin::{Abort, Echo, Fail, Panic, Sleep};
use taps::engine::{Engine, as_completed};
use taps::executor::process_pool::ProcessPool;
use taps::record::{RecordWriter, TaskRecord, read_records};
use taps::task::{Task, TaskError};

mod common;

use common::{children_of, processes, wait_for};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");
const WORKER: &str = env!("CARGO_BIN_EXE_taps-worker");

fn pool(n: usize) -> ProcessPool {
    ProcessPool::new(n).worker_path(WORKER)
}

/// An engine on `n` workers writing records to `dir/tasks.jsonl`.
fn engine(n: usize, dir: &Path) -> (Engine, taps::executor::process_pool::PoolWatch) {
    let p = pool(n);
    let watch = p.watch();
    let e = Engine::builder(Box::new(p)).records(RecordWriter::create(&dir.join("tasks.jsonl")).unwrap()).build();
    (e, watch)
}

/// Whether `pid` is a live (non-zombie) taps-worker process.
fn worker_alive(pid: u32) -> bool {
    let cmd = std::fs::read(format!("/proc/{}/cmdline", pid)).unwrap_or_default();
    let state = processes().into_iter().find(|p| p.0 == pid).map(|p| p.2);
    String::from_utf8_lossy(&cmd).contains("taps-worker") && !matches!(state, None | Some('Z'))
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {} {}", pid, sig);
}

#[test]
fn results_come_back_from_worker_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(2, dir.path());
    let pids = watch.pids();
    assert_eq!(pids.len(), 2);
    let futures: Vec<_> =
        (0..200u32).map(|i| e.submit::<Echo>((Bytes::from(i.to_le_bytes().to_vec()).into(),))).collect();
    // A dependency: the child receives the parent's result (never re-serialised by the driver).
    let child = e.submit::<Echo>(((&futures[7]).into(),));
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result().unwrap(), Bytes::from((i as u32).to_le_bytes().to_vec()));
    }
    assert_eq!(child.result().unwrap(), Bytes::from(7u32.to_le_bytes().to_vec()));
    let summary = e.shutdown();
    assert_eq!((summary.records, summary.failed), (201, 0));
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 201);
    let workers: std::collections::BTreeSet<_> = recs.iter().map(|r| r.worker.clone().unwrap()).collect();
    let expected: std::collections::BTreeSet<_> = pids.iter().map(|p| format!("pid-{}", p)).collect();
    assert!(workers.is_subset(&expected), "{:?} ⊄ {:?}", workers, expected);
    for r in &recs {
        let x = r.execution.as_ref().expect("worker timings");
        assert!(x.task_start_time <= x.task_end_time && x.execution_start_time <= x.execution_end_time);
        assert!(r.submit_time <= x.execution_start_time && x.execution_end_time <= r.received_time.unwrap());
        assert!(r.bytes_inline > 0 && r.bytes_by_reference == 0);
    }
    assert_eq!(watch.started(), 2, "no worker was replaced");
}

#[test]
fn panics_and_errors_are_recorded_and_the_worker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(1, dir.path());
    let pid = watch.pids()[0];
    let p = e.submit::<Panic>(("boom at the worker".to_string().into(),));
    let f = e.submit::<Fail>(("plain failure".to_string().into(),));
    let ok = e.submit::<Sleep>((0.0.into(),));
    let err = p.result().unwrap_err();
    assert_eq!(err.kind, "TaskPanic");
    assert_eq!(err.message, "boom at the worker");
    assert!(err.traceback.contains("panicked at"), "{:?}", err.traceback);
    let err = f.result().unwrap_err();
    assert_eq!((err.kind.as_str(), err.message.as_str()), ("TaskError", "plain failure"));
    assert_eq!(ok.result().unwrap(), 0.0);
    e.shutdown();
    assert_eq!(watch.started(), 1, "the worker survived the panic");
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    let by_name = |n: &str| recs.iter().find(|r| r.name == n).unwrap().clone();
    let panic = by_name("panic");
    assert_eq!(panic.success, Some(false));
    assert_eq!(panic.exception.unwrap().kind, "TaskPanic");
    assert_eq!(panic.worker, Some(format!("pid-{}", pid)));
    assert!(panic.execution.is_some());
    assert_eq!(by_name("fail").success, Some(false));
    assert_eq!(by_name("sleep").success, Some(true));
}

#[test]
fn an_aborting_task_loses_its_worker_which_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(1, dir.path());
    let pid = watch.pids()[0];
    let a = e.submit::<Abort>(());
    // Queued behind the abort on the same (only) worker: re-sent to the replacement, not failed.
    let after: Vec<_> = (0..5u8).map(|i| e.submit::<Echo>((Bytes::from(vec![i; 10]).into(),))).collect();
    let err = a.result().unwrap_err();
    assert_eq!(err.kind, "WorkerLost");
    assert_eq!(err.message, format!("worker pid {} died (signal 6, SIGABRT) while running this task", pid));
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.result().unwrap(), Bytes::from(vec![i as u8; 10]));
    }
    let new = watch.pids();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], pid);
    assert_eq!(watch.started(), 2);
    let summary = e.shutdown();
    assert_eq!((summary.records, summary.failed), (6, 1));
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 6);
    assert!(recs.iter().filter(|r| r.name == "echo").all(|r| r.worker == Some(format!("pid-{}", new[0]))));
}

#[test]
fn a_worker_killed_mid_task_fails_only_that_task() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(1, dir.path());
    let pid = watch.pids()[0];
    let long = e.submit::<Sleep>((600.0.into(),));
    let next = e.submit::<Sleep>((0.0.into(),));
    std::thread::sleep(Duration::from_millis(100));
    kill(pid, libc::SIGKILL);
    let err = long.result().unwrap_err();
    assert_eq!(err.kind, "WorkerLost");
    assert_eq!(err.message, format!("worker pid {} died (signal 9, SIGKILL) while running this task", pid));
    assert_eq!(next.result().unwrap(), 0.0);
    e.shutdown();
    assert!(!worker_alive(pid));
    assert!(watch.pids().is_empty(), "shutdown stops every worker");
}

#[test]
fn a_hundred_megabyte_payload_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(1, dir.path());
    let big: Vec<u8> = (0..100_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let big = Bytes::from(big);
    let f = e.submit::<Echo>((big.clone().into(),));
    let g = e.submit::<Echo>(((&f).into(),));
    assert!(g.result().unwrap() == big, "100 MB came back intact");
    e.shutdown();
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    assert!(recs.iter().all(|r| r.success == Some(true) && r.bytes_inline >= 200_000_000));
}

#[test]
fn unregistered_tasks_fail_cleanly() {
    struct NotRegistered;
    impl Task for NotRegistered {
        const NAME: &'static str = "tests-not-registered";
        type Args = ();
        type Output = ();
        fn run(_: ()) -> Result<(), TaskError> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(1, dir.path());
    let err = e.submit::<NotRegistered>(()).result().unwrap_err();
    assert_eq!(err.kind, "UnknownTask");
    assert!(err.message.contains("tests-not-registered"), "{}", err.message);
    e.shutdown();
}

#[test]
fn shutdown_leaves_no_worker_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(3, dir.path());
    let pids = watch.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| worker_alive(p)));
    let futures: Vec<_> = (0..30).map(|_| e.submit::<Sleep>((0.001.into(),))).collect();
    for f in as_completed(futures, None) {
        f.unwrap().result().unwrap();
    }
    e.shutdown();
    for p in pids {
        assert!(!worker_alive(p), "worker {} still running after shutdown", p);
        assert!(!children_of(std::process::id()).contains(&p));
    }
    // Dropping an engine without shutdown stops its workers too.
    let dir2 = tempfile::tempdir().unwrap();
    let (e, watch) = engine(2, dir2.path());
    let pids = watch.pids();
    drop(e);
    assert!(pids.iter().all(|&p| !worker_alive(p)));
}

#[test]
fn a_missing_worker_binary_is_a_clear_error() {
    let e = Engine::builder(Box::new(ProcessPool::new(1).worker_path("/nonexistent/taps-worker"))).try_build();
    let msg = format!("{:#}", e.err().expect("start fails"));
    assert!(msg.contains("/nonexistent/taps-worker"), "{}", msg);

    // A binary that is not a taps-worker: start-up gives up after a few attempts.
    let e = Engine::builder(Box::new(ProcessPool::new(2).worker_path("/bin/false"))).try_build();
    let msg = format!("{:#}", e.err().expect("start fails"));
    assert!(msg.contains("/bin/false") && msg.contains("during start-up") && msg.contains("exit code 1"), "{}", msg);

    // Through the CLI: one line, exit 2, no run directory.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["run", "--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "2"];
    let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    common::assert_bad_input(
        d,
        &with(&["--engine.executor.worker-path", "/nonexistent/taps-worker"]),
        &["engine.executor.worker_path /nonexistent/taps-worker", "No such file"],
    );
    common::assert_bad_input(d, &with(&["--engine.executor.max-processes", "0"]), &["max_processes", "at least 1"]);
    common::assert_bad_input(d, &with(&["--engine.executor.context", "thread"]), &["context", "fork|spawn|forkserver"]);
    let out = Command::new(TAPS).current_dir(d).args(base).env("TAPS_WORKER", "/nonexistent/w").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TAPS_WORKER=/nonexistent/w"));
    assert!(common::run_dirs(d).is_empty());
}

#[test]
fn process_pool_is_the_default_executor_and_accepts_python_options() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::run_ok(
        dir.path(),
        &["run", "--app", "synthetic", "--app.structure", "diamond", "--app.task-count", "2"],
    );
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("name = \"process-pool\""), "{}", cfg);
    // `context` from a Python config is accepted (and has no effect).
    let run = common::run_ok(
        dir.path(),
        &["run", "-c", &run.join("config.toml").display().to_string(), "--engine.executor.context", "spawn"],
    );
    let recs = common::records(&run);
    common::check_record_invariants(&recs);
    assert!(recs.iter().all(|r| r.worker.as_deref().is_some_and(|w| w.starts_with("pid-"))));
}

#[test]
fn taps_worker_by_hand_explains_itself() {
    let out = Command::new(WORKER).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("started by `taps run"));
    let out = Command::new(WORKER).args(["--pipe-fd", "57"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pipe-fd 57: not an open file descriptor"));
}

/// `taps run` of a synthetic reduce on the process pool, in `dir`.
fn taps(dir: &Path) -> Command {
    let mut c = Command::new(TAPS);
    c.current_dir(dir)
        .args(["run", "--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "2"])
        .args(["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"])
        .env_remove("TAPS_WORKER");
    c
}

fn run_dir(dir: &Path) -> PathBuf {
    let runs: Vec<_> = std::fs::read_dir(dir.join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(runs.len(), 1, "{:?}", runs);
    runs[0].clone()
}

fn assert_run_dir_clean(run: &Path) {
    let mut names: Vec<String> =
        std::fs::read_dir(run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
}

/// Starts a long synthetic run and waits until both of its workers are up.
fn start_long_run(dir: &Path) -> (Child, Vec<u32>) {
    let child = taps(dir)
        .args(["--app.task-count", "12", "--app.task-sleep", "0.4", "--engine.transformer", "file"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let taps_pid = child.id();
    let workers = wait_for(|| {
        let c = children_of(taps_pid);
        (c.len() == 2 && c.iter().all(|&p| worker_alive(p))).then_some(c)
    });
    // Let the first tasks start.
    std::thread::sleep(Duration::from_millis(300));
    (child, workers)
}

fn records(run: &Path) -> Vec<TaskRecord> {
    read_records(&run.join("tasks.jsonl")).unwrap()
}

#[test]
fn cli_run_survives_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, workers) = start_long_run(dir.path());
    let taps_pid = child.id();
    let victim = workers[0];
    kill(victim, libc::SIGKILL);
    let status = child.wait().unwrap();
    // The reduce task inherits the lost task's error, so the app reports a failure.
    assert_eq!(status.code(), Some(1));
    assert!(children_of(taps_pid).is_empty() && !workers.iter().any(|&p| worker_alive(p)), "no orphans");

    let run = run_dir(dir.path());
    assert_run_dir_clean(&run);
    let recs = records(&run);
    assert_eq!(recs.len(), 13, "every task has its record");
    let first: Vec<_> = recs.iter().filter(|r| r.parent_task_ids.is_empty()).collect();
    assert_eq!(first.len(), 12);
    let lost: Vec<_> = first.iter().filter(|r| r.success == Some(false)).collect();
    assert_eq!(lost.len(), 1, "exactly the running task fails");
    let e = lost[0].exception.as_ref().unwrap();
    assert_eq!(e.kind, "WorkerLost");
    assert_eq!(e.message, format!("worker pid {} died (signal 9, SIGKILL) while running this task", victim));
    assert_eq!(lost[0].worker, Some(format!("pid-{}", victim)), "the record names the lost worker");
    // The other tasks ran, some on the replacement worker.
    let ran_on: std::collections::BTreeSet<_> = first.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(ran_on.len() >= 2, "{:?}", ran_on);
    // The reduce never ran: it failed because of its parent, which it names.
    let reduce = recs.iter().find(|r| !r.parent_task_ids.is_empty()).unwrap();
    let re = reduce.exception.as_ref().unwrap();
    assert_eq!(re.kind, "ParentFailed");
    assert_eq!(
        re.message,
        format!("parent task {} ({}) failed: WorkerLost: {}", lost[0].name, lost[0].task_id, e.message)
    );
    assert!(reduce.worker.is_none() && reduce.execution.is_none());
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(
        log.contains(&format!("worker pid {} died (signal 9, SIGKILL); starting a replacement", victim)),
        "{}",
        log
    );
}

#[test]
fn ctrl_c_records_everything_and_leaves_no_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, workers) = start_long_run(dir.path());
    let taps_pid = child.id();
    kill(taps_pid, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!workers.iter().any(|&p| worker_alive(p)), "no orphan workers");
    assert!(processes().iter().all(|&(_, pp, _)| pp != taps_pid));
    let run = run_dir(dir.path());
    assert_run_dir_clean(&run);
    let recs = records(&run);
    assert_eq!(recs.len(), 13, "every submitted task has a record");
    assert!(recs.iter().any(|r| r.exception.as_ref().is_some_and(|e| e.kind == "Interrupted")));
}

#[test]
fn cli_run_on_process_pool_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        taps(dir.path()).args(["--app.task-data-bytes", "1000", "--engine.transformer", "file"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = run_dir(dir.path());
    assert_run_dir_clean(&run);
    let recs = records(&run);
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r.success == Some(true) && r.worker.as_deref().is_some_and(|w| w.starts_with("pid-"))));
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("name = \"process-pool\"") && cfg.contains("max_processes = 2"), "{}", cfg);
}

/// A worker lost while the driver itself runs BLAS (cholesky's residual check, after the last
/// task) is replaced and the run ends. Starting the replacement with fork() ran OpenBLAS's
/// at-fork handler, which waited forever for the busy BLAS threads: the run hung after
/// `Finished app` and ignored Ctrl-C.
#[test]
fn a_worker_lost_after_the_last_task_is_replaced_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(TAPS)
        .current_dir(dir.path())
        .args(["run", "--app", "cholesky", "--app.matrix-size", "3000", "--app.block-size", "250"])
        .args(["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"])
        .env_remove("TAPS_WORKER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let taps_pid = child.id();
    let log = || {
        std::fs::read_dir(dir.path().join("runs"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("log.txt")).ok())
            .unwrap_or_default()
    };
    wait_for(|| log().contains("Factored").then_some(()));
    let victim = children_of(taps_pid)[0];
    kill(victim, libc::SIGKILL);
    let status = common::wait_or_kill(&mut child, 120, "cholesky after a lost worker");
    assert_eq!(status.code(), Some(0), "the lost worker held no task");
    let run = run_dir(dir.path());
    let recs = records(&run);
    assert_eq!(recs.len(), 650);
    assert!(recs.iter().all(|r| r.success == Some(true)));
    let log = log();
    assert!(
        log.contains(&format!("worker pid {} died (signal 9, SIGKILL); starting a replacement", victim)),
        "{}",
        log
    );
    assert!(log.contains("Finished benchmark"), "{}", log);
    assert!(children_of(taps_pid).is_empty(), "no orphans");
}

/// Heartbeat timeout of the tests below (short; the default is 60 s).
const HEARTBEAT: Duration = Duration::from_secs(2);

#[test]
fn a_stopped_worker_holding_a_task_is_lost_killed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let p = pool(1).heartbeat_timeout(HEARTBEAT);
    let watch = p.watch();
    let e =
        Engine::builder(Box::new(p)).records(RecordWriter::create(&dir.path().join("tasks.jsonl")).unwrap()).build();
    let pid = watch.pids()[0];
    let long = e.submit::<Sleep>((600.0.into(),));
    let next = e.submit::<Sleep>((0.0.into(),));
    std::thread::sleep(Duration::from_millis(200));
    kill(pid, libc::SIGSTOP);
    let Ok(outcome) = long.result_timeout(Duration::from_secs(60)) else {
        kill(pid, libc::SIGKILL);
        panic!("a stopped worker hung the run");
    };
    let err = outcome.unwrap_err();
    assert_eq!(err.kind, "WorkerLost");
    assert!(err.message.starts_with(&format!("worker pid {} sent no heartbeat for ", pid)), "{}", err.message);
    assert!(err.message.ends_with(" s while running this task (stopped or hung) and was killed"), "{}", err.message);
    // The run goes on: the queued task runs on the replacement.
    assert_eq!(next.result().unwrap(), 0.0);
    assert_eq!(watch.started(), 2);
    assert!(!worker_alive(pid), "the stopped worker was killed");
    assert!(!children_of(std::process::id()).contains(&pid), "and reaped");
    e.shutdown();
    let recs = read_records(&dir.path().join("tasks.jsonl")).unwrap();
    let lost = recs.iter().find(|r| r.task_id == long.task_id().to_string()).unwrap();
    assert_eq!(lost.worker, Some(format!("pid-{}", pid)));
}

#[test]
fn a_task_longer_than_the_heartbeat_timeout_on_a_live_worker_succeeds() {
    let p = pool(1).heartbeat_timeout(HEARTBEAT);
    let watch = p.watch();
    let e = Engine::builder(Box::new(p)).build();
    let secs = 3.0 * HEARTBEAT.as_secs_f64();
    assert_eq!(e.submit::<Sleep>((secs.into(),)).result().unwrap(), secs);
    assert_eq!(watch.started(), 1, "the worker was never taken for lost");
    e.shutdown();
}

#[test]
fn cli_heartbeat_timeout_loses_a_stopped_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, workers) = {
        let child = taps(dir.path())
            .args(["--app.task-count", "6", "--app.task-sleep", "0.5", "--engine.executor.heartbeat-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let workers = wait_for(|| {
            let c = children_of(pid);
            (c.len() == 2 && c.iter().all(|&p| worker_alive(p))).then_some(c)
        });
        (child, workers)
    };
    std::thread::sleep(Duration::from_millis(300));
    kill(workers[0], libc::SIGSTOP);
    let status = common::wait_or_kill(&mut child, 120, "a run with a stopped worker");
    assert_eq!(status.code(), Some(1), "the lost task fails the reduce");
    assert!(!worker_alive(workers[0]), "no stopped orphan remains");
    let run = run_dir(dir.path());
    let recs = records(&run);
    assert_eq!(recs.len(), 7);
    let lost: Vec<_> = recs.iter().filter(|r| r.exception.as_ref().is_some_and(|e| e.kind == "WorkerLost")).collect();
    assert_eq!(lost.len(), 1, "{:?}", recs);
    assert_eq!(lost[0].worker, Some(format!("pid-{}", workers[0])));
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("heartbeat_timeout = 2.0"), "{}", cfg);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains(&format!("worker pid {} sent no heartbeat for", workers[0])), "{}", log);
    common::assert_bad_input(
        tempfile::tempdir().unwrap().path(),
        &[
            "run",
            "--app",
            "synthetic",
            "--app.structure",
            "reduce",
            "--app.task-count",
            "2",
            "--engine.executor.heartbeat-timeout",
            "0",
        ],
        &["heartbeat_timeout", "positive"],
    );
}

#[test]
fn run_env_vars_reach_the_workers_through_their_spawn_not_the_driver() {
    // The run's env_vars are given to the pool; the driver's own environment stays as it was
    // (no set_var in this threaded process), while every worker, replacements included, starts
    // with them.
    let dir = tempfile::tempdir().unwrap();
    let vars = vec![("TAPS_TEST_RUN_VAR".to_string(), "from the run".to_string()), ("HOME".into(), "/run-home".into())];
    let p = pool(2).with_env(vars);
    let watch = p.watch();
    let e =
        Engine::builder(Box::new(p)).records(RecordWriter::create(&dir.path().join("tasks.jsonl")).unwrap()).build();
    // posix_spawn returns once the kernel has swapped the child's memory, a moment before exec
    // writes the new environment and points /proc/PID/environ at it: until then it reads empty.
    let environ = |pid: u32| -> Vec<String> {
        let raw = wait_for(|| Some(std::fs::read(format!("/proc/{}/environ", pid)).unwrap()).filter(|r| !r.is_empty()));
        raw.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    };
    let check = |pid: u32| {
        let env = environ(pid);
        assert!(env.contains(&"TAPS_TEST_RUN_VAR=from the run".to_string()), "{:?}", env);
        assert_eq!(env.iter().filter(|v| v.starts_with("HOME=")).collect::<Vec<_>>(), ["HOME=/run-home"]);
    };
    let first = watch.pids();
    first.iter().copied().for_each(check);
    // A replacement worker gets them too.
    kill(first[0], libc::SIGKILL);
    let replaced = wait_for(|| Some(watch.pids()).filter(|p| p.len() == 2 && !p.contains(&first[0])));
    replaced.iter().copied().for_each(check);
    assert_eq!(e.submit::<Sleep>((0.0.into(),)).result().unwrap(), 0.0);
    assert!(std::env::var_os("TAPS_TEST_RUN_VAR").is_none(), "the driver's environment is untouched");
    e.shutdown();
}

/// Run by [`waiting_threads_take_completions_and_readers_take_the_rest`] in a process of its own
/// (every thread waiting for results in a process helps every pool of it).
#[test]
#[ignore = "run by waiting_threads_take_completions_and_readers_take_the_rest, in a process of its own"]
fn frames_by_who_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (e, watch) = engine(2, dir.path());
    // A bag with 2 in flight: the app's thread waits (polling) for each next result and takes
    // the worker's frame itself.
    let mut running = taps::engine::Completions::new();
    for _ in 0..2 {
        running.push(e.submit::<Sleep>((0.0.into(),)));
    }
    let mut submitted = 2;
    while let Some(f) = running.next() {
        assert_eq!(f.result().unwrap(), 0.0);
        if submitted < 2_000 {
            running.push(e.submit::<Sleep>((0.0.into(),)));
            submitted += 1;
        }
    }
    let (waiting, _) = watch.frames_taken();
    assert!(waiting > 0, "no frame was taken by the waiting thread: {:?}", watch.frames_taken());
    // Tasks nobody waits for: the reader threads take their frames (the workers wake them).
    let readers_before = watch.frames_taken().1;
    let fs: Vec<_> = (0..20).map(|i| e.submit::<Sleep>(((i as f64 * 0.002).into(),))).collect();
    wait_for(|| fs.iter().all(|f| f.done()).then_some(()));
    let (waiting_after, readers) = watch.frames_taken();
    assert_eq!(waiting_after, waiting, "nothing waited, yet a waiting thread took frames");
    assert!(readers >= readers_before + 20, "{:?}", watch.frames_taken());
    let s = e.shutdown();
    assert_eq!((s.submitted, s.records, s.failed), (2_020, 2_020, 0));
}

/// A thread waiting for results takes the workers' frames itself, one hand-off less per task;
/// when nothing waits, the pool's reader threads take them.
#[test]
fn waiting_threads_take_completions_and_readers_take_the_rest() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["frames_by_who_reads_them", "--exact", "--ignored", "--test-threads", "1"])
        .env_remove("TAPS_SPIN_US")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{}", text);
}
