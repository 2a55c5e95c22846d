//! The app-author kit with real programs and real workers: programs run in a task's own
//! working directory, their failures (exit status, signal, missing program) as errors that name
//! the command and quote stderr, the preflight check of the programs an app needs, and the task
//! context (id and run directory) on the thread-pool and process-pool executors.

use std::path::Path;

mod common;

use taps::app::{TaskCommand, require_programs};
use taps::engine::Engine;
use taps::engine::builtin::{Context, Program};
use taps::executor::process_pool::ProcessPool;
use taps::executor::thread_pool::ThreadPool;
use taps::record::{RecordWriter, read_records};
use taps::task::{ErrorKind, Task, TaskError};

const WORKER: &str = env!("CARGO_BIN_EXE_taps-worker");

/// `sh -c SCRIPT` in the task's own working directory; returns what it wrote to stdout.
struct Shell;
impl Task for Shell {
    const NAME: &'static str = "test-kit-shell";
    type Args = (String,);
    type Output = String;
    fn run((script,): (String,)) -> Result<String, TaskError> {
        let out = TaskCommand::new("sh").arg("-c").arg(&script).run()?;
        Ok(std::fs::read_to_string(out.stdout)?)
    }
}

/// Runs `program` in the working directory `tasks/named`.
struct Named;
impl Task for Named {
    const NAME: &'static str = "test-kit-named";
    type Args = (String,);
    type Output = String;
    fn run((program,): (String,)) -> Result<String, TaskError> {
        let out = TaskCommand::new(program).dir_name("named").run()?;
        Ok(std::fs::read_to_string(out.stdout)?)
    }
}

fn engine(executor: Box<dyn taps::engine::Executor>, run_dir: &Path) -> Engine {
    Engine::builder(executor)
        .records(RecordWriter::create(&run_dir.join("tasks.jsonl")).unwrap())
        .run_dir(run_dir)
        .build()
}

#[test]
fn a_program_runs_in_the_tasks_own_directory_with_its_output_captured() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(Box::new(ThreadPool::new(2)), tmp.path());
    let f = e.submit::<Shell>(("echo out; echo err >&2; pwd".to_string().into(),));
    let stdout = f.result().unwrap();
    let dir = tmp.path().join("tasks").join(f.task_id().to_string());
    assert_eq!(stdout, format!("out\n{}\n", dir.display()), "it ran in RUN_DIR/tasks/TASK-ID");
    assert_eq!(std::fs::read_to_string(dir.join("sh.stderr")).unwrap(), "err\n");
    assert_eq!(std::fs::read_to_string(dir.join("sh.stdout")).unwrap(), stdout);
    // A name the app chooses instead of the task id.
    assert_eq!(e.submit::<Named>(("pwd".to_string().into(),)).result().unwrap().trim(), {
        tmp.path().join("tasks/named").display().to_string()
    });
    e.shutdown();
}

#[test]
fn a_failed_program_names_the_command_its_status_and_the_end_of_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(Box::new(ThreadPool::new(2)), tmp.path());
    let script = "for i in $(seq 1 25); do echo \"problem $i\" >&2; done; exit 3";
    let f = e.submit::<Shell>((script.to_string().into(),));
    let err = f.result().unwrap_err();
    assert_eq!(err.kind, ErrorKind::ProgramFailed);
    let dir = tmp.path().join("tasks").join(f.task_id().to_string());
    let head = format!("`sh -c '{}'` exited with status 3 (in {}); last lines of its stderr", script, dir.display());
    assert!(err.message.starts_with(&head), "{}", err.message);
    let quoted: Vec<String> = (6..=25).map(|i| format!("problem {}", i)).collect();
    assert!(err.message.ends_with(&format!(":\n{}", quoted.join("\n"))), "the last 20 lines: {}", err.message);
    assert!(!err.message.contains("problem 5\n"), "only the last 20 lines: {}", err.message);
    // Killed by a signal.
    let killed = e.submit::<Shell>(("echo dying >&2; kill -9 $$".to_string().into(),));
    let err = killed.result().unwrap_err();
    assert_eq!(err.kind, ErrorKind::ProgramFailed);
    assert!(
        err.message.starts_with("`sh -c 'echo dying >&2; kill -9 $$'` was killed by signal 9 (SIGKILL)"),
        "{}",
        err
    );
    assert!(err.message.ends_with(":\ndying"), "{}", err.message);
    // A program that is not installed.
    let missing = e.submit::<Named>(("taps-no-such-program".to_string().into(),));
    let err = missing.result().unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("ProgramFailed", "`taps-no-such-program` cannot start: taps-no-such-program not found on PATH")
    );
    e.shutdown();
    // Each failure is one record whose exception names the command.
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 3);
    let rec = recs.iter().find(|r| r.task_id == killed.task_id().to_string()).unwrap();
    let exc = rec.exception.as_ref().unwrap();
    assert_eq!(exc.kind, "ProgramFailed");
    assert!(exc.message.contains("kill -9 $$'` was killed by signal 9"), "{:?}", exc);
}

#[test]
fn a_program_outside_a_task_is_an_error_not_a_stray_directory() {
    let err = TaskCommand::new("true").run().unwrap_err();
    assert_eq!(err.message, "cannot run `true`: TaskCommand::run is called outside a task body");
    let tmp = tempfile::tempdir().unwrap();
    let out = TaskCommand::new("sh").args(["-c", "echo $X"]).env("X", "y z").run_in(&tmp.path().join("d")).unwrap();
    assert_eq!(std::fs::read_to_string(out.stdout).unwrap(), "y z\n");
}

#[test]
fn preflight_names_the_first_missing_program_and_its_install_hint() {
    assert_eq!(require_programs(&[("sh", "apt install dash"), ("wc", "apt install coreutils")]), Ok(()));
    assert_eq!(
        require_programs(&[("sh", ""), ("taps-no-such-vina", "apt install autodock-vina"), ("taps-no-obabel", "x")]),
        Err("taps-no-such-vina not found on PATH: apt install autodock-vina".to_string())
    );
}

/// The context task's (task id, run dir) match the future's id and the engine's run dir.
fn check_context(e: Engine, run_dir: &Path) {
    let futures: Vec<_> = (0..8).map(|_| e.submit::<Context>(())).collect();
    for f in &futures {
        let (id, dir) = f.result().unwrap();
        assert_eq!((id, dir), (f.task_id().to_string(), run_dir.display().to_string()));
    }
    e.shutdown();
    assert_eq!(taps::task::context(), None, "no context outside a task");
}

#[test]
fn a_task_knows_its_id_and_run_directory_on_the_thread_pool() {
    let tmp = tempfile::tempdir().unwrap();
    check_context(engine(Box::new(ThreadPool::new(2)), tmp.path()), tmp.path());
}

#[test]
fn a_task_knows_its_id_and_run_directory_in_worker_processes() {
    let tmp = tempfile::tempdir().unwrap();
    check_context(engine(Box::new(ProcessPool::new(2).worker_path(WORKER)), tmp.path()), tmp.path());
    // The context is not data the task moves: the records count the result's bytes only.
    let recs = read_records(&tmp.path().join("tasks.jsonl")).unwrap();
    let dir = tmp.path().display().to_string();
    for r in &recs {
        let result = taps::task::encode(&(r.task_id.clone(), dir.clone())).unwrap().len() as u64;
        assert_eq!((r.bytes_inline, r.bytes_by_reference), (result, 0), "{:?}", r);
    }
}

#[test]
fn an_engine_without_a_run_directory_says_so() {
    let e = Engine::builder(Box::new(ThreadPool::new(1))).build();
    let f = e.submit::<Named>(("pwd".to_string().into(),));
    let err = f.result().unwrap_err();
    assert!(err.message.contains("this task has no run directory"), "{}", err);
    assert_eq!(e.submit::<Context>(()).result().unwrap().1, "");
}

#[test]
fn a_program_dies_with_the_worker_that_started_it_and_its_task_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(Box::new(ProcessPool::new(1).worker_path(WORKER)), tmp.path());
    let argv = ["sh", "-c", "echo $$; exec sleep 300"].map(String::from).to_vec();
    let f = e.submit::<Program>((argv.into(),));
    let out = tmp.path().join("tasks").join(f.task_id().to_string()).join("sh.stdout");
    let program: u32 = common::wait_for(|| std::fs::read_to_string(&out).ok()?.trim().parse().ok());
    let alive = |pid: u32| common::processes().iter().any(|&(p, _, st)| p == pid && st != 'Z');
    let worker = common::wait_for(|| {
        let (_, ppid, _) = common::processes().into_iter().find(|&(p, _, _)| p == program)?;
        // The program has exec'd sleep once its command line says so.
        let cmd = std::fs::read_to_string(format!("/proc/{}/cmdline", program)).ok()?;
        cmd.starts_with("sleep").then_some(ppid)
    });
    assert_ne!(worker, std::process::id(), "the program runs under a worker process");
    assert!(alive(program));
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    common::wait_for(|| (!alive(program)).then_some(()));
    let err = f.result().unwrap_err();
    assert_eq!(err.kind, ErrorKind::WorkerLost, "{}", err);
    e.shutdown();
    assert_eq!(read_records(&tmp.path().join("tasks.jsonl")).unwrap().len(), 1);
}
