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
    let taps = std::fs::canonicalize(taps_bin()).unwrap();
    // A child that posix_spawn has just created still shows the driver's command line until
    // its exec; wait until both workers run.
    let started = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{}/cmdline", pid)).is_ok_and(|c| c.split('\0').nth(1) != Some("run"))
    };
    let workers = wait_for(|| Some(children_of(child.id())).filter(|c| c.len() == 2 && c.iter().all(started)));
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

/// The input of `taps worker run-frame`: a Hello frame and a Run frame of `task` with postcard `args`.
fn task_frames(task: &str, args: Vec<Vec<u8>>) -> Vec<u8> {
    use taps::protocol::{Message, PROTOCOL_VERSION, ToWorker, WirePayload};
    let hello = ToWorker::Hello { version: PROTOCOL_VERSION, data: Default::default(), name: "batch".into() };
    let run = ToWorker::Run {
        id: Default::default(),
        seq: 9,
        task: task.into(),
        args: args.into_iter().map(|a| WirePayload::Bytes(a.into())).collect(),
    };
    let mut buf = Vec::new();
    hello.encode().write_to(&mut buf).unwrap();
    run.encode().write_to(&mut buf).unwrap();
    buf
}

/// Runs `taps worker run-frame` with `input` on stdin and the result to stdout.
fn run_frame(input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(taps_bin())
        .args(["worker", "run-frame", "--input", "-", "--output", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn done_frame(bytes: &[u8]) -> (u64, Result<taps::protocol::WirePayload, taps::task::TaskError>) {
    use taps::protocol::{Frame, FromWorker, Message};
    let mut r = bytes;
    let frame = Frame::read_from(&mut r).unwrap().expect("a result frame");
    assert!(r.is_empty(), "one frame only");
    match FromWorker::decode(frame).unwrap() {
        FromWorker::Done { seq, outcome, .. } => (seq, outcome),
        other => panic!("not a Done frame: {:?}", other),
    }
}

#[test]
fn run_frame_runs_one_task_from_a_file_or_stdin() {
    use taps::protocol::WirePayload;
    let tmp = tempfile::tempdir().unwrap();
    // From a file to a file.
    let (input, output) = (tmp.path().join("task.frame"), tmp.path().join("result.frame"));
    std::fs::write(&input, task_frames("sleep", vec![postcard::to_stdvec(&0.25f64).unwrap()])).unwrap();
    let out = Command::new(taps_bin())
        .args(["worker", "run-frame", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    let (seq, outcome) = done_frame(&std::fs::read(&output).unwrap());
    let Ok(WirePayload::Bytes(b)) = outcome else { panic!("{:?}", outcome) };
    assert_eq!((seq, postcard::from_bytes::<f64>(&b).unwrap()), (9, 0.25));

    // A failing task: its error travels in the result frame, and the exit code is 0.
    let out = run_frame(&task_frames("fail", vec![postcard::to_stdvec("no luck").unwrap()]));
    assert!(out.status.success(), "{:?}", out);
    let (_, outcome) = done_frame(&out.stdout);
    let e = outcome.unwrap_err();
    assert_eq!((e.kind.as_str(), e.message.as_str()), ("TaskError", "no luck"));
    // So does an unknown task.
    let (_, outcome) = done_frame(&run_frame(&task_frames("no-such-task", vec![])).stdout);
    assert_eq!(outcome.unwrap_err().kind, "UnknownTask");
}

#[test]
fn run_frame_refuses_a_malformed_frame_in_one_line() {
    let good = task_frames("sleep", vec![postcard::to_stdvec(&0.0f64).unwrap()]);
    for (what, input) in [
        ("garbage", vec![0xffu8; 32]),
        ("empty", Vec::new()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("hello only", good[..good.len() / 2].to_vec()),
    ] {
        let out = run_frame(&input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {:?}", what, out);
        assert!(out.stdout.is_empty(), "{}: nothing written", what);
        assert_eq!(stderr.lines().count(), 1, "{}: {}", what, stderr);
        assert!(stderr.starts_with("taps-worker: error: --input -: "), "{}: {}", what, stderr);
    }
    // A missing input file is named.
    let out = Command::new(taps_bin())
        .args(["worker", "run-frame", "--input", "/no/such/frame", "--output", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/frame"), "{:?}", out);
    // The mode is documented in the worker's help.
    let out = Command::new(taps_bin()).args(["worker", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("run-frame --input FILE|- --output FILE|-"), "{:?}", out);
}
