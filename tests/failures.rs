//! The failures app through the real `taps` CLI: every failure type at rate 0 and 1 on thread-pool
//! and process-pool, each run ending (hang guard), with one record per task, a summary that
//! matches the records, no process of the run left behind, and no other run touched.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use taps::apps::failures::{Draws, FailureType};

/// Kill a run that has not ended after this long and fail the test (a guard, not a speed check).
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Environment variable that marks every process of one test run (inherited by its workers).
const MARK: &str = "TAPS_FAILURES_TEST_RUN";

/// Pids of live processes whose environment has `MARK=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("{}={}", MARK, mark);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", pid)) else { continue };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn kill_marked(mark: &str) {
    for pid in marked(mark) {
        // SAFETY: signalling processes this test started (they carry its mark).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// A `taps` process started by a test, with its stderr collected and its processes marked.
struct Running {
    child: Child,
    mark: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// A run a failed test leaves behind is killed with everything it started.
impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            kill_marked(&self.mark);
        }
    }
}

fn start(cwd: &Path, args: &[&str]) -> Running {
    let mark = uuid::Uuid::new_v4().to_string();
    let mut child = Command::new(taps_bin())
        .args(args)
        .env(MARK, &mark)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("taps starts");
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Running { child, mark, stderr: Some(stderr) }
}

impl Running {
    /// Waits for the exit (killing everything of the run after [`HANG_GUARD`]), then checks that
    /// no process of the run is left. Returns the exit code and stderr.
    fn finish(mut self, what: &str) -> (Option<i32>, String) {
        let deadline = Instant::now() + HANG_GUARD;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                panic!("{}: taps did not finish within {} s (killed)", what, HANG_GUARD.as_secs());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.take().unwrap().join().unwrap();
        // Every process of the run is gone (killed workers may take a moment to be reaped).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = marked(&self.mark);
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = left
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p,
                            std::fs::read_to_string(format!("/proc/{}/comm", p)).unwrap_or_default().trim()
                        )
                    })
                    .collect();
                kill_marked(&self.mark);
                panic!("{}: processes of the run outlived it: {:?}", what, names);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (status.code(), stderr)
    }
}

/// What one finished run left.
struct Outcome {
    code: Option<i32>,
    dir: PathBuf,
    recs: Vec<TaskRecord>,
    log: String,
    stderr: String,
}

fn run(cwd: &Path, args: &[&str]) -> Outcome {
    let before = run_dirs(cwd);
    let (code, stderr) = start(cwd, args).finish(&format!("taps {:?}", args));
    let new: Vec<PathBuf> = run_dirs(cwd).into_iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "one run directory; stderr: {}", stderr);
    let dir = new[0].clone();
    let recs = records(&dir);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    check_record_invariants(&recs);
    Outcome { code, dir, recs, log, stderr }
}

/// The summary line's counts: totals, and (tasks, injected, failed, recovered) by type.
#[derive(Debug)]
struct Summary {
    injected: u64,
    failed: u64,
    recovered: u64,
    by_type: BTreeMap<String, [u64; 4]>,
}

impl Summary {
    fn tasks(&self) -> u64 {
        self.by_type.values().map(|c| c[0]).sum()
    }
    fn of(&self, t: &str) -> [u64; 4] {
        self.by_type.get(t).copied().unwrap_or_default()
    }
}

fn summary(log: &str) -> Summary {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("Failure injection summary:")).collect();
    assert_eq!(lines.len(), 1, "one summary line in:\n{}", log);
    let re = regex::Regex::new(r"injected=(\d+) failed=(\d+) recovered=(\d+) by type: (.*)$").unwrap();
    let c = re.captures(lines[0]).unwrap_or_else(|| panic!("unparsable summary: {}", lines[0]));
    let n = |i: usize| c[i].parse::<u64>().unwrap();
    let per = regex::Regex::new(r"([a-z-]+): tasks=(\d+) injected=(\d+) failed=(\d+) recovered=(\d+)").unwrap();
    let mut by_type = BTreeMap::new();
    for m in per.captures_iter(&c[4]) {
        let v = |i: usize| m[i].parse::<u64>().unwrap();
        by_type.insert(m[1].to_string(), [v(2), v(3), v(4), v(5)]);
    }
    let s = Summary { injected: n(1), failed: n(2), recovered: n(3), by_type };
    let sum = |i: usize| s.by_type.values().map(|c| c[i]).sum::<u64>();
    assert_eq!(
        (sum(1), sum(2), sum(3)),
        (s.injected, s.failed, s.recovered),
        "totals are the sum of the types: {:?}",
        s
    );
    s
}

const PARENT: &str = "injected_parent_task";

/// Checks the summary against the records: every base task counted once, failures counted right.
fn check_summary(o: &Outcome) -> Summary {
    let s = summary(&o.log);
    let base: Vec<&TaskRecord> = o.recs.iter().filter(|r| r.name != PARENT).collect();
    let parents = o.recs.len() - base.len();
    assert_eq!(s.tasks(), base.len() as u64, "every base task is counted once: {:?}", s);
    assert_eq!(parents as u64, s.of("dependency")[0], "one injected parent per dependency task");
    let failed = base.iter().filter(|r| r.success == Some(false)).count() as u64;
    assert_eq!(s.failed, failed, "failed base tasks: {:?}", s);
    assert!(s.recovered <= s.injected);
    s
}

fn base_config() -> &'static str {
    r#"{"structure": "reduce", "task_count": 3}"#
}

/// Base tasks of the workload above: 3 independent tasks and the reduce task.
const BASE_TASKS: usize = 4;

fn executor_args(executor: &str) -> Vec<&'static str> {
    match executor {
        "thread-pool" => vec!["--engine.executor", "thread-pool", "--engine.executor.max-threads", "2"],
        "process-pool" => vec!["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"],
        "mpi" => vec!["--engine.executor", "mpi", "--engine.executor.ranks", "3"],
        other => panic!("no executor {}", other),
    }
}

fn failures_args<'a>(ftype: &'a str, rate: &'a str, executor: &str) -> Vec<&'a str> {
    let mut a = vec!["run", "--app", "failures", "--app.base", "synthetic", "--app.config", base_config()];
    a.extend(["--app.failure-type", ftype, "--app.failure-rate", rate, "--app.seed", "1"]);
    a.extend(["--app.timeout-seconds", "0.2", "--app.memory-limit", "8000000", "--app.ulimit-files", "16"]);
    a.extend(executor_args(executor));
    a
}

/// Exception types the base tasks' records may show at rate 1 (the reduce task fails with its
/// parents' error without running).
fn kinds_at_rate_1(ftype: &str, executor: &str) -> Vec<&'static str> {
    let in_process = executor == "thread-pool";
    let mpi = executor == "mpi";
    match ftype {
        "dependency" => vec!["ParentDependencyError"],
        "exception" | "failure" => vec!["Exception"],
        "zero-division" => vec!["ZeroDivisionError"],
        "panic" => vec!["TaskPanic"],
        "import" => vec!["ImportError"],
        "timeout" => vec!["Timeout"],
        "memory" => vec!["MemoryError"],
        "ulimit" => vec!["OSError"],
        "worker-killed" if in_process => vec!["WorkerKilled"],
        "worker-killed" => vec!["WorkerLost"],
        "node-killed" if in_process || mpi => vec!["NodeKilled"],
        // A rank's parent is the MPI launcher, not the taps driver: refused, and the record says so.
        "manager-killed" if mpi => vec!["ManagerKilled"],
        "node-killed" => vec!["WorkerLost"],
        "manager-killed" => vec!["Interrupted"],
        "random" => FailureType::concrete()
            .iter()
            .flat_map(|t| kinds_at_rate_1(t.as_str(), executor))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect(),
        other => panic!("unknown type {}", other),
    }
}

/// One cell of the matrix: `ftype` at `rate` (0 or 1) on `executor`.
fn check_cell(ftype: &str, rate: &str, executor: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let what = format!("{} at rate {} on {}", ftype, rate, executor);
    let o = run(tmp.path(), &failures_args(ftype, rate, executor));
    let s = check_summary(&o);
    let base: Vec<&TaskRecord> = o.recs.iter().filter(|r| r.name != PARENT).collect();
    assert_eq!(base.len(), BASE_TASKS, "{}: base records", what);
    assert!(base.iter().all(|r| r.name == "noop"), "{}: records keep the base task names", what);
    assert!(
        o.log.contains(&format!("Injecting failures into the synthetic app (type={}", canonical(ftype))),
        "{}",
        what
    );
    if rate == "0" {
        assert_eq!(o.code, Some(0), "{}: stderr {}", what, o.stderr);
        assert!(o.recs.iter().all(|r| r.success == Some(true)), "{}: a rate of 0 never fires", what);
        assert_eq!((s.injected, s.failed, s.recovered), (0, 0, 0), "{}", what);
        let finished = format!("tasks={})", o.recs.len());
        assert!(o.log.contains("Finished benchmark") && o.log.contains(&finished), "{}: {}", what, o.log);
        return;
    }
    assert_eq!(s.injected, BASE_TASKS as u64, "{}: a rate of 1 picks every task", what);
    assert_eq!(s.failed, BASE_TASKS as u64, "{}", what);
    assert_eq!(s.recovered, 0, "{}", what);
    let allowed = kinds_at_rate_1(ftype, executor);
    for r in &base {
        // A task whose parent failed did not run: ParentFailed, naming the failure that started it.
        let e = r.exception.as_ref().unwrap();
        let kind = match e.kind.as_str() {
            "ParentFailed" => e.message.rsplit(" failed: ").next().and_then(|m| m.split(':').next()).unwrap_or(""),
            k => k,
        };
        assert!(allowed.contains(&kind), "{}: unexpected {:?} (allowed {:?})", what, r.exception, allowed);
    }
    let signalled = o.log.contains("Interrupted by signal 15");
    assert_eq!(signalled, o.dir.join("failures-manager-killed.txt").exists(), "{}", what);
    let expected_code = match ftype {
        "manager-killed" if executor != "mpi" => 130,
        "random" if signalled => 130,
        _ => 1,
    };
    assert_eq!(o.code, Some(expected_code), "{}: stderr {}\nlog:\n{}", what, o.stderr, o.log);
    if expected_code == 1 {
        assert!(o.log.contains("failed with failures injected"), "{}: a clear message\n{}", what, o.log);
    }
    match (ftype, executor) {
        ("dependency", _) => {
            let parents: Vec<&TaskRecord> = o.recs.iter().filter(|r| r.name == PARENT).collect();
            assert_eq!(parents.len(), BASE_TASKS, "each base task has an injected parent");
            for p in &parents {
                assert_eq!(p.exception.as_ref().unwrap().message, "Simulated failure in parent task.");
            }
            for r in &base {
                assert!(r.parent_task_ids.iter().any(|id| parents.iter().any(|p| &p.task_id == id)));
                assert!(r.execution.is_none(), "a task whose parent failed does not run");
                let e = r.exception.as_ref().unwrap();
                assert_eq!(e.kind, "ParentFailed");
                assert!(e.message.ends_with("ParentDependencyError: Simulated failure in parent task."), "{:?}", e);
            }
        }
        ("manager-killed", "mpi") => assert!(!signalled, "{}: the driver is never signalled from a rank", what),
        ("manager-killed", _) => assert!(signalled, "{}: the driver got SIGTERM", what),
        ("worker-killed", "process-pool") => {
            assert!(o.log.contains("starting a replacement"), "{}: lost workers are replaced", what)
        }
        _ => {}
    }
}

fn canonical(ftype: &str) -> &str {
    if ftype == "failure" { "exception" } else { ftype }
}

/// Every type at rates 0 and 1 on MPI ranks started by `taps run` (3 ranks: driver + 2 workers).
#[cfg(feature = "mpi")]
#[test]
fn every_type_at_rate_0_and_1_on_mpi() {
    for ftype in [
        "dependency",
        "exception",
        "zero-division",
        "panic",
        "import",
        "timeout",
        "memory",
        "ulimit",
        "worker-killed",
        "manager-killed",
        "node-killed",
        "random",
    ] {
        for rate in ["0", "1"] {
            check_cell(ftype, rate, "mpi");
        }
    }
}

fn check_type(ftype: &str) {
    for executor in ["thread-pool", "process-pool"] {
        for rate in ["0", "1"] {
            check_cell(ftype, rate, executor);
        }
    }
}

#[test]
fn dependency_at_rate_0_and_1() {
    check_type("dependency");
}

#[test]
fn exception_at_rate_0_and_1() {
    check_type("exception");
}

#[test]
fn failure_is_an_alias_of_exception() {
    check_type("failure");
    let tmp = tempfile::tempdir().unwrap();
    let o = run(tmp.path(), &failures_args("failure", "0", "thread-pool"));
    let cfg = std::fs::read_to_string(o.dir.join("config.toml")).unwrap();
    // Written with the Python suite's name, so that suite reads the file.
    assert!(cfg.contains("failure_type = \"failure\""), "{}", cfg);
}

#[test]
fn zero_division_at_rate_0_and_1() {
    check_type("zero-division");
}

#[test]
fn panic_at_rate_0_and_1() {
    check_type("panic");
}

#[test]
fn import_at_rate_0_and_1() {
    check_type("import");
}

#[test]
fn timeout_at_rate_0_and_1() {
    check_type("timeout");
}

#[test]
fn memory_at_rate_0_and_1() {
    check_type("memory");
}

#[test]
fn ulimit_at_rate_0_and_1() {
    check_type("ulimit");
}

#[test]
fn worker_killed_at_rate_0_and_1() {
    check_type("worker-killed");
}

#[test]
fn manager_killed_at_rate_0_and_1() {
    check_type("manager-killed");
}

#[test]
fn node_killed_at_rate_0_and_1() {
    check_type("node-killed");
}

#[test]
fn random_at_rate_0_and_1() {
    check_type("random");
}

/// A seed whose first `n` draws at `rate` pick exactly the tasks `want` says.
fn seed_for(rate: f64, want: impl Fn(&[bool]) -> bool, n: usize) -> u64 {
    (0..10_000)
        .find(|&s| {
            let picks: Vec<bool> = Draws::new(FailureType::Exception, rate, Some(s)).take(n).map(|(_, f)| f).collect();
            want(&picks)
        })
        .expect("some seed fits")
}

#[test]
fn a_seeded_partial_rate_fails_exactly_the_drawn_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    // 8 independent tasks and a reduce task; pick a seed that fails some but not all of the 8.
    let seed = seed_for(0.5, |p| (2..=6).contains(&p[..8].iter().filter(|&&f| f).count()), 9);
    let picks: Vec<bool> = Draws::new(FailureType::Exception, 0.5, Some(seed)).take(9).map(|(_, f)| f).collect();
    let seed = seed.to_string();
    let mut args = vec!["run", "--app", "failures", "--app.base", "synthetic"];
    args.extend(["--app.config", r#"{"structure": "reduce", "task_count": 8}"#, "--app.failure-type", "exception"]);
    args.extend(["--app.failure-rate", "0.5", "--app.seed", &seed]);
    args.extend(executor_args("thread-pool"));
    let o = run(tmp.path(), &args);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let s = check_summary(&o);
    assert_eq!(s.injected, picks.iter().filter(|&&f| f).count() as u64);
    let first: Vec<&TaskRecord> = o.recs.iter().filter(|r| r.parent_task_ids.is_empty()).collect();
    assert_eq!(first.len(), 8);
    let failed_first = first.iter().filter(|r| r.success == Some(false)).count();
    assert_eq!(failed_first, picks[..8].iter().filter(|&&f| f).count(), "exactly the picked tasks fail");
    assert!(
        first.iter().filter(|r| r.success == Some(false)).all(|r| r.exception.as_ref().unwrap().kind == "Exception")
    );
    assert_eq!(s.failed as usize, failed_first + 1, "the reduce task fails with its parents");
    // The same seed gives the same run.
    let again = run(tmp.path(), &args);
    assert_eq!(summary(&again.log).by_type, s.by_type);
}

/// Node-killed takes down every worker of its own run (collateral tasks included), while the
/// workers and driver of another run on the same host are untouched; so do worker-killed and
/// manager-killed.
#[test]
fn killing_workers_managers_and_nodes_spares_other_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let by = tempfile::tempdir().unwrap();
    // A bystander run whose tasks sleep long (it is interrupted at the end).
    let mut bystander = start(
        by.path(),
        &[
            "run",
            "--app",
            "synthetic",
            "--app.structure",
            "bag",
            "--app.task-count",
            "2",
            "--app.bag-max-running",
            "2",
            "--app.task-sleep",
            "50",
            "--engine.executor",
            "process-pool",
            "--engine.executor.max-processes",
            "2",
        ],
    );
    let deadline = Instant::now() + HANG_GUARD;
    let bystanders = loop {
        let p = marked(&bystander.mark);
        if p.len() == 3 {
            break p; // the driver and its 2 workers
        }
        assert!(Instant::now() < deadline, "the bystander run did not start: {:?}", p);
        assert!(bystander.child.try_wait().unwrap().is_none(), "the bystander ended early");
        std::thread::sleep(Duration::from_millis(20));
    };

    // 4 sleeping tasks on 4 workers; only the last one is picked, and it kills the whole "node".
    let seed = seed_for(0.5, |p| p == [false, false, false, true], 4).to_string();
    let mut args = vec!["run", "--app", "failures", "--app.base", "synthetic", "--app.failure-type", "node-killed"];
    args.extend(["--app.config", r#"{"structure": "bag", "task_count": 4, "bag_max_running": 4, "task_sleep": 30}"#]);
    args.extend(["--app.failure-rate", "0.5", "--app.seed", &seed]);
    args.extend(["--engine.executor", "process-pool", "--engine.executor.max-processes", "4"]);
    let o = run(tmp.path(), &args);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    let s = check_summary(&o);
    assert_eq!((s.injected, s.failed), (1, 4), "{:?}", s);
    let lost: Vec<&TaskRecord> =
        o.recs.iter().filter(|r| r.exception.as_ref().is_some_and(|e| e.kind == "WorkerLost")).collect();
    assert_eq!(lost.len(), 4, "the injected task and the 3 tasks on the other workers of the run: {:?}", o.recs);
    let pids: HashSet<&str> = lost.iter().map(|r| r.exception.as_ref().unwrap().message.as_str()).collect();
    assert_eq!(pids.len(), 4, "4 different workers died");
    assert_eq!(marked(&bystander.mark), bystanders, "the other run's processes are untouched");

    for ftype in ["worker-killed", "manager-killed"] {
        let o = run(tmp.path(), &failures_args(ftype, "1", "process-pool"));
        check_summary(&o);
        assert_eq!(marked(&bystander.mark), bystanders, "{} touched another run", ftype);
    }

    // The bystander was never signalled: it stops only now, on our SIGINT.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(bystander.child.id() as i32, libc::SIGINT) };
    let dir = run_dirs(by.path()).pop().unwrap();
    let (code, stderr) = bystander.finish("bystander");
    assert_eq!(code, Some(130), "{}", stderr);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("Interrupted by signal 2") && !log.contains("signal 15"), "{}", log);
    let recs = records(&dir);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.exception.as_ref().is_some_and(|e| e.kind == "Interrupted")), "{:?}", recs);
}

#[test]
fn bad_options_are_rejected_before_work_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let base = ["run", "--app", "failures"];
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    let cfg = ["--app.config", r#"{"structure": "reduce", "task_count": 3}"#];
    assert_bad_input(cwd, &with(&["--app.base", "nope"]), &["app.base", "\"nope\"", "mapreduce, moldesign, synthetic"]);
    assert_bad_input(cwd, &with(&["--app.base", "synthetc"]), &["did you mean \"synthetic\""]);
    assert_bad_input(cwd, &with(&["--app.base", "failures"]), &["app.base", "cannot wrap itself", "synthetic"]);
    assert_bad_input(cwd, &with(&[]), &["app.base is required"]);
    let mut a = with(&["--app.base", "synthetic", "--app.failure-rate", "1.5"]);
    a.extend(cfg);
    assert_bad_input(cwd, &a, &["app.failure_rate", "[0, 1]", "1.5"]);
    let mut a = with(&["--app.base", "synthetic", "--app.failure-rate", "-0.1"]);
    a.extend(cfg);
    assert_bad_input(cwd, &a, &["app.failure_rate", "[0, 1]"]);
    let mut a = with(&["--app.base", "synthetic", "--app.failure-type", "explode"]);
    a.extend(cfg);
    assert_bad_input(cwd, &a, &["app.failure-type", "worker-killed", "alias", "explode"]);
    let mut a = with(&["--app.base", "synthetic", "--app.timeout-seconds", "0"]);
    a.extend(cfg);
    assert_bad_input(cwd, &a, &["app.timeout_seconds"]);
    // The base app's own checks, naming app.config.<key>.
    let bad_key = with(&["--app.base", "synthetic", "--app.config", r#"{"structure": "reduce", "task_countt": 3}"#]);
    assert_bad_input(cwd, &bad_key, &["app.config.task_countt", "did you mean app.config.task_count"]);
    let missing = with(&["--app.base", "synthetic", "--app.config", r#"{"structure": "reduce"}"#]);
    assert_bad_input(cwd, &missing, &["app.config.task_count is required"]);
    let cross = with(&["--app.base", "synthetic", "--app.config", r#"{"structure": "bag", "task_count": 3}"#]);
    assert_bad_input(
        cwd,
        &cross,
        &["app.config.bag_max_running is required", r#"set --app.config '{"bag_max_running": N}'"#],
    );
    let not_json = with(&["--app.base", "synthetic", "--app.config", "{structure: reduce}"]);
    assert_bad_input(cwd, &not_json, &["app.config", "JSON"]);
}

#[test]
fn the_example_config_runs_and_its_summary_matches_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/failures/config.toml");
    let o = run(tmp.path(), &["run", "-c", example.to_str().unwrap()]);
    let s = check_summary(&o);
    assert!(s.injected > 0, "the example injects some failures: {:?}", s);
    assert_eq!(o.code, Some(1), "an injected exception fails the synthetic app: {}", o.stderr);
    let cfg = std::fs::read_to_string(o.dir.join("config.toml")).unwrap();
    assert!(cfg.contains("[app.config]"), "{}", cfg);
    // The written config repeats the run (same seed, same draws).
    let again = run(tmp.path(), &["run", "-c", o.dir.join("config.toml").to_str().unwrap()]);
    assert_eq!(summary(&again.log).by_type, s.by_type);
}

#[test]
fn mapreduce_as_base_app_is_closed_after_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("words");
    for (rate, code) in [("0", 0), ("1", 1)] {
        let config = format!(
            r#"{{"data_dir": "{}", "generate": true, "generated_files": 4, "generated_words": 200, "map_tasks": 2, "seed": 1}}"#,
            data.display()
        );
        let mut args = vec!["run", "--app", "failures", "--app.base", "mapreduce", "--app.config", &config];
        args.extend(["--app.failure-type", "exception", "--app.failure-rate", rate]);
        args.extend(executor_args("process-pool"));
        let o = run(tmp.path(), &args);
        assert_eq!(o.code, Some(code), "rate {}: {}", rate, o.stderr);
        let s = check_summary(&o);
        assert_eq!(s.injected == s.tasks(), rate == "1");
        assert!(!data.exists(), "the base app's close() removed its generated input");
        assert_eq!(o.dir.join("counts.csv").exists(), rate == "0");
    }
}
