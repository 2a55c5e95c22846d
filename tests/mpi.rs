//! The mpi executor with real OpenMPI, 3 ranks (oversubscribed on 2 cores): both entry points
//! (`mpirun taps-worker` inside a job, `taps run --engine.executor mpi` starting the job), data
//! through messages and through the file transformer, panics, a rank that dies or stops
//! mid-run, signals to every process of the job, shutdown under load, a full disk, and the
//! errors a user can make.
#![cfg(feature = "mpi")]

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use taps::record::TaskRecord;

mod common;

use common::{descendants, show, the_run_dir, wait_for};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");
const WORKER: &str = env!("CARGO_BIN_EXE_taps-worker");

/// `mpirun --oversubscribe -np N PROGRAM` in `dir`, as root if need be, with yield-when-idle,
/// keeping its session files in `dir` (as `taps run` gives mpirun a directory of its own: the
/// tests' mpiruns run side by side, and OpenMPI's shared `/tmp/ompi.HOST.UID` is racy, see
/// `SessionBase` in launchers/mpi.rs).
fn mpirun(dir: &Path, n: usize, program: &str) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(dir)
        .args(["--oversubscribe", "-np", &n.to_string(), program])
        .env("OMPI_MCA_orte_tmpdir_base", dir.join(".ompi-session"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env_remove("TAPS_WORKER");
    c
}

/// `taps run ... --engine.executor mpi --engine.executor.ranks N`.
fn taps_run(dir: &Path, ranks: usize) -> Command {
    let mut c = Command::new(TAPS);
    c.current_dir(dir)
        .args(["run", "--engine.executor", "mpi", "--engine.executor.ranks", &ranks.to_string()])
        .env_remove("TAPS_WORKER");
    c
}

fn ok(mut c: Command) -> Output {
    let out = c.output().expect("command runs");
    assert!(out.status.success(), "{:?} failed: {}", c, show(&out));
    out
}

fn files(run: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(run).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Checks a successful run on ranks 1..ranks-1 and returns its records.
fn check_run(run: &Path, tasks: usize, ranks: usize) -> Vec<TaskRecord> {
    assert_eq!(files(run), ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
    let recs = common::records(run);
    assert_eq!(recs.len(), tasks, "one record per task");
    common::check_record_invariants(&recs);
    let allowed: BTreeSet<String> = (1..ranks).map(|r| format!("rank-{}", r)).collect();
    for r in &recs {
        assert_eq!(r.success, Some(true), "{:?}", r);
        assert!(allowed.contains(r.worker.as_deref().unwrap_or("")), "{:?} not in {:?}", r.worker, allowed);
        assert_eq!(r.execution.as_ref().unwrap().hostname, taps::engine::hostname());
    }
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("name = \"mpi\""), "{}", cfg);
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert!(env["software"]["mpi"].as_str().unwrap().starts_with("Open MPI v4"), "{}", env["software"]);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("Finished benchmark (app=synthetic"), "{}", log);
    recs
}

fn synthetic(structure: &str, tasks: usize) -> Vec<String> {
    ["--app", "synthetic", "--app.structure", structure, "--app.task-count", &tasks.to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(if structure == "bag" { vec!["--app.bag-max-running".into(), "4".into()] } else { vec![] })
        .collect()
}

/// Records expected for a synthetic run of `n` tasks.
fn expected(structure: &str, n: usize) -> usize {
    match structure {
        "diamond" => n + 2,
        "reduce" => n + 1,
        _ => n,
    }
}

#[test]
fn every_synthetic_structure_runs_under_mpirun_taps_worker() {
    for structure in ["bag", "diamond", "reduce", "sequential"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = mpirun(dir.path(), 3, WORKER);
        c.args(synthetic(structure, 8));
        ok(c);
        let recs = check_run(&the_run_dir(dir.path()), expected(structure, 8), 3);
        if structure == "bag" {
            let ranks: BTreeSet<_> = recs.iter().map(|r| r.worker.clone().unwrap()).collect();
            assert_eq!(ranks.len(), 2, "both worker ranks ran tasks: {:?}", ranks);
        }
    }
}

#[test]
fn every_synthetic_structure_runs_through_taps_run() {
    for structure in ["bag", "diamond", "reduce", "sequential"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = taps_run(dir.path(), 3);
        c.args(synthetic(structure, 8));
        let out = ok(c);
        let run = the_run_dir(dir.path());
        check_run(&run, expected(structure, 8), 3);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The job's output is streamed: rank 0's log lines come through this process.
        assert!(stdout.contains("Launching MPI job (3 ranks"), "{}", stdout);
        assert!(stdout.contains("Finished benchmark (app=synthetic"), "{}", stdout);
        let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
        assert!(log.contains("mpirun --allow-run-as-root") || unsafe { libc::geteuid() } != 0, "{}", log);
    }
}

/// Rank 0's count of the ranks' frames taken by its communication thread and by threads
/// waiting for results (its DEBUG line at the end of the run).
fn frames_taken(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find_map(|l| l.split_once("mpi: frames from the ranks taken by the communication thread: ").map(|x| x.1))
        .unwrap_or_else(|| panic!("no count of frames in the log: {}", log));
    let (comm, waiting) = line.split_once(", by threads waiting for results: ").unwrap();
    (comm.trim().parse().unwrap(), waiting.trim().parse().unwrap())
}

/// From rank 0's DEBUG line: frames from ranks on same-node lanes taken from the rings, taken as
/// announced MPI messages, and the number of ranks on lanes.
fn lane_counts(log: &str) -> (u64, u64, u64) {
    let n = lane_line(log);
    (n[0], n[1], n[2])
}

/// The numbers of rank 0's DEBUG line on lanes (the last: frames to the ranks that waited for room).
fn lane_line(log: &str) -> Vec<u64> {
    let line = log
        .lines()
        .find_map(|l| l.split_once("mpi: frames from ranks on lanes: ").map(|x| x.1))
        .unwrap_or_else(|| panic!("no count of lane frames in the log: {}", log));
    line.split(|c: char| !c.is_ascii_digit()).filter(|t| !t.is_empty()).map(|t| t.parse().unwrap()).collect()
}

/// With every rank on rank 0's node, the app's thread waiting for results takes the ranks'
/// answers itself (no hand-off from the communication thread); every frame is counted once.
#[test]
fn rank_0_threads_waiting_for_results_take_the_answers_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("bag", 2_000)).args(["--logging.level", "DEBUG"]).env_remove("TAPS_SPIN_US");
    ok(c);
    let run = the_run_dir(dir.path());
    check_run(&run, 2_000, 3);
    let (comm, waiting) = frames_taken(&std::fs::read_to_string(run.join("log.txt")).unwrap());
    assert!(waiting > 0, "the waiting thread took no frame ({} by the communication thread)", comm);
    // Each rank's Ready and shared-memory answer, and one Done per task.
    assert_eq!(comm + waiting, 2_000 + 2 * 2, "({}, {})", comm, waiting);
    // Both ranks are on this node: after the handshake, every frame came through their lanes'
    // rings (each rank's Ready, one Done per task), none as an MPI message.
    assert_eq!(lane_counts(&std::fs::read_to_string(run.join("log.txt")).unwrap()), (2_000 + 2, 0, 2));
}

/// With 60 tasks of 3 KB sent ahead to each rank, rank 0's frames fill a lane's 64 KiB ring: the
/// rest wait in order in the lane's backlog and go as the rank takes the ring's; every payload
/// arrives whole (the app checks each one's checksum) and every answer comes through the rings.
#[test]
fn frames_that_fill_a_lane_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("bag", 600)).args([
        "--app.bag-max-running",
        "120",
        "--app.task-data-bytes",
        "3000",
        "--engine.executor.prefetch",
        "60",
        "--logging.level",
        "DEBUG",
    ]);
    ok(c);
    let run = the_run_dir(dir.path());
    let recs = check_run(&run, 600, 3);
    assert!(recs.iter().all(|r| r.success == Some(true)));
    let n = lane_line(&std::fs::read_to_string(run.join("log.txt")).unwrap());
    assert_eq!(n[..3], [600 + 2, 0, 2]);
    assert!(n[3] > 0, "no frame waited for room: the rings never filled");
}

#[test]
fn data_moves_inline_and_through_files_with_both_entry_points() {
    let bytes = 100_000u64;
    for transformer in ["none", "file"] {
        for entry in ["mpirun", "taps run"] {
            let dir = tempfile::tempdir().unwrap();
            let mut args = synthetic("reduce", 6);
            args.extend(
                ["--app.task-data-bytes", &bytes.to_string(), "--engine.transformer", transformer]
                    .iter()
                    .map(|s| s.to_string()),
            );
            let mut c = if entry == "mpirun" { mpirun(dir.path(), 3, WORKER) } else { taps_run(dir.path(), 3) };
            c.args(&args);
            ok(c);
            // The synthetic app checks every payload's checksum; the data/ directory is gone.
            let recs = check_run(&the_run_dir(dir.path()), 7, 3);
            for r in &recs {
                let moved = if r.parent_task_ids.is_empty() { 2 * bytes } else { 7 * bytes };
                if transformer == "none" {
                    assert!(r.bytes_inline >= moved && r.bytes_by_reference == 0, "{} {}: {:?}", entry, transformer, r);
                } else {
                    assert!(r.bytes_by_reference >= moved, "{} {}: {:?}", entry, transformer, r);
                }
            }
        }
    }
}

#[test]
fn a_hundred_megabyte_payload_crosses_ranks_inline_and_by_file() {
    const B: u64 = 100_000_000;
    for transformer in ["none", "file"] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = mpirun(dir.path(), 2, WORKER);
        c.args(synthetic("sequential", 1)).args([
            "--app.task-data-bytes",
            &B.to_string(),
            "--engine.transformer",
            transformer,
        ]);
        ok(c);
        let recs = check_run(&the_run_dir(dir.path()), 1, 2);
        assert!(recs[0].bytes_inline + recs[0].bytes_by_reference >= 2 * B, "{}: {:?}", transformer, recs[0]);
    }
}

#[test]
fn taps_worker_runs_in_a_prepared_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("prepared");
    std::fs::create_dir(&run).unwrap();
    let mut c = mpirun(dir.path(), 3, WORKER);
    c.args(synthetic("diamond", 3)).args(["--run-dir", run.to_str().unwrap()]);
    ok(c);
    assert!(!dir.path().join("runs").exists());
    check_run(&run, 5, 3);
    // The same directory is not reused.
    let mut c = mpirun(dir.path(), 3, WORKER);
    c.args(synthetic("diamond", 3)).args(["--run-dir", run.to_str().unwrap()]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tasks.jsonl"), "{}", show(&out));
}

fn example(name: &str) -> PathBuf {
    let p = Path::new(TAPS).parent().unwrap().join("examples").join(name);
    // mpirun waits for ever on a program that does not exist: say what to build instead.
    assert!(
        p.is_file(),
        "{} is not built: run the whole suite (cargo test builds examples) or cargo build --release --examples",
        p.display()
    );
    p
}

fn mpi_engine(abort: bool) -> (Output, Vec<TaskRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut c = mpirun(dir.path(), 3, example("mpi_engine").to_str().unwrap());
    c.arg(&out_dir).env("OMPI_MCA_orte_enable_recovery", "1");
    if abort {
        c.arg("abort");
    }
    let out = c.output().unwrap();
    let recs = taps::record::read_records(&out_dir.join("tasks.jsonl")).unwrap_or_default();
    (out, recs)
}

#[test]
fn a_panicking_task_is_recorded_and_its_rank_goes_on() {
    let (out, recs) = mpi_engine(false);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mpi_engine: ok"), "{}", show(&out));
    assert_eq!(recs.len(), 63);
    let p = recs.iter().find(|r| r.name == "panic").unwrap();
    let e = p.exception.as_ref().unwrap();
    assert_eq!((e.kind.as_str(), e.message.as_str()), ("TaskPanic", "boom on a rank"));
    assert!(e.traceback.contains("panicked at"), "{:?}", e);
    assert!(p.execution.is_some() && p.worker.as_deref().is_some_and(|w| w.starts_with("rank-")));
    assert!(recs.iter().filter(|r| r.name != "panic").all(|r| r.success == Some(true)));
}

#[test]
fn an_aborting_task_loses_its_rank_and_the_others_finish_the_work() {
    let (out, recs) = mpi_engine(true);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mpi_engine: ok"), "{}", show(&out));
    assert_eq!(recs.len(), 84, "every task has its record");
    let a = recs.iter().find(|r| r.name == "abort").unwrap();
    let e = a.exception.as_ref().unwrap();
    assert_eq!(e.kind, "WorkerLost");
    let rank = a.worker.as_deref().unwrap().strip_prefix("rank-").unwrap();
    assert!(e.message.starts_with(&format!("MPI rank {} (pid ", rank)), "{:?}", e);
    // Everything submitted after the abort ran on the surviving rank.
    let after: Vec<_> = recs.iter().filter(|r| r.submit_time > a.submit_time).collect();
    assert_eq!(after.len(), 20);
    assert!(after.iter().all(|r| r.success == Some(true) && r.worker.as_deref() != a.worker.as_deref()));
}

/// The MPI rank of a process (from its environment), if it is one.
fn rank_of(pid: u32) -> Option<u32> {
    let env = std::fs::read(format!("/proc/{}/environ", pid)).ok()?;
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"OMPI_COMM_WORLD_RANK="))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Starts the job `c` (a reduce with sleeping tasks, run in `dir`), sends rank 1 `signal` once
/// the reduce task is submitted and rank 1 is busy, and waits for the job: (job pid, victim pid,
/// run directory, output).
fn signal_rank_1_mid_run(mut c: Command, dir: &Path, signal: i32) -> (u32, u32, PathBuf, Output) {
    let child = c.spawn().unwrap();
    let pid = child.id();
    let victim = wait_for(|| descendants(pid).into_iter().find(|&p| rank_of(p) == Some(1)));
    let run = wait_for(|| {
        common::run_dirs(dir).pop().filter(|run| {
            std::fs::read_to_string(run.join("log.txt")).is_ok_and(|l| l.contains("Submitted reduce task"))
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain syscall on a process of this test's own job.
    assert_eq!(unsafe { libc::kill(victim as i32, signal) }, 0);
    (pid, victim, run, wait_guarded(child))
}

/// Waits for `child`; should it run for more than 120 s (a hang guard, not a speed check), it
/// and its descendants are killed and the test fails.
fn wait_guarded(mut child: Child) -> Output {
    common::output_or_kill(&mut child, 120, "the job")
}

/// Records written so far in the only run directory under `dir`.
fn records_so_far(dir: &Path) -> Option<(PathBuf, usize)> {
    let run = common::run_dirs(dir).pop()?;
    let n = std::fs::read_to_string(run.join("tasks.jsonl")).ok()?.lines().count();
    Some((run, n))
}

#[test]
fn a_rank_killed_mid_run_ends_the_run_with_an_error_naming_it_and_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("reduce", 12)).args(["--app.task-sleep", "0.4"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (taps_pid, victim, run, out) = signal_rank_1_mid_run(c, dir.path(), libc::SIGKILL);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(descendants(taps_pid).is_empty(), "no process of the job is left");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let named = format!("MPI rank 1 (pid {} on {}) died", victim, taps::engine::hostname());
    assert!(stdout.contains(&format!("The run lost 1 worker rank(s): {}", named)), "{}", show(&out));
    assert!(stdout.contains("the MPI job failed: rank 0 exited with code 1"), "{}", show(&out));
    assert_eq!(files(&run), ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
    let recs = common::records(&run);
    assert_eq!(recs.len(), 13, "every task has its record");
    common::check_record_invariants(&recs);
    let first: Vec<_> = recs.iter().filter(|r| r.parent_task_ids.is_empty()).collect();
    let lost: Vec<_> = first.iter().filter(|r| r.success == Some(false)).collect();
    assert_eq!(lost.len(), 1, "exactly the task running on rank 1 fails: {:?}", lost);
    let e = lost[0].exception.as_ref().unwrap();
    assert_eq!((e.kind.as_str(), e.message.clone()), ("WorkerLost", format!("{} while running this task", named)));
    assert_eq!(lost[0].worker.as_deref(), Some("rank-1"));
    // Its queued task and the rest ran on rank 2.
    assert!(first.iter().filter(|r| r.success == Some(true)).all(|r| r.worker.as_deref() == Some("rank-2")));
    let reduce = recs.iter().find(|r| !r.parent_task_ids.is_empty()).unwrap();
    assert_eq!(reduce.exception.as_ref().unwrap().kind, "ParentFailed");
}

#[test]
fn without_recovery_a_killed_rank_fails_every_unfinished_task_at_once() {
    // mpirun without --enable-recovery kills every rank about a second after one dies.
    let dir = tempfile::tempdir().unwrap();
    let mut c = mpirun(dir.path(), 3, WORKER);
    c.args(synthetic("reduce", 12))
        .args(["--app.task-sleep", "0.4"])
        .env_remove("OMPI_MCA_orte_enable_recovery")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mpirun_pid, victim, run, out) = signal_rank_1_mid_run(c, dir.path(), libc::SIGKILL);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(descendants(mpirun_pid).is_empty(), "no process of the job is left");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("mpirun runs without --enable-recovery"), "{}", log);
    let named = format!("MPI rank 1 (pid {} on {}) died", victim, taps::engine::hostname());
    assert!(log.contains(&format!("{}; mpirun (without --enable-recovery) stops the whole job", named)), "{}", log);
    let recs = common::records(&run);
    assert_eq!(recs.len(), 13, "every task has its record");
    common::check_record_invariants(&recs);
    let failed: Vec<_> = recs.iter().filter(|r| r.success == Some(false)).collect();
    assert!(failed.len() >= 2, "{:?}", failed);
    for r in failed {
        let e = r.exception.as_ref().unwrap();
        if e.kind == "ParentFailed" {
            // The reduce never ran: its parents were lost.
            assert!(e.message.contains(&format!("failed: WorkerLost: {}", named)), "{:?}", e);
            continue;
        }
        assert_eq!(e.kind, "WorkerLost");
        assert!(e.message.starts_with(&named), "{:?}", e);
    }
}

#[test]
fn a_missing_launcher_is_one_line_with_the_install_hint() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["run", "--app", "synthetic", "--app.structure", "reduce", "--app.task-count", "2"];
    let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    let out = Command::new(TAPS)
        .current_dir(dir.path())
        .args(with(&["--engine.executor", "mpi"]))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{}", stderr);
    assert!(
        stderr.starts_with("taps: error: mpirun not found on PATH: install OpenMPI (scripts/install-deps.sh, or apt-get install openmpi-bin libopenmpi-dev; on a cluster: module load openmpi)"),
        "{}",
        stderr
    );
    assert!(common::run_dirs(dir.path()).is_empty());

    let d = dir.path();
    let mpi = |extra: &[&'static str]| with(&[&["--engine.executor", "mpi"], extra].concat());
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.launcher", "mpirn"]),
        &["unknown launcher \"mpirn\"", "did you mean \"mpirun\"", "mpiexec, mpirun, srun"],
    );
    common::assert_bad_input(d, &mpi(&["--engine.executor.ranks", "1"]), &["engine.executor.ranks must be at least 2"]);
    common::assert_bad_input(d, &mpi(&["--engine.executor.launcher-args", "'open"]), &["launcher_args", "unclosed"]);
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.launcher-profile", "/nonexistent.toml"]),
        &["cannot read launch profiles /nonexistent.toml"],
    );
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.worker-path", "/nonexistent/taps-worker"]),
        &["engine.executor.worker_path /nonexistent/taps-worker"],
    );
    // What mpirun itself rejects is found by a probe, before the run directory exists.
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.launcher-args=--bind-to nowhere"]),
        &["engine.executor.launcher_args \"--bind-to nowhere\"", "mpirun rejects the launch command", "nowhere"],
    );
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.launcher-args=--no-such-option"]),
        &["mpirun rejects the launch command", "unknown option \"--no-such-option\""],
    );
    common::assert_bad_input(
        d,
        &mpi(&["--engine.executor.heartbeat-timeout", "0"]),
        &["engine.executor.heartbeat_timeout must be a positive number of seconds"],
    );
}

#[test]
fn a_user_launch_profile_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("launchers.toml");
    std::fs::write(
        &profiles,
        "[mine]\nprogram = \"mpirun\"\nargs = [\"--allow-run-as-root\", \"--oversubscribe\", \"-np\", \"{ranks}\", \
         \"{launcher_args}\", \"{worker}\", \"{worker_args}\"]\nenv = { OMPI_MCA_orte_enable_recovery = \"1\", \
         OMPI_MCA_mpi_yield_when_idle = \"1\" }\n",
    )
    .unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("bag", 6))
        .args(["--engine.executor.launcher", "mine", "--engine.executor.launcher-profile"])
        .arg(&profiles)
        .args(["--engine.executor.launcher-args", "--bind-to none"]);
    let out = ok(c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mpirun --allow-run-as-root --oversubscribe -np 3 --bind-to none"), "{}", stdout);
    check_run(&the_run_dir(dir.path()), 6, 3);
}

#[test]
fn taps_worker_alone_is_a_world_of_one_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(WORKER)
        .current_dir(dir.path())
        .args(synthetic("bag", 2))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mpi executor needs at least 2 ranks; got a world of 1") && stderr.contains("--mpi=pmix"),
        "{}",
        stderr
    );
    assert!(!dir.path().join("runs").exists());
    // Bad input on rank 0 of a real job: one error, every rank exits, no run directory.
    let mut c = mpirun(dir.path(), 3, WORKER);
    c.args(synthetic("bag", 2)).args(["--app.task-cont", "3"]);
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean --app.task-count"), "{}", show(&out));
    assert!(!dir.path().join("runs").exists());
    // Another executor cannot be chosen under MPI.
    let mut c = mpirun(dir.path(), 2, WORKER);
    c.args(synthetic("bag", 2)).args(["--engine.executor", "thread-pool"]);
    let out = c.output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taps-worker under MPI runs the mpi executor"),
        "{}",
        show(&out)
    );
}

#[test]
fn taps_list_shows_mpi() {
    let out = Command::new(TAPS).arg("list").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.lines().any(|l| l.trim_start().starts_with("mpi ") && l.contains("rank 0 drives")), "{}", s);
}

/// Who gets the signal in [`interrupt`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    /// `taps run`, or rank 0 under the user's own mpirun.
    Driver,
    /// mpirun.
    Mpirun,
    /// The process group of the command (a Ctrl-C at a terminal; mpirun puts the ranks in groups of their own).
    Group,
}

/// Starts a run of 400 short tasks (a reduce) through `entry`, sends `signal` to `target` once
/// some tasks are done, and checks that the run stops: every submitted task has one record,
/// those not finished failed as interrupted, rank 0 exits 130, no process is left.
fn interrupt(entry: &str, target: Target, signal: i32) {
    let dir = tempfile::tempdir().unwrap();
    let n = 400;
    let mut c = if entry == "taps run" { taps_run(dir.path(), 3) } else { mpirun(dir.path(), 3, WORKER) };
    c.args(synthetic("reduce", n))
        .args(["--app.task-sleep", "0.02"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (run, _) = wait_for(|| records_so_far(dir.path()).filter(|(_, n)| *n >= 10));
    let victim = match (target, entry) {
        (Target::Group, _) => -(pid as i32),
        (Target::Driver, "taps run") | (Target::Mpirun, "mpirun") => pid as i32,
        (Target::Driver, _) => wait_for(|| descendants(pid).into_iter().find(|&p| rank_of(p) == Some(0))) as i32,
        (Target::Mpirun, _) => wait_for(|| {
            common::children_of(pid)
                .into_iter()
                .find(|p| std::fs::read_to_string(format!("/proc/{}/comm", p)).is_ok_and(|c| c.trim() == "mpirun"))
        }) as i32,
    };
    let t = Instant::now();
    // SAFETY: plain syscall on processes this test started.
    assert_eq!(unsafe { libc::kill(victim, signal) }, 0);
    let out = wait_guarded(child);
    eprintln!(
        "{} / signal {} to {:?}: {:?} {:.2} s after the signal",
        entry,
        signal,
        target,
        out.status,
        t.elapsed().as_secs_f64()
    );
    let what = format!("{} / signal {} to {:?}: {}", entry, signal, target, show(&out));
    if entry == "taps run" || target == Target::Driver {
        assert_eq!(out.status.code(), Some(130), "{}", what);
    } else {
        // The user's own mpirun, signalled, exits with a code of its own choosing.
        assert!(!out.status.success(), "{}", what);
    }
    assert!(descendants(pid).is_empty(), "no process of the job is left: {}", what);
    if entry == "taps run" {
        assert_eq!(files(&run), ["config.toml", "environment.json", "log.txt", "tasks.jsonl"], "{}", what);
    }
    let recs = common::records(&run);
    assert_eq!(recs.len(), n + 1, "one record per submitted task: {}", what);
    common::check_record_invariants(&recs);
    let done = recs.iter().filter(|r| r.success == Some(true)).count();
    for r in recs.iter().filter(|r| r.success == Some(false)) {
        assert_eq!(r.exception.as_ref().unwrap().kind, "Interrupted", "{:?}: {}", r, what);
    }
    assert!(done >= 10 && done < n, "{} done: {}", done, what);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("Interrupted by signal") && log.contains("Run interrupted"), "{}", log);
    assert!(!log.contains("Finished benchmark") && !log.contains("died"), "{}", log);
}

#[test]
fn a_signal_to_taps_run_mpirun_or_the_process_group_interrupts_a_launched_run() {
    interrupt("taps run", Target::Driver, libc::SIGINT);
    interrupt("taps run", Target::Mpirun, libc::SIGTERM);
    interrupt("taps run", Target::Group, libc::SIGHUP);
}

#[test]
fn a_signal_to_rank_0_mpirun_or_the_process_group_interrupts_a_run_under_mpirun() {
    interrupt("mpirun", Target::Driver, libc::SIGHUP);
    interrupt("mpirun", Target::Mpirun, libc::SIGINT);
    interrupt("mpirun", Target::Group, libc::SIGTERM);
}

#[test]
fn a_stopped_rank_is_reported_and_lost_after_the_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("reduce", 12))
        .args(["--app.task-sleep", "0.4", "--engine.executor.heartbeat-timeout", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (taps_pid, victim, run, out) = signal_rank_1_mid_run(c, dir.path(), libc::SIGSTOP);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(descendants(taps_pid).is_empty(), "the stopped rank is gone with the job");
    let named = format!("MPI rank 1 (pid {} on {}) sent no heartbeat for", victim, taps::engine::hostname());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("The run lost 1 worker rank(s): {}", named)), "{}", show(&out));
    let recs = common::records(&run);
    assert_eq!(recs.len(), 13, "every task has its record");
    common::check_record_invariants(&recs);
    let lost: Vec<_> = recs.iter().filter(|r| r.parent_task_ids.is_empty() && r.success == Some(false)).collect();
    assert_eq!(lost.len(), 1, "exactly the task held by rank 1 fails: {:?}", lost);
    let e = lost[0].exception.as_ref().unwrap();
    assert!(e.kind == "WorkerLost" && e.message.starts_with(&named), "{:?}", e);
    assert!(
        recs.iter()
            .filter(|r| r.parent_task_ids.is_empty() && r.success == Some(true))
            .all(|r| r.worker.as_deref() == Some("rank-2"))
    );
}

#[test]
fn a_task_longer_than_the_heartbeat_timeout_on_a_live_rank_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("bag", 2)).args(["--app.task-sleep", "2.5", "--engine.executor.heartbeat-timeout", "0.5"]);
    ok(c);
    check_run(&the_run_dir(dir.path()), 2, 3);
}

#[test]
fn a_rank_whose_driver_really_died_still_exits() {
    // With recovery, mpirun waits for every rank: the workers must end by themselves.
    let (dir, shm) = (tempfile::tempdir().unwrap(), shm_dir());
    let mut c = mpirun(dir.path(), 3, WORKER);
    c.args(synthetic("reduce", 12))
        .args(["--app.task-sleep", "0.4", "--app.task-data-bytes", "1000000"])
        .env("OMPI_MCA_orte_enable_recovery", "1")
        .env("TAPS_SHM_DIR", shm.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let rank0 = wait_for(|| descendants(pid).into_iter().find(|&p| rank_of(p) == Some(0)));
    wait_for(|| records_so_far(dir.path()).filter(|(_, n)| *n >= 2));
    // SAFETY: plain syscall on a process of this test's own job.
    assert_eq!(unsafe { libc::kill(rank0 as i32, libc::SIGKILL) }, 0);
    let out = wait_guarded(child);
    assert!(descendants(pid).is_empty(), "no rank is left: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rank 0 (the driver) is gone; exiting"), "{}", show(&out));
    // The ranks removed the run's shared-memory segments (rank 0 could not).
    assert!(files(shm.path()).is_empty(), "segments left after rank 0 died: {:?}", files(shm.path()));
}

#[test]
fn fifty_short_jobs_under_two_cpu_burners_all_exit_0() {
    // Every rank must take its Shutdown before rank 0 closes the liveness connections, even
    // when the ranks hardly get a core (results of 1 MB cross by rendezvous, the slow path).
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut failures = Vec::new();
    for i in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let mut c = mpirun(dir.path(), 3, WORKER);
        c.args(synthetic("bag", 2)).args(["--app.task-data-bytes", "1000000"]);
        let out = c.output().unwrap();
        if !out.status.success() || common::run_dirs(dir.path()).len() != 1 {
            failures.push(format!("job {}: {}", i, show(&out)));
        } else {
            assert_eq!(common::records(&the_run_dir(dir.path())).len(), 2);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    eprintln!("50 jobs of 3 ranks under 2 CPU burners: {:.1} s", start.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} of 50 finished jobs did not exit 0:\n{}", failures.len(), failures.join("\n"));
}

/// A tmpfs of 1 MB mounted for a test (as root), unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: PathBuf) -> Option<SmallFs> {
        std::fs::create_dir(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs(at))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_ends_a_launched_run_with_a_clear_error_and_no_stray_file() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = SmallFs::mount(dir.path().join("small")) else {
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    };
    let mut c = taps_run(&fs.0, 3);
    c.args(synthetic("bag", 5000)).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = wait_guarded(c.spawn().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("No space left on device"), "{}", show(&out));
    assert!(stdout.contains("the MPI job failed: rank 0 exited with code 1"), "{}", show(&out));
    assert!(!stdout.contains("exit code 0"), "{}", show(&out));
    let run = the_run_dir(&fs.0);
    assert!(files(&run).iter().all(|f| !f.starts_with(".taps-mpi-status")), "{:?}", files(&run));
}

#[test]
fn ctrl_c_ends_a_launched_run_whose_rank_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("reduce", 200))
        .args(["--app.task-sleep", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (run, _) = wait_for(|| records_so_far(dir.path()).filter(|(_, n)| *n >= 10));
    let ranks: Vec<u32> = wait_for(|| {
        let r: Vec<u32> = descendants(pid).into_iter().filter(|&p| rank_of(p).is_some()).collect();
        (r.len() == 3).then_some(r)
    });
    let stopped = *ranks.iter().find(|&&p| rank_of(p) == Some(1)).unwrap();
    // SAFETY: plain syscalls on processes this test started.
    unsafe {
        assert_eq!(libc::kill(stopped as i32, libc::SIGSTOP), 0);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(libc::kill(-(pid as i32), libc::SIGINT), 0);
    }
    let out = wait_guarded(child);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let recs = common::records(&run);
    assert_eq!(recs.len(), 201, "one record per submitted task: {}", show(&out));
    common::check_record_invariants(&recs);
    // Every rank ends, the stopped one too (mpirun may leave them to end on their own).
    let alive = |p: u32| std::fs::read_to_string(format!("/proc/{}/stat", p)).is_ok_and(|s| !s.contains(") Z "));
    wait_for(|| ranks.iter().all(|&p| !alive(p)).then_some(()));
}

/// A fresh directory on tmpfs for a run's shared-memory segments (`TAPS_SHM_DIR`), so a test
/// sees exactly what its run left there.
fn shm_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap()
}

#[test]
fn large_payloads_go_through_shared_memory_and_leave_nothing_behind() {
    let (dir, shm) = (tempfile::tempdir().unwrap(), shm_dir());
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("bag", 8))
        .args(["--app.task-data-bytes", "3000000", "--logging.level", "DEBUG"])
        .env("TAPS_SHM_DIR", shm.path());
    ok(c);
    // The app verified the checksum of every payload, each way.
    let run = the_run_dir(dir.path());
    check_run(&run, expected("bag", 8), 3);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    for r in [1, 2] {
        assert!(log.contains(&format!("rank {} takes large payloads through shared memory", r)), "{}", log);
    }
    // The frames that carry a segment's name went as MPI messages announced in the ranks' lanes
    // (one per result), the rest (each rank's Ready) through the rings.
    assert_eq!(lane_counts(&log), (2, expected("bag", 8) as u64, 2));
    assert!(files(shm.path()).is_empty(), "segments left: {:?}", files(shm.path()));
}

/// A 3-rank reduce of `n` tasks sleeping `sleep` s and moving 1 MB each way, its shared-memory
/// files in `shm`, output captured.
fn payload_run(dir: &Path, shm: &Path, n: usize, sleep: &str) -> Command {
    let mut c = taps_run(dir, 3);
    c.args(synthetic("reduce", n))
        .args(["--app.task-sleep", sleep, "--app.task-data-bytes", "1000000"])
        .env("TAPS_SHM_DIR", shm)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn shared_memory_is_removed_after_a_killed_rank_and_after_an_interrupt() {
    // A rank killed while it holds a task and payloads.
    let (dir, shm) = (tempfile::tempdir().unwrap(), shm_dir());
    let c = payload_run(dir.path(), shm.path(), 12, "0.4");
    let (_, _, run, out) = signal_rank_1_mid_run(c, dir.path(), libc::SIGKILL);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let recs = common::records(&run);
    assert_eq!(recs.len(), 13, "every task has its record");
    common::check_record_invariants(&recs);
    assert!(files(shm.path()).is_empty(), "segments left after a killed rank: {:?}", files(shm.path()));

    // Ctrl-C in the middle of a run moving payloads.
    let (dir, shm) = (tempfile::tempdir().unwrap(), shm_dir());
    let n = 60;
    let mut c = payload_run(dir.path(), shm.path(), n, "0.05");
    c.process_group(0);
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (run, _) = wait_for(|| records_so_far(dir.path()).filter(|(_, n)| *n >= 10));
    // SAFETY: plain syscall on the process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let out = wait_guarded(child);
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(descendants(pid).is_empty(), "no process of the job is left");
    let recs = common::records(&run);
    assert_eq!(recs.len(), expected("reduce", n), "one record per submitted task");
    common::check_record_invariants(&recs);
    assert!(files(shm.path()).is_empty(), "segments left after an interrupt: {:?}", files(shm.path()));
}

/// Every rank of the job SIGKILLed at once (rank 0 too, so no rank can clean up): the launching
/// `taps run` removes what the job left of its shared-memory files.
#[test]
fn shared_memory_is_removed_when_every_rank_is_killed() {
    let (dir, shm) = (tempfile::tempdir().unwrap(), shm_dir());
    let child = payload_run(dir.path(), shm.path(), 12, "0.4").spawn().unwrap();
    let pid = child.id();
    wait_for(|| records_so_far(dir.path()).filter(|(_, n)| *n >= 1));
    let ranks: Vec<u32> = wait_for(|| {
        let r: Vec<u32> = descendants(pid).into_iter().filter(|&p| rank_of(p).is_some()).collect();
        (r.len() == 3).then_some(r)
    });
    assert!(!files(shm.path()).is_empty(), "the job made shared-memory files");
    for p in &ranks {
        // SAFETY: plain syscall on a rank of the job this test started.
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    let out = wait_guarded(child);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(files(shm.path()).is_empty(), "files left after every rank was killed: {:?}", files(shm.path()));
}

/// The entries of `dir` whose names match `f`.
fn entries_where(dir: &Path, f: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.flatten().filter(|e| f(&e.file_name().to_string_lossy())).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn taps_run_gives_mpirun_a_session_directory_of_its_own_and_removes_it() {
    // OpenMPI's shared /tmp/ompi.HOST.UID is racy between jobs that start and end together
    // (open-mpi/ompi#8510); a job taps starts keeps its session files in a directory of its own
    // in the temporary directory, unless the user chose the place.
    let (dir, tmp, chosen) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |user_base: bool| {
        let mut c = taps_run(dir.path(), 3);
        c.args(synthetic("bag", 4))
            .args(["--app.task-sleep", "0.5"])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if user_base {
            c.env("OMPI_MCA_orte_tmpdir_base", chosen.path());
        }
        c.spawn().unwrap()
    };
    let ours = |n: &str| n.starts_with("taps-") && n.ends_with("-ompi");
    let child = start(false);
    let session = wait_for(|| entries_where(tmp.path(), ours).pop());
    wait_for(|| entries_where(&session, |n| n.starts_with("ompi.")).pop());
    let out = wait_guarded(child);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(entries_where(tmp.path(), |_| true), Vec::<PathBuf>::new(), "the session directory is removed");

    let child = start(true);
    wait_for(|| entries_where(chosen.path(), |n| n.starts_with("ompi.")).pop());
    assert_eq!(entries_where(tmp.path(), ours), Vec::<PathBuf>::new(), "the user's choice is kept");
    let out = wait_guarded(child);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(common::run_dirs(dir.path()).len(), 2);
}
