//! `taps sweep`: the matrix and its listing, bad input, a real sweep over every executor (OpenMPI
//! for mpi), an interrupted sweep resumed, a different matrix refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// A tiny synthetic base config in `dir`.
fn base(dir: &Path, extra: &str) -> PathBuf {
    let f = dir.join("base.toml");
    let text =
        format!("[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = 3\nbag_max_running = 2\n{}", extra);
    std::fs::write(&f, text).unwrap();
    f
}

/// `taps sweep ARGS` in `dir`, as root may run mpirun.
fn sweep(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(taps_bin());
    c.current_dir(dir)
        .arg("sweep")
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env_remove("TAPS_WORKER");
    c
}

/// sweep.csv as rows of (column → value).
fn csv_rows(out: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv written");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_string)).collect()).collect()
}

fn cell_status(out: &Path, cell: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("cells").join(format!("{}.json", cell))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn dry_run_lists_the_cartesian_product_times_repeat_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let out = sweep(
        tmp.path(),
        &[
            "-c",
            "base.toml",
            "--vary",
            "engine.executor=thread-pool,process-pool,mpi",
            "--vary",
            "app.task-data-bytes=10000,1000000",
            "--repeat",
            "3",
            "--out",
            "out",
            "--dry-run",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("18 cell(s): 6 combination(s) x 3 repeat(s)"), "{}", text);
    assert_eq!(lines.len(), 19, "{}", text);
    // Repeats interleaved: every combination once, then again; the first key varies slowest.
    assert!(lines[1].contains("r1  engine.executor.name=\"thread-pool\" app.task_data_bytes=10000"), "{}", text);
    assert!(lines[2].contains("r1  engine.executor.name=\"thread-pool\" app.task_data_bytes=1000000"), "{}", text);
    assert!(lines[6].contains("r1  engine.executor.name=\"mpi\" app.task_data_bytes=1000000"), "{}", text);
    assert!(lines[7].contains("r2  engine.executor.name=\"thread-pool\" app.task_data_bytes=10000"), "{}", text);
    assert!(lines[18].ends_with("cells/engine.executor=mpi_app.task_data_bytes=1000000_r3"), "{}", text);
    assert!(lines[1..].iter().all(|l| l.contains("to run")), "{}", text);
    assert!(!tmp.path().join("out").exists(), "--dry-run created the sweep directory");
}

#[test]
fn bad_vary_input_is_one_error_line_exit_2_and_no_directory() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--vary", "app.task_count"], &["--vary app.task_count", "expected KEY=V1,V2"]),
        (&["--vary", "app.task_count=1,,2"], &["an empty value"]),
        (&["--vary", "app.task_count=1,1"], &["the value 1 is given twice"]),
        (&["--vary", "app.task_count=[1,2"], &["is not a TOML value"]),
        (&["--vary", "app.task-cuont=1,2"], &["cell app.task_cuont=1", "unknown option", "task_count"]),
        (&["--vary", "app.task_count=3,x"], &["cell app.task_count=x", "app.task_count"]),
        (&["--vary", "engine.executor=thread-pool,nope"], &["cell engine.executor.name=nope", "nope"]),
        (&["--vary", "app.task_count=1", "--vary", "app.task-count=2"], &["varied twice"]),
        (&["--vary", "app.task_count=1", "--repeat", "0"], &["--repeat"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["sweep", "-c", "base.toml", "--out", "out"];
        args.extend_from_slice(extra);
        assert_bad_input(tmp.path(), &args, needles);
        assert!(!tmp.path().join("out").exists(), "{:?} created the sweep directory", extra);
    }
    // A bad cell late in the matrix is found before any cell runs.
    let args = ["sweep", "-c", "base.toml", "--out", "out", "--vary", "app.structure=bag,diamond,nope"];
    assert_bad_input(tmp.path(), &args, &["cell app.structure=nope"]);
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn a_sweep_over_every_executor_records_every_task_and_writes_sweep_csv() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let mut c = sweep(
        tmp.path(),
        &[
            "-c",
            "base.toml",
            "--vary",
            "engine.executor=thread-pool,process-pool,mpi",
            "--vary",
            "app.task_data_bytes=10,100000",
            "--out",
            "out",
        ],
    );
    let stderr = tmp.path().join("stderr");
    let mut child = c.stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
    let status = wait_or_kill(&mut child, 300, "taps sweep over three executors");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{}", err);
    // No terminal: plain progress lines, one per cell.
    assert!(err.contains("[6/6] cells/engine.executor=mpi_app.task_data_bytes=100000_r1: ok in "), "{}", err);
    let dir = tmp.path().join("out");
    let rows = csv_rows(&dir);
    assert_eq!(rows.len(), 6);
    let mut i = 0;
    for ex in ["thread-pool", "process-pool", "mpi"] {
        for bytes in ["10", "100000"] {
            let row = &rows[i];
            i += 1;
            assert_eq!(row["engine.executor.name"], ex, "{:?}", row);
            assert_eq!(row["app.task_data_bytes"], bytes, "{:?}", row);
            assert_eq!(row["repeat"], "1");
            assert_eq!(row["status"], "ok", "{:?}", row);
            assert_eq!(row["exit_code"], "0");
            assert_eq!(row["records"], "3");
            assert_eq!(row["failed_tasks"], "0");
            let run = PathBuf::from(&row["run_dir"]);
            assert_eq!(run, dir.join("cells").join(format!("engine.executor={}_app.task_data_bytes={}_r1", ex, bytes)));
            let recs = records(&run);
            assert_eq!(recs.len(), 3);
            check_record_invariants(&recs);
            assert!(recs.iter().all(|r| r.success == Some(true)));
            let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
            assert!(cfg.contains(&format!("name = \"{}\"", ex)), "{}", cfg);
            assert!(cfg.contains(&format!("task_data_bytes = {}", bytes)), "{}", cfg);
        }
    }
    // The mpi cells ran on MPI ranks (rank 1 and 2 of 3), not in the driver.
    let mpi = records(&dir.join("cells/engine.executor=mpi_app.task_data_bytes=10_r1"));
    assert!(mpi.iter().all(|r| r.worker.as_deref().is_some_and(|w| w.starts_with("rank-"))), "{:?}", mpi);
}

#[test]
fn an_interrupted_sweep_resumes_rerunning_only_unfinished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let args = ["-c", "base.toml", "--vary", "app.task_sleep=0,10,0.01", "--out", "out"];
    let dir = tmp.path().join("out");
    let cells = ["app.task_sleep=0_r1", "app.task_sleep=10_r1", "app.task_sleep=0.01_r1"];
    let stderr = tmp.path().join("stderr");
    let mut child =
        sweep(tmp.path(), &args).stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
    // Interrupt while the second cell's tasks sleep.
    let log = dir.join("cells").join(cells[1]).join("log.txt");
    wait_for(|| std::fs::read_to_string(&log).ok().filter(|l| l.contains("Running app")));
    // SAFETY: a plain syscall on the process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_or_kill(&mut child, 120, "interrupted taps sweep");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{}", err);
    assert!(err.contains("taps: sweep interrupted by signal 2: 1 of 3 cell(s) finished"), "{}", err);
    assert!(err.contains("resume with: "), "{}", err);
    assert_eq!(cell_status(&dir, cells[0])["status"], "ok");
    assert_eq!(cell_status(&dir, cells[1])["status"], "interrupted");
    // The interrupted run recorded the tasks it had submitted (two in flight of the bag) as failed.
    let recs = records(&dir.join("cells").join(cells[1]));
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.success != Some(true)), "{:?}", recs);
    assert!(!dir.join("cells").join(cells[2]).exists(), "the third cell started after the signal");
    let rows = csv_rows(&dir);
    let states: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(states, ["ok", "interrupted", "pending"]);

    let first = dir.join("cells").join(cells[0]);
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&first.join("tasks.jsonl")), mtime(&dir.join("cells").join(format!("{}.json", cells[0]))));
    let mut child =
        sweep(tmp.path(), &args).stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
    let status = wait_or_kill(&mut child, 120, "resumed taps sweep");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{}", err);
    assert!(err.contains("resuming: 1 of 3 cell(s) already finished, skipped"), "{}", err);
    let after = (mtime(&first.join("tasks.jsonl")), mtime(&dir.join("cells").join(format!("{}.json", cells[0]))));
    assert_eq!(before, after, "the finished cell was run again");
    for c in &cells {
        assert_eq!(cell_status(&dir, c)["status"], "ok", "{}", c);
        let recs = records(&dir.join("cells").join(c));
        assert_eq!(recs.len(), 3, "{}", c);
        assert!(recs.iter().all(|r| r.success == Some(true)), "{}", c);
    }
    let states: Vec<String> = csv_rows(&dir).iter().map(|r| r["status"].clone()).collect();
    assert_eq!(states, ["ok", "ok", "ok"]);
}

#[test]
fn a_different_matrix_in_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let out = sweep(tmp.path(), &["-c", "base.toml", "--vary", "app.task_count=1,2", "--out", "out"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let recorded = std::fs::read(tmp.path().join("out/sweep.json")).unwrap();
    let csv = std::fs::read(tmp.path().join("out/sweep.csv")).unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--vary", "app.task_count=1,3"], &["holds a different sweep", "app.task_count=1,2"]),
        (&["--vary", "app.task_count=1,2", "--repeat", "2"], &["--repeat 1, not 2"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["sweep", "-c", "base.toml", "--out", "out"];
        args.extend_from_slice(extra);
        assert_bad_input(tmp.path(), &args, needles);
    }
    // A changed base file is a different matrix too.
    base(tmp.path(), "task_sleep = 0.0\n");
    assert_bad_input(
        tmp.path(),
        &["sweep", "-c", "base.toml", "--out", "out", "--vary", "app.task_count=1,2"],
        &["base configuration files changed"],
    );
    assert_eq!(std::fs::read(tmp.path().join("out/sweep.json")).unwrap(), recorded);
    assert_eq!(std::fs::read(tmp.path().join("out/sweep.csv")).unwrap(), csv);
    // A directory that holds something else is not taken over.
    std::fs::create_dir(tmp.path().join("other")).unwrap();
    std::fs::write(tmp.path().join("other/notes.txt"), "mine").unwrap();
    assert_bad_input(
        tmp.path(),
        &["sweep", "-c", "base.toml", "--out", "other", "--vary", "app.task_count=1"],
        &["holds no sweep"],
    );
    assert_eq!(std::fs::read_dir(tmp.path().join("other")).unwrap().count(), 1);
}

#[test]
fn a_crashing_cell_does_not_stop_the_sweep_and_sigterm_stops_it_with_143() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let dir = tmp.path().join("out");
    let stderr = tmp.path().join("stderr");
    let running = |cell: &str| {
        let log = dir.join("cells").join(cell).join("log.txt");
        wait_for(|| std::fs::read_to_string(&log).ok().filter(|l| l.contains("Running app")));
    };
    // The first cell's run is killed outright (no records of its own making): the sweep goes on.
    let args = ["-c", "base.toml", "--vary", "app.task_sleep=10,0.01,11", "--out", "out"];
    let mut child =
        sweep(tmp.path(), &args).stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
    running("app.task_sleep=10_r1");
    let cell = wait_for(|| children_of(child.id()).first().copied());
    // SAFETY: a plain syscall on a process this test's sweep started.
    unsafe { libc::kill(cell as i32, libc::SIGKILL) };
    // The third cell is stopped by SIGTERM to the sweep.
    running("app.task_sleep=11_r1");
    // SAFETY: a plain syscall on the process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_or_kill(&mut child, 120, "taps sweep");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(143), "{}", err);
    assert!(err.contains("[1/3] cells/app.task_sleep=10_r1: failed (exit 137)"), "{}", err);
    assert!(err.contains("taps: sweep interrupted by signal 15: 1 of 3 cell(s) finished"), "{}", err);
    let rows = csv_rows(&dir);
    let got: Vec<(&str, &str)> = rows.iter().map(|r| (r["status"].as_str(), r["exit_code"].as_str())).collect();
    assert_eq!(got, [("failed", "137"), ("ok", "0"), ("interrupted", "130")]);
    let recs = records(&dir.join("cells/app.task_sleep=11_r1"));
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r.success != Some(true)), "{:?}", recs);
}

/// As Slurm's scancel does: SIGTERM to every process of the job, the sweep and its running cell.
#[test]
fn a_signal_to_the_sweep_and_its_cell_at_once_is_taken_once_and_every_task_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    base(tmp.path(), "");
    let dir = tmp.path().join("out");
    let stderr = tmp.path().join("stderr");
    let args = ["-c", "base.toml", "--vary", "app.task_sleep=10", "--out", "out"];
    let mut child =
        sweep(tmp.path(), &args).stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap();
    let log = dir.join("cells/app.task_sleep=10_r1/log.txt");
    wait_for(|| std::fs::read_to_string(&log).ok().filter(|l| l.contains("Running app")));
    let cell = wait_for(|| children_of(child.id()).first().copied());
    for pid in [cell, child.id()] {
        // SAFETY: plain syscalls on processes this test (and its sweep) started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = wait_or_kill(&mut child, 120, "taps sweep");
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(143), "{}", err);
    // The cell stopped as an interrupted run does (130), not as a second signal makes it (143).
    assert_eq!(cell_status(&dir, "app.task_sleep=10_r1")["exit_code"], 130, "{}", err);
    let recs = records(&dir.join("cells/app.task_sleep=10_r1"));
    assert_eq!(recs.len(), 2, "{}", err);
    assert!(recs.iter().all(|r| r.success != Some(true)), "{:?}", recs);
}

/// `--mpi-ranks`/`--mpi-launcher`/`--mpi-launcher-args` (what `taps submit ... sweep` passes, or a
/// hand-written job): the MPI cells that do not set them get them, none may ask for more ranks,
/// and other cells are untouched.
#[cfg(feature = "mpi")]
#[test]
fn mpi_settings_of_the_job_reach_the_mpi_cells_that_do_not_set_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let b = base(d, "");
    let b = b.to_str().unwrap();
    let job = ["--mpi-ranks", "3", "--mpi-launcher", "mpirun", "--mpi-launcher-args", "--bind-to none"];
    let args = [&["-c", b, "--vary", "executor=thread-pool,mpi", "--out", "s"][..], &job].concat();
    let out = sweep(d, &args).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let cfg = std::fs::read_to_string(d.join("s/cells/engine.executor=mpi_r1/config.toml")).unwrap();
    for line in ["ranks = 3\n", "launcher = \"mpirun\"\n", "launcher_args = \"--bind-to none\"\n"] {
        assert!(cfg.contains(line), "{} missing:\n{}", line, cfg);
    }
    let recs = records(&d.join("s/cells/engine.executor=mpi_r1"));
    assert_eq!(recs.len(), 3);
    let workers: std::collections::BTreeSet<_> = recs.iter().filter_map(|r| r.worker.clone()).collect();
    assert!(workers.iter().all(|w| w == "rank-1" || w == "rank-2"), "{:?}", workers);
    let tp = std::fs::read_to_string(d.join("s/cells/engine.executor=thread-pool_r1.toml")).unwrap();
    assert!(!tp.contains("ranks"), "{}", tp);

    // A cell's own ranks win, up to the job's.
    let own = [&["-c", b, "--vary", "executor=mpi", "--vary", "engine.executor.ranks=2,4"][..], &job].concat();
    let err = assert_bad_input(
        d,
        &[&["sweep"][..], &own, &["--out", "t"]].concat(),
        &["cell engine.executor.name=mpi engine.executor.ranks=4", "more than the 3 rank(s) of the batch job"],
    );
    assert!(!d.join("t").exists(), "{}", err);
    // Resuming without the job's settings is refused.
    assert_bad_input(
        d,
        &["sweep", "-c", b, "--vary", "executor=thread-pool,mpi", "--out", "s"],
        &["made for a batch job (--mpi-ranks 3 --mpi-launcher mpirun)"],
    );
}
