//! The Python engines (dask, ray, parsl-local, parsl-htex, hyperqueue) through the real `taps` binary and the engines'
//! virtual environment (scripts/install-engines.sh; scripts/test.sh installs it first).
//!
//! Every run that starts an engine runs inside a private network namespace this test creates
//! (`unshare -n`, loopback up), where `ss -ltn` is sampled while it runs: nothing may listen
//! outside 127.0.0.0/8. Afterwards the namespace is gone (no process is left in it) and no
//! process of the engines' Python is left anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The engines' virtual environment, as taps finds it.
fn venv() -> PathBuf {
    std::env::var_os("TAPS_ENGINES_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-engines"))
}

fn require_venv() {
    assert!(
        venv().join("bin/python").exists(),
        "these tests need the engines' Python environment: run scripts/install-engines.sh (scripts/test.sh does)"
    );
}

/// Runs each command line (shell words, run in its own directory `d1`, `d2`, … of `dir`) in turn
/// inside one new network namespace; `ss -ltn` is sampled into `dir/ss` while each runs.
/// `TMPDIR` is `dir/tmp`, which the runs must leave empty.
const NETNS: &str = r#"
ip link set lo up || exit 97
readlink /proc/self/ns/net > netns
mkdir -p tmp; export TMPDIR=$PWD/tmp
ip -o link show | cut -d: -f2 > links
i=0
while IFS= read -r line; do
  i=$((i+1)); mkdir -p d$i
  (cd d$i && eval "exec $line") > out.$i 2> err.$i &
  P=$!; echo $P > pid.$i.tmp; mv pid.$i.tmp pid.$i
  while kill -0 $P 2>/dev/null; do ss -ltnH >> ss; sleep 0.02; done
  wait $P; echo $? > rc.$i
done < cmds
"#;

/// Starts the namespace running `cmds` in `dir`.
fn start_netns(dir: &Path, cmds: &[String]) -> std::process::Child {
    require_venv();
    std::fs::write(dir.join("cmds"), cmds.join("\n") + "\n").unwrap();
    Command::new("unshare")
        .args(["-n", "sh", "-c", NETNS])
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare runs")
}

/// Runs `cmds` in a new namespace and checks it (see [`check_netns`]); returns the exit code,
/// stdout and stderr of each.
fn in_netns(dir: &Path, cmds: &[String]) -> Vec<(i32, String, String)> {
    let mut child = start_netns(dir, cmds);
    let status = wait_or_kill(&mut child, 600, "the engine runs");
    assert!(status.success(), "the namespace script failed: {:?}", status);
    check_netns(dir);
    (1..=cmds.len())
        .map(|i| {
            let read = |f: String| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            (
                read(format!("rc.{}", i)).trim().parse().unwrap_or(-1),
                read(format!("out.{}", i)),
                read(format!("err.{}", i)),
            )
        })
        .collect()
}

/// Nothing listened outside loopback, the namespace is gone, no engine process is left, and
/// nothing is left in `TMPDIR` (Ray's sessions, Dask's scratch space, Python's and HyperQueue's
/// sockets go to a directory of the run's own there, removed when it ends).
///
/// HyperQueue is the exception: its server binds every interface, hard-coded
/// (`Ipv4Addr::UNSPECIFIED` in hyperqueue's `server/bootstrap.rs`, no option in its Python API).
/// For its runs `0.0.0.0` is accepted too, and the namespace is checked to have no interface but
/// loopback, so those ports were reachable from this node only.
fn check_netns(dir: &Path) {
    let ss = std::fs::read_to_string(dir.join("ss")).unwrap_or_default();
    let listening: Vec<&str> = ss.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert!(!listening.is_empty(), "the engine never listened on a port (ss saw nothing)");
    let cmds = std::fs::read_to_string(dir.join("cmds")).unwrap_or_default();
    let wildcard = cmds.contains("hyperqueue");
    if wildcard {
        let links = std::fs::read_to_string(dir.join("links")).unwrap_or_default();
        assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"], "the namespace had other interfaces");
    }
    for a in &listening {
        assert!(
            a.starts_with("127.")
                || a.starts_with("[::ffff:127.")
                || a.starts_with("[::1]:")
                || (wildcard && a.starts_with("0.0.0.0:")),
            "something listened outside loopback: {} (all: {:?})",
            a,
            listening
        );
    }
    let ns = std::fs::read_to_string(dir.join("netns")).unwrap();
    let ns = ns.trim();
    wait_for(|| {
        let inside: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path().join("ns/net")).is_ok_and(|l| l.to_string_lossy() == ns))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        inside.is_empty().then_some(())
    });
    let left: Vec<_> = std::fs::read_dir(dir.join("tmp")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the runs left {:?} in their TMPDIR", left);
    let venv = venv().display().to_string();
    wait_for(|| {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&venv) && c.contains("taps_bridge"))
            .collect();
        left.is_empty().then_some(())
    });
}

/// A `taps run` command line for the namespace script.
fn taps_cmd(args: &str) -> String {
    format!("{} run {}", taps_bin(), args)
}

/// The bytes the driver received from the bridge, from the run's log.
fn bytes_from_bridge(log: &str) -> u64 {
    let line =
        log.lines().find(|l| l.contains("bytes came to the driver from the bridge")).expect("the byte count is logged");
    line.split(": ").last().unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// Runs synthetic (a chain of 1 MB values), cholesky and mapreduce on `engine`.
fn three_apps(engine: &str, opts: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = env!("CARGO_MANIFEST_DIR");
    let e = format!("--engine.executor {} {}", engine, opts);
    let cmds = [
        taps_cmd(&format!(
            "--app synthetic --app.structure sequential --app.task-count 6 --app.task-data-bytes 1000000 \
             --app.warmup-tasks 2 {}",
            e
        )),
        taps_cmd(&format!("-c {}/apps/cholesky/config.toml --app.matrix-size 60 --app.block-size 20 {}", root, e)),
        taps_cmd(&format!("-c {}/apps/mapreduce/config.toml {}", root, e)),
    ];
    let outs = in_netns(d, &cmds);
    for (i, (rc, out, err)) in outs.iter().enumerate() {
        assert_eq!(*rc, 0, "{}\nstdout:\n{}\nstderr:\n{}", cmds[i], out, err);
        let run = the_run_dir(&d.join(format!("d{}", i + 1)));
        let recs = records(&run);
        check_record_invariants(&recs);
        assert!(!recs.is_empty());
        for r in &recs {
            assert_eq!(r.success, Some(true), "{:?}", r);
            let x = r.execution.as_ref().expect("worker-side timings");
            assert!(r.submit_time <= x.task_start_time && x.task_start_time <= x.task_end_time);
            assert!(x.task_end_time <= r.received_time.unwrap());
            // HyperQueue runs a program per task: the worker is the host it ran on.
            let worker = match engine {
                "hyperqueue" => format!("hyperqueue-{}", x.hostname),
                _ => format!("{}-pid-", engine),
            };
            assert!(r.worker.as_deref().is_some_and(|w| w.starts_with(&worker)), "{:?}", r.worker);
        }
    }
    // The chain: each task's 1 MB result went to the next task inside the engine; only the last
    // one came to the driver (with the records' headers): 6 would be 6 MB.
    let log = std::fs::read_to_string(the_run_dir(&d.join("d1")).join("log.txt")).unwrap();
    let got = bytes_from_bridge(&log);
    assert!((1_000_000..1_500_000).contains(&got), "{} bytes came to the driver\n{}", got, log);
    let recs = records(&the_run_dir(&d.join("d1")));
    assert_eq!(recs.iter().filter(|r| !r.parent_task_ids.is_empty()).count(), 5, "the chain has 5 children");
}

#[test]
fn dask_runs_the_apps_and_parents_results_stay_in_the_engine() {
    three_apps("dask", "--engine.executor.workers 2");
}

#[test]
fn ray_runs_the_apps_and_parents_results_stay_in_the_engine() {
    three_apps("ray", "--engine.executor.num-cpus 2");
}

#[test]
fn parsl_local_runs_the_apps_and_parents_results_stay_in_the_engine() {
    three_apps("parsl-local", "--engine.executor.workers 2");
}

/// The reference's parsl-htex options for a LocalProvider block of 2 workers on loopback.
const HTEX_LOCAL: &str = r#"--engine.executor.warmup true --engine.executor.htex '{"label": "taps-test", "address": "127.0.0.1", "max_workers_per_node": 2, "provider": {"kind": "parsl.providers.LocalProvider", "init_blocks": 1, "max_blocks": 1, "launcher": {"kind": "SingleNodeLauncher"}}}'"#;

#[test]
fn parsl_htex_runs_the_apps_and_parents_results_stay_in_the_engine() {
    three_apps("parsl-htex", HTEX_LOCAL);
}

#[test]
fn parsl_htex_options_parsl_cannot_build_are_one_line_before_the_run() {
    require_venv();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"provider": {"kind": "NoSuchProvider"}}"#,
            "The module parsl.providers does not contain a provider named NoSuchProvider.",
        ),
        (
            r#"{"provider": {"kind": "LocalProvider", "launcher": {"kind": "parsl.launchers.Nope"}}}"#,
            "The module parsl.launchers does not contain a provider named Nope.",
        ),
        (
            r#"{"address": {"kind": "address_by_nothing"}}"#,
            "The module parsl.addresses does not contain a provider named address_by_nothing.",
        ),
        (r#"{"max_workers": 2}"#, "unexpected keyword argument 'max_workers'"),
        (r#"{"a": {"label": "x"}, "b": {"label": "x"}}"#, "labels must be unique"),
    ];
    for (htex, expected) in cases {
        let err = refused(tmp.path(), &venv(), &["parsl-htex", "--engine.executor.htex", htex]);
        assert!(err.starts_with("taps: error: executor \"parsl-htex\": ") && err.contains(expected), "{}", err);
    }
}

/// SIGINT to `taps run` on an engine: exit 130, one record per task, no engine process left.
fn sigint_stops(engine: &str, opts: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cmd = taps_cmd(&format!(
        "--app synthetic --app.structure bag --app.task-count 60 --app.bag-max-running 2 --app.task-sleep 0.3 \
         --app.warmup-tasks 0 --engine.executor {} {}",
        engine, opts
    ));
    let mut child = start_netns(d, std::slice::from_ref(&cmd));
    let pid: i32 = wait_for(|| std::fs::read_to_string(d.join("pid.1")).ok()?.trim().parse().ok());
    wait_for(|| {
        let run = run_dirs(&d.join("d1")).pop()?;
        let n = std::fs::read_to_string(run.join("tasks.jsonl")).ok()?.lines().count();
        (n >= 3).then_some(())
    });
    // SAFETY: a signal to the taps process this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = wait_or_kill(&mut child, 300, "the interrupted engine run");
    assert!(status.success());
    check_netns(d);
    let rc = std::fs::read_to_string(d.join("rc.1")).unwrap();
    let err = std::fs::read_to_string(d.join("err.1")).unwrap_or_default();
    assert_eq!(rc.trim(), "130", "{}", err);
    let recs = records(&the_run_dir(&d.join("d1")));
    check_record_invariants(&recs);
    let ok = recs.iter().filter(|r| r.success == Some(true)).count();
    let interrupted = recs.iter().filter(|r| r.exception.as_ref().is_some_and(|e| e.kind == "Interrupted")).count();
    assert!(
        ok >= 3 && interrupted > 0 && ok + interrupted == recs.len(),
        "{} ok, {} interrupted of {}",
        ok,
        interrupted,
        recs.len()
    );
}

#[test]
fn sigint_stops_dask_and_leaves_no_engine_process() {
    sigint_stops("dask", "--engine.executor.workers 2");
}

#[test]
fn sigint_stops_ray_and_leaves_no_engine_process() {
    sigint_stops("ray", "--engine.executor.num-cpus 2");
}

#[test]
fn sigint_stops_parsl_and_leaves_no_engine_process() {
    sigint_stops("parsl-local", "--engine.executor.workers 2");
}

#[test]
fn without_the_environment_one_line_names_the_install_script() {
    let tmp = tempfile::tempdir().unwrap();
    for engine in ["dask", "ray", "parsl-local", "hyperqueue"] {
        let err = refused(tmp.path(), &tmp.path().join("none"), &[engine]);
        assert!(err.starts_with("taps: error: ") && err.contains("scripts/install-engines.sh"), "{}", err);
    }
}

/// `taps run` of a small bag in `dir` with the engines' environment `venv` and
/// `--engine.executor EXECUTOR…`, which must be refused: exit 2, one line, no run directory.
/// Returns the line.
fn refused(dir: &Path, venv: &Path, executor: &[&str]) -> String {
    let out = Command::new(taps_bin())
        .args(["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "2"])
        .args(["--app.bag-max-running", "1", "--engine.executor"])
        .args(executor)
        .env("TAPS_ENGINES_VENV", venv)
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(!dir.join("runs").exists(), "no run directory for {:?}", executor);
    err
}

#[test]
fn hyperqueue_runs_the_apps_and_parents_results_stay_in_the_engine() {
    three_apps("hyperqueue", "--engine.executor.workers 2 --engine.executor.cpus 1");
}

#[test]
fn sigint_stops_hyperqueue_and_leaves_no_engine_process() {
    sigint_stops("hyperqueue", "--engine.executor.workers 2 --engine.executor.cpus 1");
}

/// The run's `hyperqueue/` directory (frames, the local server's files) is gone when it ends.
#[test]
fn hyperqueue_leaves_no_scratch_in_the_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cmd = taps_cmd(
        // Enough tasks that the port check samples the server (taps-frame makes 3 tasks too quick).
        "--app synthetic --app.structure sequential --app.task-count 12 --app.task-data-bytes 5000 \
         --app.warmup-tasks 0 --engine.executor hyperqueue",
    );
    let outs = in_netns(d, std::slice::from_ref(&cmd));
    assert_eq!(outs[0].0, 0, "{}\n{}", outs[0].1, outs[0].2);
    let run = the_run_dir(&d.join("d1"));
    assert_eq!(records(&run).len(), 12);
    assert!(!run.join("hyperqueue").exists(), "the run's hyperqueue/ directory is left");
}

/// `server_dir` joins a running server (here one started through HQ's Python API in another
/// process, as `hq server start` + `hq worker start` would be on a site): the run submits to it,
/// starts no server of its own, and the server goes on serving after the run.
#[test]
fn hyperqueue_joins_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let server = d.join("hq-server");
    let py = venv().join("bin/python");
    let script = format!(
        r#"mkdir -p server-tmp; TMPDIR=$PWD/server-tmp {py} -c 'import sys, time
from hyperqueue.cluster import LocalCluster, WorkerConfig
c = LocalCluster(server_dir=sys.argv[1])
c.start_worker(WorkerConfig(cores=2))
sys.stdin.read()
c.stop()' {dir} < fifo &
P=$!
exec 3> fifo
until [ -e {dir}/hq-current/access.json ]; do sleep 0.1; done
{taps} -c {root}/apps/cholesky/config.toml --app.matrix-size 40 --app.block-size 20 \
  --engine.executor hyperqueue --engine.executor.server-dir {dir}
rc=$?
kill -0 $P || rc=98
exec 3>&-
wait
exit $rc
"#,
        py = py.display(),
        dir = server.display(),
        taps = taps_cmd(""),
        root = env!("CARGO_MANIFEST_DIR"),
    );
    std::fs::write(d.join("hyperqueue-join.sh"), script).unwrap();
    let cmd = format!("sh -c 'mkfifo fifo && . {}/hyperqueue-join.sh'", d.display());
    let outs = in_netns(d, std::slice::from_ref(&cmd));
    assert_eq!(outs[0].0, 0, "stdout:\n{}\nstderr:\n{}", outs[0].1, outs[0].2);
    assert!(outs[0].1.contains("joined server"), "{}", outs[0].1);
    let recs = records(&the_run_dir(&d.join("d1")));
    check_record_invariants(&recs);
    assert!(!recs.is_empty() && recs.iter().all(|r| r.success == Some(true)));
}

/// A bad option or a `server_dir` without a server: one line, exit 2, no run directory.
#[test]
fn hyperqueue_bad_options_get_one_line() {
    require_venv();
    let tmp = tempfile::tempdir().unwrap();
    let base = [
        "run",
        "--app",
        "synthetic",
        "--app.structure",
        "sequential",
        "--app.task-count",
        "2",
        "--engine.executor",
        "hyperqueue",
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    assert_bad_input(tmp.path(), &with(&base, &["--engine.executor.workers", "0"]), &["workers must be at least 1"]);
    assert_bad_input(tmp.path(), &with(&base, &["--engine.executor.cpus", "0"]), &["cpus must be at least 1"]);
    assert_bad_input(tmp.path(), &with(&base, &["--engine.executor.wrokers", "2"]), &["wrokers"]);
    let absent = tmp.path().join("no-such-dir").display().to_string();
    assert_bad_input(
        tmp.path(),
        &with(&base, &["--engine.executor.server-dir", &absent]),
        &["server_dir", "no-such-dir", "hq server start"],
    );
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().display().to_string();
    assert_bad_input(
        tmp.path(),
        &with(&base, &["--engine.executor.server-dir", &empty]),
        &["access file", "hq-current"],
    );
}

/// A task program that HQ sees die (SIGKILL) fails its task with HQ's error and its stderr: one
/// record per task, and the run ends.
#[test]
fn hyperqueue_a_task_program_that_dies_fails_its_task() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let w = d.join("dying-worker.sh");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\nif [ \"$2\" = run-frame ]; then echo dying on purpose >&2; kill -9 $$; fi\nexec {} \"$@\"\n",
            taps_bin()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cmd = taps_cmd(&format!(
        "--app synthetic --app.structure bag --app.task-count 4 --app.bag-max-running 2 --app.warmup-tasks 0 \
         --engine.executor hyperqueue --engine.executor.worker-path {}",
        w.display()
    ));
    let outs = in_netns(d, std::slice::from_ref(&cmd));
    assert_ne!(outs[0].0, 0, "{}", outs[0].1);
    let recs = records(&the_run_dir(&d.join("d1")));
    check_record_invariants(&recs);
    assert!(!recs.is_empty());
    for r in &recs {
        let e = r.exception.as_ref().expect("the task failed");
        assert!(e.message.contains("HyperQueue job") && e.message.contains("dying on purpose"), "{:?}", e);
    }
}

/// The bridge's figures at the end of a run, from its log: engine futures held at the end, at
/// most at once, the tasks the engine's scheduler still held (Dask), and tasks that went to the
/// engine before their parents finished.
fn bridge_figures(log: &str) -> (u64, u64, Option<u64>, u64) {
    let line = log.lines().find(|l| l.contains("engine future(s) held at the end")).expect("the bridge's figures");
    let after = |what: &str| -> Option<u64> {
        let at = line.find(what)? + what.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
    };
    let before = |what: &str| -> u64 {
        let head = &line[..line.find(what).expect(what)];
        head.rsplit(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).unwrap().parse().unwrap()
    };
    (
        before(" engine future(s) held at the end"),
        after("at most ").unwrap(),
        after("scheduler holds "),
        before(" task(s) went to the engine before"),
    )
}

/// A bag of 30 tasks, 2 at a time, each returning 10 kB (held in the engine): the app drops
/// each future once it checked the result, so the bridge drops the engine's future and Dask
/// forgets the task. Before, the bridge kept all 30 futures, and Dask all 30 results, to the end.
#[test]
fn dask_forgets_the_results_nothing_needs_any_more() {
    let tmp = tempfile::tempdir().unwrap();
    let cmd = taps_cmd(
        "--app synthetic --app.structure bag --app.task-count 30 --app.bag-max-running 2 \
         --app.task-data-bytes 10000 --app.warmup-tasks 0 --engine.executor dask --engine.executor.workers 2",
    );
    let outs = in_netns(tmp.path(), std::slice::from_ref(&cmd));
    let (rc, out, err) = &outs[0];
    assert_eq!(*rc, 0, "{}\n{}", out, err);
    let run = the_run_dir(&tmp.path().join("d1"));
    let recs = records(&run);
    assert_eq!(recs.iter().filter(|r| r.success == Some(true)).count(), 30);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let (held, peak, scheduler, _) = bridge_figures(&log);
    assert_eq!(held, 0, "{}", log);
    assert!((1..=6).contains(&peak), "{} futures at once\n{}", peak, log);
    // Releases reach the scheduler asynchronously: the last few may still be on their way.
    let scheduler = scheduler.expect("dask reports its scheduler's tasks");
    assert!(scheduler <= 6, "the scheduler still holds {} tasks\n{}", scheduler, log);
}

/// A chain of 3 tasks of 2 s on each engine: each child goes to the engine while its parent
/// still runs (the engine waits for the parent itself), and the records are as before. Then a
/// chain whose first task fails (after 1 s, an injected timeout) through the failures app: the
/// children, already in the engine, fail with one record each, `ParentFailed`, naming the parent.
fn children_go_before_their_parents_finish(engine: &str, opts: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let e = format!("--engine.executor {} {}", engine, opts);
    let chain = r#"{"structure": "sequential", "task_count": 3, "task_data_bytes": 10000, "warmup_tasks": 0}"#;
    let cmds = [
        taps_cmd(&format!(
            "--app synthetic --app.structure sequential --app.task-count 3 --app.task-sleep 2 \
             --app.task-data-bytes 10000 --app.warmup-tasks 0 {}",
            e
        )),
        taps_cmd(&format!(
            "--app failures --app.base synthetic --app.config '{}' --app.failure-type timeout \
             --app.failure-rate 1 --app.timeout-seconds 1 --app.seed 1 {}",
            chain, e
        )),
    ];
    let outs = in_netns(d, &cmds);
    assert_eq!(outs[0].0, 0, "{}\n{}", outs[0].1, outs[0].2);
    let run = the_run_dir(&d.join("d1"));
    let recs = records(&run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 3);
    let end = |id: &str| recs.iter().find(|r| r.task_id == id).unwrap().execution.as_ref().unwrap().task_end_time;
    for r in &recs {
        assert_eq!(r.success, Some(true), "{:?}", r);
        if let Some(p) = r.parent_task_ids.first() {
            assert!(r.submit_time < end(p), "a child was submitted after its parent ended: {:?}", r);
            assert!(r.execution.as_ref().unwrap().task_start_time >= end(p), "a child started before its parent ended");
            assert!(r.bytes_inline + r.bytes_by_reference >= 2 * 10_000, "the parent's result is counted: {:?}", r);
        }
    }
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let (_, _, _, early) = bridge_figures(&log);
    assert!(early >= 1, "no child went to {} before its parent finished\n{}", engine, log);

    let (rc, out, err) = &outs[1];
    let run = the_run_dir(&d.join("d2"));
    let recs = records(&run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 3, "rc {}\n{}\n{}", rc, out, err);
    let first = recs.iter().find(|r| r.parent_task_ids.is_empty()).unwrap();
    assert_eq!(first.exception.as_ref().map(|e| e.kind.as_str()), Some("Timeout"), "{:?}", first);
    for r in recs.iter().filter(|r| !r.parent_task_ids.is_empty()) {
        let e = r.exception.as_ref().expect("the child failed");
        assert_eq!(e.kind, "ParentFailed", "{:?}", r);
        assert!(e.message.contains(&first.task_id) && e.message.contains("Timeout"), "{}", e.message);
        assert!(r.execution.is_none(), "a child of a failed parent does not run: {:?}", r);
    }
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let (_, _, _, early) = bridge_figures(&log);
    assert!(early >= 1, "no child went to {} before its parent failed\n{}", engine, log);
}

#[test]
fn dask_takes_children_before_their_parents_finish() {
    children_go_before_their_parents_finish("dask", "--engine.executor.workers 2");
}

#[test]
fn ray_takes_children_before_their_parents_finish() {
    children_go_before_their_parents_finish("ray", "--engine.executor.num-cpus 2");
}

#[test]
fn parsl_local_takes_children_before_their_parents_finish() {
    children_go_before_their_parents_finish("parsl-local", "--engine.executor.workers 2");
}

/// A bag of 30 tasks, 2 at a time, on HyperQueue: once the app has checked a result and dropped
/// its future, the task's result file goes (the bridge's release). Sampled while the run runs,
/// the run's `hyperqueue/frames/` holds a few result files at a time, not all 30.
#[test]
fn hyperqueue_removes_the_result_files_nothing_needs_any_more() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cmd = taps_cmd(
        "--app synthetic --app.structure bag --app.task-count 30 --app.bag-max-running 2 \
         --app.task-data-bytes 10000 --app.warmup-tasks 0 --engine.executor hyperqueue \
         --engine.executor.workers 2 --engine.executor.cpus 1",
    );
    let mut child = start_netns(d, std::slice::from_ref(&cmd));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let (mut most, mut samples) = (0, 0);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the run hung");
        let frames = run_dirs(&d.join("d1")).pop().map(|r| r.join("hyperqueue/frames"));
        if let Some(Ok(dir)) = frames.map(std::fs::read_dir) {
            let n = dir.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".out")).count();
            most = most.max(n);
            samples += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    check_netns(d);
    let rc = std::fs::read_to_string(d.join("rc.1")).unwrap();
    assert_eq!(rc.trim(), "0", "{}", std::fs::read_to_string(d.join("err.1")).unwrap_or_default());
    let recs = records(&the_run_dir(&d.join("d1")));
    assert_eq!(recs.iter().filter(|r| r.success == Some(true)).count(), 30);
    assert!(samples >= 10, "the frames directory was seen {} times only", samples);
    assert!((1..=6).contains(&most), "{} result files at once", most);
}

/// The tasks that ran inside the engine's workers (`taps_native`), from the run's log.
fn in_process_tasks(log: &str) -> u64 {
    let line = log.lines().find(|l| l.contains("engine future(s) held at the end")).expect("the bridge's figures");
    let head = &line[..line.find(" task(s) ran inside the engine's workers").expect("the in-process count")];
    head.rsplit(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).unwrap().parse().unwrap()
}

/// Every task runs inside the engine's worker processes (`taps_native`, which
/// scripts/install-engines.sh builds for this taps), with records as through a taps-worker; a
/// task that panics there is one record with its `TaskPanic` (the app then fails, as on any
/// executor). With `TAPS_IN_PROCESS=0` the tasks run in taps-worker processes again.
fn tasks_run_inside_the_workers(engine: &str, opts: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let e = format!("--engine.executor {} {}", engine, opts);
    let bag = r#"{"structure": "bag", "task_count": 8, "bag_max_running": 2, "warmup_tasks": 0}"#;
    let synthetic = format!(
        "--app synthetic --app.structure sequential --app.task-count 6 --app.task-data-bytes 100000 \
         --app.warmup-tasks 2 {}",
        e
    );
    let cmds = [
        taps_cmd(&synthetic),
        taps_cmd(&format!(
            "--app failures --app.base synthetic --app.config '{}' --app.failure-type panic --app.failure-rate 1 \
             --app.seed 1 {}",
            bag, e
        )),
        format!("env TAPS_IN_PROCESS=0 {}", taps_cmd(&synthetic)),
    ];
    let outs = in_netns(d, &cmds);
    assert_eq!(outs[0].0, 0, "{}\n{}", outs[0].1, outs[0].2);
    let run = the_run_dir(&d.join("d1"));
    let recs = records(&run);
    check_record_invariants(&recs);
    assert_eq!(recs.len(), 8);
    assert!(recs.iter().all(|r| r.success == Some(true)), "{:?}", recs);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("tasks run inside the engine's workers"), "{}", log);
    assert_eq!(in_process_tasks(&log), 8, "{}", log);

    let run = the_run_dir(&d.join("d2"));
    let recs = records(&run);
    check_record_invariants(&recs);
    assert_ne!(outs[1].0, 0, "the app fails with its first failed task\n{}", outs[1].1);
    assert!(!recs.is_empty(), "{}\n{}", outs[1].1, outs[1].2);
    for r in &recs {
        let e = r.exception.as_ref().expect("the task panicked");
        assert_eq!(e.kind, "TaskPanic", "{:?}", r);
        assert!(e.traceback.contains("panicked at"), "{:?}", e);
        assert!(r.worker.as_deref().is_some_and(|w| w.starts_with(&format!("{}-pid-", engine))), "{:?}", r);
    }
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert_eq!(in_process_tasks(&log), recs.len() as u64, "{}", log);

    assert_eq!(outs[2].0, 0, "{}\n{}", outs[2].1, outs[2].2);
    let run = the_run_dir(&d.join("d3"));
    assert!(records(&run).iter().all(|r| r.success == Some(true)));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("tasks run in a taps-worker process"), "{}", log);
    // Chosen with TAPS_IN_PROCESS=0: news, not a warning (a missing or stale module warns).
    assert!(!log.contains("WARNING"), "{}", log);
    assert_eq!(in_process_tasks(&log), 0, "{}", log);
}

/// `TAPS_BRIDGE_ENGINE=null` (scripts/bench-engines.sh's measure of what taps and the bridge add
/// per task): the bridge runs every task itself, at once, whatever engine the driver names (and
/// starts nothing that listens: no namespace needed); a parent's result goes to its child inside
/// the bridge, and the apps' results are right (cholesky checks its factor) with one successful
/// record per task.
#[test]
fn the_null_engine_runs_the_apps_in_the_bridge_alone() {
    require_venv();
    let root = env!("CARGO_MANIFEST_DIR");
    let cholesky = format!("{}/apps/cholesky/config.toml", root);
    let e = ["--engine.executor", "dask", "--engine.executor.workers", "1"];
    let synthetic = "run --app synthetic --app.structure sequential --app.task-count 6 --app.task-data-bytes 1000000 \
                     --app.warmup-tasks 2";
    let cholesky = format!("run -c {} --app.matrix-size 60 --app.block-size 20", cholesky);
    for (i, line) in [synthetic, &cholesky].into_iter().enumerate() {
        let d = tempfile::tempdir().unwrap();
        let args: Vec<&str> = line.split_whitespace().chain(e).collect();
        let mut child = Command::new(taps_bin())
            .args(&args)
            .current_dir(d.path())
            .env("TAPS_BRIDGE_ENGINE", "null")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_or_kill(&mut child, 120, "taps on the null engine");
        assert!(out.status.success(), "{:?}: {}", args, show(&out));
        let run = the_run_dir(d.path());
        let recs = records(&run);
        check_record_invariants(&recs);
        assert!(recs.len() >= 8, "{:?}", recs);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{:?}", recs);
        let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
        assert!(log.contains("bridge started") && log.contains("null (no engine"), "{}", log);
        assert_eq!(in_process_tasks(&log), recs.len() as u64, "{}", log);
        if i == 0 {
            // The chain's values stayed in the bridge: only the last 1 MB came to the driver.
            let got = bytes_from_bridge(&log);
            assert!((1_000_000..1_500_000).contains(&got), "{} bytes came to the driver\n{}", got, log);
        }
    }
    // Any other value is one line naming the one it takes, before the run directory exists.
    let d = tempfile::tempdir().unwrap();
    let args: Vec<&str> = synthetic.split_whitespace().chain(e).collect();
    let out =
        Command::new(taps_bin()).args(&args).current_dir(d.path()).env("TAPS_BRIDGE_ENGINE", "nul").output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TAPS_BRIDGE_ENGINE=nul: the only value it takes is null"), "{}", show(&out));
    assert_eq!(err.lines().count(), 1, "{}", show(&out));
    assert!(run_dirs(d.path()).is_empty(), "{}", show(&out));
}

#[test]
fn ray_runs_tasks_inside_its_workers() {
    tasks_run_inside_the_workers("ray", "--engine.executor.num-cpus 2");
}

#[test]
fn parsl_local_runs_tasks_inside_its_workers() {
    tasks_run_inside_the_workers("parsl-local", "--engine.executor.workers 2");
}

/// HyperQueue runs each task as `taps-frame` (beside taps; no MPI, no HDF5 linked), cholesky's
/// BLAS tasks among them, with the records of `taps worker run-frame`.
#[test]
fn hyperqueue_runs_cholesky_tasks_with_taps_frame() {
    let frame = Path::new(&taps_bin()).with_file_name("taps-frame");
    let ldd = Command::new("ldd").arg(&frame).output().expect("ldd runs");
    let libs = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.status.success() && libs.contains("blas"), "{}", libs);
    assert!(!libs.contains("libmpi") && !libs.contains("hdf5"), "taps-frame links MPI or HDF5:\n{}", libs);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = env!("CARGO_MANIFEST_DIR");
    let cmd = taps_cmd(&format!(
        "-c {}/apps/cholesky/config.toml --app.matrix-size 60 --app.block-size 20 --engine.executor hyperqueue \
         --engine.executor.workers 1 --engine.executor.cpus 2",
        root
    ));
    let outs = in_netns(d, std::slice::from_ref(&cmd));
    assert_eq!(outs[0].0, 0, "{}\n{}", outs[0].1, outs[0].2);
    let run = the_run_dir(&d.join("d1"));
    let recs = records(&run);
    check_record_invariants(&recs);
    assert!(recs.len() > 10 && recs.iter().all(|r| r.success == Some(true)), "{:?}", recs);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains(&format!("program {}", frame.display())), "{}", log);
}

/// What Ray gets of a taps task: every argument and the result are `bytes` (Ray passes them as
/// they are; a tuple or a list is msgpacked and pickled, which cost a no-op task 15 %), or a
/// parent's object reference; the bridge's context is not an argument. Checked on the bridge's
/// own functions with every kind of argument (segments of 0 bytes, at the inline limit and over
/// it, a reference slot, parents), read back as the worker reads them.
#[test]
fn ray_gets_every_argument_and_result_as_bytes() {
    require_venv();
    let script = r#"
from taps_bridge import frames
n = frames.RAY_INLINE
spec = [("seg", b""), ("dep", 1), ("seg", b"a" * n), ("slot", b"\x01\x05key-1\x07"), ("seg", b"b" * (n + 1)), ("dep", 0)]
deps = [object(), object()]
args = frames.ray_args(b"HEAD", spec, deps)
assert all(type(a) is bytes or any(a is d for d in deps) for a in args), [type(a) for a in args]
assert args[1] is deps[1] and args[2] == b"b" * (n + 1) and args[3] is deps[0], "parents and large values as arguments, in order"
head, back, parents = frames.ray_spec(args[0], ["p1", args[2], "p0"])
assert head == b"HEAD" and parents == ["p1", "p0"], (head, parents)
assert [(k, v if k == "dep" else bytes(v)) for k, v in back] == [(k, [1, 0][v] if k == "dep" else v) for k, v in spec], back
done = frames.pack_done(b"HDR", [b"", b"x" * 3], 4242, True)
assert type(done) is bytes
header, segments, worker, in_process = frames.unpack_done(done)
assert (header, [bytes(s) for s in segments], worker, in_process) == (b"HDR", [b"", b"xxx"], "pid-4242", True)
assert frames.unpack_done(frames.pack_done(b"H", [], 7, False))[2:] == ("pid-7", False)
print("ok")
"#;
    python_says_ok(script);
}

/// Runs the Python `script` with the venv's Python and the checkout's `python/` package; it
/// must end by printing `ok`.
fn python_says_ok(script: &str) {
    let out = Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bridge's order around a submission: the keys it releases that the submission does not
/// name go before it (Dask's client then sends both in one batch, the submission first: see
/// `Server.handle`), the ones it names after it (HyperQueue deletes a released task's result
/// file, which the child still needs). Driven through `Server.handle` with an engine that writes
/// down what it is asked.
#[test]
fn the_bridge_releases_what_a_submission_does_not_name_before_it_and_its_parents_after() {
    require_venv();
    let script = r#"
from taps_bridge.__main__ import Server
calls = []
class Engine:
    pending_parents = True
    def submit_task(self, key, ctx, head, spec, deps):
        calls.append(("submit", key, tuple(deps)))
        return key
    def on_done(self, fut, cb): pass
    def done(self, fut): return True
    def arg(self, fut): return fut
    def release(self, fut): calls.append(("release", fut))
class Ch:
    def send(self, msg, blobs=()): raise AssertionError(msg)
s = Server(Ch())
s.engine, s.ctx, s.pending = Engine(), None, True
for k in ("a", "b", "c"):
    assert s.handle({"op": "submit", "seq": 0, "key": k, "args": []}, [b"H"])
calls.clear()
assert s.handle({"op": "submit", "seq": 1, "key": "d", "args": [{"dep": "b"}], "release": ["a", "b", "c"]}, [b"H"])
assert calls == [("release", "a"), ("release", "c"), ("submit", "d", ("b",)), ("release", "b")], calls
assert sorted(s.futures) == ["d"], s.futures
print("ok")
"#;
    python_says_ok(script);
}

/// A chain on Ray whose values go every way an argument can: inline (10 kB), as an argument of
/// their own (100 kB, over the inline limit), and as a reference to a file (the `file`
/// transformer's slot): every task succeeds with its parent's value, one record each.
#[test]
fn ray_passes_values_of_every_kind_along_a_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let chain = |bytes: u64, extra: &str| {
        taps_cmd(&format!(
            "--app synthetic --app.structure sequential --app.task-count 4 --app.task-data-bytes {} \
             --app.warmup-tasks 0 --engine.executor ray --engine.executor.num-cpus 2 {}",
            bytes, extra
        ))
    };
    let cmds = [
        chain(10_000, ""),
        chain(100_000, ""),
        chain(100_000, "--engine.filter object-size --engine.filter.min-size 50000 --engine.transformer file"),
    ];
    let outs = in_netns(d, &cmds);
    for (i, (rc, out, err)) in outs.iter().enumerate() {
        assert_eq!(*rc, 0, "{}\nstdout:\n{}\nstderr:\n{}", cmds[i], out, err);
        let recs = records(&the_run_dir(&d.join(format!("d{}", i + 1))));
        check_record_invariants(&recs);
        assert_eq!(recs.len(), 4, "{}", cmds[i]);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{:?}", recs);
        assert_eq!(recs.iter().filter(|r| !r.parent_task_ids.is_empty()).count(), 3);
    }
}

/// A running Dask scheduler and worker (started here with `taps_bridge` importable, as a user
/// would: `PYTHONPATH=<checkout>/python`, one worker of one thread, so every task of every run
/// lands on the same thread) joined by four taps runs in turn, each with the `file` transformer
/// into a directory of its own (`files1`…`files4`, created before): the first two run their tasks
/// in the worker's process (`taps_native`), the last two in a taps-worker process
/// (`TAPS_IN_PROCESS=0`). An engine worker outlives a run: each run's tasks must use that run's
/// `Hello` (its file directory), not the cached runner or taps-worker of the run before (whose
/// directory is gone: "cannot write"). Every run completes with complete records, its values
/// went to its own directory only (sampled while it ran), the runs left their directories empty,
/// and the cluster, still serving after the last run, is stopped.
#[test]
fn dask_runs_twice_on_one_running_cluster_each_with_its_own_data() {
    require_venv();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!(
        r#"mkdir -p cluster-tmp files1 files2 files3 files4 r1 r2 r3 r4
export PYTHONPATH={root}/python
TMPDIR=$PWD/cluster-tmp {venv}/bin/dask scheduler --host 127.0.0.1 --port 0 --dashboard-address 127.0.0.1:0 \
  --scheduler-file sched.json > scheduler.log 2>&1 &
S=$!
until [ -s sched.json ]; do kill -0 $S || exit 96; sleep 0.1; done
TMPDIR=$PWD/cluster-tmp {venv}/bin/dask worker --scheduler-file sched.json --host 127.0.0.1 --nworkers 1 \
  --nthreads 1 --dashboard-address 127.0.0.1:0 --local-directory $PWD/cluster-tmp > worker.log 2>&1 &
W=$!
ADDR=$({venv}/bin/python -c 'import json; print(json.load(open("sched.json"))["address"])')
unset PYTHONPATH
i=0
for native in 1 1 0 0; do
  i=$((i+1))
  (cd r$i && TAPS_IN_PROCESS=$native exec {taps} --app synthetic --app.structure sequential --app.task-count 6 \
    --app.task-data-bytes 100000 --app.task-sleep 0.2 --app.warmup-tasks 0 \
    --engine.executor dask --engine.executor.scheduler $ADDR --engine.executor.wait-for-workers 1 \
    --engine.filter object-size --engine.filter.min-size 50000 \
    --engine.transformer file --engine.transformer.file-dir ../files$i) > run.$i.out 2>&1 &
  R=$!
  while kill -0 $R 2>/dev/null; do find files1 files2 files3 files4 -type f >> seen.$i; sleep 0.02; done
  wait $R; echo $? > run.$i.rc
done
alive=0
kill -0 $S && kill -0 $W && alive=1
kill $W; wait $W
kill $S; wait $S
[ $alive = 1 ] || exit 98
"#,
        root = root,
        venv = venv().display(),
        taps = taps_cmd(""),
    );
    std::fs::write(d.join("dask-join.sh"), script).unwrap();
    let cmd = format!("sh -c '. {}/dask-join.sh'", d.display());
    let outs = in_netns(d, std::slice::from_ref(&cmd));
    let d1 = d.join("d1");
    let read = |f: &str| std::fs::read_to_string(d1.join(f)).unwrap_or_default();
    let logs = || format!("scheduler:\n{}\nworker:\n{}", read("scheduler.log"), read("worker.log"));
    assert_eq!(outs[0].0, 0, "the cluster stopped early or failed\n{}\n{}\n{}", outs[0].1, outs[0].2, logs());
    for i in 1..=4 {
        let out = read(&format!("run.{}.out", i));
        assert_eq!(read(&format!("run.{}.rc", i)).trim(), "0", "run {}:\n{}\n{}", i, out, logs());
        let run = the_run_dir(&d1.join(format!("r{}", i)));
        let recs = records(&run);
        check_record_invariants(&recs);
        assert_eq!(recs.len(), 6, "run {}", i);
        assert!(recs.iter().all(|r| r.success == Some(true)), "run {}: {:?}", i, recs);
        assert!(recs.iter().all(|r| r.execution.is_some() && r.received_time.is_some()), "run {}: {:?}", i, recs);
        let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
        assert_eq!(in_process_tasks(&log), if i <= 2 { 6 } else { 0 }, "run {}:\n{}", i, log);
        // What the file transformer wrote while run i ran: only under its own files<i>.
        let seen = read(&format!("seen.{}", i));
        let own = format!("files{}/taps-", i);
        assert!(seen.lines().any(|l| l.starts_with(&own)), "run {} wrote nothing under files{}:\n{}", i, i, seen);
        assert!(seen.lines().all(|l| l.starts_with(&own)), "run {} wrote elsewhere:\n{}", i, seen);
        let left: Vec<_> = std::fs::read_dir(d1.join(format!("files{}", i))).unwrap().flatten().collect();
        assert!(left.is_empty(), "run {} left {:?}", i, left);
    }
}

/// `taps_native.Runner.task`, which runs a task from Ray's and Parsl's arguments in Rust, gives
/// what the Python path gives (`ray_spec`, `run_header`, `Runner.run`, `pack_done`): for every
/// kind of argument (a segment inline and as an argument of its own, a reference slot, a
/// parent's result as bytes and as a reference), and `ParentFailed` for a failed parent.
#[test]
fn the_native_task_function_builds_the_frames_the_python_one_builds() {
    use taps::protocol::{Message, ToWorker};
    require_venv();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{:02x}", x)).collect::<String>();
    let hello =
        ToWorker::Hello { version: taps::protocol::PROTOCOL_VERSION, data: Default::default(), name: "t".into() };
    let run = |task: &str| {
        let mut h =
            ToWorker::Run { seq: 3, id: Default::default(), task: task.into(), args: Vec::new() }.encode().header;
        h.pop();
        hex(&h)
    };
    let script = format!(
        r#"
import os, taps_native
from taps_bridge import frames
hello = frames.encode(bytes.fromhex("{hello}"), [])
r = taps_native.Runner(*frames.split(b"".join(hello)))
echo, fail = bytes.fromhex("{echo}"), bytes.fromhex("{fail}")
n = frames.RAY_INLINE
pc = lambda b: frames.varint(len(b)) + b  # a value as postcard encodes bytes and strings

def python(head, spec, deps):
    args = frames.ray_args(head, spec, deps)
    h, s, parents = frames.ray_spec(args[0], args[1:])
    header, segments = frames.run_header(h, s, lambda i: frames.unpack_done(parents[i]))
    header, segments = r.run(bytes(header), [bytes(x) for x in segments])
    return frames.pack_done(header, segments, os.getpid(), True)

def native(head, spec, deps):
    args = frames.ray_args(head, spec, deps)
    return r.task(args[0], list(args[1:]))

def result(done):
    header, segments, worker, in_process = frames.unpack_done(done)
    try:
        slot, segs = frames.result_slot((header, segments))
    except frames.ParentFailed:
        return "failed", worker, in_process
    return bytes(slot), [bytes(x) for x in segs], worker, in_process

ok = python(echo, [("seg", pc(b"v" * 10))], [])
ref = frames.pack_done(b"\x02\x01\x00\x01\x05key-1\x07", [], 1, True)
failed = python(fail, [("seg", pc(b"oops"))], [])
cases = [
    (echo, [("seg", b"")], []),
    (echo, [("seg", pc(b""))], []),
    (echo, [("seg", pc(b"a" * (n + 1)))], []),
    (echo, [("slot", b"\x01\x05key-1\x07")], []),
    (echo, [("dep", 0)], [ok]),
    (echo, [("dep", 0)], [ref]),
]
for head, spec, deps in cases:
    a, b = result(python(head, spec, deps)), result(native(head, spec, deps))
    assert a == b, (spec, a, b)
assert result(native(echo, [("dep", 0)], [ok]))[1] == [pc(b"v" * 10)], "the parent's value reaches the child"
assert result(native(echo, [("seg", pc(b"a" * (n + 1)))], []))[1] == [pc(b"a" * (n + 1))]
assert result(failed)[0] == "failed", "fail's Done is a failure"
for f in (python, native):
    try:
        f(echo, [("dep", 0)], [failed])
        raise SystemExit("no ParentFailed from " + f.__name__)
    except frames.ParentFailed:
        pass
print("ok")
"#,
        hello = hex(&hello.encode().header),
        echo = run("echo"),
        fail = run("fail"),
    );
    python_says_ok(&script);
}
