//! `taps` and its workers are one program: the process-pool starts `taps worker`, the very binary
//! that drives, and a worker path that is not a taps worker of this protocol is refused up front.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn taps_answers_as_taps_worker() {
    // `taps worker ARGS`, and `taps-worker worker ARGS` as the launchers start either program.
    for (program, argv) in [
        (taps_bin(), ["worker", "--protocol-version"]),
        (env!("CARGO_BIN_EXE_taps-worker"), ["worker", "--protocol-version"]),
    ] {
        let out = Command::new(program).args(argv).output().unwrap();
        assert!(out.status.success(), "{:?}: {:?}", argv, out);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), taps::protocol::PROTOCOL_VERSION.to_string());
    }
    let out = Command::new(taps_bin()).args(["worker"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taps-worker: no connection given"), "{:?}", out);
}

#[test]
fn process_pool_workers_are_the_driving_binary_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(taps_bin())
        .current_dir(tmp.path())
        .args(["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "200"])
        .args(["--app.bag-max-running", "2", "--app.task-sleep", "0.05", "--engine.executor", "process-pool"])
        .args(["--engine.executor.max-processes", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let workers = wait_for(|| Some(children_of(child.id())).filter(|c| c.len() == 2));
    let taps = std::fs::canonicalize(taps_bin()).unwrap();
    for pid in workers {
        let exe = std::fs::read_link(format!("/proc/{}/exe", pid)).unwrap();
        assert_eq!(exe, taps, "worker {} runs {}", pid, exe.display());
        let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pid)).unwrap();
        assert!(cmdline.split('\0').nth(1) == Some("worker"), "{:?}", cmdline);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_worker_path_that_is_not_a_taps_worker_is_refused_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |path: &str| {
        let mut a = vec!["run", "--app", "synthetic", "--app.structure", "sequential", "--app.task-count", "2"];
        a.extend(["--engine.executor", "process-pool", "--engine.executor.worker-path", path]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    for path in ["/bin/true", "/bin/cat", "/no/such/taps-worker"] {
        let args = run(path);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_bad_input(tmp.path(), &args, &["engine.executor.worker_path", path]);
    }
    // The real taps-worker binary is accepted.
    let args = run(env!("CARGO_BIN_EXE_taps-worker"));
    run_ok(tmp.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
}
