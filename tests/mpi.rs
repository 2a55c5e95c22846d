//! The mpi executor with real OpenMPI, 3 ranks (oversubscribed on 2 cores): both entry points
//! (`mpirun taps-worker` inside a job, `taps run --engine.executor mpi` starting the job), data
//! through messages and through the file transformer, panics, a rank that dies mid-run, and the
//! errors a user can make.
#![cfg(feature = "mpi")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use taps::record::TaskRecord;

mod common;

use common::{descendants, wait_for};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");
const WORKER: &str = env!("CARGO_BIN_EXE_taps-worker");

/// `mpirun --oversubscribe -np N PROGRAM`, as root if need be, with yield-when-idle.
fn mpirun(n: usize, program: &str) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &n.to_string(), program])
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

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(mut c: Command) -> Output {
    let out = c.output().expect("command runs");
    assert!(out.status.success(), "{:?} failed: {}", c, show(&out));
    out
}

fn the_run_dir(dir: &Path) -> PathBuf {
    let runs = common::run_dirs(dir);
    assert_eq!(runs.len(), 1, "{:?}", runs);
    runs[0].clone()
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
        let mut c = mpirun(3, WORKER);
        c.current_dir(dir.path()).args(synthetic(structure, 8));
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
            let mut c = if entry == "mpirun" {
                let mut c = mpirun(3, WORKER);
                c.current_dir(dir.path());
                c
            } else {
                taps_run(dir.path(), 3)
            };
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
        let mut c = mpirun(2, WORKER);
        c.current_dir(dir.path()).args(synthetic("sequential", 1)).args([
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
    let mut c = mpirun(3, WORKER);
    c.current_dir(dir.path()).args(synthetic("diamond", 3)).args(["--run-dir", run.to_str().unwrap()]);
    ok(c);
    assert!(!dir.path().join("runs").exists());
    check_run(&run, 5, 3);
    // The same directory is not reused.
    let mut c = mpirun(3, WORKER);
    c.current_dir(dir.path()).args(synthetic("diamond", 3)).args(["--run-dir", run.to_str().unwrap()]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tasks.jsonl"), "{}", show(&out));
}

fn example(name: &str) -> PathBuf {
    Path::new(TAPS).parent().unwrap().join("examples").join(name)
}

fn mpi_engine(abort: bool) -> (Output, Vec<TaskRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut c = mpirun(3, example("mpi_engine").to_str().unwrap());
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

/// Starts the job `c` (a reduce with sleeping tasks, run in `dir`), SIGKILLs rank 1 once the
/// reduce task is submitted and rank 1 is busy, and waits for the job: (job pid, victim pid, run
/// directory, output).
fn kill_rank_1_mid_run(mut c: Command, dir: &Path) -> (u32, u32, PathBuf, Output) {
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
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    (pid, victim, run, child.wait_with_output().unwrap())
}

#[test]
fn a_rank_killed_mid_run_ends_the_run_with_an_error_naming_it_and_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = taps_run(dir.path(), 3);
    c.args(synthetic("reduce", 12)).args(["--app.task-sleep", "0.4"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (taps_pid, victim, run, out) = kill_rank_1_mid_run(c, dir.path());
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
    let mut c = mpirun(3, WORKER);
    c.current_dir(dir.path())
        .args(synthetic("reduce", 12))
        .args(["--app.task-sleep", "0.4"])
        .env_remove("OMPI_MCA_orte_enable_recovery")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mpirun_pid, victim, run, out) = kill_rank_1_mid_run(c, dir.path());
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
    let mut c = mpirun(3, WORKER);
    c.current_dir(dir.path()).args(synthetic("bag", 2)).args(["--app.task-cont", "3"]);
    let out = c.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean --app.task-count"), "{}", show(&out));
    assert!(!dir.path().join("runs").exists());
    // Another executor cannot be chosen under MPI.
    let mut c = mpirun(2, WORKER);
    c.current_dir(dir.path()).args(synthetic("bag", 2)).args(["--engine.executor", "thread-pool"]);
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
